"""CASA-style data selection resolved to integer ids, and row masks computed with NumPy.

:func:`parse_selection` turns the CASA selection strings (``field="J19*"``,
``spw="0,1:10~50"``, ``antenna="DA41&DV05"``...) into a :class:`Selection` of integer ids using
only the metadata in :class:`~fastcal.ms.info.MSInfo`. :func:`row_mask` / :func:`select_rows`
then select rows from the cached index columns. No TaQL is ever built from user input, so
selection values cannot reach TaQL at all.

Every unknown name, id or malformed value raises :class:`~fastcal.errors.SelectionError`
naming the parameter, the value and the valid choices; a selection that matches no rows raises
it too, saying which part of the selection removed the rows.
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fastcal.errors import SelectionError
from fastcal.ms.info import IndexColumns, MSInfo, format_mjd_s

__all__ = [
    "AntennaClause",
    "Selection",
    "parse_selection",
    "row_mask",
    "select_rows",
]

logger = logging.getLogger(__name__)

_MJD_EPOCH = _dt.datetime(1858, 11, 17)
_GLOB_CHARS = set("*?[")


# --------------------------------------------------------------------------- dataclasses


@dataclass(frozen=True)
class AntennaClause:
    """One ``;``-separated baseline clause of a CASA antenna selection.

    mode
        ``"with"``  ``A``      cross-correlations of antennas in A with any antenna;
        ``"cross"`` ``A&B``    cross-correlations between A and B (``A&`` means ``A&A``);
        ``"both"``  ``A&&B``   cross- and auto-correlations between A and B;
        ``"auto"``  ``A&&&``   auto-correlations of antennas in A.
    negate
        ``!``-prefixed: the clause's baselines are removed (for ``"with"``: every baseline,
        auto-correlations included, that involves an antenna in A).
    """

    mode: str
    a: frozenset[int]
    b: frozenset[int]
    negate: bool = False

    def mask(self, ant1: np.ndarray, ant2: np.ndarray) -> np.ndarray:
        """Rows (bool[row]) whose baseline this clause names."""
        a = np.fromiter(self.a, dtype=np.int64, count=len(self.a))
        b = np.fromiter(self.b, dtype=np.int64, count=len(self.b))
        in1a, in2a = np.isin(ant1, a), np.isin(ant2, a)
        if self.mode == "with":
            m = in1a | in2a
            return m if self.negate else m & (ant1 != ant2)
        if self.mode == "auto":
            return in1a & (ant1 == ant2)
        m = (in1a & np.isin(ant2, b)) | (np.isin(ant1, b) & in2a)
        return m & (ant1 != ant2) if self.mode == "cross" else m


@dataclass(frozen=True, eq=False)
class Selection:
    """A data selection resolved to integer ids. ``None`` means "no restriction".

    Attributes
    ----------
    field_ids : tuple of int or None
    spw_channels : mapping spw_id -> channels, or None
        Channels are an int ndarray of channel indices (sorted, unique) or a ``slice``;
        a spw absent from the mapping is not selected. None: every spw, every channel.
    scans : tuple of int or None
        SCAN_NUMBER values.
    state_ids : tuple of int or None
        STATE rows whose intents matched ``intent``.
    antenna : tuple of AntennaClause or None
    time_range : (float, float) or None
        Inclusive TIME range (MJD s).
    observation_ids : tuple of int or None
    text : tuple of (str, str)
        The parameters as given (name, value), used in messages.
    """

    field_ids: tuple[int, ...] | None = None
    spw_channels: Mapping[int, Any] | None = None
    scans: tuple[int, ...] | None = None
    state_ids: tuple[int, ...] | None = None
    antenna: tuple[AntennaClause, ...] | None = None
    time_range: tuple[float, float] | None = None
    observation_ids: tuple[int, ...] | None = None
    text: tuple[tuple[str, str], ...] = field(default=())

    @property
    def spw_ids(self) -> tuple[int, ...] | None:
        return None if self.spw_channels is None else tuple(sorted(self.spw_channels))

    def channels(self, spw_id: int, num_chan: int) -> np.ndarray:
        """Selected channel indices (int64, sorted) of `spw_id`, which has `num_chan` channels."""
        if self.spw_channels is None or spw_id not in self.spw_channels:
            return np.arange(num_chan, dtype=np.int64)
        ch = self.spw_channels[spw_id]
        if ch is None:
            return np.arange(num_chan, dtype=np.int64)
        if isinstance(ch, slice):
            return np.arange(num_chan, dtype=np.int64)[ch]
        return np.unique(np.asarray(ch, dtype=np.int64))

    def describe(self) -> str:
        """The parameters as given, e.g. ``field='J1924-2914', spw='0'`` ("all data" if none)."""
        return ", ".join(f"{k}={v!r}" for k, v in self.text) or "all data"


# --------------------------------------------------------------------------- parse


def parse_selection(
    info: MSInfo,
    *,
    field: Any = None,
    spw: Any = None,
    scan: Any = None,
    intent: Any = None,
    antenna: Any = None,
    timerange: Any = None,
    observation: Any = None,
) -> Selection:
    """Resolve CASA-style selection parameters to a :class:`Selection` of integer ids.

    Parameters
    ----------
    info : MSInfo
    field : str, int or sequence, optional
        ``"J1924-2914"``, ``"0,2"``, ``"0~2"``, ``"J19*"`` (glob). Each item is matched as an
        exact name first, then as an id, then as a glob.
    spw : str, int or sequence, optional
        ``"0,1:10~50"``, ``"17~19"``, ``"*"``, ``"1:0~10;20~30"``, ``"*:5~10"``, ``"2:0~63^2"``
        (step). Channel ranges are inclusive, as in CASA. Items may also be spw names or globs.
    scan : str, int or sequence, optional
        ``"1~3,5"``.
    intent : str or sequence, optional
        Comma-separated globs, each matched against every OBS_MODE token
        (``"CALIBRATE_PHASE*"``, ``"*BANDPASS*"``).
    antenna : str, int or sequence, optional
        ``;``-separated clauses ``A``, ``A&B``, ``A&``, ``A&&B``, ``A&&&``, ``!A`` where A, B are
        comma-separated names, ids, id ranges (``0~3``), globs (``DA*``) or station names.
        As in CASA, an integer is matched as a name first, then as an id; a bare ``A`` selects
        the cross-correlations with A (use ``A&&*`` to include its auto-correlation).
    timerange : str or (float, float), optional
        ``"2026/06/15/01:00:00~2026/06/15/02:00:00"``, ``"01:00:00~02:00:00"`` (on the date of
        the first integration), ``">01:00:00"``, ``"<01:30"``, ``"01:00:00+00:10:00"``, or a pair
        of MJD seconds. Compared with the TIME column (integration mid-points), inclusive.
    observation : str, int or sequence, optional
        OBSERVATION_ID values, ``"0,1"`` or ``"0~2"``.

    Returns
    -------
    Selection

    Raises
    ------
    SelectionError
        Malformed syntax, or a name / id / channel that does not exist (the message lists the
        valid choices).
    """
    text: list[tuple[str, str]] = []

    def norm(name: str, value: Any) -> str | None:
        s = _as_text(value)
        if s is not None:
            text.append((name, s))
        return s

    field_s, spw_s, scan_s = norm("field", field), norm("spw", spw), norm("scan", scan)
    intent_s, ant_s, obs_s = (
        norm("intent", intent),
        norm("antenna", antenna),
        norm("observation", observation),
    )
    if (
        isinstance(timerange, (tuple, list))
        and len(timerange) == 2
        and not isinstance(timerange[0], str)
    ):
        trange = (float(timerange[0]), float(timerange[1]))
        text.append(("timerange", f"{format_mjd_s(trange[0])}~{format_mjd_s(trange[1])}"))
    else:
        tr_s = norm("timerange", timerange)
        trange = _parse_timerange(info, tr_s) if tr_s is not None else None
    return Selection(
        field_ids=_parse_field(info, field_s) if field_s is not None else None,
        spw_channels=_parse_spw(info, spw_s) if spw_s is not None else None,
        scans=_parse_scan(info, scan_s) if scan_s is not None else None,
        state_ids=_parse_intent(info, intent_s) if intent_s is not None else None,
        antenna=_parse_antenna(info, ant_s) if ant_s is not None else None,
        time_range=trange,
        observation_ids=_parse_observation(info, obs_s) if obs_s is not None else None,
        text=tuple(text),
    )


def _as_text(value: Any) -> str | None:
    """None / "" -> None (no restriction); sequences are joined with commas."""
    if value is None:
        return None
    if isinstance(value, (list, tuple, set, frozenset, np.ndarray)):
        value = ",".join(str(v).strip() for v in value)
    s = str(value).strip()
    return s or None


def _err(param: str, value: str, what: str, valid: str) -> SelectionError:
    return SelectionError(f"{param}={value!r}: {what}; valid: {valid}")


def _split(s: str, sep: str = ",") -> list[str]:
    return [p.strip() for p in s.split(sep)]


def _int(s: str) -> int | None:
    s = s.strip()
    return int(s) if re.fullmatch(r"[+-]?\d+", s) else None


def _int_range(s: str) -> tuple[int, int] | None:
    m = re.fullmatch(r"\s*(\d+)\s*~\s*(\d+)\s*", s)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _is_glob(s: str) -> bool:
    return bool(_GLOB_CHARS & set(s))


# ---- field


def _parse_field(info: MSInfo, value: str) -> tuple[int, ...]:
    valid = ", ".join(f"{f.id} {f.name}" for f in info.fields) or "none (empty FIELD table)"
    ids: set[int] = set()
    for item in _split(value):
        if not item:
            raise _err("field", value, "empty item in the list", valid)
        exact = [f.id for f in info.fields if f.name == item]
        num, rng = _int(item), _int_range(item)
        if exact:
            ids.update(exact)
        elif num is not None:
            if not 0 <= num < len(info.fields):
                raise _err("field", value, f"no field with id {num} in {info.path}", valid)
            ids.add(num)
        elif rng is not None:
            found = [i for i in range(rng[0], rng[1] + 1) if i < len(info.fields)]
            if not found:
                raise _err("field", value, f"no field id in {item} in {info.path}", valid)
            ids.update(found)
        else:
            found = [f.id for f in info.fields if fnmatch.fnmatchcase(f.name, item)]
            if not found:
                raise _err("field", value, f"no field named {item!r} in {info.path}", valid)
            ids.update(found)
    return tuple(sorted(ids))


# ---- spw


def _parse_spw(info: MSInfo, value: str) -> dict[int, np.ndarray]:
    valid = ", ".join(f"{s.id} ({s.name or '-'}, {s.num_chan} ch)" for s in info.spws) or "none"
    out: dict[int, np.ndarray] = {}
    for item in _split(value):
        if not item:
            raise _err("spw", value, "empty item in the list", f"spw ids {valid}")
        spw_part, _, chan_part = item.partition(":")
        spw_part = spw_part.strip()
        wildcard = spw_part == "*" or (_is_glob(spw_part) and _int(spw_part) is None)
        spw_ids = _spw_ids(info, value, spw_part, valid)
        for sid in spw_ids:
            nchan = info.spws[sid].num_chan
            if chan_part.strip() in ("", "*"):
                chans = np.arange(nchan, dtype=np.int64)
            else:
                chans = _parse_channels(value, chan_part, sid, nchan, clip=wildcard)
            if chans.size == 0:
                continue
            prev = out.get(sid)
            out[sid] = chans if prev is None else np.union1d(prev, chans)
    if not out:
        raise _err("spw", value, "selects no channel of any spw", f"spw ids {valid}")
    for v in out.values():
        v.setflags(write=False)
    return out


def _spw_ids(info: MSInfo, value: str, part: str, valid: str) -> list[int]:
    n = len(info.spws)
    if part == "*":
        return list(range(n))
    num, rng = _int(part), _int_range(part)
    if num is not None:
        if not 0 <= num < n:
            raise _err("spw", value, f"no spectral window {num} in {info.path}", f"spw ids {valid}")
        return [num]
    if rng is not None:
        bad = [i for i in range(rng[0], rng[1] + 1) if not 0 <= i < n]
        if bad or rng[0] > rng[1]:
            raise _err("spw", value, f"spw range {part} is outside 0~{n - 1}", f"spw ids {valid}")
        return list(range(rng[0], rng[1] + 1))
    if re.search(r"\d\s*[kMG]?Hz", part, re.IGNORECASE):
        raise _err("spw", value, "frequency-based selection is not supported",
                   "spw ids, id ranges or names, with channel ranges after ':'")  # fmt: skip
    found = [s.id for s in info.spws if s.name == part or fnmatch.fnmatchcase(s.name, part)]
    if not found:
        raise _err(
            "spw", value, f"no spectral window named {part!r} in {info.path}", f"spw ids {valid}"
        )
    return found


def _parse_channels(value: str, part: str, sid: int, nchan: int, *, clip: bool) -> np.ndarray:
    chans: list[np.ndarray] = []
    valid = f"channels 0~{nchan - 1} of spw {sid}, as 'a~b', 'a', 'a~b^step', joined with ';'"
    for rng in _split(part, ";"):
        m = re.fullmatch(r"(\d+)(?:\s*~\s*(\d+))?(?:\s*\^\s*(\d+))?", rng)
        if m is None:
            if re.search(r"[kMG]?Hz", rng, re.IGNORECASE):
                raise _err("spw", value, "frequency channel ranges are not supported", valid)
            raise _err("spw", value, f"cannot parse channel range {rng!r}", valid)
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        step = int(m.group(3)) if m.group(3) is not None else 1
        if step < 1 or hi < lo:
            raise _err("spw", value, f"channel range {rng!r} is empty or has a step < 1", valid)
        if clip:
            hi = min(hi, nchan - 1)
        elif hi >= nchan:
            raise _err(
                "spw",
                value,
                f"channel {hi} is out of range for spw {sid} ({nchan} channels)",
                valid,
            )
        if lo <= hi:
            chans.append(np.arange(lo, hi + 1, step, dtype=np.int64))
    return np.unique(np.concatenate(chans)) if chans else np.zeros(0, np.int64)


# ---- scan / observation


def _parse_int_list(param: str, value: str, available: Iterable[int], path: str) -> tuple[int, ...]:
    avail = sorted(set(int(a) for a in available))
    valid = _compact(avail) or "none"
    out: set[int] = set()
    for item in _split(value):
        num, rng = _int(item), _int_range(item)
        m = re.fullmatch(r"([<>])\s*(\d+)", item)
        if num is not None:
            if num not in avail:
                raise _err(param, value, f"{param} {num} is not in {path}", valid)
            out.add(num)
        elif rng is not None or m is not None:
            if rng is not None:
                found = [a for a in avail if rng[0] <= a <= rng[1]]
            else:
                lim = int(m.group(2))
                found = [a for a in avail if (a < lim if m.group(1) == "<" else a > lim)]
            if not found:
                raise _err(param, value, f"no {param} in {item} in {path}", valid)
            out.update(found)
        else:
            raise _err(
                param,
                value,
                f"cannot parse {item!r}",
                f"{valid} (as 'n', 'a~b', '<n', '>n' joined with ',')",
            )
    return tuple(sorted(out))


def _compact(values: list[int]) -> str:
    """[1,2,3,5] -> '1~3,5'."""
    parts, i = [], 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        parts.append(str(values[i]) if i == j else f"{values[i]}~{values[j]}")
        i = j + 1
    return ",".join(parts)


def _parse_scan(info: MSInfo, value: str) -> tuple[int, ...]:
    return _parse_int_list("scan", value, (s.number for s in info.scans), info.path)


def _parse_observation(info: MSInfo, value: str) -> tuple[int, ...]:
    return _parse_int_list("observation", value, (s.observation_id for s in info.scans), info.path)


# ---- intent


def _parse_intent(info: MSInfo, value: str) -> tuple[int, ...]:
    if not info.states:
        raise _err("intent", value, f"{info.path} has no STATE rows, so no intents", "intent=None")
    valid = ", ".join(info.intents) or "none"
    ids: set[int] = set()
    for pattern in _split(value):
        if not pattern:
            raise _err("intent", value, "empty item in the list", valid)
        found = [
            s.id for s in info.states if any(fnmatch.fnmatchcase(tok, pattern) for tok in s.intents)
        ]
        if not found:
            raise _err("intent", value, f"no intent matches {pattern!r} in {info.path}", valid)
        ids.update(found)
    return tuple(sorted(ids))


# ---- antenna


def _parse_antenna(info: MSInfo, value: str) -> tuple[AntennaClause, ...]:
    clauses = []
    for part in _split(value, ";"):
        if not part:
            continue
        negate = part.startswith("!")
        body = part[1:].strip() if negate else part
        m = re.fullmatch(r"([^&]*?)\s*(&{1,3})\s*([^&]*)", body)
        if m is None:
            a_txt, op, b_txt = body, "", ""
        else:
            a_txt, op, b_txt = m.group(1), m.group(2), m.group(3).strip()
        a = _antenna_ids(info, value, a_txt)
        if op == "":
            clauses.append(AntennaClause("with", a, frozenset(), negate))
        elif op == "&&&":
            if b_txt:
                raise _err("antenna", value, f"'&&&' takes no second list in {part!r}",
                           "'A&&&' (auto-correlations of A)")  # fmt: skip
            clauses.append(AntennaClause("auto", a, a, negate))
        else:
            b = _antenna_ids(info, value, b_txt) if b_txt else a
            clauses.append(AntennaClause("cross" if op == "&" else "both", a, b, negate))
    if not clauses:
        raise _err("antenna", value, "no baseline clause", "e.g. 'DA41', 'DA41&DV05', '!DA41'")
    return tuple(clauses)


def _antenna_ids(info: MSInfo, value: str, text: str) -> frozenset[int]:
    names = [a.name for a in info.antennas]
    valid = f"names {', '.join(names)} or ids 0~{len(names) - 1}" if names else "none"
    ids: set[int] = set()
    if not text.strip():
        raise _err("antenna", value, "empty antenna list", valid)
    for item in _split(text):
        if item == "*":
            ids.update(range(len(names)))
            continue
        exact = [i for i, n in enumerate(names) if n == item]
        num, rng = _int(item), _int_range(item)
        if exact:
            ids.update(exact)
        elif num is not None:
            if not 0 <= num < len(names):
                raise _err(
                    "antenna", value, f"no antenna named or numbered {item!r} in {info.path}", valid
                )
            ids.add(num)
        elif rng is not None:
            found = [i for i in range(rng[0], rng[1] + 1) if i < len(names)]
            if not found:
                raise _err("antenna", value, f"no antenna id in {item} in {info.path}", valid)
            ids.update(found)
        else:
            found = [i for i, n in enumerate(names) if fnmatch.fnmatchcase(n, item)]
            found = found or [a.id for a in info.antennas if fnmatch.fnmatchcase(a.station, item)]
            if not found:
                raise _err(
                    "antenna", value, f"no antenna or station named {item!r} in {info.path}", valid
                )
            ids.update(found)
    return frozenset(ids)


# ---- timerange

_DATE_RE = re.compile(
    r"(?:(\d{4})[/-](\d{1,2})[/-](\d{1,2})(?:[/T ]|$))?"
    r"(?:(\d{1,2}):(\d{1,2})(?::(\d{1,2}(?:\.\d*)?))?)?"
)


def _parse_time(info: MSInfo, value: str, s: str, default_day: float | None) -> tuple[float, float]:
    """-> (MJD seconds, MJD day used). Without a date, `default_day` (MJD s of 0h) is used."""
    m = _DATE_RE.fullmatch(s.strip())
    if m is None or not s.strip() or (m.group(1) is None and m.group(4) is None):
        raise _err("timerange", value, f"cannot parse time {s!r}",
                   "YYYY/MM/DD/hh:mm:ss[.s], hh:mm:ss or hh:mm, as 'T0~T1', '>T', '<T' or 'T0+hh:mm:ss'")  # fmt: skip
    if m.group(1) is not None:
        try:
            day = (
                _dt.datetime(int(m.group(1)), int(m.group(2)), int(m.group(3))) - _MJD_EPOCH
            ).days
        except ValueError as exc:
            raise _err(
                "timerange", value, f"invalid date in {s!r} ({exc})", "a calendar date"
            ) from exc
        day_s = day * 86400.0
    else:
        day_s = (
            default_day
            if default_day is not None
            else np.floor(info.time_range[0] / 86400.0) * 86400.0
        )
    hh = int(m.group(4) or 0)
    mm = int(m.group(5) or 0)
    ss = float(m.group(6) or 0.0)
    if hh > 24 or mm > 59 or ss >= 61:
        raise _err(
            "timerange", value, f"invalid time of day in {s!r}", "hh <= 24, mm < 60, ss < 60"
        )
    return day_s + hh * 3600.0 + mm * 60.0 + ss, day_s


def _parse_duration(value: str, s: str) -> float:
    m = re.fullmatch(r"(?:(\d+):)?(?:(\d+):)?(\d+(?:\.\d*)?)", s.strip())
    if m is None:
        raise _err("timerange", value, f"cannot parse duration {s!r}", "hh:mm:ss, mm:ss or seconds")
    parts = [p for p in m.groups() if p is not None]
    total = 0.0
    for p in parts:
        total = total * 60.0 + float(p)
    return total


def _parse_timerange(info: MSInfo, value: str) -> tuple[float, float]:
    s = value.strip()
    if s.startswith(">"):
        return _parse_time(info, value, s[1:], None)[0], np.inf
    if s.startswith("<"):
        return -np.inf, _parse_time(info, value, s[1:], None)[0]
    if "~" in s:
        a, b = s.split("~", 1)
        t0, day = _parse_time(info, value, a, None)
        t1, _ = _parse_time(info, value, b, day)
        if t1 < t0:
            raise _err("timerange", value, "end is before start", "'T0~T1' with T0 <= T1")
        return t0, t1
    if "+" in s:
        a, b = s.split("+", 1)
        t0, _ = _parse_time(info, value, a, None)
        return t0, t0 + _parse_duration(value, b)
    _parse_time(info, value, s, None)  # a malformed time gets the parse error
    raise _err("timerange", value, "a single time is ambiguous",
               "'T0~T1', '>T', '<T' or 'T0+hh:mm:ss'")  # fmt: skip


# --------------------------------------------------------------------------- row masks


def _ddids_for(info: MSInfo, spw_ids: Iterable[int]) -> list[int]:
    spws = set(spw_ids)
    return [d.id for d in info.ddescs if d.spw_id in spws]


def _masks(
    info: MSInfo, sel: Selection, idx: IndexColumns, include_autocorr: bool
) -> list[tuple[str, np.ndarray]]:
    """(parameter text, bool[row]) for each restricting part of the selection."""
    given = dict(sel.text)
    out: list[tuple[str, np.ndarray]] = []

    def label(name: str, fallback: str) -> str:
        return f"{name}={given[name]!r}" if name in given else f"{name}={fallback}"

    if sel.field_ids is not None:
        out.append((label("field", str(list(sel.field_ids))), np.isin(idx.field_id, sel.field_ids)))
    if sel.spw_channels is not None:
        out.append(
            (label("spw", str(list(sel.spw_ids))), np.isin(idx.ddid, _ddids_for(info, sel.spw_ids)))
        )
    if sel.scans is not None:
        out.append((label("scan", str(list(sel.scans))), np.isin(idx.scan, sel.scans)))
    if sel.state_ids is not None:
        out.append(
            (label("intent", f"states {list(sel.state_ids)}"), np.isin(idx.state_id, sel.state_ids))
        )
    if sel.observation_ids is not None:
        out.append(
            (
                label("observation", str(list(sel.observation_ids))),
                np.isin(idx.observation_id, sel.observation_ids),
            )
        )
    if sel.time_range is not None:
        t0, t1 = sel.time_range
        out.append((label("timerange", f"{t0}~{t1}"), (idx.time >= t0) & (idx.time <= t1)))
    if sel.antenna is not None:
        out.append(
            (label("antenna", "clauses"), _antenna_mask(sel.antenna, idx.antenna1, idx.antenna2))
        )
    if not include_autocorr:
        out.append(("include_autocorr=False", idx.antenna1 != idx.antenna2))
    return out


def _antenna_mask(
    clauses: tuple[AntennaClause, ...], ant1: np.ndarray, ant2: np.ndarray
) -> np.ndarray:
    pos = [c for c in clauses if not c.negate]
    m = np.zeros(ant1.shape, bool) if pos else np.ones(ant1.shape, bool)
    for c in pos:
        m |= c.mask(ant1, ant2)
    for c in clauses:
        if c.negate:
            m &= ~c.mask(ant1, ant2)
    return m


def row_mask(
    info: MSInfo,
    sel: Selection,
    index: IndexColumns | None = None,
    *,
    include_autocorr: bool = True,
) -> np.ndarray:
    """Boolean mask over the rows of the main table (bool[n_rows]) for `sel`.

    Parameters
    ----------
    info : MSInfo
    sel : Selection
    index : IndexColumns, optional
        Index columns to evaluate the selection on (default: ``info.index``).
    include_autocorr : bool
        Keep rows with ANTENNA1 == ANTENNA2.
    """
    idx = info.index if index is None else index
    m = np.ones(idx.n_rows, dtype=bool)
    for _, part in _masks(info, sel, idx, include_autocorr):
        m &= part
    return m


def select_rows(info: MSInfo, sel: Selection, *, include_autocorr: bool = True) -> np.ndarray:
    """Row numbers (int64, ascending) selected by `sel`.

    Raises
    ------
    SelectionError
        If no row matches; the message names the parameters and how many rows each matches
        on its own, so the conflicting part is visible.
    """
    parts = _masks(info, sel, info.index, include_autocorr)
    if not parts:
        rows = np.arange(info.n_rows, dtype=np.int64)
    else:
        m = parts[0][1].copy()
        for _, part in parts[1:]:
            m &= part
        rows = np.flatnonzero(m).astype(np.int64, copy=False)
    if rows.size == 0:
        alone = "; ".join(f"{name} alone: {int(p.sum())} rows" for name, p in parts)
        raise SelectionError(
            f"selection {sel.describe()} matches no rows in {info.path} "
            f"({info.n_rows} rows{'; ' + alone if alone else ''})"
        )
    return rows
