"""applycal: apply calibration tables to a Measurement Set (CORRECTED_DATA, FLAG, WEIGHT).

:func:`applycal` follows CASA's task (reference section 4; docs/applycal.md):

* tables of any supported type (G, T, B, K, KMBD, B TSYS, WVR T, KAntPos) are evaluated by
  :mod:`fastcal.interp` in CASA's order of application and divided out of DATA into
  CORRECTED_DATA (created, as a copy of DATA, when absent);
* ``applymode`` ``calflag`` (default), ``calflagstrict`` (as calflag, and spws some table
  cannot calibrate are flagged, as CASA, instead of raising), ``calonly``, ``flagonly``
  (``flagonlystrict``), ``trial``;
* ``calwt``: WEIGHT (and WEIGHT_SPECTRUM when it holds values) = 1/SIGMA^2 (SIGMA_SPECTRUM
  when present) times the weight scale of the calwt tables, so a re-run gives the same
  weights; without any calwt table WEIGHT is not touched;
* flagged or missing solutions flag the data (calflag/flagonly); in calonly (as CASA) the
  flagged antenna's term is taken as 1 (the partner's correction is still applied), and the
  samples are counted in :attr:`ApplyReport.n_uncalibrated` (logged as a warning).

Safety: everything is validated before the first write; the MS is locked against other
fastcal writers for the whole run (``<vis>/fastcal.lock``: a second writer fails at once with
a clear :class:`~fastcal.errors.ApplyError`) and each write takes casacore's table lock; flags are backed up to ``<vis>.flagversions``
before they change (:mod:`fastcal.flagversions`); DATA is never written. A run killed
half-way leaves DATA untouched, the backup restorable, and a re-run gives exactly the result
of an uninterrupted run (every written value is a function of DATA, SIGMA and the original
flags OR the calibration flags, which is idempotent).

Performance: blocks of rows go through a two-stage pipeline (:class:`_Pipeline`): the calling
thread does all casacore I/O (python-casacore holds the GIL in its calls), reading block j+1
into reused buffers and writing block j-1, while a worker thread corrects block j in one
Numba call that releases the GIL (:func:`fastcal.kernels.apply.correct_block`). FLAG is
rewritten only when some element changed, FLAG_ROW only where it changes. Progress is
reported per block through :func:`fastcal.progress.chunk_progress` (docs/applycal.md).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import casacore.tables as ct
import numpy as np

from fastcal.errors import ApplyError, FastcalError, MSError, ParameterError, SelectionError
from fastcal.flagversions import save_flags
from fastcal.interp import ApplySpec, check_coverage, prepare_gaintables, table_term
from fastcal.kernels.apply import (
    MODE_CALFLAG,
    MODE_CALONLY,
    MODE_FLAGONLY,
    MODE_TRIAL,
    N_COUNTS,
    correct_block,
)
from fastcal.ms import ChunkWriter, ensure_column, open_ms, parse_selection, read_block, read_chunks
from fastcal.ms.info import MSInfo, disk_signature, ms_lock, require_parallel_hands
from fastcal.ms.read import DEFAULT_CHUNK_BYTES, Chunk
from fastcal.progress import chunk_progress

__all__ = ["APPLYMODES", "ApplyReport", "applycal", "add_cli_arguments", "run_from_args"]

logger = logging.getLogger(__name__)

#: applymode -> kernel mode.
APPLYMODES: dict[str, int] = {
    "": MODE_CALFLAG,
    "calflag": MODE_CALFLAG,
    "calflagstrict": MODE_CALFLAG,
    "calonly": MODE_CALONLY,
    "flagonly": MODE_FLAGONLY,
    "flagonlystrict": MODE_FLAGONLY,
    "trial": MODE_TRIAL,
}

#: Flush the written columns to disk and release casacore's table lock after about this many
#: bytes (bounds what a killed run loses and how long other processes wait for the lock).
FLUSH_EVERY_BYTES = 512 * 2**20

#: Correlation code (casacore Stokes enum) -> receptors (a, b).
_CORR_RECEPTORS = {
    5: (0, 0),
    6: (0, 1),
    7: (1, 0),
    8: (1, 1),
    9: (0, 0),
    10: (0, 1),
    11: (1, 0),
    12: (1, 1),
}


@dataclass
class ApplyReport:
    """What :func:`applycal` did.

    Attributes
    ----------
    vis : str
    applymode : str
    tables : list of str
        The applied tables in order of application, with their parameters.
    n_rows, n_chunks, n_blocks : int
        Rows processed, (ddid, field, scan) chunks and row blocks.
    n_samples : int
        Visibility samples (row x channel x correlation) processed.
    n_flagged_before : int
        Samples already flagged on input.
    n_newly_flagged : int
        Unflagged samples whose solution is flagged or missing (flagged by calflag/flagonly;
        in trial mode: would be flagged).
    n_uncalibrated : int
        calonly: unflagged samples whose solution is flagged on at least one antenna (that
        antenna's term is taken as 1, as CASA does; they are not flagged).
    flag_version : str or None
        Name of the flag backup made before flags changed.
    columns_written : tuple of str
    skipped_spws : tuple of int
        Spws left alone by a default (``spw=''``) selection: WVR/Tsys-only spws for which the
        tables have no solutions.
    strict_flagged_spws : tuple of int
        ``calflagstrict``/``flagonlystrict``: spws some table has no solutions for; all their
        selected data were flagged (as CASA), CORRECTED_DATA and weights untouched.
    elapsed_s : float
    """

    vis: str
    applymode: str
    tables: list[str]
    n_rows: int = 0
    n_chunks: int = 0
    n_blocks: int = 0
    n_samples: int = 0
    n_flagged_before: int = 0
    n_newly_flagged: int = 0
    n_uncalibrated: int = 0
    flag_version: str | None = None
    columns_written: tuple[str, ...] = ()
    skipped_spws: tuple[int, ...] = ()
    strict_flagged_spws: tuple[int, ...] = ()
    elapsed_s: float = 0.0

    @property
    def flagged_fraction(self) -> float:
        """Fraction of samples flagged after the run (or that would be, in trial mode)."""
        if not self.n_samples:
            return 0.0
        extra = 0 if self.applymode == "calonly" else self.n_newly_flagged
        return (self.n_flagged_before + extra) / self.n_samples

    def summary(self) -> str:
        lines = [f"applycal {self.vis} (applymode={self.applymode or 'calflag'}):"]
        lines += [f"  {t}" for t in self.tables]
        lines.append(
            f"  {self.n_rows} rows, {self.n_chunks} chunks, {self.n_samples} samples; "
            f"flagged before {self.n_flagged_before}, newly flagged {self.n_newly_flagged}, "
            f"uncalibrated {self.n_uncalibrated}; flagged fraction {self.flagged_fraction:.4f}"
        )
        if self.flag_version:
            lines.append(f"  flag backup: {self.flag_version}")
        if self.skipped_spws:
            lines.append(f"  spws without solutions left untouched: {list(self.skipped_spws)}")
        if self.strict_flagged_spws:
            lines.append(f"  spws without solutions flagged: {list(self.strict_flagged_spws)}")
        lines.append(
            f"  wrote {', '.join(self.columns_written) or 'nothing'} in {self.elapsed_s:.2f} s"
        )
        return "\n".join(lines)


# --------------------------------------------------------------------------- helpers


def _corr_receptors(info: MSInfo, pol_id: int) -> np.ndarray:
    pol = info.pols[pol_id]
    require_parallel_hands(pol)
    return np.array([_CORR_RECEPTORS[c] for c in pol.corr_types], np.int64).reshape(-1, 2)


def _runs(rows: np.ndarray) -> list[tuple[int, int, int]]:
    """(offset, start row, n) of contiguous runs of `rows` (any order)."""
    if rows.size == 0:
        return []
    cut = np.flatnonzero(np.diff(rows) != 1) + 1
    first = np.concatenate(([0], cut))
    last = np.concatenate((cut, [rows.size]))
    return [(int(a), int(rows[a]), int(b - a)) for a, b in zip(first, last, strict=False)]


class _BlockReader:
    """Reads the columns of a block into reusable buffers (DATA, FLAG, FLAG_ROW, SIGMA).

    One read-only table (``autonoread``: no casacore lock taken for reading), used from the
    I/O thread only; calls hold the per-MS lock like every other casacore call of fastcal.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = ms_lock(path)
        with self.lock:
            self.t = ct.table(path, readonly=True, ack=False, lockoptions="autonoread")
            self.has_sigsp = _has_values(self.t, "SIGMA_SPECTRUM")
            self.has_wtsp = _has_values(self.t, "WEIGHT_SPECTRUM")

    def close(self) -> None:
        with self.lock:
            self.t.close()

    def read(self, column: str, runs: list[tuple[int, int, int]], out: np.ndarray) -> np.ndarray:
        """Whole cells of `column` for `runs` (offset, start row, n) into `out` (returned)."""
        with self.lock:
            try:
                for off, start, n in runs:
                    self.t.getcolnp(column, out[off : off + n], start, n)
            except RuntimeError as exc:
                raise MSError(f"{self.path}: reading {column} failed: {exc}") from exc
        return out

    def sigma(
        self,
        runs: list[tuple[int, int, int]],
        out: np.ndarray,
        chan: np.ndarray,
        nchan_spw: int,
        spectral: bool,
    ) -> np.ndarray:
        """SIGMA (n_row, 1, n_corr) into `out`, or per channel (n_row, n_chan, n_corr) for
        spectral weights (SIGMA_SPECTRUM when it holds values, else SIGMA repeated)."""
        n, ncorr = out.shape[0], out.shape[-1]
        if spectral and self.has_sigsp:
            sig = self.read("SIGMA_SPECTRUM", runs, np.empty((n, nchan_spw, ncorr), np.float32))
            return np.ascontiguousarray(sig[:, chan]) if chan.size != nchan_spw else sig
        self.read("SIGMA", runs, out.reshape(n, ncorr))
        if spectral:
            return np.repeat(out, chan.size, axis=1)
        return out


def _has_values(t: Any, col: str) -> bool:
    return col in t.colnames() and t.nrows() > 0 and bool(t.iscelldefined(col, 0))


class _Buffers:
    """Flat arrays reused for the blocks of one pipeline slot (grown on demand)."""

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def view(self, name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        size = int(np.prod(shape))
        buf = self._arrays.get(name)
        if buf is None or buf.size < size:
            buf = self._arrays[name] = np.empty(size, dtype)
        return buf[:size].reshape(shape)


class _WriteLock:
    """Exclusive fastcal-writer lock on the MS for the duration of a run.

    An ``flock`` on ``<vis>/fastcal.lock``, held by an open file description (so, unlike
    casacore's ``fcntl`` table locks, it is not lost when this process opens and closes the
    table again, and the kernel drops it when the process dies, even by SIGKILL). A second
    fastcal writer fails at once with :class:`ApplyError`. Every individual write also takes
    casacore's own table write lock (auto-locking), so casacore-based programs (CASA) wait
    for each write instead of interleaving with it; readers are never blocked for the whole
    run (a permanent casacore lock would make every auto-locking reader, e.g. listobs, wait).
    """

    LOCK_NAME = "fastcal.lock"

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd: int | None = None

    def _busy(self, why: str) -> ApplyError:
        holder = ""
        try:
            with open(os.path.join(self.path, self.LOCK_NAME), encoding="ascii") as f:
                holder = f.read().strip()
        except OSError:
            pass
        who = f" (process {holder})" if holder else ""
        return ApplyError(
            f"{self.path} is being written by another process{who}: {why}; wait for it to "
            f"finish and run applycal again"
        )

    def __enter__(self) -> _WriteLock:
        lock_path = os.path.join(self.path, self.LOCK_NAME)
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise MSError(f"{self.path}: cannot create the lock file {lock_path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise self._busy("its fastcal lock is held") from None
        self.fd = fd
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        return self

    def _release_file(self) -> None:
        if self.fd is not None:
            try:
                os.ftruncate(self.fd, 0)
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
                self.fd = None

    def __exit__(self, *exc: Any) -> None:
        self._release_file()


def _check_writable(info: MSInfo) -> None:
    if not (os.access(info.path, os.W_OK) and ct.tableiswritable(info.path)):
        raise MSError(
            f"{info.path} is read-only (no write permission); applycal writes CORRECTED_DATA, FLAG "
            f"and WEIGHT - copy the MS or change its permissions (or use applymode='trial')"
        )


def _default_spw_filter(
    info: MSInfo, chunks: list[Chunk], specs_probe: Callable[[int], bool]
) -> tuple[list[Chunk], tuple[int, ...]]:
    """With spw='': leave out WVR / Tsys-only spws the tables cannot calibrate."""
    roles = info.spw_roles
    skip = sorted(
        {
            c.spw_id
            for c in chunks
            if roles.get(c.spw_id) in ("wvr", "tsys") and not specs_probe(c.spw_id)
        }
    )
    if skip:
        logger.info(
            "spw='' : spws %s (%s) have no solutions in the tables and are left untouched; select "
            "them explicitly to get an error instead",
            skip,
            ", ".join(roles[s] for s in skip),
        )
    return [c for c in chunks if c.spw_id not in skip], tuple(skip)


# --------------------------------------------------------------------------- applycal


def applycal(
    vis: str | os.PathLike,
    gaintable: Sequence[Any] | str | None = (),
    *,
    gainfield: Any = (),
    interp: Any = (),
    spwmap: Any = (),
    calwt: Any = True,
    applymode: str = "calflag",
    field: str = "",
    spw: str = "",
    intent: str = "",
    scan: str = "",
    antenna: str = "",
    timerange: str = "",
    flagbackup: bool = True,
    callib: str | os.PathLike | None = None,
    chunk_bytes: int | None = None,
    n_threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ApplyReport:
    """Apply calibration tables to `vis`, writing CORRECTED_DATA, FLAG and WEIGHT.

    Parameters
    ----------
    vis : str or path-like
        Measurement Set.
    gaintable : list of str or CalTable
        Calibration tables (any order; applied in CASA's order).
    gainfield, interp, spwmap, calwt
        Per table, as CASA (see :func:`fastcal.interp.prepare_gaintables`).
    applymode : str
        ``calflag`` (default, ``''``), ``calflagstrict``, ``calonly``, ``flagonly``,
        ``flagonlystrict`` or ``trial`` (nothing written, counts only).
    field, spw, intent, scan, antenna, timerange : str
        CASA-style data selection (:func:`fastcal.ms.parse_selection`).
    flagbackup : bool
        Save FLAG to ``<vis>.flagversions/flags.applycal_N`` before flags change.
    callib : str or path-like, optional
        An ALMA ``*.calapply.txt`` file: apply every line of it instead of `gaintable`
        (:func:`fastcal.calapply.apply_calapply`); the per-table arguments must then be empty.
    chunk_bytes : int, optional
        Upper bound on the bytes of one block of rows (default 64 MiB).
    n_threads : int, optional
        Threads: the calling thread does the I/O, ``n_threads - 1`` workers correct blocks
        (default: number of CPUs, at most 4; 1 = everything in the calling thread).
    progress : callable(done, total), optional
        Called after each block has been written (besides
        ``fastcal.progress.chunk_progress("applycal", n_blocks)``).

    Returns
    -------
    ApplyReport

    Raises
    ------
    MSNotFoundError, NotAnMSError
        `vis` is not a Measurement Set.
    MSError
        The MS is read-only.
    ApplyError
        Another process holds the MS's write lock.
    CalTableError
        A table is not a (supported) calibration table, lacks a needed spw (no spwmap), has
        no solutions for the selected fields, or none near the data's times.
    ParameterError, SelectionError, UnsupportedError
        Bad parameters or selection.

    Nothing is written when any of these is raised.
    """
    t0 = time.perf_counter()
    if callib is not None:
        if gaintable or gainfield or interp or spwmap:
            raise ParameterError(
                "give either callib= (a calapply.txt file) or gaintable= and its per-table "
                "arguments, not both"
            )
        from fastcal.calapply import apply_calapply

        reports = apply_calapply(
            vis,
            callib,
            applymode=applymode,
            flagbackup=flagbackup,
            chunk_bytes=chunk_bytes,
            n_threads=n_threads,
        )
        return _merge_reports(reports, time.perf_counter() - t0)
    mode_key = str(applymode or "").strip().lower()
    if mode_key not in APPLYMODES:
        raise ParameterError(
            f"applymode={applymode!r} is not valid; valid: {', '.join(repr(k) for k in APPLYMODES if k)}"
        )
    mode = APPLYMODES[mode_key]
    if gaintable is None or (not isinstance(gaintable, (str, os.PathLike)) and len(gaintable) == 0):
        raise ParameterError(
            "gaintable is empty; valid: one or more calibration tables (or callib=)"
        )
    if chunk_bytes is not None and (
        not isinstance(chunk_bytes, (int, np.integer)) or chunk_bytes < 1
    ):
        raise ParameterError(f"chunk_bytes={chunk_bytes!r} is invalid; valid: a positive integer")
    info = open_ms(vis)
    if mode != MODE_TRIAL:
        _check_writable(info)
    sel = parse_selection(
        info,
        field=field or None,
        spw=spw or None,
        scan=scan or None,
        intent=intent or None,
        antenna=antenna or None,
        timerange=timerange or None,
    )
    writes_data = mode in (MODE_CALFLAG, MODE_CALONLY)
    read_cols = ("DATA", "FLAG") if writes_data else ("FLAG",)
    specs = prepare_gaintables(info, gaintable, gainfield, interp, spwmap, calwt)
    lock = _WriteLock(info.path) if mode != MODE_TRIAL else contextlib.nullcontext()
    with lock:
        return _applycal_locked(
            info,
            sel,
            specs,
            mode,
            mode_key,
            read_cols,
            writes_data,
            spw,
            flagbackup,
            chunk_bytes,
            n_threads,
            progress,
            t0,
        )


def _applycal_locked(
    info: MSInfo,
    sel: Any,
    specs: list[ApplySpec],
    mode: int,
    mode_key: str,
    read_cols: tuple[str, ...],
    writes_data: bool,
    spw: str,
    flagbackup: bool,
    chunk_bytes: int | None,
    n_threads: int | None,
    progress: Callable[[int, int], None] | None,
    t0: float,
) -> ApplyReport:
    chunks = read_chunks(
        info, read_cols, selection=sel, chunk_bytes=int(chunk_bytes or DEFAULT_CHUNK_BYTES)
    )
    flag_row = _current_flag_row(info)  # before anything is written (ensure_column)
    skipped: tuple[int, ...] = ()
    strict_chunks: list[Chunk] = []
    if mode_key.endswith("strict"):
        # CASA (Calibrater::correct2): in '...strict' modes the data of spws some table cannot
        # calibrate are flagged (CORRECTED_DATA and weights untouched) instead of skipped
        strict_chunks = [c for c in chunks if not _all_have_spw(specs, c.spw_id)]
        chunks = [c for c in chunks if _all_have_spw(specs, c.spw_id)]
        if not chunks:
            raise SelectionError(
                f"no selected spw of {info.path} has solutions in the tables "
                f"(applymode={mode_key!r} would flag everything)"
            )
    elif not spw:
        chunks, skipped = _default_spw_filter(info, chunks, lambda s: _all_have_spw(specs, s))
        if not chunks:
            raise SelectionError(
                f"no spw of {info.path} has solutions in the tables; spws skipped: {list(skipped)}"
            )
    for c in chunks:
        _corr_receptors(info, c.pol_id)
        check_coverage(
            specs,
            info,
            spw_id=c.spw_id,
            field_id=c.field_id,
            observation_id=c.observation_id,
            times=np.array([c.time[0], c.time[-1]]),
            scan=c.scan,
        )
    calwt_any = any(s.calwt for s in specs) and writes_data
    report = ApplyReport(
        vis=info.path,
        applymode=mode_key or "calflag",
        tables=[s.describe() for s in specs],
        n_chunks=len(chunks),
        skipped_spws=skipped,
        strict_flagged_spws=tuple(sorted({c.spw_id for c in strict_chunks})),
    )
    if mode == MODE_TRIAL:
        _run(info, chunks, specs, mode, False, report, None, n_threads, progress, flag_row)
        _flag_uncalibrated(info, strict_chunks, report, None)
        report.elapsed_s = time.perf_counter() - t0
        logger.info("%s", report.summary())
        return report
    if flagbackup and mode in (MODE_CALFLAG, MODE_FLAGONLY):
        report.flag_version = save_flags(
            info,
            comment="fastcal applycal: flags before applying " + ", ".join(s.name for s in specs),
        )
    if writes_data:
        ensure_column(info, "CORRECTED_DATA")
    with ChunkWriter(info) as writer:
        _run(info, chunks, specs, mode, calwt_any, report, writer, n_threads, progress, flag_row)
        _flag_uncalibrated(info, strict_chunks, report, writer)
    cols = (["CORRECTED_DATA"] if writes_data else []) + (
        ["FLAG", "FLAG_ROW"] if mode != MODE_CALONLY else []
    )
    if calwt_any:
        cols.append("WEIGHT")
        if info.has_weight_spectrum:
            cols.append("WEIGHT_SPECTRUM")
    report.columns_written = tuple(cols)
    if report.n_uncalibrated:
        logger.warning(
            "applycal calonly: %d unflagged samples of %s have flagged solutions; the flagged "
            "antenna's term was taken as 1 (as CASA does) and they were not flagged",
            report.n_uncalibrated,
            info.path,
        )
    report.elapsed_s = time.perf_counter() - t0
    logger.info("%s", report.summary())
    return report


def _flag_uncalibrated(
    info: MSInfo, chunks: list[Chunk], report: ApplyReport, writer: ChunkWriter | None
) -> None:
    """'...strict' modes: flag every sample of `chunks` (spws without calibration), as CASA."""
    for chunk in chunks:
        full = chunk.n_chan == info.spws[chunk.spw_id].num_chan
        for i in range(chunk.n_blocks):
            flag = read_block(chunk, i, ("FLAG",))["FLAG"]
            before = int(flag.sum())
            report.n_rows += flag.shape[0]
            report.n_samples += flag.size
            report.n_flagged_before += before
            report.n_newly_flagged += flag.size - before
            if writer is not None:
                rows = chunk.rows[chunk.block_slice(i)]
                writer.write(
                    "FLAG", rows, np.ones_like(flag), channels=None if full else chunk.chan
                )
    if chunks:
        logger.warning(
            "applycal %s: spws %s of %s have no solutions in some table; all their data were "
            "flagged (CASA's strict mode)",
            report.applymode,
            list(report.strict_flagged_spws),
            info.path,
        )


def _all_have_spw(specs: Sequence[ApplySpec], spw_id: int) -> bool:
    for s in specs:
        if s.vis_cal == "KAntPos Jones":
            continue
        if s.cal_spw(spw_id) not in s.table.spw_ids.tolist():
            return False
    return True


def _merge_reports(reports: list[ApplyReport], elapsed: float) -> ApplyReport:
    if not reports:
        raise ParameterError("the calapply file lists no applycal calls")
    out = ApplyReport(vis=reports[0].vis, applymode=reports[0].applymode, tables=[])
    for r in reports:
        out.tables += r.tables
        for k in (
            "n_rows",
            "n_chunks",
            "n_blocks",
            "n_samples",
            "n_flagged_before",
            "n_newly_flagged",
            "n_uncalibrated",
        ):
            setattr(out, k, getattr(out, k) + getattr(r, k))
        out.flag_version = out.flag_version or r.flag_version
        out.columns_written = tuple(dict.fromkeys(out.columns_written + r.columns_written))
    out.elapsed_s = elapsed
    return out


@dataclass(eq=False)
class _Block:
    """One block of rows in the pipeline: its inputs (corrected in place) and results."""

    chunk: Chunk
    index: int
    rows: np.ndarray
    runs: list[tuple[int, int, int]]
    full: bool  # all channels of the spw: whole cells, raw FLAG (unchanged FLAG not rewritten)
    spectral: bool  # weights per channel (WEIGHT_SPECTRUM)
    data: np.ndarray
    flag: np.ndarray
    flag_row: np.ndarray
    weight: np.ndarray
    args: tuple
    row_flagged: np.ndarray
    counts: np.ndarray = field(default_factory=lambda: np.zeros(N_COUNTS, np.int64))
    n_changed: int = -1
    future: Future | None = None


def _compact(a: Any, dtype: Any) -> np.ndarray:
    """A small term array as a writable C-contiguous `dtype` array; a broadcast (stride-0)
    time axis is reduced to length 1 (the kernel broadcasts it)."""
    a = np.asarray(a)
    if a.ndim == 4 and a.shape[0] > 1 and a.strides[0] == 0:
        a = a[:1]
    out = np.ascontiguousarray(a, dtype=dtype)
    return out if out.flags.writeable else out.copy()


_NO_MWS = np.empty((0, 1, 1, 2), np.float64)


def _time_index(times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unique times, index of each row's time): np.unique's result, without sorting when
    the times are already ascending (as in a chunk)."""
    if times.size == 0:
        return times, np.zeros(0, np.int64)
    step = np.diff(times)
    if np.all(step >= 0):
        new = np.concatenate(([True], step != 0))
        return times[new], np.cumsum(new, dtype=np.int64) - 1
    ut, tidx = np.unique(times, return_inverse=True)
    return ut, tidx.astype(np.int64).reshape(-1)


class _Pipeline:
    """Reads, corrects and writes the blocks of an applycal run.

    The calling thread does all casacore I/O (python-casacore holds the GIL in its calls, so
    I/O threads could not overlap one another anyway): it reads block j+1 and writes block
    j-1 while a worker thread corrects block j in one Numba call that releases the GIL
    (:func:`fastcal.kernels.apply.correct_block`). Blocks are read into reused buffers.
    """

    def __init__(
        self,
        info: MSInfo,
        specs: list[ApplySpec],
        mode: int,
        calwt: bool,
        writer: ChunkWriter | None,
        flag_row: np.ndarray,
    ) -> None:
        self.info = info
        self.specs = specs
        self.mode = mode
        self.calwt = calwt
        self.writer = writer
        self.flag_row_all = flag_row
        self.n_ant = len(info.antennas)
        self.writes_data = mode in (MODE_CALFLAG, MODE_CALONLY)
        self.writes_flag = mode in (MODE_CALFLAG, MODE_FLAGONLY) and writer is not None
        self.reader = _BlockReader(info.path)
        # weight scaling per table: 0 none, 1 |J|^2 per channel, 2 channel mean of |B|^2 (CASA
        # BJones::calcWtScale, also with WEIGHT_SPECTRUM; checked against casatasks 6.7)
        self.terms_calwt = np.array(
            [0 if not s.calwt else 2 if s.vis_cal == "B Jones" else 1 for s in specs], np.int8)
        self.unflushed = 0

    def close(self) -> None:
        self.reader.close()

    # ---- I/O thread
    def read(self, chunk: Chunk, i: int, buf: _Buffers) -> _Block:
        info = self.info
        sl = chunk.block_slice(i)
        rows = chunk.rows[sl]
        runs = _runs(rows)
        n_row, n_chan, n_corr = rows.size, chunk.n_chan, chunk.n_corr
        nchan_spw = info.spws[chunk.spw_id].num_chan
        full = n_chan == nchan_spw
        spectral = self.reader.has_wtsp
        if full:
            shape = (n_row, n_chan, n_corr)
            if self.writes_data:
                data = self.reader.read("DATA", runs, buf.view("data", shape, np.complex64))
            else:
                data = np.empty((0, 0, 0), np.complex64)
            flag = self.reader.read("FLAG", runs, buf.view("flag", shape, np.bool_))
            flag_row = self.flag_row_all[rows]
        else:  # a channel subset: FLAG_ROW comes folded into the flags
            cols = read_block(chunk, i, ("DATA", "FLAG") if self.writes_data else ("FLAG",))
            flag = cols["FLAG"]
            data = cols["DATA"] if self.writes_data else np.empty((0, 0, 0), np.complex64)
            flag_row = np.zeros(n_row, np.bool_)
        wshape = (n_row, 1, n_corr)
        if self.calwt:
            weight = self.reader.sigma(
                runs, buf.view("weight", wshape, np.float32), chunk.chan, nchan_spw, spectral
            )
        else:
            weight = buf.view("weight", wshape, np.float32)
            weight.fill(1.0)
        ut, tidx = _time_index(np.asarray(chunk.time[sl], np.float64))
        freq = np.asarray(chunk.freq, np.float64).reshape(-1)
        tj, tf, tm = [], [], []
        for s in self.specs:
            j, f, mws = table_term(s, info, chunk.spw_id, chunk.field_id, chunk.observation_id, ut,
                              freq, chunk.scan)  # fmt: skip
            tj.append(_compact(j, np.complex128))
            tf.append(_compact(f, np.bool_))
            tm.append(_NO_MWS if mws is None else _compact(mws, np.float64))
        args = (
            np.ascontiguousarray(chunk.antenna1[sl], np.int32),
            np.ascontiguousarray(chunk.antenna2[sl], np.int32),
            tidx,
            int(ut.size),
            self.n_ant,
            tuple(tj),
            tuple(tf),
            tuple(tm),
            self.terms_calwt,
            _corr_receptors(info, chunk.pol_id),
            self.mode,
            self.calwt,
            self.calwt,  # the weights read are sigmas
        )
        return _Block(chunk, i, rows, runs, full, spectral, data, flag, flag_row, weight, args,
                      np.empty(n_row, np.bool_))  # fmt: skip

    def write(self, b: _Block) -> None:
        w = self.writer
        if w is None:
            return
        chunk = b.chunk
        channels = None if b.full else chunk.chan
        nbytes = 0
        if self.writes_data:
            if b.full:
                w.write_runs("CORRECTED_DATA", b.runs, b.data)
            else:
                w.write("CORRECTED_DATA", b.rows, b.data, channels=channels)
            nbytes += b.data.nbytes
        if self.writes_flag:
            if not b.full:  # writes FLAG_ROW from the flags on disk
                w.write("FLAG", b.rows, b.flag, channels=channels)
                nbytes += b.flag.nbytes
            else:
                if b.n_changed:  # else the flags written would equal the stored ones
                    w.write_runs("FLAG", b.runs, b.flag)
                    nbytes += b.flag.nbytes
                changed = b.row_flagged != b.flag_row
                if changed.any():  # FLAG_ROW = every channel and correlation flagged
                    w.write("FLAG_ROW", b.rows[changed], b.row_flagged[changed])
        if self.calwt:
            if b.spectral:  # WEIGHT_SPECTRUM, and WEIGHT from it
                w.write("WEIGHT", b.rows, b.weight, channels=channels)
            else:
                w.write_runs("WEIGHT", b.runs, b.weight.reshape(b.rows.size, -1))
            nbytes += b.weight.nbytes
        self.unflushed += nbytes
        if self.unflushed >= FLUSH_EVERY_BYTES:
            w.flush()
            self.unflushed = 0

    # ---- worker thread
    @staticmethod
    def compute(b: _Block) -> None:
        b.n_changed = int(
            correct_block(b.data, b.flag, b.flag_row, b.weight, *b.args, b.row_flagged, b.counts)
        )


def _run(
    info: MSInfo,
    chunks: list[Chunk],
    specs: list[ApplySpec],
    mode: int,
    calwt: bool,
    report: ApplyReport,
    writer: ChunkWriter | None,
    n_threads: int | None,
    progress: Callable[[int, int], None] | None,
    flag_row: np.ndarray,
) -> None:
    """Read, correct and write every block (see :class:`_Pipeline`)."""
    jobs = [(c, i) for c in chunks for i in range(c.n_blocks)]
    total = len(jobs)
    report.n_blocks = total
    report.n_rows = int(sum(c.n_row for c in chunks))
    counts = np.zeros(N_COUNTS, np.int64)
    n = max(1, int(n_threads or min(4, os.cpu_count() or 1)))
    n_workers = n - 1  # the calling thread does the I/O
    buffers = [_Buffers() for _ in range(n_workers + 1)]
    pipe = _Pipeline(info, specs, mode, calwt, writer, flag_row)
    pending: deque[_Block] = deque()
    done = 0
    pool = (
        ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="fastcal-apply")
        if n_workers
        else None
    )
    try:
        with chunk_progress("applycal", total) as bar:

            def finish(b: _Block) -> None:
                nonlocal done
                if b.future is not None:
                    b.future.result()
                pipe.write(b)
                counts[:] += b.counts
                done += 1
                bar.advance()
                if progress is not None:
                    progress(done, total)

            for k, (chunk, i) in enumerate(jobs):
                b = pipe.read(chunk, i, buffers[k % len(buffers)])
                if pool is None:
                    pipe.compute(b)
                else:
                    b.future = pool.submit(pipe.compute, b)
                pending.append(b)
                while len(pending) > n_workers:
                    finish(pending.popleft())
            while pending:
                finish(pending.popleft())
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        pipe.close()
    report.n_samples = int(counts[0])
    report.n_flagged_before = int(counts[1])
    report.n_newly_flagged = int(counts[2])
    report.n_uncalibrated = int(counts[3])


def _current_flag_row(info: MSInfo) -> np.ndarray:
    """FLAG_ROW of every row as stored now (the copy in ``info.index`` if the main table is
    unchanged since :func:`open_ms`, else read again)."""
    if disk_signature(info.path) == info.signature:
        return np.asarray(info.index.flag_row, np.bool_)
    with (
        ms_lock(info.path),
        ct.table(info.path, readonly=True, ack=False, lockoptions="autonoread") as t,
    ):
        return t.getcol("FLAG_ROW").astype(np.bool_) if t.nrows() else np.zeros(0, np.bool_)


# --------------------------------------------------------------------------- CLI


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``fastcal applycal``."""
    parser.add_argument("vis", help="Measurement Set")
    parser.add_argument("--gaintable", nargs="+", default=[], help="calibration tables")
    parser.add_argument(
        "--gainfield", nargs="+", default=[], help="per table: '' | nearest | field names/ids"
    )
    parser.add_argument(
        "--interp",
        nargs="+",
        default=[],
        help="per table: linear | nearest | linearPD | 'linear,linearflag' ...",
    )
    parser.add_argument(
        "--spwmap",
        nargs="+",
        default=[],
        metavar="LIST",
        help="per table: comma-separated cal spw per MS spw, e.g. 0,0,1,1 ('' = identity)",
    )
    parser.add_argument("--calwt", nargs="+", default=["true"], help="per table: true/false")
    parser.add_argument("--applymode", default="calflag", choices=[k for k in APPLYMODES if k])
    for name in ("field", "spw", "intent", "scan", "antenna", "timerange"):
        parser.add_argument(f"--{name}", default="", help=f"{name} selection (CASA syntax)")
    parser.add_argument(
        "--no-flagbackup", dest="flagbackup", action="store_false", help="do not back up FLAG"
    )
    parser.add_argument(
        "--calapply",
        "--callib",
        dest="callib",
        default=None,
        help="ALMA *.calapply.txt file to apply instead of --gaintable",
    )
    parser.add_argument("--chunk-mb", type=float, default=None, help="block size (MiB)")
    parser.add_argument("--threads", type=int, default=None, help="worker threads")


def _parse_bool(text: str) -> bool:
    t = str(text).strip().lower()
    if t in ("true", "t", "1", "yes", "y"):
        return True
    if t in ("false", "f", "0", "no", "n"):
        return False
    raise ParameterError(f"calwt value {text!r} is invalid; valid: true or false")


def _parse_spwmap(items: Sequence[str]) -> list[list[int]]:
    out = []
    for it in items:
        it = it.strip().strip("[]")
        try:
            out.append([int(v) for v in it.split(",") if v.strip()] if it else [])
        except ValueError as exc:
            raise ParameterError(
                f"--spwmap {it!r} is invalid; valid: comma-separated integers"
            ) from exc
    return out


def run_from_args(args: argparse.Namespace) -> int:
    """Run ``fastcal applycal``; prints the report. Returns 0 on success, 2 on a fastcal error."""
    try:
        report = applycal(
            args.vis,
            list(args.gaintable),
            gainfield=[("" if g in ("''", '""') else g) for g in args.gainfield],
            interp=list(args.interp),
            spwmap=_parse_spwmap(args.spwmap),
            calwt=[_parse_bool(c) for c in args.calwt],
            applymode=args.applymode,
            field=args.field,
            spw=args.spw,
            intent=args.intent,
            scan=args.scan,
            antenna=args.antenna,
            timerange=args.timerange,
            flagbackup=args.flagbackup,
            callib=args.callib,
            chunk_bytes=None if args.chunk_mb is None else int(args.chunk_mb * 2**20),
            n_threads=args.threads,
        )
    except FastcalError as exc:
        print(f"fastcal applycal: error: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0
