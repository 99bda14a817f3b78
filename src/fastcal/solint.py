"""CASA ``solint`` / ``combine`` parsing and assignment of data to solution intervals.

CASA semantics (reference §3.2):

* ``combine=""`` breaks solution intervals at every observation, scan, field and spw
  boundary; each of ``"obs"``, ``"scan"``, ``"field"``, ``"spw"`` listed in `combine` removes
  that boundary. The data between boundaries form a *span*.
* ``solint="inf"``: one interval per span. ``"int"``: one interval per integration
  (unique TIME). A duration (``"30s"``, ``"1min"``, ``"0.5h"``, or a number of seconds):
  intervals of that length counted from the first timestamp of the span,
  ``bin = floor((t - t0) / solint)``.
* Bandpass only: an optional frequency part after a comma, ``"inf,8ch"`` (8 channels per
  solution channel) or ``"inf,2MHz"`` (as many channels as fit in 2 MHz, at least one).

Everything here is pure bookkeeping on timestamps (no I/O).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from fastcal.errors import ParameterError

__all__ = [
    "COMBINE_AXES",
    "Solint",
    "SpanMember",
    "Interval",
    "parse_solint",
    "parse_combine",
    "assign_intervals",
    "chan_bins",
]

#: Boundaries `combine` can remove.
COMBINE_AXES: tuple[str, ...] = ("obs", "scan", "field", "spw")

_TIME_UNITS = {"s": 1.0, "sec": 1.0, "ms": 1e-3, "min": 60.0, "m": 60.0, "h": 3600.0,
               "hr": 3600.0, "d": 86400.0}
_FREQ_UNITS = {"hz": 1.0, "khz": 1e3, "mhz": 1e6, "ghz": 1e9}
_VALID = ("'int', 'inf', a duration such as '30s', '1min', '0.5h' or a number of seconds"
          "; bandpass also 'inf,8ch' or 'inf,2MHz'")


@dataclass(frozen=True)
class Solint:
    """A parsed ``solint``.

    Attributes
    ----------
    kind : {"int", "inf", "time"}
    seconds : float
        Interval length for kind "time" (s); 0 otherwise.
    freq_kind : {None, "chan", "hz"}
        Frequency part (bandpass): None = every channel.
    freq_value : float
        Channels per bin ("chan") or bin width in Hz ("hz").
    text : str
        The value as given.
    """

    kind: str
    seconds: float = 0.0
    freq_kind: str | None = None
    freq_value: float = 0.0
    text: str = ""


def _parse_time_part(text: str, whole: str) -> tuple[str, float]:
    s = text.strip().lower()
    if s in ("inf", "infinite", ""):
        return "inf", 0.0
    if s == "int":
        return "int", 0.0
    m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[-+]?\d+)?)\s*([a-z]*)", s)
    if m is None or m.group(2) not in ("", *_TIME_UNITS):
        raise ParameterError(f"solint={whole!r} cannot be parsed; valid: {_VALID}")
    value = float(m.group(1)) * (_TIME_UNITS[m.group(2)] if m.group(2) else 1.0)
    if not value > 0 or not math.isfinite(value):
        raise ParameterError(f"solint={whole!r} must be a positive duration; valid: {_VALID}")
    return "time", value


def _parse_freq_part(text: str, whole: str) -> tuple[str, float]:
    s = text.strip().lower()
    m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[-+]?\d+)?)\s*([a-z]+)", s)
    if m is None or m.group(2) not in ("ch", "chan", *_FREQ_UNITS):
        raise ParameterError(
            f"solint={whole!r}: frequency part {text!r} cannot be parsed; valid: a number of "
            f"channels ('8ch') or a width ('2MHz', '500kHz')")
    value = float(m.group(1))
    if m.group(2) in ("ch", "chan"):
        if value < 1 or value != int(value):
            raise ParameterError(f"solint={whole!r}: channel count must be an integer >= 1")
        return "chan", value
    value *= _FREQ_UNITS[m.group(2)]
    if not value > 0:
        raise ParameterError(f"solint={whole!r}: frequency width must be positive")
    return "hz", value


def parse_solint(solint: str | float | int, *, allow_freq: bool = False) -> Solint:
    """Parse a CASA ``solint``.

    Parameters
    ----------
    solint : str or float
        ``"int"``, ``"inf"``, ``"30s"``, ``"1min"``, ``"0.5h"``, ``60`` (seconds); with
        `allow_freq` also ``"inf,8ch"``, ``"int,2MHz"``.
    allow_freq : bool
        Accept a frequency part (bandpass).

    Raises
    ------
    ParameterError
        Unparseable value, non-positive duration, or a frequency part where not allowed.
    """
    if isinstance(solint, bool) or not isinstance(solint, (str, int, float)):
        raise ParameterError(f"solint={solint!r} has the wrong type; valid: {_VALID}")
    if isinstance(solint, (int, float)):
        if not solint > 0 or not math.isfinite(solint):
            raise ParameterError(f"solint={solint!r} must be a positive number of seconds")
        return Solint("time", float(solint), text=str(solint))
    parts = solint.split(",")
    if len(parts) > 2:
        raise ParameterError(f"solint={solint!r} cannot be parsed; valid: {_VALID}")
    kind, seconds = _parse_time_part(parts[0], solint)
    fkind, fval = None, 0.0
    if len(parts) == 2:
        if not allow_freq:
            raise ParameterError(
                f"solint={solint!r}: a frequency part is only valid for solve_bandpass; "
                f"valid here: {_VALID.split(';')[0]}")
        fkind, fval = _parse_freq_part(parts[1], solint)
    return Solint(kind, seconds, fkind, fval, solint)


def parse_combine(combine: str | Sequence[str] | None) -> frozenset[str]:
    """Parse ``combine`` (``""``, ``"scan"``, ``"scan,spw"``, or a list) into a set of axes.

    Raises
    ------
    ParameterError
        For an item that is not one of ``obs``, ``scan``, ``field``, ``spw``.
    """
    if combine is None:
        return frozenset()
    if isinstance(combine, str):
        items = [c.strip().lower() for c in re.split(r"[,\s]+", combine) if c.strip()]
    elif isinstance(combine, Iterable):
        items = [str(c).strip().lower() for c in combine if str(c).strip()]
    else:
        raise ParameterError(f"combine={combine!r} has the wrong type; valid: a string such as "
                             f"'scan,spw' or a list of {', '.join(COMBINE_AXES)}")
    bad = [c for c in items if c not in COMBINE_AXES]
    if bad:
        raise ParameterError(f"combine={combine!r}: {', '.join(map(repr, bad))} not understood; "
                             f"valid: a comma-separated subset of {', '.join(COMBINE_AXES)}")
    return frozenset(items)


@dataclass(frozen=True)
class SpanMember:
    """One group of data (e.g. one MS chunk) to place into intervals.

    Attributes
    ----------
    obs, scan, field, spw : int
    times : float64[n]
        Unique, sorted timestamps of the group (MJD s).
    """

    obs: int
    scan: int
    field: int
    spw: int
    times: np.ndarray


@dataclass
class Interval:
    """One solution interval.

    Attributes
    ----------
    index : int
        Position in the list returned by :func:`assign_intervals` (time order per span).
    label_spw : int
        Spw the solution is written under (lowest spw of the span when spws are combined).
    spws : tuple of int
        Every spw contributing.
    field, scan, obs : int
        Of the earliest data in the interval (as CASA labels combined intervals).
    t_first : float
        Earliest timestamp in the interval.
    members : list of int
        Indices of the :class:`SpanMember` s contributing.
    """

    index: int
    label_spw: int
    spws: tuple[int, ...]
    field: int
    scan: int
    obs: int
    t_first: float
    members: list[int] = field(default_factory=list)


def _bins(times: np.ndarray, sol: Solint) -> np.ndarray:
    """Interval number (0..) of each sorted unique time within one span."""
    if sol.kind == "inf":
        return np.zeros(times.size, np.int64)
    if sol.kind == "int":
        return np.arange(times.size, dtype=np.int64)
    rel = (times - times[0]) / sol.seconds
    b = np.floor(rel + 1e-9).astype(np.int64)
    # renumber to consecutive bins (empty bins skipped)
    _, inv = np.unique(b, return_inverse=True)
    return inv.astype(np.int64)


def assign_intervals(members: Sequence[SpanMember], solint: Solint,
                     combine: frozenset[str]) -> tuple[list[Interval], list[np.ndarray]]:
    """Assign every timestamp of every member to a solution interval.

    Parameters
    ----------
    members : sequence of SpanMember
    solint : Solint
    combine : set of str
        From :func:`parse_combine`.

    Returns
    -------
    intervals : list of Interval
        Sorted by (label spw, first time).
    slots : list of int64[n_times]
        For each member, the interval index of each of its timestamps.
    """
    spans: dict[tuple, list[int]] = {}
    for i, m in enumerate(members):
        key = tuple(None if ax in combine else v for ax, v in
                    (("obs", m.obs), ("scan", m.scan), ("field", m.field), ("spw", m.spw)))
        spans.setdefault(key, []).append(i)
    raw: list[tuple[tuple[int, float], Interval]] = []
    slot_tmp: list[np.ndarray] = [np.empty(0, np.int64)] * len(members)
    for idx in spans.values():
        times = np.unique(np.concatenate([members[i].times for i in idx]))
        bins = _bins(times, solint)
        label_spw = min(members[i].spw for i in idx)
        spws = tuple(sorted({members[i].spw for i in idx}))
        ivs: list[Interval] = []
        for _ in range(int(bins.max()) + 1 if bins.size else 0):
            ivs.append(Interval(-1, label_spw, spws, -1, -1, -1, math.inf))
        for i in idx:
            m = members[i]
            mb = bins[np.searchsorted(times, m.times)]
            for b in np.unique(mb):
                iv = ivs[int(b)]
                t0 = float(m.times[mb == b][0])
                iv.members.append(i)
                if t0 < iv.t_first or (t0 == iv.t_first and m.spw < members[iv.members[0]].spw):
                    iv.t_first, iv.field, iv.scan, iv.obs = t0, m.field, m.scan, m.obs
            slot_tmp[i] = mb
        base = len(raw)
        for iv in ivs:
            raw.append(((iv.label_spw, iv.t_first), iv))
        for i in idx:
            slot_tmp[i] = slot_tmp[i] + base
    order = sorted(range(len(raw)), key=lambda k: raw[k][0])
    new_index = np.empty(len(raw), np.int64)
    intervals = []
    for new, old in enumerate(order):
        iv = raw[old][1]
        iv.index = new
        new_index[old] = new
        intervals.append(iv)
    slots = [new_index[s] if s.size else s for s in slot_tmp]
    return intervals, slots


def chan_bins(freq: np.ndarray, width: np.ndarray, sol: Solint | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Solution channels of a bandpass frequency solint.

    Parameters
    ----------
    freq, width : float64[n_chan]
        Selected channel frequencies and widths (Hz).
    sol : Solint or None
        None or no frequency part: one solution per channel.

    Returns
    -------
    chan_bin : int32[n_chan]
        Solution channel of each input channel.
    out_freq, out_width : float64[n_out]
        Mean frequency and summed |width| of each solution channel.
    """
    n = freq.size
    if sol is None or sol.freq_kind is None:
        per = 1
    elif sol.freq_kind == "chan":
        per = int(sol.freq_value)
    else:
        w = float(np.median(np.abs(width))) if n else 1.0
        per = max(1, int(round(sol.freq_value / w)))
    cb = (np.arange(n) // per).astype(np.int32)
    n_out = int(cb.max()) + 1 if n else 0
    cnt = np.bincount(cb, minlength=n_out)
    out_freq = np.bincount(cb, weights=freq, minlength=n_out) / np.maximum(cnt, 1)
    out_width = np.bincount(cb, weights=np.abs(width), minlength=n_out)
    return cb, out_freq, out_width
