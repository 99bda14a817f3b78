"""tsys: the Tsys table (h_tsyscal + hifa_tsysflag, reference section 8 stages 6-7).

``fastcal.tsys.tsys_table`` builds the ``B TSYS`` table from SYSCAL, ``flag_tsys`` flags it
with the hifa_tsysflag metrics (the flagged copy is the one registered), and ``tsys_spwmap``
(``chantol=1``, as h_tsyscal) maps the science spws onto the Tsys spws. The table is
registered with ``interp='linear,linear'``, that spw map and ``calwt=True``; ``gainfield`` is
"" (every field, time-interpolated) in this version, not the pipeline's per-intent field
mapping. Without SYSCAL the stage is skipped with a message (documented fallback).
"""

from __future__ import annotations

import logging

from fastcal.pipeline.context import Context
from fastcal.pipeline.qa import QAScore, flagged_fraction_score
from fastcal.pipeline.stage import OK, SKIPPED, PlotSpec, Stage, StageResult

__all__ = ["TsysStage"]

logger = logging.getLogger(__name__)


class TsysStage(Stage):
    """Tsys table from SYSCAL, hifa_tsysflag flagging, Tsys spw map; registered for applycal."""

    name = "tsys"
    title = "Tsys table, tsysflag, Tsys spw map"
    simplified = True

    def run(self, ctx: Context) -> StageResult:
        from fastcal.tsys import flag_tsys, tsys_spwmap, tsys_table

        if not ctx.info.has_syscal:
            return StageResult(self.name, SKIPPED, messages=[
                "no SYSCAL table: Tsys calibration is not applied (amplitudes stay in correlator units)"])
        raw = ctx.path("working", f"{ctx.vis_name}.tsyscal.raw.tbl")
        final = ctx.path("calibration", f"{ctx.vis_name}.tsyscal.tbl")
        ctx.call(tsys_table, vis=ctx.vis, caltable=raw, overwrite=True)
        table, report = ctx.call(flag_tsys, caltable=raw, vis=ctx.vis, output=final, overwrite=True)
        spwmap = ctx.call(tsys_spwmap, vis=ctx.vis, tsystable=final, trim=False, chantol=1)
        spwmap = [int(s) for s in spwmap]
        ctx.register_table("tsys", final, interp="linear,linear", spwmap=spwmap, calwt=True)
        measured = {int(s) for s in table.spw_ids}
        unmapped = [s for s in ctx.science_spws if (spwmap[s] if s < len(spwmap) else s) not in measured]
        qa = [flagged_fraction_score(float(report.flagged_after), "Tsys values")]
        msgs = [report.summary()]
        if unmapped:
            msgs.append(f"science spw(s) {unmapped} have no Tsys spw (mapped to themselves)")
            qa.append(QAScore("tsys_unmapped_spws", float(len(unmapped)), 0.5,
                              f"science spws without a Tsys spw: {unmapped}", "spws"))
        return StageResult(self.name, OK, inputs=dict(chantol=1),
                           outputs=dict(caltable=final, spwmap=spwmap, flagged_before=report.flagged_before,
                                        flagged_after=report.flagged_after, new_flags=dict(report.new_flags)),
                           qa=qa, messages=msgs,
                           plots=[PlotSpec("tsys", "Tsys spectra per antenna", {"table": final})])
