"""applycal throughput on a large simulated MS versus the plain-casacore I/O floor and CASA.

    python benchmarks/bench_applycal.py                       # reuse /work/bench_data/large2.ms
    python benchmarks/bench_applycal.py --ms big.ms --casa    # also time casatasks.applycal

The source MS is copied once to ``<ms>.applycal-bench`` (so the original is never written).
Tables: a G table of the simulator's true gains at every integration (linear interpolation)
and a B table of the true bandpass (nearest), both on the science spws, written beside it.

Each measurement runs in its own subprocess (peak RSS = that process's ``ru_maxrss``), with a
warm page cache (every file of the copy read once first):

* ``floor``: one thread of plain python-casacore reads DATA, FLAG, WEIGHT and writes
  CORRECTED_DATA (= DATA), FLAG, WEIGHT for the same rows, in the same row runs, as
  applycal's blocks.
* ``fastcal``: ``fastcal.applycal`` with ``flagbackup=False`` in a fresh process (and once
  with the backup); ``fastcal-open`` the same with the MS metadata already read (``open_ms``
  called before the clock starts, so its ~0.4 s index read is excluded); ``fastcal-warm`` the
  second of two calls in one process (open_ms cached, Numba kernels loaded: applycal inside a
  longer pipeline).
* ``casa``: ``casatasks.applycal`` in the CASA interpreter (``--casa``), same tables,
  interp, spw selection, ``flagbackup=False``.

Methods run interleaved ``--repeat`` times; the best time of each is reported, with the load
average at that run and the CPU time of the process (``cpu_s``) and of its calling thread
(``main_cpu_s``; fastcal does all casacore I/O there, so it is its critical path). CPU times
are much less sensitive than wall times to other jobs on a shared machine. Results are
printed, never saved.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

DEFAULT_MS = "/work/bench_data/large2.ms"
CASA_PYTHON = os.environ.get("FASTCAL_CASA_PYTHON", "/work/casa-venv/bin/python")


def _prepare(ms: str) -> tuple[str, list[str], list[int]]:
    import numpy as np

    from fastcal.caltable import CalTable
    from fastcal.ms import ensure_column
    from fastcal.simulate import load_truth

    copy = ms.rstrip("/") + ".applycal-bench"
    if not os.path.exists(os.path.join(copy, "table.dat")):
        shutil.rmtree(copy, ignore_errors=True)
        print(f"copying {ms} -> {copy}", flush=True)
        shutil.copytree(ms, copy)
    tr = load_truth(ms)
    sci = [int(s) for s in tr.science_spw_ids]
    gpath, bpath = copy + ".G.cal", copy + ".B.cal"
    if not os.path.exists(gpath):
        g = {s: tr.gains[:, :, i, :][:, :, None, :] for i, s in enumerate(sci)}
        CalTable.from_solutions("G Jones", g, times=tr.time, ms=copy).write(gpath)
    if not os.path.exists(bpath):
        b = {s: tr.bandpass[i][None] for i, s in enumerate(sci)}
        CalTable.from_solutions("B Jones", b, times=np.array([tr.time[0]]), ms=copy).write(bpath)
    ensure_column(copy, "CORRECTED_DATA")
    return copy, [gpath, bpath], sci


def _warm(path: str) -> None:
    for root, _, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                while f.read(16 << 20):
                    pass


def _child_floor(ms: str, spws: list[int], chunk_bytes: int) -> dict:
    import casacore.tables as ct
    import numpy as np

    from fastcal.ms import read_chunks

    runs = []
    for c in read_chunks(
        ms, ("DATA", "FLAG", "WEIGHT"), spw=",".join(map(str, spws)), chunk_bytes=chunk_bytes
    ):
        for b in c._blocks:
            runs += [
                (int(s), int(n), c.n_chan, c.n_corr)
                for s, n in zip(b.run_start, b.run_len, strict=False)
            ]
    t0, c0 = time.perf_counter(), time.process_time()
    with ct.table(ms, readonly=False, ack=False) as t:
        for start, n, nchan, ncorr in runs:
            d = np.empty((n, nchan, ncorr), np.complex64)
            f = np.empty((n, nchan, ncorr), bool)
            w = np.empty((n, ncorr), np.float32)
            t.getcolnp("DATA", d, start, n)
            t.getcolnp("FLAG", f, start, n)
            t.getcolnp("WEIGHT", w, start, n)
            t.putcol("CORRECTED_DATA", d, start, n)
            t.putcol("FLAG", f, start, n)
            t.putcol("WEIGHT", w, start, n)
        t.flush()
    return {
        "time_s": time.perf_counter() - t0,
        "cpu_s": time.process_time() - c0,
        "main_cpu_s": time.process_time() - c0,
        "rows": int(sum(r[1] for r in runs)),
    }


def _child_fastcal(
    ms: str,
    tables: list[str],
    spws: list[int],
    chunk_bytes: int,
    threads: int | None,
    flagbackup: bool,
    preopen: bool = False,
    warm: bool = False,
) -> dict:
    from fastcal.apply import applycal
    from fastcal.ms import open_ms

    def run() -> object:
        return applycal(
            ms,
            tables,
            interp=["linear", "nearest"],
            spw=",".join(map(str, spws)),
            flagbackup=flagbackup,
            chunk_bytes=chunk_bytes,
            n_threads=threads,
        )

    if warm:
        run()
    if preopen or warm:
        open_ms(ms)
    t0, c0, m0 = time.perf_counter(), time.process_time(), time.thread_time()
    rep = run()
    return {
        "time_s": time.perf_counter() - t0,
        "cpu_s": time.process_time() - c0,
        "main_cpu_s": time.thread_time() - m0,
        "rows": rep.n_rows,
        "samples": rep.n_samples,
    }


_CASA_SCRIPT = """
import json, resource, sys, time
from casatasks import applycal
ms, tables, spw = sys.argv[1], sys.argv[2].split(","), sys.argv[3]
t0 = time.perf_counter()
applycal(vis=ms, gaintable=tables, interp=["linear", "nearest"], spw=spw, flagbackup=False, calwt=True)
dt = time.perf_counter() - t0
print("RESULT " + json.dumps({"time_s": dt, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _run_child(args: list[str]) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child {args[0]} failed:\n{proc.stderr[-3000:]}")
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def _run_casa(ms: str, tables: list[str], spws: list[int], workdir: str) -> dict:
    proc = subprocess.run(
        [CASA_PYTHON, "-c", _CASA_SCRIPT, ms, ",".join(tables), ",".join(map(str, spws))],
        capture_output=True,
        text=True,
        cwd=workdir,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"CASA applycal failed:\n{proc.stderr[-3000:]}")
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--ms", default=DEFAULT_MS)
    p.add_argument("--casa", action="store_true", help="also time casatasks.applycal")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--chunk-mb", type=float, default=64.0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        import resource

        kind, rest = a.child[0], json.loads(a.child[1])
        if kind == "floor":
            out = _child_floor(**rest)
        else:
            out = _child_fastcal(**rest)
        out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print("RESULT " + json.dumps(out), flush=True)
        return 0
    chunk_bytes = int(a.chunk_mb * 2**20)
    copy, tables, spws = _prepare(a.ms)
    size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(copy) for f in fs)
    print(
        f"MS {copy}: {size / 1e9:.2f} GB on disk; science spws {spws}; tables {tables}", flush=True
    )
    _warm(copy)
    methods = {
        "floor": None,
        "fastcal": {"flagbackup": False},
        "fastcal-open": {"flagbackup": False, "preopen": True},
        "fastcal-warm": {"flagbackup": False, "warm": True},
    }
    res: dict[str, list[dict]] = {k: [] for k in [*methods, "fastcal+backup", "casa"]}
    kw = {"ms": copy, "tables": tables, "spws": spws, "chunk_bytes": chunk_bytes,
          "threads": a.threads}  # fmt: skip

    def record(name: str, out: dict) -> None:
        out["load1"] = os.getloadavg()[0]
        res[name].append(out)
        print(name, {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()},
              flush=True)  # fmt: skip

    for r in range(a.repeat):
        for name, extra in methods.items():
            if extra is None:
                args = {"ms": copy, "spws": spws, "chunk_bytes": chunk_bytes}
                record(name, _run_child(["floor", json.dumps(args)]))
            else:
                record(name, _run_child(["fastcal", json.dumps({**kw, **extra})]))
        if r == 0:
            record(
                "fastcal+backup", _run_child(["fastcal", json.dumps({**kw, "flagbackup": True})])
            )
            shutil.rmtree(copy + ".flagversions", ignore_errors=True)
        if a.casa and r == 0:
            record("casa", _run_casa(copy, tables, spws, os.path.dirname(copy)))
    best = {k: min(v, key=lambda x: x["time_s"]) for k, v in res.items() if v}
    floor = best["floor"]["time_s"]
    floor_cpu = best["floor"]["main_cpu_s"] if "main_cpu_s" in best["floor"] else None
    print(f"\nresults (best of {a.repeat} runs; load = 1-min load average at that run):")
    for k, v in best.items():
        cpu = ""
        if "main_cpu_s" in v and floor_cpu:
            cpu = (f"  main-thread CPU {v['main_cpu_s']:6.2f} s "
                   f"({v['main_cpu_s'] / floor_cpu:4.2f}x floor), process CPU {v['cpu_s']:6.2f} s")  # fmt: skip
        print(
            f"  {k:15s} {v['time_s']:7.2f} s  ratio to floor {v['time_s'] / floor:5.2f}  "
            f"peak RSS {v['peak_rss_mb']:5.0f} MB  load {v['load1']:4.1f}{cpu}"
        )
    if "casa" in best:
        print(
            f"  speed-up over CASA applycal: {best['casa']['time_s'] / best['fastcal']['time_s']:.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
