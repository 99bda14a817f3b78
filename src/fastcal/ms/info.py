"""Measurement Set metadata: :func:`open_ms` -> :class:`MSInfo`.

`open_ms` reads the subtables (ANTENNA, SPECTRAL_WINDOW, POLARIZATION, DATA_DESCRIPTION,
FIELD, STATE, OBSERVATION) and the small scalar *index columns* of the main table (TIME,
ANTENNA1/2, DATA_DESC_ID, FIELD_ID, SCAN_NUMBER, STATE_ID, OBSERVATION_ID). It never touches
visibilities, so it stays fast on a multi-GB MS (about 36 bytes read per row). The index columns
are kept in :attr:`MSInfo.index` so that selections (:mod:`fastcal.ms.select`) and
:func:`~fastcal.ms.read.read_chunks` work without reading them again.

Reading those columns costs ~50 ms per column per million rows (casacore reads every bucket of
the storage-manager file once per column), so :func:`open_ms` keeps the last few MSInfo of the
process and returns them again while the files they were read from are unchanged (FLAG_ROW is
re-read on every call); see the in-process cache section below and docs/ms-access.md.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fnmatch
import hashlib
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import casacore.tables as ct
import numpy as np

from fastcal.errors import (
    MissingColumnError,
    MSError,
    MSNotFoundError,
    NotAnMSError,
    UnsupportedError,
)

__all__ = [
    "AntennaInfo",
    "DataDescInfo",
    "FieldInfo",
    "IndexColumns",
    "MSInfo",
    "PolInfo",
    "ScanInfo",
    "SpwInfo",
    "StateInfo",
    "CORR_NAMES",
    "bump_write_generation",
    "clear_cache",
    "disk_signature",
    "ms_lock",
    "REQUIRED_COLUMNS",
    "REQUIRED_SUBTABLES",
    "format_mjd_s",
    "open_ms",
    "require_parallel_hands",
]

logger = logging.getLogger(__name__)

#: casacore Stokes enum (measures/Measures/Stokes.h) -> name, for POLARIZATION.CORR_TYPE.
CORR_NAMES: dict[int, str] = {
    1: "I", 2: "Q", 3: "U", 4: "V",
    5: "RR", 6: "RL", 7: "LR", 8: "LL",
    9: "XX", 10: "XY", 11: "YX", 12: "YY",
    13: "RX", 14: "RY", 15: "LX", 16: "LY", 17: "XR", 18: "XL", 19: "YR", 20: "YL",
    21: "PP", 22: "PQ", 23: "QP", 24: "QQ",
}  # fmt: skip
_LINEAR = (9, 10, 11, 12)
_CIRCULAR = (5, 6, 7, 8)
_PARALLEL = (5, 8, 9, 12)  # RR, LL, XX, YY

#: Main-table columns fastcal needs in every MS (visibility columns are checked when read).
REQUIRED_COLUMNS: tuple[str, ...] = (
    "TIME", "ANTENNA1", "ANTENNA2", "DATA_DESC_ID", "FIELD_ID", "SCAN_NUMBER", "STATE_ID",
    "OBSERVATION_ID", "FLAG", "FLAG_ROW", "WEIGHT",
)  # fmt: skip
#: Subtables fastcal needs (STATE, OBSERVATION and SYSCAL are optional).
REQUIRED_SUBTABLES: tuple[str, ...] = (
    "ANTENNA", "DATA_DESCRIPTION", "FIELD", "POLARIZATION", "SPECTRAL_WINDOW",
)  # fmt: skip
#: Subtables open_ms reads.
_READ_SUBTABLES: frozenset[str] = frozenset(REQUIRED_SUBTABLES + ("STATE", "OBSERVATION", "SYSCAL"))
#: Main-table columns that hold visibilities.
VIS_COLUMNS: tuple[str, ...] = ("DATA", "MODEL_DATA", "CORRECTED_DATA")

_MJD_EPOCH = _dt.datetime(1858, 11, 17)


def _frozen_array(a: Any, dtype: Any) -> np.ndarray:
    out = np.array(a, dtype=dtype)
    out.setflags(write=False)
    return out


def format_mjd_s(t: float, *, date: bool = True, digits: int = 1) -> str:
    """Format a time in MJD seconds (UTC) as ``YYYY/MM/DD/hh:mm:ss.s`` (CASA style).

    Parameters
    ----------
    t : float
        MJD seconds.
    date : bool
        Include the ``YYYY/MM/DD/`` part.
    digits : int
        Decimal digits of the seconds.
    """
    whole = np.floor(t)
    frac = round(float(t - whole), digits)
    if frac >= 1.0:
        whole, frac = whole + 1, 0.0
    d = _MJD_EPOCH + _dt.timedelta(seconds=float(whole))
    sec = f"{d.second + frac:0{3 + digits if digits else 2}.{digits}f}"
    hms = f"{d.hour:02d}:{d.minute:02d}:{sec}"
    return f"{d.year:04d}/{d.month:02d}/{d.day:02d}/{hms}" if date else hms


# --------------------------------------------------------------------------- table access

_LOCKS: dict[str, threading.RLock] = {}
_GENERATION: dict[str, int] = {}
_LOCKS_GUARD = threading.Lock()


def ms_lock(path: str | os.PathLike) -> threading.RLock:
    """The process-wide lock that serialises casacore calls (reads and writes) on `path`."""
    key = os.path.realpath(path)
    with _LOCKS_GUARD:
        lock = _LOCKS.get(key)
        if lock is None:
            lock = _LOCKS[key] = threading.RLock()
        return lock


def bump_write_generation(path: str | os.PathLike) -> None:
    """Record that this process wrote into the main table of `path` (see :func:`disk_signature`)."""
    key = os.path.realpath(path)
    with _LOCKS_GUARD:
        _GENERATION[key] = _GENERATION.get(key, 0) + 1


def disk_signature(path: str | os.PathLike) -> tuple:
    """A value that changes whenever the main table of `path` is written.

    It combines this process's write count for the path (writes not yet flushed to disk) with
    the size and modification time of the main-table files (writes by other processes).
    """
    key = os.path.realpath(path)
    with _LOCKS_GUARD:
        gen = _GENERATION.get(key, 0)
    return (gen, _table_files(key))


def _table_files(path: str) -> tuple[tuple[str, int, int], ...]:
    """(name, size, mtime ns) of the ``table.*`` files of a table directory (not table.lock)."""
    files = []
    with os.scandir(path) as it:
        for e in it:
            if e.is_file() and e.name.startswith("table.") and e.name != "table.lock":
                st = e.stat()
                files.append((e.name, st.st_size, st.st_mtime_ns))
    return tuple(sorted(files))


# --------------------------------------------------------------------------- dataclasses


@dataclass(frozen=True, eq=False)
class AntennaInfo:
    """One ANTENNA row. ``position`` is ITRF (m), shape (3,); ``dish_diameter`` in m."""

    id: int
    name: str
    station: str
    position: np.ndarray
    dish_diameter: float


@dataclass(frozen=True, eq=False)
class SpwInfo:
    """One SPECTRAL_WINDOW row.

    Attributes
    ----------
    chan_freq, chan_width : ndarray of float64, shape (num_chan,)
        Channel centres and widths (Hz), in the MS frame (ALMA: TOPO).
    ref_freq, total_bandwidth : float
        REF_FREQUENCY and TOTAL_BANDWIDTH (Hz).
    baseband : int
        BBC_NO (ALMA baseband 1-4), -1 if the column is absent.
    net_sideband : int
        NET_SIDEBAND (1 = USB, -1 = LSB for ALMA; 0 if unknown).
    """

    id: int
    name: str
    num_chan: int
    chan_freq: np.ndarray
    chan_width: np.ndarray
    ref_freq: float
    total_bandwidth: float
    baseband: int
    net_sideband: int

    @property
    def centre_freq(self) -> float:
        """Mean of the channel frequencies (Hz)."""
        return float(self.chan_freq.mean()) if self.num_chan else float("nan")


@dataclass(frozen=True)
class PolInfo:
    """One POLARIZATION row: ``corr_types`` are casacore Stokes codes (XX=9 ... YY=12)."""

    id: int
    corr_types: tuple[int, ...]
    corr_names: tuple[str, ...]

    @property
    def num_corr(self) -> int:
        return len(self.corr_types)

    @property
    def basis(self) -> str | None:
        """``"linear"`` (X/Y), ``"circular"`` (R/L), or None for anything else."""
        if self.corr_types and all(c in _LINEAR for c in self.corr_types):
            return "linear"
        if self.corr_types and all(c in _CIRCULAR for c in self.corr_types):
            return "circular"
        return None


@dataclass(frozen=True)
class DataDescInfo:
    """One DATA_DESCRIPTION row: DATA_DESC_ID -> (spw, polarization setup)."""

    id: int
    spw_id: int
    pol_id: int


@dataclass(frozen=True)
class FieldInfo:
    """One FIELD row; ``ra_rad``, ``dec_rad`` are the PHASE_DIR (rad, polynomial term 0)."""

    id: int
    name: str
    ra_rad: float
    dec_rad: float
    source_id: int


@dataclass(frozen=True)
class StateInfo:
    """One STATE row: ``intents`` are the comma-separated OBS_MODE tokens."""

    id: int
    obs_mode: str
    intents: tuple[str, ...]


@dataclass(frozen=True)
class ScanInfo:
    """One scan (rows with the same OBSERVATION_ID and SCAN_NUMBER).

    ``start`` and ``end`` are the first and last integration mid-points (MJD s, TIME column);
    ``intents`` is the union of the OBS_MODE tokens of its states, in STATE order.
    """

    number: int
    field_ids: tuple[int, ...]
    intents: tuple[str, ...]
    state_ids: tuple[int, ...]
    ddids: tuple[int, ...]
    spw_ids: tuple[int, ...]
    start: float
    end: float
    n_rows: int
    observation_id: int


@dataclass(frozen=True, eq=False)
class IndexColumns:
    """Scalar main-table columns, one entry per row (read-only arrays).

    time : float64[row] (MJD s); flag_row : bool[row]; the others int32[row].
    """

    time: np.ndarray
    antenna1: np.ndarray
    antenna2: np.ndarray
    ddid: np.ndarray
    field_id: np.ndarray
    scan: np.ndarray
    state_id: np.ndarray
    observation_id: np.ndarray
    flag_row: np.ndarray

    @property
    def n_rows(self) -> int:
        return int(self.time.shape[0])

    @cached_property
    def group_runs(self) -> GroupRuns:
        """Runs of rows with one (DATA_DESC_ID, FIELD_ID, SCAN_NUMBER, OBSERVATION_ID) value,
        computed once per MS (:func:`~fastcal.ms.read.read_chunks` groups rows with it)."""
        return GroupRuns.from_index(self)


@dataclass(frozen=True, eq=False)
class GroupRuns:
    """The main table cut into runs of rows with equal (ddid, field, scan, observation) keys.

    Attributes
    ----------
    bounds : int64[n_runs + 1]
        Run ``r`` holds rows ``bounds[r] .. bounds[r + 1] - 1``.
    group : int64[n_runs]
        Group of each run; groups are numbered in lexicographic order of their keys.
    run_order : int64[n_runs]
        Runs sorted by group, then by position (a stable argsort of `group`).
    group_first : int64[n_groups + 1]
        The runs of group ``g`` are ``run_order[group_first[g]:group_first[g + 1]]``.
    time_sorted : bool[n_groups]
        TIME never decreases along the rows of the group, in row order (then every subset
        of its rows is time-ordered too).
    """

    bounds: np.ndarray
    group: np.ndarray
    run_order: np.ndarray
    group_first: np.ndarray
    time_sorted: np.ndarray

    @property
    def n_groups(self) -> int:
        return int(self.group_first.size - 1)

    @staticmethod
    def from_index(index: IndexColumns) -> GroupRuns:
        n = index.n_rows
        keys = (index.ddid, index.field_id, index.scan, index.observation_id)
        change = np.zeros(max(n - 1, 0), dtype=bool)
        for k in keys:
            change |= k[1:] != k[:-1]
        starts = np.concatenate(([0], np.flatnonzero(change) + 1)) if n else np.zeros(0, np.int64)
        bounds = np.append(starts, n).astype(np.int64)
        run_keys = np.stack([k[starts].astype(np.int64) for k in keys], axis=1)
        if n:
            _, group = np.unique(run_keys, axis=0, return_inverse=True)
            group = group.reshape(-1).astype(np.int64)
        else:
            group = np.zeros(0, np.int64)
        run_order = np.argsort(group, kind="stable")
        n_groups = int(group.max()) + 1 if group.size else 0
        group_first = np.concatenate(([0], np.cumsum(np.bincount(group, minlength=n_groups))))
        # time order inside runs: a step back anywhere but at a run boundary
        back = np.diff(index.time) < 0
        back[starts[1:] - 1] = False
        bad_run = np.zeros(starts.size, dtype=bool)
        if back.any():
            bad_run = np.add.reduceat(np.append(back, False), starts) > 0
        # ... and between consecutive runs of the same group
        first_t = index.time[starts] if n else np.zeros(0)
        last_t = index.time[bounds[1:] - 1] if n else np.zeros(0)
        ro = run_order
        same = group[ro[1:]] == group[ro[:-1]]
        step_back = same & (first_t[ro[1:]] < last_t[ro[:-1]])
        time_sorted = np.ones(n_groups, dtype=bool)
        time_sorted[group[bad_run]] = False
        time_sorted[group[ro[1:][step_back]]] = False
        return GroupRuns(bounds, group, run_order, group_first.astype(np.int64), time_sorted)


# --------------------------------------------------------------------------- MSInfo


@dataclass(frozen=True, eq=False)
class MSInfo:
    """Metadata of a Measurement Set (see :func:`open_ms`).

    Attributes
    ----------
    path : str
        Absolute path of the MS.
    n_rows : int
        Rows in the main table.
    antennas, spws, pols, ddescs, fields, states, scans : tuple
        One small dataclass per subtable row (per scan for ``scans``), ordered by id.
    columns : frozenset of str
        Main-table column names.
    has_syscal : bool
        A SYSCAL subtable with at least one row exists.
    has_weight_spectrum : bool
        WEIGHT_SPECTRUM exists and holds values (its first cell is defined).
    telescope_name : str
        OBSERVATION.TELESCOPE_NAME of the first observation ("" if unknown).
    time_range : (float, float)
        First and last TIME in the main table (MJD s).
    index : IndexColumns
        The scalar index columns of every row.
    signature : tuple
        What the table files looked like when read (see :func:`disk_signature`); readers use
        it to tell whether the cached FLAG_ROW is still current.
    """

    path: str
    n_rows: int
    antennas: tuple[AntennaInfo, ...]
    spws: tuple[SpwInfo, ...]
    pols: tuple[PolInfo, ...]
    ddescs: tuple[DataDescInfo, ...]
    fields: tuple[FieldInfo, ...]
    states: tuple[StateInfo, ...]
    scans: tuple[ScanInfo, ...]
    columns: frozenset[str]
    has_syscal: bool
    has_weight_spectrum: bool
    telescope_name: str
    time_range: tuple[float, float]
    index: IndexColumns = field(repr=False)
    signature: tuple = field(default=(), repr=False)

    # ---- names and lookups
    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    @property
    def antenna_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.antennas)

    @property
    def intents(self) -> tuple[str, ...]:
        """All OBS_MODE tokens used by some scan, sorted."""
        return tuple(sorted({i for s in self.scans for i in s.intents}))

    @property
    def vis_columns(self) -> tuple[str, ...]:
        """The visibility columns present (subset of DATA, MODEL_DATA, CORRECTED_DATA)."""
        return tuple(c for c in VIS_COLUMNS if c in self.columns)

    def field_ids(self, name: str) -> tuple[int, ...]:
        """Ids of the fields named `name` (exact), else matching it as a glob; may be empty."""
        exact = tuple(f.id for f in self.fields if f.name == name)
        if exact:
            return exact
        return tuple(f.id for f in self.fields if fnmatch.fnmatchcase(f.name, name))

    def antenna_id(self, name: str) -> int:
        """Id of the antenna called `name`; raises KeyError naming the valid names."""
        for a in self.antennas:
            if a.name == name:
                return a.id
        raise KeyError(
            f"no antenna {name!r} in {self.path}; valid: {', '.join(self.antenna_names)}"
        )

    def ddids_for_spw(self, spw_id: int) -> tuple[int, ...]:
        """DATA_DESC_IDs that point at `spw_id` (usually one)."""
        return tuple(d.id for d in self.ddescs if d.spw_id == spw_id)

    def ddid_for_spw(self, spw_id: int) -> int:
        """The DATA_DESC_ID of `spw_id`; the one with rows if several; -1 if none."""
        ids = self.ddids_for_spw(spw_id)
        used = [d for d in ids if d in self._ddids_with_rows]
        return (used or list(ids) or [-1])[0]

    def pol_for_ddid(self, ddid: int) -> PolInfo:
        return self.pols[self.ddescs[ddid].pol_id]

    def scans_with_intent(self, pattern: str) -> tuple[int, ...]:
        """Scan numbers with an OBS_MODE token matching the glob `pattern`."""
        return tuple(
            s.number for s in self.scans if any(fnmatch.fnmatchcase(i, pattern) for i in s.intents)
        )

    @property
    def _ddids_with_rows(self) -> frozenset[int]:
        return frozenset(d for s in self.scans for d in s.ddids)

    @property
    def spw_roles(self) -> dict[int, str]:
        """Role of each spw: ``"wvr"``, ``"chavg"``, ``"tsys"``, ``"science"`` or ``"unused"``.

        * wvr: NAME contains ``WVR``, or 4 channels (wvrgcal's default rule);
        * chavg: NAME contains ``CH_AVG``, or a single channel;
        * unused: no rows in the main table;
        * tsys: rows only in scans whose intents include ``CALIBRATE_ATMOSPHERE*``;
        * science: everything else (a TDM spw used for both Tsys and science is "science").
        """
        atm: dict[int, bool] = {}
        for s in self.scans:
            is_atm = any(i.startswith("CALIBRATE_ATMOSPHERE") for i in s.intents)
            for spw in s.spw_ids:
                atm[spw] = atm.get(spw, True) and is_atm
        roles = {}
        for spw in self.spws:
            up = spw.name.upper()
            if "WVR" in up or spw.num_chan == 4:
                roles[spw.id] = "wvr"
            elif "CH_AVG" in up or spw.num_chan == 1:
                roles[spw.id] = "chavg"
            elif spw.id not in atm:
                roles[spw.id] = "unused"
            elif atm[spw.id]:
                roles[spw.id] = "tsys"
            else:
                roles[spw.id] = "science"
        return roles

    def spws_with_role(self, role: str) -> tuple[int, ...]:
        """Spw ids whose :attr:`spw_roles` entry is `role`."""
        return tuple(k for k, v in self.spw_roles.items() if v == role)

    # ---- printing
    def summary(self) -> str:
        """A listobs-like text summary: observation, scans, fields, spws, antennas."""
        return _summary(self)

    def __str__(self) -> str:
        return self.summary()


def require_parallel_hands(pol: PolInfo) -> tuple[int, ...]:
    """Indices (into the correlation axis) of the parallel hands XX/YY or RR/LL.

    Call this from any feature that needs linear or circular correlation products.

    Raises
    ------
    UnsupportedError
        If the setup has no correlations, contains anything other than linear (XX, XY, YX, YY)
        or circular (RR, RL, LR, LL) products (e.g. Stokes I), mixes the two, or has no
        parallel hand.
    """
    valid = "linear (XX, XY, YX, YY) or circular (RR, RL, LR, LL) products"
    if not pol.corr_types:
        raise UnsupportedError(f"polarization setup {pol.id} has no correlations; valid: {valid}")
    if pol.basis is None:
        raise UnsupportedError(
            f"polarization setup {pol.id} has correlations ({', '.join(pol.corr_names)}), "
            f"which fastcal does not support; valid: {valid}, not mixed"
        )
    idx = tuple(i for i, c in enumerate(pol.corr_types) if c in _PARALLEL)
    if not idx:
        raise UnsupportedError(
            f"polarization setup {pol.id} ({', '.join(pol.corr_names)}) has no parallel-hand "
            f"correlation; valid: at least one of XX, YY (or RR, LL)"
        )
    return idx


# --------------------------------------------------------------------------- open_ms


def open_ms(ms: str | os.PathLike | MSInfo) -> MSInfo:
    """Read the metadata of a Measurement Set.

    Parameters
    ----------
    ms : str, path-like or MSInfo
        Path of the MS; an :class:`MSInfo` is returned unchanged.

    Returns
    -------
    MSInfo

    Raises
    ------
    MSNotFoundError
        If the path does not exist.
    NotAnMSError
        If the path is a file, a directory that is not a casacore table, or a table that is not
        a Measurement Set (e.g. a calibration table).
    MissingColumnError
        If a column in :data:`REQUIRED_COLUMNS` or a subtable in :data:`REQUIRED_SUBTABLES`
        is missing.

    Notes
    -----
    The result is kept in the process: opening the same path again, while the main table's
    ``table.dat``/``table.info``, the storage-manager files of the index columns and the
    subtables read are unchanged (size, mtime), costs one FLAG_ROW read (~0.05 s per million
    rows instead of ~0.45 s). :func:`clear_cache` forgets the kept results. With the
    environment variable ``FASTCAL_INDEX_CACHE`` set to a directory, the index columns are also
    saved there, so that the first call of another process costs about as little.
    """
    if isinstance(ms, MSInfo):
        return ms
    cached = _cache_lookup(os.path.abspath(os.fspath(ms)))
    if cached is not None:
        return cached
    path = _check_is_ms(ms)
    signature = disk_signature(path)
    try:
        with ms_lock(path), ct.table(path, ack=False) as t:
            index_files = _index_files(t)
            columns = frozenset(t.colnames())
            missing = [c for c in REQUIRED_COLUMNS if c not in columns]
            if missing:
                raise MissingColumnError(
                    f"{path}: required main-table column(s) {', '.join(missing)} missing; "
                    f"a Measurement Set needs {', '.join(REQUIRED_COLUMNS)}"
                )
            subtables = _subtable_paths(t, path)
            subtable_paths = tuple(subtables[k] for k in sorted(subtables) if k in _READ_SUBTABLES)
            cache_key = None  # not cached if the files holding the index are unknown
            if index_files is not None:
                try:
                    cache_key = _cache_key(path, index_files, subtable_paths)  # before reading
                except OSError:
                    pass
            index = _disk_load(path, cache_key, t) if cache_key is not None else None
            from_disk = index is not None
            if index is None:
                index = _read_index(t)
            has_wtsp = (
                "WEIGHT_SPECTRUM" in columns
                and t.nrows() > 0
                and bool(t.iscelldefined("WEIGHT_SPECTRUM", 0))
            )
    except RuntimeError as exc:  # casacore I/O problems
        raise MSError(f"{path}: casacore could not read the table: {exc}") from exc
    antennas = _read_antennas(subtables["ANTENNA"])
    spws = _read_spws(subtables["SPECTRAL_WINDOW"])
    pols = _read_pols(subtables["POLARIZATION"])
    ddescs = _read_ddescs(subtables["DATA_DESCRIPTION"])
    fields = _read_fields(subtables["FIELD"])
    states = _read_states(subtables.get("STATE"))
    telescope = _read_telescope(subtables.get("OBSERVATION"))
    has_syscal = "SYSCAL" in subtables and _nrows(subtables["SYSCAL"]) > 0
    _check_ids(path, index, antennas, ddescs, fields, spws, pols)
    scans = _scan_table(index, states, ddescs)
    trange = (float(index.time.min()), float(index.time.max())) if index.n_rows else (0.0, 0.0)
    info = MSInfo(
        path=path,
        n_rows=index.n_rows,
        antennas=antennas,
        spws=spws,
        pols=pols,
        ddescs=ddescs,
        fields=fields,
        states=states,
        scans=scans,
        columns=columns,
        has_syscal=has_syscal,
        has_weight_spectrum=has_wtsp,
        telescope_name=telescope,
        time_range=trange,
        index=index,
        signature=signature,
    )
    logger.debug("opened %s: %d rows, %d scans, %d spws", path, info.n_rows, len(scans), len(spws))
    if cache_key is not None:
        _cache_store(info, cache_key, index_files, subtable_paths)
        if not from_disk:
            _disk_store(path, cache_key, index)
    return info


# --------------------------------------------------------------------------- in-process cache
#
# Reading the index columns is most of open_ms: casacore's StandardStMan reads every bucket of
# its file once per column (two syscalls per 3.5 kB bucket: ~50 ms per column per million rows,
# even with a warm page cache). A pipeline opens the same MS many times, so the last few MSInfo
# are kept, keyed by absolute path. An entry stays valid while none of these files changed
# (name, size, mtime): table.dat and table.info of the main table (columns, keywords, row
# count), the files of the storage managers holding the index columns, and the table files of
# the subtables read. Writing CORRECTED_DATA, MODEL_DATA, WEIGHT or FLAG therefore keeps the
# entry; writing FLAG_ROW (same storage manager as TIME in a standard MS) drops it. A hit still re-reads
# FLAG_ROW (one column, ~50 ms per million rows), so ``info.index.flag_row`` is current even
# for writes not flushed yet, and gets the current :func:`disk_signature`.

_CACHE_SIZE = 4
_CACHE_BYTES = 2**30
_INDEX_ROW_BYTES = 37  # TIME 8 bytes, seven int32 columns, FLAG_ROW 1
_CACHE: OrderedDict[str, _CacheEntry] = OrderedDict()
_CACHE_GUARD = threading.Lock()
_INDEX_COLUMN_NAMES = (
    "TIME", "ANTENNA1", "ANTENNA2", "DATA_DESC_ID", "FIELD_ID", "SCAN_NUMBER", "STATE_ID",
    "OBSERVATION_ID", "FLAG_ROW",
)  # fmt: skip


@dataclass(frozen=True, eq=False)
class _CacheEntry:
    info: MSInfo
    index_files: tuple[str, ...]  # file prefixes of the storage managers of the index columns
    subtables: tuple[str, ...]
    key: tuple


def _index_files(t: Any) -> tuple[str, ...] | None:
    """``table.fN`` prefixes of the storage managers holding the index columns.

    None if unknown, e.g. for a reference or concatenated table, whose data live in other
    tables (such an MS is not cached).
    """
    try:
        dminfo = t.getdminfo()
    except RuntimeError:
        return None
    prefixes, found = [], set()
    for dm in dminfo.values():
        cols = set(dm.get("COLUMNS", ())) & set(_INDEX_COLUMN_NAMES)
        if cols and "SEQNR" in dm:
            prefixes.append(f"table.f{int(dm['SEQNR'])}")
            found |= cols
    return tuple(prefixes) if found == set(_INDEX_COLUMN_NAMES) else None


def _cache_key(path: str, index_files: tuple[str, ...], subtables: tuple[str, ...]) -> tuple:
    files = tuple(
        f for f in _table_files(path)
        if f[0] in ("table.dat", "table.info")
        or any(f[0] == p or f[0] == p + "i" or f[0].startswith(p + "_") for p in index_files)
    )  # fmt: skip
    return (files, tuple(_table_files(s) for s in subtables))


def _cache_store(
    info: MSInfo, key: tuple, index_files: tuple[str, ...], subtables: tuple[str, ...]
) -> None:
    with _CACHE_GUARD:
        _CACHE[info.path] = _CacheEntry(info, index_files, subtables, key)
        _CACHE.move_to_end(info.path)
        # at most _CACHE_SIZE entries and ~_CACHE_BYTES of index columns; the newest stays
        while len(_CACHE) > 1 and (
            len(_CACHE) > _CACHE_SIZE
            or sum(e.info.n_rows for e in _CACHE.values()) * _INDEX_ROW_BYTES > _CACHE_BYTES
        ):
            _CACHE.popitem(last=False)


# ---- optional copy on disk, for the first open_ms of a process
#
# With FASTCAL_INDEX_CACHE set to a directory, open_ms also saves the index columns but
# FLAG_ROW there (one .npz per MS, 33 bytes per row, named by a hash of the MS path) with the
# cache key, and a process that opens the MS for the first time loads them from there when the
# key still matches the files, reading only FLAG_ROW from the MS. Nothing is ever deleted from
# the directory; a stale file is overwritten by the next full read.

#: Environment variable naming the directory of the on-disk index cache (unset: no disk cache).
INDEX_CACHE_ENV = "FASTCAL_INDEX_CACHE"
_DISK_COLUMNS = (
    "time", "antenna1", "antenna2", "ddid", "field_id", "scan", "state_id", "observation_id",
)  # fmt: skip


def _disk_file(path: str) -> str | None:
    folder = os.environ.get(INDEX_CACHE_ENV)
    if not folder:
        return None
    return os.path.join(folder, hashlib.sha1(path.encode()).hexdigest()[:24] + ".npz")


def _disk_load(path: str, key: tuple, t: Any) -> IndexColumns | None:
    """The index columns from the disk cache if its key matches `key`; FLAG_ROW from `t`."""
    file = _disk_file(path)
    if file is None or not os.path.exists(file):
        return None
    n = t.nrows()
    try:
        with np.load(file, allow_pickle=False) as z:
            if str(z["key"]) != repr((path, n, key)):
                return None
            cols = {c: z[c] for c in _DISK_COLUMNS}
    except (OSError, KeyError, ValueError, EOFError) as exc:  # unreadable: read the MS
        logger.debug("index cache %s ignored: %s", file, exc)
        return None
    if any(a.shape != (n,) for a in cols.values()):
        return None
    for a in cols.values():
        a.setflags(write=False)
    flag_row = _getcol(t, "FLAG_ROW", np.bool_, n)
    flag_row.setflags(write=False)
    logger.debug("open_ms %s: index columns from %s", path, file)
    return IndexColumns(**cols, flag_row=flag_row)


def _disk_store(path: str, key: tuple, index: IndexColumns) -> None:
    file = _disk_file(path)
    if file is None:
        return
    tmp = f"{file}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        os.makedirs(os.path.dirname(file), exist_ok=True)
        with open(tmp, "wb") as fh:
            np.savez(fh, key=np.array(repr((path, index.n_rows, key))),
                     **{c: getattr(index, c) for c in _DISK_COLUMNS})  # fmt: skip
        os.replace(tmp, file)  # atomic: readers see the old file or the new one
    except OSError as exc:  # a cache: never fail open_ms because of it
        logger.debug("index cache %s not written: %s", file, exc)
        with contextlib.suppress(OSError):
            os.remove(tmp)


def clear_cache() -> None:
    """Forget the MSInfo kept by :func:`open_ms` (the next call reads the MS again)."""
    with _CACHE_GUARD:
        _CACHE.clear()


def _cache_lookup(path: str) -> MSInfo | None:
    """The cached MSInfo of `path`, FLAG_ROW re-read, or None if absent or stale."""
    with _CACHE_GUARD:
        entry = _CACHE.get(path)
    if entry is None:
        return None
    try:
        signature = disk_signature(path)  # before FLAG_ROW is read: errs on the safe side
        if _cache_key(path, entry.index_files, entry.subtables) != entry.key:
            return None
        with ms_lock(path), ct.table(path, ack=False) as t:
            if t.nrows() != entry.info.n_rows:
                return None
            flag_row = _getcol(t, "FLAG_ROW", np.bool_, t.nrows())
            has_wtsp = (
                "WEIGHT_SPECTRUM" in entry.info.columns
                and t.nrows() > 0
                and bool(t.iscelldefined("WEIGHT_SPECTRUM", 0))
            )
    except (OSError, RuntimeError):  # gone or unreadable: the full open_ms reports it
        return None
    info = entry.info
    index = info.index
    if not np.array_equal(flag_row, index.flag_row):
        flag_row.setflags(write=False)
        runs = index.__dict__.get("group_runs")
        index = replace(index, flag_row=flag_row)
        if runs is not None:  # depends on the other columns only
            index.__dict__["group_runs"] = runs
    info = replace(info, index=index, signature=signature, has_weight_spectrum=has_wtsp)
    with _CACHE_GUARD:
        if path in _CACHE:
            _CACHE[path] = replace(entry, info=info)
            _CACHE.move_to_end(path)
    logger.debug("open_ms %s: cached metadata (FLAG_ROW re-read)", path)
    return info


def _check_is_ms(ms: str | os.PathLike) -> str:
    path = os.path.abspath(os.fspath(ms))
    if not os.path.exists(path):
        raise MSNotFoundError(f"Measurement Set {path} does not exist")
    if not os.path.isdir(path):
        raise NotAnMSError(f"{path} is a file, not a Measurement Set (a casacore table directory)")
    if not os.path.exists(os.path.join(path, "table.dat")) or not ct.tableexists(path):
        raise NotAnMSError(
            f"{path} is a directory but not a casacore table (no valid table.dat); "
            f"expected a Measurement Set"
        )
    try:
        tinfo = ct.tableinfo(path)
        with ct.table(path, ack=False) as t:
            keywords = set(t.fieldnames())
    except RuntimeError as exc:
        raise NotAnMSError(f"{path}: casacore cannot open it as a table ({exc})") from exc
    ttype = tinfo.get("type", "")
    if ttype == "Measurement Set":
        return path
    if ttype == "" and {"ANTENNA", "SPECTRAL_WINDOW"} <= keywords:
        return path  # some writers leave the type empty; the subtables say it is an MS
    sub = tinfo.get("subType", "")
    what = f"type {ttype!r}" + (f" (subType {sub!r})" if sub else "")
    hint = " - a calibration table, not visibilities" if ttype == "Calibration" else ""
    raise NotAnMSError(
        f"{path} is a casacore table of {what}{hint}; expected a table of type 'Measurement Set'"
    )


def _subtable_paths(t: Any, path: str) -> dict[str, str]:
    out = {}
    for key in t.fieldnames():
        val = t.getkeyword(key)
        if isinstance(val, str) and val.startswith("Table: "):
            out[key] = val[len("Table: ") :]
    for name in REQUIRED_SUBTABLES + ("STATE", "OBSERVATION", "SYSCAL"):
        if name not in out and ct.tableexists(os.path.join(path, name)):
            out[name] = os.path.join(path, name)
    missing = [s for s in REQUIRED_SUBTABLES if s not in out or not ct.tableexists(out[s])]
    if missing:
        raise MissingColumnError(
            f"{path}: required subtable(s) {', '.join(missing)} missing; a Measurement Set "
            f"needs {', '.join(REQUIRED_SUBTABLES)}"
        )
    return out


def _getcol(t: Any, name: str, dtype: Any, nrow: int) -> np.ndarray:
    """Scalar column `name` as a new array of `dtype` (getcolnp into it when the types match)."""
    out = np.empty(nrow, dtype=dtype)
    if nrow:
        try:
            t.getcolnp(name, out)
        except (RuntimeError, TypeError, ValueError):  # stored with another type: convert
            out[:] = t.getcol(name)
    return out


_INDEX_BLOCK_ROWS = 16384


def _read_index(t: Any) -> IndexColumns:
    """The index columns, read block by block (all columns of a row range in turn): the
    scalar columns share StandardStMan buckets, so this visits each bucket while it is hot
    instead of streaming the whole storage file once per column (0.47 -> 0.37 s for 0.9 M
    rows measured here)."""
    n = t.nrows()
    spec = (("time", "TIME", np.float64), ("antenna1", "ANTENNA1", np.int32),
            ("antenna2", "ANTENNA2", np.int32), ("ddid", "DATA_DESC_ID", np.int32),
            ("field_id", "FIELD_ID", np.int32), ("scan", "SCAN_NUMBER", np.int32),
            ("state_id", "STATE_ID", np.int32), ("observation_id", "OBSERVATION_ID", np.int32),
            ("flag_row", "FLAG_ROW", np.bool_))
    out = {key: np.empty(n, dtype) for key, _, dtype in spec}
    converted = set()
    for r0 in range(0, n, _INDEX_BLOCK_ROWS):
        m = min(_INDEX_BLOCK_ROWS, n - r0)
        for key, name, _ in spec:
            if name in converted:
                continue
            try:
                t.getcolnp(name, out[key][r0:r0 + m], r0, m)
            except (RuntimeError, TypeError, ValueError):  # stored with another type: convert
                out[key][:] = t.getcol(name)
                converted.add(name)
    for a in out.values():
        a.setflags(write=False)
    return IndexColumns(**out)


def _nrows(path: str) -> int:
    with ct.table(path, ack=False) as t:
        return t.nrows()


def _col_or(t: Any, name: str, default: Any) -> Any:
    return t.getcol(name) if name in t.colnames() and t.nrows() else default


def _read_antennas(path: str) -> tuple[AntennaInfo, ...]:
    with ct.table(path, ack=False) as t:
        n = t.nrows()
        names = _col_or(t, "NAME", [f"ANT{i}" for i in range(n)])
        stations = _col_or(t, "STATION", [""] * n)
        pos = np.asarray(_col_or(t, "POSITION", np.zeros((n, 3))), dtype=np.float64)
        diam = np.asarray(_col_or(t, "DISH_DIAMETER", np.zeros(n)), dtype=np.float64)
    return tuple(
        AntennaInfo(i, str(names[i]), str(stations[i]), _frozen_array(pos[i], np.float64),
                    float(diam[i]))
        for i in range(n)
    )  # fmt: skip


def _read_spws(path: str) -> tuple[SpwInfo, ...]:
    out = []
    with ct.table(path, ack=False) as t:
        n = t.nrows()
        names = _col_or(t, "NAME", [""] * n)
        nchan = _col_or(t, "NUM_CHAN", np.zeros(n, int))
        ref = _col_or(t, "REF_FREQUENCY", np.zeros(n))
        tbw = _col_or(t, "TOTAL_BANDWIDTH", np.zeros(n))
        bbc = _col_or(t, "BBC_NO", np.full(n, -1))
        side = _col_or(t, "NET_SIDEBAND", np.zeros(n, int))
        for i in range(n):
            freq = t.getcell("CHAN_FREQ", i) if t.iscelldefined("CHAN_FREQ", i) else []
            width = t.getcell("CHAN_WIDTH", i) if t.iscelldefined("CHAN_WIDTH", i) else []
            out.append(
                SpwInfo(
                    id=i,
                    name=str(names[i]),
                    num_chan=int(nchan[i]),
                    chan_freq=_frozen_array(freq, np.float64),
                    chan_width=_frozen_array(width, np.float64),
                    ref_freq=float(ref[i]),
                    total_bandwidth=float(tbw[i]),
                    baseband=int(bbc[i]),
                    net_sideband=int(side[i]),
                )
            )
    return tuple(out)


def _read_pols(path: str) -> tuple[PolInfo, ...]:
    out = []
    with ct.table(path, ack=False) as t:
        for i in range(t.nrows()):
            types = t.getcell("CORR_TYPE", i) if t.iscelldefined("CORR_TYPE", i) else []
            types = tuple(int(c) for c in np.atleast_1d(types))
            out.append(PolInfo(i, types, tuple(CORR_NAMES.get(c, f"?{c}") for c in types)))
    return tuple(out)


def _read_ddescs(path: str) -> tuple[DataDescInfo, ...]:
    with ct.table(path, ack=False) as t:
        if not t.nrows():
            return ()
        spw = t.getcol("SPECTRAL_WINDOW_ID")
        pol = t.getcol("POLARIZATION_ID")
    return tuple(
        DataDescInfo(i, int(s), int(p)) for i, (s, p) in enumerate(zip(spw, pol, strict=True))
    )


def _read_fields(path: str) -> tuple[FieldInfo, ...]:
    out = []
    with ct.table(path, ack=False) as t:
        n = t.nrows()
        names = _col_or(t, "NAME", [""] * n)
        src = _col_or(t, "SOURCE_ID", np.full(n, -1))
        for i in range(n):
            d = np.asarray(t.getcell("PHASE_DIR", i), dtype=np.float64).reshape(-1, 2)
            out.append(FieldInfo(i, str(names[i]), float(d[0, 0]), float(d[0, 1]), int(src[i])))
    return tuple(out)


def _read_states(path: str | None) -> tuple[StateInfo, ...]:
    if path is None:
        return ()
    with ct.table(path, ack=False) as t:
        modes = _col_or(t, "OBS_MODE", [])
    return tuple(
        StateInfo(i, str(m), tuple(tok.strip() for tok in str(m).split(",") if tok.strip()))
        for i, m in enumerate(modes)
    )


def _read_telescope(path: str | None) -> str:
    if path is None:
        return ""
    with ct.table(path, ack=False) as t:
        names = _col_or(t, "TELESCOPE_NAME", [""])
    return str(names[0]) if len(names) else ""


def _check_ids(path, index, antennas, ddescs, fields, spws, pols) -> None:
    """Index columns must point at existing subtable rows (a corrupt MS fails here, clearly)."""
    checks = [
        ("ANTENNA1", index.antenna1, len(antennas), "ANTENNA"),
        ("ANTENNA2", index.antenna2, len(antennas), "ANTENNA"),
        ("DATA_DESC_ID", index.ddid, len(ddescs), "DATA_DESCRIPTION"),
        ("FIELD_ID", index.field_id, len(fields), "FIELD"),
    ]
    for col, values, n, sub in checks:
        if values.size and (values.min() < 0 or values.max() >= n):
            raise MSError(
                f"{path}: {col} has values {values.min()}..{values.max()} but {sub} has {n} rows"
            )
    for d in ddescs:
        if not (0 <= d.spw_id < len(spws) and 0 <= d.pol_id < len(pols)):
            raise MSError(
                f"{path}: DATA_DESCRIPTION row {d.id} points at spw {d.spw_id} / polarization "
                f"{d.pol_id}, but there are {len(spws)} spws and {len(pols)} polarization setups"
            )


def _scan_table(
    index: IndexColumns, states: tuple[StateInfo, ...], ddescs: tuple[DataDescInfo, ...]
) -> tuple[ScanInfo, ...]:
    """Summarise rows per (OBSERVATION_ID, SCAN_NUMBER) from runs of identical index keys.

    O(n_rows) in NumPy: rows are cut into runs where none of (obs, scan, field, state, ddid)
    changes, and the runs (few, for a sorted MS) are aggregated per scan.
    """
    n = index.n_rows
    if n == 0:
        return ()
    keys = (index.observation_id, index.scan, index.field_id, index.state_id, index.ddid)
    change = np.zeros(n, dtype=bool)
    change[0] = True
    for k in keys:
        change[1:] |= k[1:] != k[:-1]
    starts = np.flatnonzero(change)
    counts = np.diff(np.append(starts, n))
    tmin = np.minimum.reduceat(index.time, starts)
    tmax = np.maximum.reduceat(index.time, starts)
    run = {
        name: k[starts].astype(np.int64)
        for name, k in zip(("obs", "scan", "field", "state", "ddid"), keys, strict=True)
    }
    scan_key = np.stack([run["obs"], run["scan"]], axis=1)
    uniq, inv = np.unique(scan_key, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    n_rows = np.bincount(inv, weights=counts).astype(np.int64)
    start = np.full(len(uniq), np.inf)
    end = np.full(len(uniq), -np.inf)
    np.minimum.at(start, inv, tmin)
    np.maximum.at(end, inv, tmax)

    def members(values: np.ndarray) -> list[tuple[int, ...]]:
        pairs = np.unique(np.stack([inv, values], axis=1), axis=0)
        out: list[list[int]] = [[] for _ in range(len(uniq))]
        for s, v in pairs:
            out[s].append(int(v))
        return [tuple(o) for o in out]

    fields_of, states_of, ddids_of = (
        members(run["field"]),
        members(run["state"]),
        members(run["ddid"]),
    )
    scans = []
    for i, (obs, number) in enumerate(uniq):
        intents: list[str] = []
        for s in states_of[i]:
            if 0 <= s < len(states):
                intents += [tok for tok in states[s].intents if tok not in intents]
        spw_ids = tuple(sorted({ddescs[d].spw_id for d in ddids_of[i]}))
        scans.append(
            ScanInfo(
                number=int(number),
                field_ids=fields_of[i],
                intents=tuple(intents),
                state_ids=states_of[i],
                ddids=ddids_of[i],
                spw_ids=spw_ids,
                start=float(start[i]),
                end=float(end[i]),
                n_rows=int(n_rows[i]),
                observation_id=int(obs),
            )
        )
    scans.sort(key=lambda s: (s.start, s.observation_id, s.number))
    return tuple(scans)


# --------------------------------------------------------------------------- summary


def _fmt_ra(rad: float) -> str:
    h = (np.degrees(rad) / 15.0) % 24.0
    hh, rem = divmod(h * 3600.0, 3600.0)
    mm, ss = divmod(rem, 60.0)
    return f"{int(hh):02d}:{int(mm):02d}:{ss:07.4f}"


def _fmt_dec(rad: float) -> str:
    d = np.degrees(rad)
    sign = "-" if d < 0 else "+"
    dd, rem = divmod(abs(d) * 3600.0, 3600.0)
    mm, ss = divmod(rem, 60.0)
    return f"{sign}{int(dd):02d}.{int(mm):02d}.{ss:06.3f}"


def _ids(values: tuple[int, ...]) -> str:
    return "[" + ",".join(str(v) for v in values) + "]"


def _summary(info: MSInfo) -> str:
    t0, t1 = info.time_range
    fw = max(
        [5]
        + [len(f.name) for f in info.fields]
        + [len(",".join(info.fields[f].name for f in s.field_ids)) for s in info.scans]
    )
    lines = [
        f"MeasurementSet: {info.path}",
        f"  Telescope: {info.telescope_name or '?'}   Rows: {info.n_rows}   "
        f"Data columns: {', '.join(info.vis_columns) or 'none'}   "
        f"WEIGHT_SPECTRUM: {'yes' if info.has_weight_spectrum else 'no'}   "
        f"SYSCAL: {'yes' if info.has_syscal else 'no'}",
        f"  Observed from {format_mjd_s(t0)} to {format_mjd_s(t1)} (UTC), {t1 - t0:.1f} s",
        "",
        f"Scans: {len(info.scans)}",
        f"  {'Scan':>4} {'Obs':>3}  {'Start (UTC)':<21} {'End':<10} {'Field':<{fw}} "
        f"{'nRows':>8}  {'SpwIds':<14} Intents",
    ]
    for s in info.scans:
        fields = ",".join(info.fields[f].name for f in s.field_ids)
        lines.append(
            f"  {s.number:>4} {s.observation_id:>3}  {format_mjd_s(s.start):<21} "
            f"{format_mjd_s(s.end, date=False):<10} {fields:<{fw}} {s.n_rows:>8}  "
            f"{_ids(s.spw_ids):<14} {','.join(s.intents)}"
        )
    rows_per_field = np.bincount(info.index.field_id, minlength=len(info.fields))
    lines += ["", f"Fields: {len(info.fields)}",
              f"  {'ID':>3} {'Name':<{fw}} {'RA':>13} {'Decl':>14} {'SrcId':>5} {'nRows':>8}"]  # fmt: skip
    for f in info.fields:
        lines.append(
            f"  {f.id:>3} {f.name:<{fw}} {_fmt_ra(f.ra_rad):>13} {_fmt_dec(f.dec_rad):>14} "
            f"{f.source_id:>5} {int(rows_per_field[f.id]):>8}"
        )
    roles = info.spw_roles
    corrs = {d.spw_id: " ".join(info.pols[d.pol_id].corr_names) for d in info.ddescs}
    nw = max([4] + [len(s.name) for s in info.spws])
    lines += ["", f"Spectral windows: {len(info.spws)}",
              f"  {'ID':>3} {'Name':<{nw}} {'#Chan':>6} {'Ch0(MHz)':>12} {'ChWid(kHz)':>11} "
              f"{'TotBW(kHz)':>11} {'BBC':>3} {'Corrs':<12} Role"]  # fmt: skip
    for s in info.spws:
        ch0 = s.chan_freq[0] / 1e6 if s.num_chan else float("nan")
        wid = s.chan_width[0] / 1e3 if s.num_chan else float("nan")
        lines.append(
            f"  {s.id:>3} {s.name:<{nw}} {s.num_chan:>6} {ch0:>12.4f} {wid:>11.3f} "
            f"{s.total_bandwidth / 1e3:>11.1f} {s.baseband:>3} {corrs.get(s.id, '-'):<12} "
            f"{roles[s.id]}"
        )
    lines += ["", f"Antennas: {len(info.antennas)}",
              f"  {'ID':>3} {'Name':<8} {'Station':<8} {'Diam(m)':>7} "
              f"{'X(m)':>14} {'Y(m)':>14} {'Z(m)':>14}"]  # fmt: skip
    for a in info.antennas:
        x, y, z = a.position
        lines.append(
            f"  {a.id:>3} {a.name:<8} {a.station:<8} {a.dish_diameter:>7.1f} "
            f"{x:>14.3f} {y:>14.3f} {z:>14.3f}"
        )
    return "\n".join(lines)
