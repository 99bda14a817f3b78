"""End-to-end accuracy and time of the whole recipe on a larger simulated dataset (issue 8, §5).

    python benchmarks/bench_pipeline.py --n-ant 20 --n-cycles 8 [--n-chan 64] [--seed 1]

Simulates ``SimConfig.demo`` with the given size and every corruption on, runs ``fastcal
pipeline`` on it (flux-calibrator model from the truth, as a catalogue would give), and prints:

* seconds per stage and in total, and the MS size;
* the bootstrapped phase-calibrator flux against the truth (goal: within 2 %);
* per science spw: calibrated phase-calibrator and target flux / truth (goal: target within
  3 %), the decorrelation the unseen path predicts, and the target's residual phase rms
  against the unseen path plus noise.

The test suite asserts the same quantities on a small dataset (tests/test_pipeline_accuracy.py);
this script is for the closing notes and docs/pipeline.md. Nothing is committed.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np

from fastcal.pipeline import run
from fastcal.pipeline.accuracy import field_flux_ratio, transfer_prediction
from fastcal.simulate import SimConfig, simulate


def _dir_size_gb(path: str) -> float:
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total / 1e9


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-ant", type=int, default=20)
    p.add_argument("--n-cycles", type=int, default=8)
    p.add_argument("--n-spw", type=int, default=2)
    p.add_argument("--n-chan", type=int, default=64)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--dir", default=None, help="work directory (default: a temporary one)")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)

    work = args.dir or tempfile.mkdtemp(prefix="fastcal-bench-pipeline-")
    os.makedirs(work, exist_ok=True)
    ms = os.path.join(work, "bench.ms")
    t0 = time.perf_counter()
    truth = simulate(ms, config=SimConfig.demo(seed=args.seed, n_ant=args.n_ant, n_spw=args.n_spw,
                                                n_chan=args.n_chan, n_cycles=args.n_cycles),
                     overwrite=True)
    t_sim = time.perf_counter() - t0
    fid = truth.field_id("bandpass")
    catalogue = [{"field": truth.field_names[fid], "fluxdensity": float(truth.field_flux_jy[fid]),
                  "spix": [float(truth.field_spix[fid])], "reffreq": float(truth.flux_ref_freq_hz)}]
    t0 = time.perf_counter()
    res = run(ms, os.path.join(work, "out"), restart=True, options={"setjy_models": catalogue})
    t_run = time.perf_counter() - t0
    ctx = res.context

    pid, tid = truth.field_id("phase"), truth.field_id("target")
    f = ctx.results["fluxscale"]["outputs"]["fluxes"][truth.field_names[pid]]
    true_jy = float(truth.model_flux(pid, f["ref_freq_hz"]))
    phase = {r.spw: r.ratio for r in field_flux_ratio(ms, truth, pid)}
    spws = []
    for k, r in enumerate(field_flux_ratio(ms, truth, tid)):
        pred = transfer_prediction(truth, k)
        spws.append({
            "spw": r.spw, "phasecal_ratio": phase[r.spw], "target_ratio": r.ratio,
            "predicted_target_ratio": phase[r.spw] * pred.coherence,
            "target_phase_rms_deg": r.phase_rms_deg,
            "unseen_plus_noise_deg": float(np.hypot(pred.rms_deg, r.noise_phase_deg)),
        })
    out = {
        "ms_gb": _dir_size_gb(ms), "n_ant": args.n_ant, "n_cycles": args.n_cycles,
        "simulate_s": t_sim, "pipeline_s": t_run,
        "stage_s": {name: r.get("duration_s") for name, r in ctx.results.items()},
        "stage_status": {name: r.get("status") for name, r in ctx.results.items()},
        "phasecal_flux_ratio": f["flux_jy"] / true_jy, "spws": spws,
    }
    print(f"MS {out['ms_gb']:.3f} GB, {args.n_ant} antennas, {args.n_cycles} cycles; "
          f"simulate {t_sim:.1f} s, pipeline {t_run:.1f} s")
    for name, sec in out["stage_s"].items():
        print(f"  {name:16s} {out['stage_status'][name]:8s} {sec if sec is not None else float('nan'):7.2f} s")
    print(f"phase-calibrator bootstrapped flux / truth: {out['phasecal_flux_ratio']:.4f}")
    for s in spws:
        print(f"  spw {s['spw']}: phase cal {s['phasecal_ratio']:.4f}  target {s['target_ratio']:.4f} "
              f"(predicted {s['predicted_target_ratio']:.4f})  target phase rms "
              f"{s['target_phase_rms_deg']:.1f} deg (unseen+noise {s['unseen_plus_noise_deg']:.1f})")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=1)
    return out


if __name__ == "__main__":
    main()
