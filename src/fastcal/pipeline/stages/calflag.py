"""calflag: flag outliers in the calibrated calibrators, re-derive, re-apply (the recipe's loop).

Body of the ``calflag`` :class:`~fastcal.pipeline.stage.LoopStage`:

1. ``correctedampflag`` (:func:`flag_corrected_outliers`) on the calibrator fields and
   science spws, three views:

   a. **channels** (fastcal's RFI view): x = |CORRECTED_DATA| / |model| on the parallel
      hands; c = median of x per channel; a channel is flagged (all rows of that field and
      spw) when ``|c - median(c)| > chan_sigma x 1.4826 MAD(c)`` (fastcal choice: 6) and more
      than 5 % of the median;
   b. **antenna x scan**: a = median of x over the antenna's baselines, channels and hands in
      a scan; flagged (antenna, scan, spw) when ``a - median(a)`` is below ``-antnegsig`` or
      above ``antpossig`` times the robust sigma of a, and more than 10 % off;
   c. **hif_correctedampflag** (:func:`correctedamp_heuristics`): the metric is the scalar
      difference ``|<corrected>| - |<model>|`` of the channel-averaged (unflagged channels)
      visibility of every cross-correlation row; with more than one scan of the field the
      parallel hands are averaged first (CAS-12011). With med and sigma = 1.4826 MAD of the
      metric:

      * *integration view* (antenna x time): outliers beyond ``-antnegsig``/``+antpossig``
        sigma (4.0/4.6); when they fall in at most ``max(1, tmantint' x N_times)`` timestamps
        (``tmantint' = tmantint x 2(1 + log10 N_scans)`` for several scans; else the same
        test with the 10-sigma outliers), each such timestamp is judged from the count of
        outlier baselines per antenna: more than 1/3 of the antennas "affected" (count >=
        max - 1), or more than 1/6 affected and more than half at least partly affected ->
        the whole timestamp; else the antenna(s) with the most outliers when they are in at
        least half of the > 5 outliers -> that antenna at that time; else more than
        max(6, 20 %) antennas involved -> the affected antennas at that time. Outliers beyond
        -13/+12 sigma flag their baseline at that time.
      * *baseline view* (all times): outliers beyond ``-antblnegsig``/``+antblpossig`` sigma
        (3.4/3.2); a "bad baseline" has more than ``max(1, tmint' x N_times(baseline))``
        outlier times (``tmint' = tmint x f``, x sqrt(2) with several scans); an antenna in
        more than ``max(4, tmbl x f x (N_ant - 1))`` bad baselines is flagged for the whole
        field/spw; the other bad baselines are flagged when their outlier fraction is >=
        ``min(1, tmint x relaxed_factor)``.
      * the factor f is ``relaxed_factor`` (2) when outliers beyond 6.5 sigma occur in more
        timestamps than the integration-view limit (times 4 - i when i + 1 antennas, up to
        10 % of them, explain 90 % of those outliers), else 1.
      * ``niter=2``: evaluated again after the flags are written.

   Every view flags all channels and both hands of what it selects (the pipeline judges
   each hand and then merges identical commands; fastcal flags the row).

   **Target flags** (fastcal's choice, documented): the target and check source are flagged
   where the phase calibrator's transfer is lost: (i) a *bad baseline* of the phase
   calibrator is flagged on the target and check source (the pipeline's
   ``_propagate_phase_flags``); (ii) an antenna flagged on the phase calibrator for a whole
   scan (antenna x scan view, or "bad antenna" = every scan) loses its per-scan
   ``phase_scan``/``amp_target`` solution there, and fastcal's applycal (``calflag``, linear
   interpolation flagged when either bracketing solution is) would flag that antenna's target
   data between the neighbouring phase-calibrator scans: those rows (times strictly between
   the previous and the next phase-calibrator scan centres; before the first / after the last
   scan: all) are flagged here explicitly, so they are counted and written to the flag
   template. Integration-level flags (a timestamp, an antenna or baseline at one time) do not
   reach the target: the per-scan solutions survive them.

   A field/spw where the views would flag more than ``max_fraction`` (20 %) of the unflagged
   data is not flagged (logged; the calibration itself looks wrong).
2. ``rederive``: re-run the bandpass, fluxscale and timegaincal stages with the new flags;
3. ``reapply``: re-run applycal.

The loop stops when a round adds no flags (or after 3 rounds); each round is recorded.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from fastcal.pipeline.context import Context
from fastcal.pipeline.qa import QAScore, agent_flagged_score
from fastcal.pipeline.stage import OK, Stage, StageResult

__all__ = ["CorrectedAmpFlagStage", "RederiveStage", "ReapplyStage", "flag_corrected_outliers",
           "OutlierSummary", "AmpFlag", "AmpFlagParams", "correctedamp_heuristics"]

logger = logging.getLogger(__name__)

_MAD = 1.4826
# fixed constants of hif_correctedampflag
_RELAX_SIG = 6.5
_VERYHIGH_SIG = 10.0
_ULTRAHIGH_SIG = 12.0
_ULTRALOW_SIG = 13.0
_MAX_FRAC_OUTLIER_SCANS = 0.5
_AFFECTED_FRAC = 1.0 / 3.0
_PARTLY_FRAC = 0.5
_TMBL_MIN_BAD = 4.0


@dataclass(frozen=True)
class AmpFlagParams:
    """hif_correctedampflag thresholds (pipeline defaults; reference section 8 row 12)."""

    antnegsig: float = 4.0
    antpossig: float = 4.6
    antblnegsig: float = 3.4
    antblpossig: float = 3.2
    tmint: float = 0.085
    tmbl: float = 0.175
    tmantint: float = 0.063
    relaxed_factor: float = 2.0
    niter: int = 2


@dataclass(frozen=True)
class AmpFlag:
    """One flag of the corrected-amplitude views (row selection within a field and spw).

    ``time``: one timestamp (MJD s) or None (all); ``ant1``/``ant2``: an antenna (``ant2``
    None), a baseline, or neither (all antennas); ``t0``/``t1``: an open time interval
    (target flags), None = unbounded.
    """

    reason: str
    time: float | None = None
    ant1: int | None = None
    ant2: int | None = None
    t0: float | None = None
    t1: float | None = None
    interval: bool = False

    def rows(self, time: np.ndarray, a1: np.ndarray, a2: np.ndarray) -> np.ndarray:
        sel = np.ones(time.shape, bool)
        if self.time is not None:
            sel &= time == self.time
        if self.interval:
            if self.t0 is not None:
                sel &= time > self.t0
            if self.t1 is not None:
                sel &= time < self.t1
        if self.ant2 is not None:
            sel &= ((a1 == self.ant1) & (a2 == self.ant2)) | ((a1 == self.ant2) & (a2 == self.ant1))
        elif self.ant1 is not None:
            sel &= (a1 == self.ant1) | (a2 == self.ant1)
        return sel


@dataclass
class OutlierSummary:
    """What :func:`flag_corrected_outliers` flagged.

    ``channels``: "field/spw" -> flagged channel indices; ``antenna_scans``: "field/spw" ->
    [antenna name, scan] pairs; ``integrations``: "field/spw" -> [time (MJD s), antenna name
    or "*" (whole timestamp) or "A&B" (baseline)]; ``baselines``: "field/spw" -> ["A&B"];
    ``antennas``: "field/spw" -> antenna names flagged on the whole field; ``target``:
    "field/spw" of a target/check field -> descriptions of the flags; ``n_new`` / ``n_total``:
    visibilities newly flagged (target included; ``n_target`` of them on targets) / examined;
    ``template``: flag-template lines (CASA flagdata list syntax); ``refused``: field/spw ->
    fraction that would have been flagged.
    """

    channels: dict[str, list[int]] = field(default_factory=dict)
    antenna_scans: dict[str, list[list[Any]]] = field(default_factory=dict)
    integrations: dict[str, list[list[Any]]] = field(default_factory=dict)
    baselines: dict[str, list[str]] = field(default_factory=dict)
    antennas: dict[str, list[str]] = field(default_factory=dict)
    target: dict[str, list[str]] = field(default_factory=dict)
    n_new: int = 0
    n_total: int = 0
    n_target: int = 0
    template: list[str] = field(default_factory=list)
    refused: dict[str, float] = field(default_factory=dict)


def _robust(v: np.ndarray) -> tuple[float, float]:
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    m = float(np.median(v))
    return m, _MAD * float(np.median(np.abs(v - m)))


# ----------------------------------------------------------------------------- heuristics


def _antenna_based(t: np.ndarray, a: np.ndarray, b: np.ndarray, out: np.ndarray, times: np.ndarray,
                   n_ant: int) -> list[AmpFlag]:
    """Judge each timestamp in `times` from its outlier baselines (`out` mask over rows)."""
    flags = []
    for ts in times:
        sel = out & (t == ts)
        n_out = int(sel.sum())
        cnt = np.bincount(np.concatenate([a[sel], b[sel]]), minlength=n_ant)
        affected = np.flatnonzero(cnt >= max(1, int(cnt.max()) - 1))
        partly = np.setdiff1d(np.flatnonzero(cnt >= 1), affected)
        n_aff, n_any = affected.size, affected.size + partly.size
        if n_aff > _AFFECTED_FRAC * n_ant or (n_aff > 0.5 * _AFFECTED_FRAC * n_ant and n_any > _PARTLY_FRAC * n_ant):
            flags.append(AmpFlag("bad timestamp", time=float(ts)))
        elif cnt.max() >= _MAX_FRAC_OUTLIER_SCANS * n_out and n_out > 5:
            flags += [AmpFlag("bad antenna timestamp", time=float(ts), ant1=int(x))
                      for x in np.flatnonzero(cnt == cnt.max())]
        elif n_any > max(6.0, 0.2 * n_ant) and n_aff > 0:
            flags += [AmpFlag("bad CAI-dependent data", time=float(ts), ant1=int(x)) for x in affected]
    return flags


def _relaxed_scale(x, t, a, b, med, sig, n_ant, max_times, p: AmpFlagParams) -> float:
    """Threshold scale factor: ``relaxed_factor`` when the 6.5-sigma outliers are spread over
    too many timestamps (see the module docstring), else 1."""
    relax = np.abs(x - med) > _RELAX_SIG * sig
    if not relax.any():
        return 1.0
    factor = 1
    ra, rb = a[relax], b[relax]
    for i in range(max(1, n_ant // 10)):
        if ra.size == 0:
            break
        most = int(np.argmax(np.bincount(np.concatenate([ra, rb]), minlength=n_ant)))
        keep = (ra != most) & (rb != most)
        if keep.sum() < 0.1 * relax.sum():
            factor = 4 - i
            break
        ra, rb = ra[keep], rb[keep]
    return p.relaxed_factor if np.unique(t[relax]).size > max_times * factor else 1.0


def _baseline_view(x, t, a, b, all_a1, all_a2, med, sig, n_ant, n_scans, scale, combined,
                   p: AmpFlagParams) -> list[AmpFlag]:
    out = (x < med - p.antblnegsig * sig) | (x > med + p.antblpossig * sig)
    if not out.any():
        return []
    n_out = Counter(zip(a[out].tolist(), b[out].tolist(), strict=True))
    n_all = Counter(zip(all_a1.tolist(), all_a2.tolist(), strict=True))
    tm = p.tmint * scale
    if n_scans > 1:
        tm *= 2 ** 0.5 if combined else 3.0
    bad_bls = [bl for bl, n in n_out.items() if n > max(1.0, n_all[bl] * tm)]
    if not bad_bls:
        return []
    per_ant = np.bincount(np.array(bad_bls, np.int64).ravel(), minlength=n_ant)
    limit = max(_TMBL_MIN_BAD, p.tmbl * scale * (n_ant - 1))
    bad_ants = set(np.flatnonzero(per_ant > limit).tolist())
    flags = [AmpFlag("bad antenna", ant1=int(x)) for x in sorted(bad_ants)]
    tm_relaxed = min(1.0, p.tmint * p.relaxed_factor)
    for bl in bad_bls:
        if bl[0] not in bad_ants and bl[1] not in bad_ants and n_out[bl] / n_all[bl] >= tm_relaxed:
            flags.append(AmpFlag("bad baseline", ant1=int(bl[0]), ant2=int(bl[1])))
    return flags


def correctedamp_heuristics(time: np.ndarray, ant1: np.ndarray, ant2: np.ndarray, metric: np.ndarray,
                            flagged: np.ndarray, n_ant: int, n_scans: int,
                            params: AmpFlagParams = AmpFlagParams()) -> list[AmpFlag]:
    """The integration and baseline views of hif_correctedampflag for one field and spw.

    Parameters
    ----------
    time : float64 (n_row,)
        TIME of each cross-correlation row (MJD s).
    ant1, ant2 : int (n_row,)
    metric : float64 (n_row, n_c)
        ``|<corrected>| - |<model>|`` per row and hand (or one column: the hands' mean).
    flagged : bool (n_row, n_c)
    n_ant : int
        Antennas in the array.
    n_scans : int
        Scans of this field.
    params : AmpFlagParams

    Returns
    -------
    list of AmpFlag
        Duplicates removed; each flag covers every hand.
    """
    p = params
    n_times = np.unique(time).size
    tmantint = p.tmantint * 2 * (1 + np.log10(n_scans)) if n_scans > 1 else p.tmantint
    max_times = max(1.0, tmantint * n_times)
    flags: list[AmpFlag] = []
    for c in range(metric.shape[1]):
        good = ~flagged[:, c] & np.isfinite(metric[:, c])
        if good.sum() < 3:
            continue
        x, t, a, b = metric[good, c], time[good], ant1[good], ant2[good]
        med = float(np.median(x))
        sig = _MAD * float(np.median(np.abs(x - med)))
        if not sig > 0:
            continue
        scale = _relaxed_scale(x, t, a, b, med, sig, n_ant, max_times, p)
        high = (x < med - p.antnegsig * sig) | (x > med + p.antpossig * sig)
        if high.any():
            th = np.unique(t[high])
            vhigh = np.abs(x - med) > _VERYHIGH_SIG * sig
            tv = np.unique(t[vhigh])
            if th.size <= max_times:
                flags += _antenna_based(t, a, b, high, th, n_ant)
            elif 0 < tv.size <= max_times:
                flags += _antenna_based(t, a, b, vhigh, tv, n_ant)
        ultra = (x < med - _ULTRALOW_SIG * sig) | (x > med + _ULTRAHIGH_SIG * sig)
        flags += [AmpFlag("ultrahigh baseline timestamp", time=float(t[i]), ant1=int(a[i]), ant2=int(b[i]))
                  for i in np.flatnonzero(ultra)]
        flags += _baseline_view(x, t, a, b, ant1, ant2, med, sig, n_ant, n_scans, scale,
                                metric.shape[1] == 1 or c == 0, p)
    return _consolidate(flags)


def _consolidate(flags: Sequence[AmpFlag]) -> list[AmpFlag]:
    """Drop duplicates and flags inside a wider one (as the pipeline's flag consolidation):
    timed flags of an antenna/baseline flagged at all times, and baseline-at-a-time flags
    when one of its antennas (or the whole timestamp) is flagged at that time."""
    flags = list(dict.fromkeys(flags))
    ants = {f.ant1 for f in flags if f.time is None and f.ant1 is not None and f.ant2 is None}
    bls = {(f.ant1, f.ant2) for f in flags if f.time is None and f.ant2 is not None}
    whole_t = {f.time for f in flags if f.time is not None and f.ant1 is None}
    ant_t = {(f.time, f.ant1) for f in flags if f.time is not None and f.ant1 is not None and f.ant2 is None}
    out = []
    for f in flags:
        if f.time is not None:
            members = {f.ant1, f.ant2} - {None}
            if members & ants or (f.ant2 is not None and (f.ant1, f.ant2) in bls):
                continue
            if f.ant1 is not None and f.time in whole_t:
                continue
            if f.ant2 is not None and ((f.time, f.ant1) in ant_t or (f.time, f.ant2) in ant_t):
                continue
        elif f.ant2 is not None and {f.ant1, f.ant2} & ants:
            continue
        out.append(f)
    return out


# ----------------------------------------------------------------------------- reading


@dataclass
class _FieldSpwData:
    """Channel-averaged rows of one field and spw (all its scans), cross-correlations only."""

    time: np.ndarray
    ant1: np.ndarray
    ant2: np.ndarray
    scan: np.ndarray
    metric: np.ndarray  # (n_row, n_par)
    flagged: np.ndarray  # (n_row, n_par)


def _read_metric(info, fname: str, spw: int) -> _FieldSpwData | None:
    from fastcal.errors import SelectionError
    from fastcal.flux import virtual_model
    from fastcal.ms import read_block, read_chunks, require_parallel_hands

    fid = info.field_names.index(fname)
    try:
        chunks = read_chunks(info, ("CORRECTED_DATA", "FLAG"), field=fname, spw=str(spw), include_autocorr=False)
    except SelectionError:
        return None
    vm = virtual_model(info, fid, int(spw))
    parts = []
    for ch in chunks:
        hands = list(require_parallel_hands(info.pols[ch.pol_id]))
        mod = (np.asarray(vm.spectrum(ch.freq, ch.corr_types))[:, hands] if vm is not None
               else np.zeros((ch.n_chan, len(hands))))
        for blk in range(ch.n_blocks):
            sl = ch.block_slice(blk)
            arr = read_block(ch, blk, ("CORRECTED_DATA", "FLAG"))
            d = arr["CORRECTED_DATA"][:, :, hands].astype(np.complex128)
            ok = ~arr["FLAG"][:, :, hands] & np.isfinite(d)
            n = ok.sum(axis=1)
            with np.errstate(all="ignore"):
                dav = np.where(ok, d, 0).sum(axis=1) / n
                mav = (np.where(ok, mod[None, :, :], 0).sum(axis=1) / n)
            metric = np.abs(dav) - np.abs(mav)
            parts.append((ch.time[sl], ch.antenna1[sl], ch.antenna2[sl], np.full(sl.stop - sl.start, ch.scan),
                          metric, n == 0))
    if not parts:
        return None
    cat = [np.concatenate([p[i] for p in parts]) for i in range(6)]
    return _FieldSpwData(*cat)


def _combine_hands(d: _FieldSpwData) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the parallel hands' metric (flagged only where both are)."""
    m = np.where(d.flagged, np.nan, d.metric)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(m, axis=1, keepdims=True)
    return mean, d.flagged.all(axis=1, keepdims=True)


def _write_row_flags(info, fname: str, spw: int, flags: Sequence[AmpFlag], *, dry_run: bool = False
                     ) -> tuple[int, int]:
    """Flag (all channels and hands) the rows of `fname`/`spw` selected by `flags`.

    Returns (newly flagged visibilities, unflagged visibilities before)."""
    from fastcal.errors import SelectionError
    from fastcal.ms import ChunkWriter, read_block, read_chunks

    if not flags:
        return 0, 0
    try:
        chunks = read_chunks(info, ("FLAG",), field=fname, spw=str(spw), include_autocorr=False)
    except SelectionError:
        return 0, 0
    new = seen = 0
    with ChunkWriter(info) as w:
        for ch in chunks:
            for blk in range(ch.n_blocks):
                sl = ch.block_slice(blk)
                t, a1, a2 = ch.time[sl], ch.antenna1[sl], ch.antenna2[sl]
                hit = np.zeros(t.shape, bool)
                for f in flags:
                    hit |= f.rows(t, a1, a2)
                flag = np.array(read_block(ch, blk, ("FLAG",))["FLAG"], copy=True)
                seen += int((~flag).sum())
                if not hit.any():
                    continue
                n = int((~flag[hit]).sum())
                if n and not dry_run:
                    flag[hit] = True
                    w.write("FLAG", ch.rows[sl], flag, channels=ch.chan)
                new += n
    return new, seen


# ----------------------------------------------------------------------------- views


def _channel_scan_view(info, fname: str, s: int, out: OutlierSummary, chan_sigma: float, antnegsig: float,
                       antpossig: float, max_fraction: float) -> list[tuple[int, int]]:
    """Views (a) and (b): flag outlier channels and antenna-scans of one field/spw; returns the
    flagged (antenna id, scan) pairs."""
    from fastcal.errors import SelectionError
    from fastcal.flux import virtual_model
    from fastcal.ms import ChunkWriter, read_block, read_chunks, require_parallel_hands

    n_ant = len(info.antenna_names)
    fid = info.field_names.index(fname)
    try:
        chunks = read_chunks(info, ("CORRECTED_DATA", "FLAG"), field=fname, spw=str(s), include_autocorr=False)
    except SelectionError:  # no data of this field in this spw
        return []
    data = []
    vm = virtual_model(info, fid, int(s))
    for ch in chunks:
        hands = list(require_parallel_hands(info.pols[ch.pol_id]))
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
        return []
    key = f"{fname}/{s}"
    allx = np.concatenate([x.reshape(x.shape[0], x.shape[1], -1) for _, _, x in data], axis=0)
    out.n_total += int(np.isfinite(allx).sum())
    if vm is None:  # no model: normalise by the median amplitude
        norm = np.nanmedian(allx)
        allx = allx / norm
        data = [(c, b, x / norm) for c, b, x in data]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN (fully flagged) channels
        cmed = np.nanmedian(allx, axis=(0, 2))
    m, sd = _robust(cmed)
    bad_chan = np.flatnonzero(np.isfinite(cmed) & (np.abs(cmed - m) > max(chan_sigma * sd, 0.05 * abs(m))))
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
        return []
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
        return []
    names = list(info.antenna_names)
    if bad_chan.size:
        out.channels[key] = bad_chan.tolist()
        out.template.append(f"mode='manual' field='{fname}' spw='{s}:{';'.join(map(str, bad_chan))}' "
                            f"reason='fastcal:correctedampflag_channels'")
    if bad_as:
        out.antenna_scans[key] = [[names[a], int(sc)] for a, sc in bad_as]
        out.template += [f"mode='manual' field='{fname}' spw='{s}' antenna='{names[a]}' scan='{sc}' "
                         f"reason='fastcal:correctedampflag_antenna_scan'" for a, sc in bad_as]
    with ChunkWriter(info) as w:
        for c, sl, flag, before in plans:
            n = int((flag & ~before).sum())
            if n:
                out.n_new += n
                w.write("FLAG", c.rows[sl], flag, channels=c.chan)
    return bad_as


def _flag_text(info, fname: str, spw: int, f: AmpFlag) -> str:
    from fastcal.ms.info import format_mjd_s

    names = list(info.antenna_names)
    parts = [f"mode='manual' field='{fname}' spw='{spw}'"]
    if f.ant2 is not None:
        parts.append(f"antenna='{names[f.ant1]}&{names[f.ant2]}'")
    elif f.ant1 is not None:
        parts.append(f"antenna='{names[f.ant1]}'")
    if f.time is not None:  # one integration: +-0.5 ms around its centre
        parts.append(f"timerange='{format_mjd_s(f.time - 5e-4, digits=3)}~{format_mjd_s(f.time + 5e-4, digits=3)}'")
    if f.interval and (f.t0 is not None or f.t1 is not None):
        t0 = info.scans[0].start - 1.0 if f.t0 is None else f.t0
        t1 = max(s.end for s in info.scans) + 1.0 if f.t1 is None else f.t1
        parts.append(f"timerange='{format_mjd_s(t0, digits=3)}~{format_mjd_s(t1, digits=3)}'")
    parts.append(f"reason='fastcal:correctedampflag {f.reason}'")
    return " ".join(parts)


def _record_pipeline_flags(info, out: OutlierSummary, fname: str, spw: int, flags: Sequence[AmpFlag]) -> None:
    names = list(info.antenna_names)
    key = f"{fname}/{spw}"
    for f in flags:
        who = ("*" if f.ant1 is None else names[f.ant1] if f.ant2 is None
               else f"{names[f.ant1]}&{names[f.ant2]}")
        if f.time is not None:
            out.integrations.setdefault(key, []).append([f.time, who])
        elif f.ant2 is not None:
            out.baselines.setdefault(key, []).append(who)
        elif f.ant1 is not None:
            out.antennas.setdefault(key, []).append(who)
        out.template.append(_flag_text(info, fname, spw, f))


def _pipeline_view(info, fname: str, spw: int, p: AmpFlagParams, out: OutlierSummary,
                   max_fraction: float) -> list[AmpFlag]:
    """View (c), ``niter`` times; returns every flag written."""
    written: list[AmpFlag] = []
    n_ant = len(info.antenna_names)
    key = f"{fname}/{spw}"
    for _ in range(p.niter):
        d = _read_metric(info, fname, spw)
        if d is None:
            break
        n_scans = np.unique(d.scan).size
        metric, flagged = _combine_hands(d) if n_scans > 1 else (d.metric, d.flagged)
        flags = [f for f in correctedamp_heuristics(d.time, d.ant1, d.ant2, metric, flagged, n_ant, n_scans, p)
                 if f not in written]
        if not flags:
            break
        n_would, n_seen = _write_row_flags(info, fname, spw, flags, dry_run=True)
        if n_seen and n_would / n_seen > max_fraction:
            out.refused[key] = max(out.refused.get(key, 0.0), n_would / n_seen)
            logger.warning("correctedampflag: %s: the hif_correctedampflag views would flag %.0f%% of the "
                           "unflagged data (> %.0f%%): not flagged", key, 100 * n_would / n_seen,
                           100 * max_fraction)
            break
        n, _ = _write_row_flags(info, fname, spw, flags)
        out.n_new += n
        _record_pipeline_flags(info, out, fname, spw, flags)
        written += flags
        if n == 0:
            break
    return written


def _target_flags(info, phase_fields: Sequence[str], spw: int, bad_as: Sequence[tuple[int, int]],
                  view_flags: Sequence[AmpFlag]) -> list[AmpFlag]:
    """Target/check flags implied by the phase calibrator's flags (see the module docstring)."""
    pids = {info.field_names.index(f) for f in phase_fields}
    scans = sorted((s for s in info.scans if pids & set(s.field_ids) and spw in s.spw_ids), key=lambda s: s.start)
    centre = {s.number: 0.5 * (s.start + s.end) for s in scans}
    order = [s.number for s in scans]
    out = [AmpFlag("bad baseline propagated from PHASE", ant1=f.ant1, ant2=f.ant2)
           for f in view_flags if f.reason == "bad baseline"]
    lost = {(f.ant1, sc) for f in view_flags if f.reason == "bad antenna" for sc in order}
    lost |= {(a, sc) for a, sc in bad_as if sc in centre}
    for a, sc in sorted(lost):
        k = order.index(sc)
        t0 = centre[order[k - 1]] if k > 0 else None
        t1 = centre[order[k + 1]] if k + 1 < len(order) else None
        out.append(AmpFlag(f"phase-calibrator solution of scan {sc} flagged", ant1=a, t0=t0, t1=t1, interval=True))
    return list(dict.fromkeys(out))


def flag_corrected_outliers(vis: str, fields: Sequence[str], spw: Sequence[int], *, phase_fields: Sequence[str] = (),
                            target_fields: Sequence[str] = (), chan_sigma: float = 6.0,
                            antnegsig: float = 4.0, antpossig: float = 4.6, antblnegsig: float = 3.4,
                            antblpossig: float = 3.2, tmint: float = 0.085, tmbl: float = 0.175,
                            tmantint: float = 0.063, relaxed_factor: float = 2.0, niter: int = 2,
                            max_fraction: float = 0.2) -> OutlierSummary:
    """Flag outliers of the calibrated calibrators and the target data they imply (see the module).

    Parameters
    ----------
    vis : str
        MS with CORRECTED_DATA (applycal run).
    fields : sequence of str
        Calibrator fields to examine.
    spw : sequence of int
        Science spws.
    phase_fields, target_fields : sequence of str
        Phase calibrator(s) (a subset of `fields`) and the target/check fields their flags
        propagate to.
    chan_sigma : float
        Channel view threshold (robust sigma).
    antnegsig, antpossig, antblnegsig, antblpossig, tmint, tmbl, tmantint, relaxed_factor, niter
        hif_correctedampflag parameters (pipeline defaults); ``antnegsig``/``antpossig`` also
        set the antenna x scan view.
    max_fraction : float
        Refuse to flag a field/spw where more than this fraction would be flagged.

    Returns
    -------
    OutlierSummary

    Raises
    ------
    ParameterError
        Unknown field, or bad thresholds.
    """
    from fastcal.errors import ParameterError
    from fastcal.ms import open_ms

    info = open_ms(vis)
    for f in list(fields) + list(phase_fields) + list(target_fields):
        if f not in info.field_names:
            raise ParameterError(f"flag_corrected_outliers: field {f!r} is not in {info.path}; valid: "
                                 f"{', '.join(info.field_names)}")
    if niter < 1 or not 0 < max_fraction <= 1 or min(antnegsig, antpossig, antblpossig, chan_sigma) <= 0:
        raise ParameterError(f"flag_corrected_outliers: niter={niter!r} (>= 1), max_fraction={max_fraction!r} "
                             f"(0 < x <= 1), sigma thresholds {antnegsig}, {antpossig}, {antblpossig}, "
                             f"{chan_sigma} (> 0)")
    p = AmpFlagParams(antnegsig, antpossig, antblnegsig, antblpossig, tmint, tmbl, tmantint, relaxed_factor, niter)
    out = OutlierSummary()
    if "CORRECTED_DATA" not in info.columns:
        return out
    for s in spw:
        phase_bad_as: list[tuple[int, int]] = []
        phase_flags: list[AmpFlag] = []
        for fname in fields:
            bad_as = _channel_scan_view(info, fname, int(s), out, chan_sigma, antnegsig, antpossig, max_fraction)
            flags = _pipeline_view(info, fname, int(s), p, out, max_fraction)
            if fname in phase_fields:
                phase_bad_as += bad_as
                phase_flags += flags
        tflags = _target_flags(info, phase_fields, int(s), phase_bad_as, phase_flags) if phase_fields else []
        for tname in (target_fields if tflags else ()):
            n, _ = _write_row_flags(info, tname, int(s), tflags)
            out.n_new += n
            out.n_target += n
            if n:
                out.target[f"{tname}/{s}"] = [_flag_text(info, tname, int(s), f) for f in tflags]
                out.template += out.target[f"{tname}/{s}"]
    logger.info("correctedampflag %s: channels %s, antenna-scans %s, integrations %s, baselines %s, antennas %s, "
                "target %d; %d new flags", info.path, out.channels, out.antenna_scans, out.integrations,
                out.baselines, out.antennas, out.n_target, out.n_new)
    return out


# ----------------------------------------------------------------------------- stages


class CorrectedAmpFlagStage(Stage):
    """Outlier flagging of the calibrated calibrators, and the target data it implies (loop body)."""

    name = "correctedampflag"
    title = "flag outliers in the calibrated calibrators"
    simplified = True

    def run(self, ctx: Context) -> StageResult:
        cals = list(dict.fromkeys(f for r in ("bandpass", "flux", "phase") for f in ctx.roles.get(r, [])))
        summary, qa, msgs = flag_calibrator_outliers(ctx, cals, self.name)
        return StageResult(self.name, OK, inputs=asdict(AmpFlagParams()), outputs=outlier_outputs(summary),
                           qa=qa, messages=msgs)


def flag_calibrator_outliers(ctx: Context, fields: list[str], agent: str
                             ) -> tuple[OutlierSummary, list[QAScore], list[str]]:
    """Run :func:`flag_corrected_outliers` on `fields` (with the target flags the phase
    calibrator implies), record the flags under `agent`, and give the QA scores and messages
    that the calflag loop and gfluxscaleflag report."""
    phase = list(ctx.roles.get("phase", []))
    targets = [f for r in ("target", "check") for f in ctx.roles.get(r, []) if f not in fields]
    summary = ctx.call(flag_corrected_outliers, vis=ctx.vis, fields=fields, spw=list(ctx.science_spws),
                       phase_fields=phase, target_fields=list(dict.fromkeys(targets)))
    ctx.refresh()
    if summary.n_new:
        ctx.add_flags(agent, "\n".join(summary.template), summary.n_new, summary.n_total)
    frac = summary.n_new / summary.n_total if summary.n_total else 0.0
    qa = [agent_flagged_score(frac, agent)]
    msgs = []
    if summary.n_target:
        msgs.append(f"{summary.n_target} target/check visibilities flagged where the phase calibrator's "
                    f"solutions were lost: " + "; ".join(summary.target))
    if summary.refused:
        msgs.append("not flagged (would flag too much; calibration problem?): "
                    + ", ".join(f"{k} {100 * v:.0f}%" for k, v in summary.refused.items()))
        qa.append(QAScore(f"{agent}_refused", float(len(summary.refused)), 0.3, msgs[-1], "field/spw"))
    return summary, qa, msgs


def outlier_outputs(summary: OutlierSummary) -> dict[str, Any]:
    """The stage outputs of an outlier-flagging run (what was flagged, by view)."""
    return dict(channels=summary.channels, antenna_scans=summary.antenna_scans,
                integrations=summary.integrations, baselines=summary.baselines,
                antennas=summary.antennas, target=summary.target, n_new=summary.n_new,
                n_target=summary.n_target, n_total=summary.n_total, refused=summary.refused)


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
