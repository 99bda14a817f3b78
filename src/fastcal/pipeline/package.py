"""The delivery package in the output directory (the ALMA QA2 layout, what exists so far).

::

    DIR/README                      dataset, roles, per-spw theoretical rms, QA summary, stages
    DIR/calibration/                caltables (copied in when registered elsewhere),
                                    <vis>.calapply.txt, <vis>.flagtemplate.txt
    DIR/qa/                         qa_scores.json, qa_summary.txt, the HTML weblog when
                                    fastcal.report.weblog is available
    DIR/log/                        fastcal_commands.log (written by the runner), fastcal_pipeline.log
    DIR/script/fastcal_rerun.py     re-runs the recorded fastcal calls on a raw copy of the MS

Theoretical rms per science spw and target (radiometer equation,
:func:`fastcal.pipeline.qa.theoretical_rms_jy`): Tsys = median of the SYSCAL Tsys spectra of
the Tsys spw covering the science spw (same baseband), bandwidth = spw bandwidth times the
fraction of channels the flagdata stage left (TDM edge channels ``edge_channels`` and FDM
baseband-edge channels ``fdm_edge_channels`` removed; :func:`effective_bandwidth_hz`),
time = integration time on the target, N = antennas in the MS, two polarisations, aperture
efficiency 0.7, no correlator/quantisation loss (fastcal's simulator). Spws that flagdata
flagged entirely for low atmospheric transmission (``lowtrans_spws``) get no row (the README
says so). The achieved rms is measured by the qa stage (README column "achieved").
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import replace
from typing import Any

import numpy as np

from fastcal.pipeline.context import CalLibrary, Context, format_calapply_text
from fastcal.pipeline.qa import theoretical_rms_jy
from fastcal.pipeline.stage import COMMANDS_LOG, read_commands_log

__all__ = ["science_spw_tsys", "effective_bandwidth_hz", "lowtrans_spws", "theoretical_rms_table", "write_package", "rerun_script", "stage_notes"]

logger = logging.getLogger(__name__)


def science_spw_tsys(info, science_spws) -> dict[int, float]:
    """Median Tsys (K) per science spw from SYSCAL ({} when there is no SYSCAL).

    The Tsys spw of a science spw is a SYSCAL spw of the same baseband whose frequency range
    covers it (the science spw itself first).
    """
    if not info.has_syscal:
        return {}
    from fastcal.tsys import read_syscal

    sc = read_syscal(info.path)

    def span(s):
        w = np.abs(s.chan_width) / 2
        return float((s.chan_freq - w).min()), float((s.chan_freq + w).max())

    out = {}
    for sid in science_spws:
        sp = info.spws[sid]
        lo, hi = span(sp)
        cands = [sid] if sid in sc.tsys else []
        cands += [t for t in sorted(sc.tsys) if t != sid and info.spws[t].baseband == sp.baseband
                  and span(info.spws[t])[0] <= lo + 1.0 and span(info.spws[t])[1] >= hi - 1.0]
        for t in cands:
            v = np.asarray(sc.tsys[t], np.float64)
            v = v[np.isfinite(v) & (v > 0)]
            if v.size:
                out[sid] = float(np.median(v))
                break
    return out


def _flagdata_outputs(ctx: Context) -> dict[str, Any]:
    return ctx.results.get("flagdata", {}).get("outputs", {}) or {}


def effective_bandwidth_hz(spw, edge_per_side: int = 0, flagged_channels=()) -> float:
    """Bandwidth (Hz) of a spw without its flagged edge channels.

    Parameters
    ----------
    spw : SpwInfo
        ``total_bandwidth`` (Hz) and ``num_chan``; the channels are taken as equally wide.
    edge_per_side : int
        TDM edge channels flagged at each end (flagdata ``edge_channels``).
    flagged_channels : iterable of int
        Other flagged channel indices (flagdata ``fdm_edge_channels``); overlaps with the TDM
        edges and out-of-range indices count once / not at all.

    Returns
    -------
    float
        ``total_bandwidth x n_kept / num_chan`` (0.0 when every channel is flagged).
    """
    n = int(spw.num_chan)
    if n <= 0:
        return 0.0
    k = max(int(edge_per_side), 0)
    gone = set(range(min(k, n))) | set(range(max(n - k, 0), n))
    gone |= {int(c) for c in flagged_channels if 0 <= int(c) < n}
    return float(spw.total_bandwidth) * (n - len(gone)) / n


def lowtrans_spws(ctx: Context) -> list[int]:
    """Science spws the flagdata stage flagged entirely for low transmission ([] if none/not run)."""
    return sorted(int(s) for s in _flagdata_outputs(ctx).get("lowtrans_spws", []) or [])


def theoretical_rms_table(ctx: Context) -> list[dict[str, Any]]:
    """Rows ``{field, spw, tsys_k, bandwidth_hz, time_s, n_ant, rms_jy}`` per target and
    science spw (not for the low-transmission spws; see the module docstring)."""
    info = ctx.info
    tsys = science_spw_tsys(info, ctx.science_spws)
    fd = _flagdata_outputs(ctx)
    edges = {int(k): int(v) for k, v in (fd.get("edge_channels", {}) or {}).items()}
    fdm = {int(k): list(v) for k, v in (fd.get("fdm_edge_channels", {}) or {}).items()}
    low = set(lowtrans_spws(ctx))
    tos = ctx.ms.get("time_on_source_s", {})
    n_ant = len(info.antennas)
    diam = float(np.median([a.dish_diameter for a in info.antennas]))
    rows = []
    for f in ctx.roles.get("target", []):
        for sid in ctx.science_spws:
            if sid in low:
                continue
            bw = effective_bandwidth_hz(info.spws[sid], edges.get(sid, 0), fdm.get(sid, ()))
            t = float(tos.get(f, 0.0))
            rms = (theoretical_rms_jy(tsys[sid], bw, t, n_ant, dish_diameter_m=diam)
                   if sid in tsys and t > 0 and n_ant >= 2 and bw > 0 else float("nan"))
            rows.append(dict(field=f, spw=sid, tsys_k=tsys.get(sid, float("nan")), bandwidth_hz=bw,
                             time_s=t, n_ant=n_ant, rms_jy=rms))
    return rows


def rerun_script(ctx: Context) -> str:
    """Text of ``script/fastcal_rerun.py``: the commands log as a script taking the MS path."""
    log = ctx.path(COMMANDS_LOG)
    calls = read_commands_log(log) if os.path.isfile(log) else []
    modules = sorted({name.rpartition(".")[0] for name, _ in calls})
    lines = [
        "#!/usr/bin/env python",
        f'"""Re-run the fastcal calibration of {ctx.vis_name} from the raw MS.',
        "",
        "Usage: python fastcal_rerun.py [VIS]   (default: the MS the pipeline ran on).",
        "The MS is modified in place (FLAG, calibration columns): run it on a copy of the raw MS.",
        '"""',
        "import sys",
        "",
        *[f"import {m}" for m in modules],
        "",
        f"VIS = sys.argv[1] if len(sys.argv) > 1 else {ctx.vis!r}",
        "",
    ]
    for name, kwargs in calls:
        args = ", ".join(("vis=VIS" if k == "vis" else f"{k}={v!r}") for k, v in kwargs.items())
        lines.append(f"{name}({args})")
    return "\n".join(lines) + "\n"


def _copy_tables(ctx: Context, caldir: str) -> CalLibrary:
    """Copy registered tables into calibration/; returns the library pointing at the copies."""
    entries = []
    for e in ctx.callib:
        src = os.path.abspath(e.path)
        dst = os.path.join(caldir, os.path.basename(src.rstrip("/")))
        if os.path.dirname(src) != caldir:
            if os.path.isdir(src):
                shutil.rmtree(dst, ignore_errors=True)
                shutil.copytree(src, dst)
            else:
                logger.warning("registered caltable %s does not exist; not copied", src)
                dst = src
        entries.append(replace(e, path=dst))
    return CalLibrary(entries)


def _readme(ctx: Context, rms_rows, qa_rows, notes) -> str:
    ms = ctx.ms
    L = [f"fastcal calibration package for {ctx.vis_name}", "=" * 60, "",
         f"Measurement Set: {ctx.vis}",
         f"Telescope: {ms.get('telescope', '')}; antennas: {ms.get('n_ant', '?')}; "
         f"science spws: {', '.join(map(str, ctx.science_spws)) or 'none'}",
         f"Roles ({ctx.roles_source or 'not set'}): "
         + "; ".join(f"{r}={', '.join(v)}" for r, v in ctx.roles.items()),
         f"Reference antennas: {', '.join(ctx.refant) or 'not ranked'}", "",
         "Stages", "------"]
    for name, r in ctx.results.items():
        if name == ctx.current_stage:
            continue
        L.append(f"  {name:12s} {r.get('status', ''):16s} {r.get('duration_s', 0.0):7.2f} s")
        if r.get("status") == "failed" and r.get("error"):
            L.append(f"  {'':12s} error: {r['error']}")
    if ctx.current_stage:
        L.append(f"  {ctx.current_stage:12s} (this package)")
    fallbacks = stage_notes(ctx)
    if fallbacks:
        L += ["", "Fallbacks and skipped stages", "-" * 28, *[f"  {n:12s} {m}" for n, m in fallbacks]]
    achieved = {(r["field"], r["spw"]): r.get("achieved_rms_jy") for r in
                ctx.results.get("qa", {}).get("outputs", {}).get("sensitivity", [])}
    L += ["", "Sensitivity (theoretical: radiometer equation; achieved: calibrated target data)",
          "-" * 60, f"  {'field':16s} {'spw':>4s} {'Tsys(K)':>8s} {'BW(MHz)':>8s} {'t(s)':>7s} "
          f"{'theor.(mJy)':>12s} {'achieved(mJy)':>14s}"]
    for r in rms_rows:
        a = achieved.get((r["field"], r["spw"]))
        a_txt = f"{1e3 * a:14.4f}" if a is not None and np.isfinite(a) else f"{'not measured':>14s}"
        L.append(f"  {r['field']:16s} {r['spw']:4d} {r['tsys_k']:8.1f} {r['bandwidth_hz'] / 1e6:8.1f} "
                 f"{r['time_s']:7.1f} {1e3 * r['rms_jy']:12.4f} {a_txt}")
    if not rms_rows:
        L.append("  (no target field, or no importdata stage yet)")
    low = lowtrans_spws(ctx)
    if low:
        L.append(f"  spws {', '.join(map(str, low))}: flagged for low atmospheric transmission (flagdata), "
                 f"no theoretical rms")
    fluxes = ctx.results.get("fluxscale", {}).get("outputs", {}).get("fluxes", {})
    L += ["", "Calibrator fluxes (fluxscale)", "-" * 29]
    for name, f in fluxes.items():
        L.append(f"  {name:16s} {f['flux_jy']:.4f} +- {f['flux_err_jy']:.4f} Jy at "
                 f"{f['ref_freq_hz'] / 1e9:.3f} GHz, spectral index {f['spix']:.2f}")
    if not fluxes:
        L.append("  (fluxscale has not run)")
    L += ["", "QA summary", "----------"]
    for q in qa_rows:
        L.append(f"  {q['stage']:12s} {q['name']:28s} score {q['score']:.2f} ({q['colour']}): {q['message']}")
    if notes:
        L += ["", "Notes", "-----", *[f"  - {n}" for n in notes]]
    return "\n".join(L) + "\n"


def stage_notes(ctx: Context) -> list[tuple[str, str]]:
    """(stage, message) of the fallbacks and reasons worth reading in the README: every
    message of importdata (roles, spw roles, missing SYSCAL/WVR) and of skipped stages, and
    the ``outputs["fallbacks"]`` messages of any other stage (e.g. the wvr stage's
    improvement check on the phase calibrator only)."""
    out = []
    for name, r in ctx.results.items():
        if name == "importdata" or r.get("status") == "skipped":
            out += [(name, m) for m in r.get("messages", [])]
        else:
            out += [(name, str(m)) for m in (r.get("outputs") or {}).get("fallbacks", []) or []]
    return out


def _failure_notes(ctx: Context) -> list[str]:
    failed = [(n, r) for n, r in ctx.results.items() if r.get("status") == "failed"]
    return [f"the run stopped: stage {n!r} failed ({r.get('error', '')}); the stages after it did not "
            f"run. Fix the cause and run fastcal pipeline again with the same --out to resume"
            for n, r in failed]


def write_package(ctx: Context) -> dict[str, Any]:
    """Write the package into ``ctx.out_dir`` (see the module docstring); returns what was written."""
    out = ctx.out_dir
    caldir = os.path.dirname(ctx.path("calibration", "x"))
    notes: list[str] = []
    lib = _copy_tables(ctx, caldir)
    tables = [e.path for e in lib]
    calapply = os.path.join(caldir, f"{ctx.vis_name}.calapply.txt")
    calls = ctx.calapply_calls(lib, relative_to=caldir)
    with open(calapply, "w", encoding="utf-8") as f:
        f.write(format_calapply_text(calls, ctx.vis_name))
    if not calls:
        notes.append("no calibration table registered yet: calapply.txt lists no applycal call")
    template = os.path.join(caldir, f"{ctx.vis_name}.flagtemplate.txt")
    with open(template, "w", encoding="utf-8") as f:
        f.write(f"# flags added by the fastcal pipeline to {ctx.vis_name} (CASA flagdata list syntax)\n")
        for fr in ctx.flags:
            of = f" of {fr.n_total}" if fr.n_total else ""
            f.write(f"# stage {fr.stage}, agent {fr.agent}: {fr.n_new}{of} visibilities newly flagged\n")
            f.write(fr.command + "\n")
    qa_rows = [dict(stage=s, **q) for s, r in ctx.results.items() for q in r.get("qa", [])]
    qadir = os.path.dirname(ctx.path("qa", "x"))
    with open(os.path.join(qadir, "qa_scores.json"), "w", encoding="utf-8") as f:
        json.dump(qa_rows, f, indent=1)
    rms_rows = theoretical_rms_table(ctx) if ctx.ms else []
    weblog = None
    try:
        from fastcal.report.weblog import render_weblog  # written by the report helper
    except ImportError:
        notes.append("HTML weblog not produced: fastcal.report.weblog is not available in this version")
    else:
        try:
            info = {"Measurement Set": ctx.vis, "Antennas": ctx.ms.get("n_ant", ""),
                    "Science spws": ", ".join(map(str, ctx.science_spws)),
                    "Roles": "; ".join(f"{r}={', '.join(v)}" for r, v in ctx.roles.items()),
                    "Reference antennas": ", ".join(ctx.refant)}
            weblog = str(render_weblog(ctx.results, qadir, title=f"fastcal pipeline: {ctx.vis_name}",
                                       info=info))
        except Exception as exc:  # the package must still be written
            logger.warning("weblog rendering failed: %s", exc)
            notes.append(f"HTML weblog rendering failed: {exc}")
    notes += _failure_notes(ctx)
    not_impl = [s for s, r in ctx.results.items() if r.get("status") == "not_implemented"]
    if not_impl:
        notes.append(f"stages not implemented in this version: {', '.join(not_impl)}; the MS is "
                     f"NOT fully calibrated")
    readme = os.path.join(out, "README")
    text = _readme(ctx, rms_rows, qa_rows, notes)
    with open(readme, "w", encoding="utf-8") as f:
        f.write(text)
    with open(os.path.join(qadir, "qa_summary.txt"), "w", encoding="utf-8") as f:
        f.write(text)
    script = ctx.path("script", "fastcal_rerun.py")
    with open(script, "w", encoding="utf-8") as f:
        f.write(rerun_script(ctx))
    os.chmod(script, 0o755)
    return dict(readme=readme, calapply=calapply, flagtemplate=template, tables=tables, weblog=weblog,
                script=script, theoretical_rms=rms_rows, notes=notes)
