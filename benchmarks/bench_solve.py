"""End-to-end benchmark of fastcal's solvers against the casacore I/O floor (and CASA).

    python benchmarks/bench_solve.py --make-gb 2            # simulate /work/bench_data/bench_2gb.ms
    python benchmarks/bench_solve.py --ms big.ms [--casa] [--repeat 2]

Every stage runs in its own subprocess so that its peak RSS (``ru_maxrss``) is its own.
Stages:

floor_bp / floor_ph / floor_all
    Plain single-threaded casacore: ``getcolnp`` of DATA, FLAG, WEIGHT of the rows a solve
    needs (bandpass-calibrator rows; phase-calibrator rows; every science row), in blocks of
    about 64 MiB, with no computation: the I/O floor (second pass in its process).
gain_int (phase cal, solint int, calmode p), gain_inf (phase cal, solint inf, ap),
bandpass (bandpass cal, solint inf, combine scan), gain_int_all (every science row,
solint int, calmode p)
    fastcal solves, ratio to the matching floor.
seq_direct / seq_cached
    The calibrator sequence phase-up (int, p) -> bandpass (pre-applying it) -> amplitude
    gaincal (inf, ap, pre-applying both), reading the MS for each solve / reading it once
    with :func:`fastcal.solve.load_calibrator`.
proc_<stage> (with --process)
    The user's cold call: a fresh Python process that imports fastcal, solves on the MS path
    and writes the table(s), timed from outside (interpreter start to exit).
casa_* (with --casa)
    The same solves with casatasks gaincal/bandpass in a CASA 6.7 subprocess.

The page cache is warmed by one untimed read of every selection first. With ``--repeat N``
the stages run in N interleaved rounds (floor, solve, floor, solve, ...) and the best round
is reported, with the 1-minute load average range seen over the rounds and, for fastcal
stages, the CPU time of the call (``cpu``; ``cpu_ratio`` = CPU / floor CPU, which other jobs
on the machine disturb much less than wall time). ``FASTCAL_BENCH_SOLVE_MODULE=/path/solve.py``
times that file as ``fastcal.solve`` (before/after comparisons). Results print as a table;
they are not committed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import read_data_flag_weight, simulate_large

CASA_PYTHON = os.environ.get("FASTCAL_CASA_PYTHON", "/work/casa-venv/bin/python")
BENCH_DIR = Path(os.environ.get("FASTCAL_BENCH_DIR", "/work/bench_data"))


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --------------------------------------------------------------------------- setup


def _selections(ms: str) -> dict:
    from fastcal.ms import open_ms

    info = open_ms(ms)
    sci = info.spws_with_role("science")
    bp = [f.id for f in info.fields if any("BANDPASS" in i for s in info.scans
                                            if f.id in s.field_ids for i in s.intents)]
    ph = [f.id for f in info.fields if any("CALIBRATE_PHASE" in i for s in info.scans
                                            if f.id in s.field_ids for i in s.intents)]
    names = info.antenna_names
    return dict(spw=",".join(map(str, sci)), bp_field=str(bp[0]), ph_field=str(ph[0]),
                refant=names[0], n_ant=len(names), sci_ddids=[info.ddid_for_spw(s) for s in sci],
                n_rows=info.n_rows)


def _cpu_s() -> float:
    """CPU seconds (user + system, all threads) of this process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _floor_rows(ms: str, sel: dict, which: str):
    import casacore.tables as ct
    import numpy as np

    with ct.table(ms, ack=False) as t:
        ddid = t.getcol("DATA_DESC_ID")
        fid = t.getcol("FIELD_ID")
    m = np.isin(ddid, sel["sci_ddids"])
    if which == "bp":
        m &= fid == int(sel["bp_field"])
    elif which == "ph":
        m &= fid == int(sel["ph_field"])
    return np.flatnonzero(m)


def _runs(rows):
    import numpy as np

    cut = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = np.concatenate(([0], cut))
    ends = np.concatenate((cut, [rows.size]))
    return [(int(rows[a]), int(rows[b - 1]) - int(rows[a]) + 1) for a, b in zip(starts, ends, strict=True)]


def stage_floor(ms: str, sel: dict, which: str) -> dict:
    """Single-threaded getcolnp of DATA, FLAG, WEIGHT of the selected rows, ~64 MiB blocks.

    Timed on the second of two passes in the process, like the fastcal 'warm' call it is
    compared with: the first read in a fresh process is 1-6x slower for the small
    selections (0.05 s warm for the bandpass rows, 0.07-0.33 s first), which made the
    bandpass floor swing 2x between runs."""
    import casacore.tables as ct
    import numpy as np

    rows = _floor_rows(ms, sel, which)

    def one_pass() -> int:
        nbytes = 0
        with ct.table(ms, ack=False) as t:
            for start, n in _runs(rows):
                shape = t.getcell("DATA", start).shape
                per_row = int(np.prod(shape)) * 9 + shape[1] * 4
                step = max(1, (64 << 20) // per_row)
                for s in range(start, start + n, step):
                    nbytes += read_data_flag_weight(t, s, min(step, start + n - s), *shape)
        return nbytes

    one_pass()
    c0 = _cpu_s()
    t0 = time.perf_counter()
    nbytes = one_pass()
    return dict(wall=time.perf_counter() - t0, cpu=_cpu_s() - c0, gbytes=nbytes / 1e9,
                rows=int(rows.size))


def _fastcal_once(ms, sel: dict, name: str, parallel: bool, out_dir: str | None = None) -> dict:
    """One fastcal stage; with `out_dir` every solved table is also written there."""
    from fastcal.solve import load_calibrator, solve_bandpass, solve_gains

    common = dict(spw=sel["spw"], refant=sel["refant"], parallel=parallel)
    if out_dir is not None:
        def table(label: str) -> dict:
            return dict(caltable=os.path.join(out_dir, f"{name}.{label}"), overwrite=True)
    else:
        def table(label: str) -> dict:
            return {}
    out: dict = {}
    c0 = _cpu_s()
    t0 = time.perf_counter()
    if name == "gain_int":
        tab = solve_gains(ms, field=sel["ph_field"], solint="int", calmode="p", **common, **table("g"))
    elif name == "gain_inf":
        tab = solve_gains(ms, field=sel["ph_field"], solint="inf", calmode="ap", **common, **table("g"))
    elif name == "gain_int_all":
        tab = solve_gains(ms, solint="int", calmode="p", **common, **table("g"))
    elif name == "bandpass":
        tab = solve_bandpass(ms, field=sel["bp_field"], **common, **table("b"))
    elif name in ("seq_direct", "seq_cached"):
        src = ms
        if name == "seq_cached":
            src = load_calibrator(ms, field=sel["bp_field"], spw=sel["spw"], parallel=parallel)
            out["load"] = time.perf_counter() - t0
            out["cache_mib"] = src.nbytes / 2**20
            common = dict(refant=sel["refant"], parallel=parallel)
        else:
            common = dict(common, field=sel["bp_field"])
        t1 = time.perf_counter()
        ph = solve_gains(src, solint="int", calmode="p", **common, **table("ph"))
        out["phase_up"] = time.perf_counter() - t1
        t1 = time.perf_counter()
        bp = solve_bandpass(src, gaintable=[ph], **common, **table("b"))
        out["bandpass"] = time.perf_counter() - t1
        t1 = time.perf_counter()
        tab = solve_gains(src, solint="inf", calmode="ap", gaintable=[bp, ph], **common,
                          **table("amp"))
        out["amp"] = time.perf_counter() - t1
    else:
        raise ValueError(name)
    out["wall"] = time.perf_counter() - t0
    out["cpu"] = _cpu_s() - c0
    out["nrow"] = int(tab.nrow)
    out["flagged"] = round(float(tab.flag.mean()), 4)
    return out


def stage_fastcal(ms: str, sel: dict, name: str, parallel: bool = True) -> dict:
    """A fastcal stage twice in one process: 'cold' (first call: path, JIT caches loaded,
    MS metadata read) and 'warm' (second call on an already opened MSInfo, as in a
    pipeline session); open_ms is timed separately."""
    import warnings

    from fastcal.ms import open_ms

    warnings.simplefilter("ignore")
    cold = _fastcal_once(ms, sel, name, parallel)
    t0 = time.perf_counter()
    info = open_ms(ms)
    t_open = time.perf_counter() - t0
    warm = _fastcal_once(info, sel, name, parallel)
    res = dict(wall=warm["wall"], cold=cold["wall"], open_ms=t_open)
    res.update({k: v for k, v in warm.items() if k != "wall"})
    return res


def stage_process(ms: str, sel: dict, name: str, parallel: bool = True) -> dict:
    """The user's cold call: a fresh Python process that imports fastcal, solves `name` on
    the MS path and writes the table(s); wall time seen from outside (interpreter start,
    imports, Numba cache loading, open_ms, solve, write)."""
    with tempfile.TemporaryDirectory(prefix="fastcal-cold-", dir=BENCH_DIR) as tmp:
        code = ("import sys, json; sys.path.insert(0, sys.argv[1]); import bench_solve as b; "
                "r = b._fastcal_once(sys.argv[2], json.loads(sys.argv[3]), sys.argv[4], "
                "sys.argv[5] == '1', sys.argv[6]); print('RESULT ' + json.dumps(r))")
        env = dict(os.environ)
        if os.environ.get("FASTCAL_BENCH_SOLVE_MODULE"):
            code = "import bench_solve as _b; _b._load_solve_override(); " + code
            env["PYTHONPATH"] = os.path.dirname(os.path.abspath(__file__))
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", code, os.path.dirname(os.path.abspath(__file__)),
                               ms, json.dumps(sel), name, "1" if parallel else "0", tmp],
                              capture_output=True, text=True, env=env, timeout=3600)
        wall = time.perf_counter() - t0
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            inner = json.loads(line[7:])
            return dict(wall=wall, in_process=inner["wall"])
    raise RuntimeError(f"cold process {name} failed:\n{proc.stderr[-3000:]}")


CASA_SCRIPT = r'''
import json, os, resource, shutil, sys, time
from casatasks import gaincal, bandpass
ms, name, field_ph, field_bp, spw, refant, out = sys.argv[1:8]
res = {}
t0 = time.perf_counter()
if name == "casa_gain_int":
    gaincal(vis=ms, caltable=out + ".g", field=field_ph, spw=spw, solint="int", calmode="p", refant=refant)
elif name == "casa_gain_inf":
    gaincal(vis=ms, caltable=out + ".g", field=field_ph, spw=spw, solint="inf", calmode="ap", refant=refant)
elif name == "casa_gain_int_all":
    gaincal(vis=ms, caltable=out + ".g", spw=spw, solint="int", calmode="p", refant=refant)
elif name == "casa_bandpass":
    bandpass(vis=ms, caltable=out + ".b", field=field_bp, spw=spw, solint="inf", combine="scan", refant=refant)
elif name == "casa_seq":
    t1 = time.perf_counter()
    gaincal(vis=ms, caltable=out + ".ph", field=field_bp, spw=spw, solint="int", calmode="p", refant=refant)
    res["phase_up"] = time.perf_counter() - t1; t1 = time.perf_counter()
    bandpass(vis=ms, caltable=out + ".b", field=field_bp, spw=spw, solint="inf", combine="scan", refant=refant, gaintable=[out + ".ph"])
    res["bandpass"] = time.perf_counter() - t1; t1 = time.perf_counter()
    gaincal(vis=ms, caltable=out + ".amp", field=field_bp, spw=spw, solint="inf", calmode="ap", refant=refant, gaintable=[out + ".b", out + ".ph"])
    res["amp"] = time.perf_counter() - t1
res["wall"] = time.perf_counter() - t0
res["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
print("RESULT " + json.dumps(res))
'''


def stage_casa(ms: str, sel: dict, name: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="fastcal-casa-", dir=BENCH_DIR) as tmp:
        script = Path(tmp) / "run.py"
        script.write_text(CASA_SCRIPT)
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        proc = subprocess.run([CASA_PYTHON, str(script), ms, name, sel["ph_field"], sel["bp_field"],
                               sel["spw"], sel["refant"], str(Path(tmp) / "out")], cwd=tmp,
                              capture_output=True, text=True, env=env, timeout=7200)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"CASA stage {name} failed:\n{proc.stderr[-3000:]}")


# --------------------------------------------------------------------------- driver


def _load_solve_override() -> None:
    """``FASTCAL_BENCH_SOLVE_MODULE=/path/solve_old.py``: time that file as fastcal.solve
    (before/after comparisons of the solver driver in one interleaved run)."""
    path = os.environ.get("FASTCAL_BENCH_SOLVE_MODULE")
    if not path:
        return
    import importlib.util

    spec = importlib.util.spec_from_file_location("fastcal.solve", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["fastcal.solve"] = mod
    spec.loader.exec_module(mod)


def _loadavg() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")


def _child(args: argparse.Namespace) -> None:
    sel = json.loads(args.sel)
    if not args.stage.startswith(("floor_", "casa_")):
        _load_solve_override()
    if args.stage.startswith("floor_"):
        res = stage_floor(args.ms, sel, args.stage.split("_", 1)[1])
    elif args.stage.startswith("casa_"):
        res = stage_casa(args.ms, sel, args.stage)
    elif args.stage.startswith("proc_"):
        res = stage_process(args.ms, sel, args.stage[5:], parallel=not args.serial)
    else:
        res = stage_fastcal(args.ms, sel, args.stage, parallel=not args.serial)
    res.setdefault("rss_mib", _peak_rss_mib())
    print("RESULT " + json.dumps(res))


def _run_stage(ms: str, sel: dict, stage: str, serial: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--ms", ms, "--stage", stage, "--sel", json.dumps(sel)]
    if serial:
        cmd.append("--serial")
    load = _loadavg()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=7200)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            res = json.loads(line[7:])
            res["load"] = load
            return res
    raise RuntimeError(f"stage {stage} failed:\n{proc.stderr[-3000:]}")


FLOOR_OF = {"gain_int": "floor_ph", "gain_inf": "floor_ph", "bandpass": "floor_bp",
            "gain_int_all": "floor_all", "seq_direct": "floor_bp", "seq_cached": "floor_bp"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ms", help="existing MS to benchmark")
    ap.add_argument("--make-gb", type=float, help="simulate an MS of this size (GB) first")
    ap.add_argument("--casa", action="store_true", help="also time casatasks in a subprocess")
    ap.add_argument("--repeat", type=int, default=1, help="runs per stage (best is reported)")
    ap.add_argument("--stages", default="", help="comma-separated subset of stages")
    ap.add_argument("--serial", action="store_true", help="fastcal without threads")
    ap.add_argument("--process", action="store_true",
                    help="also time fresh-process cold calls (proc_* stages: start, import, "
                         "solve, write)")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--merge-json", help="take stages missing from this run from an earlier --json")
    ap.add_argument("--stage", help=argparse.SUPPRESS)
    ap.add_argument("--sel", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.stage:
        _child(args)
        return 0
    ms = args.ms
    if args.make_gb:
        ms = ms or str(BENCH_DIR / f"bench_{args.make_gb:g}gb.ms")
        if not Path(ms).exists():
            BENCH_DIR.mkdir(parents=True, exist_ok=True)
            simulate_large(ms, args.make_gb)
    if not ms:
        ap.error("give --ms or --make-gb")
    sel = _selections(ms)
    size = sum(f.stat().st_size for f in Path(ms).rglob("*") if f.is_file()) / 1e9
    import numba
    import numpy as np

    print(f"# {ms}: {size:.2f} GB, {sel['n_rows']} rows, {sel['n_ant']} antennas, spws {sel['spw']}")
    print(f"# {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
          f"python {platform.python_version()}, numpy {np.__version__}, numba {numba.__version__}")
    stages = ["floor_bp", "floor_ph", "floor_all", "gain_int", "gain_inf", "bandpass",
              "gain_int_all", "seq_direct", "seq_cached"]
    if args.process:
        stages += ["proc_gain_int", "proc_gain_inf", "proc_bandpass", "proc_seq_cached"]
    if args.casa:
        stages += ["casa_gain_int", "casa_gain_inf", "casa_bandpass", "casa_seq", "casa_gain_int_all"]
    if args.stages:
        stages = [s for s in args.stages.split(",") if s]
    for w in ("floor_bp", "floor_ph", "floor_all"):  # warm the page cache
        if w in stages or any(FLOOR_OF.get(s.removeprefix("proc_")) == w for s in stages):
            _run_stage(ms, sel, w)
    all_runs: dict[str, list[dict]] = {st: [] for st in stages}
    for _ in range(args.repeat):  # rounds: floors and solves interleaved, best of the rounds
        for st in stages:
            all_runs[st].append(_run_stage(ms, sel, st, args.serial))
    results = {}
    for st, runs in all_runs.items():
        best = dict(min(runs, key=lambda r: r["wall"]))
        if "cold" in best:
            best["cold"] = min(r["cold"] for r in runs)
        loads = [r["load"] for r in runs]
        best["load"] = f"{min(loads):.1f}-{max(loads):.1f}"
        results[st] = best
    print("wall_s: fastcal warm call (MSInfo already open; CASA: the task call); cold_s: first "
          "call in a process (JIT caches + MS metadata, imports done); proc_*: a fresh process "
          "from start to exit (imports, solve, caltable write); best of the rounds, load = "
          "1-min load average range")
    if args.merge_json:
        old = json.loads(Path(args.merge_json).read_text())["results"]
        results = {**{k: v for k, v in old.items() if k not in results}, **results}
        results = {k: results[k] for k in sorted(results, key=lambda k: (k.startswith("casa_"), k))}
    print(f"{'stage':17s} {'wall_s':>7s} {'cold_s':>7s} {'floor_s':>7s} {'ratio':>6s} {'ratio_cold':>10s} {'rss_MiB':>8s}  notes")
    for st, r in results.items():
        fl = results.get(FLOOR_OF.get(st.removeprefix("proc_"), ""), {}).get("wall")
        if st.startswith("casa_"):
            fl = results.get(FLOOR_OF.get(st[5:], "floor_bp" if "seq" in st else ""), {}).get("wall")
        cold = r.get("cold", r["wall"])
        ratio = f"{r['wall'] / fl:6.2f}" if fl else "      "
        ratio_c = f"{cold / fl:10.2f}" if fl else " " * 10
        notes = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()
                 if k not in ("wall", "rss_mib", "cold")}
        fl_cpu = results.get(FLOOR_OF.get(st, ""), {}).get("cpu")
        if fl_cpu and "cpu" in r:
            notes["cpu_ratio"] = round(r["cpu"] / fl_cpu, 2)  # robust to other jobs' load
        print(f"{st:17s} {r['wall']:7.2f} {cold:7.2f} {fl or 0:7.2f} {ratio} {ratio_c} {r['rss_mib']:8.0f}  {notes}")
    if any(k.startswith("casa_") for k in results):
        print("speed-up vs CASA:")
        for st, cst in (("gain_int", "casa_gain_int"), ("gain_inf", "casa_gain_inf"),
                        ("bandpass", "casa_bandpass"), ("seq_direct", "casa_seq"),
                        ("seq_cached", "casa_seq"), ("gain_int_all", "casa_gain_int_all")):
            if st in results and cst in results:
                c = results[cst]["wall"]
                proc = results.get("proc_" + st, {}).get("wall")
                proc_txt = f"   fresh process {c / proc:6.1f}x" if proc else ""
                print(f"  {st:14s} warm {c / results[st]['wall']:6.1f}x   cold "
                      f"{c / results[st].get('cold', results[st]['wall']):6.1f}x{proc_txt}")
    if args.json:
        Path(args.json).write_text(json.dumps(dict(ms=ms, size_gb=size, results=results), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
