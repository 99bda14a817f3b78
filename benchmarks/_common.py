"""Set-up shared by the benchmark scripts (``python benchmarks/bench_*.py``).

Running a script puts this folder on ``sys.path``, so the scripts import it as ``_common``.
casacore and the simulator are imported only inside the functions that need them (the
``bench_solve`` child processes measure their own peak memory).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np

__all__ = ["warm_cache", "best", "simulate_large", "io_floor", "read_data_flag_weight"]


def warm_cache(path: str) -> int:
    """Read every file of the MS once (warm page cache); returns the bytes read."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                while chunk := f.read(16 << 20):
                    total += len(chunk)
    return total


def best(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    """Best wall time (s) of `repeat` calls of `fn`, and the last call's result."""
    out, times = None, []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def simulate_large(path: str, make_gb: float) -> None:
    """Simulate ``SimConfig.large(make_gb)`` into `path` (~9 s per GB) and print the time."""
    from fastcal.simulate import SimConfig, simulate

    t0 = time.perf_counter()
    simulate(path, config=SimConfig.large(make_gb))
    print(f"simulated {path} in {time.perf_counter() - t0:.1f} s")


def io_floor(path: str, ddids: list[int], block_bytes: int = 64 << 20) -> float:
    """Read DATA and write CORRECTED_DATA for every row of `ddids` (seconds).

    The floor of any applycal: one plain casacore pass in ~`block_bytes` row blocks over runs
    of consecutive rows; CORRECTED_DATA is added (tiled, like DATA) if missing.
    """
    import casacore.tables as ct

    t0 = time.perf_counter()
    with ct.table(path, readonly=False, ack=False) as t:
        if "CORRECTED_DATA" not in t.colnames():
            desc = t.getcoldesc("DATA")
            desc["name"] = "CORRECTED_DATA"
            t.addcols(ct.maketabdesc(ct.makecoldesc("CORRECTED_DATA", desc)),
                      {"TYPE": "TiledShapeStMan", "NAME": "CorrTiled",
                       "SPEC": {"DEFAULTTILESHAPE": [2, 128, 1024]}})
        ddid = t.getcol("DATA_DESC_ID")
        for dd in ddids:
            rows = np.flatnonzero(ddid == dd)
            if rows.size == 0:
                continue
            step = max(1, block_bytes // t.getcell("DATA", int(rows[0])).nbytes)
            for run in np.split(rows, np.flatnonzero(np.diff(rows) != 1) + 1):
                for s in range(0, run.size, step):
                    r0, n = int(run[s]), int(min(step, run.size - s))
                    t.putcol("CORRECTED_DATA", t.getcol("DATA", r0, n), r0, n)
    return time.perf_counter() - t0


def read_data_flag_weight(t, start: int, n: int, n_chan: int, n_corr: int) -> int:
    """``getcolnp`` DATA, FLAG, WEIGHT of rows ``start:start+n`` of the open table `t` into
    freshly allocated arrays; returns the bytes read."""
    d = np.empty((n, n_chan, n_corr), np.complex64)
    f = np.empty((n, n_chan, n_corr), np.bool_)
    w = np.empty((n, n_corr), np.float32)
    t.getcolnp("DATA", d, start, n)
    t.getcolnp("FLAG", f, start, n)
    t.getcolnp("WEIGHT", w, start, n)
    return d.nbytes + f.nbytes + w.nbytes
