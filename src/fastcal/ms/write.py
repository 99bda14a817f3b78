"""Column writers: CORRECTED_DATA, MODEL_DATA, FLAG, FLAG_ROW, WEIGHT, WEIGHT_SPECTRUM.

DATA is never written ("data is sacred"): any column outside :data:`WRITABLE_COLUMNS` raises
:class:`~fastcal.errors.ParameterError`.

All casacore calls on one MS go through the process-wide lock :func:`~fastcal.ms.read.ms_lock`
(shared with the readers), one call at a time; casacore's own table lock (AutoLocking) guards
against other processes. A :class:`ChunkWriter` keeps the table open between writes but takes
the lock per write, so dask read tasks keep running while the driver writes.

Weights
-------
Readers hand out channel-expanded weights ``(row, chan, corr)``. Writing such an array to
``WEIGHT``:

* if the MS has WEIGHT_SPECTRUM (with values), it is written there and WEIGHT becomes the
  median over channels of the updated WEIGHT_SPECTRUM row (CASA's convention for WEIGHT when
  spectral weights exist; unverified against CASA source);
* otherwise WEIGHT becomes the mean over the given channels, which is how CASA calibrates a
  channel-independent weight (<|B|^2> over channels for a bandpass, see CASA "Data Weights");
  channel-constant weights come back unchanged.

A 2-D ``(row, corr)`` array is written to WEIGHT as is.

Flags
-----
After FLAG is written, FLAG_ROW of the same rows is set to "every channel and correlation
flagged", as CASA's flagdata does, so that un-flagging a row is not undone by a stale FLAG_ROW.
Only rows whose FLAG_ROW changes are written (the scalar column is cheaper to read than to
write).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import casacore.tables as ct
import numpy as np

from fastcal.errors import MissingColumnError, MSError, ParameterError
from fastcal.ms.info import MSInfo, bump_write_generation, ms_lock, open_ms
from fastcal.ms.read import DEFAULT_CHUNK_BYTES, Chunk

__all__ = ["WRITABLE_COLUMNS", "ChunkWriter", "ensure_column", "write_column"]

logger = logging.getLogger(__name__)

#: The only main-table columns fastcal writes.
WRITABLE_COLUMNS: tuple[str, ...] = (
    "CORRECTED_DATA", "MODEL_DATA", "FLAG", "FLAG_ROW", "WEIGHT", "WEIGHT_SPECTRUM",
)  # fmt: skip
#: Columns :func:`ensure_column` can create, with their initial values.
CREATABLE_COLUMNS: dict[str, str] = {
    "CORRECTED_DATA": "a copy of DATA (as CASA initialises it)",
    "MODEL_DATA": "a 1 Jy unpolarised point source: 1 in XX, YY (RR, LL), 0 in cross hands",
    "WEIGHT_SPECTRUM": "WEIGHT broadcast over channels (CASA initweights wtmode='weight')",
}

_DTYPES = {
    "CORRECTED_DATA": np.complex64,
    "MODEL_DATA": np.complex64,
    "FLAG": np.bool_,
    "FLAG_ROW": np.bool_,
    "WEIGHT": np.float32,
    "WEIGHT_SPECTRUM": np.float32,
}


def _check_writable_column(column: str) -> str:
    col = str(column).upper()
    if col == "DATA":
        raise ParameterError(
            "column='DATA': Data is sacred - fastcal never writes DATA; "
            f"valid: {', '.join(WRITABLE_COLUMNS)}"
        )
    if col not in WRITABLE_COLUMNS:
        raise ParameterError(
            f"column={column!r} cannot be written; valid: {', '.join(WRITABLE_COLUMNS)}"
        )
    return col


def _open_rw(path: str) -> Any:
    if not (os.access(path, os.W_OK) and ct.tableiswritable(path)):
        raise MSError(
            f"{path} is read-only (no write permission); copy it or change its permissions"
        )
    try:
        return ct.table(path, readonly=False, ack=False)
    except RuntimeError as exc:
        raise MSError(f"{path} cannot be opened for writing: {exc}") from exc


def _shape_runs(info: MSInfo, limit_bytes: int, bytes_per_vis: int) -> list[tuple[int, int, int]]:
    """All rows as (start row, n, ddid) runs: contiguous, one DATA_DESC_ID, bounded in bytes."""
    ddid = info.index.ddid
    cut = np.flatnonzero(np.diff(ddid) != 0) + 1
    first = np.concatenate(([0], cut)).tolist()
    last = np.concatenate((cut, [ddid.size])).tolist()
    out = []
    for a, b in zip(first, last, strict=True):
        d = int(ddid[a])
        nchan = info.spws[info.ddescs[d].spw_id].num_chan
        ncorr = info.pols[info.ddescs[d].pol_id].num_corr
        step = max(1, limit_bytes // max(1, nchan * ncorr * bytes_per_vis))
        out += [(s, min(step, b - s), d) for s in range(a, b, step)]
    return out


# --------------------------------------------------------------------------- ensure_column


def ensure_column(
    ms: str | os.PathLike | MSInfo,
    column: str = "CORRECTED_DATA",
    *,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> bool:
    """Create `column` like DATA if it is absent, and initialise it.

    The new column gets DATA's data manager type and its tile shape (``DEFAULTTILESHAPE`` of a
    TiledShapeStMan, or the tiling of a TiledColumnStMan), under a data manager of its own.
    Initial values: see :data:`CREATABLE_COLUMNS` (CORRECTED_DATA = DATA, copied chunk by chunk
    with at most `chunk_bytes` in memory). An MS with variable-shape tiled columns cannot leave
    cells undefined (reading them fails), hence the initialisation.

    Parameters
    ----------
    ms : str, path-like or MSInfo
    column : {"CORRECTED_DATA", "MODEL_DATA", "WEIGHT_SPECTRUM"}

    Returns
    -------
    bool
        True if the column was created, False if it existed.

    Raises
    ------
    ParameterError
        `column` cannot be created.
    MissingColumnError
        The MS has no DATA column to copy the layout from.
    MSError
        The MS is read-only.
    """
    col = _check_writable_column(column)
    if col not in CREATABLE_COLUMNS:
        raise ParameterError(
            f"column={column!r} cannot be created; valid: {', '.join(CREATABLE_COLUMNS)}"
        )
    info = open_ms(ms)
    with ms_lock(info.path), ct.table(info.path, ack=False) as t:
        names = t.colnames()
    if col in names:
        return False
    if "DATA" not in names:
        raise MissingColumnError(
            f"{info.path} has no DATA column to copy the storage layout of {col} from"
        )
    with ms_lock(info.path):
        t = _open_rw(info.path)
        try:
            if col in t.colnames():  # created meanwhile by another thread
                return False
            _add_like_data(t, col)
            _initialise(t, info, col, chunk_bytes)
            t.flush()
            bump_write_generation(info.path)
        finally:
            t.close()
    logger.info("created %s in %s (%s)", col, info.path, CREATABLE_COLUMNS[col])
    return True


def _add_like_data(t: Any, col: str) -> None:
    desc = dict(t.getcoldesc("DATA"))
    dm = t.getdminfo("DATA")
    existing = {d["NAME"] for d in t.getdminfo().values()}
    dm_name = f"Tiled{col}" if dm["TYPE"].startswith("Tiled") else f"{dm['TYPE']}_{col}"
    while dm_name in existing:
        dm_name += "_"
    desc["dataManagerGroup"] = dm_name
    desc["dataManagerType"] = dm["TYPE"]
    desc["comment"] = {"CORRECTED_DATA": "The corrected data column", "MODEL_DATA": "The model data column",
                       "WEIGHT_SPECTRUM": "Weight for each data point"}[col]  # fmt: skip
    desc.pop("keywords", None)
    if col == "WEIGHT_SPECTRUM":
        desc["valueType"] = "float"
    spec = {
        k: v
        for k, v in dm.get("SPEC", {}).items()
        if k in ("DEFAULTTILESHAPE", "MAXIMUMCACHESIZE", "BUCKETSIZE", "TileShape")
    }
    if dm["TYPE"] == "TiledColumnStMan" and "DEFAULTTILESHAPE" not in spec:
        cubes = dm.get("SPEC", {}).get("HYPERCUBES", {})
        if cubes:
            spec["DEFAULTTILESHAPE"] = next(iter(cubes.values()))["TileShape"]
    t.addcols(
        ct.maketabdesc([ct.makecoldesc(col, desc)]),
        {"TYPE": dm["TYPE"], "NAME": dm_name, "SPEC": spec},
    )


def _initialise(t: Any, info: MSInfo, col: str, chunk_bytes: int) -> None:
    parallel = {  # parallel-hand (XX, YY, RR, LL) or Stokes I positions per DATA_DESC_ID
        d.id: [i for i, c in enumerate(info.pols[d.pol_id].corr_types) if c in (1, 5, 8, 9, 12)]
        for d in info.ddescs
    }
    for start, n, ddid in _shape_runs(info, chunk_bytes, 8):
        nchan = info.spws[info.ddescs[ddid].spw_id].num_chan
        ncorr = info.pols[info.ddescs[ddid].pol_id].num_corr
        if col == "CORRECTED_DATA":
            buf = np.empty((n, nchan, ncorr), np.complex64)
            t.getcolnp("DATA", buf, start, n)
        elif col == "MODEL_DATA":  # 1 Jy unpolarised: parallel hands 1, cross hands 0
            buf = np.zeros((n, nchan, ncorr), np.complex64)
            buf[..., parallel[ddid]] = 1.0
        else:
            w = np.empty((n, ncorr), np.float32)
            t.getcolnp("WEIGHT", w, start, n)
            buf = np.ascontiguousarray(np.broadcast_to(w[:, None, :], (n, nchan, ncorr)))
        t.putcol(col, buf, start, n)


# --------------------------------------------------------------------------- writing


class ChunkWriter:
    """Write many blocks into one MS, keeping the table open between writes.

    Use as a context manager. Each :meth:`write` takes the per-MS lock for its duration only.

    Parameters
    ----------
    ms : str, path-like or MSInfo
    chunk_bytes : int
        Upper bound on temporary buffers (read-modify-write of channel subsets).

    Raises
    ------
    MSError
        The MS is read-only.
    """

    def __init__(
        self, ms: str | os.PathLike | MSInfo, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES
    ) -> None:
        self.info = open_ms(ms)
        self.path = self.info.path
        self.chunk_bytes = chunk_bytes
        self._lock = ms_lock(self.path)
        with self._lock:
            self._t = _open_rw(self.path)
            self._wtsp = _has_values(self._t, "WEIGHT_SPECTRUM")

    def __enter__(self) -> ChunkWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Flush and close the table."""
        if self._t is not None:
            with self._lock:
                self._t.flush()
                self._t.close()
            self._t = None

    def flush(self, unlock: bool = True) -> None:
        """Write the buffered columns to disk and (by default) release casacore's table lock,
        so that other processes waiting for it get their turn."""
        if self._t is None:
            return
        with self._lock:
            self._t.flush()
            if unlock:
                self._t.unlock()

    def write_runs(
        self, column: str, runs: Sequence[tuple[int, int, int]], values: np.ndarray
    ) -> None:
        """Write whole cells of `column` for runs of consecutive rows, one ``putcol`` per run.

        The fast path of :meth:`write` for callers that already hold the row runs: no
        sorting, no channel plan, no FLAG_ROW update (the caller writes FLAG_ROW itself).

        Parameters
        ----------
        column : str
            One of :data:`WRITABLE_COLUMNS` (existing in the MS).
        runs : sequence of (offset, start row, n)
            Rows ``start .. start + n - 1`` get ``values[offset : offset + n]``.
        values : ndarray, C-contiguous
            Whole cells in the column's dtype: (row, chan, corr), (row, corr) or (row,).

        Raises
        ------
        ParameterError
            DATA or another column that cannot be written; values of the wrong dtype or not
            C-contiguous; runs outside `values`.
        MSError
            The table is closed or casacore fails (e.g. cell shape mismatch).
        """
        if self._t is None:
            raise MSError(f"{self.path}: the ChunkWriter is closed")
        col = _check_writable_column(column)
        if values.dtype != _DTYPES[col] or not values.flags.c_contiguous:
            raise ParameterError(
                f"values for {col} must be a C-contiguous {np.dtype(_DTYPES[col]).name} array, "
                f"got {values.dtype} (contiguous: {values.flags.c_contiguous})"
            )
        n_val = values.shape[0] if values.ndim else 0
        if any(off < 0 or n < 0 or off + n > n_val for off, _, n in runs):
            raise ParameterError(
                f"runs {list(runs)!r} do not fit in {n_val} rows of values for {col}"
            )
        with self._lock:
            bump_write_generation(self.path)
            try:
                for off, start, n in runs:
                    self._t.putcol(col, values[off : off + n], start, n)
            except RuntimeError as exc:
                raise MSError(f"{self.path}: writing {col} failed: {exc}") from exc

    def write_chunk(
        self, chunk: Chunk, column: str, values: np.ndarray, block: int | None = None
    ) -> None:
        """Write `values` for the rows (and channels) of `chunk`, or of its block `block`."""
        sl = slice(None) if block is None else chunk.block_slice(block)
        self.write(column, chunk.rows[sl], values, channels=chunk.chan)

    def write(
        self,
        column: str,
        rows: Sequence[int] | np.ndarray,
        values: np.ndarray,
        *,
        channels: np.ndarray | None = None,
    ) -> None:
        """Write `values` into `column` at `rows`.

        Parameters
        ----------
        column : str
            One of :data:`WRITABLE_COLUMNS`. CORRECTED_DATA / MODEL_DATA / WEIGHT_SPECTRUM are
            created first if absent (:func:`ensure_column`).
        rows : int[row]
            Main-table rows, any order, no duplicates; all of one cell shape.
        values : ndarray
            (row, chan, corr) for the array columns; (row, corr) or (row, chan, corr) for
            WEIGHT (see the module docstring); (row,) for FLAG_ROW.
        channels : int[chan], optional
            Channel indices the second axis of `values` refers to (default: all channels).
        """
        if self._t is None:
            raise MSError(f"{self.path}: the ChunkWriter is closed")
        col = _check_writable_column(column)
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        values = np.asarray(values)
        if values.shape[:1] != rows.shape:
            raise ParameterError(
                f"values of shape {values.shape} do not match {rows.size} rows for column {col}"
            )
        if rows.size == 0:
            return
        if rows.min() < 0 or rows.max() >= self.info.n_rows:
            raise ParameterError(f"rows must be in 0..{self.info.n_rows - 1} for {self.path}")
        order = np.argsort(rows, kind="stable")
        if not np.all(order == np.arange(rows.size)):
            rows, values = rows[order], values[order]
        if np.any(np.diff(rows) == 0):
            raise ParameterError(f"rows passed to write {col} contain duplicates")
        with self._lock:
            if col in CREATABLE_COLUMNS and col not in self._t.colnames():
                ensure_column(self.info, col, chunk_bytes=self.chunk_bytes)  # same table object
                self._wtsp = _has_values(self._t, "WEIGHT_SPECTRUM")
        if col == "WEIGHT" and values.ndim == 3:
            self._write_expanded_weight(rows, values, channels)
        elif col in ("WEIGHT", "FLAG_ROW"):
            self._put(col, rows, values.astype(_DTYPES[col], copy=False), None)
        else:
            self._put(col, rows, values.astype(_DTYPES[col], copy=False), channels)
            if col == "FLAG":
                self._update_flag_row(rows, values if channels is None else None)

    # ---- internals
    def _cell(self, ddid: int) -> tuple[int, int]:
        dd = self.info.ddescs[ddid]
        return self.info.spws[dd.spw_id].num_chan, self.info.pols[dd.pol_id].num_corr

    def _runs(self, rows: np.ndarray) -> list[tuple[int, int, int]]:
        """(offset into rows, start row, n) runs of contiguous rows."""
        cut = np.flatnonzero(np.diff(rows) != 1) + 1
        first = np.concatenate(([0], cut))
        last = np.concatenate((cut, [rows.size]))
        return [(int(a), int(rows[a]), int(b - a)) for a, b in zip(first, last, strict=True)]

    def _put(
        self, col: str, rows: np.ndarray, values: np.ndarray, channels: np.ndarray | None
    ) -> None:
        plan = None
        if values.ndim == 3:
            shapes = {self._cell(int(d)) for d in np.unique(self.info.index.ddid[rows])}
            if len(shapes) > 1:
                raise ParameterError(
                    f"rows written to {col} have cell shapes {sorted(shapes)}; write one spw at a time"
                )
            nchan, ncorr = shapes.pop()
            plan = _chan_plan(channels, nchan)
            nsel = nchan if channels is None else len(channels)
            if values.shape[1:] != (nsel, ncorr):
                raise ParameterError(
                    f"values for {col} have shape {values.shape}; expected (nrow, {nsel}, {ncorr}) "
                    f"for a spw with {nchan} channels ({nsel} selected) and {ncorr} correlations"
                )
        with self._lock:
            bump_write_generation(self.path)
            try:
                for off, start, n in self._runs(rows):
                    v = np.ascontiguousarray(values[off : off + n])
                    if plan is None:
                        self._t.putcol(col, v, start, n)
                        continue
                    kind, lo, hi, extra = plan
                    blc, trc = [lo, 0], [hi, v.shape[2] - 1]
                    if kind == "slice":
                        self._t.putcolslice(col, v, blc, trc, [extra, 1], start, n)
                    else:  # read-modify-write of the bounding channel range
                        cur = self._t.getcolslice(col, blc, trc, [], start, n)
                        cur[:, extra] = v
                        self._t.putcolslice(col, cur, blc, trc, [], start, n)
            except RuntimeError as exc:
                raise MSError(f"{self.path}: writing {col} failed: {exc}") from exc

    def _update_flag_row(self, rows: np.ndarray, full: np.ndarray | None) -> None:
        if full is not None:
            frow = full.reshape(full.shape[0], -1).all(axis=1)
        else:
            frow = np.empty(rows.size, bool)
            with self._lock:
                for off, start, n in self._runs(rows):
                    f = self._t.getcol("FLAG", start, n)
                    frow[off : off + n] = f.reshape(n, -1).all(axis=1)
        # FLAG_ROW rarely changes: reading it is ~3x cheaper than writing it (scalar column),
        # so only the rows whose value differs are written
        cur = np.empty(rows.size, bool)
        with self._lock:
            for off, start, n in self._runs(rows):
                self._t.getcolnp("FLAG_ROW", cur[off : off + n], start, n)
        changed = cur != frow
        if changed.any():
            self._put("FLAG_ROW", rows[changed], frow[changed], None)

    def _write_expanded_weight(
        self, rows: np.ndarray, values: np.ndarray, channels: np.ndarray | None
    ) -> None:
        values = values.astype(np.float32, copy=False)
        if self._wtsp:
            self._put("WEIGHT_SPECTRUM", rows, values, channels)
            if channels is None:
                weight = np.median(values, axis=1)
            else:
                weight = np.empty((rows.size, values.shape[2]), np.float32)
                with self._lock:
                    for off, start, n in self._runs(rows):
                        ws = self._t.getcol("WEIGHT_SPECTRUM", start, n)
                        weight[off : off + n] = np.median(ws, axis=1)
        else:
            weight = values.mean(axis=1, dtype=np.float64)
        self._put("WEIGHT", rows, weight.astype(np.float32), None)


def _chan_plan(channels: np.ndarray | None, nchan: int) -> tuple | None:
    """None (all channels), ("slice", lo, hi, step) or ("index", lo, hi, channels - lo)."""
    if channels is None:
        return None
    chans = np.asarray(channels, dtype=np.int64).reshape(-1)
    if chans.size == 0 or chans.min() < 0 or chans.max() >= nchan or np.any(np.diff(chans) <= 0):
        raise ParameterError(
            f"channels={chans.tolist()!r} is invalid; valid: strictly increasing indices in 0..{nchan - 1}"
        )
    if chans.size == nchan:
        return None
    step = int(chans[1] - chans[0]) if chans.size > 1 else 1
    if chans.size == 1 or np.all(np.diff(chans) == step):
        return ("slice", int(chans[0]), int(chans[-1]), step)
    lo = int(chans[0])
    return ("index", lo, int(chans[-1]), chans - lo)


def _has_values(t: Any, col: str) -> bool:
    return col in t.colnames() and t.nrows() > 0 and bool(t.iscelldefined(col, 0))


def write_column(
    ms: str | os.PathLike | MSInfo,
    column: str,
    rows: Sequence[int] | np.ndarray,
    values: np.ndarray,
    *,
    channels: np.ndarray | None = None,
) -> None:
    """Write one column for some rows (one-shot :class:`ChunkWriter`).

    See :meth:`ChunkWriter.write` for the arguments.

    Raises
    ------
    ParameterError
        DATA ("Data is sacred") or any column not in :data:`WRITABLE_COLUMNS`; values of the
        wrong shape; duplicate or out-of-range rows.
    MSError
        The MS is read-only.
    """
    _check_writable_column(column)
    with ChunkWriter(ms) as w:
        w.write(column, rows, values, channels=channels)
