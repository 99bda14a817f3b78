"""wvr: WVR phase correction, applied only when it improves the phases (hifa_wvrgcalflag,
reference sections 6.5 and 8 stage 9).

``fastcal.wvr.solve_wvr`` (wvrgcal defaults) writes the ``T Jones`` table;
``wvr_improvement`` measures 1/median(phase-rms with WVR / without) on the calibrators;
``wvr_qa_score`` gives the pipeline score. The table is registered (``interp='nearest'``,
``calwt=False``) only when there are at least 3 antennas with WVR, at least 20 % of the
antennas have one, and the improvement exceeds ``accept_threshold`` (1.0); otherwise the stage
says why it is not applied. Not in this version: the antenna-flagging iteration of
wvrgcalflag (``fhi_limit`` outliers re-run with ``wvrflag``), ``toffset`` heuristic.

``smooth`` = the correlator integration time (median INTERVAL of the cross-correlation rows),
as the pipeline's ``hm_smooth='automatic'``: the WVR path averaged over each integration, as
the correlator averages the fringe (docs/wvr.md, "Accuracy").

``segsource=True`` (wvrgcal's default: one dT/dL retrieval per source segment). The WVR path
of every antenna is taken relative to the array mean at each time, with one zero point for the
whole track, so the slow wet path between a phase-calibrator scan and the target scan after it
is corrected on the target (an earlier version removed a per-antenna mean per segment, which
left that path uncorrected: SimConfig.demo seed 1 had a 19-20 deg target residual phase instead
of 8 deg and a target flux 4-6 % low; tests/test_pipeline_accuracy.py guards against it).
"""

from __future__ import annotations

import logging

import numpy as np

from fastcal.pipeline.context import Context
from fastcal.pipeline.qa import QAScore
from fastcal.pipeline.stage import OK, SKIPPED, PlotSpec, Stage, StageResult

__all__ = ["WvrStage", "MIN_WVR_ANTENNAS", "MIN_WVR_FRACTION", "ACCEPT_THRESHOLD", "SEGSOURCE",
           "science_int_time"]

logger = logging.getLogger(__name__)

MIN_WVR_ANTENNAS = 3
MIN_WVR_FRACTION = 0.2
ACCEPT_THRESHOLD = 1.0
#: One retrieval and one path zero point for the whole observation (see the module docstring).
SEGSOURCE = True


def science_int_time(vis: str) -> float:
    """Median INTERVAL (s) of the cross-correlation rows (the correlator integration time);
    0.0 when there are none. Read from the first 20000 such rows."""
    from casacore.tables import table

    with table(vis, ack=False) as t:
        sub = t.query("ANTENNA1 != ANTENNA2", columns="INTERVAL", limit=20000)
        try:
            iv = sub.getcol("INTERVAL") if sub.nrows() else np.zeros(0)
        finally:
            sub.close()
    return float(np.median(iv)) if len(iv) else 0.0


class WvrStage(Stage):
    """Solve the WVR correction and register it when it improves the calibrator phases."""

    name = "wvr"
    title = "WVR correction (applied when it improves the phases)"
    simplified = True

    def run(self, ctx: Context) -> StageResult:
        from fastcal.wvr import solve_wvr, wvr_improvement, wvr_qa_score

        if not ctx.wvr_spws:
            return StageResult(self.name, SKIPPED, messages=["no WVR spectral window: no WVR correction"])
        path = ctx.path("calibration", f"{ctx.vis_name}.wvrgcal.tbl")
        smooth = science_int_time(ctx.vis)
        res = ctx.call(solve_wvr, vis=ctx.vis, caltable=path, segsource=SEGSOURCE,
                       smooth=smooth if smooth > 0 else "", overwrite=True)
        st = res.stats
        n_wvr = int(np.sum(st.has_wvr))
        n_ant = len(st.has_wvr)
        outputs = dict(caltable=path, smooth_s=smooth, segsource=SEGSOURCE, n_wvr_antennas=n_wvr,
                       flagged=[a for a, f in zip(st.antenna_names, st.flagged, strict=True) if f],
                       rms_um=np.nan_to_num(st.rms_um).tolist(), disc_um=np.nan_to_num(st.disc_um).tolist())
        if n_wvr < MIN_WVR_ANTENNAS or n_wvr < MIN_WVR_FRACTION * n_ant:
            msg = (f"only {n_wvr} of {n_ant} antennas have WVR data (need >= {MIN_WVR_ANTENNAS} and "
                   f">= {100 * MIN_WVR_FRACTION:.0f}%): WVR correction not applied")
            return StageResult(self.name, OK, outputs=outputs, messages=[msg],
                               qa=[QAScore("wvr_antennas", float(n_wvr), 0.5, msg, "antennas")])
        imp = ctx.call(wvr_improvement, vis=ctx.vis, table=path)
        score, qmsg = wvr_qa_score(float(imp.score), st)
        applied = bool(imp.score > ACCEPT_THRESHOLD)
        if applied:
            ctx.register_table("wvr", path, interp="nearest", calwt=False)
        outputs.update(improvement=float(imp.score), applied=applied,
                       rms_without_deg=np.asarray(imp.rms_without_deg).tolist(),
                       rms_with_deg=np.asarray(imp.rms_with_deg).tolist())
        msgs = [f"WVR improvement {imp.score:.2f}: " + ("applied" if applied else
                f"not applied (needs > {ACCEPT_THRESHOLD:g})"),
                f"smooth={smooth:g} s (integration time); segsource={SEGSOURCE}"]
        return StageResult(
            self.name, OK, outputs=outputs, messages=msgs,
            qa=[QAScore("wvr_improvement", float(imp.score), float(min(max(score, 0.0), 1.0)), qmsg,
                        "rms ratio without/with WVR")],
            plots=[PlotSpec("wvr_phase_rms", "Phase rms per antenna without and with WVR",
                            {"rms_before_deg": outputs["rms_without_deg"],
                             "rms_after_deg": outputs["rms_with_deg"],
                             "antenna_names": list(imp.antenna_names)})])
