"""Re-reduce cached per-integration sums: pre-apply Jones terms and sum into intervals.

The solver cache (:class:`fastcal.solve.VisCache`) keeps, per integration, baseline,
channel and parallel hand, the model-divided sums of :mod:`fastcal.kernels.average`
*without* pre-calibration:

    vis = w conj(M) V,    wt = w |M|^2          (one sample per cell)

Because each cell holds a single sample, pre-applying Jones terms afterwards is exact:
with den = J_p,a conj(J_q,a),

    vis' = vis conj(den),  wt' = wt |den|^2     (calwt=True)
    vis' = vis / den,      wt' = wt             (calwt=False)
    vis' = vis conj(den) s_p s_q / |den|^2,  wt' = wt s_p s_q   (separate weight scale s)

which are the sums the average kernel would have produced on the calibrated data. This
kernel applies that and sums cells into (interval, baseline, output channel, pol).
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["reduce_cached"]

JIT = dict(nogil=True, cache=True)


@numba.njit(**JIT)
def reduce_cached(vis, wt, slot, chan_bin, bl_ant1, bl_ant2, jones, jones_flag,
                  jones_time_idx, calwt, out_vis, out_wt, out_n, wscale=None):
    """Apply Jones terms to cached sums and accumulate them per solution interval.

    Parameters
    ----------
    vis : complex64[time, bl, chan, pol]
        Cached ``w conj(M) V`` per integration (dense baselines).
    wt : float32[time, bl, chan, pol]
        Cached ``w |M|^2``; <= 0 means no data.
    slot : int64[time]
        Output interval of each integration; < 0 skips it.
    chan_bin : int32[chan]
        Output channel of each channel; < 0 skips it.
    bl_ant1, bl_ant2 : int32[bl]
        Antennas of the dense baselines.
    jones : complex64[utime, ant, chan or 1, receptor]
        Pre-apply Jones (divide convention); leading axis 0 = no pre-apply. A receptor
        axis of length 1 applies to both pols.
    jones_flag : bool[same as jones]
        True flags the samples using that antenna/receptor/channel.
    jones_time_idx : int64[time]
        Row of `jones` for each integration (ignored without jones); outside the range
        flags the integration.
    calwt : bool
        Scale weights by |den|^2 (CASA calwt).
    out_vis : complex128[interval, bl, out_chan, pol]   (updated in place)
    out_wt : float64[interval, bl, out_chan, pol]       (updated in place)
    out_n : int64[interval, bl, out_chan, pol]          (updated in place)
    wscale : float32[utime, ant, chan or 1, receptor], optional
        Weight scale per antenna/receptor used in place of |J|^2: ``wt' = wt s_p s_q``,
        ``vis' = vis conj(den) s_p s_q / |den|^2`` whatever `calwt` (CASA's channel-averaged
        |B|^2). None or a leading axis of length 0: |den|^2 (`calwt`).
    """
    ws = np.zeros((0, 1, 1, 1), np.float32) if wscale is None else wscale
    _reduce_cached(vis, wt, slot, chan_bin, bl_ant1, bl_ant2, jones, jones_flag,
                   jones_time_idx, calwt, out_vis, out_wt, out_n, ws)


@numba.njit(**JIT)
def _reduce_cached(vis, wt, slot, chan_bin, bl_ant1, bl_ant2, jones, jones_flag,
                   jones_time_idx, calwt, out_vis, out_wt, out_n, wscale):
    """:func:`reduce_cached` with an explicit (possibly empty) `wscale`."""
    n_t, n_bl, n_chan, n_pol = vis.shape
    n_int = out_vis.shape[0]
    n_out = out_vis.shape[2]
    use_j = jones.shape[0] > 0
    per_chan = use_j and jones.shape[2] > 1
    n_rec = jones.shape[3] if use_j else 1
    use_ws = use_j and wscale.shape[0] > 0
    ws_per_chan = wscale.shape[2] > 1
    n_rec_ws = wscale.shape[3]
    for t in range(n_t):
        it = slot[t]
        if it < 0 or it >= n_int:
            continue
        tj = 0
        if use_j:
            tj = jones_time_idx[t]
            if tj < 0 or tj >= jones.shape[0]:
                continue
        for b in range(n_bl):
            p = bl_ant1[b]
            q = bl_ant2[b]
            for c in range(n_chan):
                ob = chan_bin[c]
                if ob < 0 or ob >= n_out:
                    continue
                cj = c if per_chan else 0
                for k in range(n_pol):
                    w = np.float64(wt[t, b, c, k])
                    if not (w > 0.0):
                        continue
                    x = np.complex128(vis[t, b, c, k])
                    if use_j:
                        kr = k if n_rec > 1 else 0
                        if jones_flag[tj, p, cj, kr] or jones_flag[tj, q, cj, kr]:
                            continue
                        den = np.complex128(jones[tj, p, cj, kr]) * np.conj(
                            np.complex128(jones[tj, q, cj, kr]))
                        a2 = den.real * den.real + den.imag * den.imag
                        if a2 == 0.0 or not np.isfinite(a2):
                            continue
                        if use_ws:
                            cs = c if ws_per_chan else 0
                            kw = k if n_rec_ws > 1 else 0
                            s2 = (np.float64(wscale[tj, p, cs, kw])
                                  * np.float64(wscale[tj, q, cs, kw]))
                            x = x * np.conj(den) * (s2 / a2)
                            w = w * s2
                        elif calwt:
                            x = x * np.conj(den)
                            w = w * a2
                        else:
                            x = x * np.conj(den) / a2
                    out_vis[it, b, ob, k] += x
                    out_wt[it, b, ob, k] += w
                    out_n[it, b, ob, k] += 1
