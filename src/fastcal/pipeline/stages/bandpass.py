"""bandpass: phase-up and bandpass solve on the bandpass calibrator (hifa_bandpass,
reference section 8 stage 13), *simplified*.

1. Phase-up: :func:`fastcal.solve.solve_gains` ``calmode='p'``, ``solint='int'`` on the
   bandpass field, the registered prior tables (antpos, Tsys, WVR) pre-applied; a diagnostic
   table (not registered for applycal, as in the pipeline).
2. Bandpass: :func:`fastcal.solve.solve_bandpass` ``solint='inf'``, ``combine='scan'``,
   ``solnorm=True``, ``minblperant=4``, ``minsnr=3``, with the prior tables and the phase-up
   pre-applied; registered with ``interp='linear,linear'``, ``calwt=True``.

QA: :func:`~fastcal.pipeline.qa.bandpass_snr_score` of the median solution SNR,
:func:`~fastcal.pipeline.qa.phaseup_snr_score` of the median phase-up SNR (``intphasesnr=5``),
and the flagged fraction of the bandpass solutions.

Not in this version (the stage says so in its messages): SNR-based phase-up solint
(``phaseupsnr=20``), SNR-based frequency solint (``bpsnr=50``, ``bpnsols=8``), the
pre-bandpass delay, fillgaps, bpflagchans and fluxcalflag.
"""

from __future__ import annotations

import logging

import numpy as np

from fastcal.errors import ParameterError, SolveError
from fastcal.pipeline.context import Context
from fastcal.pipeline.qa import bandpass_snr_score, flagged_fraction_score, phaseup_snr_score
from fastcal.pipeline.stage import OK, PlotSpec, Stage, StageResult

__all__ = ["BandpassStage", "PRIOR_TABLES", "median_snr"]

logger = logging.getLogger(__name__)

#: Registered tables pre-applied to the bandpass solves, in application order.
PRIOR_TABLES = ("antpos", "tsys", "wvr")
_SIMPLIFIED = ("simplified heuristics: fixed solint 'int' phase-up and 'inf' bandpass; SNR-based "
               "solints, bpflagchans and fluxcalflag are not implemented in this version")


def median_snr(table, spws) -> float:
    """Median SNR of the unflagged solutions of a CalTable over `spws` (NaN if none)."""
    vals = []
    for s in spws:
        try:
            sol = table.solutions(s)
        except Exception:  # no solutions for that spw
            continue
        snr = np.asarray(sol.snr, np.float64)
        vals.append(snr[~np.asarray(sol.flag, bool)].ravel())
    v = np.concatenate(vals) if vals else np.zeros(0)
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else float("nan")


def _flagged_fraction(table, spws) -> float:
    n = f = 0
    for s in spws:
        try:
            fl = np.asarray(table.solutions(s).flag, bool)
        except Exception:
            continue
        n, f = n + fl.size, f + int(fl.sum())
    return f / n if n else 1.0


class BandpassStage(Stage):
    """Phase-up and bandpass on the bandpass calibrator (simplified, see the module)."""

    name = "bandpass"
    title = "phase-up and bandpass (fixed solints)"
    simplified = True

    def run(self, ctx: Context) -> StageResult:
        from fastcal.solve import solve_bandpass, solve_gains

        fields = ctx.roles.get("bandpass")
        if not fields:
            raise ParameterError("no bandpass calibrator in the context; run importdata first")
        field = ",".join(fields)
        spw = ",".join(map(str, ctx.science_spws))
        refant = ",".join(ctx.refant)
        prior = [n for n in PRIOR_TABLES if any(e.name == n for e in ctx.callib)]
        pre = ctx.preapply(*prior)
        ph_path = ctx.path("working", f"{ctx.vis_name}.phaseup.tbl")
        bp_path = ctx.path("calibration", f"{ctx.vis_name}.bcal.tbl")
        ph = ctx.call(solve_gains, vis=ctx.vis, caltable=ph_path, field=field, spw=spw, solint="int",
                      calmode="p", refant=refant, minblperant=4, minsnr=3.0,
                      gaintable=pre["gaintable"], gainfield=pre["gainfield"], interp=pre["interp"],
                      spwmap=pre["spwmap"], overwrite=True)
        bp = ctx.call(solve_bandpass, vis=ctx.vis, caltable=bp_path, field=field, spw=spw, solint="inf",
                      combine="scan", refant=refant, minblperant=4, minsnr=3.0, solnorm=True,
                      gaintable=pre["gaintable"] + [ph_path], gainfield=pre["gainfield"] + [""],
                      interp=pre["interp"] + ["linear"], spwmap=pre["spwmap"] + [[]], overwrite=True)
        bp_snr, ph_snr = median_snr(bp, ctx.science_spws), median_snr(ph, ctx.science_spws)
        flagged = _flagged_fraction(bp, ctx.science_spws)
        if flagged >= 1.0:
            raise SolveError(f"every bandpass solution in {bp_path} is flagged (field {field}, spw {spw}, "
                             f"refant {refant}); the bandpass cannot be applied")
        ctx.register_table("bandpass", bp_path, interp="linear,linear", calwt=True)
        qa = [flagged_fraction_score(flagged, "bandpass solutions")]
        if np.isfinite(bp_snr):
            qa.append(bandpass_snr_score(bp_snr))
        if np.isfinite(ph_snr):
            qa.append(phaseup_snr_score(ph_snr, 5.0))
        return StageResult(
            self.name, OK,
            inputs=dict(field=field, spw=spw, refant=refant, prior_tables=prior),
            outputs=dict(caltable=bp_path, phaseup=ph_path, median_snr=bp_snr, phaseup_median_snr=ph_snr,
                         flagged_fraction=flagged),
            qa=qa, messages=[_SIMPLIFIED],
            plots=[PlotSpec("bandpass", "Bandpass amplitude and phase per antenna", {"table": bp_path})])
