"""applycal: apply the calibration library (hif_applycal, reference section 8 stage 19).

The context's cal library is written as an ALMA ``*.calapply.txt`` (absolute table paths,
``working/``) and applied with :func:`fastcal.calapply.apply_calapply`, so the commands log
replays exactly the same calls (``applymode='calflag'``, CASA's default; the runner keeps the
flag backup). Each (field, intent) line gets the tables registered for that intent, so the
per-intent Tsys entries of the tsys stage (``tsys``: each field its own Tsys via
``gainfield='nearest'``; ``tsys_<intent>``: an explicit Tsys field list) land on the right
lines. Calibrator flags propagate to the target here too: a target integration whose
bracketing phase-calibrator solution is flagged is flagged (``calflag``). QA: the pipeline's applycal-agent score of the newly flagged fraction (linear
1 at 5 % -> 0 at 60 %).
"""

from __future__ import annotations

import logging

from fastcal.errors import ParameterError
from fastcal.pipeline.context import Context, format_calapply_text
from fastcal.pipeline.qa import agent_flagged_score
from fastcal.pipeline.stage import OK, Stage, StageResult

__all__ = ["ApplycalStage", "field_intents"]

logger = logging.getLogger(__name__)


def field_intents(info) -> dict[int, list[str]]:
    """Field id -> the intents of its scans (first-seen order)."""
    out: dict[int, list[str]] = {}
    for s in info.scans:
        for f in s.field_ids:
            for i in s.intents:
                if i not in out.setdefault(f, []):
                    out[f].append(i)
    return out


class ApplycalStage(Stage):
    """Write CORRECTED_DATA (and flags, weights) from the registered tables."""

    name = "applycal"
    title = "apply the calibration"
    modifies_flags = True

    def run(self, ctx: Context) -> StageResult:
        from fastcal.calapply import apply_calapply

        calls = ctx.calapply_calls()
        if not calls:
            raise ParameterError("no calibration table is registered for any science intent; run the "
                                 "calibration stages first")
        path = ctx.path("working", f"{ctx.vis_name}.calapply.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write(format_calapply_text(calls, ctx.vis_name))
        reports = ctx.call(apply_calapply, vis=ctx.vis, calapply=path, applymode="calflag", flagbackup=False)
        ctx.refresh()
        n = sum(int(r.n_samples) for r in reports)
        new = sum(int(r.n_newly_flagged) for r in reports)
        if new:
            ctx.add_flags("applycal", "# flags from solutions flagged in the applied tables (applymode='calflag')",
                          new, n)
        frac = new / n if n else 0.0
        return StageResult(self.name, OK, inputs=dict(calapply=path, applymode="calflag"),
                           outputs=dict(calapply=path, n_samples=n, n_newly_flagged=new,
                                        calls=[dict(field=c.field, intent=c.intent, tables=list(c.gaintable))
                                               for c in calls]),
                           qa=[agent_flagged_score(frac, "applycal")])
