"""ALMA system-temperature calibration: Tsys tables, the Tsys spw map, SYSCAL time repair
and the ALMA pipeline's Tsys flagging metrics.

* :func:`tsys_table` builds a ``B TSYS`` table from the MS SYSCAL ``TSYS_SPECTRUM`` exactly as
  CASA's ``gencal(caltype='tsys')`` does (``StandardTsys::specify``).
* :func:`tsys_spwmap` maps every MS spw to a Tsys spw (same baseband, frequency coverage),
  as CASA's ``tsysspwmap`` / the pipeline's ``h_tsyscal`` (``chantol=1``) do.
* :func:`fix_syscal_times` repairs SYSCAL time stamps (``almahelpers.fixsyscaltimes`` rule
  plus a realignment of measurements that match no Tsys data); it never writes the MS unless
  asked to, and then backs SYSCAL up first.
* :func:`flag_tsys` runs the ``hifa_tsysflag`` metrics (nmedian, derivative, edgechans,
  fieldshape, birdies, toomany) on a Tsys table in memory.

See docs/tsys.md for the rules, the thresholds and the deviations from CASA.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import time as _time
from collections.abc import Sequence
from dataclasses import dataclass, field

import casacore.tables as ct
import numpy as np

from fastcal.caltable import CalTable, as_caltable
from fastcal.errors import (
    CalTableError,
    MissingColumnError,
    MSError,
    ParameterError,
    SelectionError,
)
from fastcal.kernels import tsys as tk
from fastcal.ms import open_ms
from fastcal.ms.info import MSInfo, _check_is_ms

__all__ = [
    "FLT_MIN",
    "SyscalData",
    "SyscalTimeFix",
    "FlagAction",
    "FlagReport",
    "TSYS_METRICS",
    "read_syscal",
    "fix_syscal_times",
    "tsys_table",
    "tsys_spwmap",
    "flag_tsys",
    "add_cli_arguments",
    "run_from_args",
]

log = logging.getLogger(__name__)

#: Smallest positive normal float32: CASA flags Tsys values below it (``Tsys < FLT_MIN``).
FLT_MIN = float(np.finfo(np.float32).tiny)
#: Time tolerance (s) CASA's MSMetaInfoForCal uses to find the field/scan at a time.
_CASA_TIME_TOL = 0.1
#: Placeholder errors gencal writes into a Tsys table.
_TSYS_PARAMERR = 0.1
_TSYS_SNR = 1.0

# =============================================================================== SYSCAL


@dataclass(frozen=True, eq=False)
class SyscalData:
    """SYSCAL rows needed for a Tsys table, read with one ``getcol`` per column and spw.

    Attributes
    ----------
    antenna, spw : int32[nrow]
        ANTENNA_ID, SPECTRAL_WINDOW_ID.
    time, interval : float64[nrow]
        TIME (MJD s) and INTERVAL (s) as stored.
    tsys : dict spw -> float32[nrow_spw, nchan, npol]
        TSYS_SPECTRUM of that spw's rows, in the row order of ``rows[spw]``.
    rows : dict spw -> int64[nrow_spw]
        Row numbers (into the arrays above) of each spw.
    """

    path: str
    antenna: np.ndarray
    spw: np.ndarray
    time: np.ndarray
    interval: np.ndarray
    tsys: dict
    rows: dict


def _syscal_path(vis: str) -> str:
    with ct.table(vis, ack=False) as t:
        kw = t.getkeywords()
    sub = kw.get("SYSCAL")
    path = None
    if isinstance(sub, str) and sub.startswith("Table:"):
        path = sub.split(":", 1)[1].strip()
        if not os.path.isdir(path):
            path = os.path.join(vis, "SYSCAL")
    if path is None or not os.path.isdir(path):
        raise MissingColumnError(
            f"{vis}: the SYSCAL subtable is absent; a Tsys table needs SYSCAL "
            "(SPECTRAL_WINDOW_ID, TIME, INTERVAL, ANTENNA_ID, TSYS_SPECTRUM), which importasdm "
            "writes for ALMA data"
        )
    return path


def read_syscal(vis: str | os.PathLike) -> SyscalData:
    """Read the SYSCAL columns a Tsys table needs (vectorised, one getcol per column/spw).

    Raises
    ------
    MissingColumnError
        If SYSCAL is absent, empty, or lacks one of the columns gencal requires.
    """
    vis = os.path.abspath(os.fspath(vis))
    path = _syscal_path(vis)
    need = ("SPECTRAL_WINDOW_ID", "TIME", "INTERVAL", "ANTENNA_ID", "TSYS_SPECTRUM")
    with ct.table(path, ack=False) as t:
        missing = [c for c in need if c not in t.colnames()]
        if missing:
            raise MissingColumnError(
                f"{vis}: SYSCAL lacks column(s) {', '.join(missing)}; gencal(caltype='tsys') "
                f"needs {', '.join(need)}"
            )
        if t.nrows() == 0:
            raise MissingColumnError(f"{vis}: the SYSCAL subtable is present but has no rows")
        if not t.iscelldefined("TSYS_SPECTRUM", 0):
            raise MissingColumnError(
                f"{vis}: SYSCAL TSYS_SPECTRUM is empty (only scalar TSYS?); a Tsys table needs "
                "the spectra"
            )
        spw = t.getcol("SPECTRAL_WINDOW_ID").astype(np.int32)
        ant = t.getcol("ANTENNA_ID").astype(np.int32)
        tim = t.getcol("TIME").astype(np.float64)
        itv = t.getcol("INTERVAL").astype(np.float64)
        tsys, rows = {}, {}
        order = np.argsort(spw, kind="stable")
        bounds = np.flatnonzero(np.diff(spw[order])) + 1
        for grp in np.split(order, bounds):
            s = int(spw[grp[0]])
            contiguous = np.array_equal(grp, np.arange(grp[0], grp[0] + grp.size))
            if contiguous:
                cells = t.getcol("TSYS_SPECTRUM", int(grp[0]), int(grp.size))
            else:
                with t.query(f"SPECTRAL_WINDOW_ID=={s}", sortlist="", columns="TSYS_SPECTRUM") as q:
                    cells = q.getcol("TSYS_SPECTRUM")
            tsys[s] = np.asarray(cells, dtype=np.float32)
            rows[s] = grp
    return SyscalData(vis, ant, spw, tim, itv, tsys, rows)


# =============================================================================== main table


@dataclass(frozen=True, eq=False)
class _MainSummary:
    """The main table reduced to runs of consecutive rows with equal TIME and DATA_DESC_ID.

    Tsys tables need only time -> (field, scan, observation) and, for the time repair, which
    scans hold data of which spw. Reading every row of seven index columns would cost more
    than the rest of the Tsys work together, so TIME is read in full, DATA_DESC_ID only where
    a TIME run is not homogeneous, and SCAN_NUMBER, FIELD_ID, OBSERVATION_ID, STATE_ID and
    INTERVAL at the first row of each run (rows of one integration of one spw share them).
    """

    time: np.ndarray
    interval: np.ndarray
    ddid: np.ndarray
    scan: np.ndarray
    field: np.ndarray
    obs: np.ndarray
    state: np.ndarray

    @classmethod
    def from_info(cls, info: MSInfo) -> _MainSummary:
        idx = info.index
        with ct.table(info.path, ack=False) as t:
            itv = t.getcol("INTERVAL")
        return cls(idx.time, itv, idx.ddid, idx.scan, idx.field_id, idx.observation_id,
                   idx.state_id)

    @classmethod
    def read(cls, path: str) -> _MainSummary:
        with ct.table(path, ack=False) as t:
            n = t.nrows()
            if n == 0:
                z = np.zeros(0)
                return cls(z, z, z.astype(np.int32), *(z.astype(np.int32),) * 4)
            tm = t.getcol("TIME")
            starts = np.r_[0, np.flatnonzero(tm[1:] != tm[:-1]) + 1]
            ends = np.r_[starts[1:], n] - 1
            with t.selectrows(starts) as a, t.selectrows(ends) as b:
                mixed = np.count_nonzero(a.getcol("DATA_DESC_ID") != b.getcol("DATA_DESC_ID"))
            if mixed:  # several spws per integration: runs of (TIME, DATA_DESC_ID)
                dd = t.getcol("DATA_DESC_ID")
                starts = np.r_[0, np.flatnonzero((tm[1:] != tm[:-1]) | (dd[1:] != dd[:-1])) + 1]
            with t.selectrows(starts) as r:
                cols = {c: r.getcol(c) for c in ("INTERVAL", "DATA_DESC_ID", "SCAN_NUMBER",
                                                  "FIELD_ID", "OBSERVATION_ID", "STATE_ID")}
        return cls(tm[starts], cols["INTERVAL"], cols["DATA_DESC_ID"], cols["SCAN_NUMBER"],
                   cols["FIELD_ID"], cols["OBSERVATION_ID"], cols["STATE_ID"])


@dataclass(frozen=True, eq=False)
class _Meta:
    """Subtable facts a Tsys table needs (cheaper than a full :func:`open_ms`)."""

    path: str
    antenna_names: tuple[str, ...]
    num_chan: tuple[int, ...]
    ddid_spw: np.ndarray
    atm_states: frozenset

    @classmethod
    def read(cls, vis: str | os.PathLike | MSInfo) -> _Meta:
        if isinstance(vis, MSInfo):
            atm = frozenset(s.id for s in vis.states
                            if any(i.startswith("CALIBRATE_ATMOSPHERE") for i in s.intents))
            return cls(vis.path, vis.antenna_names, tuple(s.num_chan for s in vis.spws),
                       np.array([d.spw_id for d in vis.ddescs], np.int32), atm)
        path = _check_is_ms(vis)
        with ct.table(os.path.join(path, "ANTENNA"), ack=False) as t:
            names = tuple(t.getcol("NAME")) if t.nrows() else ()
        with ct.table(os.path.join(path, "SPECTRAL_WINDOW"), ack=False) as t:
            nchan = tuple(int(x) for x in t.getcol("NUM_CHAN")) if t.nrows() else ()
        with ct.table(os.path.join(path, "DATA_DESCRIPTION"), ack=False) as t:
            dd = t.getcol("SPECTRAL_WINDOW_ID").astype(np.int32) if t.nrows() else np.zeros(0, np.int32)
        atm: frozenset = frozenset()
        if ct.tableexists(os.path.join(path, "STATE")):
            with ct.table(os.path.join(path, "STATE"), ack=False) as t:
                if t.nrows():
                    modes = t.getcol("OBS_MODE")
                    atm = frozenset(i for i, m in enumerate(modes) if "CALIBRATE_ATMOSPHERE" in m)
        return cls(path, names, nchan, dd, atm)


def _summary(vis: str | MSInfo) -> _MainSummary:
    return _MainSummary.from_info(vis) if isinstance(vis, MSInfo) else _MainSummary.read(vis)


# =============================================================================== time fix


@dataclass(frozen=True, eq=False)
class SyscalTimeFix:
    """SYSCAL time stamps before and after repair (one entry per SYSCAL row).

    ``n_spread`` Tsys measurements had several TIMEs over antennas (fixsyscaltimes rule);
    ``n_realigned`` were moved onto the Tsys scan of their spw by ``shift`` seconds.
    """

    time: np.ndarray
    interval: np.ndarray
    new_time: np.ndarray
    new_interval: np.ndarray
    n_spread: int
    n_realigned: int
    shifts: tuple[float, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(np.any(self.time != self.new_time) or np.any(self.interval != self.new_interval))

    def summary(self) -> dict:
        return {"n_spread": self.n_spread, "n_realigned": self.n_realigned,
                "shifts_s": [round(float(s), 6) for s in self.shifts]}


def _fix_spread(spw, time, interval, newinterval):
    """almahelpers.fixsyscaltimes: one TIME per Tsys measurement (per spw).

    Rows whose ``floor(TIME - INTERVAL/2)`` agree belong to one measurement; if such a
    group has several distinct TIMEs they all get ``mean(TIME - INTERVAL/2) + newinterval/2``
    and INTERVAL ``newinterval``. A spw is touched only if it has more distinct TIMEs than
    measurements.
    """
    time, interval = time.copy(), interval.copy()
    n_fixed = 0
    for s in np.unique(spw):
        idx = np.flatnonzero(spw == s)
        stamps = time[idx] - interval[idx] / 2
        keys = np.floor(stamps)
        if np.unique(time[idx]).size == np.unique(keys).size:
            continue
        for k in np.unique(keys):
            g = idx[keys == k]
            if np.unique(time[g]).size > 1:
                newtime = float(np.mean(time[g] - interval[g] / 2)) + newinterval / 2
                log.info("SYSCAL spw %d: %d TIMEs at one Tsys measurement -> %.3f (INTERVAL %g s)",
                         s, np.unique(time[g]).size, newtime, newinterval)
                time[g] = newtime
                interval[g] = newinterval
                n_fixed += 1
    return time, interval, n_fixed


def _scan_spans(meta: _Meta, main: _MainSummary) -> dict[int, list[tuple]]:
    """spw -> [(start, end, centre, is_atmosphere)] of every scan with rows of that spw."""
    if main.time.size == 0:
        return {}
    row_spw = meta.ddid_spw[main.ddid]
    half = main.interval / 2
    atm_scans = set(main.scan[np.isin(main.state, list(meta.atm_states))].tolist())
    out: dict[int, list[tuple]] = {}
    key = row_spw.astype(np.int64) * 10_000_000 + main.scan.astype(np.int64)
    order = np.argsort(key, kind="stable")
    bounds = np.flatnonzero(np.diff(key[order])) + 1
    for grp in np.split(order, bounds):
        s, scan = int(row_spw[grp[0]]), int(main.scan[grp[0]])
        start = float(np.min(main.time[grp] - half[grp]))
        end = float(np.max(main.time[grp] + half[grp]))
        out.setdefault(s, []).append((start, end, 0.5 * (start + end), scan in atm_scans))
    return out


def _n_inside(centres: np.ndarray, spans: list[tuple]) -> int:
    lo = np.array([c[0] for c in spans])
    hi = np.array([c[1] for c in spans])
    return int(np.count_nonzero(np.any((centres[:, None] >= lo) & (centres[:, None] <= hi), axis=1)))


def _realign(meta, main, spw, time, interval, strict):
    """Shift Tsys measurements of each spw onto the scans holding that spw's data.

    Triggered when some measurement centre (TIME) lies in no scan holding rows of its spw. A
    clock offset moves every measurement of a spw by the same amount, so one shift per spw is
    searched: among the differences (scan centre - measurement centre) the one that puts the
    most measurement centres inside such scans (CALIBRATE_ATMOSPHERE scans when the spw has
    any; ties: the smallest shift). It is applied only if it places more measurements than
    no shift. With `strict`, every measurement is then re-centred on the scan containing it.
    """
    spans = _scan_spans(meta, main)
    time = time.copy()
    shifts = []
    for s in np.unique(spw):
        cands = spans.get(int(s), [])
        if not cands:
            log.warning("SYSCAL spw %d has no rows in the main table: its Tsys times cannot be "
                        "checked against the data", s)
            continue
        atm = [c for c in cands if c[3]] or cands
        sel = spw == s
        t_meas = np.unique(time[sel])
        centres = t_meas.astype(np.float64)  # SYSCAL TIME is the measurement's centre
        best, best_n = 0.0, _n_inside(centres, atm)
        if _n_inside(centres, cands) < centres.size:  # some sit on no data of their spw
            for d in sorted({round(c[2] - m, 6) for c in atm for m in centres}, key=abs):
                n = _n_inside(centres + d, atm)
                if n > best_n:
                    best, best_n = d, n
        per = np.full(centres.size, best)
        if strict:
            for k, c in enumerate(centres + best):
                inside = [x for x in atm if x[0] <= c <= x[1]]
                if inside:
                    per[k] += min(inside, key=lambda x: abs(x[2] - c))[2] - c
        for t0, d in zip(t_meas, per, strict=True):
            if abs(d) < 1e-6:
                continue
            time[sel & (time == t0)] = t0 + d
            shifts.append(float(d))
        if np.any(np.abs(per) >= 1e-6):
            log.warning("SYSCAL spw %d: Tsys measurements shifted by %s s onto the scans holding "
                        "its data (%d of %d inside a scan before, %d after)", s,
                        np.unique(np.round(per, 3)).tolist(), _n_inside(centres, atm),
                        centres.size, _n_inside(centres + per, atm))
    return time, shifts


def fix_syscal_times(
    vis: str | os.PathLike | MSInfo,
    newinterval: float = 2.0,
    *,
    realign: bool | str = "auto",
    write: bool = False,
    backup: bool = True,
    syscal: SyscalData | None = None,
    _main: _MainSummary | None = None,
) -> SyscalTimeFix:
    """Repaired SYSCAL TIME/INTERVAL (the ``fixsyscaltimes`` rule plus realignment).

    Parameters
    ----------
    vis : str or MSInfo
        Measurement Set.
    newinterval : float
        INTERVAL (s) given to repaired measurements (almahelpers default 2.0).
    realign : {"auto", True, False}
        "auto": when some Tsys measurement centres (TIME, after the fixsyscaltimes rule) lie
        in no scan holding data of their spw, shift all measurements of that spw by the one
        offset that places the most of them inside such scans (CALIBRATE_ATMOSPHERE scans
        preferred; a clock offset). True: additionally re-centre each measurement on the
        scan containing it. False: only the fixsyscaltimes rule.
    write : bool
        Write the repaired TIME/INTERVAL into the MS SYSCAL (never done silently). With
        `backup`, SYSCAL is first copied to ``<vis>.syscal_backup_<UTC stamp>``.
    syscal : SyscalData, optional
        Already-read SYSCAL (avoids a second read).

    Returns
    -------
    SyscalTimeFix
    """
    if newinterval <= 0:
        raise ParameterError(f"newinterval={newinterval!r} must be > 0 seconds")
    if realign not in (True, False, "auto"):
        raise ParameterError(f"realign={realign!r}; expected True, False or 'auto'")
    meta = _Meta.read(vis)
    sc = syscal if syscal is not None else read_syscal(meta.path)
    new_t, new_i, n_spread = _fix_spread(sc.spw, sc.time, sc.interval, float(newinterval))
    shifts: list[float] = []
    if realign:
        main = _main if _main is not None else _summary(vis if isinstance(vis, MSInfo) else meta.path)
        new_t, shifts = _realign(meta, main, sc.spw, new_t, new_i, strict=realign is True)
    fix = SyscalTimeFix(sc.time, sc.interval, new_t, new_i, n_spread, len(shifts), tuple(shifts))
    if write and fix.changed:
        _write_syscal_times(meta.path, fix, backup)
    return fix


def _write_syscal_times(vis: str, fix: SyscalTimeFix, backup: bool) -> None:
    path = _syscal_path(vis)
    if backup:
        stamp = _time.strftime("%Y%m%dT%H%M%S", _time.gmtime())
        dest = f"{vis.rstrip(os.sep)}.syscal_backup_{stamp}"
        n = 0
        while os.path.exists(dest):
            n += 1
            dest = f"{vis.rstrip(os.sep)}.syscal_backup_{stamp}_{n}"
        shutil.copytree(path, dest)
        log.warning("SYSCAL of %s backed up to %s before rewriting TIME/INTERVAL", vis, dest)
    with ct.table(path, readonly=False, ack=False) as t:
        t.putcol("TIME", fix.new_time)
        t.putcol("INTERVAL", fix.new_interval)
    log.warning("rewrote SYSCAL TIME/INTERVAL of %s (%d spread, %d realigned measurements)",
                vis, fix.n_spread, fix.n_realigned)


# =============================================================================== the table


def _parse_ids(value: str | int | Sequence, valid: Sequence[int], names: dict[str, int] | None,
               what: str, vis: str) -> set[int] | None:
    if value in ("", None) or (isinstance(value, (list, tuple)) and not value):
        return None
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    out = set()
    for item in items:
        tok = str(item).strip()
        if names is not None and tok in names:
            out.add(names[tok])
            continue
        try:
            i = int(tok)
        except ValueError:
            i = None
        if i is None or i not in valid:
            valid_txt = ", ".join(map(str, valid))
            if names:
                valid_txt += "; names " + ", ".join(names)
            raise SelectionError(f"{vis}: {what}={value!r}: {tok!r} is not valid; valid: {valid_txt}")
        out.add(i)
    return out


@dataclass
class _TimeLookup:
    """CASA's MSMetaInfoForCal field/scan-at-time rules on the main table's index."""

    utime: np.ndarray
    field_min: np.ndarray
    obs_min: np.ndarray
    scan_lo: np.ndarray
    scan_hi: np.ndarray
    scan_no: np.ndarray

    @classmethod
    def build(cls, main: _MainSummary) -> _TimeLookup:
        utime, inv = np.unique(main.time, return_inverse=True)
        field_min = np.full(utime.size, np.iinfo(np.int32).max, np.int64)
        np.minimum.at(field_min, inv, main.field)
        obs_min = np.full(utime.size, np.iinfo(np.int32).max, np.int64)
        np.minimum.at(obs_min, inv, main.obs)
        # scans per (observation, array) as MSMetaData; ARRAY_ID is 0 for ALMA
        key = main.obs.astype(np.int64) * 10_000_000 + main.scan
        ukey, kinv = np.unique(key, return_inverse=True)
        lo = np.full(ukey.size, np.inf)
        hi = np.full(ukey.size, -np.inf)
        np.minimum.at(lo, kinv, main.time)
        np.maximum.at(hi, kinv, main.time)
        return cls(utime, field_min, obs_min, lo, hi, ukey % 10_000_000)

    def _window(self, t: float) -> slice:
        i0 = int(np.searchsorted(self.utime, t - _CASA_TIME_TOL, "left"))
        i1 = int(np.searchsorted(self.utime, t + _CASA_TIME_TOL, "right"))
        if i0 >= self.utime.size:  # past the last integration: CASA 6.7 gives the last one
            return slice(self.utime.size - 1, self.utime.size)
        # MSMetaData::getFieldsForTimes also takes the first time past the window
        return slice(i0, min(i1 + 1, self.utime.size))

    def field(self, t: float) -> int:
        w = self._window(t)
        return int(self.field_min[w].min()) if w.stop > w.start else -1

    def obs(self, t: float) -> int:
        w = self._window(t)
        return int(self.obs_min[w].min()) if w.stop > w.start else 0

    def scan(self, t: float) -> int:
        hit = (self.scan_hi >= t - _CASA_TIME_TOL) & (self.scan_lo <= t + _CASA_TIME_TOL)
        if hit.any():
            return int(self.scan_no[hit].min())
        after = self.scan_lo > t
        if after.any():  # as CASA 6.7 labels a Tsys table stamped just before its scan
            return int(self.scan_no[after][np.argmin(self.scan_lo[after])])
        if self.scan_no.size:  # after the last scan: CASA 6.7 gives the last one
            return int(self.scan_no[np.argmax(self.scan_hi)])
        return -1


def tsys_table(
    vis: str | os.PathLike | MSInfo,
    caltable: str | os.PathLike | None = None,
    *,
    spw: str | Sequence = "",
    antenna: str | Sequence = "",
    fix_times: bool | str = "auto",
    newinterval: float = 2.0,
    overwrite: bool = False,
) -> CalTable:
    """Build a ``B TSYS`` table from SYSCAL as ``gencal(caltype='tsys')`` writes it.

    One row per (Tsys spw, measurement time, antenna 0..n_ant-1) with TIME = SYSCAL TIME -
    INTERVAL/2, FIELD_ID / SCAN_NUMBER / OBSERVATION_ID of the main table at that time,
    INTERVAL 0, ANTENNA2 -1, FPARAM (nchan, npol) = TSYS_SPECTRUM (K), PARAMERR 0.1, SNR 1,
    FLAG where Tsys < FLT_MIN (also NaN/inf, which CASA leaves unflagged); antennas without
    a spectrum get Tsys 0, flagged (as CASA).

    Parameters
    ----------
    vis : str
        Measurement Set with a SYSCAL subtable.
    caltable : str, optional
        Write the table there (atomic; `overwrite` to replace).
    spw : str or list, optional
        Tsys spw ids to include ('' = every spw in SYSCAL).
    antenna : str or list, optional
        Antenna names or ids whose spectra are used; the others are flagged ('' = all).
    fix_times : {"auto", True, False}
        Repair SYSCAL time stamps in memory before building (:func:`fix_syscal_times`,
        ``realign`` = this value); the MS is not modified. False = the stored times (CASA).
    newinterval : float
        INTERVAL for measurements repaired by the fixsyscaltimes rule.

    Returns
    -------
    CalTable

    Raises
    ------
    MissingColumnError
        MS without SYSCAL (or incomplete SYSCAL).
    CalTableError
        TSYS_SPECTRUM channel count differs from the spw's NUM_CHAN, or > 2 pols.
    SelectionError
        Bad `spw` / `antenna`.
    """
    t_start = _time.perf_counter()
    if fix_times not in (True, False, "auto"):
        raise ParameterError(f"fix_times={fix_times!r}; expected True, False or 'auto'")
    meta = _Meta.read(vis)
    sc = read_syscal(meta.path)
    n_ant = len(meta.antenna_names)
    spw_sel = _parse_ids(spw, sorted(sc.tsys), None, "spw", meta.path)
    ant_sel = _parse_ids(antenna, list(range(n_ant)),
                         {a: i for i, a in enumerate(meta.antenna_names)}, "antenna", meta.path)
    main = _summary(vis if isinstance(vis, MSInfo) else meta.path)
    time, interval = sc.time, sc.interval
    fix = None
    if fix_times:
        fix = fix_syscal_times(vis if isinstance(vis, MSInfo) else meta.path, newinterval,
                               realign=fix_times, syscal=sc, _main=main)
        time, interval = fix.new_time, fix.new_interval
    lookup = _TimeLookup.build(main)
    params, flags, times, fields, scans, obs = {}, {}, {}, {}, {}, {}
    n_bad_total = 0
    for s, rows in sorted(sc.tsys.items()):
        if spw_sel is not None and s not in spw_sel:
            continue
        r = sc.rows[s]
        nchan_ms = meta.num_chan[s] if s < len(meta.num_chan) else -1
        _, nchan, npol = rows.shape
        if nchan != nchan_ms:
            raise CalTableError(
                f"{meta.path}: SYSCAL TSYS_SPECTRUM of spw {s} has {nchan} channels but the "
                f"spw has NUM_CHAN={nchan_ms}; gencal cannot use it")
        if npol > 2:
            raise CalTableError(f"{meta.path}: SYSCAL spw {s} has {npol} Tsys pols (at most 2)")
        # CASA iterates SYSCAL by exact (TIME, spw); TIME - INTERVAL/2 of the first row
        t_key, first, inv = np.unique(time[r], return_index=True, return_inverse=True)
        ref = t_key - interval[r][first] / 2
        p = np.zeros((t_key.size, n_ant, nchan, npol), np.float32)
        present = np.zeros((t_key.size, n_ant), bool)
        ants = sc.antenna[r]
        ok = (ants >= 0) & (ants < n_ant)
        if ant_sel is not None:
            ok &= np.isin(ants, list(ant_sel))
        p[inv[ok], ants[ok]] = rows[ok]
        present[inv[ok], ants[ok]] = True
        finite = np.isfinite(p)
        bad = ~finite | (p < FLT_MIN)
        n_nonfinite = int(np.count_nonzero(~finite & present[..., None, None]))
        n_neg = int(np.count_nonzero(finite & (p < FLT_MIN) & present[..., None, None]))
        if n_nonfinite or n_neg:
            log.warning("%s: Tsys spw %d: flagged %d negative/zero and %d NaN/inf Tsys values "
                        "(of %d)", meta.path, s, n_neg, n_nonfinite, int(present.sum()) * nchan * npol)
            n_bad_total += n_neg + n_nonfinite
        params[s], flags[s], times[s] = p, bad, ref
        fields[s] = np.array([lookup.field(t) for t in ref], np.int32)
        scans[s] = np.array([lookup.scan(t) for t in ref], np.int32)
        obs[s] = np.array([lookup.obs(t) for t in ref], np.int32)
    if not params:
        raise SelectionError(f"{meta.path}: spw={spw!r} selects no SYSCAL spw; SYSCAL has "
                             f"{sorted(sc.tsys)}")
    extra = {"producer": "fastcal.tsys_table"}
    if fix is not None and fix.changed:
        extra["syscal_time_fix"] = fix.summary()
    tab = CalTable.from_solutions(
        "B TSYS", params, times=times, ms=meta.path, refant=-1, flag=flags,
        paramerr={s: np.full(p.shape, _TSYS_PARAMERR, np.float32) for s, p in params.items()},
        snr={s: np.full(p.shape, _TSYS_SNR, np.float32) for s, p in params.items()},
        interval=0.0, field_id=fields, scan=scans, obs_id=obs, extra=extra,
    )
    log.info("Tsys table from %s: %d rows, spws %s, %.3f s", meta.path, tab.nrow,
             sorted(params), _time.perf_counter() - t_start)
    if caltable is not None:
        tab.write(caltable, overwrite=overwrite)
    return tab


# =============================================================================== spw map


def _freq_range(freq: np.ndarray, width_first: float) -> tuple[float, float]:
    if freq.size > 1:
        return float(freq.min() - 0.5 * width_first), float(freq.max() + 0.5 * width_first)
    return float(freq[0] - 0.5 * width_first), float(freq[0] + 0.5 * width_first)


def tsys_spwmap(
    vis: str | os.PathLike | MSInfo,
    tsystable: str | os.PathLike | CalTable | None = None,
    *,
    trim: bool = True,
    chantol: float = 1,
) -> list[int]:
    """spwmap (MS spw -> Tsys spw) for applying a Tsys table, as CASA's ``tsysspwmap``.

    A MS spw maps to a Tsys spw with the same BBC_NO whose range [min(f) - dv/2,
    max(f) + dv/2] (widened by `chantol` Tsys channels each side) contains the spw's range
    [min(f) - w0/2, max(f) + w0/2] (w0 = its first CHAN_WIDTH). The first (lowest id) such
    Tsys spw is used. Unmatched spws map to themselves (logged; a warning for science spws,
    and if no science spw is covered at all).

    Parameters
    ----------
    tsystable : path or CalTable, optional
        Tsys table; default: every spw with SYSCAL rows and the MS's channel axes.
    trim : bool
        Drop trailing identity entries (applycal treats missing entries as identity).
    chantol : float
        Tolerance in Tsys channels (pipeline ``h_tsyscal`` uses 1; CASA's recipe 0).
    """
    info = open_ms(vis)
    ranges = {}
    if tsystable is None:
        sc = read_syscal(info.path)
        for s in sorted(sc.tsys):
            f = info.spws[s].chan_freq
            dv = abs(f[1] - f[0]) if f.size > 1 else abs(info.spws[s].chan_width[0])
            ranges[s] = (f.min() - dv / 2, f.max() + dv / 2, dv)
    else:
        tab = as_caltable(tsystable)
        for s in tab.spw_ids.tolist():
            f = tab.chan_freq.get(s)
            if f is None:
                f = info.spws[s].chan_freq
            dv = abs(f[1] - f[0]) if f.size > 1 else abs(info.spws[s].chan_width[0])
            ranges[int(s)] = (f.min() - dv / 2, f.max() + dv / 2, dv)
    spwmap, unmatched = [], []
    for sp in info.spws:
        lo, hi = _freq_range(sp.chan_freq, float(sp.chan_width[0])) if sp.num_chan else (0, 0)
        match = None
        for s, (tlo, thi, dv) in sorted(ranges.items()):
            if s >= len(info.spws) or info.spws[s].baseband != sp.baseband:
                continue
            if lo >= tlo - chantol * dv and hi <= thi + chantol * dv:
                match = s
                break
        if match is None:
            unmatched.append(sp.id)
            match = sp.id
        spwmap.append(int(match))
    roles = info.spw_roles
    science = [s for s, r in roles.items() if r == "science"]
    bad_sci = [s for s in science if s in unmatched]
    if unmatched:
        log.info("%s: no Tsys spw for spw(s) %s; they map to themselves", info.path, unmatched)
    if bad_sci:
        log.warning("%s: science spw(s) %s are covered by no Tsys spw (Tsys spws %s): they map "
                    "to themselves, so a Tsys table has no solutions for them", info.path,
                    bad_sci, sorted(ranges))
    if science and len(bad_sci) == len(science):
        log.warning("%s: the Tsys spws %s cover no science spw; returning the identity map",
                    info.path, sorted(ranges))
    if trim:
        while spwmap and spwmap[-1] == len(spwmap) - 1:
            spwmap.pop()
    return spwmap


# =============================================================================== flagging

#: Metric names in the pipeline's default order.
TSYS_METRICS = ("nmedian", "derivative", "edgechans", "fieldshape", "birdies", "toomany")


@dataclass(frozen=True)
class FlagAction:
    """Flags one metric raised: spectra (antenna, time, pol) or channels.

    ``antenna``/``time``/``pol`` None means all; ``channels`` None means all channels.
    """

    metric: str
    spw: int
    antenna: int | None
    time: float | None
    pol: int | None
    channels: tuple[int, ...] | None
    value: float | None = None


@dataclass
class FlagReport:
    """What :func:`flag_tsys` flagged.

    ``flagged_before`` / ``flagged_after``: fraction of flagged Tsys values (real channels).
    ``new_flags``: newly flagged values per metric. ``actions``: every flag raised.
    """

    metrics: tuple[str, ...]
    thresholds: dict
    flagged_before: float = 0.0
    flagged_after: float = 0.0
    new_flags: dict = field(default_factory=dict)
    actions: list = field(default_factory=list)
    skipped: dict = field(default_factory=dict)

    def summary(self) -> str:
        parts = [f"{m}: {self.new_flags.get(m, 0)}" for m in self.metrics]
        return (f"Tsys flagged fraction {self.flagged_before:.4f} -> {self.flagged_after:.4f} "
                f"(new values per metric: {', '.join(parts)})")


def _field_intents(info: MSInfo | None) -> dict[int, set[str]]:
    """Pipeline intents per field: ATMOSPHERE, BANDPASS, AMPLITUDE, PHASE, TARGET."""
    if info is None:
        return {}
    tok = {"CALIBRATE_ATMOSPHERE": "ATMOSPHERE", "CALIBRATE_BANDPASS": "BANDPASS",
           "CALIBRATE_FLUX": "AMPLITUDE", "CALIBRATE_AMPLI": "AMPLITUDE",
           "CALIBRATE_PHASE": "PHASE", "OBSERVE_TARGET": "TARGET"}
    out: dict[int, set[str]] = {}
    for scan in info.scans:
        names = {tok[i.split("#")[0]] for i in scan.intents if i.split("#")[0] in tok}
        for f in scan.field_ids:
            out.setdefault(int(f), set()).update(names)
    return out


def _fields_with(intents: dict[int, set[str]], present: np.ndarray, names: Sequence[str]) -> set:
    present = {int(f) for f in present}
    if not intents:  # no MS: every field counts as an ATMOSPHERE field
        return present if "ATMOSPHERE" in names else set()
    sel = set()
    for f in present:
        its = intents.get(f, set())
        for n in names:
            if n == "PHASE":
                if "PHASE" in its and not its & {"BANDPASS", "AMPLITUDE"}:
                    sel.add(f)
            elif n in its:
                sel.add(f)
    return sel


class _SpwView:
    """Tsys spectra of one spw: data/flag (n_time, n_ant, nchan, npol) and normalised data."""

    def __init__(self, tab: CalTable, spw: int):
        sol = tab.solutions(spw)
        n = tab.nchan(spw)
        self.spw = spw
        self.time = sol.time
        self.field = sol.field_id
        self.data = sol.params[:, :, :n, :].astype(np.float64)
        self.flag = sol.flag[:, :, :n, :].copy()
        self.nchan = n
        self._renorm()

    def _renorm(self) -> None:
        self.median, self.norm = tk.normalise(self.data, self.flag, chan_axis=2)

    def spectrum_flagged(self) -> np.ndarray:
        """(n_time, n_ant, npol): every channel flagged."""
        return np.all(self.flag, axis=2)


def flag_tsys(
    caltable: str | os.PathLike | CalTable,
    *,
    vis: str | os.PathLike | MSInfo | None = None,
    metrics: str | Sequence[str] = "nmedian,derivative,edgechans,fieldshape,birdies,toomany",
    fnm_limit: float = 2.0,
    fnm_byfield: bool = True,
    fd_max_limit: float = 5.0,
    fe_edge_limit: float = 3.0,
    ff_refintent: str = "BANDPASS",
    ff_max_limit: float = 13.0,
    fb_sharps_limit: float = 0.15,
    tmf1_limit: float = 0.666,
    tmef1_limit: float = 0.666,
    output: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> tuple[CalTable, FlagReport]:
    """Flag a Tsys table with the ALMA pipeline's ``hifa_tsysflag`` metrics.

    Metrics run in the order given (pipeline default order by default); each sees the flags
    raised by the previous ones. The input table is not modified: a flagged copy is returned
    (and written to `output` if given). Definitions and thresholds: docs/tsys.md.

    Parameters
    ----------
    caltable : path or CalTable
        A ``B TSYS`` table.
    vis : str, optional
        MS for the field intents (default: the table's source MS if it still exists, or
        ``MSName`` next to the table file).
        Without it every field counts as an ATMOSPHERE field and fieldshape is skipped.
    metrics : str or list
        Subset/order of :data:`TSYS_METRICS`.
    fnm_limit, fnm_byfield, fd_max_limit, fe_edge_limit, ff_refintent, ff_max_limit,
    fb_sharps_limit, tmf1_limit, tmef1_limit : see docs/tsys.md (pipeline parameter names).

    Returns
    -------
    (CalTable, FlagReport)
    """
    tab = as_caltable(caltable)
    if tab.vis_cal != "B TSYS":
        raise CalTableError(f"{tab.path or 'table'} is a {tab.vis_cal!r} table; flag_tsys needs "
                            "a 'B TSYS' table")
    names = [m.strip() for m in (metrics.split(",") if isinstance(metrics, str) else metrics)
             if str(m).strip()]
    bad = [m for m in names if m not in TSYS_METRICS]
    if bad:
        raise ParameterError(f"metrics={metrics!r}: unknown {bad}; valid: {', '.join(TSYS_METRICS)}")
    for pname, val in (("fnm_limit", fnm_limit), ("fd_max_limit", fd_max_limit),
                       ("fe_edge_limit", fe_edge_limit), ("ff_max_limit", ff_max_limit),
                       ("fb_sharps_limit", fb_sharps_limit)):
        if not val > 0:
            raise ParameterError(f"{pname}={val!r} must be > 0")
    for pname, val in (("tmf1_limit", tmf1_limit), ("tmef1_limit", tmef1_limit)):
        if not 0 <= val <= 1:
            raise ParameterError(f"{pname}={val!r} must be a fraction in [0, 1]")
    info = _info_for(tab, vis)
    intents = _field_intents(info)
    thresholds = dict(fnm_limit=fnm_limit, fnm_byfield=fnm_byfield, fd_max_limit=fd_max_limit,
                      fe_edge_limit=fe_edge_limit, ff_refintent=ff_refintent,
                      ff_max_limit=ff_max_limit, fb_sharps_limit=fb_sharps_limit,
                      tmf1_limit=tmf1_limit, tmef1_limit=tmef1_limit)
    report = FlagReport(tuple(names), thresholds)
    views = {int(s): _SpwView(tab, int(s)) for s in tab.spw_ids}
    total = sum(v.flag.size for v in views.values())
    report.flagged_before = sum(int(v.flag.sum()) for v in views.values()) / max(total, 1)
    runners = {"nmedian": _m_nmedian, "derivative": _m_derivative, "edgechans": _m_edgechans,
               "fieldshape": _m_fieldshape, "birdies": _m_birdies, "toomany": _m_toomany}
    for m in names:
        before = sum(int(v.flag.sum()) for v in views.values())
        for v in views.values():
            runners[m](v, intents, thresholds, report)
            v._renorm()
        report.new_flags[m] = sum(int(v.flag.sum()) for v in views.values()) - before
        log.info("tsysflag %s: %d new flagged Tsys values", m, report.new_flags[m])
    report.flagged_after = sum(int(v.flag.sum()) for v in views.values()) / max(total, 1)
    out = _with_flags(tab, views)
    log.info("%s", report.summary())
    if output is not None:
        out.write(output, overwrite=overwrite)
    return out, report


def _info_for(tab: CalTable, vis) -> MSInfo | None:
    if vis is not None:
        return open_ms(vis)
    cands = [tab.ms_path]
    if tab.path and tab.ms_name:  # MSName is a base name: look next to the table
        cands.append(os.path.join(os.path.dirname(os.path.abspath(tab.path)), tab.ms_name))
    for cand in cands:
        if cand and os.path.isdir(cand):
            try:
                return open_ms(cand)
            except MSError as exc:
                log.warning("cannot read %s for field intents: %s", cand, exc)
    log.warning("flag_tsys: no MS for field intents; every field is treated as an ATMOSPHERE "
                "field and the fieldshape metric is skipped")
    return None


def _with_flags(tab: CalTable, views: dict) -> CalTable:
    flag = tab.flag.copy()
    for s, v in views.items():
        rows = np.flatnonzero(tab.spw_id == s)
        n_t, n_a = v.flag.shape[:2]
        flag[rows, :v.nchan, :] = v.flag.reshape(n_t * n_a, v.nchan, -1)
    return dataclasses.replace(tab, flag=flag, path=None)


def _atm_mask(v: _SpwView, intents, names=("ATMOSPHERE",)) -> np.ndarray:
    fields = _fields_with(intents, np.unique(v.field), names)
    return np.isin(v.field, list(fields))


def _flag_spectra(v, report, metric, t_idx, a_idx, p_idx, values):
    for ti, ai, pi, val in zip(t_idx, a_idx, p_idx, values, strict=True):
        if not v.flag[ti, ai, :, pi].all():
            v.flag[ti, ai, :, pi] = True
            report.actions.append(FlagAction(metric, v.spw, int(ai), float(v.time[ti]), int(pi),
                                             None, float(val)))


def _m_nmedian(v, intents, th, report):
    """Spectra whose median Tsys exceeds fnm_limit x the median of all spectra' medians
    (per pol, per field when fnm_byfield)."""
    tmask = _atm_mask(v, intents)
    groups = ([v.field == f for f in np.unique(v.field[tmask])] if th["fnm_byfield"]
              else [tmask])
    sflag = v.spectrum_flagged()
    for g in groups:
        g = g & tmask
        for p in range(v.data.shape[3]):
            vals = v.median[g][:, :, p]
            fl = sflag[g][:, :, p]
            if fl.all():
                continue
            ref = np.median(vals[~fl])
            hit = (~fl) & ((vals > th["fnm_limit"] * ref) | (vals < 0.0 * ref))
            t_i, a_i = np.nonzero(hit)
            times = np.flatnonzero(g)[t_i]
            _flag_spectra(v, report, "nmedian", times, a_i, [p] * len(t_i), vals[hit])


def _m_derivative(v, intents, th, report):
    """Spectra whose 100 x MAD of the channel-to-channel difference of the normalised
    spectrum exceeds fd_max_limit (absolute limit, pipeline 'max abs' rule)."""
    tmask = _atm_mask(v, intents)
    metric, none = tk.derivative_metric(v.norm, v.flag, chan_axis=2)
    hit = tmask[:, None, None] & ~none & (metric > th["fd_max_limit"])
    t_i, a_i, p_i = np.nonzero(hit)
    _flag_spectra(v, report, "derivative", t_i, a_i, p_i, metric[hit])


def _m_fieldshape(v, intents, th, report):
    """Spectra whose 100 x mean |norm - reference norm| exceeds ff_max_limit; the reference is
    the antenna's channel-wise median normalised spectrum over ff_refintent fields, with
    channels next to steps > 0.05 (atmospheric lines) excluded."""
    if not intents:
        report.skipped["fieldshape"] = "no MS intents"
        return
    tmask = _atm_mask(v, intents)
    refmask = tmask & _atm_mask(v, intents, (th["ff_refintent"].upper(),))
    if not refmask.any():
        report.skipped.setdefault("fieldshape", f"spw {v.spw}: no {th['ff_refintent']} field")
        log.info("fieldshape: spw %d has no %s Tsys spectra; skipped", v.spw, th["ff_refintent"])
        return
    ref, refbad = tk.shape_reference(v.norm[refmask], v.flag[refmask])  # (ant, chan, pol)
    has_ref = np.any(~v.spectrum_flagged()[refmask], axis=0)  # (ant, pol)
    metric, cnt = tk.shape_metric(v.norm, v.flag, ref, refbad)
    hit = tmask[:, None, None] & has_ref[None] & (cnt > 0) & (metric > th["ff_max_limit"])
    t_i, a_i, p_i = np.nonzero(hit)
    _flag_spectra(v, report, "fieldshape", t_i, a_i, p_i, metric[hit])


def _m_birdies(v, intents, th, report):
    """Per antenna: its median normalised spectrum (all times, both pols) minus the spw's;
    channels bracketing a step > fb_sharps_limit (broadened over the feature's wings) are
    flagged for that antenna at all times and pols."""
    tmask = _atm_mask(v, intents)
    if not tmask.any():
        return
    norm = v.norm[tmask]  # (t, ant, chan, pol)
    fl = v.flag[tmask]
    n_ant = norm.shape[1]
    spw_stack = np.moveaxis(norm, 2, -1).reshape(-1, v.nchan)
    spw_flag = np.moveaxis(fl, 2, -1).reshape(-1, v.nchan)
    spw_med, spw_bad = tk.masked_median(spw_stack, spw_flag, axis=0)
    for a in range(n_ant):
        st = np.moveaxis(norm[:, a], 1, -1).reshape(-1, v.nchan)
        sf = np.moveaxis(fl[:, a], 1, -1).reshape(-1, v.nchan)
        if sf.all():
            continue
        med, bad = tk.masked_median(st, sf, axis=0)
        diff = med - spw_med
        dflag = bad | spw_bad
        if dflag.all():
            continue
        chans = np.flatnonzero(tk.sharps(diff, dflag, th["fb_sharps_limit"]))
        if chans.size:
            v.flag[:, a, chans, :] = True
            report.actions.append(FlagAction("birdies", v.spw, a, None, None, tuple(chans.tolist())))


def _m_edgechans(v, intents, th, report):
    """Channels at each edge (searched in the outer quarter) of the median normalised spectrum
    of the spw (ATMOSPHERE, BANDPASS, AMPLITUDE fields; all antennas, times, pols) before the
    channel-to-channel step first falls below fe_edge_limit x its median; flagged for all."""
    tmask = _atm_mask(v, intents, ("ATMOSPHERE", "BANDPASS", "AMPLITUDE"))
    if not tmask.any():
        return
    st = np.moveaxis(v.norm[tmask], 2, -1).reshape(-1, v.nchan)
    sf = np.moveaxis(v.flag[tmask], 2, -1).reshape(-1, v.nchan)
    med, bad = tk.masked_median(st, sf, axis=0)
    if bad.all():
        return
    left = tk.edge_index(med, bad, th["fe_edge_limit"])
    right = tk.edge_index(med[::-1], bad[::-1], th["fe_edge_limit"])
    chans = np.flatnonzero((np.arange(v.nchan) < left) | (np.arange(v.nchan) > v.nchan - 1 - right))
    if chans.size:
        v.flag[:, :, chans, :] = True
        report.actions.append(FlagAction("edgechans", v.spw, None, None, None, tuple(chans.tolist())))


def _m_toomany(v, intents, th, report):
    """Per pol, on the (antenna x time) view of entirely flagged spectra: flag every antenna
    at a time where > tmf1_limit of the antennas are flagged; flag the whole spw/pol when
    > tmef1_limit of the antennas are flagged at every time."""
    tmask = _atm_mask(v, intents)
    if not tmask.any():
        return
    ti = np.flatnonzero(tmask)
    n_ant = v.data.shape[1]
    for p in range(v.data.shape[3]):
        view = v.spectrum_flagged()[ti][:, :, p]  # (time, ant)
        if view.all():
            continue
        for k in range(view.shape[0]):
            if view[k].all():
                continue
            frac = view[k].sum() / n_ant
            if frac > th["tmf1_limit"]:
                _flag_spectra(v, report, "toomany", [ti[k]] * n_ant, range(n_ant), [p] * n_ant,
                              [frac] * n_ant)
                view[k] = True
        frac_ef = np.count_nonzero(view.all(axis=0)) / n_ant
        if frac_ef > th["tmef1_limit"] and not view.all():
            tt, aa = np.nonzero(~view)
            _flag_spectra(v, report, "toomany", ti[tt], aa, [p] * len(tt), [frac_ef] * len(tt))


# =============================================================================== CLI


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``fastcal tsys``."""
    parser.add_argument("vis", help="Measurement Set with a SYSCAL subtable")
    parser.add_argument("caltable", help="output B TSYS table")
    parser.add_argument("--spw", default="", help="Tsys spw ids (default all)")
    parser.add_argument("--antenna", default="", help="antenna names/ids (default all)")
    parser.add_argument("--fix-times", default="auto", choices=["auto", "yes", "no"],
                        help="repair SYSCAL time stamps in memory (default auto)")
    parser.add_argument("--flag", action="store_true", help="run the tsysflag metrics")
    parser.add_argument("--metrics", default=",".join(TSYS_METRICS))
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--chantol", type=float, default=1.0,
                        help="tsys_spwmap tolerance in Tsys channels (default 1)")


def run_from_args(args: argparse.Namespace) -> int:
    """Run ``fastcal tsys``: build (and optionally flag) the table, print the spwmap."""
    fix = {"auto": "auto", "yes": True, "no": False}[args.fix_times]
    tab = tsys_table(args.vis, spw=args.spw, antenna=args.antenna, fix_times=fix)
    if args.flag:
        tab, report = flag_tsys(tab, vis=args.vis, metrics=args.metrics)
        print(report.summary())
    tab.write(args.caltable, overwrite=args.overwrite)
    spwmap = tsys_spwmap(args.vis, tab, chantol=args.chantol)
    print(f"wrote {args.caltable}: {tab.nrow} rows; spwmap for applycal: {spwmap}")
    return 0
