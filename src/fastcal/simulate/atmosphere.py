"""Atmosphere for the simulator: opacity, Tsys spectra, WVR brightness and phase screens.

Opacity model
-------------
Zenith opacity above the ALMA site is ``tau(nu) = tau_dry(nu) + PWV * tau_wet(nu)`` with

* ``tau_dry``: O2 lines after Liebe's MPM89 (the 37-line 60 GHz complex, 118.75, 368.50,
  424.76, 487.25, 715.39, 773.84, 834.15 GHz; strength ``a1 p theta^3 exp(a2 (1 - theta))``,
  pressure width ``a3 p theta^0.8``, Van Vleck-Weisskopf shape; line mixing in the 60 GHz
  complex is mimicked by halving its far wings) plus a small nu^2 dry continuum;
* ``tau_wet`` (per mm PWV): H2O lines after MPM89 (22.24, 183.31, 321.23, 325.15, 380.20,
  439.15, 448.00, 474.69, 556.94, 620.70, 752.03, 916.17, 987.93 GHz; strength
  ``b1 e theta^3.5 exp(b2 (1 - theta))``, width ``b3 p theta^0.8``, VVW shape) plus an empirical
  nu^2 continuum.

The H2O line catalogue, the per-layer H2O line opacity and the VVW shape are
:mod:`fastcal.atmosphere`'s (one copy of the spectroscopy); the profile, the O2 lines and
both continua are the simulator's own. Both are integrated through an exponential atmosphere
above the site (pressure 555 hPa, 270 K at the ground, 6.5 K/km lapse rate; pressure scale
height 7.6 km, water scale height 1.5 km) with Gauss-Laguerre quadrature, so line cores are a pressure-weighted sum of
Lorentzians rather than one.  The continua are tuned so that at PWV = 1 mm the zenith opacity
is ~0.035 at 100 GHz, ~0.064 at 230 GHz and ~0.19 at 345 GHz, typical of Chajnantor;
the 183.31 GHz line centre reaches tau ~2.3 per mm PWV.  O2 line centres (60 GHz complex,
118.75 GHz) come out very opaque but their exact values are not meaningful (no Doppler
limit, coarse quadrature of the upper atmosphere).  Line parameters are approximate: this is a plausible model for simulation, not a radiative
transfer code.  Brightness is Rayleigh-Jeans with a single effective atmospheric temperature;
the CMB is neglected.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping

import numpy as np

from fastcal.atmosphere import (
    WVR_CHANNEL_BANDWIDTHS_HZ,
    WVR_CHANNEL_OFFSETS_HZ,
    WVR_LINE_HZ,
    h2o_line_opacity_per_mm,
    vvw_shape,
    wvr_channel_samples,
)
from fastcal.errors import ParameterError

__all__ = [
    "WVR_LINE_HZ",
    "WVR_CHANNEL_OFFSETS_HZ",
    "WVR_CHANNEL_BANDWIDTHS_HZ",
    "PATH_PER_PWV",
    "ALMA_BAND_EDGES_HZ",
    "DEFAULT_TRX_K",
    "FORWARD_EFFICIENCY",
    "alma_band",
    "dry_opacity",
    "wet_opacity_per_mm",
    "zenith_opacity",
    "default_trx",
    "tsys_spectrum",
    "wvr_brightness",
    "wvr_dtdl",
    "phase_screen",
]

logger = logging.getLogger(__name__)

# WVR_LINE_HZ, WVR_CHANNEL_OFFSETS_HZ, WVR_CHANNEL_BANDWIDTHS_HZ (the radiometer's channels)
# are fastcal.atmosphere's, re-exported.
#: Excess electrical path per unit precipitable water vapour (mm per mm).
PATH_PER_PWV: float = 6.3
#: Forward efficiency used in :func:`tsys_spectrum`.
FORWARD_EFFICIENCY: float = 0.95

#: ALMA receiver bands: band -> (low, high) RF edge (Hz).
ALMA_BAND_EDGES_HZ: dict[int, tuple[float, float]] = {
    3: (84e9, 116e9),
    4: (125e9, 163e9),
    5: (163e9, 211e9),
    6: (211e9, 275e9),
    7: (275e9, 373e9),
    8: (385e9, 500e9),
    9: (602e9, 720e9),
    10: (787e9, 950e9),
}
#: Receiver temperature specifications per band (K) (reference doc section 5.4; 9, 10 DSB).
DEFAULT_TRX_K: dict[int, float] = {
    3: 37.0,
    4: 51.0,
    5: 65.0,
    6: 83.0,
    7: 147.0,
    8: 196.0,
    9: 175.0,
    10: 230.0,
}

# ---------------------------------------------------------------- site / profile constants
_P0_KPA = 55.5  # surface pressure at the site
_T0_K = 270.0  # surface temperature
_LAPSE_K_PER_M = 6.5e-3
_T_MIN_K = 217.0  # tropopause temperature floor
_H_PRESSURE_M = 7600.0
_H_WATER_M = 1500.0
_N_LAYERS = 10

_WET_CONT_PER_MM = 0.0075  # tau per mm PWV at 100 GHz, scales as nu^2
_DRY_CONT = 0.0025  # tau at 225 GHz, scales as nu^2

# fmt: off
# O2 lines: f0 (GHz), a1 (1e-6 kHz/kPa), a2, a3 (MHz/kPa)   [after Liebe 1989]
_O2_LINES = np.array([
    [50.474238, 0.94, 9.694, 8.50], [50.987749, 2.46, 8.694, 8.70],
    [51.503350, 6.08, 7.744, 8.90], [52.021410, 14.14, 6.844, 9.20],
    [52.542394, 31.02, 6.004, 9.40], [53.066907, 64.10, 5.224, 9.70],
    [53.595749, 124.70, 4.484, 10.00], [54.130000, 228.00, 3.814, 10.20],
    [54.671159, 391.80, 3.194, 10.50], [55.221367, 631.60, 2.624, 10.79],
    [55.783802, 953.50, 2.119, 11.10], [56.264775, 548.90, 0.015, 16.46],
    [56.363389, 1344.0, 1.660, 11.44], [56.968206, 1763.0, 1.260, 11.81],
    [57.612484, 2141.0, 0.915, 12.21], [58.323877, 2386.0, 0.626, 12.66],
    [58.446590, 1457.0, 0.084, 14.49], [59.164207, 2404.0, 0.391, 13.19],
    [59.590983, 2112.0, 0.212, 13.60], [60.306061, 2124.0, 0.212, 13.82],
    [60.434776, 2461.0, 0.391, 12.97], [61.150560, 2504.0, 0.626, 12.48],
    [61.800154, 2298.0, 0.915, 12.07], [62.411215, 1933.0, 1.260, 11.71],
    [62.486260, 1517.0, 0.083, 14.68], [62.997977, 1503.0, 1.665, 11.39],
    [63.568518, 1087.0, 2.115, 11.08], [64.127767, 733.5, 2.620, 10.78],
    [64.678903, 463.5, 3.195, 10.50], [65.224071, 274.8, 3.815, 10.20],
    [65.764772, 153.0, 4.485, 10.00], [66.302091, 80.09, 5.225, 9.70],
    [66.836830, 39.46, 6.005, 9.40], [67.369598, 18.32, 6.845, 9.20],
    [67.900867, 8.01, 7.745, 8.90], [68.431005, 3.30, 8.695, 8.70],
    [68.960311, 1.28, 9.695, 8.50], [118.750343, 945.0, 0.009, 15.92],
    [368.498350, 67.9, 0.049, 19.20], [424.763124, 638.0, 0.044, 19.16],
    [487.249370, 235.0, 0.049, 19.20], [715.393150, 99.6, 0.145, 18.10],
    [773.838730, 671.0, 0.130, 18.10], [834.145330, 180.0, 0.147, 18.10],
])
# fmt: on
_N_O2_60 = 37  # the first 37 O2 lines form the 60 GHz complex
_DB_PER_NEPER = 10.0 / np.log(10.0)  # power attenuation: 4.343 dB per neper


def _layer(z_m: float) -> tuple[float, float]:
    """Pressure (kPa) and temperature (K) at height z_m above the site."""
    t = max(_T0_K - _LAPSE_K_PER_M * z_m, _T_MIN_K)
    return _P0_KPA * np.exp(-z_m / _H_PRESSURE_M), t


def _layers(scale_h_m: float):
    """(weight, pressure kPa, temperature K) of the Gauss-Laguerre nodes of an exponential
    profile with scale height `scale_h_m`: sum(weight f(z)) ~ int f(z) exp(-z/H) dz / H."""
    nodes, weights = np.polynomial.laguerre.laggauss(_N_LAYERS)
    for x, wgt in zip(nodes, weights, strict=True):
        yield (wgt, *_layer(x * scale_h_m))


def _dry_line_opacity(nu_ghz: np.ndarray, lines: np.ndarray) -> np.ndarray:
    """Zenith opacity of O2 `lines` (MPM89 rows) for a 1-D frequency array (GHz)."""
    nu = nu_ghz[:, None]
    tau = np.zeros(nu_ghz.shape, dtype=np.float64)
    for wgt, p_kpa, t_k in _layers(_H_PRESSURE_M):
        theta = 300.0 / t_k
        # dry-air density ~ p: the p(z)/p0 fall-off is in the quadrature weight.
        strength = lines[:, 1] * 1e-6 * _P0_KPA * theta**3 * np.exp(lines[:, 2] * (1 - theta))
        gamma = lines[:, 3] * 1e-3 * p_kpa * theta**0.8
        n_imag = (strength * vvw_shape(nu, lines[:, 0], gamma)).sum(axis=1)  # ppm
        alpha_db_per_km = 0.1820 * nu_ghz * n_imag
        tau += wgt * _H_PRESSURE_M / 1000.0 * alpha_db_per_km / _DB_PER_NEPER
    return tau


def _wet_line_opacity_per_mm(nu_ghz: np.ndarray) -> np.ndarray:
    """Zenith H2O line opacity per mm PWV for a 1-D frequency array (GHz).

    1 mm PWV = 1 kg/m^2 spread with the water scale height: the column of each quadrature
    layer is its weight, and a layer's opacity per unit column is the thin-layer one of
    :func:`fastcal.atmosphere.h2o_line_opacity_per_mm` at the layer's T and p.
    """
    tau = np.zeros(nu_ghz.shape, dtype=np.float64)
    for wgt, p_kpa, t_k in _layers(_H_WATER_M):
        tau += wgt * h2o_line_opacity_per_mm(nu_ghz, t_k, p_kpa)
    return tau


def _check_freq(freq_hz: np.ndarray) -> np.ndarray:
    f = np.asarray(freq_hz, dtype=np.float64)
    if not np.all(np.isfinite(f)) or np.any(f <= 0) or np.any(f > 2e12):
        raise ParameterError(
            f"freq_hz has values outside (0, 2e12] Hz (min {np.min(f):g}, max {np.max(f):g}); "
            "valid: positive frequencies in Hz up to 2 THz"
        )
    return f


def _check_pwv(pwv_mm: float | np.ndarray) -> np.ndarray:
    pwv = np.asarray(pwv_mm, dtype=np.float64)
    if not np.all(np.isfinite(pwv)) or np.any(pwv < 0):
        raise ParameterError(f"pwv_mm={pwv_mm!r} is invalid; valid: finite, >= 0 mm")
    return pwv


def _check_elevation(elevation_rad: float | np.ndarray) -> np.ndarray:
    el = np.asarray(elevation_rad, dtype=np.float64)
    if not np.all(np.isfinite(el)) or np.any(el <= 0) or np.any(el > np.pi / 2 + 1e-12):
        raise ParameterError(
            f"elevation_rad has values outside (0, pi/2] (min {np.min(el):g}); valid: a source "
            "above the horizon, 0 < elevation <= pi/2 rad"
        )
    return el


def dry_opacity(freq_hz: np.ndarray) -> np.ndarray:
    """Zenith dry (O2 + continuum) opacity above the ALMA site, shape of ``freq_hz``."""
    f = _check_freq(freq_hz)
    nu = np.atleast_1d(f).ravel() / 1e9
    complex60 = _dry_line_opacity(nu, _O2_LINES[:_N_O2_60]) * _line_mixing_factor(nu)
    others = _dry_line_opacity(nu, _O2_LINES[_N_O2_60:])
    tau = complex60 + others + _DRY_CONT * (nu / 225.0) ** 2
    return tau.reshape(f.shape)


def _line_mixing_factor(nu_ghz: np.ndarray) -> np.ndarray:
    """Empirical far-wing reduction of the 60 GHz O2 complex (stands in for line mixing).

    1 within ~10 GHz of 60 GHz, falling smoothly to 0.5 in the far wings (0.53 at 100 GHz).
    """
    return 0.5 + 0.5 / (1.0 + (np.abs(nu_ghz - 60.0) / 20.0) ** 4)


def wet_opacity_per_mm(freq_hz: np.ndarray) -> np.ndarray:
    """Zenith water-vapour opacity per mm PWV (H2O lines + continuum), shape of ``freq_hz``."""
    f = _check_freq(freq_hz)
    nu = np.atleast_1d(f).ravel() / 1e9
    tau = _wet_line_opacity_per_mm(nu) + _WET_CONT_PER_MM * (nu / 100.0) ** 2
    return tau.reshape(f.shape)


def zenith_opacity(freq_hz: np.ndarray, pwv_mm: float | np.ndarray) -> np.ndarray:
    """Zenith opacity (nepers) above the ALMA site.

    Parameters
    ----------
    freq_hz : array_like
        Frequencies (Hz), shape F (usually (nchan,)).
    pwv_mm : float or array_like
        Precipitable water vapour (mm, >= 0), shape P.

    Returns
    -------
    numpy.ndarray
        float64, shape P + F: ``tau_dry(nu) + pwv * tau_wet(nu)``.

    Raises
    ------
    ParameterError
        Negative or non-finite PWV, non-positive frequency.
    """
    pwv = _check_pwv(pwv_mm)
    dry = dry_opacity(freq_hz)
    wet = wet_opacity_per_mm(freq_hz)
    return dry + pwv.reshape(pwv.shape + (1,) * dry.ndim) * wet


def alma_band(freq_hz: float | np.ndarray) -> int:
    """ALMA receiver band (3..10) of a frequency (Hz; for an array, of its mean).

    Frequencies in the gaps between bands go to the nearest band; frequencies more than
    10 GHz outside bands 3..10 raise :class:`ParameterError`.
    """
    f = float(np.mean(_check_freq(freq_hz)))
    best, best_dist = 0, np.inf
    for band, (lo, hi) in ALMA_BAND_EDGES_HZ.items():
        dist = 0.0 if lo <= f <= hi else min(abs(f - lo), abs(f - hi))
        if dist < best_dist:
            best, best_dist = band, dist
    if best_dist > 10e9:
        raise ParameterError(
            f"frequency {f / 1e9:.3f} GHz is outside ALMA bands 3..10; valid: 84-950 GHz"
        )
    return best


def default_trx(freq_hz: np.ndarray) -> np.ndarray:
    """Receiver temperature (K) per frequency from :data:`DEFAULT_TRX_K` (band of each)."""
    f = np.atleast_1d(_check_freq(freq_hz))
    return np.array([DEFAULT_TRX_K[alma_band(x)] for x in f.ravel()]).reshape(f.shape)


def _resolve_trx(
    freq_hz: np.ndarray, trx_k: float | np.ndarray | Mapping[int, float] | None
) -> np.ndarray:
    """Receiver temperature (K) broadcastable to ``freq_hz`` from the ``trx_k`` argument."""
    if trx_k is None:
        return np.full(freq_hz.shape, DEFAULT_TRX_K[alma_band(freq_hz)], dtype=np.float64)
    if isinstance(trx_k, Mapping):
        band = alma_band(freq_hz)
        if band not in trx_k:
            raise ParameterError(
                f"trx_k has no entry for band {band} (keys {sorted(trx_k)}); valid: a mapping "
                "band -> K that includes the band of the spectrum"
            )
        trx_k = trx_k[band]
    trx = np.asarray(trx_k, dtype=np.float64)
    if np.any(trx < 0) or not np.all(np.isfinite(trx)):
        raise ParameterError(f"trx_k={trx_k!r} is invalid; valid: finite, >= 0 K")
    return trx


def tsys_spectrum(
    freq_hz: np.ndarray,
    elevation_rad: float | np.ndarray,
    pwv_mm: float | np.ndarray,
    trx_k: float | np.ndarray | Mapping[int, float] | None = None,
    t_atm_k: float = 270.0,
    t_amb_k: float = 270.0,
    eta_forward: float = FORWARD_EFFICIENCY,
) -> np.ndarray:
    """System temperature spectrum referred to outside the atmosphere.

    ``Tsys = (Trx + eta T_atm (1 - exp(-tau A)) + (1 - eta) T_amb) exp(tau A)`` with
    ``tau = zenith_opacity(nu, pwv)`` and ``A = 1 / sin(el)`` (plane-parallel airmass).
    Single-sideband (perfect sideband rejection), Rayleigh-Jeans temperatures.

    Parameters
    ----------
    freq_hz : numpy.ndarray
        (nchan,) channel frequencies (Hz).
    elevation_rad : float or numpy.ndarray
        Elevation (rad), shape E, 0 < el <= pi/2.
    pwv_mm : float or numpy.ndarray
        PWV (mm), broadcastable to E.
    trx_k : None, float, (nchan,) array or {band: K}
        Receiver temperature (K).  None: :data:`DEFAULT_TRX_K` for the band of the spectrum.
    t_atm_k, t_amb_k : float
        Effective atmospheric and ambient (spillover) temperatures (K).
    eta_forward : float
        Forward efficiency.

    Returns
    -------
    numpy.ndarray
        float64, shape E + (nchan,), Tsys (K).
    """
    f = np.atleast_1d(_check_freq(freq_hz))
    el = _check_elevation(elevation_rad)
    pwv = _check_pwv(pwv_mm)
    if not 0.0 < eta_forward <= 1.0:
        raise ParameterError(f"eta_forward={eta_forward!r} is invalid; valid: 0 < eta <= 1")
    shape = np.broadcast_shapes(el.shape, pwv.shape)
    el, pwv = np.broadcast_to(el, shape), np.broadcast_to(pwv, shape)
    dry, wet = _cached_opacities(f.tobytes())
    tau = dry + pwv[..., None] * wet
    tau_los = tau / np.sin(el)[..., None]
    trx = _resolve_trx(f, trx_k)
    sky = eta_forward * t_atm_k * (-np.expm1(-tau_los)) + (1.0 - eta_forward) * t_amb_k
    return (trx + sky) * np.exp(tau_los)


@functools.lru_cache(maxsize=64)
def _cached_opacities(freq_bytes: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Read-only (dry, wet per mm) opacities of a float64 frequency array given as bytes.

    Spectra are evaluated many times (per time block) on the same channel grid.
    """
    f = np.frombuffer(freq_bytes, dtype=np.float64)
    dry, wet = dry_opacity(f), wet_opacity_per_mm(f)
    dry.flags.writeable = False
    wet.flags.writeable = False
    return dry, wet


@functools.lru_cache(maxsize=4)
def _wvr_samples(n_sub: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Dry and wet-per-mm zenith opacities at the WVR sample frequencies, each (4, 2*n_sub)."""
    freqs = wvr_channel_samples(n_sub)  # uniform samples across each sideband
    return dry_opacity(freqs), wet_opacity_per_mm(freqs)


def wvr_brightness(
    pwv_mm: float | np.ndarray,
    elevation_rad: float | np.ndarray,
    t_atm_k: float = 270.0,
) -> np.ndarray:
    """Sky brightness (K) in the four 183 GHz WVR channels.

    ``T_B = T_atm (1 - exp(-tau(nu) / sin el))`` averaged uniformly over both sidebands of
    each double-sideband channel (:data:`WVR_CHANNEL_OFFSETS_HZ`, bandwidths
    :data:`WVR_CHANNEL_BANDWIDTHS_HZ`).  Monotonic in PWV; channel 1 (nearest the line) is the
    brightest and saturates first.

    Parameters
    ----------
    pwv_mm : float or numpy.ndarray
        PWV along the zenith (mm), shape P.
    elevation_rad : float or numpy.ndarray
        Elevation (rad), broadcastable with P.
    t_atm_k : float
        Effective atmospheric temperature (K).

    Returns
    -------
    numpy.ndarray
        float64, shape broadcast(P, E) + (4,).
    """
    pwv = _check_pwv(pwv_mm)
    el = _check_elevation(elevation_rad)
    dry, wet = _wvr_samples()
    airmass = 1.0 / np.sin(el)
    shape = np.broadcast_shapes(pwv.shape, el.shape)
    pwv_b = np.broadcast_to(pwv, shape)[..., None]
    am_b = np.broadcast_to(airmass, shape)[..., None]
    acc = np.zeros(shape + (4,), dtype=np.float64)
    n_samp = dry.shape[1]
    for j in range(n_samp):  # loop keeps memory at shape + (4,)
        acc -= np.expm1(-(dry[:, j] + pwv_b * wet[:, j]) * am_b)
    return t_atm_k * acc / n_samp


def wvr_dtdl(pwv_mm: float, elevation_rad: float, t_atm_k: float = 270.0) -> np.ndarray:
    """Sensitivity of the WVR channels to line-of-sight excess path, dT_B/dL (K per mm).

    A line-of-sight path ``L`` is a slant water column ``L / PATH_PER_PWV``, i.e. a zenith
    column ``sin(el) L / PATH_PER_PWV``: the numerical derivative of :func:`wvr_brightness`
    with respect to zenith PWV times ``sin(el) / PATH_PER_PWV``.  This is how the simulator
    drives the WVR brightness from the path screen (the path screen is line-of-sight).

    Returns
    -------
    numpy.ndarray
        float64 (4,).
    """
    pwv = float(_check_pwv(pwv_mm))
    el = float(_check_elevation(elevation_rad))
    step = 1e-3
    lo = max(pwv - step, 0.0)
    hi = pwv + step
    t_hi = wvr_brightness(hi, el, t_atm_k)
    t_lo = wvr_brightness(lo, el, t_atm_k)
    return (t_hi - t_lo) / (hi - lo) * np.sin(el) / PATH_PER_PWV


# ---------------------------------------------------------------- phase screen
_MAX_SCREEN_POINTS = 1 << 23  # memory bound: ~8M float32 points (32 MB) per screen
_MIN_PIXEL_M = 4.0


def _fast_len(n: int) -> int:
    """Smallest 5-smooth integer >= n (an efficient FFT length)."""
    best = 1 << int(np.ceil(np.log2(max(n, 1))))
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def _screen_grid(
    span_along_m: float, span_cross_m: float, outer_scale_m: float
) -> tuple[float, int, int]:
    """Pixel size (m) and grid shape (n_along, n_cross) for a periodic screen.

    The grid must be at least one outer scale wide in both directions (a narrower periodic
    grid puts the missing large-scale power into a 1-D along-wind ridge and breaks isotropy),
    longer than the sampled track and at least twice the array's cross-wind extent.
    """
    len_a = span_along_m + max(outer_scale_m, 2.0 * span_cross_m, 64.0)
    len_c = max(2.0 * span_cross_m + 64.0, outer_scale_m)
    dx = max(_MIN_PIXEL_M, float(np.sqrt(len_a * len_c / _MAX_SCREEN_POINTS)))
    return dx, _fast_len(int(np.ceil(len_a / dx)) + 1), _fast_len(int(np.ceil(len_c / dx)) + 1)


def _kolmogorov_screen(
    n_a: int, n_c: int, dx: float, outer_scale_m: float, rng: np.random.Generator
) -> np.ndarray:
    """Periodic 2-D Gaussian random field with a von Karman spectrum (k^2 + k0^2)^(-11/6).

    Complex white noise is drawn directly on the half-plane of the real FFT (irfft2 makes the
    field real), shaped row block by row block in place to keep memory at ~2 grids.

    Returns
    -------
    numpy.ndarray
        float32 (n_a, n_c), arbitrary normalisation (the caller rescales the samples).
    """
    n_half = n_c // 2 + 1
    spec = rng.standard_normal((n_a, n_half, 2), dtype=np.float32).view(np.complex64)[..., 0]
    ka = np.fft.fftfreq(n_a, d=dx).astype(np.float32)
    kc2 = np.fft.rfftfreq(n_c, d=dx).astype(np.float32) ** 2 + np.float32(outer_scale_m) ** -2
    block = 1024
    for i0 in range(0, n_a, block):
        rows = ka[i0 : i0 + block, None] ** 2 + kc2[None, :]
        spec[i0 : i0 + block] *= rows ** np.float32(-11.0 / 12.0)
    spec[0, 0] = 0.0
    return np.fft.irfft2(spec, s=(n_a, n_c))


def _bilinear_periodic(screen: np.ndarray, ia: np.ndarray, ic: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of a periodic grid at fractional pixel indices."""
    n_a, n_c = screen.shape
    a0 = np.floor(ia).astype(np.int64)
    c0 = np.floor(ic).astype(np.int64)
    fa, fc = ia - a0, ic - c0
    a0 %= n_a
    c0 %= n_c
    a1, c1 = (a0 + 1) % n_a, (c0 + 1) % n_c
    return (
        screen[a0, c0] * (1 - fa) * (1 - fc)
        + screen[a1, c0] * fa * (1 - fc)
        + screen[a0, c1] * (1 - fa) * fc
        + screen[a1, c1] * fa * fc
    )


def phase_screen(
    enu_m: np.ndarray,
    time_s: np.ndarray,
    rng: np.random.Generator,
    rms_path_m: float = 1e-4,
    wind_speed_m_s: float = 10.0,
    wind_dir_rad: float = 0.0,
    outer_scale_m: float = 2000.0,
) -> np.ndarray:
    """Excess path (m) from a frozen Kolmogorov screen blown across the array.

    A periodic 2-D screen with a von Karman power spectrum ``(k^2 + 1/L0^2)^(-11/6)``
    (structure function ~ r^(5/3) well below the outer scale ``L0``) is generated by FFT on a
    grid aligned with the wind, then sampled (bilinear) at ``r_ant - v (t - t0)``.  The samples
    are shifted to zero mean and scaled so their rms over all antennas and times is exactly
    ``rms_path_m``.  Memory is bounded: the pixel size grows (from 4 m) for very long tracks so
    the float32 grid stays below ~8M points (~100 MB peak during the FFT); e.g. 2 h at
    10 m/s with a 2 km outer scale still gets ~4 m pixels.  Separations below ~2 pixels are
    smoothed by the bilinear interpolation.

    Parameters
    ----------
    enu_m : numpy.ndarray
        (n_ant, 3) antenna east/north/up offsets (m); only east/north are used.
    time_s : numpy.ndarray
        (n_time,) sample times (s; any origin).
    rng : numpy.random.Generator
        Source of randomness.
    rms_path_m : float
        Rms of the returned path (m), >= 0 (0 gives zeros).
    wind_speed_m_s : float
        Screen speed (m/s), >= 0.
    wind_dir_rad : float
        Direction the screen moves towards, azimuth from north through east (rad).
    outer_scale_m : float
        Outer scale L0 (m), > 0.

    Returns
    -------
    numpy.ndarray
        float64 (n_time, n_ant) excess path (m).
    """
    enu = np.asarray(enu_m, dtype=np.float64)
    t = np.asarray(time_s, dtype=np.float64).ravel()
    if enu.ndim != 2 or enu.shape[1] < 2:
        raise ParameterError(f"enu_m has shape {enu.shape}; valid: (n_ant, 3)")
    if rms_path_m < 0 or not np.isfinite(rms_path_m):
        raise ParameterError(f"rms_path_m={rms_path_m!r} is invalid; valid: >= 0 m")
    if wind_speed_m_s < 0 or not np.isfinite(wind_speed_m_s):
        raise ParameterError(f"wind_speed_m_s={wind_speed_m_s!r} is invalid; valid: >= 0 m/s")
    if not outer_scale_m > 0:
        raise ParameterError(f"outer_scale_m={outer_scale_m!r} is invalid; valid: > 0 m")
    n_time, n_ant = t.size, enu.shape[0]
    if rms_path_m == 0 or n_time == 0:
        return np.zeros((n_time, n_ant), dtype=np.float64)
    wa = np.array([np.sin(wind_dir_rad), np.cos(wind_dir_rad)])  # unit vector (east, north)
    wc = np.array([-wa[1], wa[0]])
    along_ant = enu[:, :2] @ wa
    cross_ant = enu[:, :2] @ wc
    shift = wind_speed_m_s * (t - t.min())
    along = along_ant[None, :] - shift[:, None]  # position in the screen frame
    cross = np.broadcast_to(cross_ant[None, :], along.shape)
    dx, n_a, n_c = _screen_grid(
        float(along.max() - along.min()), float(cross_ant.max() - cross_ant.min()), outer_scale_m
    )
    logger.debug("phase screen grid %d x %d, pixel %.2f m", n_a, n_c, dx)
    screen = _kolmogorov_screen(n_a, n_c, dx, outer_scale_m, rng)
    path = _bilinear_periodic(screen, (along - along.min()) / dx, (cross - cross_ant.min()) / dx)
    path -= path.mean()
    rms = np.sqrt(np.mean(path**2))
    if rms > 0:
        path *= rms_path_m / rms
    return path
