"""rawflagchans: flag deviant channel/baseline pairs in the raw bandpass-calibrator data
(hif_rawflagchans, reference section 8 stage 4): rules ``flag_hilo`` and ``flag_bad_quadrant``.

View, per science spw and correlation (the pipeline's ``RawflagchansData`` /
``RawflagchansView``): the amplitude of the time-averaged (vector mean over every unflagged
row of the ``*CALIBRATE_BANDPASS*`` scans) DATA, an image of channel x baseline
(cross-correlations only). It is refined by subtracting from each baseline column its median
over channels, then from each channel row its median over baselines, which removes the
baseline amplitudes and the common bandpass shape.

Rule ``flag_hilo``: with the median m and the MAD (median absolute deviation, *unscaled*, as
the pipeline's ``median_and_mad``) of the valid view pixels, a pixel with
``|x - m| > fhl_limit x MAD`` is an outlier (``fhl_limit = 20``); nothing is flagged when
fewer than ``fhl_minsample = 5`` pixels are valid. An outlier in any correlation flags that
channel of that baseline in every correlation, in every field and scan of the spw (the
pipeline's flag commands carry spw, channel and baseline only). ``niter = 1``.

Rule ``flag_bad_quadrant`` (applied first, with the same median and MAD): pixels beyond
``fbq_hilo_limit = 8`` MADs are *suspect*; a quadrant is a quarter of the channels. When more
than ``fbq_antenna_frac_limit = 0.2`` of the valid pixels of an antenna's baselines in a
quadrant are suspect, that antenna is flagged in that quadrant (all its baselines, every
field); when more than ``fbq_baseline_frac_limit = 1.0`` of one baseline's pixels in a
quadrant are suspect, that baseline quadrant is flagged (never, with the default 1.0). A
suspect pixel outside a bad quadrant is left to ``flag_hilo``. fastcal's quadrants are exact
quarters ``round(k * nchan / 4)``; the pipeline's slices leave out the last channel of each.
With 5 antennas, one antenna's baselines are 1/4 of every other antenna's, so a quadrant
where all of them are suspect flags that quadrant for every antenna (the rule's arithmetic,
the pipeline's too); from 6 antennas on only the bad antenna is flagged.

Measured on clean ``SimConfig.tiny(n_chan=64)`` data (3 seeds): the largest view pixel is
5-7 MADs from the median (limits 8 for suspects, 20 for outliers); one channel of one
baseline x 4 is 60 MADs off.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from fastcal.errors import ParameterError, SelectionError
from fastcal.pipeline.context import Context
from fastcal.pipeline.heuristics_lines import format_channel_ranges
from fastcal.pipeline.qa import agent_flagged_score
from fastcal.pipeline.stage import OK, SKIPPED, Stage, StageResult

__all__ = ["RawflagchansStage", "RawflagSummary", "hilo_outliers", "bad_quadrants", "refine_view",
           "flag_raw_channels", "FHL_LIMIT", "FHL_MINSAMPLE", "FBQ_HILO_LIMIT", "FBQ_ANTENNA_FRAC_LIMIT",
           "FBQ_BASELINE_FRAC_LIMIT", "BANDPASS_INTENT"]

logger = logging.getLogger(__name__)

FHL_LIMIT = 20.0
FHL_MINSAMPLE = 5
FBQ_HILO_LIMIT = 8.0
FBQ_ANTENNA_FRAC_LIMIT = 0.2
FBQ_BASELINE_FRAC_LIMIT = 1.0
BANDPASS_INTENT = "*CALIBRATE_BANDPASS*"


@dataclass
class RawflagSummary:
    """What :func:`flag_raw_channels` flagged.

    ``outliers``: spw -> {"ANT1&ANT2": [channels]} (flag_hilo, outside bad quadrants);
    ``bad_quadrants``: spw -> {"ANT" or "ANT1&ANT2": [quadrant numbers 0-3]}; ``n_new`` / ``n_total``: visibilities
    newly flagged / in the spws examined (all rows, autocorrelations included); ``template``: flag-template lines;
    ``skipped``: spw -> why no view was made.
    """

    outliers: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    bad_quadrants: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    n_new: int = 0
    n_total: int = 0
    template: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def refine_view(image: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Subtract each column's (baseline's) median, then each row's (channel's) median.

    Parameters
    ----------
    image : float64[chan, baseline]
    valid : bool[chan, baseline]
        Pixels with data; medians use these only, invalid pixels are returned as NaN.
    """
    x = np.where(valid, np.asarray(image, np.float64), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns/rows
        col = np.nanmedian(x, axis=0)
        x = x - np.where(np.isfinite(col), col, 0.0)[None, :]
        row = np.nanmedian(x, axis=1)
        x = x - np.where(np.isfinite(row), row, 0.0)[:, None]
    return x


def hilo_outliers(view: np.ndarray, limit: float = FHL_LIMIT, minsample: int = FHL_MINSAMPLE) -> np.ndarray:
    """Pixels further than ``limit x MAD`` (unscaled) from the median of the finite pixels.

    Returns bool of the view's shape (all False when fewer than `minsample` finite pixels).
    """
    if not limit > 0 or minsample < 1:
        raise ParameterError(f"fhl_limit={limit!r}, fhl_minsample={minsample!r} are invalid; valid: "
                             f"limit > 0, minsample >= 1")
    v = np.asarray(view, np.float64)
    ok = np.isfinite(v)
    if ok.sum() < minsample:
        return np.zeros(v.shape, bool)
    m = float(np.median(v[ok]))
    mad = float(np.median(np.abs(v[ok] - m)))
    with np.errstate(invalid="ignore"):
        return ok & (np.abs(v - m) > limit * mad)


def _median_mad(v: np.ndarray) -> tuple[float, float]:
    ok = np.isfinite(v)
    m = float(np.median(v[ok]))
    return m, float(np.median(np.abs(v[ok] - m)))


def quadrant_edges(nchan: int) -> np.ndarray:
    """Channel boundaries of the four quadrants: ``round(k * nchan / 4)``, k = 0..4."""
    return np.round(np.arange(5) * nchan / 4.0).astype(np.int64)


def bad_quadrants(view: np.ndarray, ant1: np.ndarray, ant2: np.ndarray, n_ant: int, *,
                  hilo_limit: float = FBQ_HILO_LIMIT, antenna_frac_limit: float = FBQ_ANTENNA_FRAC_LIMIT,
                  baseline_frac_limit: float = FBQ_BASELINE_FRAC_LIMIT) -> tuple[np.ndarray, np.ndarray]:
    """The ``flag_bad_quadrant`` rule on a refined view (module docstring).

    Parameters
    ----------
    view : float64[chan, baseline]
        Refined view, NaN where invalid.
    ant1, ant2 : int[baseline]
        Antennas of each view column.
    n_ant : int

    Returns
    -------
    antenna_bad, baseline_bad : bool[n_ant, 4], bool[baseline, 4]
    """
    v = np.asarray(view, np.float64)
    ok = np.isfinite(v)
    ant_bad = np.zeros((n_ant, 4), bool)
    bl_bad = np.zeros((v.shape[1], 4), bool)
    if not ok.any():
        return ant_bad, bl_bad
    m, mad = _median_mad(v)
    with np.errstate(invalid="ignore"):
        suspect = ok & (np.abs(v - m) > hilo_limit * mad)
    e = quadrant_edges(v.shape[0])
    for q in range(4):
        sus, val = suspect[e[q]:e[q + 1]].sum(axis=0), ok[e[q]:e[q + 1]].sum(axis=0)  # per baseline
        for a in range(n_ant):
            cols = (ant1 == a) | (ant2 == a)
            n = val[cols].sum()
            ant_bad[a, q] = n > 0 and sus[cols].sum() / n > antenna_frac_limit
        with np.errstate(invalid="ignore", divide="ignore"):
            bl_bad[:, q] = (val > 0) & (sus / np.maximum(val, 1) > baseline_frac_limit)
    return ant_bad, bl_bad


def _time_averaged_amplitude(info, spw: int, intent: str, n_ant: int):
    """|vector mean| (chan, baseline, corr) and valid mask of the intent's cross-correlations."""
    from fastcal.ms import read_block, read_chunks

    chunks = read_chunks(info, ("DATA", "FLAG"), spw=str(spw), intent=intent, include_autocorr=False)
    nchan = info.spws[spw].num_chan
    ncorr = info.pols[chunks[0].pol_id].num_corr if chunks else 0
    acc = np.zeros((n_ant * n_ant, nchan, ncorr), np.complex128)
    cnt = np.zeros((n_ant * n_ant, nchan, ncorr), np.int64)
    for c in chunks:
        for b in range(c.n_blocks):
            sl = c.block_slice(b)
            arr = read_block(c, b, ("DATA", "FLAG"))
            ok = ~arr["FLAG"] & np.isfinite(arr["DATA"])
            a1, a2 = c.antenna1[sl], c.antenna2[sl]
            bl = np.minimum(a1, a2).astype(np.int64) * n_ant + np.maximum(a1, a2)
            vals = np.where(ok, arr["DATA"], 0).astype(np.complex128)
            full = np.zeros((vals.shape[0], nchan, ncorr), np.complex128)
            okf = np.zeros((vals.shape[0], nchan, ncorr), np.int64)
            full[:, c.chan, :], okf[:, c.chan, :] = vals, ok
            np.add.at(acc, bl, full)
            np.add.at(cnt, bl, okf)
    i, j = np.triu_indices(n_ant, k=1)
    keys = i * n_ant + j
    with np.errstate(invalid="ignore", divide="ignore"):
        amp = np.abs(acc[keys] / cnt[keys])  # (baseline, chan, corr)
    return np.transpose(amp, (1, 0, 2)), np.transpose(cnt[keys] > 0, (1, 0, 2)), keys


def flag_raw_channels(vis: str, spw: Sequence[int], *, intent: str = BANDPASS_INTENT, fhl_limit: float = FHL_LIMIT,
                      fhl_minsample: int = FHL_MINSAMPLE) -> RawflagSummary:
    """Flag channel/baseline outliers of the raw bandpass-calibrator data (module docstring).

    Parameters
    ----------
    vis : str
        Measurement Set (FLAG written in place).
    spw : sequence of int
        Science spws.
    intent : str
        Intent pattern of the rows that make the view.
    fhl_limit : float
        Outlier limit in MADs (unscaled).
    fhl_minsample : int
        Minimum number of valid view pixels.

    The ``flag_bad_quadrant`` rule uses :data:`FBQ_HILO_LIMIT`, :data:`FBQ_ANTENNA_FRAC_LIMIT`
    and :data:`FBQ_BASELINE_FRAC_LIMIT`.

    Returns
    -------
    RawflagSummary

    Raises
    ------
    ParameterError
        Bad limits or an unknown spw.
    """
    from fastcal.ms import open_ms

    hilo_outliers(np.zeros(0), fhl_limit, fhl_minsample)  # validates the limits
    info = open_ms(vis)
    bad_spw = [s for s in spw if not 0 <= int(s) < len(info.spws)]
    if bad_spw:
        raise ParameterError(f"rawflagchans: spw {bad_spw} not in {info.path}; valid: 0..{len(info.spws) - 1}")
    n_ant = len(info.antennas)
    names = info.antenna_names
    out = RawflagSummary()
    plan: dict[int, np.ndarray] = {}
    for s in map(int, spw):
        try:
            amp, valid, keys = _time_averaged_amplitude(info, s, intent, n_ant)
        except SelectionError as exc:
            out.skipped[str(s)] = f"no {intent} rows: {exc}"
            continue
        dd = info.ddids_for_spw(s)
        out.n_total += int(np.isin(info.index.ddid, dd).sum()) * amp.shape[0] * amp.shape[2]
        a1, a2 = np.divmod(keys, n_ant)
        nchan = amp.shape[0]
        e = quadrant_edges(nchan)
        hits = np.zeros(amp.shape[:2], bool)  # (chan, baseline): flag_hilo
        quad = np.zeros(amp.shape[:2], bool)  # (chan, baseline): flag_bad_quadrant
        ant_q = np.zeros((n_ant, 4), bool)
        bl_q = np.zeros((keys.size, 4), bool)
        for k in range(amp.shape[2]):
            view = refine_view(amp[:, :, k], valid[:, :, k])
            aq, bq = bad_quadrants(view, a1, a2, n_ant)
            ant_q, bl_q = ant_q | aq, bl_q | bq
            hits |= hilo_outliers(view, fhl_limit, fhl_minsample)
        for q in range(4):
            cols = np.isin(a1, np.flatnonzero(ant_q[:, q])) | np.isin(a2, np.flatnonzero(ant_q[:, q])) | bl_q[:, q]
            quad[e[q]:e[q + 1], cols] = True
        hits &= ~quad
        if not (hits.any() or quad.any()):
            continue
        mask = np.zeros((n_ant * n_ant, nchan), bool)
        mask[keys] = (hits | quad).T
        plan[s] = mask
        out.outliers[str(s)] = {}
        for b in np.flatnonzero(hits.any(axis=0)):
            chans = np.flatnonzero(hits[:, b])
            bl = f"{names[a1[b]]}&{names[a2[b]]}"
            out.outliers[str(s)][bl] = chans.tolist()
            out.template.append(f"mode='manual' antenna='{bl}' spw='{s}:{format_channel_ranges(chans)}' "
                                f"reason='fastcal:rawflagchans'")
        if not out.outliers[str(s)]:
            del out.outliers[str(s)]
        quads: dict[str, list[int]] = {}
        for a, q in zip(*np.nonzero(ant_q), strict=True):
            quads.setdefault(names[a], []).append(int(q))
        for b, q in zip(*np.nonzero(bl_q), strict=True):
            if not (ant_q[a1[b], q] or ant_q[a2[b], q]):
                quads.setdefault(f"{names[a1[b]]}&{names[a2[b]]}", []).append(int(q))
        for who, qs in quads.items():
            chans = np.concatenate([np.arange(e[q], e[q + 1]) for q in qs])
            out.template.append(f"mode='manual' antenna='{who}' spw='{s}:{format_channel_ranges(chans)}' "
                                f"reason='fastcal:rawflagchans_quadrant'")
        if quads:
            out.bad_quadrants[str(s)] = quads
    _write_flags(info, plan, n_ant, out)
    logger.info("rawflagchans %s: %s; %d new flags", info.path, out.outliers or "no outliers", out.n_new)
    return out


def _write_flags(info, plan: dict[int, np.ndarray], n_ant: int, out: RawflagSummary) -> None:
    """Flag (baseline, channel) pairs of `plan` (spw -> bool[n_ant^2, nchan]) in every row."""
    from fastcal.pipeline.stages.flagdata import or_flags_by_baseline

    def mask_of(c, a1, a2):
        pair = np.minimum(a1, a2).astype(np.int64) * n_ant + np.maximum(a1, a2)
        return plan[c.spw_id][pair][:, c.chan]

    out.n_new += or_flags_by_baseline(info, list(plan), mask_of, include_autocorr=False)


class RawflagchansStage(Stage):
    """Flag channel/baseline outliers and bad antenna quadrants in the raw bandpass data
    (hif_rawflagchans)."""

    name = "rawflagchans"
    title = "flag deviant channels/baselines in the raw bandpass data"
    simplified = False
    modifies_flags = True

    def run(self, ctx: Context) -> StageResult:
        if not ctx.roles.get("bandpass"):
            return StageResult(self.name, SKIPPED, messages=["no bandpass calibrator: no view to flag"])
        params = dict(intent=BANDPASS_INTENT, fhl_limit=FHL_LIMIT, fhl_minsample=FHL_MINSAMPLE)
        s = ctx.call(flag_raw_channels, vis=ctx.vis, spw=list(ctx.science_spws), **params)
        ctx.refresh()
        if s.n_new:
            ctx.add_flags("rawflagchans", "\n".join(s.template), s.n_new, s.n_total)
        n_pairs = sum(len(v) for v in s.outliers.values())
        msgs = [f"spw {k}: {', '.join(f'{bl} ch {format_channel_ranges(c)}' for bl, c in v.items())}"
                for k, v in s.outliers.items()] or ["no channel/baseline outliers"]
        msgs += [f"spw {k}: bad quadrants " + ", ".join(f"{w} {q}" for w, q in v.items())
                 for k, v in s.bad_quadrants.items()]
        msgs += [f"spw {k} not examined: {why}" for k, why in s.skipped.items()]
        frac = s.n_new / s.n_total if s.n_total else 0.0
        return StageResult(self.name, OK, inputs=params, outputs=dict(s.to_dict(), baselines_flagged=n_pairs),
                           qa=[agent_flagged_score(frac, "rawflagchans")], messages=msgs)
