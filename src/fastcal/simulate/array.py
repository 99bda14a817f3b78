"""Antenna layout, site, sidereal time, horizontal coordinates and UVW for the simulator.

Conventions
-----------
* Positions are ITRF (earth-fixed, geocentric) Cartesian metres, WGS84 ellipsoid.
* Times are MJD seconds (UTC, used as UT1; the < 1 s difference is irrelevant here).
* Directions are J2000 RA/Dec treated as apparent coordinates: precession, nutation,
  aberration and refraction are ignored.  For a simulator that writes and then reads back its
  own UVW this is self-consistent; against a real ephemeris the error is ~0.3 deg (precession
  since 2000), which only matters when comparing with CASA-recomputed UVW.
* Azimuth is measured from north through east, in [0, 2 pi).
* Per-antenna UVW (metres) is the projection of the antenna's ITRF offset from the array
  centre onto the (u, v, w) frame of the source; ``w`` points towards the source, so an antenna
  with larger ``w`` is closer to the source and receives the wavefront earlier.  The baseline
  UVW of an MS row (ANTENNA1 = p, ANTENNA2 = q) is ``uvw[q] - uvw[p]``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from fastcal.errors import ParameterError
from fastcal.geometry import (
    SPEED_OF_LIGHT,
    geometric_delay_s,
    gmst_rad,  # re-exported: the library's sidereal time
)

__all__ = [
    "ALMA_SITE_LAT_RAD",
    "ALMA_SITE_LON_RAD",
    "ALMA_SITE_HEIGHT_M",
    "ARRAY_CENTER_ITRF",
    "DISH_DIAMETER_M",
    "MIN_SEPARATION_M",
    "AntennaLayout",
    "geodetic_to_itrf",
    "enu_to_itrf",
    "itrf_to_enu",
    "alma_layout",
    "gmst_rad",
    "antpos_w_error",
    "lst_rad",
    "hour_angle_rad",
    "azel",
    "antenna_uvw",
    "baseline_uvw",
]

logger = logging.getLogger(__name__)

ALMA_SITE_LAT_RAD: float = float(np.deg2rad(-23.0292))
ALMA_SITE_LON_RAD: float = float(np.deg2rad(-67.7549))
ALMA_SITE_HEIGHT_M: float = 5058.7

DISH_DIAMETER_M: float = 12.0
#: Minimum centre-to-centre pad separation of generated layouts (m).
MIN_SEPARATION_M: float = 15.5

_WGS84_A = 6378137.0
_WGS84_F = 1.0 / 298.257223563
_WGS84_E2 = _WGS84_F * (2.0 - _WGS84_F)

_MIN_ANT, _MAX_ANT = 4, 64


def geodetic_to_itrf(lat_rad: float, lon_rad: float, height_m: float) -> np.ndarray:
    """Convert WGS84 geodetic coordinates to ITRF Cartesian coordinates.

    Parameters
    ----------
    lat_rad, lon_rad : float
        Geodetic latitude and east longitude (rad).
    height_m : float
        Height above the ellipsoid (m).

    Returns
    -------
    numpy.ndarray
        float64, shape (3,): X, Y, Z (m).
    """
    sin_lat, cos_lat = np.sin(lat_rad), np.cos(lat_rad)
    n_radius = _WGS84_A / np.sqrt(1.0 - _WGS84_E2 * sin_lat**2)
    x = (n_radius + height_m) * cos_lat * np.cos(lon_rad)
    y = (n_radius + height_m) * cos_lat * np.sin(lon_rad)
    z = (n_radius * (1.0 - _WGS84_E2) + height_m) * sin_lat
    return np.array([x, y, z], dtype=np.float64)


#: ITRF position of the array centre (m), shape (3,).
ARRAY_CENTER_ITRF: np.ndarray = geodetic_to_itrf(
    ALMA_SITE_LAT_RAD, ALMA_SITE_LON_RAD, ALMA_SITE_HEIGHT_M
)


def _enu_matrix(lat_rad: float, lon_rad: float) -> np.ndarray:
    """Rows are the ITRF components of the local east, north and up unit vectors."""
    sl, cl = np.sin(lat_rad), np.cos(lat_rad)
    so, co = np.sin(lon_rad), np.cos(lon_rad)
    return np.array(
        [
            [-so, co, 0.0],
            [-sl * co, -sl * so, cl],
            [cl * co, cl * so, sl],
        ],
        dtype=np.float64,
    )


def enu_to_itrf(
    enu_m: np.ndarray,
    lat_rad: float = ALMA_SITE_LAT_RAD,
    lon_rad: float = ALMA_SITE_LON_RAD,
    height_m: float = ALMA_SITE_HEIGHT_M,
) -> np.ndarray:
    """Convert local east/north/up offsets (m, shape (..., 3)) to ITRF positions (m).

    The offsets are relative to the geodetic point (lat, lon, height); the tangent-plane
    approximation is exact for the rotation and adequate (< 1 cm curvature error within a
    few hundred metres) for array layouts.
    """
    enu = np.asarray(enu_m, dtype=np.float64)
    origin = geodetic_to_itrf(lat_rad, lon_rad, height_m)
    return origin + enu @ _enu_matrix(lat_rad, lon_rad)


def itrf_to_enu(
    itrf_m: np.ndarray,
    lat_rad: float = ALMA_SITE_LAT_RAD,
    lon_rad: float = ALMA_SITE_LON_RAD,
    height_m: float = ALMA_SITE_HEIGHT_M,
) -> np.ndarray:
    """Inverse of :func:`enu_to_itrf`: ITRF positions (m, (..., 3)) to local E/N/U offsets."""
    xyz = np.asarray(itrf_m, dtype=np.float64)
    origin = geodetic_to_itrf(lat_rad, lon_rad, height_m)
    return (xyz - origin) @ _enu_matrix(lat_rad, lon_rad).T


@dataclass
class AntennaLayout:
    """Antenna configuration of a simulated array.

    Attributes
    ----------
    names : list of str
        Unique antenna names (``DA41``, ``DV05``, ``PM03`` style), length n_ant.
    stations : list of str
        Unique pad names (``A035``, ``W210``, ``N601`` style), length n_ant.
    positions : numpy.ndarray
        float64 (n_ant, 3) ITRF positions (m).
    dish_diameter : numpy.ndarray
        float64 (n_ant,) dish diameters (m).
    enu : numpy.ndarray
        float64 (n_ant, 3) east/north/up offsets from :data:`ARRAY_CENTER_ITRF` (m).
    """

    names: list[str]
    stations: list[str]
    positions: np.ndarray
    dish_diameter: np.ndarray
    enu: np.ndarray

    @property
    def n_ant(self) -> int:
        """Number of antennas."""
        return len(self.names)


def _antenna_name_pool() -> list[str]:
    """ALMA 12-m antenna names; DA66..DA75 are fictitious extras for n_ant > 54."""
    pool = [f"DA{i:02d}" for i in range(41, 66)]
    pool += [f"DV{i:02d}" for i in range(1, 26)]
    pool += [f"PM{i:02d}" for i in range(1, 5)]
    pool += [f"DA{i:02d}" for i in range(66, 76)]
    return pool


def _scatter_pads(n_ant: int, radius_m: float, rng: np.random.Generator) -> np.ndarray:
    """Random sequential placement of n_ant pads in a disc, centrally concentrated.

    Returns float64 (n_ant, 2) east/north offsets (m) with all separations
    >= MIN_SEPARATION_M.  The radius grows by 5 % whenever placement stalls.
    """
    pts = np.empty((0, 2), dtype=np.float64)
    stalls = 0
    while pts.shape[0] < n_ant:
        # r ~ R * u**0.7: denser towards the centre than uniform (u**0.5), like compact configs.
        r = radius_m * rng.random() ** 0.7
        phi = rng.uniform(0.0, 2.0 * np.pi)
        cand = np.array([r * np.cos(phi), r * np.sin(phi)])
        if pts.shape[0] == 0 or np.min(np.hypot(*(pts - cand).T)) >= MIN_SEPARATION_M:
            pts = np.vstack([pts, cand])
            stalls = 0
            continue
        stalls += 1
        if stalls > 2000:
            radius_m *= 1.05
            stalls = 0
    return pts


def _pad_names(en: np.ndarray, radius_m: float, rng: np.random.Generator) -> list[str]:
    """ALMA-style pad names: inner pads A001..A140, outer pads W2xx/N6xx/S3xx/P4xx by azimuth."""
    n = en.shape[0]
    a_numbers = list(rng.permutation(np.arange(1, 141)))
    arms = {
        "W": list(range(201, 211)),
        "N": list(range(601, 607)),
        "S": list(range(301, 310)),
        "P": list(range(401, 411)),
    }
    names: list[str] = []
    r = np.hypot(en[:, 0], en[:, 1])
    for i in range(n):
        name = None
        if r[i] > 0.75 * radius_m:
            ang = np.degrees(np.arctan2(en[i, 0], en[i, 1])) % 360.0  # from north through east
            arm = "N" if ang < 45 or ang >= 315 else "P" if ang < 135 else "S" if ang < 225 else "W"
            if arms[arm]:
                name = f"{arm}{arms[arm].pop(0)}"
        if name is None:
            name = f"A{int(a_numbers.pop(0)):03d}"
        names.append(name)
    return names


def alma_layout(
    n_ant: int, rng: np.random.Generator, max_baseline_m: float = 300.0
) -> AntennaLayout:
    """Generate a compact ALMA-like 12-m array configuration at the ALMA site.

    Pads are placed by random sequential addition in a disc, centrally concentrated, with
    centre-to-centre separations of at least :data:`MIN_SEPARATION_M` (no shadowing of 12-m
    dishes above ~50 deg elevation), then scaled (up only) so that the longest baseline
    equals ``max_baseline_m`` as closely as the separation limit allows.  Heights follow a
    gentle plateau slope plus < 1 m scatter.

    Parameters
    ----------
    n_ant : int
        Number of antennas, 4..64.
    rng : numpy.random.Generator
        Source of randomness; the layout is a deterministic function of its state.
    max_baseline_m : float
        Longest baseline (m), >= 4 * MIN_SEPARATION_M.

    Returns
    -------
    AntennaLayout

    Raises
    ------
    ParameterError
        If ``n_ant`` is outside 4..64 or ``max_baseline_m`` is too small.
    """
    if not isinstance(n_ant, (int, np.integer)) or not _MIN_ANT <= n_ant <= _MAX_ANT:
        raise ParameterError(
            f"n_ant={n_ant!r} is not supported by the simulator; valid: integers "
            f"{_MIN_ANT}..{_MAX_ANT}"
        )
    if not np.isfinite(max_baseline_m) or max_baseline_m < 4.0 * MIN_SEPARATION_M:
        raise ParameterError(
            f"max_baseline_m={max_baseline_m!r} is too small; valid: >= "
            f"{4.0 * MIN_SEPARATION_M:g} m"
        )
    n_ant = int(n_ant)
    radius = 0.5 * float(max_baseline_m)
    # The disc must be able to hold n_ant pads (random packing fraction ~0.3).
    min_radius = MIN_SEPARATION_M * 0.5 * np.sqrt(n_ant / 0.3)
    radius = max(radius, min_radius)
    en = _scatter_pads(n_ant, radius, rng)
    en -= en.mean(axis=0)
    d = np.hypot(*(en[:, None, :] - en[None, :, :]).transpose(2, 0, 1))
    longest = d.max()
    if longest < max_baseline_m:
        en *= max_baseline_m / longest
    else:
        logger.info(
            "layout with %d antennas needs baselines up to %.0f m (> max_baseline_m=%g)",
            n_ant,
            longest,
            max_baseline_m,
        )
    up = 0.01 * en[:, 0] - 0.005 * en[:, 1] + rng.normal(0.0, 0.3, n_ant)
    enu = np.column_stack([en, up])
    positions = enu_to_itrf(enu)
    pool = _antenna_name_pool()
    n_real = len(pool) - 10  # real ALMA names first; the fictitious extras only when needed
    n_pool = n_real if n_ant <= n_real else len(pool)
    names = [pool[i] for i in np.sort(rng.choice(n_pool, size=n_ant, replace=False))]
    stations = _pad_names(en, 0.5 * np.hypot(*(en.max(0) - en.min(0))), rng)
    return AntennaLayout(
        names=names,
        stations=stations,
        positions=positions,
        dish_diameter=np.full(n_ant, DISH_DIAMETER_M, dtype=np.float64),
        enu=enu,
    )


def lst_rad(time_mjd_s: np.ndarray, lon_rad: float = ALMA_SITE_LON_RAD) -> np.ndarray:
    """Local mean sidereal time (rad, [0, 2 pi)) at east longitude ``lon_rad``."""
    return np.mod(gmst_rad(time_mjd_s) + lon_rad, 2.0 * np.pi)


def hour_angle_rad(
    time_mjd_s: np.ndarray, ra_rad: float, lon_rad: float = ALMA_SITE_LON_RAD
) -> np.ndarray:
    """Local hour angle of right ascension ``ra_rad`` (rad, wrapped to [-pi, pi))."""
    h = lst_rad(time_mjd_s, lon_rad) - ra_rad
    return np.mod(h + np.pi, 2.0 * np.pi) - np.pi


def azel(
    time_mjd_s: np.ndarray,
    ra_rad: float,
    dec_rad: float,
    lat_rad: float = ALMA_SITE_LAT_RAD,
    lon_rad: float = ALMA_SITE_LON_RAD,
) -> tuple[np.ndarray, np.ndarray]:
    """Azimuth and elevation of a fixed (RA, Dec) direction seen from a site.

    Geometric (no refraction, precession or nutation).

    Parameters
    ----------
    time_mjd_s : array_like
        Times, MJD seconds, any shape.
    ra_rad, dec_rad : float
        Direction (rad).
    lat_rad, lon_rad : float
        Site geodetic latitude and east longitude (rad).

    Returns
    -------
    az_rad, el_rad : numpy.ndarray
        float64, shape of ``time_mjd_s``; azimuth from north through east in [0, 2 pi),
        elevation in [-pi/2, pi/2].
    """
    h = hour_angle_rad(time_mjd_s, ra_rad, lon_rad)
    sd, cd = np.sin(dec_rad), np.cos(dec_rad)
    sl, cl = np.sin(lat_rad), np.cos(lat_rad)
    sin_el = sl * sd + cl * cd * np.cos(h)
    el = np.arcsin(np.clip(sin_el, -1.0, 1.0))
    az = np.arctan2(-cd * np.sin(h), sd * cl - cd * sl * np.cos(h))
    return np.mod(az, 2.0 * np.pi), el


def antenna_uvw(
    positions_itrf: np.ndarray,
    time_mjd_s: np.ndarray,
    ra_rad: float,
    dec_rad: float,
) -> np.ndarray:
    """Per-antenna UVW (m) of antennas relative to the array centre.

    With H = GMST - RA the Greenwich hour angle and (X, Y, Z) the ITRF offset of an antenna
    from :data:`ARRAY_CENTER_ITRF`::

        u =  sin H X + cos H Y
        v = -sin d cos H X + sin d sin H Y + cos d Z
        w =  cos d cos H X - cos d sin H Y + sin d Z

    Parameters
    ----------
    positions_itrf : numpy.ndarray
        float64 (n_ant, 3) ITRF positions (m).
    time_mjd_s : numpy.ndarray
        (n_time,) MJD seconds.
    ra_rad, dec_rad : float
        Phase-centre direction (rad), J2000 used as apparent (precession ignored).

    Returns
    -------
    numpy.ndarray
        float64 (n_time, n_ant, 3).  Baseline UVW of row (p, q) is ``uvw[:, q] - uvw[:, p]``.
    """
    xyz = np.asarray(positions_itrf, dtype=np.float64) - ARRAY_CENTER_ITRF
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ParameterError(
            f"positions_itrf has shape {np.shape(positions_itrf)}; valid: (n_ant, 3)"
        )
    h = gmst_rad(np.atleast_1d(time_mjd_s)) - ra_rad
    sh, ch = np.sin(h)[:, None], np.cos(h)[:, None]
    sd, cd = np.sin(dec_rad), np.cos(dec_rad)
    x, y, z = xyz[:, 0][None, :], xyz[:, 1][None, :], xyz[:, 2][None, :]
    u = sh * x + ch * y
    v = -sd * ch * x + sd * sh * y + cd * z
    w = cd * ch * x - cd * sh * y + sd * z
    return np.stack([u, v, w], axis=-1)


def antpos_w_error(
    offsets_itrf: np.ndarray,
    time_mjd_s: np.ndarray,
    ra_rad: float,
    dec_rad: float,
    ref_position_itrf: np.ndarray,
) -> np.ndarray:
    """Extra w (m) of antennas displaced by `offsets_itrf`, in CASA's KAntPos convention.

    Unlike :func:`antenna_uvw`, this includes precession, nutation and UT1
    (:func:`fastcal.geometry.antpos_direction_itrf`), so that a KAntPos table of the true
    offsets applied by CASA or fastcal removes the injected phase exactly.

    Returns
    -------
    numpy.ndarray
        float64 (n_time, n_ant).
    """
    tau = geometric_delay_s(offsets_itrf, time_mjd_s, ra_rad, dec_rad, ref_position_itrf)
    return tau * SPEED_OF_LIGHT


def baseline_uvw(ant_uvw: np.ndarray, antenna1: np.ndarray, antenna2: np.ndarray) -> np.ndarray:
    """Baseline UVW (m) from per-antenna UVW: ``uvw[..., q, :] - uvw[..., p, :]``.

    Parameters
    ----------
    ant_uvw : numpy.ndarray
        (n_time, n_ant, 3) from :func:`antenna_uvw`.
    antenna1, antenna2 : numpy.ndarray
        (n_bl,) integer antenna indices p and q.

    Returns
    -------
    numpy.ndarray
        float64 (n_time, n_bl, 3).
    """
    return ant_uvw[:, antenna2, :] - ant_uvw[:, antenna1, :]
