"""qa: the final QA2 checks that exist in this version.

* sensitivity: per target and science spw, the achieved point-source rms against the
  radiometer equation (:func:`fastcal.pipeline.package.theoretical_rms_table`), flagged when
  more than 10 % worse (:func:`~fastcal.pipeline.qa.sensitivity_score`). Achieved rms =
  standard deviation of the imaginary parts of the calibrated (CORRECTED_DATA) unflagged
  cross-correlations of the parallel hands, divided by sqrt(number of samples): the noise of
  the naturally weighted image peak of a point source at the phase centre (whose visibilities
  have no imaginary part); equal weights are assumed.
* a summary score: the lowest QA score of every stage.

Not in this version: Tsys extremes, WVR improvement re-check, flux scale against the
catalogue over time, bandpass amplitude/phase rms and outlier channels, gain-solution
scatter.
"""

from __future__ import annotations

import logging

import numpy as np

from fastcal.pipeline.context import Context
from fastcal.pipeline.qa import QAScore, sensitivity_score
from fastcal.pipeline.stage import OK, SKIPPED, Stage, StageResult

__all__ = ["QA2Stage", "achieved_rms_jy"]

logger = logging.getLogger(__name__)


def achieved_rms_jy(vis, field: str, spw: int) -> tuple[float, int]:
    """(rms in Jy of the point-source flux estimate, number of samples) from CORRECTED_DATA."""
    from fastcal.ms import open_ms, read_block, read_chunks, require_parallel_hands

    info = open_ms(vis)
    if "CORRECTED_DATA" not in info.columns:
        return float("nan"), 0
    ims = []
    for chunk in read_chunks(info, ("CORRECTED_DATA", "FLAG"), field=field, spw=str(spw),
                             include_autocorr=False):
        hands = list(require_parallel_hands(info.pols[chunk.pol_id]))
        for b in range(chunk.n_blocks):
            arr = read_block(chunk, b, ("CORRECTED_DATA", "FLAG"))
            d = arr["CORRECTED_DATA"][:, :, hands]
            good = ~arr["FLAG"][:, :, hands] & np.isfinite(d)
            ims.append(d.imag[good].astype(np.float64))
    v = np.concatenate(ims) if ims else np.zeros(0)
    if v.size < 2:
        return float("nan"), int(v.size)
    return float(np.std(v, ddof=1) / np.sqrt(v.size)), int(v.size)


class QA2Stage(Stage):
    """Sensitivity against the radiometer equation, and the summary of all QA scores."""

    name = "qa"
    title = "QA2 checks (sensitivity vs radiometer equation; summary)"
    simplified = True

    def run(self, ctx: Context) -> StageResult:
        from fastcal.pipeline.package import theoretical_rms_table

        if ctx.results.get("applycal", {}).get("status") != "ok":
            return StageResult(self.name, SKIPPED, messages=["no calibrated data (applycal has not run)"])
        qa: list[QAScore] = []
        rows = []
        for r in theoretical_rms_table(ctx):
            ach, n = achieved_rms_jy(ctx.vis, r["field"], r["spw"])
            r = dict(r, achieved_rms_jy=ach, n_samples=n)
            rows.append(r)
            if np.isfinite(ach) and ach > 0 and np.isfinite(r["rms_jy"]) and r["rms_jy"] > 0:
                qa.append(sensitivity_score(ach, r["rms_jy"], f"{r['field']} spw {r['spw']}"))
        worst = [(s, min(q["score"] for q in res["qa"])) for s, res in ctx.results.items()
                 if res.get("qa") and s != self.name]
        msgs = ["not in this version: Tsys extremes, bandpass noise/outliers, gain scatter, flux "
                "scale history checks"]
        if worst:
            s, w = min(worst, key=lambda x: x[1])
            qa.append(QAScore("lowest_stage_score", w, w, f"lowest stage score: {s} ({w:.2f})", "score"))
        return StageResult(self.name, OK, outputs=dict(sensitivity=rows), qa=qa, messages=msgs)
