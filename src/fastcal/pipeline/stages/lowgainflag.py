"""lowgainflag: flag antennas with deviant gain amplitudes (hif_lowgainflag, reference
section 8 stage 10), simplified.

With the prior tables (antpos, Tsys, WVR) pre-applied, a temporary phase-up (``solint='int'``)
and bandpass (``solint='inf'``, ``combine='scan'``, ``solnorm=True``) are solved on the
bandpass calibrator, then amplitude gains per scan (``calmode='a'``, ``solint='inf'``) with
both pre-applied. Per spw, an antenna whose amplitude in any scan and polarisation lies
outside [0.5, 1.5] x the median of all antennas (``fnm_lo_limit``, ``fnm_hi_limit``) is
flagged in that spw for the whole MS (:func:`flag_antennas`); the loop repeats up to
``niter=2`` times while new antennas are found. When fewer than ``min_nants_threshold=5``
antennas would remain unflagged in a spw, nothing is flagged there (the pipeline's guard).
The temporary tables are not registered.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from fastcal.errors import ParameterError
from fastcal.pipeline.context import Context
from fastcal.pipeline.qa import lowgain_outliers, lowgain_score
from fastcal.pipeline.stage import OK, Stage, StageResult
from fastcal.pipeline.stages.bandpass import (
    PRIOR_TABLES,
    _shortest_scan_s,
    median_snr,
    phaseup_solint,
)
from fastcal.pipeline.stages.wvr import science_int_time

__all__ = ["LowgainflagStage", "flag_antennas", "NITER", "MIN_NANTS"]

logger = logging.getLogger(__name__)

NITER = 2
MIN_NANTS = 5


def flag_antennas(vis: str, antennas: Sequence[str], spw: Sequence[int]) -> int:
    """Flag every row with one of `antennas` in the spws `spw` (all fields, scans, intents).

    Returns
    -------
    int
        Newly flagged visibilities (row x chan x corr).

    Raises
    ------
    ParameterError
        Unknown antenna name.
    """
    from fastcal.ms import ChunkWriter, open_ms, read_block, read_chunks

    info = open_ms(vis)
    names = list(info.antenna_names)
    bad = [a for a in antennas if a not in names]
    if bad:
        raise ParameterError(f"flag_antennas: {bad} not antennas of {info.path}; valid: {', '.join(names)}")
    ids = np.array([names.index(a) for a in antennas], np.int32)
    if not ids.size or not spw:
        return 0
    new = 0
    with ChunkWriter(info) as w:
        for chunk in read_chunks(info, ("FLAG",), spw=",".join(map(str, spw))):
            for b in range(chunk.n_blocks):
                sl = chunk.block_slice(b)
                hit = np.isin(chunk.antenna1[sl], ids) | np.isin(chunk.antenna2[sl], ids)
                if not hit.any():
                    continue
                flag = np.array(read_block(chunk, b, ("FLAG",))["FLAG"], copy=True)
                new += int((~flag[hit]).sum())
                flag[hit] = True
                w.write("FLAG", chunk.rows[sl], flag, channels=chunk.chan)
    logger.info("flagged antennas %s in spws %s of %s: %d new", list(antennas), list(spw), info.path, new)
    return new


class LowgainflagStage(Stage):
    """Flag antennas whose gain amplitudes are outliers (simplified hif_lowgainflag)."""

    name = "lowgainflag"
    title = "flag antennas with outlier gain amplitudes"
    simplified = True
    modifies_flags = True

    def run(self, ctx: Context) -> StageResult:
        from fastcal.solve import solve_bandpass, solve_gains

        field = ",".join(ctx.roles.get("bandpass", []))
        if not field:
            raise ParameterError("no bandpass calibrator in the context; run importdata first")
        prior = [n for n in PRIOR_TABLES if any(e.name == n for e in ctx.callib)]
        pre = ctx.preapply(*prior)
        refant = ",".join(ctx.refant)
        flagged: dict[int, list[str]] = {}
        n_total = 0
        iterations = 0
        for it in range(1, NITER + 1):
            iterations = it
            spw = ",".join(map(str, ctx.science_spws))
            ph = ctx.path("working", f"{ctx.vis_name}.lowgain_ph.tbl")
            bp = ctx.path("working", f"{ctx.vis_name}.lowgain_bp.tbl")
            amp = ctx.path("working", f"{ctx.vis_name}.lowgain_amp.tbl")
            common = dict(vis=ctx.vis, field=field, spw=spw, refant=refant, minblperant=4, overwrite=True)
            ph_tab = ctx.call(solve_gains, caltable=ph, solint="int", calmode="p", minsnr=2.0, **common, **pre)
            # the bandpass stage's SNR-based phase-up solint: a low-SNR calibrator would
            # otherwise lose receptors at solint='int' and, with few antennas, every solution
            snr_int = median_snr(ph_tab, ctx.science_spws)
            int_s, scan_s = science_int_time(ctx.vis), _shortest_scan_s(ctx, field.split(","))
            solint = phaseup_solint(snr_int, int_s, scan_s) if int_s > 0 and scan_s > 0 else "int"
            if solint != "int":
                logger.info("lowgainflag phase-up SNR %.1f per integration: solint %s", snr_int, solint)
                ctx.call(solve_gains, caltable=ph, solint=solint, calmode="p", minsnr=2.0, **common, **pre)
            ctx.call(solve_bandpass, caltable=bp, solint="inf", combine="scan", solnorm=True, minsnr=3.0,
                     gaintable=pre["gaintable"] + [ph], gainfield=pre["gainfield"] + [""],
                     interp=pre["interp"] + ["linear"], spwmap=pre["spwmap"] + [[]], **common)
            tab = ctx.call(solve_gains, caltable=amp, solint="inf", calmode="a", minsnr=2.0,
                           gaintable=pre["gaintable"] + [bp, ph], gainfield=pre["gainfield"] + ["", ""],
                           interp=pre["interp"] + ["linear,linear", "linear"],
                           spwmap=pre["spwmap"] + [[], []], **common)
            found = False
            for s in ctx.science_spws:
                try:
                    sol = tab.solutions(int(s))
                except Exception:
                    continue
                a = np.abs(np.asarray(sol.params)).astype(np.float64)
                a[np.asarray(sol.flag, bool)] = np.nan
                out = lowgain_outliers(a)  # (time, ant, chan, pol)
                bad = [ctx.info.antenna_names[i] for i in np.flatnonzero(out.any(axis=(0, 2, 3)))]
                bad = [b for b in bad if b not in flagged.get(int(s), [])]
                n_left = len(ctx.info.antennas) - len(flagged.get(int(s), [])) - len(bad)
                if not bad:
                    continue
                if n_left < MIN_NANTS:
                    logger.warning("lowgainflag: spw %d: flagging %s would leave %d antennas (< %d); not flagged",
                                   s, bad, n_left, MIN_NANTS)
                    continue
                new = ctx.call(flag_antennas, vis=ctx.vis, antennas=bad, spw=[int(s)])
                ctx.refresh()
                flagged.setdefault(int(s), []).extend(bad)
                n_total += new
                ctx.add_flags("lowgain", f"mode='manual' antenna='{','.join(bad)}' spw='{s}' "
                                         f"reason='fastcal:lowgainflag'", new, 0)
                found = True
            if not found:
                break
        everywhere = set.intersection(*(set(flagged.get(int(s), [])) for s in ctx.science_spws)) \
            if ctx.science_spws else set()
        if everywhere:  # fully flagged antennas cannot be reference antennas any more
            ctx.refant = [a for a in ctx.refant if a not in everywhere]
        n_ant = len(ctx.info.antennas)
        worst = max((len(v) for v in flagged.values()), default=0)
        msgs = [f"spw {s}: flagged {', '.join(v)}" for s, v in sorted(flagged.items())] or \
               ["no antenna with outlier gain amplitudes"]
        return StageResult(self.name, OK, inputs=dict(limits=[0.5, 1.5], niter=NITER, min_nants=MIN_NANTS),
                           outputs=dict(flagged={str(k): v for k, v in flagged.items()}, n_newly_flagged=n_total,
                                        iterations=iterations),
                           qa=[lowgain_score(worst, n_ant)], messages=msgs)
