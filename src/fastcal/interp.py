"""What Jones matrices do calibration tables give for some data: the one implementation used
by applycal and by the solvers' on-the-fly pre-apply.

Two steps:

* :func:`prepare_gaintables` reads and validates the tables and the per-table parameters
  (``gainfield``, ``interp``, ``spwmap``, ``calwt``) once, and returns one :class:`ApplySpec`
  per table, sorted in CASA's order of application (KAntPos, B and B TSYS, K, G, T).
* :func:`chunk_jones` evaluates them for the unique times and channels of a chunk of data
  (one spw, field, scan, observation) and returns their product as :class:`ChunkJones`.

Convention: corrected = V_pq / (J_p,a conj(J_q,b)) for correlation (a, b) (the *divide*
convention); B TSYS, which CASA applies un-inverted, is returned as J = 1/sqrt(Tsys).

Interpolation follows CASA's CTPatchedInterp / CTTimeInterp1 (reference section 4.2):

* per antenna over that antenna's rows (of the mapped spw, of the selected fields, of the
  data's observation for ``...perobs``); complex parameters as amplitude and phase, the
  phase unwrapped along time; no extrapolation (the first/last solution outside the range);
* ``nearest``: nearest solution (ties to the earlier one); its flag;
* ``linear``: linear between the bracketing solutions, flagged if either is flagged;
* ``...PD`` (G/T only): phase scaled by nu_data / nu_cal (data spw centre channel /
  calibration spw centre channel);
* frequency (B, B TSYS): flagged calibration channels skipped, then ``linear`` or
  ``nearest`` in absolute frequency (caltable SPECTRAL_WINDOW CHAN_FREQ), the nearest edge
  value outside the calibration band; ``...flag`` modes flag data channels registered on a
  flagged calibration channel.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fastcal.caltable import CalTable, as_caltable
from fastcal.errors import CalTableError, ParameterError, UnsupportedError
from fastcal.geometry import geometric_delay_s
from fastcal.kernels.apply import resample_freq
from fastcal.ms.info import MSInfo

__all__ = [
    "APPLY_ORDER",
    "MAX_TIME_GAP_S",
    "ApplySpec",
    "ChunkJones",
    "InterpMode",
    "check_coverage",
    "table_term",
    "chunk_jones",
    "parse_interp",
    "prepare_gaintables",
]

logger = logging.getLogger(__name__)

#: CASA's order of application (VisCal::Type): lower first (nearest the correlator).
APPLY_ORDER: dict[str, int] = {
    "KAntPos Jones": 1,
    "B Jones": 2,
    "B TSYS": 2,
    "K Jones": 3,
    "KMBD Jones": 3,
    "G Jones": 4,
    "T Jones": 5,
}
#: Types whose solutions have a channel axis that is interpolated in frequency.
CHANNELISED = frozenset({"B Jones", "B TSYS"})
#: Types with complex parameters (amplitude and phase interpolated separately).
COMPLEX_TYPES = frozenset({"G Jones", "T Jones", "B Jones"})
#: Data times farther than this from every solution of a table raise CalTableError (s).
MAX_TIME_GAP_S = 12 * 3600.0
#: CASA versions whose K tables use the old reference frequency (docs/caltables.md).
_OLD_K_VERSIONS = frozenset(f"5.3.0-{n}" for n in range(100, 107))
#: Sign of the antenna-position phase (see docs/applycal.md: removes a simulated error).
_ANTPOS_SIGN = 1.0

_TIME_MODES = ("linear", "nearest")
_FREQ_MODES = ("linear", "nearest", "linearflag", "nearestflag")


# --------------------------------------------------------------------------- interp strings


@dataclass(frozen=True)
class InterpMode:
    """A parsed ``interp`` entry.

    Attributes
    ----------
    time : {"linear", "nearest"}
    pd : bool
        Phase-delay scaling (``linearPD``, ``nearestPD``).
    perobs : bool
        Do not interpolate across OBSERVATION_ID.
    freq : {"linear", "nearest"}
    freq_flag : bool
        ``...flag`` frequency mode.
    text : str
        The string as given.
    perscan : bool
        Use only the solutions of the data's scan (caltable SCAN_NUMBER); a scan without
        solutions is flagged (CASA 6.7 ``...perscan``; supersedes ``perobs``).
    """

    time: str
    pd: bool
    perobs: bool
    freq: str
    freq_flag: bool
    text: str
    perscan: bool = False


def parse_interp(text: str | None, vis_cal: str = "G Jones") -> InterpMode:
    """Parse one CASA ``interp`` string (``'linear'``, ``'nearestPD'``, ``'linear,linearflag'``,
    ``'linearperobs'``...). ``''``/None is ``'linear'`` (``'linear,linear'`` for B tables).

    Raises
    ------
    ParameterError
        Malformed string.
    UnsupportedError
        A valid CASA mode fastcal does not implement (cubic, spline, ...rel), or PD on
        a channelised/real-valued table.
    """
    raw = "" if text is None else str(text)
    s = raw.strip()
    parts = [p.strip() for p in s.split(",")] if s else [""]
    if len(parts) > 2:
        raise ParameterError(
            f"interp={raw!r} has more than two comma-separated parts; valid: '<time>[,<freq>]'"
        )
    tpart = parts[0] or "linear"
    fpart = parts[1] if len(parts) == 2 and parts[1] else "linear"
    tl = tpart
    perobs = perscan = False
    while tl.endswith(("perobs", "perscan")):
        if tl.endswith("perobs"):
            perobs, tl = True, tl[: -len("perobs")]
        else:
            perscan, tl = True, tl[: -len("perscan")]
    if fpart.endswith("rel") or fpart.startswith(("cubic", "spline")):
        raise UnsupportedError(
            f"interp={raw!r}: this CASA mode is not implemented in fastcal; valid: "
            "time linear/nearest[PD][perobs|perscan], freq linear/nearest[flag]"
        )
    pd = tl.endswith("PD")
    if pd:
        tl = tl[:-2]
    if tl not in _TIME_MODES or fpart not in _FREQ_MODES:
        raise ParameterError(
            f"interp={raw!r} is not valid; valid: time 'linear', 'nearest' (optionally with 'PD' "
            f"and/or 'perobs'/'perscan'), then optionally ',<freq>' with freq in {', '.join(_FREQ_MODES)}"
        )
    if pd and vis_cal not in ("G Jones", "T Jones"):
        raise UnsupportedError(
            f"interp={raw!r}: PD modes apply to G and T tables only, not {vis_cal!r}"
        )
    freq_flag = fpart.endswith("flag")
    return InterpMode(
        tl, pd, perobs and not perscan, fpart[:-4] if freq_flag else fpart, freq_flag, raw, perscan
    )


# --------------------------------------------------------------------------- specs


@dataclass
class _Slice:
    """Solutions of one (cal spw, field set, observation) selection on a dense grid."""

    time: np.ndarray  # (n_t,) ascending
    present: np.ndarray  # (n_t, n_ant) bool: the antenna has a row at that time
    value: np.ndarray  # (n_t, n_ant, n_chan, n_fpar) float64: amp/phase interleaved or real
    flag: np.ndarray  # (n_t, n_ant, n_chan, n_par) bool
    chan_freq: np.ndarray  # (n_chan,) Hz
    n_sub: int  # 2 for complex (amp, phase), 1 for real


@dataclass(eq=False)
class ApplySpec:
    """One calibration table with its apply parameters, validated.

    Attributes
    ----------
    table : CalTable
    name : str
        Path (or ``<CalTable #i>``) for messages.
    vis_cal : str
        Table type.
    order : int
        :data:`APPLY_ORDER` rank.
    index : int
        Position in the caller's ``gaintable`` list.
    interp : InterpMode
    spwmap : tuple of int
        MS spw -> cal spw (identity beyond its length; one value = for all spws).
    gainfield : str
        As given ('' = all fields, 'nearest', or a selection of names/ids).
    field_ids : tuple of int or None
        Cal-table FIELD_IDs whose solutions are used (None = all).
    nearest_field : dict or None
        For ``gainfield='nearest'``: MS field id -> cal-table field id.
    calwt : bool
    """

    table: CalTable
    name: str
    vis_cal: str
    order: int
    index: int
    interp: InterpMode
    spwmap: tuple[int, ...]
    gainfield: str
    field_ids: tuple[int, ...] | None
    nearest_field: dict[int, int] | None
    calwt: bool
    _slices: dict = field(default_factory=dict, repr=False)
    _lock: Any = field(default_factory=threading.Lock, repr=False)

    @property
    def channelised(self) -> bool:
        return self.vis_cal in CHANNELISED

    def cal_spw(self, spw_id: int) -> int:
        """The calibration-table spw used for MS spw `spw_id` (``spwmap``)."""
        if len(self.spwmap) == 1:
            return self.spwmap[0]
        return self.spwmap[spw_id] if spw_id < len(self.spwmap) else spw_id

    def fields_for(self, field_id: int) -> tuple[int, ...] | None:
        """Cal-table fields whose solutions calibrate MS field `field_id` (None = all)."""
        if self.nearest_field is not None:
            return (self.nearest_field[field_id],)
        return self.field_ids

    def describe(self) -> str:
        return (
            f"{self.name} ({self.vis_cal}, interp={self.interp.text or 'linear'!r}, "
            f"gainfield={self.gainfield!r}, spwmap={list(self.spwmap)}, calwt={self.calwt})"
        )

    # ---- solutions for one data chunk
    def _slice(
        self, spw_id: int, field_id: int, obs_id: int, scan: int | None = None
    ) -> _Slice | None:
        """Solutions for these data; None: ``perscan`` and the scan has no solutions."""
        cspw = self.cal_spw(spw_id)
        fields = self.fields_for(field_id)
        obs = obs_id if self.interp.perobs and len(np.unique(self.table.obs_id)) > 1 else None
        sc = scan if self.interp.perscan and scan is not None else None
        key = (cspw, fields, obs, sc)
        with self._lock:
            hit = key in self._slices
            got = self._slices.get(key)
        if not hit:
            got = _build_slice(self, cspw, fields, obs, spw_id, field_id, sc)
            with self._lock:
                self._slices[key] = got
        return got


def _as_list(value: Any, n: int, name: str, default: Any) -> list:
    if value is None:
        return [default] * n
    if isinstance(value, (str, bool, np.bool_)) or not isinstance(value, Sequence):
        value = [value]
    value = list(value)
    if len(value) > n:
        raise ParameterError(
            f"{name} has {len(value)} entries for {n} gaintable(s); valid: at most one per table"
        )
    if name == "calwt" and value and len(value) < n:
        return value + [value[-1]] * (n - len(value))
    return value + [default] * (n - len(value))


def _spwmaps(spwmap: Any, n: int) -> list[tuple[int, ...]]:
    if spwmap is None or (isinstance(spwmap, Sequence) and len(spwmap) == 0):
        return [()] * n
    if not isinstance(spwmap, Sequence) or isinstance(spwmap, str):
        raise ParameterError(
            f"spwmap={spwmap!r} is invalid; valid: a list of int lists, one per gaintable"
        )
    items = list(spwmap)
    if all(isinstance(v, (int, np.integer)) for v in items):  # CASA: a flat list is for table 0
        items = [items]
    if len(items) > n:
        raise ParameterError(
            f"spwmap has {len(items)} lists for {n} gaintable(s); valid: at most one per table"
        )
    out = []
    for i, m in enumerate(items):
        m = [] if m is None else ([m] if isinstance(m, (int, np.integer)) else list(m))
        if not all(isinstance(v, (int, np.integer)) and v >= 0 for v in m):
            raise ParameterError(f"spwmap[{i}]={m!r} is invalid; valid: non-negative spw ids")
        if len(m) == 1 and m[0] == -1:
            m = []
        out.append(tuple(int(v) for v in m))
    return out + [()] * (n - len(out))


def _field_direction(table: CalTable, info: MSInfo, fid: int) -> tuple[float, float]:
    sub = (table.subtables or {}).get("FIELD")
    if sub is not None and "PHASE_DIR" in sub.columns and fid < sub.nrow:
        d = np.asarray(sub.cells("PHASE_DIR")[fid], np.float64).reshape(-1, 2)[0]
        return float(d[0]), float(d[1])
    if 0 <= fid < len(info.fields):
        return info.fields[fid].ra_rad, info.fields[fid].dec_rad
    raise CalTableError(
        f"field {fid} of the calibration table has no direction (FIELD subtable too short)"
    )


def _separation(ra1: float, dec1: float, ra2: float, dec2: float) -> float:
    c = np.sin(dec1) * np.sin(dec2) + np.cos(dec1) * np.cos(dec2) * np.cos(ra1 - ra2)
    return float(np.arccos(np.clip(c, -1.0, 1.0)))


def _resolve_gainfield(
    text: str, table: CalTable, name: str, info: MSInfo
) -> tuple[tuple[int, ...] | None, dict | None]:
    text = "" if text is None else str(text).strip()
    cal_fields = sorted(set(int(f) for f in np.unique(table.field_id)))
    if text == "":
        return None, None
    if text.lower() == "nearest":
        if len(cal_fields) == 1:
            return None, {f.id: cal_fields[0] for f in info.fields}
        mapping = {}
        for f in info.fields:
            seps = np.array(
                [
                    _separation(f.ra_rad, f.dec_rad, *_field_direction(table, info, c))
                    for c in cal_fields
                ]
            )
            order = np.argsort(seps, kind="stable")
            if len(order) > 1 and seps[order[0]] == seps[order[1]]:
                raise CalTableError(
                    f"{name}: gainfield='nearest': fields {cal_fields[order[0]]} and "
                    f"{cal_fields[order[1]]} are equally near MS field {f.id} ({f.name})"
                )
            mapping[f.id] = cal_fields[int(order[0])]
        return None, mapping
    ids: set[int] = set()
    names = [fi.name for fi in info.fields]
    for tok in (t.strip() for t in text.split(",")):
        if not tok:
            continue
        if tok.isdigit():
            ids.add(int(tok))
            continue
        hit = [i for i, nm in enumerate(names) if fnmatch.fnmatchcase(nm, tok)]
        if not hit:
            raise ParameterError(
                f"gainfield={text!r} for {name}: no field matches {tok!r}; "
                f"valid: '', 'nearest', or field names/ids of {', '.join(names)}"
            )
        ids.update(hit)
    present = sorted(ids & set(cal_fields))
    if not present:
        raise CalTableError(
            f"{name} has no solutions for gainfield={text!r} (fields {sorted(ids)}); "
            f"fields with solutions: {cal_fields}"
        )
    return tuple(present), None


def prepare_gaintables(
    info: MSInfo,
    gaintable: Any,
    gainfield: Any = (),
    interp: Any = (),
    spwmap: Any = (),
    calwt: Any = True,
    *,
    spws: Sequence[int] | None = None,
) -> list[ApplySpec]:
    """Read and validate calibration tables and their apply parameters.

    Parameters
    ----------
    info : MSInfo
        The Measurement Set the tables will be applied to.
    gaintable : str, CalTable or list of them
    gainfield : str or list of str
        Per table: '' (all fields), 'nearest' (nearest calibrator on the sky per MS field), or
        a comma-separated list of field names (wildcards allowed) or ids.
    interp : str or list of str
        Per table, see :func:`parse_interp` (default 'linear').
    spwmap : list of list of int
        Per table, MS spw -> cal spw (empty = identity). A flat list applies to the first
        table only (CASA).
    calwt : bool or list of bool
        Per table (a shorter list is padded with its last value).
    spws : sequence of int, optional
        MS spws that will be calibrated; if given, each must map onto a calibration spw with
        solutions in every table (else :class:`CalTableError`).

    Returns
    -------
    list of ApplySpec
        In CASA's order of application (stable for tables of one type).

    Raises
    ------
    CalTableError
        A table is missing, not a calibration table, of an unsupported type, lacks a needed
        spw, or has no solutions for the gainfield selection.
    ParameterError, UnsupportedError
        Bad interp/spwmap/gainfield/calwt values.
    """
    if gaintable is None:
        tables: list = []
    elif isinstance(gaintable, (str, os.PathLike, CalTable)):
        tables = [gaintable]
    else:
        tables = list(gaintable)
    n = len(tables)
    gfs = _as_list(gainfield, n, "gainfield", "")
    ips = _as_list(interp, n, "interp", "")
    cws = _as_list(calwt, n, "calwt", True)
    maps = _spwmaps(spwmap, n)
    specs = []
    for i, tab in enumerate(tables):
        if isinstance(tab, (str, os.PathLike)) and not str(tab).strip():
            raise ParameterError(
                f"gaintable[{i}] is an empty string; valid: a calibration table path"
            )
        ct = as_caltable(tab)
        name = (
            os.fspath(tab)
            if isinstance(tab, (str, os.PathLike))
            else (ct.path or f"<CalTable #{i}>")
        )
        if ct.nrow == 0:
            raise CalTableError(f"{name} has no solutions (0 rows)")
        mode = parse_interp(ips[i], ct.vis_cal)
        if not isinstance(cws[i], (bool, np.bool_)):
            raise ParameterError(f"calwt[{i}]={cws[i]!r} is invalid; valid: True or False")
        fids, nearest = _resolve_gainfield(gfs[i], ct, name, info)
        specs.append(
            ApplySpec(
                table=ct,
                name=name,
                vis_cal=ct.vis_cal,
                order=APPLY_ORDER[ct.vis_cal],
                index=i,
                interp=mode,
                spwmap=maps[i],
                gainfield=str(gfs[i] or ""),
                field_ids=fids,
                nearest_field=nearest,
                calwt=bool(cws[i]),
            )
        )
    specs.sort(key=lambda s: (s.order, s.index))
    for s in specs:
        if s.vis_cal == "B TSYS" and not s.spwmap:
            _auto_tsys_spwmap(s, info)
    if spws is not None:
        for s in specs:
            for spw in spws:
                _check_spw(s, int(spw))
    for s in specs:
        logger.debug("apply %s", s.describe())
    return specs


def _auto_tsys_spwmap(spec: ApplySpec, info: MSInfo) -> None:
    """A B TSYS table given without spwmap: map the MS spws it has no solutions for onto the
    Tsys spw of their baseband that covers them (CASA's ``tsysspwmap`` rule, as the ALMA
    pipeline does; CASA itself would need the spwmap). Logged; an explicit spwmap overrides."""
    from fastcal.tsys import tsys_spwmap  # local: fastcal.tsys is a heavier module

    have = set(spec.table.spw_ids.tolist())
    if all(sp.id in have for sp in info.spws if info.spw_roles.get(sp.id) == "science"):
        return
    try:
        mapping = tsys_spwmap(info, spec.table, trim=True)
    except Exception as exc:  # noqa: BLE001 - a convenience only: fall back to CASA's identity
        logger.info("%s: no automatic Tsys spwmap (%s); give spwmap explicitly", spec.name, exc)
        return
    if any(m != i and m in have for i, m in enumerate(mapping)):
        spec.spwmap = tuple(int(m) for m in mapping)
        logger.info(
            "%s: B TSYS table without spwmap: using the Tsys spwmap %s (same baseband, covering "
            "frequency range); pass spwmap=[...] to override",
            spec.name,
            list(spec.spwmap),
        )


def _check_spw(spec: ApplySpec, spw_id: int) -> int:
    cspw = spec.cal_spw(spw_id)
    have = spec.table.spw_ids.tolist()
    if spec.vis_cal == "KAntPos Jones":  # gencal antpos writes spw 0 only and applies to all
        return have[0]
    if cspw not in have:
        how = f"spwmap maps it to spw {cspw}" if spec.spwmap else "no spwmap given"
        raise CalTableError(
            f"{spec.name} has no solutions for spw {cspw} needed by MS spw {spw_id} ({how}); "
            f"spws in the table: {have}; give spwmap=[...] for this table"
        )
    return cspw


def check_coverage(
    specs: Sequence[ApplySpec],
    info: MSInfo,
    *,
    spw_id: int,
    field_id: int,
    observation_id: int,
    times: np.ndarray,
    scan: int | None = None,
) -> None:
    """Raise :class:`CalTableError` if some table cannot calibrate these data at all.

    Checks that the mapped spw exists, that the field/observation selection leaves solutions,
    and that at least one data time lies within :data:`MAX_TIME_GAP_S` of a solution.
    """
    times = np.asarray(times, np.float64)
    for s in specs:
        _check_spw(s, spw_id)
        sl = s._slice(spw_id, field_id, observation_id, scan)
        if sl is None or s.vis_cal == "KAntPos Jones" or times.size == 0:
            continue
        k = (
            np.clip(np.searchsorted(sl.time, times), 1, sl.time.size)
            if sl.time.size > 1
            else np.zeros(times.size, int)
        )
        near = np.minimum(
            np.abs(times - sl.time[np.maximum(k - 1, 0)]),
            np.abs(times - sl.time[np.minimum(k, sl.time.size - 1)]),
        )
        if near.min() > MAX_TIME_GAP_S:
            raise CalTableError(
                f"{s.name}: no solutions near the data of spw {spw_id}, field {field_id} "
                f"(data {times.min():.1f}..{times.max():.1f} MJD s, solutions {sl.time[0]:.1f}.."
                f"{sl.time[-1]:.1f}; nearest {near.min() / 3600:.1f} h away, limit {MAX_TIME_GAP_S / 3600:.0f} h)"
            )


def _build_slice(
    spec: ApplySpec,
    cspw: int,
    fields: tuple[int, ...] | None,
    obs: int | None,
    spw_id: int,
    field_id: int,
    scan: int | None = None,
) -> _Slice | None:
    tab = spec.table
    if spec.vis_cal == "KAntPos Jones":
        cspw = int(tab.spw_ids[0])
    m = tab.spw_id == cspw
    if fields is not None:
        m &= np.isin(tab.field_id, fields)
    if obs is not None:
        m &= tab.obs_id == obs
    if scan is not None and spec.vis_cal != "KAntPos Jones":
        if not np.any(m):
            scan = None  # report the missing spw/field below
        else:
            m &= tab.scan == scan
            if not np.any(m):  # CASA perscan: this scan's data are flagged (logged)
                logger.warning(
                    "%s: no solutions for scan %d (spw %d, field %d); 'perscan' flags its data",
                    spec.name,
                    scan,
                    spw_id,
                    field_id,
                )
                return None
    rows = np.flatnonzero(m)
    if rows.size == 0:
        what = (
            f"spw {cspw}"
            + (f", fields {list(fields)}" if fields is not None else "")
            + (f", observation {obs}" if obs is not None else "")
        )
        raise CalTableError(
            f"{spec.name} has no solutions for {what} (needed by MS spw {spw_id}, field {field_id})"
        )
    n_ant = tab.n_ant
    n_chan = tab.nchan(cspw)
    utime, t_idx = np.unique(tab.time[rows], return_inverse=True)
    a_idx = tab.antenna1[rows]
    n_t = utime.size
    par = tab.params[rows, :n_chan]
    n_par = par.shape[2]
    n_sub = 2 if spec.vis_cal in COMPLEX_TYPES else 1
    value = np.zeros((n_t, n_ant, n_chan, n_par * n_sub), np.float64)
    flag = np.ones((n_t, n_ant, n_chan, n_par), bool)
    present = np.zeros((n_t, n_ant), bool)
    present[t_idx, a_idx] = True
    flag[t_idx, a_idx] = tab.flag[rows, :n_chan]
    if n_sub == 2:
        value[t_idx, a_idx, :, 0::2] = np.abs(par)
        ph = np.zeros((n_t, n_ant, n_chan, n_par))
        ph[t_idx, a_idx] = np.angle(par)
        for a in range(n_ant):  # CASA tracks the phase along the antenna's rows in time
            sel = present[:, a]
            if sel.sum() > 1:
                ph[sel, a] = np.unwrap(ph[sel, a], axis=0)
        value[..., 1::2] = ph
    else:
        value[t_idx, a_idx] = par
    freq = tab.chan_freq.get(cspw)
    if freq is None:
        freq = _subtable_chan_freq(tab, cspw, n_chan)
    return _Slice(
        time=utime,
        present=present,
        value=value,
        flag=flag,
        chan_freq=np.asarray(freq, np.float64),
        n_sub=n_sub,
    )


def _subtable_chan_freq(tab: CalTable, spw: int, n_chan: int) -> np.ndarray:
    sub = (tab.subtables or {}).get("SPECTRAL_WINDOW")
    if sub is not None and "CHAN_FREQ" in sub.columns and spw < sub.nrow:
        f = np.asarray(sub.cells("CHAN_FREQ")[spw], np.float64).reshape(-1)
        if f.size == n_chan:
            return f
    return np.full(n_chan, np.nan)


def _ref_freq(tab: CalTable, spw: int, info: MSInfo) -> float:
    sub = (tab.subtables or {}).get("SPECTRAL_WINDOW")
    if sub is not None and "REF_FREQUENCY" in sub.columns and spw < sub.nrow:
        return float(np.asarray(sub.cells("REF_FREQUENCY")[spw]).reshape(-1)[0])
    if 0 <= spw < len(info.spws):  # a table built in memory: its subtables are the MS's
        return float(info.spws[spw].ref_freq)
    return float("nan")


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True, eq=False)
class ChunkJones:
    """Product of the applied Jones terms for one chunk.

    Attributes
    ----------
    jones : complex64 (n_utime, n_ant, n_chan or 1, n_rec)
        Divide convention: corrected = V / (J_p,a conj(J_q,b)). n_rec = 2 (X/R, Y/L).
    flag : bool, same shape
        True = the solution is flagged or missing: flag the data.
    wscale : float32, same shape, or None
        Weight scale per antenna/receptor (|J|^2 of the calwt=True tables; 1 where flagged).
        None when no table has calwt=True (or ``spectral_wscale=False``).
    wscale_mean : float32 (n_utime, n_ant, 1, n_rec) or None
        Channel-averaged weight scale for channel-independent weights (CASA: Tsys 1/mean(Tsys)
        over unflagged channels, B mean of |J|^2 over unflagged channels).
    times : float64 (n_utime,)
        The times the Jones were evaluated at (MJD s).
    """

    jones: np.ndarray
    flag: np.ndarray
    wscale: np.ndarray | None
    wscale_mean: np.ndarray | None
    times: np.ndarray


def _time_index(
    t_sol: np.ndarray, t: np.ndarray, nearest: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i0, i1, w): value = (1 - w) v[i0] + w v[i1] (CASA CTTimeInterp1 registration)."""
    n = t_sol.size
    if n == 1:
        z = np.zeros(t.size, np.int64)
        return z, z, np.zeros(t.size)
    k = np.searchsorted(t_sol, t, side="left")
    kc = np.minimum(k, n - 1)
    exact = t_sol[kc] == t
    lo = np.clip(k - 1, 0, n - 2)
    hi = lo + 1
    w = (t - t_sol[lo]) / (t_sol[hi] - t_sol[lo])
    if nearest:
        pick = np.where((t_sol[hi] - t) < (t - t_sol[lo]), hi, lo)
        i0 = i1 = pick
        w = np.zeros(t.size)
    else:
        i0, i1 = lo, hi
    before, after = t < t_sol[0], t > t_sol[-1]
    i0 = np.where(exact, kc, np.where(before, 0, np.where(after, n - 1, i0)))
    i1 = np.where(exact, kc, np.where(before, 0, np.where(after, n - 1, i1)))
    w = np.where(exact | before | after, 0.0, w)
    return i0.astype(np.int64), i1.astype(np.int64), w


def _interp_time(sl: _Slice, times: np.ndarray, nearest: bool) -> tuple[np.ndarray, np.ndarray]:
    """Time-interpolated (value, flag): (n_u, n_ant, n_chan_cal, n_fpar), (..., n_par)."""
    n_t, n_ant = sl.present.shape
    n_u = times.size
    val = np.empty((n_u, n_ant) + sl.value.shape[2:], np.float64)
    flg = np.empty((n_u, n_ant) + sl.flag.shape[2:], bool)
    groups: dict[bytes, list[int]] = {}
    for a in range(n_ant):
        groups.setdefault(sl.present[:, a].tobytes(), []).append(a)
    for ants in groups.values():
        rows = np.flatnonzero(sl.present[:, ants[0]])
        ants_a = np.asarray(ants)
        if rows.size == 0:  # no solution at all for these antennas: flag
            val[:, ants_a] = 0.0
            flg[:, ants_a] = True
            continue
        i0, i1, w = _time_index(sl.time[rows], times, nearest)
        r0, r1 = rows[i0], rows[i1]
        v0 = sl.value[r0][:, ants_a]
        v1 = sl.value[r1][:, ants_a]
        ww = w[:, None, None, None]
        val[:, ants_a] = v0 + ww * (v1 - v0)
        flg[:, ants_a] = sl.flag[r0][:, ants_a] | sl.flag[r1][:, ants_a]
    return val, flg


def _to_receptors(x: np.ndarray) -> np.ndarray:
    """(..., n_par) -> (..., 2): one parameter serves both receptors."""
    if x.shape[-1] == 1:
        return np.repeat(x, 2, axis=-1)
    return x[..., :2]


def table_term(
    spec: ApplySpec,
    info: MSInfo,
    spw_id: int,
    field_id: int,
    obs_id: int,
    times: np.ndarray,
    chan_freq: np.ndarray,
    scan: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """One table's (jones, flag, mean_wscale or None) on (n_u, n_ant_tab, n_chan or 1, 2).

    Tables with a single solution time (bandpass over the whole observation, delays, Tsys of
    one scan) give the same values at every time: they are evaluated once per (spw, field,
    observation, channel axis), cached on the spec, and broadcast.
    """
    sl = spec._slice(spw_id, field_id, obs_id, scan)
    if sl is None:  # perscan without solutions for this scan: flagged, J = 1
        n_c = chan_freq.size if spec.vis_cal in CHANNELISED else 1
        shape = (times.size, spec.table.n_ant, n_c, 2)
        return np.ones(shape, np.complex64), np.ones(shape, bool), None
    if sl.time.size == 1 and spec.vis_cal != "KAntPos Jones":
        key = (
            "term",
            id(sl),
            spw_id,
            chan_freq.size,
            float(chan_freq[0]) if chan_freq.size else 0.0,
            float(chan_freq[-1]) if chan_freq.size else 0.0,
        )
        with spec._lock:
            got = spec._slices.get(key)
        if got is None:
            got = _term_eval(spec, info, sl, spw_id, field_id, times[:1], chan_freq)
            with spec._lock:
                spec._slices[key] = got
        n_u = times.size
        return tuple(None if a is None else np.broadcast_to(a, (n_u,) + a.shape[1:]) for a in got)
    return _term_eval(spec, info, sl, spw_id, field_id, times, chan_freq)


def _term_eval(
    spec: ApplySpec,
    info: MSInfo,
    sl: _Slice,
    spw_id: int,
    field_id: int,
    times: np.ndarray,
    chan_freq: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    nearest = spec.interp.time == "nearest"
    val, flg = _interp_time(sl, times, nearest)
    n_u, n_ant = val.shape[:2]
    vt = spec.vis_cal
    # channel-averaged weight scale (non-spectral weights): on the calibration channels, over
    # the unflagged ones, as CASA (checked against casatasks.applycal 6.7)
    cal_mean_ws = None
    if vt in CHANNELISED:
        good = ~flg
        cnt = good.sum(axis=2, keepdims=True)
        if vt == "B Jones":
            a2 = np.where(good, val[..., 0::2] ** 2, 0.0)
            cal_mean_ws = np.where(cnt > 0, a2.sum(axis=2, keepdims=True) / np.maximum(cnt, 1), 1.0)
        else:
            tmean = np.where(good, val, 0.0).sum(axis=2, keepdims=True) / np.maximum(cnt, 1)
            cal_mean_ws = np.where(
                (cnt > 0) & (tmean > 0), 1.0 / np.where(tmean > 0, tmean, 1.0), 1.0
            )
    if vt in CHANNELISED and sl.chan_freq.size > 1:
        if np.any(~np.isfinite(sl.chan_freq)):
            raise CalTableError(
                f"{spec.name}: spw {spec.cal_spw(spw_id)} has no channel frequencies; "
                f"cannot interpolate in frequency"
            )
        n_fpar, n_par = val.shape[3], flg.shape[3]
        vin = np.ascontiguousarray(val.transpose(0, 1, 3, 2).reshape(n_u * n_ant, n_fpar, -1))
        fin = np.ascontiguousarray(flg.transpose(0, 1, 3, 2).reshape(n_u * n_ant, n_par, -1))
        out = np.empty((n_u * n_ant, n_fpar, chan_freq.size))
        oflag = np.empty((n_u * n_ant, n_par, chan_freq.size), bool)
        resample_freq(
            vin,
            fin,
            sl.chan_freq,
            np.ascontiguousarray(chan_freq, np.float64),
            spec.interp.freq == "nearest",
            spec.interp.freq_flag,
            sl.n_sub,
            out,
            oflag,
        )
        val = out.reshape(n_u, n_ant, n_fpar, -1).transpose(0, 1, 3, 2)
        flg = oflag.reshape(n_u, n_ant, n_par, -1).transpose(0, 1, 3, 2)
    mean_ws = None
    if sl.n_sub == 2:
        amp, ph = val[..., 0::2], val[..., 1::2]
        if spec.interp.pd:
            nu_cal = sl.chan_freq[sl.chan_freq.size // 2]
            nu_data = chan_freq[chan_freq.size // 2]
            if np.isfinite(nu_cal) and nu_cal > 0:
                ph = ph * (nu_data / nu_cal)
        j = amp * np.exp(1j * ph)
        if vt == "B Jones" and j.shape[2] > 1:
            mean_ws = cal_mean_ws
    elif vt in ("K Jones", "KMBD Jones"):
        cspw = spec.cal_spw(spw_id)
        if vt == "KMBD Jones":  # CASA KMBDJones::setApply: multi-band delays pivot on 0 Hz
            nu_ref = 0.0
        elif spec.table.casa_version is None or spec.table.casa_version in _OLD_K_VERSIONS:
            nu_ref = _ref_freq(spec.table, cspw, info)
        else:
            nu_ref = sl.chan_freq[sl.chan_freq.size // 2]
        if not np.isfinite(nu_ref):
            raise CalTableError(f"{spec.name}: no reference frequency for delay spw {cspw}")
        tau = val[:, :, :1, :] * 1e-9  # (n_u, n_ant, 1, n_par) s
        j = np.exp(2j * np.pi * tau * (chan_freq - nu_ref)[None, None, :, None])
        flg = np.broadcast_to(flg[:, :, :1, :], j.shape)
    elif vt == "B TSYS":
        tsys = val
        flg = flg | (tsys <= 0.0)
        tsys = np.where(flg, 1.0, tsys)
        j = 1.0 / np.sqrt(tsys)
        mean_ws = cal_mean_ws
    elif vt == "KAntPos Jones":
        offsets = val[0, :, 0, :3]  # (n_ant, 3) m, time-independent
        fl = flg[0, :, 0, :3].any(axis=-1)
        f = info.fields[field_id]
        ref = info.antennas[0].position  # CASA: measures frame at antenna 0 (docs/antpos.md)
        tau = _ANTPOS_SIGN * geometric_delay_s(offsets, times, f.ra_rad, f.dec_rad, ref)
        j = np.exp(2j * np.pi * tau[:, :, None, None] * chan_freq[None, None, :, None])
        j = np.repeat(j, 2, axis=3)
        flg = np.broadcast_to(fl[None, :, None, None], j.shape)
        return j, flg, None
    else:  # pragma: no cover - APPLY_ORDER lists every supported type
        raise UnsupportedError(f"{spec.name}: table type {vt!r} cannot be applied")
    j = _to_receptors(j)
    flg = _to_receptors(np.asarray(flg))
    if mean_ws is not None:
        mean_ws = _to_receptors(mean_ws)
    return j, flg, mean_ws


def chunk_jones(
    specs: Sequence[ApplySpec],
    info: MSInfo,
    *,
    spw_id: int,
    field_id: int,
    scan: int,
    observation_id: int,
    times: np.ndarray,
    chan_freq: np.ndarray,
    n_ant: int,
    spectral_wscale: bool = True,
) -> ChunkJones:
    """Evaluate the product of all tables for one chunk of data.

    Parameters
    ----------
    specs : sequence of ApplySpec
        From :func:`prepare_gaintables` (applied in their order).
    info : MSInfo
    spw_id, field_id, scan, observation_id : int
        The chunk's MS spw, field, scan and OBSERVATION_ID (`scan` selects the solutions of
        tables applied with ``...perscan``).
    times : float64 (n_utime,)
        Unique data times (MJD s).
    chan_freq : float64 (n_chan,)
        Data channel frequencies (Hz).
    n_ant : int
        Antennas in the MS (output antenna axis).
    spectral_wscale : bool
        Compute the per-channel ``wscale`` (needed for WEIGHT_SPECTRUM only); False returns
        ``wscale=None`` and only ``wscale_mean`` (cheaper).

    Returns
    -------
    ChunkJones

    Raises
    ------
    CalTableError
        A table has no solutions for the mapped spw / selected fields.
    """
    times = np.asarray(times, np.float64).reshape(-1)
    chan_freq = np.asarray(chan_freq, np.float64).reshape(-1)
    n_u = times.size
    terms = [
        (s, *table_term(s, info, spw_id, field_id, observation_id, times, chan_freq, scan))
        for s in specs
    ]
    n_c = max([j.shape[2] for _, j, _, _ in terms], default=1)
    jones = np.ones((n_u, n_ant, n_c, 2), np.complex64)
    flag = np.zeros((n_u, n_ant, n_c, 2), bool)
    any_wt = any(s.calwt for s in specs)
    wscale = np.ones((n_u, n_ant, n_c, 2), np.float32) if any_wt and spectral_wscale else None
    wmean = np.ones((n_u, n_ant, 1, 2), np.float32) if any_wt else None
    for s, j, f, mws in terms:
        na = min(n_ant, j.shape[1])
        # CASA (VisJones::syncJones -> invJones, setMatByOk): a flagged or zero element of one
        # term is 1 in that term only; the other terms are still applied (flag is kept)
        f = f | (j == 0)
        jones[:, :na] *= np.where(f[:, :na], np.complex64(1.0), j[:, :na])
        flag[:, :na] |= f[:, :na]
        if na < n_ant:  # antennas the table does not know: flagged
            flag[:, na:] = True
        if not s.calwt:
            continue
        if wscale is not None:  # B Jones: its channel mean also for spectral weights (CASA)
            per_chan = np.abs(j[:, :na]) ** 2
            if s.vis_cal == "B Jones" and mws is not None:
                per_chan = np.broadcast_to(mws[:, :na], per_chan.shape)
            wscale[:, :na] *= np.where(f[:, :na], 1.0, per_chan)
        if mws is None:  # single-channel terms: |J|^2; channel-dependent phase-only (K, KAntPos): 1
            mws = (
                np.where(f[:, :na], 1.0, np.abs(j[:, :na]) ** 2)
                if j.shape[2] == 1
                else np.ones((n_u, na, 1, 2))
            )
        wmean[:, :na] *= np.where(f[:, :na].all(axis=2, keepdims=True), 1.0, mws[:, :na])
    return ChunkJones(jones=jones, flag=flag, wscale=wscale, wscale_mean=wmean, times=times)
