"""bpflagchans: flag outlier channels of a bandpass table and the matching data channels
(the ALMA pipeline's hif_bpflagchans; run by the bandpass stage after its solve).

Metric, per spw, solution time, antenna and polarisation, on the unflagged solution channels:

* amplitude: the fractional residual ``(|B| - s) / s`` of |B| from a smooth fit s;
* phase: the unwrapped phase without its robust linear trend (the delay: median channel
  step), its residual from a smooth fit, wrapped to +-180 deg.

Smooth fit (:func:`smooth_fit`): for each channel, a quadratic least-squares fit to the
*other* channels of a window of ``2h + 1`` channels, ``h = clip(nchan // 16, 3, 15)`` (7
channels for 16-channel spws, 9 for 64, 31 for >= 240), windows shifted inwards at the spw
edges; started from the residuals to a running median and refitted twice without the
channels beyond 4 robust sigma, so a bad range of up to about h channels neither pulls its own
prediction nor its neighbours'. Each residual is divided by its expected scale: the
prediction's own standard error, ``sqrt(1 + (A^-1)_00)`` (larger at the edges, where the fit
extrapolates), times :func:`noise_inflation` (how much noisier every antenna is in that
channel, from the solution SNRs: the baseband roll-off at the edges).

Thresholds (:func:`bandpass_outliers`): a channel is an outlier when the scaled residual is
more than ``limit`` MADs from its median, with the MAD *unscaled* (as the pipeline's
``median_and_mad``) over that antenna's channels, but at least the median of the MADs of all
antennas in the spw (so a quiet antenna, or the reference antenna whose phases are exactly
0, is not held to a near-zero MAD), and the raw deviation also exceeds a floor.
``limit = 14`` is the pipeline's ``diffmad_limit`` (hif_bpflagchans default, the only rule it
enables); the pipeline applies it to channel-to-channel differences, fastcal to the
residuals from the fit, so a contiguous bad range is flagged whole rather than at its two
ends. Floors (fastcal's): ``min_amp_dev = 0.05`` (5 %, as the calflag channel rule) and
``min_phase_dev_deg = 5``. 14 unscaled MADs are about 9.4 Gaussian sigma. Measured on
clean ``SimConfig.tiny(n_chan=64)`` data (7 seeds, 14 spws, SNR ~30 per channel): the
largest scaled residual is 6.1 MADs, no flags; with 16 channels (12 seeds) no flags either;
a 3-channel range of one antenna multiplied by 2, 0.3 or exp(30 deg i) is found whole
(22-64 MADs). (Before the leave-one-out fit, the edge scale and the SNR inflation, the spw
edge channels gave 10-34 MADs on clean data.) When more
than ``max_fraction = 0.25`` of an antenna's channels in a spw would be flagged, that
antenna is left alone there and reported (a bad antenna, not bad channels: lowgainflag and
calflag deal with those).

An outlier in either polarisation, amplitude or phase, flags that solution channel of that
antenna in both polarisations of the table, and the data channels it covers on every
baseline with that antenna, in every correlation, field and scan of the spw. Flag-template
lines: ``mode='manual' antenna='<ant>' spw='<spw>:<chans>' reason='fastcal:bpflagchans'``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from fastcal.errors import ParameterError
from fastcal.pipeline.heuristics_lines import format_channel_ranges

__all__ = ["BpflagSummary", "Residuals", "smooth_fit", "bandpass_residuals", "bandpass_outliers", "flag_bandpass_channels",
           "noise_inflation", "LIMIT", "MIN_AMP_DEV", "MIN_PHASE_DEV_DEG", "MAX_FRACTION", "window_half_width"]

logger = logging.getLogger(__name__)

LIMIT = 14.0
MIN_AMP_DEV = 0.05
MIN_PHASE_DEV_DEG = 5.0
MAX_FRACTION = 0.25
_CLIP = 4.0
_MAD_SIGMA = 1.4826


def window_half_width(nchan: int) -> int:
    """Half width h of the smooth-fit window (``2h + 1`` channels): ``clip(nchan // 16, 3, 15)``."""
    return int(np.clip(nchan // 16, 3, 15))


def _local_quadratic(y: np.ndarray, w: np.ndarray, half: int) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out weighted quadratic fit over the ``2 half + 1`` channels around each
    channel (windows shifted inwards at the edges), evaluated at that channel.

    Returns the prediction and its residual scale ``sqrt(1 + (A^-1)_00)`` (the standard
    deviation of ``y - prediction`` in units of the channel noise for 0/1 weights); NaN where
    the window holds fewer than 3 other points of nonzero weight.
    """
    n = y.size
    m = min(2 * half + 1, n)
    start = np.clip(np.arange(n) - half, 0, n - m)
    Y = np.lib.stride_tricks.sliding_window_view(np.where(w > 0, y, 0.0), m)[start]
    W = np.lib.stride_tricks.sliding_window_view(w, m)[start]
    d = (start[:, None] + np.arange(m)[None, :] - np.arange(n)[:, None]).astype(np.float64)
    S = np.stack([(W * d**k).sum(axis=1) for k in range(5)], axis=1)  # (n, 5)
    T = np.stack([(W * Y * d**k).sum(axis=1) for k in range(3)], axis=1)  # (n, 3)
    S[:, 0] -= w  # leave the channel itself out (its offset d is 0)
    T[:, 0] -= np.where(w > 0, w * y, 0.0)
    A = np.stack([S[:, 0:3], S[:, 1:4], S[:, 2:5]], axis=1)  # (n, 3, 3)
    fit, scale = np.full(n, np.nan), np.full(n, np.nan)
    ok = (W > 0).sum(axis=1) - (w > 0) >= 3
    if ok.any():
        inv = np.linalg.pinv(A[ok])
        fit[ok] = (inv @ T[ok][:, :, None])[:, 0, 0]
        scale[ok] = np.sqrt(1.0 + np.maximum(inv[:, 0, 0], 0.0))
    return fit, scale


def _robust_sigma(r: np.ndarray) -> float:
    r = r[np.isfinite(r)]
    if r.size == 0:
        return float("nan")
    return _MAD_SIGMA * float(np.median(np.abs(r - np.median(r))))


def smooth_fit(y: np.ndarray, valid: np.ndarray, half: int) -> tuple[np.ndarray, np.ndarray]:
    """Robust leave-one-out smooth prediction of `y` (see the module docstring).

    Parameters
    ----------
    y : float64[nchan]
    valid : bool[nchan]
        Channels to fit (flagged ones are ignored, but the fit is evaluated everywhere).
    half : int
        Window half width (channels), >= 1.

    Returns
    -------
    fit, scale : float64[nchan]
        The prediction of each channel from its neighbours, and the standard deviation of
        ``y - fit`` in units of the channel noise (> 1; larger at the spw edges, where the
        fit extrapolates). Where too few neighbours are valid: the running median, scale 1.
    """
    if half < 1:
        raise ParameterError(f"half={half!r} is invalid; valid: >= 1 channel")
    y = np.asarray(y, np.float64)
    valid = np.asarray(valid, bool) & np.isfinite(y)
    n = y.size
    # running median of the valid channels, for the first outlier mask
    yp = np.pad(np.where(valid, y, np.nan), half, constant_values=np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(np.lib.stride_tricks.sliding_window_view(yp, 2 * half + 1)[:n], axis=1)
    keep = valid.copy()
    r = y - med
    fit, scale = med, np.ones(n)
    tiny = 1e-12 * (1.0 + float(np.nanmax(np.abs(y[valid])))) if valid.any() else 0.0
    for _ in range(3):
        s = max(_robust_sigma(r[keep]), tiny)  # noise-free data: clip anything off the fit
        if np.isfinite(s) and s > 0:
            keep = valid & (np.abs(r - np.nanmedian(r[keep])) <= _CLIP * s)
        quad, qs = _local_quadratic(y, keep.astype(np.float64), half)
        good = np.isfinite(quad)
        fit, scale = np.where(good, quad, med), np.where(good, qs, 1.0)
        r = (y - fit) / scale
    return fit, scale


@dataclass
class Residuals:
    """Residuals of a bandpass from its smooth fits, float64[n_ant, nchan, n_pol] each.

    ``amp``: fractional amplitude residual; ``phase``: phase residual (deg); ``*_scale``:
    their standard deviations in units of the channel noise (see :func:`smooth_fit`).
    NaN where flagged.
    """

    amp: np.ndarray
    phase: np.ndarray
    amp_scale: np.ndarray
    phase_scale: np.ndarray


def bandpass_residuals(params: np.ndarray, flag: np.ndarray, half: int | None = None) -> Residuals:
    """Residuals of |B| and of the unwrapped phase (without its robust linear trend) from
    their smooth fits (:func:`smooth_fit`).

    Parameters
    ----------
    params : complex[n_ant, nchan, n_pol]
        Bandpass solutions of one spw and time.
    flag : bool[n_ant, nchan, n_pol]
    half : int, optional
        Window half width (default :func:`window_half_width`).
    """
    p = np.asarray(params, np.complex128)
    fl = np.asarray(flag, bool) | ~np.isfinite(p)
    half = window_half_width(p.shape[1]) if half is None else half
    amp = np.where(fl, np.nan, np.abs(p))
    ph = np.full(p.shape, np.nan)
    x = np.arange(p.shape[1], dtype=np.float64)
    for a in range(p.shape[0]):
        for k in range(p.shape[2]):
            v = ~fl[a, :, k]
            if v.sum() >= 3:  # unwrapped phase without its robust linear trend (the delay)
                u = np.unwrap(np.angle(p[a, v, k]))
                slope = np.median(np.diff(u) / np.diff(x[v]))
                ph[a, v, k] = u - slope * x[v] - np.median(u - slope * x[v])
    out = Residuals(*(np.full(p.shape, np.nan) for _ in range(4)))
    for a in range(p.shape[0]):
        for k in range(p.shape[2]):
            v = ~fl[a, :, k] & np.isfinite(amp[a, :, k]) & np.isfinite(ph[a, :, k])
            if v.sum() < 4:
                continue
            fit, sc = smooth_fit(amp[a, :, k], v, half)
            with np.errstate(invalid="ignore", divide="ignore"):
                out.amp[a, v, k] = (amp[a, v, k] - fit[v]) / fit[v]
            out.amp_scale[a, v, k] = sc[v]
            fit, sc = smooth_fit(ph[a, :, k], v, half)
            out.phase[a, v, k] = np.degrees(np.angle(np.exp(1j * (ph[a, v, k] - fit[v]))))
            out.phase_scale[a, v, k] = sc[v]
    return out


def _deviant(raw: np.ndarray, scale: np.ndarray, limit: float, floor: float) -> np.ndarray:
    """Outliers of residuals raw[n_ant, nchan, n_pol] / scale (per antenna/pol MAD, pooled MAD
    floor); the raw deviation must also exceed `floor`."""
    r = raw / scale
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN antennas
        centre = np.nanmedian(r, axis=1, keepdims=True)
        mad = np.nanmedian(np.abs(r - centre), axis=1, keepdims=True)  # (ant, 1, pol)
        pooled = np.nanmedian(np.where(mad > 0, mad, np.nan), axis=0, keepdims=True)  # (1, 1, pol)
        raw_dev = np.abs(raw - np.nanmedian(raw, axis=1, keepdims=True))
    mad = np.fmax(mad, np.where(np.isfinite(pooled), pooled, 0.0))
    dev = np.abs(r - centre)
    with np.errstate(invalid="ignore"):
        return np.isfinite(dev) & (dev > limit * mad) & (raw_dev > floor)


def noise_inflation(snr: np.ndarray | None, flag: np.ndarray) -> np.ndarray:
    """Per-channel factor (>= 1) by which the noise exceeds its typical level, from the SNR.

    ``max(1, median_k(s) / s_k)`` per polarisation, with ``s_k`` the median SNR of the
    unflagged antennas in channel k: channels where every antenna is noisier (the baseband
    roll-off at the spw edges) get proportionally higher thresholds. One antenna's bad
    channel does not move the median. 1 everywhere without usable SNRs.

    Parameters
    ----------
    snr : float[n_ant, nchan, n_pol] or None
    flag : bool[n_ant, nchan, n_pol]

    Returns
    -------
    numpy.ndarray
        float64[1, nchan, n_pol].
    """
    shape = (1,) + np.shape(flag)[1:]
    if snr is None:
        return np.ones(shape)
    v = np.where(np.asarray(flag, bool), np.nan, np.asarray(snr, np.float64))
    v[~(v > 0)] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        per_chan = np.nanmedian(v, axis=0, keepdims=True)
        typical = np.nanmedian(per_chan, axis=1, keepdims=True)
        f = typical / per_chan
    return np.where(np.isfinite(f), np.maximum(f, 1.0), 1.0)


def bandpass_outliers(params: np.ndarray, flag: np.ndarray, *, snr: np.ndarray | None = None, limit: float = LIMIT,
                      min_amp_dev: float = MIN_AMP_DEV, min_phase_dev_deg: float = MIN_PHASE_DEV_DEG,
                      half: int | None = None) -> np.ndarray:
    """Outlier channels of one spw and time of a bandpass table.

    Parameters
    ----------
    params : complex[n_ant, nchan, n_pol]
    flag : bool[n_ant, nchan, n_pol]
    snr : float[n_ant, nchan, n_pol], optional
        Solution SNRs: residuals are divided by :func:`noise_inflation` before the MADs and
        the limit (the floors apply to the raw deviations).
    limit : float
        Threshold in unscaled MADs (> 0).
    min_amp_dev : float
        Smallest fractional amplitude deviation flagged (>= 0).
    min_phase_dev_deg : float
        Smallest phase deviation flagged (deg, >= 0).
    half : int, optional
        Smooth-fit window half width.

    Returns
    -------
    numpy.ndarray
        bool[n_ant, nchan]: outlier (amplitude or phase, either polarisation), unflagged before.
    """
    if not limit > 0 or min_amp_dev < 0 or min_phase_dev_deg < 0:
        raise ParameterError(f"limit={limit!r}, min_amp_dev={min_amp_dev!r}, min_phase_dev_deg="
                             f"{min_phase_dev_deg!r} are invalid; valid: limit > 0, floors >= 0")
    res = bandpass_residuals(params, flag, half)
    infl = noise_inflation(snr, flag)
    bad = _deviant(res.amp, res.amp_scale * infl, limit, min_amp_dev) | \
        _deviant(res.phase, res.phase_scale * infl, limit, min_phase_dev_deg)
    return bad.any(axis=2)


@dataclass
class BpflagSummary:
    """What :func:`flag_bandpass_channels` flagged.

    ``outliers``: spw -> {antenna: [solution channels]}; ``refused``: spw -> {antenna:
    fraction} left alone (> max_fraction); ``n_solutions``: solution cells (time x antenna x
    chan x pol) newly flagged in the table; ``n_new`` / ``n_total``: data visibilities newly
    flagged / in the spws (all rows); ``template``: flag-template lines.
    """

    caltable: str = ""
    outliers: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    refused: dict[str, dict[str, float]] = field(default_factory=dict)
    n_solutions: int = 0
    n_new: int = 0
    n_total: int = 0
    template: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _data_channels(sol, spw_info, chans: np.ndarray) -> np.ndarray:
    """Data channels (indices) covered by solution channels `chans`."""
    nchan = spw_info.num_chan
    if sol.chan_freq is None or len(sol.chan_freq) == nchan:
        return np.asarray(chans, np.int64)
    f = np.asarray(sol.chan_freq, np.float64)[chans]
    w = np.abs(np.asarray(sol.chan_width, np.float64)[chans]) if sol.chan_width is not None else \
        np.full(len(chans), abs(float(np.median(np.diff(sol.chan_freq)))))
    df = np.asarray(spw_info.chan_freq, np.float64)
    hit = ((df[:, None] >= f - w / 2) & (df[:, None] < f + w / 2)).any(axis=1)
    return np.flatnonzero(hit)


def flag_bandpass_channels(vis: str, caltable: str, *, spw: Sequence[int] | None = None, limit: float = LIMIT,
                           min_amp_dev: float = MIN_AMP_DEV, min_phase_dev_deg: float = MIN_PHASE_DEV_DEG,
                           max_fraction: float = MAX_FRACTION, flag_data: bool = True) -> BpflagSummary:
    """Flag outlier channels in a bandpass table and the matching data (module docstring).

    Parameters
    ----------
    vis : str
        Measurement Set the table was solved from (FLAG written in place when `flag_data`).
    caltable : str
        B Jones table, rewritten in place with the new flags.
    spw : sequence of int, optional
        Spws to examine (default: every spw of the table).
    limit, min_amp_dev, min_phase_dev_deg : float
        See :func:`bandpass_outliers`.
    max_fraction : float
        Largest fraction of an antenna's channels flagged in one spw, in (0, 1].
    flag_data : bool
        Also flag the data channels.

    Returns
    -------
    BpflagSummary

    Raises
    ------
    ParameterError
        Bad thresholds, or a spw not in the table.
    CalTableError
        The table cannot be read or is not a B Jones table.
    """
    from fastcal.caltable import read_caltable
    from fastcal.errors import CalTableError
    from fastcal.ms import open_ms

    if not 0 < max_fraction <= 1:
        raise ParameterError(f"max_fraction={max_fraction!r} is invalid; valid: 0 < f <= 1")
    tab = read_caltable(caltable)
    if tab.vis_cal != "B Jones":
        raise CalTableError(f"{caltable}: a {tab.vis_cal} table; bpflagchans needs a B Jones (bandpass) table")
    spws = [int(s) for s in (tab.spw_ids.tolist() if spw is None else spw)]
    missing = [s for s in spws if s not in tab.spw_ids.tolist()]
    if missing:
        raise ParameterError(f"bpflagchans: spw {missing} not in {caltable}; valid: {tab.spw_ids.tolist()}")
    info = open_ms(vis)
    names = info.antenna_names
    out = BpflagSummary(caltable=str(caltable))
    data_plan: dict[int, dict[int, np.ndarray]] = {}
    for s in spws:
        sol = tab.solutions(s)
        chans_of: dict[int, set[int]] = {}
        for t in range(sol.time.size):
            fl = sol.flag[t]
            bad = bandpass_outliers(sol.params[t], fl, snr=sol.snr[t], limit=limit, min_amp_dev=min_amp_dev,
                                    min_phase_dev_deg=min_phase_dev_deg)
            for a in np.flatnonzero(bad.any(axis=1)):
                frac = bad[a].sum() / max(int((~fl[a]).all(axis=1).sum()), 1)
                if frac > max_fraction:
                    out.refused.setdefault(str(s), {})[names[a]] = float(frac)
                    continue
                chans = np.flatnonzero(bad[a])
                rows = np.flatnonzero((tab.spw_id == s) & (tab.antenna1 == a) & (tab.time == sol.time[t]))
                for r in rows:
                    out.n_solutions += int((~tab.flag[r][chans]).sum())
                    tab.flag[r, chans, :] = True
                chans_of.setdefault(int(a), set()).update(chans.tolist())
        if chans_of:
            out.outliers[str(s)] = {names[a]: sorted(c) for a, c in sorted(chans_of.items())}
            data_plan[s] = {a: _data_channels(sol, info.spws[s], np.array(sorted(c))) for a, c in chans_of.items()}
            out.template += [f"mode='manual' antenna='{names[a]}' spw='{s}:{format_channel_ranges(dc)}' "
                             f"reason='fastcal:bpflagchans'" for a, dc in sorted(data_plan[s].items()) if dc.size]
    if out.n_solutions:
        tab.write(caltable, overwrite=True)
    if flag_data:
        _flag_data(info, data_plan, out)
    logger.info("bpflagchans %s: %s; refused %s; %d solutions and %d visibilities newly flagged", caltable,
                out.outliers or "no outlier channels", out.refused or "none", out.n_solutions, out.n_new)
    return out


def _flag_data(info, plan: dict[int, dict[int, np.ndarray]], out: BpflagSummary) -> None:
    """Flag the planned channels (spw -> antenna -> data channels) on every row of the antenna."""
    from fastcal.pipeline.stages.flagdata import or_flags_by_baseline

    for s in plan:
        dd = info.ddids_for_spw(s)
        ncorr = info.pols[info.ddescs[dd[0]].pol_id].num_corr if dd else 0
        out.n_total += int(np.isin(info.index.ddid, dd).sum()) * info.spws[s].num_chan * ncorr
    n_ant = len(info.antennas)
    masks = {}
    for s, chans in plan.items():
        masks[s] = np.zeros((n_ant, info.spws[s].num_chan), bool)
        for a, dc in chans.items():
            masks[s][a, dc] = True

    def mask_of(c, a1, a2):
        mask = masks[c.spw_id][:, c.chan]
        return mask[a1] | mask[a2]

    out.n_new += or_flags_by_baseline(info, list(plan), mask_of)
