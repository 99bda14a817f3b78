"""Spectral lines of solar-system flux calibrators (for the fluxcalflag stage), and channel
range helpers shared by the channel-flagging stages.

The catalogue
-------------
:data:`SOLAR_SYSTEM_LINES` maps a body name to the molecular lines in its atmosphere that are
strong enough to bias a flux scale (hifa_fluxcalflag, reference section 8 stage 3). Each
:class:`SolarSystemLine` holds the species, the transition, its rest frequency (GHz; CDMS/JPL
values) and the frequency range to flag, ``lo_ghz``..``hi_ghz``. The ranges are the ones of
the ALMA pipeline's built-in catalogue (``hifa/tasks/fluxcalflag/solsyslinesdict.py``): the
pressure-broadened line wings plus the range of geocentric Doppler shifts of the body, so
they are *not* centred on the rest frequency (Titan CO(2-1): 229.49-231.74 GHz around
230.538 GHz). The pipeline compares them with channel frequencies in the GEO frame.

fastcal keeps the CO, 13CO and HCN ladders of Mars, Venus, Neptune and Titan (bands 3-10).
Left out: Titan's HCN v2=1, HC15N, H13CN and CH3CN lines (narrow, weak). One correction:
the pipeline's Mars 13CO(1-0) range reads 100.190-110.212 GHz, a typo for 110.190-110.212 GHz
(its older versions and the other bodies' 13CO ranges), which fastcal uses.
Uranus is a known body with no catalogued lines: its CO is far too weak to matter (the
pipeline has no Uranus entry either), so it gets no flags, like a quasar.

Doppler shift
-------------
The ranges already contain the bodies' Doppler shifts relative to the geocentre. ALMA raw
data have TOPO channel frequencies, which differ from GEO by the Earth-rotation velocity,
at most 0.47 km/s (0.36 MHz at 230 GHz). fastcal does not convert frames: it widens every
range by ``TOPO_GEO_MAX_KMS = 0.5`` km/s on both sides instead (:func:`line_ranges_hz`), so a
channel that could overlap the range in the GEO frame is flagged.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from fastcal.errors import ParameterError

__all__ = ["SolarSystemLine", "SOLAR_SYSTEM_LINES", "TOPO_GEO_MAX_KMS", "C_KM_S", "lines_for",
           "line_ranges_hz", "line_channel_mask", "channel_ranges", "format_channel_ranges"]

#: Largest |TOPO - GEO| velocity difference (km/s): the Earth's equatorial rotation speed, rounded up.
TOPO_GEO_MAX_KMS = 0.5
#: Speed of light (km/s).
C_KM_S = 299792.458


@dataclass(frozen=True)
class SolarSystemLine:
    """One line of a body: species, transition, rest frequency and flagged range (GHz)."""

    species: str
    transition: str
    rest_ghz: float
    lo_ghz: float
    hi_ghz: float


def _ladder(species: str, rest: Sequence[tuple[str, float]],
            ranges: Sequence[tuple[float, float]]) -> tuple[SolarSystemLine, ...]:
    return tuple(SolarSystemLine(species, tr, f, lo, hi) for (tr, f), (lo, hi) in zip(rest, ranges, strict=True))


# rest frequencies (GHz), CDMS / JPL
_CO = (("1-0", 115.2712018), ("2-1", 230.5380000), ("3-2", 345.7959899), ("4-3", 461.0407682),
       ("6-5", 691.4730763), ("7-6", 806.6518060), ("8-7", 921.7997000))
_13CO = (("1-0", 110.2013543), ("2-1", 220.3986842), ("3-2", 330.5879653), ("4-3", 440.7651735),
         ("6-5", 661.0672766), ("7-6", 771.1841250), ("8-7", 881.2728080))
_HCN = (("1-0", 88.6316022), ("2-1", 177.2611115), ("3-2", 265.8864343), ("4-3", 354.5054779),
        ("5-4", 443.1161493), ("7-6", 620.3040022), ("8-7", 708.8770051), ("9-8", 797.4332611),
        ("10-9", 885.9707000))

#: Body name (as a FIELD name, case-insensitive) -> its lines; an empty tuple = known, no lines.
SOLAR_SYSTEM_LINES: dict[str, tuple[SolarSystemLine, ...]] = {
    "Mars": _ladder("CO", _CO, ((115.204, 115.338), (230.404, 230.672), (345.595, 345.997),
                                (460.773, 461.309), (691.071, 691.875), (806.184, 807.120),
                                (921.265, 922.335)))
    + _ladder("13CO", _13CO, ((110.190, 110.212), (220.377, 220.421), (330.555, 330.621),
                              (440.721, 440.809), (661.001, 661.133), (771.108, 771.260),
                              (881.196, 881.370))),
    "Venus": _ladder("CO", _CO, ((115.206, 115.337), (230.407, 230.669), (345.600, 345.992),
                                 (460.779, 461.303), (691.081, 691.865), (806.194, 807.110),
                                 (921.277, 922.323)))
    + _ladder("13CO", _13CO, ((110.192, 110.210), (220.380, 220.418), (330.560, 330.616),
                              (440.727, 440.803), (661.011, 661.123), (771.118, 771.250),
                              (881.208, 881.358))),
    "Neptune": _ladder("CO", _CO[:6], ((113.99, 116.51), (226.98, 234.52), (339.97, 351.54), (454.95, 467.55),
                        (685.93, 696.57), (802.92, 810.58))),
    "Titan": _ladder("CO", _CO[:6], ((114.92, 115.67), (229.49, 231.74), (343.82, 347.62),
                                     (458.29, 463.80), (687.75, 694.66), (803.46, 809.85)))
    + _ladder("13CO", _13CO, ((110.18, 110.22), (220.28, 220.52), (330.36, 330.82), (440.42, 441.15),
                              (660.60, 661.53), (770.65, 771.72), (880.73, 881.82)))
    + _ladder("HCN", _HCN, ((88.45, 88.81), (176.73, 177.80), (264.96, 266.81), (353.29, 355.72),
                            (441.74, 444.52), (618.45, 622.16), (707.01, 710.74), (795.56, 799.31),
                            (883.82, 887.86))),
    "Uranus": (),
}


def lines_for(field_name: str) -> tuple[SolarSystemLine, ...] | None:
    """The catalogued lines of the body called `field_name` (case-insensitive).

    Returns None when the name is not a catalogued solar-system body (e.g. a quasar), an
    empty tuple for a known body without lines (Uranus).
    """
    key = str(field_name).strip().lower()
    for name, lines in SOLAR_SYSTEM_LINES.items():
        if name.lower() == key:
            return lines
    return None


def line_ranges_hz(lines: Iterable[SolarSystemLine], margin_kms: float = TOPO_GEO_MAX_KMS) -> np.ndarray:
    """Flag ranges (Hz), float64[n, 2], each widened by ``margin_kms`` on both sides."""
    if not (np.isfinite(margin_kms) and margin_kms >= 0):
        raise ParameterError(f"margin_kms={margin_kms!r} is invalid; valid: >= 0 km/s")
    r = np.array([(ln.lo_ghz, ln.hi_ghz) for ln in lines], np.float64).reshape(-1, 2) * 1e9
    k = margin_kms / C_KM_S
    return np.column_stack([r[:, 0] * (1 - k), r[:, 1] * (1 + k)])


def line_channel_mask(chan_freq_hz: np.ndarray, chan_width_hz: np.ndarray, ranges_hz: np.ndarray) -> np.ndarray:
    """Channels (bool[nchan]) whose extent ``freq +- |width|/2`` overlaps any range.

    Parameters
    ----------
    chan_freq_hz, chan_width_hz : float64[nchan]
        Channel centres and widths (Hz; widths may be negative for decreasing frequencies).
    ranges_hz : float64[n, 2]
        (low, high) frequency ranges (Hz).
    """
    f = np.asarray(chan_freq_hz, np.float64)
    half = 0.5 * np.abs(np.broadcast_to(np.asarray(chan_width_hz, np.float64), f.shape))
    lo, hi = f - half, f + half
    r = np.asarray(ranges_hz, np.float64).reshape(-1, 2)
    if not r.size:
        return np.zeros(f.shape, bool)
    return ((lo[:, None] < r[None, :, 1]) & (hi[:, None] > r[None, :, 0])).any(axis=1)


def channel_ranges(channels: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted channel indices -> contiguous inclusive ranges: [0,1,2,5] -> [(0, 2), (5, 5)]."""
    ch = sorted({int(c) for c in channels})
    out: list[tuple[int, int]] = []
    for c in ch:
        if out and c == out[-1][1] + 1:
            out[-1] = (out[-1][0], c)
        else:
            out.append((c, c))
    return out


def format_channel_ranges(channels: Iterable[int]) -> str:
    """CASA channel selection of the ranges: ``"0~2;5~5"``."""
    return ";".join(f"{a}~{b}" for a, b in channel_ranges(channels))
