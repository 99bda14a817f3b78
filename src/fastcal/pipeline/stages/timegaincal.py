"""timegaincal: the final phase and amplitude tables (hifa_timegaincal, reference section 8
stage 17), simplified.

With the prior tables (antpos, Tsys, WVR), the bandpass and, when spwphaseup registered it,
the spw phase-offset table pre-applied, and the calibrator models from setjy/fluxscale:

* ``phase_int``: ``calmode='p'``, ``solint='int'``, ``minsnr=2`` on every calibrator; applied
  to the calibrators (``intents=CALIBRATE_*``, ``gainfield='nearest'``: each calibrator its own
  solutions);
* ``phase_scan``: ``calmode='p'``, ``solint='inf'`` (per scan), ``minsnr=3`` on the phase
  calibrator(s); applied to the target and check source with ``gainfield`` = the phase
  calibrator(s), ``interp='linear'``;
* ``amp_scan``: ``calmode='a'``, ``solint='inf'`` (per scan), ``minsnr=2`` on every calibrator
  with ``phase_int`` pre-applied; applied to the calibrators (``gainfield='nearest'``) and to
  the target/check (``gainfield`` = phase calibrator), ``calwt=True``.

Spw mapping (the pipeline's ``get_phaseup_overrides``): both phase tables follow the
spwphaseup mapping of the phase calibrator
(:func:`~fastcal.pipeline.stages.spwphaseup.phase_plan`). Narrow-to-wide: every spw is solved
and the tables are registered (and pre-applied to the amplitude solve) with the ``spwmap``,
so a low-SNR spw gets the phases of its mapped spw. Combination: solved with
``combine='spw'``, ``gaintype='T'`` per spw group, registered with the combination ``spwmap``
and ``interp='linearPD'``. Amplitudes stay per spw. Without spwphaseup, or when it mapped
nothing, the calls and tables are those of the unmapped recipe.

QA: phase-transfer stability (:func:`~fastcal.pipeline.qa.phase_transfer_score`, median
over antennas of the phase change between consecutive phase-calibrator scans, over the spws
that carry solutions), flagged fraction of the solutions, and the number of antennas whose
per-scan amplitude lies outside 0.5-1.5 x median (hif_lowgainflag limits; reported, not
flagged, in this version). Not in this version: the shorter combined-spw ``solint`` for the
per-integration table, refantmode strict, diagnostic tables.
"""

from __future__ import annotations

import logging

import numpy as np

from fastcal.errors import ParameterError
from fastcal.pipeline.context import Context
from fastcal.pipeline.qa import (
    QAScore,
    flagged_fraction_score,
    lowgain_outliers,
    phase_transfer_score,
)
from fastcal.pipeline.stage import OK, PlotSpec, Stage, StageResult
from fastcal.pipeline.stages.bandpass import flagged_fraction
from fastcal.pipeline.stages.spwphaseup import (
    OFFSETS_TABLE,
    calibrator_prior,
    phase_plan,
    solve_phase,
)

__all__ = ["TimegaincalStage", "scan_phase_rms"]

logger = logging.getLogger(__name__)

CAL_INTENTS = ["CALIBRATE_*"]
TARGET_INTENTS = ["OBSERVE_TARGET*", "OBSERVE_CHECK*"]


def scan_phase_rms(table, spws, refant_index: int | None = None) -> QAScore:
    """Phase-transfer score from a per-scan phase table: for each antenna, spw and pol, the
    phases of consecutive solutions (scans); the reported value is the median over
    antenna/spw/pol of the rms phase change (the refant is skipped)."""
    rms = []
    for s in spws:
        try:
            sol = table.solutions(int(s))
        except Exception:
            continue
        p = np.asarray(sol.params)[:, :, 0, :]  # (time, ant, pol)
        f = np.asarray(sol.flag)[:, :, 0, :]
        ph = np.degrees(np.angle(p))
        ph[f] = np.nan
        for a in range(ph.shape[1]):
            if a == refant_index:
                continue
            for c in range(ph.shape[2]):
                q = phase_transfer_score(ph[:, a, c])
                if np.isfinite(q.value):
                    rms.append(q.value)
    if not rms:
        return QAScore("phase_transfer", float("nan"), 0.5,
                       "fewer than two phase-calibrator scans: phase transfer cannot be assessed", "deg")
    med = float(np.median(rms))
    q = phase_transfer_score([0.0, med])  # the mapping of a single step of size `med`
    return QAScore("phase_transfer", med, q.score,
                   f"median over antennas of the rms phase change between phase-calibrator scans "
                   f"{med:.1f} deg", "deg")


class TimegaincalStage(Stage):
    """Final phase (per integration / per scan) and amplitude (per scan) tables."""

    name = "timegaincal"
    title = "phase and amplitude gains vs time"
    simplified = True

    def run(self, ctx: Context) -> StageResult:
        from fastcal.solve import solve_gains

        cals = list(dict.fromkeys(f for r in ("bandpass", "flux", "phase", "polarization")
                                  for f in ctx.roles.get(r, [])))
        phase = ctx.roles.get("phase", [])
        if not phase:
            raise ParameterError("no phase calibrator in the context; run importdata first")
        prior = calibrator_prior(ctx, self.name)
        pre = ctx.preapply(*prior)
        plan = phase_plan(ctx)
        spw = ",".join(map(str, ctx.science_spws))
        refant = ",".join(ctx.refant)
        paths = {k: ctx.path("calibration", f"{ctx.vis_name}.{k}.tbl") for k in ("phase_int", "phase_scan", "amp_scan")}
        common = dict(vis=ctx.vis, spw=spw, refant=refant, minblperant=4, overwrite=True)
        t_int = solve_phase(ctx, plan, paths["phase_int"], field=",".join(cals), solint="int", minsnr=2.0, pre=pre)
        t_scan = solve_phase(ctx, plan, paths["phase_scan"], field=",".join(phase), solint="inf", minsnr=3.0,
                             pre=pre)
        t_amp = ctx.call(solve_gains, caltable=paths["amp_scan"], field=",".join(cals), solint="inf",
                         calmode="a", minsnr=2.0, **common,
                         gaintable=pre["gaintable"] + [paths["phase_int"]], gainfield=pre["gainfield"] + ["nearest"],
                         interp=pre["interp"] + [plan.interp], spwmap=pre["spwmap"] + [list(plan.spwmap)])
        pf = ",".join(phase)
        ctx.register_table("phase_int", paths["phase_int"], interp=plan.interp, gainfield="nearest",
                           spwmap=list(plan.spwmap), calwt=False, intents=CAL_INTENTS)
        ctx.register_table("phase_scan", paths["phase_scan"], interp=plan.interp, gainfield=pf,
                           spwmap=list(plan.spwmap), calwt=False, intents=TARGET_INTENTS)
        ctx.register_table("amp_cal", paths["amp_scan"], interp="linear", gainfield="nearest", calwt=True,
                           intents=CAL_INTENTS)
        ctx.register_table("amp_target", paths["amp_scan"], interp="linear", gainfield=pf, calwt=True,
                           intents=TARGET_INTENTS)
        ref_idx = ctx.info.antenna_names.index(ctx.refant[0]) if ctx.refant else None
        solved = sorted({plan.spwmap[s] if s < len(plan.spwmap) else s for s in ctx.science_spws})  # solutions used
        qa = [scan_phase_rms(t_scan, solved, ref_idx)]
        flagged = {k: flagged_fraction(t, sp) for k, t, sp in
                   (("phase_int", t_int, solved), ("phase_scan", t_scan, solved), ("amp_scan", t_amp, ctx.science_spws))}
        qa.append(flagged_fraction_score(max(flagged.values()), "gain solutions (worst table)"))
        amps = []
        for s in ctx.science_spws:
            try:
                sol = t_amp.solutions(int(s))
            except Exception:
                continue
            a = np.abs(np.asarray(sol.params)).astype(np.float64)
            a[np.asarray(sol.flag, bool)] = np.nan
            amps.append(a.reshape(a.shape[0], a.shape[1], -1))
        low = []
        if amps:  # per field would be better; the amplitudes are on the Jy scale after fluxscale
            allamp = np.concatenate(amps, axis=2)
            out = lowgain_outliers(allamp)
            low = [ctx.info.antenna_names[i] for i in np.flatnonzero(out.any(axis=(0, 2)))]
        msgs = [f"phase solutions: {plan.describe()}"
                + ("; spw phase offsets pre-applied" if OFFSETS_TABLE in prior else ""),
                "simplified: 'int' phase solint also when spws are combined, no diagnostic tables"]
        if low:
            msgs.append(f"antennas with per-scan amplitudes outside 0.5-1.5 x median: {', '.join(low)} "
                        f"(reported here, not flagged; the lowgainflag stage flags such antennas)")
        return StageResult(
            self.name, OK, inputs=dict(calibrators=cals, phase=phase, prior_tables=prior),
            outputs=dict(tables=paths, flagged_fraction=flagged, low_gain_antennas=low,
                         phase_spwmap=list(plan.spwmap), phase_combine=plan.combine, phase_interp=plan.interp),
            qa=qa, messages=msgs,
            plots=[PlotSpec("gain_vs_time", "Gain phase vs time (per integration)", {"table": paths["phase_int"]}),
                   PlotSpec("gain_vs_time", "Gain amplitude vs time (per scan)", {"table": paths["amp_scan"]})])
