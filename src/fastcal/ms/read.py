"""Chunked visibility reading: :func:`read_chunks` -> one :class:`Chunk` per
(DATA_DESC_ID, FIELD_ID, SCAN_NUMBER, OBSERVATION_ID) group, holding dask arrays.

Arrays are in MS order ``(row, chan, corr)`` (python-casacore's layout):

========================== ============ =====================================================
column                     dtype        content
========================== ============ =====================================================
DATA, MODEL_DATA,          complex64    visibilities of the selected channels
CORRECTED_DATA
FLAG                       bool         FLAG | FLAG_ROW (FLAG_ROW as of read_chunks)
WEIGHT                     float32      WEIGHT_SPECTRUM if it holds values, else WEIGHT
                                        broadcast over channels; shape (row, chan, corr);
                                        READ-ONLY blocks (without WEIGHT_SPECTRUM a
                                        zero-copy view with stride 0 along chan)
UVW                        float64      shape (row, 3), metres
========================== ============ =====================================================

Each dask block holds whole timestamps and at most ``chunk_bytes`` of the requested columns
(or ``max_rows`` rows); a timestamp larger than that is one block. A block is read with one
``getcolnp`` / ``getcolslicenp`` per contiguous run of rows into a preallocated array.

Threads. python-casacore 3.8.1 (the installed wheel) never releases the GIL: its extension
modules do not even reference ``PyEval_SaveThread``, a Python thread spinning next to a
``getcolnp`` gets ~10% of its normal rate, and two threads reading two *different* MSs take as
long as one thread reading both. casacore also shares one underlying table object per path
inside a process (a second ``table(path)`` opens no new file), so per-thread table objects
would add neither parallelism nor isolation. All casacore calls for one MS therefore go through
one handle under one lock per path (:func:`~fastcal.ms.info.ms_lock`), which costs nothing today
and stays safe if a future python-casacore drops the GIL. dask threads still help: while one
thread is inside casacore, the others run NumPy and the solvers' Numba kernels, which release
the GIL.

Drivers: the cheapest way to consume chunks is one ``dask.delayed`` task per block that calls
:func:`read_block` and then the kernel (dask costs ~0.3 ms per task); ``Chunk.arrays`` make one
task per block and column.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import casacore.tables as ct
import numpy as np

from fastcal.errors import MissingColumnError, MSError, ParameterError
from fastcal.ms.info import GroupRuns, MSInfo, disk_signature, ms_lock, open_ms
from fastcal.ms.select import Selection, parse_selection, select_rows

if TYPE_CHECKING:  # dask is imported when a Chunk's arrays are built (saves ~0.3 s per process)
    import dask.array as da

__all__ = [
    "Chunk",
    "DEFAULT_CHUNK_BYTES",
    "READABLE_COLUMNS",
    "iter_blocks",
    "ms_lock",
    "read_block",
    "read_chunks",
]

logger = logging.getLogger(__name__)

#: Default upper bound on the bytes of one dask block (all requested columns together).
DEFAULT_CHUNK_BYTES: int = 64 * 2**20

#: Columns :func:`read_chunks` can return -> output dtype.
READABLE_COLUMNS: dict[str, np.dtype] = {
    "DATA": np.dtype(np.complex64),
    "MODEL_DATA": np.dtype(np.complex64),
    "CORRECTED_DATA": np.dtype(np.complex64),
    "FLAG": np.dtype(np.bool_),
    "WEIGHT": np.dtype(np.float32),
    "UVW": np.dtype(np.float64),
}

# --------------------------------------------------------------------------- table access


class _TableHandle:
    """A read-only casacore table for one MS, shared by the read tasks of a read_chunks call.

    Opened on first use and closed when the last chunk or dask graph holding it is garbage
    collected. Lock option ``autonoread``: reading takes no table lock, so an idle fastcal
    session never blocks another process that wants to write the MS.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = ms_lock(path)
        self._table: Any = None

    def table(self) -> Any:
        """The open table; call with :attr:`lock` held."""
        if self._table is None:
            self._table = ct.table(self.path, readonly=True, ack=False, lockoptions="autonoread")
        return self._table

    def close(self) -> None:
        with self.lock:
            if self._table is not None:
                self._table.close()
                self._table = None

    def __reduce__(self) -> tuple:  # pickled (e.g. to a distributed worker) as its path only
        return (_TableHandle, (self.path,))


# --------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class _ChanPlan:
    """How to read the selected channels of a cell of shape (nchan, ncorr).

    kind "all": getcolnp; "slice": getcolslicenp with blc/trc/inc; "index": getcolslicenp of
    the bounding range [lo, hi] then take ``index`` (channel - lo).
    """

    kind: str
    lo: int
    hi: int
    step: int
    index: np.ndarray | None
    ncorr: int

    @property
    def n_read(self) -> int:
        """Channels read from disk per row."""
        return (
            (self.hi - self.lo) // self.step + 1 if self.kind != "index" else self.hi - self.lo + 1
        )

    @staticmethod
    def make(chans: np.ndarray, nchan: int, ncorr: int) -> _ChanPlan:
        if chans.size == nchan:
            return _ChanPlan("all", 0, nchan - 1, 1, None, ncorr)
        step = int(chans[1] - chans[0]) if chans.size > 1 else 1
        if chans.size == 1 or np.all(np.diff(chans) == step):
            return _ChanPlan("slice", int(chans[0]), int(chans[-1]), step, None, ncorr)
        lo, hi = int(chans[0]), int(chans[-1])
        return _ChanPlan("index", lo, hi, 1, chans - lo, ncorr)


@dataclass(frozen=True)
class _BlockPlan:
    """Rows of one dask block: ``nrow`` rows read as runs (start row, length).

    ``flag_row`` is FLAG_ROW of those rows, taken when the chunk was made.
    """

    offset: int
    nrow: int
    run_start: np.ndarray
    run_len: np.ndarray
    flag_row: np.ndarray


def _runs(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Contiguous runs of `rows` in the given order -> (start rows, lengths)."""
    if rows.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    cut = np.flatnonzero(np.diff(rows) != 1) + 1
    first = np.concatenate(([0], cut))
    lengths = np.diff(np.concatenate((first, [rows.size])))
    return rows[first].astype(np.int64), lengths.astype(np.int64)


def _block_bounds(time: np.ndarray, max_rows: int) -> list[tuple[int, int]]:
    """Split a time-sorted group into [start, stop) blocks of whole timestamps.

    Each block holds at most `max_rows` rows, except a single timestamp larger than that.
    """
    n = time.size
    ends = np.append(np.flatnonzero(np.diff(time) != 0) + 1, n)  # end of each timestamp
    bounds, start = [], 0
    while start < n:
        k = np.searchsorted(ends, start + max_rows, side="right") - 1  # furthest end that fits
        if k < 0 or ends[k] <= start:
            k = np.searchsorted(ends, start, side="right")  # one timestamp, even if too big
        stop = int(ends[k])
        bounds.append((start, stop))
        start = stop
    return bounds


class _ReadPlan:
    """How to read a chunk: table handle, channel plan, row blocks, WEIGHT_SPECTRUM use and
    dask key. A plain object, so ``dask.delayed`` does not traverse it."""

    __slots__ = ("handle", "chan_plan", "blocks", "has_wtsp", "key")

    def __init__(
        self,
        handle: _TableHandle,
        chan_plan: _ChanPlan,
        blocks: tuple[_BlockPlan, ...],
        has_wtsp: bool,
        key: str,
    ) -> None:
        self.handle = handle
        self.chan_plan = chan_plan
        self.blocks = blocks
        self.has_wtsp = has_wtsp
        self.key = key


# --------------------------------------------------------------------------- Chunk


@dataclass(eq=False)
class Chunk:
    """Rows of one (DATA_DESC_ID, FIELD_ID, SCAN_NUMBER, OBSERVATION_ID) group.

    Attributes
    ----------
    ms : str
        Path of the MS.
    ddid, spw_id, pol_id, field_id, scan, observation_id : int
    corr_types : tuple of int
        casacore Stokes codes of the correlation axis (XX=9, YY=12, ...).
    chan : int64[chan]
        Selected channel indices of the spw.
    freq : float64[chan]
        Their frequencies (Hz).
    rows : int64[row]
        Main-table row numbers, in array order (time-sorted, then row order).
    time : float64[row]
        TIME (MJD s).
    antenna1, antenna2 : int32[row]
    row_chunks : tuple of int
        Rows per dask block; every block holds whole timestamps.
    columns : tuple of str
        The requested columns.
    arrays : dict of str -> dask.array.Array
        The requested columns as dask arrays, shapes (row, chan, corr) or (row, 3) for UVW.
        Built on first access (a property, not a dataclass field, so that passing a Chunk to
        ``dask.delayed`` does not drag the arrays into the graph).
    """

    ms: str
    ddid: int
    spw_id: int
    pol_id: int
    field_id: int
    scan: int
    observation_id: int
    corr_types: tuple[int, ...]
    chan: np.ndarray
    freq: np.ndarray
    rows: np.ndarray
    time: np.ndarray
    antenna1: np.ndarray
    antenna2: np.ndarray
    row_chunks: tuple[int, ...]
    columns: tuple[str, ...]
    _plan: _ReadPlan = field(repr=False)

    # the read plan's parts (one private field: dask.delayed walks every field of a
    # dataclass argument, and a plain object is one step instead of dozens)
    @property
    def _handle(self) -> _TableHandle:
        return self._plan.handle

    @property
    def _chan_plan(self) -> _ChanPlan:
        return self._plan.chan_plan

    @property
    def _blocks(self) -> tuple[_BlockPlan, ...]:
        return self._plan.blocks

    @property
    def _has_wtsp(self) -> bool:
        return self._plan.has_wtsp

    @property
    def _key(self) -> str:
        return self._plan.key

    @cached_property
    def arrays(self) -> dict[str, da.Array]:
        import dask.array as da
        from dask.highlevelgraph import HighLevelGraph

        out = {}
        for c in self.columns:
            name = f"fastcal-{c.lower()}-{self._key}"
            tail = (0,) if c == "UVW" else (0, 0)
            dsk = {
                (name, i, *tail): (
                    _read_column,
                    self._handle,
                    c,
                    self._chan_plan,
                    b,
                    self._has_wtsp,
                )
                for i, b in enumerate(self._blocks)
            }
            shape = ((3,),) if c == "UVW" else ((self.n_chan,), (self.n_corr,))
            dtype = READABLE_COLUMNS[c]
            graph = HighLevelGraph.from_collections(name, dsk, dependencies=())
            meta = np.empty((0,) * (1 + len(shape)), dtype)
            out[c] = da.Array(graph, name, (self.row_chunks, *shape), dtype=dtype, meta=meta)
        return out

    @property
    def n_row(self) -> int:
        return int(self.rows.size)

    @property
    def n_chan(self) -> int:
        return int(self.chan.size)

    @property
    def n_corr(self) -> int:
        return len(self.corr_types)

    @property
    def n_blocks(self) -> int:
        return len(self._blocks)

    def block_slice(self, i: int) -> slice:
        """Rows of block `i` within this chunk's arrays."""
        b = self._blocks[i]
        return slice(b.offset, b.offset + b.nrow)

    def read(self, columns: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """All rows of this chunk as NumPy arrays, read sequentially without dask."""
        cols = self.columns if columns is None else tuple(columns)
        parts = [read_block(self, i, cols) for i in range(self.n_blocks)]
        return {c: np.concatenate([p[c] for p in parts]) for c in cols}


# --------------------------------------------------------------------------- reading


def _read_cells(
    handle: _TableHandle,
    column: str,
    plan: _ChanPlan | None,
    b: _BlockPlan,
    dtype: np.dtype,
    tail: tuple[int, ...],
) -> np.ndarray:
    """Read `column` for the rows of `b` into a new array of shape (nrow, *tail).

    With a channel plan, tail is (n_read, ncorr) and the channels are sliced on disk; the
    caller applies ``plan.index`` for the "index" kind.
    """
    out = np.empty((b.nrow, *tail), dtype=dtype)
    o = 0
    with handle.lock:
        t = handle.table()
        try:
            for start, n in zip(b.run_start.tolist(), b.run_len.tolist(), strict=True):
                dst = out[o : o + n]
                if plan is None or plan.kind == "all":
                    t.getcolnp(column, dst, start, n)
                else:
                    inc = [plan.step, 1]
                    t.getcolslicenp(
                        column, dst, [plan.lo, 0], [plan.hi, plan.ncorr - 1], inc, start, n
                    )
                o += n
        except RuntimeError as exc:
            raise MSError(
                f"{handle.path}: reading {column} rows {start}..{start + n - 1} failed: {exc}"
            ) from exc
    return out


def _read_column(
    handle: _TableHandle, column: str, plan: _ChanPlan, b: _BlockPlan, has_wtsp: bool
) -> np.ndarray:
    """One output column for one block (see the module docstring for the meaning)."""
    ncorr = plan.ncorr
    if column == "UVW":
        return _read_cells(handle, "UVW", None, b, np.dtype(np.float64), (3,))
    if column == "WEIGHT" and not has_wtsp:
        w = _read_cells(handle, "WEIGHT", None, b, np.dtype(np.float32), (ncorr,))
        nsel = plan.index.size if plan.kind == "index" else plan.n_read
        return np.broadcast_to(w[:, None, :], (b.nrow, nsel, ncorr))  # read-only, no copy
    src = {"WEIGHT": "WEIGHT_SPECTRUM"}.get(column, column)
    out = _read_cells(handle, src, plan, b, READABLE_COLUMNS[column], (plan.n_read, ncorr))
    if plan.kind == "index":
        out = np.ascontiguousarray(out[:, plan.index])
    if column == "FLAG" and b.flag_row.any():
        out[b.flag_row] = True
    if column == "WEIGHT":
        out.setflags(write=False)  # read-only with or without WEIGHT_SPECTRUM
    return out


def read_block(chunk: Chunk, i: int, columns: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Block `i` of `chunk` as NumPy arrays (no dask), rows ``chunk.block_slice(i)``."""
    cols = chunk.columns if columns is None else tuple(str(c).upper() for c in columns)
    if not set(cols) <= set(chunk.columns):
        raise ParameterError(
            f"columns={list(columns)!r}: this chunk was made for {', '.join(chunk.columns)} only"
        )
    b = chunk._blocks[i]
    return {c: _read_column(chunk._handle, c, chunk._chan_plan, b, chunk._has_wtsp) for c in cols}


def _live_columns(handle: _TableHandle) -> tuple[frozenset[str], bool]:
    """(column names, WEIGHT_SPECTRUM holds values) as on disk now.

    An MSInfo is a snapshot; a column created since (e.g. CORRECTED_DATA by applycal) must
    still be readable, so the table is asked again (one cheap open).
    """
    with handle.lock:
        t = handle.table()
        names = frozenset(t.colnames())
        wtsp = (
            "WEIGHT_SPECTRUM" in names
            and t.nrows() > 0
            and bool(t.iscelldefined("WEIGHT_SPECTRUM", 0))
        )
    return names, wtsp


def _current_flag_row(info: MSInfo, handle: _TableHandle) -> np.ndarray:
    """FLAG_ROW of every row: the copy in ``info.index`` if the table is unchanged since
    open_ms (:func:`~fastcal.ms.info.disk_signature`), else read again (one pass)."""
    if disk_signature(info.path) == info.signature:
        return info.index.flag_row
    with handle.lock:
        t = handle.table()
        return t.getcol("FLAG_ROW").astype(bool) if t.nrows() else np.zeros(0, bool)


def _check_columns(
    info: MSInfo, columns: Sequence[str], present: frozenset[str]
) -> tuple[str, ...]:
    if isinstance(columns, str):
        columns = (columns,)
    cols = tuple(dict.fromkeys(str(c).upper() for c in columns))
    bad = [c for c in cols if c not in READABLE_COLUMNS]
    if bad:
        raise ParameterError(
            f"columns={list(columns)!r}: {', '.join(bad)} cannot be read; "
            f"valid: {', '.join(READABLE_COLUMNS)}"
        )
    for c in cols:
        if c not in present:
            vis = (
                ", ".join(v for v in ("DATA", "MODEL_DATA", "CORRECTED_DATA") if v in present)
                or "none"
            )
            hint = (
                " (no model was written: run setjy or use a model evaluated on the fly)"
                if c == "MODEL_DATA"
                else ""
            )
            hint = " (run applycal first)" if c == "CORRECTED_DATA" else hint
            raise MissingColumnError(
                f"column {c} is not in {info.path}{hint}; visibility columns present: {vis}"
            )
    return cols


def read_chunks(
    ms: str | os.PathLike | MSInfo,
    columns: Sequence[str] = ("DATA", "FLAG", "WEIGHT"),
    *,
    field: Any = None,
    spw: Any = None,
    scan: Any = None,
    intent: Any = None,
    antenna: Any = None,
    timerange: Any = None,
    observation: Any = None,
    selection: Selection | None = None,
    include_autocorr: bool = True,
    max_rows: int | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> list[Chunk]:
    """Lazily read visibility columns, one :class:`Chunk` per (ddid, field, scan) group.

    Parameters
    ----------
    ms : str, path-like or MSInfo
    columns : sequence of str
        Any of DATA, MODEL_DATA, CORRECTED_DATA, FLAG, WEIGHT, UVW (see the module docstring).
    field, spw, scan, intent, antenna, timerange, observation
        CASA-style selection, see :func:`~fastcal.ms.select.parse_selection`.
    selection : Selection, optional
        An already parsed selection (instead of the strings above).
    include_autocorr : bool
        Keep rows with ANTENNA1 == ANTENNA2.
    max_rows : int, optional
        Upper bound on rows per dask block (overrides `chunk_bytes`).
    chunk_bytes : int
        Upper bound on the bytes of one block, all columns together (default 64 MiB).

    Returns
    -------
    list of Chunk
        Ordered by start time, then DATA_DESC_ID. Groups are also split by OBSERVATION_ID.

    Raises
    ------
    SelectionError
        Bad selection, or one that matches no rows.
    MissingColumnError
        A requested column is not in the MS (the message lists the visibility columns present).
    ParameterError
        An unknown column name, or both `selection` and selection strings given.
    """
    info = open_ms(ms)
    handle = _TableHandle(info.path)
    present, has_wtsp = _live_columns(handle)
    cols = _check_columns(info, columns, present)
    strings = dict(field=field, spw=spw, scan=scan, intent=intent, antenna=antenna,
                   timerange=timerange, observation=observation)  # fmt: skip
    if selection is not None and any(v is not None for v in strings.values()):
        given = ", ".join(k for k, v in strings.items() if v is not None)
        raise ParameterError(f"pass either selection= or selection strings, not both (got {given})")
    sel = selection if selection is not None else parse_selection(info, **strings)
    if max_rows is not None and (not isinstance(max_rows, (int, np.integer)) or max_rows < 1):
        raise ParameterError(f"max_rows={max_rows!r} is invalid; valid: an integer >= 1 or None")
    if not chunk_bytes or chunk_bytes < 1:
        raise ParameterError(f"chunk_bytes={chunk_bytes!r} is invalid; valid: a positive integer")
    rows = select_rows(info, sel, include_autocorr=include_autocorr)
    flag_row = _current_flag_row(info, handle)
    token = uuid.uuid4().hex  # dask key prefix, unique per call
    chunks = [
        _make_chunk(
            info,
            sel,
            handle,
            token,
            cols,
            grows,
            contiguous,
            max_rows,
            chunk_bytes,
            has_wtsp,
            flag_row,
        )
        for grows, contiguous in _group_rows(info, rows)
    ]
    chunks.sort(key=lambda c: (float(c.time[0]), c.ddid))
    logger.debug(
        "read_chunks %s: %d rows in %d chunks (%s)",
        info.path,
        rows.size,
        len(chunks),
        sel.describe(),
    )
    return chunks


def _group_rows(info: MSInfo, rows: np.ndarray) -> list[tuple[np.ndarray, bool]]:
    """Split selected rows per (ddid, field, scan, obs); each group sorted by (time, row).

    Returns ``(rows, contiguous)`` per group, ``contiguous`` meaning the rows are one ascending
    range. Uses the runs of equal keys of the whole table (``info.index.group_runs``, computed
    once per MS): `rows` is ascending, so the selected rows of a run are one slice of it, found
    by a binary search per run; no work per row unless a group has several runs.
    """
    gr = info.index.group_runs
    pos = np.searchsorted(rows, gr.bounds)  # rows[pos[r]:pos[r + 1]] lie in run r
    counts = np.diff(pos)
    if counts.size > _MAX_LOOP_RUNS:  # e.g. spws interleaved in every integration
        parts = _gather_runs(gr, rows, pos, counts)
    else:
        parts = _slice_runs(gr, rows, pos, counts)
    time = info.index.time
    out = []
    for g, grows in parts:
        ascending = bool(gr.time_sorted[g])
        if not ascending:
            grows = grows[np.lexsort((grows, time[grows]))]
            ascending = bool(np.all(grows[1:] > grows[:-1]))
        contiguous = ascending and int(grows[-1]) - int(grows[0]) + 1 == grows.size
        out.append((grows, contiguous))
    return out


#: Above this many runs of equal keys, _group_rows gathers rows with NumPy instead of slicing
#: run by run in Python.
_MAX_LOOP_RUNS = 4096


def _slice_runs(
    gr: GroupRuns, rows: np.ndarray, pos: np.ndarray, counts: np.ndarray
) -> list[tuple[int, np.ndarray]]:
    """(group, its selected rows in row order) from slices of `rows`, one per run."""
    out = []
    for g in range(gr.n_groups):
        runs = gr.run_order[gr.group_first[g] : gr.group_first[g + 1]]
        runs = runs[counts[runs] > 0]
        if runs.size == 1:
            r = int(runs[0])
            out.append((g, rows[pos[r] : pos[r + 1]]))
        elif runs.size:
            out.append((g, np.concatenate([rows[pos[r] : pos[r + 1]] for r in runs.tolist()])))
    return out


def _gather_runs(
    gr: GroupRuns, rows: np.ndarray, pos: np.ndarray, counts: np.ndarray
) -> list[tuple[int, np.ndarray]]:
    """As :func:`_slice_runs`, with one NumPy gather for all runs (O(rows), no Python loop
    over runs)."""
    start, length = pos[:-1][gr.run_order], counts[gr.run_order]
    offsets = np.cumsum(length) - length
    order = np.repeat(start - offsets, length) + np.arange(int(length.sum()))
    grouped = rows[order]
    sizes = np.bincount(gr.group, weights=counts, minlength=gr.n_groups).astype(np.int64)
    ends = np.cumsum(sizes)
    return [(g, grouped[ends[g] - sizes[g] : ends[g]]) for g in np.flatnonzero(sizes).tolist()]


def _make_chunk(
    info: MSInfo,
    sel: Selection,
    handle: _TableHandle,
    token: str,
    cols: tuple[str, ...],
    rows: np.ndarray,
    contiguous: bool,
    max_rows: int | None,
    chunk_bytes: int,
    has_wtsp: bool,
    flag_row: np.ndarray,
) -> Chunk:
    """One Chunk; `contiguous`: `rows` is one ascending range (slices instead of gathers)."""
    idx = info.index
    r0 = int(rows[0])
    ddid = int(idx.ddid[r0])
    dd = info.ddescs[ddid]
    spw, pol = info.spws[dd.spw_id], info.pols[dd.pol_id]
    chans = sel.channels(spw.id, spw.num_chan)
    plan = _ChanPlan.make(chans, spw.num_chan, pol.num_corr)
    row_bytes = sum(
        READABLE_COLUMNS[c].itemsize * (3 if c == "UVW" else chans.size * pol.num_corr)
        for c in cols
    )
    limit = max_rows if max_rows is not None else max(1, int(chunk_bytes) // max(row_bytes, 1))
    r0, r1 = int(rows[0]), int(rows[-1]) + 1
    sel_rows = slice(r0, r1) if contiguous else rows
    time = idx.time[sel_rows].copy() if contiguous else idx.time[rows]
    blocks = []
    for a, b in _block_bounds(time, int(limit)):
        if contiguous:
            starts, lens = np.array([r0 + a], np.int64), np.array([b - a], np.int64)
            frow = flag_row[r0 + a : r0 + b]
        else:
            starts, lens = _runs(rows[a:b])
            frow = flag_row[rows[a:b]]
        blocks.append(_BlockPlan(a, b - a, starts, lens, frow))
    row_chunks = tuple(bp.nrow for bp in blocks)
    key = (
        f"{token}-{ddid}-{int(idx.field_id[r0])}-{int(idx.scan[r0])}-{int(idx.observation_id[r0])}"
    )
    return Chunk(
        ms=info.path,
        ddid=ddid,
        spw_id=spw.id,
        pol_id=pol.id,
        field_id=int(idx.field_id[r0]),
        scan=int(idx.scan[r0]),
        observation_id=int(idx.observation_id[r0]),
        corr_types=pol.corr_types,
        chan=chans,
        freq=spw.chan_freq[chans]
        if spw.chan_freq.size == spw.num_chan
        else np.full(chans.size, np.nan),
        rows=rows,
        time=time,
        antenna1=idx.antenna1[sel_rows].copy() if contiguous else idx.antenna1[rows],
        antenna2=idx.antenna2[sel_rows].copy() if contiguous else idx.antenna2[rows],
        row_chunks=row_chunks,
        columns=cols,
        _plan=_ReadPlan(handle, plan, tuple(blocks), has_wtsp, key),
    )


def iter_blocks(
    ms: str | os.PathLike | MSInfo,
    columns: Sequence[str] = ("DATA", "FLAG", "WEIGHT"),
    **kwargs: Any,
) -> Iterator[tuple[Chunk, slice, dict[str, np.ndarray]]]:
    """Read block after block with NumPy only (no dask).

    Takes the arguments of :func:`read_chunks`; yields ``(chunk, rows_slice, arrays)`` where
    ``arrays[c]`` holds rows ``chunk.rows[rows_slice]`` of column ``c``.
    """
    for chunk in read_chunks(ms, columns, **kwargs):
        for i in range(chunk.n_blocks):
            yield chunk, chunk.block_slice(i), read_block(chunk, i)
