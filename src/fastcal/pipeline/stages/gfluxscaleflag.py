"""gfluxscaleflag: outlier flagging of the flux, phase and check calibrators before the flux
scale is derived (hifa_gfluxscaleflag, reference section 8 stage 15).

With the prior tables (antpos, Tsys, WVR) and the bandpass pre-applied, on the flux, phase and
check calibrators (the bandpass calibrator too when it is the flux calibrator):

1. preliminary phase gains, ``calmode='p'``, ``solint='int'`` (the pipeline's
   ``phaseupsolint``), ``minsnr=2``;
2. preliminary amplitude gains, ``calmode='a'``, ``solint='inf'`` (per scan), ``minsnr=2``,
   with the phases pre-applied (fields without a model are solved against 1 Jy, so their
   corrected amplitudes are on a per-field 1 Jy scale: the |corrected| - |model| metric only
   needs a constant level per field);
3. both applied to those fields only (``applymode='calflag'``: samples whose preliminary
   solution failed are flagged, counted as agent ``gfluxscaleflag_applycal``);
4. :func:`fastcal.pipeline.stages.calflag.flag_corrected_outliers` with the pipeline
   thresholds (same as hifa_bandpassflag / the calflag loop: channel, antenna x scan,
   integration and baseline views, and the target flags implied by the phase calibrator).

The preliminary phase solve follows the spwphaseup mapping of the phase calibrator
(:func:`~fastcal.pipeline.stages.spwphaseup.phase_plan`: ``spwmap``, or ``combine='spw'``,
``gaintype='T'`` and ``interp='linearPD'``) in the amplitude pre-apply and the applycal, and
the spw phase-offset table is pre-applied when spwphaseup registered it; without a mapping
the calls are those of the unmapped recipe. The preliminary tables stay in ``working/`` and
are not registered; CORRECTED_DATA of these fields is overwritten by the applycal stage
later. QA: the pipeline's flagged-fraction score of the newly flagged data.
"""

from __future__ import annotations

import logging

from fastcal.pipeline.context import Context
from fastcal.pipeline.stage import OK, SKIPPED, Stage, StageResult
from fastcal.pipeline.stages.calflag import flag_calibrator_outliers, outlier_outputs
from fastcal.pipeline.stages.spwphaseup import (
    calibrator_prior,
    phase_plan,
    solve_phase,
)

__all__ = ["GfluxscaleflagStage"]

logger = logging.getLogger(__name__)


class GfluxscaleflagStage(Stage):
    """Preliminary gains on the flux/phase/check calibrators, then corrected-amplitude flagging."""

    name = "gfluxscaleflag"
    title = "flag outliers of the flux, phase and check calibrators"
    simplified = True
    modifies_flags = True

    def run(self, ctx: Context) -> StageResult:
        from fastcal.apply import applycal
        from fastcal.solve import solve_gains

        fields = list(dict.fromkeys(f for r in ("flux", "phase", "check") for f in ctx.roles.get(r, [])))
        if not fields:
            return StageResult(self.name, SKIPPED, messages=["no flux, phase or check calibrator: nothing to flag"])
        prior = calibrator_prior(ctx, self.name)
        pre = ctx.preapply(*prior)
        plan = phase_plan(ctx)
        spw = ",".join(map(str, ctx.science_spws))
        ph = ctx.path("working", f"{ctx.vis_name}.gfluxscaleflag_ph.tbl")
        amp = ctx.path("working", f"{ctx.vis_name}.gfluxscaleflag_amp.tbl")
        common = dict(vis=ctx.vis, field=",".join(fields), spw=spw, refant=",".join(ctx.refant), minblperant=4,
                      minsnr=2.0, overwrite=True)
        solve_phase(ctx, plan, ph, field=",".join(fields), solint="int", minsnr=2.0, pre=pre)
        ctx.call(solve_gains, caltable=amp, solint="inf", calmode="a", **common,
                 gaintable=pre["gaintable"] + [ph], gainfield=pre["gainfield"] + ["nearest"],
                 interp=pre["interp"] + [plan.interp], spwmap=pre["spwmap"] + [list(plan.spwmap)])
        tabs = ctx.tables(*prior)
        rep = ctx.call(applycal, vis=ctx.vis, field=",".join(fields), spw=spw,
                       gaintable=tabs["gaintable"] + [ph, amp], gainfield=tabs["gainfield"] + ["nearest", "nearest"],
                       interp=tabs["interp"] + [plan.interp, "linear"], spwmap=tabs["spwmap"] + [list(plan.spwmap), []],
                       calwt=tabs["calwt"] + [False, True], applymode="calflag", flagbackup=False)
        ctx.refresh()
        n_apply = int(rep.n_newly_flagged)
        if n_apply:
            ctx.add_flags("gfluxscaleflag_applycal", "# flags from failed preliminary gain solutions "
                          "(applymode='calflag')", n_apply, int(rep.n_samples))
        summary, qa, msgs = flag_calibrator_outliers(ctx, fields, self.name)
        msgs = [f"{summary.n_new} visibilities flagged ({summary.n_target} on targets), "
                f"{n_apply} by failed preliminary solutions",
                f"preliminary phases: {plan.describe()}"] + msgs
        return StageResult(self.name, OK, inputs=dict(fields=fields, prior_tables=prior),
                           outputs=dict(outlier_outputs(summary), n_applycal=n_apply,
                                        tables=dict(phase=ph, amp=amp), phase_spwmap=list(plan.spwmap),
                                        phase_combine=plan.combine),
                           qa=qa, messages=msgs)
