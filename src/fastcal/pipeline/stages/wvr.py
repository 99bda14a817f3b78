"""wvr: WVR phase correction with the wvrgcalflag antenna iteration, applied only when it
improves the phases (hifa_wvrgcalflag, reference sections 6.5 and 8 stage 9).

``fastcal.wvr.solve_wvr`` (wvrgcal defaults) writes the ``T Jones`` table;
``wvr_improvement`` measures 1/median(phase-rms with WVR / without) on the calibrators and
gives the per-antenna view ``ratio`` (median over the scans of rms with / without);
``wvr_qa_score`` gives the pipeline score. With fewer than 3 antennas with WVR or fewer than
20 % of the antennas, the table is not applied.

**Antenna iteration** (:func:`wvr_outlier_antennas`): an antenna whose WVR makes its phases
much worse than the others' (``ratio - median > fhi_limit x MAD`` over the antennas, the
pipeline's ``flag_hi`` rule with ``fhi_limit=10`` and ``fhi_minsample=5``, MAD unscaled as in
the pipeline's flagging rules), or whose WVR channels disagree (``Disc`` above 500 um and
above the median Disc by ``fhi_limit x MAD``: a broken radiometer, not a cloud that every
antenna sees), is added to ``wvrflag`` (its path interpolated from its neighbours, wvrgcal's
way) and the table is solved again; at most ``MAX_FLAG_ITER`` (2) re-solves, stopping when
no new antenna is found, and never flagging so many that fewer than 3 antennas keep their own
WVR. Every iteration (wvrflag, improvement, per-antenna ratio and Disc) is recorded in
``outputs["iterations"]``. The final table is registered (``interp='nearest'``,
``calwt=False``) when its improvement exceeds ``accept_threshold`` (1.0, the pipeline's
"> 1.0"). Not in this version: the ``toffset`` heuristic.

**Improvement check fallback**: ``wvr_improvement`` uses the phase and bandpass calibrators
(its default). When that fails because one of them has no usable data (``SelectionError`` or
``SolveError``, e.g. every bandpass-calibrator row of the science spws flagged), the check is
done again on the phase calibrator only (``intents=['PHASE']``) for this and every later
iteration; the fallback is logged (warning), said in the messages and recorded in
``outputs["improvement_intents"]`` and ``outputs["fallbacks"]`` (which the README lists under
"Fallbacks and skipped stages"); the failed call is dropped from the commands log (it wrote
nothing). If the phase calibrator alone fails too, the stage fails with that error.

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
from typing import Any

import numpy as np

from fastcal.errors import ParameterError, SelectionError, SolveError
from fastcal.pipeline.context import Context
from fastcal.pipeline.qa import QAScore
from fastcal.pipeline.stage import OK, SKIPPED, PlotSpec, Stage, StageResult

__all__ = ["WvrStage", "MIN_WVR_ANTENNAS", "MIN_WVR_FRACTION", "ACCEPT_THRESHOLD", "SEGSOURCE",
           "FHI_LIMIT", "FHI_MINSAMPLE", "MAX_FLAG_ITER", "FALLBACK_INTENTS", "science_int_time",
           "wvr_outlier_antennas"]

logger = logging.getLogger(__name__)

MIN_WVR_ANTENNAS = 3
MIN_WVR_FRACTION = 0.2
ACCEPT_THRESHOLD = 1.0
#: One retrieval and one path zero point for the whole observation (see the module docstring).
SEGSOURCE = True
#: wvrgcalflag ``flag_hi`` rule: outlier when value - median > FHI_LIMIT x MAD (>= FHI_MINSAMPLE values).
FHI_LIMIT = 10.0
FHI_MINSAMPLE = 5
#: Re-solves with a larger ``wvrflag`` at most.
MAX_FLAG_ITER = 2
#: Disc (um) above which a Disc outlier counts as a broken radiometer (the pipeline QA limit).
DISC_LIMIT_UM = 500.0
#: Intents of the improvement check when the default (phase + bandpass calibrators) fails.
FALLBACK_INTENTS = ("PHASE",)


def _flag_hi(values: np.ndarray, limit: float, minsample: int) -> np.ndarray:
    """Mask of finite values with value - median > limit x MAD (unscaled); none with fewer
    than `minsample` finite values."""
    v = np.asarray(values, np.float64)
    ok = np.isfinite(v)
    out = np.zeros(v.shape, bool)
    if ok.sum() < minsample:
        return out
    med = float(np.median(v[ok]))
    mad = float(np.median(np.abs(v[ok] - med)))
    out[ok] = v[ok] - med > limit * mad
    return out


def wvr_outlier_antennas(ratio: np.ndarray, disc_um: np.ndarray, usable: np.ndarray, *,
                         fhi_limit: float = FHI_LIMIT, minsample: int = FHI_MINSAMPLE,
                         disc_limit_um: float = DISC_LIMIT_UM) -> list[int]:
    """Antennas whose own WVR should be flagged (wvrflag), see the module docstring.

    Parameters
    ----------
    ratio : float (n_ant,)
        Phase rms with / without WVR per antenna (NaN: no data).
    disc_um : float (n_ant,)
        wvrgcal's Disc per antenna (um; NaN: no WVR).
    usable : bool (n_ant,)
        The antenna's own WVR is in use (has WVR, not yet flagged).

    Returns
    -------
    list of int
        Antenna indices, ascending.

    Raises
    ------
    ParameterError
        The three arrays differ in length.
    """
    shapes = {np.shape(ratio), np.shape(disc_um), np.shape(usable)}
    if len(shapes) != 1:
        raise ParameterError(f"wvr_outlier_antennas: ratio, disc_um and usable must have one length per "
                             f"antenna; got shapes {np.shape(ratio)}, {np.shape(disc_um)}, {np.shape(usable)}")
    ratio = np.where(usable, np.asarray(ratio, np.float64), np.nan)
    disc = np.where(usable, np.asarray(disc_um, np.float64), np.nan)
    bad = _flag_hi(ratio, fhi_limit, minsample)
    with np.errstate(invalid="ignore"):
        bad |= _flag_hi(disc, fhi_limit, minsample) & (disc > disc_limit_um)
    return np.flatnonzero(bad).tolist()


def _improvement(ctx: Context, table: str, intents: list[str] | None) -> tuple[Any, list[str] | None, str]:
    """``wvr_improvement`` of `table` on `intents` (None: its default, phase + bandpass
    calibrators), falling back to :data:`FALLBACK_INTENTS` when the default selection has no
    usable data (see the module docstring).

    Returns
    -------
    (Improvement, intents, message)
        The intents actually used (None: the default) and the fallback message ("" if none).

    Raises
    ------
    SelectionError, SolveError
        The phase calibrator alone has no usable data either (or the fallback was used already).
    """
    from fastcal.wvr import wvr_improvement

    kwargs = {} if intents is None else {"intents": list(intents)}
    try:
        return ctx.call(wvr_improvement, vis=ctx.vis, table=table, **kwargs), intents, ""
    except (SelectionError, SolveError) as exc:
        if intents is not None:
            raise
        if ctx.commands and ctx.commands[-1].function.endswith("wvr_improvement"):
            ctx.commands.pop()  # read-only and failed: keep the commands log replayable
        fallback = list(FALLBACK_INTENTS)
        msg = (f"WVR improvement check on the phase and bandpass calibrators failed ({exc}); "
               f"checked on the phase calibrator only (intents={fallback})")
        logger.warning("wvr: %s", msg)
        return ctx.call(wvr_improvement, vis=ctx.vis, table=table, intents=fallback), fallback, msg


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
        from fastcal.wvr import solve_wvr, wvr_qa_score

        if not ctx.wvr_spws:
            return StageResult(self.name, SKIPPED, messages=["no WVR spectral window: no WVR correction"])
        if not ctx.info.intents:
            return StageResult(self.name, SKIPPED, messages=[
                "no scan intents: the WVR solver cannot select the on-source samples nor the calibrator "
                "scans of the improvement check; WVR correction not applied"])
        path = ctx.path("calibration", f"{ctx.vis_name}.wvrgcal.tbl")
        smooth = science_int_time(ctx.vis)
        names = list(ctx.info.antenna_names)
        wvrflag: list[str] = []
        iterations: list[dict] = []
        qa_intents: list[str] | None = None
        fallback_msg = ""
        for it in range(1, MAX_FLAG_ITER + 2):
            res = ctx.call(solve_wvr, vis=ctx.vis, caltable=path, segsource=SEGSOURCE,
                           smooth=smooth if smooth > 0 else "", wvrflag=list(wvrflag), overwrite=True)
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
            imp, qa_intents, msg = _improvement(ctx, path, qa_intents)
            fallback_msg = fallback_msg or msg
            usable = np.asarray(st.has_wvr, bool) & ~np.asarray(st.flagged, bool)
            new = [names[i] for i in wvr_outlier_antennas(imp.ratio, st.disc_um, usable)]
            room = int(usable.sum()) - MIN_WVR_ANTENNAS
            iterations.append(dict(iteration=it, wvrflag=list(wvrflag), improvement=float(imp.score),
                                   ratio=np.nan_to_num(np.asarray(imp.ratio, np.float64), nan=-1.0).tolist(),
                                   disc_um=np.nan_to_num(st.disc_um).tolist(), outliers=new))
            logger.info("wvr iteration %d: wvrflag=%s improvement %.3f outliers %s", it, wvrflag, imp.score, new)
            if not new or it > MAX_FLAG_ITER or len(new) > room:
                break
            wvrflag += new
        score, qmsg = wvr_qa_score(float(imp.score), st)
        applied = bool(imp.score > ACCEPT_THRESHOLD)
        if applied:
            ctx.register_table("wvr", path, interp="nearest", calwt=False)
        outputs.update(improvement=float(imp.score), applied=applied, wvrflag=list(wvrflag),
                       iterations=iterations, improvement_intents=qa_intents or ["PHASE", "BANDPASS"],
                       fallbacks=[fallback_msg] if fallback_msg else [],
                       rms_without_deg=np.asarray(imp.rms_without_deg).tolist(),
                       rms_with_deg=np.asarray(imp.rms_with_deg).tolist())
        msgs = [f"WVR improvement {imp.score:.2f}: " + ("applied" if applied else
                f"not applied (needs > {ACCEPT_THRESHOLD:g})"),
                f"smooth={smooth:g} s (integration time); segsource={SEGSOURCE}"]
        if fallback_msg:
            msgs.append(fallback_msg)
        if wvrflag:
            msgs.append(f"WVR of {', '.join(wvrflag)} flagged (interpolated from neighbours) after "
                        f"{len(iterations)} iteration(s): improvement "
                        + " -> ".join(f"{d['improvement']:.2f}" for d in iterations))
        left = [a for a in iterations[-1]["outliers"] if a not in wvrflag]
        if left:
            msgs.append(f"WVR outlier antenna(s) {', '.join(left)} not flagged (iteration or antenna limit)")
        return StageResult(
            self.name, OK, inputs=dict(fhi_limit=FHI_LIMIT, fhi_minsample=FHI_MINSAMPLE,
                                       max_flag_iter=MAX_FLAG_ITER, accept_threshold=ACCEPT_THRESHOLD),
            outputs=outputs, messages=msgs,
            qa=[QAScore("wvr_improvement", float(imp.score), float(min(max(score, 0.0), 1.0)), qmsg,
                        "rms ratio without/with WVR")],
            plots=[PlotSpec("wvr_phase_rms", "Phase rms per antenna without and with WVR",
                            {"rms_before_deg": outputs["rms_without_deg"],
                             "rms_after_deg": outputs["rms_with_deg"],
                             "antenna_names": list(imp.antenna_names)})])
