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
   pre-applied; ``fillgaps`` = a quarter of the spw's channels (``hm_auto_fillgaps``;
   fastcal counts the gap in solution channels, so for averaged solutions any interior
   gap is filled); registered with ``interp='linear,linear'``, ``calwt=True``.
   Frequency solint (``hm_bandpass='snr'``, :func:`bandpass_freq_solint`): the per-channel
   SNR of each spw is *measured* as the median SNR (|B|/PARAMERR, CASA's) of every
   solution of that first ``'inf'`` table with a finite positive SNR, those flagged by
   ``minsnr`` included (the unflagged ones alone are biased high at low SNR); not the
   pipeline's catalogue/Tsys prediction. Averaging n channels raises it as sqrt(n), so
   ``n = ceil((bpsnr / snr)^2)`` with ``bpsnr=50``, capped at nchan / ``bpnsols=8`` (at
   least 8 solution channels); ``evenbpints``: n is rounded up to a divisor of the spw's
   channel count (every solution channel averages the same number of channels), the
   largest divisor <= nchan / 8 when none reaches the target; no divisor in 2..nchan/8
   (fewer than 16 channels, or a prime count): per channel. Option ``hm_bandpass``:
   ``'snr'`` (this heuristic, the pipeline's default) or ``'fixed'`` (always per channel);
   fastcal's default is :data:`HM_BANDPASS_DEFAULT` = ``'snr'``, as the pipeline's. Spws
   needing averaging are solved again with ``solint='inf,<n>ch'`` (one solve per (solint, fillgaps) group,
   merged with :func:`~fastcal.pipeline.stages.spwphaseup.merge_caltables`). Not done:
   ``minbpsnr=20`` for spws with strong atmospheric lines (``bpsnr=50`` everywhere), and no
   delay is removed before averaging (the pipeline's pre-bandpass delay), so a delay tau
   decorrelates a bin of width dnu by sinc(tau dnu). Measured on the simulator (0.2 ns
   delays, ripple periods down to 1/8 of the spw, 31 MHz channels; rms error of
   B_p B_q^* against the truth): SNR ~5 per channel, 'inf,8ch' 0.16 vs 0.29 per channel
   (3 seeds); SNR ~30, 'inf,4ch' 0.072-0.081 vs 0.041-0.046 (2 channels would give 0.033:
   the rounding up to a divisor and the ripple smoothing cost more than the noise gained).
3. bpflagchans (option ``bpflagchans``, default True):
   :func:`fastcal.pipeline.stages.bpflagchans.flag_bandpass_channels` flags outlier channels
   of the new table (amplitude and phase residuals from a smooth per-antenna fit, 14 MADs;
   with averaged solutions it works on the solution channels and flags the data channels
   each covers; skipped for spws with fewer than ``BPFLAG_MIN_SOLCHANS=16`` solution
   channels, too few for its smooth fit, and said so in the messages)
   and the same channels of that antenna in the data (all fields), recorded as flag agent
   ``bpflagchans``. The stage therefore writes flags (``modifies_flags``): the runner backs
   the flags up as ``fastcal_before_bandpass`` and restores them before a re-run.

QA: :func:`~fastcal.pipeline.qa.bandpass_snr_score` of the median solution SNR,
:func:`~fastcal.pipeline.qa.phaseup_snr_score` of the median phase-up SNR (``intphasesnr=5``),
the flagged fraction of the bandpass solutions, and the fraction of the data newly flagged
by bpflagchans (:func:`~fastcal.pipeline.qa.agent_flagged_score`).

Not in this version (the stage says so in its messages): the catalogue-based phase-up and
bandpass SNR estimates, ``minbpsnr`` for spws with atmospheric lines and the pre-bandpass
delay. Line flagging of solar-system flux calibrators is the
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

__all__ = ["BandpassStage", "flagged_fraction", "PRIOR_TABLES", "median_snr", "phaseup_solint", "bandpass_freq_solint",
           "channel_snr", "auto_fillgaps", "PHASEUP_SNR", "PHASEUP_MAX_SOLINT_S", "PHASEUP_NSOLS",
           "BP_SNR", "BP_NSOLS", "BPFLAG_MIN_SOLCHANS", "HM_BANDPASS_DEFAULT"]

logger = logging.getLogger(__name__)

#: Registered tables pre-applied to the bandpass solves, in application order.
PRIOR_TABLES = ("antpos", "tsys", "wvr")
#: hifa_bandpass phase-up defaults (reference section 8 stage 13).
PHASEUP_SNR = 20.0
PHASEUP_MAX_SOLINT_S = 60.0
PHASEUP_NSOLS = 2
#: hifa_bandpass hm_bandpass='snr' defaults: target SNR per solution channel, minimum
#: number of solution channels per spw.
BP_SNR = 50.0
BP_NSOLS = 8
#: Default of option ``hm_bandpass``. 'fixed' for now: with 'snr' (the pipeline's default)
#: tiny 64-channel test datasets (SNR ~30 per channel) get averaged bandpasses, which
#: tests/test_pipeline_bpflag.py and tests/test_pipeline_qa2_checks.py do not expect yet.
HM_BANDPASS_DEFAULT = "snr"
#: bpflagchans needs at least this many solution channels in a spw (smooth-fit window).
BPFLAG_MIN_SOLCHANS = 16
_SIMPLIFIED = ("simplified heuristics: phase-up solint and (hm_bandpass='snr') bandpass frequency "
               "solint from the measured SNR (not the catalogue estimate), bpsnr=50 in every spw (no "
               "minbpsnr for atmospheric lines), no pre-bandpass delay, then bpflagchans")


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


def bandpass_freq_solint(snr_chan: float, nchan: int, *, snr: float = BP_SNR,
                         nsols: int = BP_NSOLS) -> str:
    """Bandpass solint (hm_bandpass='snr', evenbpints) from the per-channel SNR `snr_chan`.

    Returns ``'inf'`` (per-channel solutions) when one channel reaches `snr`, `snr_chan` is
    not finite, or the spw cannot be averaged into `nsols` solution channels of >= 2
    channels; else ``'inf,<n>ch'`` where n is the smallest divisor of `nchan` with
    ``n >= ceil((snr / snr_chan)^2)`` (SNR grows as sqrt(channels averaged)) and
    ``n <= nchan // nsols``, or the largest such divisor when none reaches the target.

    Parameters
    ----------
    snr_chan : float
        Median SNR of one per-channel bandpass solution (:func:`channel_snr`).
    nchan : int
        Channels of the spw, >= 1.
    snr : float
        Target SNR per solution channel (``bpsnr``), > 0.
    nsols : int
        Minimum number of solution channels (``bpnsols``), >= 1.
    """
    if int(nchan) != nchan or nchan < 1:
        raise ParameterError(f"nchan={nchan!r} must be an integer >= 1")
    if not snr > 0:
        raise ParameterError(f"snr={snr!r} (bpsnr) must be > 0")
    if int(nsols) != nsols or nsols < 1:
        raise ParameterError(f"nsols={nsols!r} (bpnsols) must be an integer >= 1")
    nchan = int(nchan)
    if not np.isfinite(snr_chan) or snr_chan >= snr:
        return "inf"
    need = int(np.ceil((snr / max(float(snr_chan), 1e-6)) ** 2))
    divisors = [d for d in range(2, nchan // int(nsols) + 1) if nchan % d == 0]
    if not divisors or need <= 1:
        return "inf"
    n = next((d for d in divisors if d >= need), divisors[-1])
    return f"inf,{n}ch"


def channel_snr(table, spw: int) -> float:
    """Median SNR of the solutions of `spw` with a finite SNR > 0, *flagged ones included*
    (those below ``minsnr`` too: the unflagged ones alone overestimate a low SNR); NaN if none."""
    try:
        v = np.asarray(table.solutions(int(spw)).snr, np.float64).ravel()
    except Exception:  # no solutions for that spw
        return float("nan")
    v = v[np.isfinite(v) & (v > 0)]
    return float(np.median(v)) if v.size else float("nan")


def auto_fillgaps(nchan: int) -> int:
    """hm_auto_fillgaps: a quarter of the spw's channels (``nchan // 4``)."""
    return int(nchan) // 4


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


def flagged_fraction(table, spws) -> float:
    """Flagged fraction of a CalTable's solutions over `spws` (1.0 when it has none)."""
    n = f = 0
    for s in spws:
        try:
            fl = np.asarray(table.solutions(int(s)).flag, bool)
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
        from fastcal.solve import solve_gains

        mode = ctx.options.get("hm_bandpass", HM_BANDPASS_DEFAULT)
        if mode not in ("snr", "fixed"):
            raise ParameterError(f"option hm_bandpass={mode!r}; valid: 'snr' (frequency solint from the "
                                 f"SNR) or 'fixed' (per-channel solutions, solint 'inf'); default "
                                 f"{HM_BANDPASS_DEFAULT!r}")
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
        common = dict(vis=ctx.vis, field=field, combine="scan", refant=refant, minblperant=4, minsnr=3.0,
                      solnorm=True, gaintable=pre["gaintable"] + [ph_path], gainfield=pre["gainfield"] + [""],
                      interp=pre["interp"] + ["linear"], spwmap=pre["spwmap"] + [[]], overwrite=True)
        spws = [int(s) for s in ctx.science_spws]
        nchan = {s: int(ctx.info.spws[s].num_chan) for s in spws}
        fillgaps = {s: auto_fillgaps(nchan[s]) for s in spws}
        bp, snr_chan, bp_solint = self._solve_bandpass(ctx, mode, nchan, fillgaps, bp_path, common)
        bpflag = self._bpflagchans(ctx, bp, bp_path)
        if bpflag is not None and bpflag.n_solutions:
            from fastcal.caltable import read_caltable

            bp = read_caltable(bp_path)
        bp_snr, ph_snr = median_snr(bp, ctx.science_spws), median_snr(ph, ctx.science_spws)
        flagged = flagged_fraction(bp, ctx.science_spws)
        if flagged >= 1.0:
            raise SolveError(f"every bandpass solution in {bp_path} is flagged (field {field}, spw {spw}, "
                             f"refant {refant}); the bandpass cannot be applied")
        ctx.register_table("bandpass", bp_path, interp="linear,linear", calwt=True)
        qa = [flagged_fraction_score(flagged, "bandpass solutions")]
        if np.isfinite(bp_snr):
            qa.append(bandpass_snr_score(bp_snr))
        if np.isfinite(ph_snr):
            qa.append(phaseup_snr_score(ph_snr, 5.0))
        messages = [_SIMPLIFIED] + [
            f"bandpass spw {s}: SNR {snr_chan[s]:.1f} per channel -> solint '{bp_solint[s]}' "
            f"({_n_solchans(bp_solint[s], nchan[s])} solution channels of {nchan[s]}), fillgaps {fillgaps[s]}, "
            f"hm_bandpass '{mode}'"
            for s in spws]
        skipped = self._bpflag_skipped(ctx, bp)
        if skipped and ctx.options.get("bpflagchans", True):
            messages.append(f"bpflagchans skipped for spw {', '.join(map(str, skipped))}: fewer than "
                            f"{BPFLAG_MIN_SOLCHANS} solution channels (averaged solutions)")
        if bpflag is not None:
            qa.append(agent_flagged_score(bpflag.n_new / bpflag.n_total if bpflag.n_total else 0.0, "bpflagchans"))
            messages += _bpflag_messages(bpflag)
        return StageResult(
            self.name, OK,
            inputs=dict(field=field, spw=spw, refant=refant, prior_tables=prior),
            outputs=dict(caltable=bp_path, phaseup=ph_path, median_snr=bp_snr, phaseup_median_snr=ph_snr,
                         phaseup_snr_per_int=ph_snr_int, phaseup_solint=solint, flagged_fraction=flagged,
                         bandpass_solint={str(s): bp_solint[s] for s in spws},
                         channel_snr={str(s): snr_chan[s] for s in spws},
                         fillgaps={str(s): fillgaps[s] for s in spws},
                         bpflagchans=bpflag.to_dict() if bpflag is not None else None),
            qa=qa, messages=messages,
            plots=[PlotSpec("bandpass", "Bandpass amplitude and phase per antenna", {"table": bp_path})])

    @classmethod
    def _solve_bandpass(cls, ctx: Context, mode: str, nchan: dict[int, int], fillgaps: dict[int, int],
                        bp_path: str, common: dict):
        """Per-channel solve, then (mode 'snr') the spws below BP_SNR per channel re-solved with
        their :func:`bandpass_freq_solint`. Returns the table, SNR and solint per spw."""
        spws = list(nchan)
        bp = cls._solve_groups(ctx, {s: ("inf", fillgaps[s]) for s in spws}, bp_path, common)
        snr_chan = {s: channel_snr(bp, s) for s in spws}
        bp_solint = {s: bandpass_freq_solint(snr_chan[s], nchan[s]) if mode == "snr" else "inf" for s in spws}
        averaged = [s for s in spws if bp_solint[s] != "inf"]
        for s in averaged:
            logger.info("bandpass spw %d: SNR %.1f per channel < %g: solint %s", s, snr_chan[s], BP_SNR, bp_solint[s])
        if averaged:
            bp = cls._solve_groups(ctx, {s: (bp_solint[s], fillgaps[s]) for s in spws}, bp_path, common)
        return bp, snr_chan, bp_solint

    @staticmethod
    def _solve_groups(ctx: Context, plan: dict[int, tuple[str, int]], bp_path: str, common: dict):
        """solve_bandpass once per (solint, fillgaps) group of spws; several groups are
        solved into ``working/`` and merged into `bp_path`."""
        from fastcal.pipeline.stages.spwphaseup import merge_caltables
        from fastcal.solve import solve_bandpass

        groups: dict[tuple[str, int], list[int]] = {}
        for s, key in plan.items():
            groups.setdefault(key, []).append(s)
        if len(groups) == 1:
            (si, fg), g = next(iter(groups.items()))
            return ctx.call(solve_bandpass, caltable=bp_path, spw=",".join(map(str, g)), solint=si,
                            fillgaps=fg, **common)
        parts = []
        for k, ((si, fg), g) in enumerate(sorted(groups.items(), key=lambda kv: kv[1][0])):
            part = ctx.path("working", f"{ctx.vis_name}.bcal.part{k}.tbl")
            ctx.call(solve_bandpass, caltable=part, spw=",".join(map(str, g)), solint=si, fillgaps=fg, **common)
            parts.append(part)
        return ctx.call(merge_caltables, tables=parts, caltable=bp_path, overwrite=True)

    @staticmethod
    def _bpflag_skipped(ctx: Context, bp) -> list[int]:
        """Science spws of `bp` with averaged solutions (fewer solution channels than data
        channels) and fewer than BPFLAG_MIN_SOLCHANS solution channels."""
        in_table = set(bp.spw_ids.tolist())
        return [int(s) for s in ctx.science_spws if int(s) in in_table
                and bp.nchan(int(s)) < min(BPFLAG_MIN_SOLCHANS, ctx.info.spws[int(s)].num_chan)]

    @staticmethod
    def _bpflagchans(ctx: Context, bp, bp_path: str):
        """Run bpflagchans on the new table (unless option ``bpflagchans`` is False)."""
        from fastcal.pipeline.stages.bpflagchans import flag_bandpass_channels

        if not ctx.options.get("bpflagchans", True):
            return None
        in_table = set(bp.spw_ids.tolist())
        skipped = BandpassStage._bpflag_skipped(ctx, bp)
        spws = [int(s) for s in ctx.science_spws if int(s) in in_table and int(s) not in skipped]
        if not spws:
            return None
        res = ctx.call(flag_bandpass_channels, vis=ctx.vis, caltable=bp_path, spw=spws)
        ctx.refresh()
        if res.n_new:
            ctx.add_flags("bpflagchans", "\n".join(res.template), res.n_new, res.n_total)
        return res


def _n_solchans(solint: str, nchan: int) -> int:
    """Solution channels of a ``'inf'`` / ``'inf,<n>ch'`` solint over `nchan` channels."""
    return nchan // int(solint.split(",")[1][:-2]) if "," in solint else nchan


def _bpflag_messages(res) -> list[str]:
    """Weblog lines for a :class:`~fastcal.pipeline.stages.bpflagchans.BpflagSummary`."""
    from fastcal.pipeline.heuristics_lines import format_channel_ranges

    out = [f"bpflagchans spw {s}: " + ", ".join(f"{a} ch {format_channel_ranges(c)}" for a, c in ants.items())
           for s, ants in res.outliers.items()] or ["bpflagchans: no outlier channels"]
    out += [f"bpflagchans spw {s}: not flagged (> 25% of the channels, a bad antenna?): "
            + ", ".join(f"{a} {100 * f:.0f}%" for a, f in ants.items()) for s, ants in res.refused.items()]
    return out
