"""Small geometry helpers for calibration: sidereal time and source directions in ITRF.

Two models:

* :func:`gmst_rad` / :func:`source_direction_itrf`: simple geometry, J2000 coordinates taken
  as apparent (no precession, nutation, aberration or refraction) and UT1 = UTC, as the
  simulator uses for its UVW (docs/simulate.md).
* :func:`antpos_direction_itrf` / :func:`geometric_delay_s`: CASA's convention for
  antenna-position (``KAntPos Jones``) corrections, computed with ``casacore.measures``.
  CASA (``KAntPosJones::calcAllJones``, synthesis/MeasurementComponents/KJones.cc) converts
  each antenna's ITRF offset, as an ``MBaseline``, to the frame of the field's PHASE_DIR
  (J2000) with a measures frame of (antenna 0 position, UTC epoch of the data, PHASE_DIR) and
  takes ``dw`` = the w of ``MVuvw(baseline, PHASE_DIR)``. That is ``offset . s`` with ``s``
  the J2000 direction carried to ITRF by precession, nutation, Earth rotation (UT1, IERS)
  and polar motion. :func:`antpos_direction_itrf` returns that ``s``.
"""

from __future__ import annotations

import functools
import threading

import numpy as np

__all__ = [
    "SPEED_OF_LIGHT",
    "gmst_rad",
    "source_direction_itrf",
    "antpos_direction_itrf",
    "geometric_delay_s",
]

#: Speed of light (m/s).
SPEED_OF_LIGHT = 299792458.0

_SECONDS_PER_DAY = 86400.0
_MJD_J2000 = 51544.5
#: Earth rotation rate relative to the celestial frame (rad per UTC second).
_OMEGA_EARTH = 2.0 * np.pi * 1.00273781191135448 / _SECONDS_PER_DAY
#: Spacing of the exact casacore evaluations of :func:`antpos_direction_itrf` (s). Between
#: them the direction is rotated about the ITRF z axis at the sidereal rate; the neglected
#: precession/nutation/polar-motion change over half a spacing is < 3e-8 rad.
ANCHOR_SPACING_S = 600.0
_MEASURES_LOCK = threading.Lock()


def gmst_rad(time_mjd_s: np.ndarray | float) -> np.ndarray:
    """Greenwich mean sidereal time (IAU 1982), UT1 taken equal to UTC.

    Parameters
    ----------
    time_mjd_s : array_like
        Times, MJD seconds (UTC), any shape.

    Returns
    -------
    numpy.ndarray
        float64, same shape, in [0, 2 pi) rad.
    """
    days = np.asarray(time_mjd_s, dtype=np.float64) / _SECONDS_PER_DAY - _MJD_J2000
    frac = days - np.floor(days)
    cent = days / 36525.0
    deg = (
        280.46061837
        + 360.0 * frac
        + 0.98564736629 * days
        + 0.000387933 * cent**2
        - cent**3 / 38710000.0
    )
    return np.deg2rad(np.mod(deg, 360.0))


def source_direction_itrf(
    time_mjd_s: np.ndarray | float, ra_rad: float, dec_rad: float
) -> np.ndarray:
    """Unit vector towards (RA, Dec) in the Earth-fixed (ITRF) frame at each time.

    With H = GMST - RA (Greenwich hour angle): ``s = (cos d cos H, -cos d sin H, sin d)``.

    Returns
    -------
    numpy.ndarray
        float64 (..., 3), leading shape of `time_mjd_s`.
    """
    h = gmst_rad(time_mjd_s) - ra_rad
    cd = np.cos(dec_rad)
    return np.stack([cd * np.cos(h), -cd * np.sin(h), np.full_like(h, np.sin(dec_rad))], axis=-1)


@functools.lru_cache(maxsize=4096)
def _anchor_direction(
    t_anchor: float, ra_rad: float, dec_rad: float, pos: tuple[float, float, float]
) -> tuple[float, float, float]:
    """CASA's effective ITRF source direction at one UTC time (MJD s), exactly as measures."""
    from casacore import quanta as qa
    from casacore.measures import measures

    with _MEASURES_LOCK:
        dm = _measures_instance(measures)
        dm.do_frame(dm.position("itrf", *[qa.quantity(float(p), "m") for p in pos]))
        dm.do_frame(dm.direction("J2000", qa.quantity(ra_rad, "rad"), qa.quantity(dec_rad, "rad")))
        dm.do_frame(dm.epoch("utc", qa.quantity(t_anchor, "s")))
        unit = dm.baseline(
            "itrf",
            qa.quantity([1.0, 0.0, 0.0], "m"),
            qa.quantity([0.0, 1.0, 0.0], "m"),
            qa.quantity([0.0, 0.0, 1.0], "m"),
        )
        uvw = np.asarray(dm.to_uvw(unit)["xyz"].get_value(), np.float64).reshape(3, 3)
    s = uvw[:, 2]  # w of the unit ITRF baselines x, y, z: the direction's ITRF components
    return float(s[0]), float(s[1]), float(s[2])


_DM: list = []


def _measures_instance(factory):
    """The module's one measures server (created on first use; callers hold the lock)."""
    if not _DM:
        _DM.append(factory())
    return _DM[0]


def antpos_direction_itrf(
    time_mjd_s: np.ndarray | float,
    ra_rad: float,
    dec_rad: float,
    ref_position_itrf: np.ndarray,
) -> np.ndarray:
    """Unit vector s such that CASA's KAntPos ``dw = offset . s`` (ITRF), at each time.

    Exact (casacore.measures: precession, nutation, UT1, polar motion) at anchor times on a
    :data:`ANCHOR_SPACING_S` grid and rotated at the sidereal rate about the ITRF z axis to
    the nearest anchor, so only a few measures conversions are made per call.

    Parameters
    ----------
    time_mjd_s : array_like
        Data times, MJD seconds (UTC), any shape.
    ra_rad, dec_rad : float
        The field's PHASE_DIR (J2000), rad.
    ref_position_itrf : numpy.ndarray
        (3,) ITRF position (m) of the measures frame; CASA uses antenna 0.

    Returns
    -------
    numpy.ndarray
        float64 (..., 3), leading shape of `time_mjd_s`.
    """
    t = np.asarray(time_mjd_s, dtype=np.float64)
    pos = tuple(float(x) for x in np.asarray(ref_position_itrf, np.float64).reshape(3))
    anchors = np.round(t / ANCHOR_SPACING_S) * ANCHOR_SPACING_S
    ua, inv = np.unique(anchors.reshape(-1), return_inverse=True)
    sa = np.array([_anchor_direction(float(a), float(ra_rad), float(dec_rad), pos) for a in ua])
    sa = sa.reshape(-1, 3)[inv].reshape(t.shape + (3,))
    rho = np.hypot(sa[..., 0], sa[..., 1])
    phi = np.arctan2(sa[..., 1], sa[..., 0]) - _OMEGA_EARTH * (t - anchors)
    return np.stack([rho * np.cos(phi), rho * np.sin(phi), sa[..., 2]], axis=-1)


def geometric_delay_s(
    offsets_m: np.ndarray,
    time_mjd_s: np.ndarray,
    ra_rad: float,
    dec_rad: float,
    ref_position_itrf: np.ndarray,
) -> np.ndarray:
    """Extra geometric delay of antennas displaced by `offsets_m` (ITRF, m), as CASA.

    ``tau[t, p] = offsets_m[p] . s(t) / c`` (s) with ``s`` from :func:`antpos_direction_itrf`:
    the change of the antenna's w coordinate divided by c.

    Parameters
    ----------
    offsets_m : numpy.ndarray
        (n_ant, 3) ITRF position offsets (m).
    time_mjd_s : numpy.ndarray
        (n_time,) MJD seconds (UTC).
    ra_rad, dec_rad : float
        Source (phase-centre, J2000) direction, rad.
    ref_position_itrf : numpy.ndarray
        (3,) ITRF position (m) of the measures frame (antenna 0 of the MS, as CASA).

    Returns
    -------
    numpy.ndarray
        float64 (n_time, n_ant), seconds.
    """
    t = np.atleast_1d(np.asarray(time_mjd_s, np.float64))
    s = antpos_direction_itrf(t, ra_rad, dec_rad, ref_position_itrf)
    return (s @ np.asarray(offsets_m, np.float64).T) / SPEED_OF_LIGHT
