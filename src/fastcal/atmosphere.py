"""Library-side atmosphere model for WVR phase correction (``fastcal.wvr``).

This module is fastcal's own retrieval model: it does not use the simulator
(:mod:`fastcal.simulate`), although both start from the same published spectroscopy.

Thin water-layer model
----------------------
The sky seen by an ALMA 183 GHz water-vapour radiometer (WVR) is modelled as one isothermal
layer of water vapour (column ``PWV`` in mm = kg m^-2, physical temperature ``T`` in K,
pressure ``P`` in kPa) plus a fixed, small dry opacity. Along a line of sight at elevation
``el`` (plane-parallel airmass ``A = 1 / sin el``) the Rayleigh-Jeans brightness at
frequency ``nu`` is::

    T_B(nu) = T (1 - exp(-A [tau_dry(nu) + PWV kappa(nu; T, P)]))

* ``kappa`` (opacity per mm PWV) is the sum of the H2O lines of Liebe's MPM89 (22.2, 183.31,
  321-988 GHz; strength ``b1 e theta^3.5 exp(b2 (1 - theta))``, pressure width
  ``b3 P theta^0.8``, Van Vleck-Weisskopf shape, ``theta = 300 / T``), evaluated for a single
  layer - the layer thickness cancels, only the column matters - plus an empirical water
  continuum of 0.0075 per mm at 100 GHz scaling as nu^2 (~0.025 per mm at 183 GHz).
* ``tau_dry`` = :data:`DRY_OPACITY_183` (0.011, O2 line wings and the dry continuum near
  183 GHz above Chajnantor), scaled as nu^2.
* Each WVR channel is double-sideband: the model brightness of channel k is the uniform
  average over :data:`N_SUB` samples across each of the two sidebands at
  ``183.31 GHz +- WVR_CHANNEL_OFFSETS_HZ[k]`` with bandwidth ``WVR_CHANNEL_BANDWIDTHS_HZ[k]``.

Retrieval (:func:`fit_layer`): Levenberg-Marquardt least squares of the three parameters
(PWV, T, P) against mean channel temperatures of one or more segments (each with its own
elevation; the parameters are shared, which is how ``tie`` groups are retrieved). Then
(:func:`dtdl`) the channel sensitivities ``dT_k/dL`` (K per mm of line-of-sight path) are
``dT_B,k/dPWV_los / PATH_PER_PWV`` at the fitted state, with ``PWV_los = A PWV``, and their
1-sigma errors come from the fit covariance (scaled by the reduced chi^2 when it exceeds 1).

Geometry (:func:`azel`): azimuth/elevation of a J2000 direction seen from an ITRF position at
a UTC time (GMST from the IAU 1982 expression with UT1 = UTC, WGS84 geodetic latitude; no
precession, nutation, aberration or refraction: accurate to ~0.3 deg, ample for an airmass).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np

from fastcal.errors import ParameterError
from fastcal.geometry import gmst_rad

__all__ = [
    "C_LIGHT",
    "WVR_LINE_HZ",
    "WVR_CHANNEL_OFFSETS_HZ",
    "WVR_CHANNEL_BANDWIDTHS_HZ",
    "PATH_PER_PWV",
    "DRY_OPACITY_183",
    "N_SUB",
    "H2O_LINES_MPM89",
    "LayerFit",
    "wvr_channel_samples",
    "vvw_shape",
    "h2o_line_opacity_per_mm",
    "water_opacity_per_mm",
    "model_brightness",
    "fit_layer",
    "dtdl",
    "azel",
]

logger = logging.getLogger(__name__)

#: Speed of light (m/s) used by wvrgcal for the path -> phase conversion.
C_LIGHT: float = 299792458.0
#: Centre of the water line (Hz).
WVR_LINE_HZ: float = 183.310e9
#: Centre offsets of the 4 double-sideband WVR channels from the line (Hz) (libair ALMA model).
WVR_CHANNEL_OFFSETS_HZ: tuple[float, ...] = (1.25e9, 3.25e9, 5.5e9, 7.25e9)
#: Bandwidth of each WVR channel, per sideband (Hz).
WVR_CHANNEL_BANDWIDTHS_HZ: tuple[float, ...] = (1.5e9, 2.5e9, 2.0e9, 1.5e9)
#: Excess wet path per unit precipitable water vapour (mm of path per mm PWV); ALMA's rule of
#: thumb (Thayer's refractivity gives ~1726/T_K + 0.1, i.e. 6.3-6.5 for T = 265-280 K).
PATH_PER_PWV: float = 6.3
#: Zenith dry opacity at 183.31 GHz above the ALMA site (scaled as nu^2 across the channels).
DRY_OPACITY_183: float = 0.011
#: Frequency samples per sideband and channel for the bandpass average.
N_SUB: int = 12

_WET_CONT_PER_MM_100 = 0.0075  # water continuum, tau per mm PWV at 100 GHz, ~nu^2
_R_VAPOUR = 461.5  # J / (kg K)
_DB_PER_NEPER = 10.0 / np.log(10.0)

#: H2O lines after Liebe (1989, MPM89), one row per line: f0 (GHz), b1 (kHz/kPa), b2,
#: b3 (MHz/kPa). Shared with the simulator's multi-layer atmosphere (read-only).
H2O_LINES_MPM89 = np.array(
    [
        [22.235080, 0.1090, 2.143, 28.11],
        [183.310074, 2.3000, 0.668, 28.13],
        [321.225644, 0.0464, 6.181, 23.03],
        [325.152919, 1.5400, 1.540, 27.83],
        [380.197372, 11.900, 1.048, 28.73],
        [439.150812, 0.9210, 3.596, 21.00],
        [448.001075, 10.600, 1.405, 26.32],
        [474.689127, 1.2800, 2.381, 23.55],
        [556.936002, 510.00, 0.159, 32.10],
        [620.700807, 5.0900, 2.200, 24.38],
        [752.033227, 250.00, 0.396, 30.60],
        [916.171582, 8.5600, 1.442, 26.70],
        [987.926764, 138.00, 0.258, 29.85],
    ]
)
H2O_LINES_MPM89.setflags(write=False)

# Parameter bounds of the retrieval: PWV (mm), T (K), P (kPa).
_LOWER = np.array([0.01, 200.0, 5.0])
_UPPER = np.array([30.0, 320.0, 110.0])
_START = np.array([1.0, 270.0, 50.0])


@dataclass(frozen=True)
class LayerFit:
    """Result of :func:`fit_layer`.

    Attributes
    ----------
    pwv_mm, t_k, p_kpa : float
        Fitted zenith PWV (mm), layer temperature (K) and pressure (kPa).
    cov : numpy.ndarray
        (3, 3) covariance of (pwv, T, P), scaled by the reduced chi^2 when > 1.
    chi2 : float
        Sum of squared normalised residuals.
    dof : int
        Degrees of freedom (4 n_seg - 3, at least 1 for the scaling).
    residual_k : numpy.ndarray
        (n_seg, 4) data minus model (K).
    converged : bool
        Whether the iteration met its tolerance.
    """

    pwv_mm: float
    t_k: float
    p_kpa: float
    cov: np.ndarray
    chi2: float
    dof: int
    residual_k: np.ndarray
    converged: bool

    @property
    def params(self) -> np.ndarray:
        """(3,) float64 [pwv_mm, t_k, p_kpa]."""
        return np.array([self.pwv_mm, self.t_k, self.p_kpa])

    @property
    def pwv_err_mm(self) -> float:
        """1-sigma error of the PWV (mm)."""
        return float(np.sqrt(max(self.cov[0, 0], 0.0)))


@functools.lru_cache(maxsize=4)
def wvr_channel_samples(n_sub: int = N_SUB) -> np.ndarray:
    """Sample frequencies (Hz) of the 4 DSB channels, shape (4, 2 n_sub) (both sidebands).

    Samples are the mid-points of ``n_sub`` equal slices of each sideband's bandwidth.
    """
    frac = (np.arange(n_sub) + 0.5) / n_sub - 0.5
    out = np.empty((4, 2 * n_sub))
    for k, (off, bw) in enumerate(
        zip(WVR_CHANNEL_OFFSETS_HZ, WVR_CHANNEL_BANDWIDTHS_HZ, strict=True)
    ):
        out[k, :n_sub] = WVR_LINE_HZ - off + frac * bw
        out[k, n_sub:] = WVR_LINE_HZ + off + frac * bw
    out.setflags(write=False)
    return out


def vvw_shape(nu_ghz: np.ndarray, f0_ghz: np.ndarray, gamma_ghz: np.ndarray) -> np.ndarray:
    """Van Vleck-Weisskopf line shape (1/GHz) in MPM's normalisation (no 1/pi).

    ``(nu/f0) [gamma / ((f0 - nu)^2 + gamma^2) + gamma / ((f0 + nu)^2 + gamma^2)]``; the
    arguments broadcast (frequency, line centre and pressure width, all GHz).
    """
    return (nu_ghz / f0_ghz) * (
        gamma_ghz / ((f0_ghz - nu_ghz) ** 2 + gamma_ghz**2)
        + gamma_ghz / ((f0_ghz + nu_ghz) ** 2 + gamma_ghz**2)
    )


def h2o_line_opacity_per_mm(nu_ghz: np.ndarray, t_k: float, p_kpa: float) -> np.ndarray:
    """Opacity of the MPM89 H2O lines per mm of water column in an isothermal layer.

    No continuum. The layer thickness cancels: only the column (1 mm PWV = 1 kg m^-2)
    matters. A stratified atmosphere is a weighted sum of such layers.

    Parameters
    ----------
    nu_ghz : numpy.ndarray
        Frequencies (GHz), any shape F.
    t_k : float
        Layer temperature (K).
    p_kpa : float
        Layer (total) pressure (kPa); sets the pressure-broadened line widths.

    Returns
    -------
    numpy.ndarray
        float64, shape F, nepers per mm PWV.
    """
    nu = np.asarray(nu_ghz, dtype=np.float64)
    theta = 300.0 / t_k
    f0 = H2O_LINES_MPM89[:, 0]
    # MPM89: N'' = S F (ppm), S = b1 e theta^3.5 exp(b2 (1 - theta)) with the partial pressure
    # e = rho_v R_v T; alpha = 0.1820 nu N'' dB/km. For a layer of thickness H holding 1 kg/m^2
    # rho_v = 1/H and tau = alpha H: H cancels, leaving e*H = R_v T (Pa m) = R_v T / 1000 kPa m.
    e_h = _R_VAPOUR * t_k / 1000.0  # kPa * m per (kg/m^2)
    strength = H2O_LINES_MPM89[:, 1] * theta**3.5 * np.exp(
        H2O_LINES_MPM89[:, 2] * (1.0 - theta)
    )
    gamma = H2O_LINES_MPM89[:, 3] * 1e-3 * p_kpa * theta**0.8  # GHz
    n_imag = (strength * vvw_shape(nu[..., None], f0, gamma)).sum(axis=-1)  # ppm per kPa of e
    return 0.1820 * nu * n_imag * e_h / 1000.0 / _DB_PER_NEPER


def water_opacity_per_mm(freq_hz: np.ndarray, t_k: float, p_kpa: float) -> np.ndarray:
    """Opacity per mm of water-vapour column of a single layer (lines + continuum).

    :func:`h2o_line_opacity_per_mm` (same `t_k` in K, `p_kpa` in kPa) with the frequencies
    `freq_hz` (any shape F) in Hz, plus the water continuum. Returns float64, shape F,
    nepers per mm PWV.
    """
    nu = np.asarray(freq_hz, dtype=np.float64) / 1e9
    return h2o_line_opacity_per_mm(nu, t_k, p_kpa) + _WET_CONT_PER_MM_100 * (nu / 100.0) ** 2


def _check_el(elevation_rad: np.ndarray) -> np.ndarray:
    el = np.asarray(elevation_rad, dtype=np.float64)
    if not np.all(np.isfinite(el)) or np.any(el <= 0) or np.any(el > np.pi / 2 + 1e-9):
        raise ParameterError(
            f"elevation_rad has values outside (0, pi/2] (min {np.min(el):g}, max "
            f"{np.max(el):g}); valid: a source above the horizon"
        )
    return el


def model_brightness(
    pwv_mm: float, t_k: float, p_kpa: float, elevation_rad: float | np.ndarray
) -> np.ndarray:
    """Thin-layer model brightness temperature (K) of the 4 WVR channels.

    Parameters
    ----------
    pwv_mm, t_k, p_kpa : float
        Zenith PWV (mm), layer temperature (K), pressure (kPa).
    elevation_rad : float or numpy.ndarray
        Elevation (rad), shape E.

    Returns
    -------
    numpy.ndarray
        float64, shape E + (4,).
    """
    return _brightness(pwv_mm, t_k, p_kpa, _check_el(elevation_rad))


def _brightness(pwv_mm, t_k: float, p_kpa: float, el: np.ndarray) -> np.ndarray:
    """:func:`model_brightness` without argument checks; `pwv_mm` may be an array P
    (result P + E + (4,))."""
    freqs = wvr_channel_samples()
    pwv = np.asarray(pwv_mm, dtype=np.float64)
    kappa = water_opacity_per_mm(freqs, t_k, p_kpa)  # (4, 2 n_sub)
    dry = DRY_OPACITY_183 * (freqs / WVR_LINE_HZ) ** 2
    tau = dry + pwv.reshape(pwv.shape + (1,) * (el.ndim + 2)) * kappa
    airmass = 1.0 / np.sin(el)
    return t_k * (-np.expm1(-airmass[..., None, None] * tau)).mean(axis=-1)


def _model_stack(params: np.ndarray, el: np.ndarray) -> np.ndarray:
    return _brightness(params[0], params[1], params[2], el)


def _jacobian(params: np.ndarray, el: np.ndarray) -> np.ndarray:
    """(n_seg*4, 3) derivatives of the stacked model by central differences."""
    cols = []
    for j in range(3):
        h = 1e-4 * max(abs(params[j]), 1e-2)
        up, dn = params.copy(), params.copy()
        up[j] += h
        dn[j] -= h
        cols.append(((_model_stack(up, el) - _model_stack(dn, el)) / (2 * h)).ravel())
    return np.stack(cols, axis=1)


def fit_layer(
    tb_k: np.ndarray,
    elevation_rad: np.ndarray,
    sigma_k: np.ndarray | float = 0.1,
    *,
    max_iter: int = 60,
    start: np.ndarray | None = None,
) -> LayerFit:
    """Fit the thin-layer model (PWV, T, P) to mean WVR brightness temperatures.

    Parameters
    ----------
    tb_k : numpy.ndarray
        (n_seg, 4) or (4,) mean channel brightness (K) of segments observed at
        `elevation_rad`; all segments share the fitted parameters.
    elevation_rad : numpy.ndarray
        (n_seg,) or scalar elevation (rad) of each segment.
    sigma_k : float or numpy.ndarray
        1-sigma uncertainty (K) of each value of `tb_k`, broadcastable to (n_seg, 4).
    max_iter : int
        Levenberg-Marquardt iterations.
    start : numpy.ndarray, optional
        Starting [pwv_mm, t_k, p_kpa]; default a grid search over PWV.

    Returns
    -------
    LayerFit

    Raises
    ------
    ParameterError
        Non-finite or non-positive brightness, mismatched shapes.
    """
    tb = np.atleast_2d(np.asarray(tb_k, dtype=np.float64))
    el = np.atleast_1d(_check_el(elevation_rad))
    if tb.shape != (el.size, 4):
        raise ParameterError(
            f"tb_k has shape {np.shape(tb_k)} for {el.size} elevation(s); valid: (n_seg, 4)"
        )
    if not np.all(np.isfinite(tb)) or np.any(tb <= 0):
        raise ParameterError(
            f"tb_k holds non-finite or non-positive temperatures ({tb.tolist()}); valid: > 0 K"
        )
    sig = np.broadcast_to(np.asarray(sigma_k, dtype=np.float64), tb.shape).ravel()
    y = tb.ravel()
    p = (
        _initial_guess(tb, el)
        if start is None
        else np.clip(np.asarray(start, float), _LOWER, _UPPER)
    )
    lam = 1e-3
    r = (y - _model_stack(p, el).ravel()) / sig
    cost = float(r @ r)
    converged = False
    for _ in range(max_iter):
        jac = _jacobian(p, el) / sig[:, None]
        jtj = jac.T @ jac
        g = jac.T @ r
        improved = False
        while lam < 1e8:
            a = jtj + lam * np.diag(np.diag(jtj) + 1e-12)
            try:
                dp = np.linalg.solve(a, g)
            except np.linalg.LinAlgError:
                lam *= 10
                continue
            p_new = np.clip(p + dp, _LOWER, _UPPER)
            r_new = (y - _model_stack(p_new, el).ravel()) / sig
            c_new = float(r_new @ r_new)
            if c_new <= cost:
                small = cost - c_new <= 1e-10 * max(cost, 1e-12) or np.all(
                    np.abs(p_new - p) <= 1e-8 * np.abs(p)
                )
                p, r, cost = p_new, r_new, c_new
                lam = max(lam / 10, 1e-9)
                improved = True
                converged = bool(small)
                break
            lam *= 10
        if not improved:
            converged = True  # no downhill step at any damping: a (numerical) minimum
        if converged:
            break
    jac = _jacobian(p, el) / sig[:, None]
    dof = max(y.size - 3, 1)
    try:
        cov = np.linalg.pinv(jac.T @ jac)
    except np.linalg.LinAlgError:  # pragma: no cover - pinv does not normally fail
        cov = np.full((3, 3), np.inf)
    red = cost / dof
    if red > 1:
        cov = cov * red
    return LayerFit(
        pwv_mm=float(p[0]),
        t_k=float(p[1]),
        p_kpa=float(p[2]),
        cov=cov,
        chi2=cost,
        dof=dof,
        residual_k=(y - _model_stack(p, el).ravel()).reshape(tb.shape),
        converged=converged,
    )


def _initial_guess(tb: np.ndarray, el: np.ndarray) -> np.ndarray:
    """Best PWV on a log grid at T = 270 K, P = 50 kPa (cheap, avoids local minima)."""
    grid = np.geomspace(0.05, 20.0, 60)
    model = _brightness(grid, _START[1], _START[2], el)  # (n_grid, n_seg, 4)
    cost = np.sum((model - tb) ** 2, axis=(1, 2))
    return np.array([grid[int(np.argmin(cost))], _START[1], _START[2]])


def dtdl(fit: LayerFit, elevation_rad: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Channel sensitivities to line-of-sight wet path at the fitted state.

    ``dT_k/dL = (dT_B,k / dPWV_zenith) * sin(el) / PATH_PER_PWV`` (K per mm of path), because
    the line-of-sight column is ``PWV / sin(el)`` and the path ``PATH_PER_PWV`` times it.

    Parameters
    ----------
    fit : LayerFit
    elevation_rad : float or numpy.ndarray
        Elevation(s) (rad), shape E.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``dT/dL`` and its 1-sigma error from the fit covariance, each float64 E + (4,), K/mm.
    """
    el = _check_el(elevation_rad)
    p0 = fit.params

    def coeff(p: np.ndarray) -> np.ndarray:
        h = 1e-3 * max(p[0], 0.05)
        up = _brightness(p[0] + h, p[1], p[2], el)
        dn = _brightness(max(p[0] - h, 0.0), p[1], p[2], el)
        return (up - dn) / (p[0] + h - max(p[0] - h, 0.0)) * np.sin(el)[..., None] / PATH_PER_PWV

    c0 = coeff(p0)
    grads = []
    for j in range(3):
        h = 1e-3 * max(abs(p0[j]), 0.05)
        up, dn = p0.copy(), p0.copy()
        up[j] += h
        dn[j] = max(dn[j] - h, 1e-3) if j == 0 else dn[j] - h
        grads.append((coeff(up) - coeff(dn)) / (up[j] - dn[j]))
    g = np.stack(grads, axis=-1)  # E + (4, 3)
    var = np.einsum("...ki,ij,...kj->...k", g, fit.cov, g)
    return c0, np.sqrt(np.maximum(var, 0.0))


# ----------------------------------------------------------------------------- geometry
_WGS84_A = 6378137.0
_WGS84_F = 1.0 / 298.257223563


def _geodetic(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """WGS84 geodetic latitude and longitude (rad) of ITRF positions (..., 3) in m."""
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    e2 = _WGS84_F * (2 - _WGS84_F)
    lon = np.arctan2(y, x)
    rho = np.hypot(x, y)
    lat = np.arctan2(z, rho * (1 - e2))
    for _ in range(5):
        n = _WGS84_A / np.sqrt(1 - e2 * np.sin(lat) ** 2)
        h = rho / np.cos(lat) - n
        lat = np.arctan2(z, rho * (1 - e2 * n / (n + h)))
    return lat, lon


def azel(
    mjd_s: np.ndarray, ra_rad: np.ndarray, dec_rad: np.ndarray, itrf_m: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Azimuth (from north through east) and elevation (rad) of a direction.

    Parameters
    ----------
    mjd_s : numpy.ndarray
        UTC times (MJD seconds), shape S (broadcast with the others).
    ra_rad, dec_rad : numpy.ndarray
        J2000 right ascension and declination (rad), treated as apparent.
    itrf_m : numpy.ndarray
        Observer ITRF positions (m), shape S + (3,) or (3,).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        float64 azimuth and elevation.
    """
    lat, lon = _geodetic(np.asarray(itrf_m, dtype=np.float64))
    ha = gmst_rad(mjd_s) + lon - np.asarray(ra_rad)
    dec = np.asarray(dec_rad, dtype=np.float64)
    sin_el = np.sin(lat) * np.sin(dec) + np.cos(lat) * np.cos(dec) * np.cos(ha)
    el = np.arcsin(np.clip(sin_el, -1.0, 1.0))
    az = np.arctan2(
        -np.cos(dec) * np.sin(ha),
        np.sin(dec) * np.cos(lat) - np.cos(dec) * np.sin(lat) * np.cos(ha),
    )
    return np.mod(az, 2 * np.pi), el
