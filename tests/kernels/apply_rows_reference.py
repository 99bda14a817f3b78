"""The per-chunk correction kernel applycal used before the block pipeline
(:func:`fastcal.kernels.apply.correct_block`), kept as a test oracle only: it takes the
Jones product from :func:`fastcal.interp.chunk_jones` (NumPy), so comparing it with
``correct_block`` (which forms the product itself) checks both, bit for bit."""

from __future__ import annotations

import numba
import numpy as np

from fastcal.kernels.apply import (
    MODE_CALFLAG,
    MODE_CALONLY,
    MODE_FLAGONLY,
    MODE_TRIAL,
    _inverse_jones,
)

JIT = dict(nogil=True, cache=True)


@numba.njit(**JIT)
def _correct_diag(
    data, flag, ant1, ant2, time_idx, jinv, jbad, do_cal, do_flag, out_data, out_flag
):
    """Data and flags of a block whose correlation k uses receptors (k, k).

    One branch-free pass per row over (channel, correlation), indexing the two antennas'
    inverse Jones directly (vectorisable). Returns (flagged before, bad and unflagged).
    """
    n_row, n_chan, n_corr = flag.shape
    cstep = 1 if jinv.shape[2] > 1 else 0
    n_before = 0
    n_bad_unflagged = 0
    for r in range(n_row):
        t = time_idx[r]
        jp = jinv[t, ant1[r]]
        jq = jinv[t, ant2[r]]
        bp = jbad[t, ant1[r]]
        bq = jbad[t, ant2[r]]
        for c in range(n_chan):
            cj = c * cstep
            for k in range(n_corr):
                if do_cal:
                    out_data[r, c, k] = data[r, c, k] * (jp[cj, k] * np.conj(jq[cj, k]))
                fin = flag[r, c, k]
                bad = bp[cj, k] or bq[cj, k]
                n_before += fin
                n_bad_unflagged += bad and not fin
                out_flag[r, c, k] = fin or (bad and do_flag)
    return n_before, n_bad_unflagged


@numba.njit(**JIT)
def _correct_general(
    data, flag, ant1, ant2, time_idx, jinv, jbad, corr_rec, do_cal, do_flag, out_data, out_flag
):
    """As :func:`_correct_diag` for any correlation -> receptor map (e.g. XX, XY, YX, YY)."""
    n_row, n_chan, n_corr = flag.shape
    cstep = 1 if jinv.shape[2] > 1 else 0
    n_before = 0
    n_bad_unflagged = 0
    for r in range(n_row):
        t = time_idx[r]
        jp = jinv[t, ant1[r]]
        jq = jinv[t, ant2[r]]
        bp = jbad[t, ant1[r]]
        bq = jbad[t, ant2[r]]
        for c in range(n_chan):
            cj = c * cstep
            for k in range(n_corr):
                a = corr_rec[k, 0]
                b = corr_rec[k, 1]
                if do_cal:
                    out_data[r, c, k] = data[r, c, k] * (jp[cj, a] * np.conj(jq[cj, b]))
                fin = flag[r, c, k]
                bad = bp[cj, a] or bq[cj, b]
                n_before += fin
                n_bad_unflagged += bad and not fin
                out_flag[r, c, k] = fin or (bad and do_flag)
    return n_before, n_bad_unflagged


@numba.njit(**JIT)
def apply_rows(
    data,
    flag,
    weight,
    ant1,
    ant2,
    time_idx,
    jones,
    jflag,
    wscale,
    wscale_w,
    corr_rec,
    mode,
    calwt,
    out_data,
    out_flag,
    out_weight,
    counts,
):
    """Correct one block of rows.

    Parameters
    ----------
    data : complex64 (n_row, n_chan, n_corr)
        Read only in CALFLAG and CALONLY modes (may be empty otherwise).
    flag : bool (n_row, n_chan, n_corr)
        Input flags (FLAG | FLAG_ROW).
    weight : float32 (n_row, n_wchan, n_corr)
        n_wchan = n_chan (WEIGHT_SPECTRUM) or 1 (WEIGHT).
    ant1, ant2 : int32 (n_row,)
    time_idx : int64 (n_row,)
        Index of each row's time in the Jones time axis.
    jones : complex64 (n_utime, n_ant, n_jchan, n_rec)
        n_jchan = n_chan or 1.
    jflag : bool, shape of `jones`
    wscale : float32 (n_utime, n_ant, n_jchan, n_rec)
        Per-channel weight scale (used with spectral weights).
    wscale_w : float32 (n_utime, n_ant, 1, n_rec)
        Channel-averaged weight scale (used when n_wchan == 1).
    corr_rec : int64 (n_corr, 2)
        Receptors (a, b) of each correlation.
    mode : int
        MODE_CALFLAG, MODE_CALONLY, MODE_FLAGONLY or MODE_TRIAL.
    calwt : bool
        Scale the weights.
    out_data : complex64 (n_row, n_chan, n_corr)
        Corrected data (written in CALFLAG and CALONLY modes). The outputs may be the input
        arrays themselves (in-place correction).
    out_flag : bool (n_row, n_chan, n_corr)
    out_weight : float32 (n_row, n_wchan, n_corr)
    counts : int64 (N_COUNTS,)
        Accumulated: samples, flagged before, newly flagged, left (partly) uncalibrated.

    A flagged element of `jones` holds the product of that antenna's unflagged terms only
    (:func:`fastcal.interp.chunk_jones`, as CASA's setMatByOk) and is divided out like any
    other; a zero element counts as 1. Samples using a flagged (or zero) element on either
    antenna are flagged unless the mode is CALONLY, as casatasks.applycal does.
    """
    n_row, n_chan, n_corr = flag.shape
    n_utime, n_ant, n_jchan, n_rec = jones.shape
    n_wchan = weight.shape[1]
    do_cal = mode == MODE_CALFLAG or mode == MODE_CALONLY
    do_flag = mode == MODE_CALFLAG or mode == MODE_FLAGONLY or mode == MODE_TRIAL
    jinv, jbad = _inverse_jones(jones, jflag)
    n_samp = n_row * n_chan * n_corr
    ra = corr_rec[:, 0]
    rb = corr_rec[:, 1]
    diag = n_corr == n_rec
    for k in range(n_corr):
        diag = diag and ra[k] == k and rb[k] == k
    if diag:  # parallel hands in receptor order (XX, YY): no receptor gather per sample
        n_before, n_bad_unflagged = _correct_diag(
            data, flag, ant1, ant2, time_idx, jinv, jbad, do_cal, do_flag, out_data, out_flag
        )
    else:
        n_before, n_bad_unflagged = _correct_general(
            data, flag, ant1, ant2, time_idx, jinv, jbad, corr_rec, do_cal, do_flag,
            out_data, out_flag,
        )  # fmt: skip
    for r in range(n_row):
        t = time_idx[r]
        p = ant1[r]
        q = ant2[r]
        if n_wchan == 1:
            for k in range(n_corr):
                w = weight[r, 0, k]
                if calwt:
                    w = w * wscale_w[t, p, 0, ra[k]] * wscale_w[t, q, 0, rb[k]]
                out_weight[r, 0, k] = w
        else:
            for c in range(n_chan):
                cj = c if n_jchan > 1 else 0
                for k in range(n_corr):
                    w = weight[r, c, k]
                    if calwt:
                        w = w * wscale[t, p, cj, ra[k]] * wscale[t, q, cj, rb[k]]
                    out_weight[r, c, k] = w
    n_new = n_bad_unflagged if do_flag else 0
    n_uncal = 0 if do_flag else n_bad_unflagged
    counts[0] += n_samp
    counts[1] += n_before
    counts[2] += n_new
    counts[3] += n_uncal
