"""Numba kernels for applying calibration: frequency resampling of solutions and the
per-sample correction of visibilities, flags and weights.

Conventions (docs/applycal.md):

* Jones arrays are ``(n_utime, n_ant, n_chan or 1, n_receptor)`` in the *divide*
  convention: corrected = V / (J_p,a conj(J_q,b)) for correlation (a, b).
* ``corr_rec`` (n_corr, 2) maps each correlation to its receptors (XX -> (0, 0),
  XY -> (0, 1), YX -> (1, 0), YY -> (1, 1)).
* Weights are multiplied by ``wscale_p,a * wscale_q,b``.

No Python objects, no I/O, no exceptions for data conditions.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = [
    "MODE_CALFLAG",
    "MODE_CALONLY",
    "MODE_FLAGONLY",
    "MODE_TRIAL",
    "N_COUNTS",
    "correct_block",
    "resample_freq",
]

JIT = dict(nogil=True, cache=True)

#: applymode codes understood by :func:`correct_block`.
MODE_CALFLAG = 0
MODE_CALONLY = 1
MODE_FLAGONLY = 2
MODE_TRIAL = 3

#: Entries of the ``counts`` array of :func:`correct_block`.
COUNT_SAMPLES = 0  # samples processed
COUNT_FLAGGED_BEFORE = 1  # samples flagged on input
COUNT_NEWLY_FLAGGED = 2  # unflagged samples whose solution is flagged (flagged in calflag/flagonly)
COUNT_UNCALIBRATED = 3  # calonly: unflagged samples left uncalibrated (solution flagged)
N_COUNTS = 4


@numba.njit(**JIT)
def _lower_bound(x, v):
    lo, hi = 0, x.shape[0]
    while lo < hi:
        mid = (lo + hi) // 2
        if x[mid] < v:
            lo = mid + 1
        else:
            hi = mid
    return lo


@numba.njit(**JIT)
def _interp_sorted(xs, ys, m, f, nearest):
    """Value at f from the ascending samples xs[:m], ys[:m] (f inside [xs[0], xs[m-1]])."""
    k = _lower_bound(xs[:m], f)
    if k >= m:
        return ys[m - 1]
    if xs[k] == f or k == 0:
        return ys[k]
    x0, x1 = xs[k - 1], xs[k]
    if nearest:
        return ys[k] if (x1 - f) < (f - x0) else ys[k - 1]
    w = (f - x0) / (x1 - x0)
    return ys[k - 1] + w * (ys[k] - ys[k - 1])


@numba.njit(**JIT)
def _registration_flags(flgin, fin, fout, nearest, oflag):
    """CASA's channel-registration flags ('...flag' frequency modes) for one parameter
    (CTPatchedInterp::resampleFlagsInFreq: a data channel exactly on a calibration channel
    takes that channel's flag; otherwise the flag of its registration interval)."""
    nflg = flgin.shape[0]
    flreg = np.empty(nflg, np.bool_)
    if nearest or nflg == 1:
        for i in range(nflg):
            flreg[i] = flgin[i]
    else:
        for i in range(nflg - 1):
            flreg[i] = flgin[i] or flgin[i + 1]
        flreg[nflg - 1] = flreg[nflg - 2]
    ascending = fin[nflg - 1] >= fin[0]
    for j in range(fout.shape[0]):
        f = fout[j]
        if ascending:
            ireg = _lower_bound(fin, f)
        else:  # search in the reversed axis, then map back
            ireg = 0
            while ireg < nflg and fin[ireg] > f:
                ireg += 1
        if ireg < nflg and fin[ireg] == f:  # exact registration: that channel's own flag
            oflag[j] = flgin[ireg]
            continue
        if ireg > 0:
            ireg -= 1
        if ireg > nflg - 1:
            ireg = nflg - 1
        if nearest:
            if ireg < nflg - 1 and abs(f - fin[ireg]) > abs(fin[ireg + 1] - f):
                ireg += 1
        elif ireg == nflg - 1 and nflg > 1:
            ireg -= 1
        oflag[j] = flreg[ireg]


@numba.njit(**JIT)
def resample_freq(val, flg, fin, fout, nearest, flagmode, n_sub, out, oflag):
    """Resample solutions from the calibration channels to the data channels (CASA rules).

    Parameters
    ----------
    val : float64 (n, n_fpar, n_in)
        Values per solution channel; for complex tables ``n_sub = 2`` sub-parameters
        (amplitude, phase) per parameter, interleaved: fpar = 2 * par + {0, 1}.
    flg : bool (n, n_par, n_in)
        Solution flags (n_fpar = n_par * n_sub).
    fin : float64 (n_in,)
        Calibration channel frequencies (Hz).
    fout : float64 (n_out,)
        Data channel frequencies (Hz).
    nearest : bool
        Nearest-neighbour instead of linear interpolation.
    flagmode : bool
        '...flag' modes: a data channel registered on a flagged calibration channel is
        flagged. Otherwise flagged calibration channels are skipped (interpolated over) and
        only parameters without any unflagged channel are flagged.
    n_sub : int
        1 (real parameters) or 2 (amplitude, phase; phase unwrapped along frequency).
    out : float64 (n, n_fpar, n_out)
    oflag : bool (n, n_par, n_out)
    """
    n, n_fpar, n_in = val.shape
    n_out = fout.shape[0]
    xs = np.empty(n_in, np.float64)
    ys = np.empty(n_in, np.float64)
    for i in range(n):
        anygood = False
        for p in range(flg.shape[1]):
            for c in range(n_in):
                if not flg[i, p, c]:
                    anygood = True
        if not anygood:
            for fp in range(n_fpar):
                for j in range(n_out):
                    out[i, fp, j] = 0.0
            for p in range(flg.shape[1]):
                for j in range(n_out):
                    oflag[i, p, j] = True
            continue
        for fp in range(n_fpar):
            p = fp // n_sub
            m = 0
            for c in range(n_in):
                if not flg[i, p, c]:
                    xs[m] = fin[c]
                    ys[m] = val[i, fp, c]
                    m += 1
            if m == 0:
                for j in range(n_out):
                    out[i, fp, j] = 0.0
                    oflag[i, p, j] = True
                continue
            same = m == n_out
            if same:
                for j in range(n_out):
                    tol = 1e-10 * max(abs(fout[j]), abs(xs[j]))
                    if abs(fout[j] - xs[j]) > tol:
                        same = False
                        break
            if same:
                for j in range(n_out):
                    out[i, fp, j] = ys[j]
                    oflag[i, p, j] = False
                continue
            if n_sub == 2 and fp % 2 == 1:  # unwrap the phase along frequency
                for c in range(1, m):
                    while ys[c] - ys[c - 1] > np.pi:
                        ys[c] -= 2.0 * np.pi
                    while ys[c] - ys[c - 1] < -np.pi:
                        ys[c] += 2.0 * np.pi
            if flagmode:
                _registration_flags(flg[i, p], fin, fout, nearest, oflag[i, p])
            else:
                for j in range(n_out):
                    oflag[i, p, j] = False
            if m > 1 and xs[m - 1] < xs[0]:  # descending: reverse into ascending order
                for c in range(m // 2):
                    xs[c], xs[m - 1 - c] = xs[m - 1 - c], xs[c]
                    ys[c], ys[m - 1 - c] = ys[m - 1 - c], ys[c]
            lo_f, hi_f = xs[0], xs[m - 1]
            for j in range(n_out):
                f = fout[j]
                if f <= lo_f:
                    out[i, fp, j] = ys[0]
                elif f >= hi_f:
                    out[i, fp, j] = ys[m - 1]
                else:
                    out[i, fp, j] = _interp_sorted(xs, ys, m, f, nearest)


@numba.njit(**JIT)
def _inverse_jones(jones, jflag):
    """1/J and the "bad" flags of a Jones array. `jones` holds, for a flagged element, the
    product of the unflagged terms only (:func:`fastcal.interp.chunk_jones`, as CASA's
    setMatByOk), which is inverted as well; a zero element gets 1/J = 1.

    1/J = conj(J)/|J|^2 in float64, rounded to complex64 (the values of Numba's complex64
    division, ~5x faster)."""
    jinv = np.empty(jones.shape, np.complex64)
    jbad = np.empty(jones.shape, np.bool_)
    n_utime, n_ant, n_jchan, n_rec = jones.shape
    for t in range(n_utime):
        for p in range(n_ant):
            for c in range(n_jchan):
                for a in range(n_rec):
                    re = np.float64(jones[t, p, c, a].real)
                    im = np.float64(jones[t, p, c, a].imag)
                    zero = re == 0.0 and im == 0.0
                    jbad[t, p, c, a] = jflag[t, p, c, a] or zero
                    if zero:
                        jinv[t, p, c, a] = np.complex64(1.0)
                    else:
                        s = 1.0 / (re * re + im * im)
                        jinv[t, p, c, a] = np.complex64(complex(re * s, -im * s))
    return jinv, jbad


# --------------------------------------------------------------------------- one block, one call


@numba.njit(**JIT)
def _combine_terms(n_u, n_ant, n_c, terms_j, terms_f, terms_mws, terms_calwt, spectral):
    """The product of a block's calibration terms (:func:`fastcal.interp.chunk_jones` rules).

    Each term ``terms_j[i]`` is complex128 ``(n_u or 1, n_ant_tab, n_c or 1, 2)`` (a time or
    channel axis of length 1 is broadcast), ``terms_f[i]`` its flags (same shape),
    ``terms_mws[i]`` its channel-averaged weight scale float64 ``(n_u or 1, n_ant_tab, 1, 2)``
    or an empty array (then |J|^2 for single-channel terms, 1 for channelised ones), and
    ``terms_calwt[i]`` how it scales the weights: 0 not at all, 1 by |J|^2 per channel, 2
    (B Jones) by its channel-averaged scale ``terms_mws[i]`` also for spectral weights (CASA's
    BJones::calcWtScale: one factor per antenna and receptor). A flagged or zero element is 1 in that
    term only (CASA's setMatByOk) and flags the product; antennas a table does not know are
    flagged. Returns (jones complex64, flag, wscale float32 per channel (empty unless
    `spectral`), wscale_mean float32 ``(n_u, n_ant, 1, 2)``).
    """
    jones = np.ones((n_u, n_ant, n_c, 2), np.complex64)
    jflag = np.zeros((n_u, n_ant, n_c, 2), np.bool_)
    wscale = np.ones((n_u if spectral else 0, n_ant, n_c, 2), np.float32)
    wmean = np.ones((n_u, n_ant, 1, 2), np.float32)
    for i in range(len(terms_j)):
        j = terms_j[i]
        f = terms_f[i]
        mws = terms_mws[i]
        calwt = terms_calwt[i]
        n_tj, n_aj, n_cj, _ = j.shape
        n_tf, n_cf = f.shape[0], f.shape[2]  # the flags may broadcast on their own axes
        na = min(n_ant, n_aj)
        has_mws = mws.shape[0] > 0
        for t in range(n_u):
            tj = t if n_tj > 1 else 0
            tf = t if n_tf > 1 else 0
            tm = t if mws.shape[0] > 1 else 0
            for p in range(na):
                for a in range(2):
                    all_bad = True
                    for c in range(max(n_cj, n_cf)):
                        v = j[tj, p, c if n_cj > 1 else 0, a]
                        bad = f[tf, p, c if n_cf > 1 else 0, a]
                        all_bad = all_bad and (bad or (v.real == 0.0 and v.imag == 0.0))
                    for c in range(n_c):
                        v = j[tj, p, c if n_cj > 1 else 0, a]
                        bad = f[tf, p, c if n_cf > 1 else 0, a]
                        if bad or (v.real == 0.0 and v.imag == 0.0):
                            jflag[t, p, c, a] = True
                            continue
                        jones[t, p, c, a] = np.complex64(np.complex128(jones[t, p, c, a]) * v)
                        if calwt != 0 and spectral:
                            s2 = mws[tm, p, 0, a] if (calwt == 2 and has_mws) else abs(v) ** 2
                            wscale[t, p, c, a] = np.float32(np.float64(wscale[t, p, c, a]) * s2)
                    if calwt == 0 or all_bad:
                        continue
                    if has_mws:
                        m = mws[tm, p, 0, a]
                    elif n_cj == 1:
                        m = abs(j[tj, p, 0, a]) ** 2  # not bad: all_bad is False
                    else:
                        m = 1.0
                    wmean[t, p, 0, a] = np.float32(np.float64(wmean[t, p, 0, a]) * m)
        if na < n_ant:
            jflag[:, na:] = True
    return jones, jflag, wscale, wmean


@numba.njit(**JIT)
def _corr_layout(jinv, jbad, corr_rec, n_chan, side):
    """Inverse Jones and bad flags laid out like a row of data: element ``[t, p, c * n_corr +
    k]`` is that of receptor ``corr_rec[k, side]`` at channel c (or the one channel)."""
    n_u, n_ant, n_c, _ = jinv.shape
    n_corr = corr_rec.shape[0]
    ji = np.empty((n_u, n_ant, n_chan * n_corr), np.complex64)
    jb = np.empty((n_u, n_ant, n_chan * n_corr), np.uint8)
    for t in range(n_u):
        for p in range(n_ant):
            for c in range(n_chan):
                cj = c if n_c > 1 else 0
                for k in range(n_corr):
                    a = corr_rec[k, side]
                    ji[t, p, c * n_corr + k] = jinv[t, p, cj, a]
                    jb[t, p, c * n_corr + k] = jbad[t, p, cj, a]
    return ji, jb


@numba.njit(**JIT)
def _correct_rows(data, flag, flag_row, ant1, ant2, time_idx, ja, ba, jb, bb, do_cal, do_flag,
                  row_flagged):  # fmt: skip
    """In place: data *= ja[p] conj(jb[q]) and the flags, per row over flat (chan, corr)
    cells (contiguous, vectorised). Input flags are FLAG | FLAG_ROW.

    Returns (flagged before, bad and unflagged, FLAG elements changed).
    """
    n_row = flag.shape[0]
    n_cell = flag.shape[1] * flag.shape[2]
    d2 = data.reshape(data.shape[0], data.shape[1] * data.shape[2])
    f2 = flag.reshape(n_row, n_cell).view(np.uint8)
    one = np.uint8(1)
    df = np.uint8(1 if do_flag else 0)
    n_before = 0
    n_bad_unflagged = 0
    n_changed = 0
    for r in range(n_row):
        t = time_idx[r]
        p = ant1[r]
        q = ant2[r]
        if do_cal:
            jp = ja[t, p]
            jq = jb[t, q]
            dr = d2[r]
            for i in range(n_cell):
                dr[i] = dr[i] * (jp[i] * np.conj(jq[i]))
        fr = f2[r]
        if flag_row[r]:  # every sample flagged on input
            m = 0
            for i in range(n_cell):
                m += fr[i] ^ one
                fr[i] = one
            n_changed += m
            n_before += n_cell
            row_flagged[r] = True
            continue
        bp = ba[t, p]
        bq = bb[t, q]
        nb = 0
        nbu = 0
        for i in range(n_cell):
            fin = fr[i]
            bad = bp[i] | bq[i]
            nb += fin
            nbu += bad & (fin ^ one)
            fr[i] = fin | (bad & df)
        n_before += nb
        n_bad_unflagged += nbu
        if do_flag:  # the output differs from the input exactly where bad and not fin
            n_changed += nbu
            nb += nbu
        row_flagged[r] = nb == n_cell
    return n_before, n_bad_unflagged, n_changed


@numba.njit(**JIT)
def correct_block(
    data,
    flag,
    flag_row,
    weight,
    ant1,
    ant2,
    time_idx,
    n_utime,
    n_ant,
    terms_j,
    terms_f,
    terms_mws,
    terms_calwt,
    corr_rec,
    mode,
    calwt,
    from_sigma,
    row_flagged,
    counts,
):
    """Correct one block of rows in place: Jones product, inversion and correction in one
    call (one GIL hand-over per block when run on a worker thread).

    Parameters
    ----------
    data : complex64 (n_row, n_chan, n_corr)
        DATA in, corrected data out (CALFLAG, CALONLY; may be empty otherwise).
    flag : bool (n_row, n_chan, n_corr)
        FLAG as stored in, the flags to write out (FLAG | FLAG_ROW | calibration flags in
        CALFLAG, FLAGONLY, TRIAL; FLAG | FLAG_ROW in CALONLY).
    flag_row : bool (n_row,)
        FLAG_ROW as stored.
    weight : float32 (n_row, n_wchan, n_corr)
        n_wchan = n_chan (spectral weights) or 1. With `from_sigma`, SIGMA (or
        SIGMA_SPECTRUM) in, replaced by 1/SIGMA^2 (0 where SIGMA <= 0) before scaling.
    ant1, ant2 : int32 (n_row,)
    time_idx : int64 (n_row,)
        Index of each row's time in 0..n_utime-1.
    n_utime, n_ant : int
    terms_j, terms_f, terms_mws : tuples of arrays
        One entry per calibration table in order of application (see :func:`_combine_terms`).
    terms_calwt : int8 (n_terms,)
        Weight mode per table: 0 none, 1 |J|^2 per channel, 2 channel mean (B Jones).
    corr_rec : int64 (n_corr, 2)
    mode : int
        MODE_CALFLAG, MODE_CALONLY, MODE_FLAGONLY or MODE_TRIAL.
    calwt : bool
        Scale the weights.
    from_sigma : bool
        `weight` holds sigmas (see above).
    row_flagged : bool (n_row,)
        Out: every element of the row's output flags is set (the new FLAG_ROW).
    counts : int64 (N_COUNTS,)
        Accumulated: samples, flagged before, newly flagged, left (partly) uncalibrated.

    Returns
    -------
    int
        Number of FLAG elements whose output differs from the stored FLAG (0: FLAG need not
        be written).
    """
    n_row, n_chan, n_corr = flag.shape
    n_wchan = weight.shape[1]
    n_c = 1
    for i in range(len(terms_j)):
        n_c = max(n_c, terms_j[i].shape[2])
    spectral = calwt and n_wchan > 1
    jones, jflag, wscale, wscale_w = _combine_terms(
        n_utime, n_ant, n_c, terms_j, terms_f, terms_mws, terms_calwt, spectral
    )
    do_cal = mode == MODE_CALFLAG or mode == MODE_CALONLY
    do_flag = mode == MODE_CALFLAG or mode == MODE_FLAGONLY or mode == MODE_TRIAL
    jinv, jbad = _inverse_jones(jones, jflag)
    ra = corr_rec[:, 0]
    rb = corr_rec[:, 1]
    ja, ba = _corr_layout(jinv, jbad, corr_rec, n_chan, 0)
    same = True  # both antennas use the same receptor for every correlation (XX, YY)
    for k in range(n_corr):
        same = same and ra[k] == rb[k]
    if same:
        jb, bb = ja, ba
    else:
        jb, bb = _corr_layout(jinv, jbad, corr_rec, n_chan, 1)
    n_before, n_bad_unflagged, n_changed = _correct_rows(
        data, flag, flag_row, ant1, ant2, time_idx, ja, ba, jb, bb, do_cal, do_flag, row_flagged
    )
    one = np.float32(1.0)
    zero = np.float32(0.0)
    for r in range(n_row):
        t = time_idx[r]
        p = ant1[r]
        q = ant2[r]
        for c in range(n_wchan):
            for k in range(n_corr):
                w = weight[r, c, k]
                if from_sigma:
                    w = one / (w * w) if w > 0 else zero
                if calwt:
                    if n_wchan == 1:
                        w = w * wscale_w[t, p, 0, ra[k]] * wscale_w[t, q, 0, rb[k]]
                    else:
                        cj = c if n_c > 1 else 0
                        w = w * wscale[t, p, cj, ra[k]] * wscale[t, q, cj, rb[k]]
                weight[r, c, k] = w
    counts[0] += n_row * n_chan * n_corr
    counts[1] += n_before
    counts[2] += n_bad_unflagged if do_flag else 0
    counts[3] += 0 if do_flag else n_bad_unflagged
    return n_changed
