"""Small geometry helpers for calibration: sidereal time and source directions in ITRF.

Used by :mod:`fastcal.interp` for antenna-position (``KAntPos Jones``) corrections. The model
is geometric: J2000 coordinates are taken as apparent (no precession, nutation, aberration or
refraction) and UT1 = UTC, the same simplifications as the simulator (docs/simulate.md).
"""

from __future__ import annotations

import numpy as np

__all__ = ["SPEED_OF_LIGHT", "gmst_rad", "source_direction_itrf", "geometric_delay_s"]

#: Speed of light (m/s).
SPEED_OF_LIGHT = 299792458.0

_SECONDS_PER_DAY = 86400.0
_MJD_J2000 = 51544.5


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


def geometric_delay_s(
    offsets_m: np.ndarray, time_mjd_s: np.ndarray, ra_rad: float, dec_rad: float
) -> np.ndarray:
    """Extra geometric delay of antennas displaced by `offsets_m` (ITRF, m).

    ``tau[t, p] = offsets_m[p] . s(t) / c`` (s): the change of the antenna's w coordinate
    divided by c.

    Parameters
    ----------
    offsets_m : numpy.ndarray
        (n_ant, 3) ITRF position offsets (m).
    time_mjd_s : numpy.ndarray
        (n_time,) MJD seconds.
    ra_rad, dec_rad : float
        Source (phase-centre) direction, rad.

    Returns
    -------
    numpy.ndarray
        float64 (n_time, n_ant), seconds.
    """
    s = source_direction_itrf(np.atleast_1d(np.asarray(time_mjd_s, np.float64)), ra_rad, dec_rad)
    return (s @ np.asarray(offsets_m, np.float64).T) / SPEED_OF_LIGHT
