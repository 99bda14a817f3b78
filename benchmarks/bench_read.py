"""End-to-end read throughput: fastcal.ms.read_chunks versus plain casacore getcolnp.

    python benchmarks/bench_read.py --ms PATH
    python benchmarks/bench_read.py --make-gb 1.0          # simulate one into a temp dir

The page cache is *warm*: every file of the MS is read once before timing and nothing is
dropped from the cache, so the figures measure casacore decoding + memory traffic, not the
disk. The floor is one thread calling ``getcolnp`` for DATA, FLAG and WEIGHT on the same rows,
in the same row blocks, into freshly allocated arrays. read_chunks returns more than that (FLAG
merged with FLAG_ROW, WEIGHT expanded to (row, chan, corr)), and is timed including building
the chunks from an already opened MSInfo (open_ms is timed separately). "dask arrays" computes
one trivial task per block of every ``Chunk.arrays`` column; "delayed read_block" runs one
``dask.delayed`` task per block that reads all three columns (the pattern drivers should use). The methods run
interleaved ``--repeat`` times and each figure is the best run, so that changes in the load of a
shared machine hit all methods alike; process CPU time is shown too, as it is less sensitive
to other processes on a shared machine. Results are printed, never saved.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import casacore
import casacore.tables as ct
import dask
import numpy as np
from _common import read_data_flag_weight, simulate_large, warm_cache

from fastcal.ms import DEFAULT_CHUNK_BYTES, iter_blocks, open_ms, read_block, read_chunks

COLUMNS = ("DATA", "FLAG", "WEIGHT")


def floor_blocks(chunks) -> list[tuple[int, int, int, int]]:
    """(start row, nrow, nchan, ncorr) of every contiguous run in every read_chunks block."""
    out = []
    for c in chunks:
        nchan, ncorr = c.n_chan, c.n_corr
        for b in c._blocks:
            out += [
                (int(s), int(n), nchan, ncorr) for s, n in zip(b.run_start, b.run_len, strict=True)
            ]
    return out


def run_floor(path: str, blocks) -> tuple[float, int]:
    """Single-thread getcolnp of DATA, FLAG, WEIGHT; returns (seconds, bytes)."""
    nbytes = 0
    t0 = time.perf_counter()
    with ct.table(path, ack=False) as t:
        for start, n, nchan, ncorr in blocks:
            nbytes += read_data_flag_weight(t, start, n, nchan, ncorr)
    return time.perf_counter() - t0, nbytes


def _touch(block: np.ndarray) -> int:
    return block.shape[0]


def run_dask(info, threads: int, chunk_bytes: int) -> float:
    """read_chunks + dask.compute (threaded scheduler) of one trivial task per block.

    This is how a driver consumes the chunks (a function per block); the blocks are never
    concatenated, so no extra copy is timed.
    """
    t0 = time.perf_counter()
    chunks = read_chunks(info, COLUMNS, chunk_bytes=chunk_bytes)
    lazy = [
        dask.delayed(_touch)(blk)
        for c in chunks
        for a in c.arrays.values()
        for blk in a.to_delayed(optimize_graph=False).ravel()
    ]
    total = sum(dask.compute(*lazy, scheduler="threads", num_workers=threads, optimize_graph=False))
    dt = time.perf_counter() - t0
    assert total == sum(c.n_row for c in chunks) * len(COLUMNS)
    return dt


def _read_whole_block(chunk, i: int) -> int:
    return read_block(chunk, i)["DATA"].shape[0]


def run_delayed_blocks(info, threads: int, chunk_bytes: int) -> float:
    """read_chunks + one dask.delayed task per block calling read_block (the driver pattern)."""
    t0 = time.perf_counter()
    chunks = read_chunks(info, COLUMNS, chunk_bytes=chunk_bytes)
    lazy = [dask.delayed(_read_whole_block)(c, i) for c in chunks for i in range(c.n_blocks)]
    total = sum(dask.compute(*lazy, scheduler="threads", num_workers=threads))
    dt = time.perf_counter() - t0
    assert total == sum(c.n_row for c in chunks)
    return dt


def run_iter_blocks(info, chunk_bytes: int) -> float:
    t0 = time.perf_counter()
    for _ in iter_blocks(info, COLUMNS, chunk_bytes=chunk_bytes):
        pass
    return time.perf_counter() - t0


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1, 5, 15 min)"
    except OSError:
        return "?"


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, numpy {np.__version__}, "
        f"python-casacore {casacore.__version__}, dask {dask.__version__}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--ms", help="existing Measurement Set")
    g.add_argument(
        "--make-gb", type=float, help="simulate an MS of about this many GB in a temp dir"
    )
    p.add_argument(
        "--chunk-mb",
        type=float,
        default=DEFAULT_CHUNK_BYTES / 2**20,
        help="read_chunks chunk_bytes (MiB)",
    )
    p.add_argument("--repeat", type=int, default=5, help="runs per figure (best is reported)")
    args = p.parse_args(argv)

    tmp = None
    if args.make_gb:
        tmp = tempfile.TemporaryDirectory(prefix="fastcal-bench-")
        path = str(Path(tmp.name) / "bench.ms")
        simulate_large(path, args.make_gb)
    else:
        path = os.path.abspath(args.ms)
    try:
        chunk_bytes = int(args.chunk_mb * 2**20)
        size = warm_cache(path)
        t0 = time.perf_counter()
        info = open_ms(path)
        open_s = time.perf_counter() - t0
        chunks = read_chunks(info, COLUMNS, chunk_bytes=chunk_bytes)
        blocks = floor_blocks(chunks)
        print(f"machine : {machine()}")
        print(
            f"MS      : {path}: {size / 1e9:.2f} GB on disk, {info.n_rows} rows, "
            f"{len(chunks)} chunks, {sum(c.n_blocks for c in chunks)} blocks, "
            f"chunk_bytes {args.chunk_mb:g} MiB"
        )
        print(
            f"cache   : warm (every file read once before timing; nothing dropped); best of {args.repeat} interleaved runs"
        )
        print(
            f"open_ms : {open_s:.3f} s (metadata + index columns, once; not in the figures below)"
        )
        nbytes = run_floor(path, blocks)[1]
        methods = [
            ("getcolnp DATA,FLAG,WEIGHT (floor)", 1, lambda: run_floor(path, blocks)[0]),
            ("read_chunks, dask arrays", 1, lambda: run_dask(info, 1, chunk_bytes)),
            ("read_chunks, dask arrays", 2, lambda: run_dask(info, 2, chunk_bytes)),
            (
                "read_chunks, delayed read_block",
                1,
                lambda: run_delayed_blocks(info, 1, chunk_bytes),
            ),
            (
                "read_chunks, delayed read_block",
                2,
                lambda: run_delayed_blocks(info, 2, chunk_bytes),
            ),
            ("iter_blocks (NumPy, no dask)", 1, lambda: run_iter_blocks(info, chunk_bytes)),
        ]
        times = [[] for _ in methods]
        cpus = [[] for _ in methods]
        for _ in range(args.repeat):  # interleaved, so a change in machine load hits all alike
            for k, (_, _, fn) in enumerate(methods):
                c0 = time.process_time()
                times[k].append(fn())
                cpus[k].append(time.process_time() - c0)
        rows = [
            (name, k, min(ts), min(cs))
            for (name, k, _), ts, cs in zip(methods, times, cpus, strict=True)
        ]
        floor_s, floor_cpu = rows[0][2], rows[0][3]
        print(
            f"columns : {', '.join(COLUMNS)}; {nbytes / 1e6:.0f} MB as stored (MB/s below use this)"
        )
        print(f"load    : {_load()}")
        print()
        print(
            f"{'method':<36} {'threads':>7} {'wall_s':>8} {'MB/s':>8} {'floor/this':>11} "
            f"{'cpu_s':>7} {'cpu floor/this':>14}"
        )
        for name, k, dt, cpu in rows:
            print(
                f"{name:<36} {k:>7} {dt:>8.3f} {nbytes / 1e6 / dt:>8.0f} {floor_s / dt:>11.2f} "
                f"{cpu:>7.3f} {floor_cpu / cpu:>14.2f}"
            )
        print("\nfloor/this >= 0.9 is the goal (1.0 = as fast as plain getcolnp).")
        print(
            "cpu_s is the process CPU time (user + system, all threads): on a shared machine it "
            "is less\nsensitive to other processes than wall time."
        )
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
