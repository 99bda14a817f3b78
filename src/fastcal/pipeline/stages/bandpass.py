"""bandpass: phase-up and bandpass solve on the bandpass calibrator (hifa_bandpass,
reference section 8 stage 13), *simplified*.

1. Phase-up: :func:`fastcal.solve.solve_gains` ``calmode='p'``, ``solint='int'`` on the
   bandpass field, the registered prior tables (antpos, Tsys, WVR) pre-applied; a diagnostic
   table (not registered for applycal, as in the pipeline). SNR-based solint (measured, not
   predicted from the catalogue as the pipeline does first): when the median per-integration
   SNR is below ``phaseupsnr=20``, the phase-up is solved again with
   :func:`phaseup_solint` = ``ceil((20 / snr)^2)`` integrations, capped at
   ``phaseupmaxsolint=60`` s and at the shortest bandpass scan / ``phaseupnsols=2``.
2. Bandpass: :func:`fastcal.solve.solve_bandpass` ``solint='inf'``, ``combine='scan'``,
   ``solnorm=True``, ``minblperant=4``, ``minsnr=3``, with the prior tables and the phase-up
   pre-applied; registered with ``interp='linear,linear'``, ``calwt=True``.
3. bpflagchans (option ``bpflagchans``, default True):
   :func:`fastcal.pipeline.stages.bpflagchans.flag_bandpass_channels` flags outlier channels
   of the new table (amplitude and phase residuals from a smooth per-antenna fit, 14 MADs)
   and the same channels of that antenna in the data (all fields), recorded as flag agent
   ``bpflagchans``. The stage therefore writes flags (``modifies_flags``): the runner backs
   the flags up as ``fastcal_before_bandpass`` and restores them before a re-run.

QA: :func:`~fastcal.pipeline.qa.bandpass_snr_score` of the median solution SNR,
:func:`~fastcal.pipeline.qa.phaseup_snr_score` of the median phase-up SNR (``intphasesnr=5``),
the flagged fraction of the bandpass solutions, and the fraction of the data newly flagged
by bpflagchans (:func:`~fastcal.pipeline.qa.agent_flagged_score`).

Not in this version (the stage says so in its messages): the catalogue-based phase-up SNR
estimate, SNR-based frequency solint (``bpsnr=50``, ``bpnsols=8``), the
pre-bandpass delay and fillgaps. Line flagging of solar-system flux calibrators is the
``fluxcalflag`` stage.
"""

from __future__ import annotations

import logging

import numpy as np

from fastcal.errors import ParameterError, SolveError
from fastcal.pipeline.context import Context
from fastcal.pipeline.qa import (
    agent_flagged_score,
    bandpass_snr_score,
    flagged_fraction_score,
    phaseup_snr_score,
)
from fastcal.pipeline.stage import OK, PlotSpec, Stage, StageResult
from fastcal.pipeline.stages.wvr import science_int_time

__all__ = ["BandpassStage", "PRIOR_TABLES", "median_snr", "phaseup_solint",
           "PHASEUP_SNR", "PHASEUP_MAX_SOLINT_S", "PHASEUP_NSOLS"]

logger = logging.getLogger(__name__)

#: Registered tables pre-applied to the bandpass solves, in application order.
PRIOR_TABLES = ("antpos", "tsys", "wvr")
#: hifa_bandpass phase-up defaults (reference section 8 stage 13).
PHASEUP_SNR = 20.0
PHASEUP_MAX_SOLINT_S = 60.0
PHASEUP_NSOLS = 2
_SIMPLIFIED = ("simplified heuristics: phase-up solint from the measured per-integration SNR, "
               "'inf' bandpass, then bpflagchans; the SNR-based frequency solint is not "
               "implemented in this version")


def phaseup_solint(snr_int: float, int_time_s: float, scan_time_s: float, *,
                   snr: float = PHASEUP_SNR, max_solint_s: float = PHASEUP_MAX_SOLINT_S,
                   nsols: int = PHASEUP_NSOLS) -> str:
    """Phase-up solint reaching `snr` from the median per-integration SNR `snr_int`.

    Returns ``'int'`` when one integration suffices (or `snr_int` is not finite), else
    ``'<T>s'`` with T = ``ceil((snr / snr_int)^2)`` integrations (SNR grows as sqrt(time)),
    capped at `max_solint_s` and at `scan_time_s` / `nsols` (at least one integration).

    Parameters
    ----------
    snr_int : float
        Median SNR of the phase-up solutions at ``solint='int'``.
    int_time_s, scan_time_s : float
        Integration time and shortest bandpass-calibrator scan (s), > 0.
    """
    if not (int_time_s > 0 and scan_time_s > 0):
        raise ParameterError(f"int_time_s={int_time_s!r} and scan_time_s={scan_time_s!r} must be > 0 s")
    if nsols < 1:
        raise ParameterError(f"nsols={nsols!r} must be >= 1")
    if not np.isfinite(snr_int) or snr_int >= snr:
        return "int"
    n = int(np.ceil((snr / max(snr_int, 1e-6)) ** 2))
    t = min(n * int_time_s, max_solint_s, scan_time_s / nsols)
    if t < 1.5 * int_time_s:
        return "int"
    return f"{t:.3f}s"


def _shortest_scan_s(ctx: Context, fields: list[str]) -> float:
    """Shortest on-source scan (s) of these fields (science spws; atmosphere scans skipped)."""
    ids = {ctx.info.field_names.index(f) for f in fields if f in ctx.info.field_names}
    lens = [sc.end - sc.start for sc in ctx.info.scans
            if ids & set(sc.field_ids) and not any("ATMOSPHERE" in i for i in sc.intents)]
    return float(min(lens)) if lens else 0.0


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
    title = "phase-up (SNR-based solint), bandpass and bpflagchans"
    simplified = True
    modifies_flags = True

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
        ph_snr_int = median_snr(ph, ctx.science_spws)
        int_s, scan_s = science_int_time(ctx.vis), _shortest_scan_s(ctx, fields)
        solint = phaseup_solint(ph_snr_int, int_s, scan_s) if int_s > 0 and scan_s > 0 else "int"
        if solint != "int":
            logger.info("phase-up SNR %.1f per integration < %g: solint %s", ph_snr_int, PHASEUP_SNR, solint)
            ph = ctx.call(solve_gains, vis=ctx.vis, caltable=ph_path, field=field, spw=spw, solint=solint,
                          calmode="p", refant=refant, minblperant=4, minsnr=3.0,
                          gaintable=pre["gaintable"], gainfield=pre["gainfield"], interp=pre["interp"],
                          spwmap=pre["spwmap"], overwrite=True)
        bp = ctx.call(solve_bandpass, vis=ctx.vis, caltable=bp_path, field=field, spw=spw, solint="inf",
                      combine="scan", refant=refant, minblperant=4, minsnr=3.0, solnorm=True,
                      gaintable=pre["gaintable"] + [ph_path], gainfield=pre["gainfield"] + [""],
                      interp=pre["interp"] + ["linear"], spwmap=pre["spwmap"] + [[]], overwrite=True)
        bpflag = self._bpflagchans(ctx, bp, bp_path)
        if bpflag is not None and bpflag.n_solutions:
            from fastcal.caltable import read_caltable

            bp = read_caltable(bp_path)
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
        messages = [_SIMPLIFIED]
        if bpflag is not None:
            qa.append(agent_flagged_score(bpflag.n_new / bpflag.n_total if bpflag.n_total else 0.0, "bpflagchans"))
            messages += _bpflag_messages(bpflag)
        return StageResult(
            self.name, OK,
            inputs=dict(field=field, spw=spw, refant=refant, prior_tables=prior),
            outputs=dict(caltable=bp_path, phaseup=ph_path, median_snr=bp_snr, phaseup_median_snr=ph_snr,
                         phaseup_snr_per_int=ph_snr_int, phaseup_solint=solint, flagged_fraction=flagged,
                         bpflagchans=bpflag.to_dict() if bpflag is not None else None),
            qa=qa, messages=messages,
            plots=[PlotSpec("bandpass", "Bandpass amplitude and phase per antenna", {"table": bp_path})])

    @staticmethod
    def _bpflagchans(ctx: Context, bp, bp_path: str):
        """Run bpflagchans on the new table (unless option ``bpflagchans`` is False)."""
        from fastcal.pipeline.stages.bpflagchans import flag_bandpass_channels

        if not ctx.options.get("bpflagchans", True):
            return None
        in_table = set(bp.spw_ids.tolist())
        spws = [int(s) for s in ctx.science_spws if int(s) in in_table]
        if not spws:
            return None
        res = ctx.call(flag_bandpass_channels, vis=ctx.vis, caltable=bp_path, spw=spws)
        ctx.refresh()
        if res.n_new:
            ctx.add_flags("bpflagchans", "\n".join(res.template), res.n_new, res.n_total)
        return res


def _bpflag_messages(res) -> list[str]:
    """Weblog lines for a :class:`~fastcal.pipeline.stages.bpflagchans.BpflagSummary`."""
    from fastcal.pipeline.heuristics_lines import format_channel_ranges

    out = [f"bpflagchans spw {s}: " + ", ".join(f"{a} ch {format_channel_ranges(c)}" for a, c in ants.items())
           for s, ants in res.outliers.items()] or ["bpflagchans: no outlier channels"]
    out += [f"bpflagchans spw {s}: not flagged (> 25% of the channels, a bad antenna?): "
            + ", ".join(f"{a} {100 * f:.0f}%" for a, f in ants.items()) for s, ants in res.refused.items()]
    return out
