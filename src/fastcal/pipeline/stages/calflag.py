"""calflag: flag outliers in the calibrated calibrators, re-derive, re-apply (the recipe's loop).

Body of the ``calflag`` :class:`~fastcal.pipeline.stage.LoopStage`:

1. ``correctedampflag`` (:func:`flag_corrected_outliers`, a simplified hif_correctedampflag):
   per calibrator field and science spw, x = |CORRECTED_DATA| / |model| on the parallel hands
   of the unflagged cross-correlations (model = the field's setjy/fluxscale model, else the
   median amplitude).

   * channels: c = median of x per channel; a channel is flagged (all rows of that field and
     spw) when ``|c - median(c)| > chan_sigma x 1.4826 MAD(c)`` (fastcal choice: 6) and more
     than 5 % of the median;
   * antennas per scan: a = median of x over the antenna's baselines, channels and hands in
     that scan; flagged (that antenna, scan and spw) when ``a - median(a)`` is below
     ``-antnegsig`` or above ``antpossig`` times the robust sigma of a (the pipeline's
     ``antnegsig=4.0``, ``antpossig=4.6``) and more than 10 % off.

   Not in this version: the pipeline's baseline and integration views, the relaxed thresholds
   for few antennas, and target-field flagging.
2. ``rederive``: re-run the bandpass, fluxscale and timegaincal stages with the new flags;
3. ``reapply``: re-run applycal.

The loop stops when a round adds no flags (or after 3 rounds); each round is recorded.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fastcal.pipeline.context import Context
from fastcal.pipeline.qa import QAScore, agent_flagged_score
from fastcal.pipeline.stage import OK, Stage, StageResult

__all__ = ["CorrectedAmpFlagStage", "RederiveStage", "ReapplyStage", "flag_corrected_outliers",
           "OutlierSummary"]

logger = logging.getLogger(__name__)

_MAD = 1.4826


@dataclass
class OutlierSummary:
    """What :func:`flag_corrected_outliers` flagged.

    ``channels``: "field/spw" -> flagged channel indices; ``antenna_scans``: "field/spw" ->
    [antenna name, scan] pairs; ``n_new`` / ``n_total``: visibilities newly flagged / examined.
    """

    channels: dict[str, list[int]] = field(default_factory=dict)
    antenna_scans: dict[str, list[list[Any]]] = field(default_factory=dict)
    n_new: int = 0
    n_total: int = 0
    refused: dict[str, float] = field(default_factory=dict)


def _robust(v: np.ndarray) -> tuple[float, float]:
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    m = float(np.median(v))
    return m, _MAD * float(np.median(np.abs(v - m)))


def flag_corrected_outliers(vis: str, fields: Sequence[str], spw: Sequence[int], *, chan_sigma: float = 6.0,
                            antnegsig: float = 4.0, antpossig: float = 4.6,
                            max_fraction: float = 0.2) -> OutlierSummary:
    """Flag outlier channels and antenna-scans of calibrated calibrators (see the module).

    Returns
    -------
    OutlierSummary
    """
    from fastcal.flux import virtual_model
    from fastcal.ms import ChunkWriter, open_ms, read_block, read_chunks, require_parallel_hands

    info = open_ms(vis)
    out = OutlierSummary()
    if "CORRECTED_DATA" not in info.columns:
        return out
    names = list(info.antenna_names)
    n_ant = len(names)
    for fname in fields:
        fid = info.field_names.index(fname)
        for s in spw:
            chunks = read_chunks(info, ("CORRECTED_DATA", "FLAG"), field=fname, spw=str(s), include_autocorr=False)
            data = []
            for ch in chunks:
                hands = list(require_parallel_hands(info.pols[ch.pol_id]))
                vm = virtual_model(info, fid, int(s))
                for b in range(ch.n_blocks):
                    arr = read_block(ch, b, ("CORRECTED_DATA", "FLAG"))
                    amp = np.abs(arr["CORRECTED_DATA"][:, :, hands]).astype(np.float64)
                    bad = arr["FLAG"][:, :, hands] | ~np.isfinite(amp)
                    if vm is not None:
                        mod = np.abs(np.asarray(vm.spectrum(ch.freq, ch.corr_types), np.float64))[:, hands]
                        amp = np.where(mod > 0, amp / np.where(mod > 0, mod, 1.0), np.nan)
                    amp[bad] = np.nan
                    data.append((ch, b, amp))
            if not data:
                continue
            key = f"{fname}/{s}"
            allx = np.concatenate([x.reshape(x.shape[0], x.shape[1], -1) for _, _, x in data], axis=0)
            out.n_total += int(np.isfinite(allx).sum())
            if vm is None:  # no model: normalise by the median amplitude
                allx /= np.nanmedian(allx)
                data = [(c, b, x / np.nanmedian(np.concatenate([d[2].ravel() for d in data]))) for c, b, x in data]
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN (fully flagged) channels
                cmed = np.nanmedian(allx, axis=(0, 2))
            m, sd = _robust(cmed)
            bad_chan = np.flatnonzero(np.isfinite(cmed) & (np.abs(cmed - m) > max(chan_sigma * sd, 0.05 * abs(m))))
            # antenna x scan medians
            stats: dict[tuple[int, int], list[np.ndarray]] = {}
            for c, b, x in data:
                sl = c.block_slice(b)
                keep = np.ones(x.shape[1], bool)
                keep[bad_chan] = False
                xr = x[:, keep]
                for a in range(n_ant):
                    rows = (c.antenna1[sl] == a) | (c.antenna2[sl] == a)
                    if rows.any():
                        stats.setdefault((a, c.scan), []).append(xr[rows].ravel())
            keys = list(stats)
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                med = np.array([np.nanmedian(np.concatenate(stats[k])) for k in keys]) if keys else np.zeros(0)
            ma, sa = _robust(med)
            dev = med - ma
            lim_lo = -max(antnegsig * sa, 0.1 * abs(ma))
            lim_hi = max(antpossig * sa, 0.1 * abs(ma))
            bad_as = [keys[i] for i in np.flatnonzero(np.isfinite(dev) & ((dev < lim_lo) | (dev > lim_hi)))]
            if not bad_chan.size and not bad_as:
                continue
            plans = []
            n_would = n_seen = 0
            for c, b, _x in data:
                sl = c.block_slice(b)
                flag = np.array(read_block(c, b, ("FLAG",))["FLAG"], copy=True)
                before = flag.copy()
                flag[:, np.isin(c.chan, bad_chan), :] = True
                for a, sc in bad_as:
                    if sc == c.scan:
                        flag[(c.antenna1[sl] == a) | (c.antenna2[sl] == a)] = True
                n_would += int((flag & ~before).sum())
                n_seen += int((~before).sum())
                plans.append((c, sl, flag, before))
            if n_seen and n_would / n_seen > max_fraction:
                out.refused[key] = n_would / n_seen
                logger.warning("correctedampflag: %s would flag %.0f%% of the unflagged data (> %.0f%%): not "
                               "flagged; the calibration itself looks wrong", key, 100 * n_would / n_seen,
                               100 * max_fraction)
                continue
            if bad_chan.size:
                out.channels[key] = bad_chan.tolist()
            if bad_as:
                out.antenna_scans[key] = [[names[a], int(sc)] for a, sc in bad_as]
            with ChunkWriter(info) as w:
                for c, sl, flag, before in plans:
                    n = int((flag & ~before).sum())
                    if n:
                        out.n_new += n
                        w.write("FLAG", c.rows[sl], flag, channels=c.chan)
    logger.info("correctedampflag %s: channels %s, antenna-scans %s, %d new flags", info.path,
                out.channels, out.antenna_scans, out.n_new)
    return out


class CorrectedAmpFlagStage(Stage):
    """Outlier flagging of the calibrated calibrators (loop body)."""

    name = "correctedampflag"
    title = "flag outliers in the calibrated calibrators"
    simplified = True

    def run(self, ctx: Context) -> StageResult:
        cals = list(dict.fromkeys(f for r in ("bandpass", "flux", "phase") for f in ctx.roles.get(r, [])))
        summary = ctx.call(flag_corrected_outliers, vis=ctx.vis, fields=cals, spw=list(ctx.science_spws))
        ctx.refresh()
        if summary.n_new:
            lines = [f"mode='manual' field='{k.split('/')[0]}' spw='{k.split('/')[1]}:{';'.join(map(str, v))}' "
                     f"reason='fastcal:correctedampflag_channels'" for k, v in summary.channels.items()]
            lines += [f"mode='manual' field='{k.split('/')[0]}' spw='{k.split('/')[1]}' antenna='{a}' scan='{sc}' "
                      f"reason='fastcal:correctedampflag_antenna'" for k, v in summary.antenna_scans.items()
                      for a, sc in v]
            ctx.add_flags("correctedampflag", "\n".join(lines), summary.n_new, summary.n_total)
        frac = summary.n_new / summary.n_total if summary.n_total else 0.0
        qa = [agent_flagged_score(frac, "correctedampflag")]
        msgs = []
        if summary.refused:
            msgs.append("not flagged (would flag too much; calibration problem?): "
                        + ", ".join(f"{k} {100 * v:.0f}%" for k, v in summary.refused.items()))
            qa.append(QAScore("correctedampflag_refused", float(len(summary.refused)), 0.3, msgs[-1], "field/spw"))
        return StageResult(self.name, OK, outputs=dict(channels=summary.channels,
                                                       antenna_scans=summary.antenna_scans,
                                                       n_new=summary.n_new, n_total=summary.n_total,
                                                       refused=summary.refused),
                           qa=qa, messages=msgs)


class RederiveStage(Stage):
    """Re-run bandpass, fluxscale and timegaincal (loop body)."""

    name = "rederive"
    title = "re-derive bandpass, flux scale and gains"

    def run(self, ctx: Context) -> StageResult:
        from fastcal.pipeline.stages.bandpass import BandpassStage
        from fastcal.pipeline.stages.fluxscale import FluxscaleStage
        from fastcal.pipeline.stages.timegaincal import TimegaincalStage

        results = [st.run(ctx) for st in (BandpassStage(), FluxscaleStage(), TimegaincalStage())]
        return StageResult(self.name, OK, outputs={r.stage: r.outputs for r in results},
                           qa=[q for r in results for q in r.qa])


class ReapplyStage(Stage):
    """Re-run applycal (loop body)."""

    name = "reapply"
    title = "re-apply the calibration"

    def run(self, ctx: Context) -> StageResult:
        from fastcal.pipeline.stages.applycal import ApplycalStage

        r = ApplycalStage().run(ctx)
        return StageResult(self.name, OK, outputs=r.outputs, qa=r.qa)
