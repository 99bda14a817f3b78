"""Antenna delay (K Jones) solver on interval-averaged, model-divided visibilities.

Convention (CASA ``KJones::calcAllJones``, see docs/kernels.md): antenna p's K Jones is

    K_p(nu) = exp(+2 pi i tau_p (nu - nu_ref)),   tau in ns, nu in GHz,

applied as V_corr = V / (K_p conj(K_q)), so a delay-corrupted ratio is

    X_pq(nu) = exp(i [2 pi (tau_p - tau_q)(nu - nu_ref) + theta_p - theta_q]).

Per interval and pol the kernel (1) finds each antenna's delay from the peak of the
zero-padded FFT over frequency of its baseline to the reference antenna (CASA
``KJones::solveOneSDB``: pad to >= 8x the channel count, parabolic peak refinement),
reaching antennas without a refant baseline through already-solved neighbours; then
(2) optionally refines delays and phases of all antennas by Gauss-Newton on every baseline,
and estimates their errors. The refant's delay and phase are 0.

Axis order: ``(interval, baseline, chan, pol)`` in, ``(interval, ant, pol)`` out.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["solve_delays", "fft_delay", "next_pow2"]

JIT = dict(nogil=True, cache=True)

TWO_PI = 2.0 * np.pi


@numba.njit(**JIT)
def next_pow2(n):
    """Smallest power of two >= n (n >= 1)."""
    m = 1
    while m < n:
        m *= 2
    return m


@numba.njit(**JIT)
def _fft(a):
    """In-place radix-2 forward FFT, a[m] = sum_k a[k] exp(-2 pi i m k / N); N = 2^j."""
    n = a.shape[0]
    j = 0
    for i in range(1, n):
        bit = n >> 1
        while j & bit:
            j ^= bit
            bit >>= 1
        j |= bit
        if i < j:
            t = a[i]
            a[i] = a[j]
            a[j] = t
    length = 2
    while length <= n:
        ang = -TWO_PI / length
        wl = np.complex128(np.cos(ang) + 1j * np.sin(ang))
        half = length // 2
        for start in range(0, n, length):
            w = np.complex128(1.0 + 0.0j)
            for k in range(half):
                u = a[start + k]
                v = a[start + k + half] * w
                a[start + k] = u + v
                a[start + k + half] = u - v
                w *= wl
        length *= 2


@numba.njit(**JIT)
def fft_delay(y, chan_pos, n_pad, df):
    """Delay (ns) of a spectrum from its zero-padded FFT peak, as CASA's DelayFFT.

    Parameters
    ----------
    y : complex128[chan]
        Spectrum to transform (0 where flagged), e.g. W X on one baseline.
    chan_pos : int64[chan]
        Position of each channel on the regular grid nu_min + k df (0 <= k < n_pad).
    n_pad : int
        FFT length, a power of two (>= 8x the channel span for CASA's resolution).
    df : float
        Grid spacing in Hz.

    Returns
    -------
    (tau_ns, ok) : (float, bool)
        tau such that y ~ exp(+2 pi i tau nu), folded into [-1/(2|df|), 1/(2|df|)); ok is
        False when the spectrum is zero or the peak cannot be interpolated.

    Notes
    -----
    The peak index is refined by the parabola through the amplitudes at the peak and its
    two (cyclic) neighbours, fpk = ipk + (a_lo - a_hi) / (2 (a_lo - 2 a_pk + a_hi)).
    """
    buf = np.zeros(n_pad, np.complex128)
    for c in range(y.shape[0]):
        buf[chan_pos[c]] += y[c]
    _fft(buf)
    ipk = 0
    amax = -1.0
    for m in range(n_pad):
        a = np.abs(buf[m])
        if a > amax:
            amax = a
            ipk = m
    alo = np.abs(buf[ipk - 1 if ipk > 0 else n_pad - 1])
    ahi = np.abs(buf[ipk + 1 if ipk < n_pad - 1 else 0])
    denom = alo - 2.0 * amax + ahi
    if not (amax > 0.0) or denom == 0.0:
        return 0.0, False
    fpk = ipk + 0.5 * (alo - ahi) / denom
    cyc = fpk / n_pad
    if cyc >= 0.5:
        cyc -= 1.0
    return cyc / df * 1e9, True


@numba.njit(**JIT)
def _chan_grid(freqs):
    """(chan_pos, n_pad, df) for the FFT: channel c sits at grid point
    round((nu_c - nu_min) / df), df > 0 the smallest channel spacing (gaps and any channel
    order allowed), n_pad >= 8x the grid length. n_pad = 0 if there is no frequency span.
    """
    n = freqs.shape[0]
    pos = np.zeros(n, np.int64)
    if n < 2:
        return pos, 0, 0.0
    fmin = freqs[0]
    fmax = freqs[0]
    increasing = True
    decreasing = True
    for c in range(1, n):
        fmin = min(fmin, freqs[c])
        fmax = max(fmax, freqs[c])
        increasing = increasing and freqs[c] >= freqs[c - 1]
        decreasing = decreasing and freqs[c] <= freqs[c - 1]
    span = fmax - fmin
    if not (span > 0.0):
        return pos, 0, 0.0
    df = span / (n - 1)
    if increasing or decreasing:
        for c in range(1, n):
            d = abs(freqs[c] - freqs[c - 1])
            if d > 0.0 and d < df:
                df = d
    else:  # channels in no particular order: smallest spacing of any pair
        for c in range(n):
            for e in range(c + 1, n):
                d = abs(freqs[c] - freqs[e])
                if d > 0.0 and d < df:
                    df = d
    n_grid = int(np.round(span / df)) + 1
    if n_grid > 16 * n:
        # far from a regular grid: use the mean spacing (nearby channels may share a
        # grid point; the Gauss-Newton refinement uses the exact frequencies anyway)
        df = span / (n - 1)
        n_grid = n
    for c in range(n):
        pos[c] = min(max(int(np.round((freqs[c] - fmin) / df)), 0), n_grid - 1)
    return pos, next_pow2(8 * n_grid), df


@numba.njit(**JIT)
def _cholesky(a, diag0, bad):
    """In-place lower Cholesky of a (symmetric); a parameter whose pivot is <= 1e-10 of
    its original diagonal (or whose bad flag is set) is removed: bad[j] = True, its row
    and column of L are zero and L[j, j] = 1."""
    n = a.shape[0]
    for j in range(n):
        s = a[j, j]
        for k in range(j):
            s -= a[j, k] * a[j, k]
        if bad[j] or not (diag0[j] > 0.0) or s <= 1e-10 * diag0[j]:
            bad[j] = True
            a[j, j] = 1.0
            for k in range(j):
                a[j, k] = 0.0
            for i in range(j + 1, n):
                a[i, j] = 0.0
            continue
        ljj = np.sqrt(s)
        a[j, j] = ljj
        for i in range(j + 1, n):
            t = a[i, j]
            for k in range(j):
                t -= a[i, k] * a[j, k]
            a[i, j] = t / ljj
    for j in range(n):
        for i in range(j):
            a[i, j] = 0.0


@numba.njit(**JIT)
def _chol_solve(low, b, bad, out):
    n = low.shape[0]
    for i in range(n):
        t = 0.0 if bad[i] else b[i]
        for k in range(i):
            t -= low[i, k] * out[k]
        out[i] = t / low[i, i]
    for i in range(n - 1, -1, -1):
        t = out[i]
        for k in range(i + 1, n):
            t -= low[k, i] * out[k]
        out[i] = t / low[i, i]


@numba.njit(**JIT)
def _normal_equations(vis, wt, it, k, ant1, ant2, dfac, tau, theta, pidx, amat, bvec,
                      build):
    """Gauss-Newton system of one pol for chi2 = sum W |X - a_pq exp(i phi)|^2.

    phi = (tau_p - tau_q) dfac + theta_p - theta_q; a_pq >= 0 is each baseline's
    amplitude, eliminated by its least-squares value max(Re sum W z, 0) / sum W with
    z = X exp(-i phi) (variable projection). Accumulates (if `build`)
    A = sum W a^2 dphi dphi^T and b = sum W a Im(z) dphi over baselines whose two antennas
    are solved (pidx >= 0, or -2 for the refant). Returns (chi2, n_wt, n_amp): chi2, the
    number of samples with W > 0 and the number of baselines (amplitudes) used.
    """
    n_bl = vis.shape[1]
    n_chan = vis.shape[2]
    if build:
        amat.fill(0.0)
        bvec.fill(0.0)
    zbuf = np.empty(n_chan, np.complex128)
    # on a regular grid exp(-i phi) is advanced by one complex multiply per channel
    dstep = (dfac[n_chan - 1] - dfac[0]) / (n_chan - 1) if n_chan > 1 else 0.0
    regular = n_chan > 1
    for c in range(n_chan):
        if abs(dfac[c] - dfac[0] - c * dstep) > 1e-9 * abs(dstep):
            regular = False
    chi2 = 0.0
    n_wt = 0
    n_amp = 0
    for b in range(n_bl):
        p = ant1[b]
        q = ant2[b]
        if pidx[p] == -1 or pidx[q] == -1:
            continue
        dt = tau[p] - tau[q]
        dth = theta[p] - theta[q]
        sw = 0.0
        swz = 0.0
        nb = 0
        ph0 = dt * dfac[0] + dth
        rot = np.complex128(np.cos(dt * dstep) - 1j * np.sin(dt * dstep))
        e = np.complex128(np.cos(ph0) - 1j * np.sin(ph0))
        for c in range(n_chan):
            if regular:
                ec = e
                e *= rot
            else:
                ph = dt * dfac[c] + dth
                ec = np.complex128(np.cos(ph) - 1j * np.sin(ph))
            w = wt[it, b, c, k]
            x = vis[it, b, c, k]
            if not (w > 0.0) or not (np.isfinite(x.real) and np.isfinite(x.imag)):
                zbuf[c] = 0.0
                continue
            z = x * ec
            zbuf[c] = z
            sw += w
            swz += w * z.real
            nb += 1
        if nb == 0:
            continue
        amp = max(swz, 0.0) / sw
        n_amp += 1
        n_wt += nb
        s0 = 0.0
        s1 = 0.0
        s2 = 0.0
        t0 = 0.0
        t1 = 0.0
        for c in range(n_chan):
            w = wt[it, b, c, k]
            if not (w > 0.0):
                continue
            z = zbuf[c]
            chi2 += w * ((z.real - amp) ** 2 + z.imag * z.imag)
            if build:
                om = w * amp * amp
                si = w * amp * z.imag
                s0 += om
                s1 += om * dfac[c]
                s2 += om * dfac[c] * dfac[c]
                t0 += si
                t1 += si * dfac[c]
        if not build or s0 == 0.0:
            continue
        # parameters: (tau_p, theta_p) with sign +1, (tau_q, theta_q) with sign -1
        for side_u in range(2):
            au = p if side_u == 0 else q
            if pidx[au] < 0:
                continue
            su = 1.0 if side_u == 0 else -1.0
            iu = pidx[au]
            bvec[iu] += su * t1
            bvec[iu + 1] += su * t0
            for side_v in range(2):
                av = p if side_v == 0 else q
                if pidx[av] < 0:
                    continue
                sv = 1.0 if side_v == 0 else -1.0
                iv = pidx[av]
                f = su * sv
                amat[iu, iv] += f * s2
                amat[iu, iv + 1] += f * s1
                amat[iu + 1, iv] += f * s1
                amat[iu + 1, iv + 1] += f * s0
    return chi2, n_wt, n_amp


@numba.njit(**JIT)
def _fft_start(vis, wt, it, k, ant1, ant2, n_ant, ref, freqs, ref_freq, chan_pos, n_pad,
               df, tau, theta, known):
    """Initial delays/phases: FFT on the baseline to the best already-known antenna, in
    rounds starting from the refant (round 1 is CASA's refant-baseline solve)."""
    n_bl = vis.shape[1]
    n_chan = vis.shape[2]
    y = np.zeros(n_chan, np.complex128)
    tried = np.zeros(n_ant, np.bool_)
    snapshot = np.zeros(n_ant, np.bool_)
    known.fill(False)
    tau.fill(0.0)
    theta.fill(0.0)
    known[ref] = True
    tried[ref] = True
    while True:
        best_w = np.zeros(n_ant)
        best_b = np.full(n_ant, -1, np.int64)
        for b in range(n_bl):
            p = ant1[b]
            q = ant2[b]
            if known[p] == known[q]:
                continue
            u = q if known[p] else p  # the unknown antenna
            if tried[u]:
                continue
            s = 0.0
            for c in range(n_chan):
                w = wt[it, b, c, k]
                if w > 0.0:
                    s += w
            if s > best_w[u]:
                best_w[u] = s
                best_b[u] = b
        progress = False
        for a in range(n_ant):
            snapshot[a] = known[a]
        for u in range(n_ant):
            b = best_b[u]
            if b < 0:
                continue
            tried[u] = True
            p = ant1[b]
            q = ant2[b]
            other = q if u == p else p
            if not snapshot[other]:
                continue
            # Y ~ exp(i(phi_u - phi_other))
            for c in range(n_chan):
                w = wt[it, b, c, k]
                x = vis[it, b, c, k]
                if w > 0.0 and np.isfinite(x.real) and np.isfinite(x.imag):
                    y[c] = w * x if u == p else w * np.conj(x)
                else:
                    y[c] = 0.0
            tbl, ok = fft_delay(y, chan_pos, n_pad, df)
            if not ok:
                continue
            acc = np.complex128(0.0)
            for c in range(n_chan):
                ph = TWO_PI * tbl * 1e-9 * (freqs[c] - ref_freq)
                acc += y[c] * np.complex128(np.cos(ph) - 1j * np.sin(ph))
            tau[u] = tau[other] + tbl
            theta[u] = theta[other] + np.angle(acc)
            known[u] = True
            progress = True
        if not progress:
            break


@numba.njit(**JIT)
def _choose_refant(wt, it, ant1, ant2, refants, has):
    """First antenna of `refants` with data in every pol that has data in interval `it`;
    fills has[ant, pol] (any weight > 0). Returns -1 if none."""
    n_bl, n_chan, n_pol = wt.shape[1], wt.shape[2], wt.shape[3]
    n_ant = has.shape[0]
    has.fill(False)
    for b in range(n_bl):
        for k in range(n_pol):
            for c in range(n_chan):
                if wt[it, b, c, k] > 0.0:
                    has[ant1[b], k] = True
                    has[ant2[b], k] = True
                    break
    for i in range(refants.shape[0]):
        r = refants[i]
        if r < 0 or r >= n_ant:
            continue
        usable = False
        for k in range(n_pol):
            pol_has_data = False
            for a in range(n_ant):
                if has[a, k]:
                    pol_has_data = True
                    break
            if pol_has_data:
                usable = True
                if not has[r, k]:
                    usable = False
                    break
        if usable:
            return r
    return -1


@numba.njit(**JIT)
def _refine(vis, wt, it, k, ant1, ant2, dfac, span, tau, theta, pidx, n_par, max_iter, tol):
    """Gauss-Newton with backtracking on (tau, theta) of the antennas with pidx >= 0.

    Each trial point's normal equations are built while its chi2 is evaluated, so an
    accepted step costs one pass over the data. A step is halved (up to 30 times) until
    chi2 does not increase. Converged when the largest change, |d tau| * 2 pi * bandwidth
    or |d theta|, is < tol (rad). Returns (n_iter, converged).
    """
    n_ant = tau.shape[0]
    amat = np.zeros((n_par, n_par))
    bvec = np.zeros(n_par)
    diag0 = np.zeros(n_par)
    bad = np.zeros(n_par, np.bool_)
    step = np.zeros(n_par)
    tau_try = np.zeros(n_ant)
    theta_try = np.zeros(n_ant)
    chi2, _nw, _na = _normal_equations(vis, wt, it, k, ant1, ant2, dfac, tau, theta, pidx,
                                       amat, bvec, True)
    for i in range(1, max_iter + 1):
        for j in range(n_par):
            diag0[j] = amat[j, j]
            bad[j] = False
        _cholesky(amat, diag0, bad)
        _chol_solve(amat, bvec, bad, step)
        lam = 1.0
        chi2_new = chi2
        for _ in range(30):
            for a in range(n_ant):
                tau_try[a] = tau[a]
                theta_try[a] = theta[a]
                if pidx[a] >= 0:
                    tau_try[a] += lam * step[pidx[a]]
                    theta_try[a] += lam * step[pidx[a] + 1]
            chi2_new, _nw, _na = _normal_equations(vis, wt, it, k, ant1, ant2, dfac, tau_try,
                                                   theta_try, pidx, amat, bvec, True)
            if chi2_new <= chi2 * (1.0 + 1e-12) + 1e-300:
                break
            lam *= 0.5
        chi2 = chi2_new
        biggest = 0.0
        for a in range(n_ant):
            if pidx[a] >= 0:
                d = abs(tau_try[a] - tau[a]) * span
                if d > biggest:
                    biggest = d
                d = abs(theta_try[a] - theta[a])
                if d > biggest:
                    biggest = d
            tau[a] = tau_try[a]
            theta[a] = theta_try[a]
        if biggest < tol:
            return i, True
    return max_iter, False


@numba.njit(**JIT)
def _delay_errors(vis, wt, it, k, ant1, ant2, dfac, tau, theta, pidx, n_par, err, ok):
    """err[a] = sqrt(chi2/nu (A^-1)_{tau_a tau_a}), nu = max(2 N_wt - N_par - N_bl, 1);
    ok[a] = False where the delay is undetermined (removed Cholesky pivot).

    (A^-1)_mm = |L^-1 e_m|^2 for A = L L^T, using that L^-1 e_m is zero above row m.
    """
    amat = np.zeros((n_par, n_par))
    bvec = np.zeros(n_par)
    diag0 = np.zeros(n_par)
    bad = np.zeros(n_par, np.bool_)
    y = np.zeros(n_par)
    chi2, n_wt, n_amp = _normal_equations(vis, wt, it, k, ant1, ant2, dfac, tau, theta, pidx,
                                          amat, bvec, True)
    for j in range(n_par):
        diag0[j] = amat[j, j]
    _cholesky(amat, diag0, bad)
    k2 = chi2 / max(2 * n_wt - n_par - n_amp, 1)
    for a in range(tau.shape[0]):
        m = pidx[a]
        ok[a] = m >= 0 and not bad[m]
        err[a] = 0.0
        if not ok[a]:
            continue
        var = 0.0
        for i in range(m, n_par):
            t = 1.0 if i == m else 0.0
            for kk in range(m, i):
                t -= amat[i, kk] * y[kk]
            y[i] = t / amat[i, i]
            var += y[i] * y[i]
        err[a] = np.sqrt(k2 * var)


@numba.njit(**JIT)
def solve_delays(vis, wt, ant1, ant2, n_ant, freqs, ref_freq, refants, refine, max_iter, tol):
    """Solve antenna delays per interval and pol.

    Parameters
    ----------
    vis : complex128[interval, bl, chan, pol]
        Averaged model-divided visibilities X = vis_sum / wt_sum per channel.
    wt : float64[interval, bl, chan, pol]
        Their weights; <= 0 means no data.
    ant1, ant2 : int32[bl]
        Baseline antennas, 0 <= ant1 < ant2 < n_ant.
    n_ant : int
        Number of antennas.
    freqs : float64[chan]
        Channel frequencies in Hz, on a regular grid (gaps allowed; LSB allowed).
    ref_freq : float
        Reference frequency nu_ref in Hz of the K Jones phase (CASA >= 5.3: the caltable
        SPECTRAL_WINDOW CHAN_FREQ[n_chan // 2] of the solved spw). Only the phase output
        depends on it.
    refants : int32[n_ref]
        Reference antennas by priority; the first with data in every pol that has any
        data in the interval is used.
    refine : bool
        False: CASA's FFT-peak delays only. True: then Gauss-Newton on all baselines.
    max_iter : int
        Gauss-Newton iteration limit (20 is ample).
    tol : float
        Convergence: largest parameter change, as phase (rad) across the band, < tol.

    Returns
    -------
    delay : float64[interval, ant, pol]
        Delays in ns relative to the refant (refant 0); 0 where flagged.
    phase : float64[interval, ant, pol]
        Phase offsets theta_p in rad at nu_ref, relative to the refant; 0 where flagged.
    paramerr : float64[interval, ant, pol]
        1-sigma delay error in ns, sqrt(chi2/nu (A^-1)_tau tau) with
        nu = max(2 N_wt - N_par - N_bl, 1) (see docs/kernels.md); 0 for the refant and
        flagged antennas.
    flag : bool[interval, ant, pol]
        True where no delay could be determined (no data, not connected to the refant,
        degenerate, or no usable refant).
    refant_used : int32[interval]
        Refant per interval, -1 if none was usable.
    n_iter : int64[interval]
        Gauss-Newton iterations (max over pols); 0 without refinement.
    converged : bool[interval]
        False if a pol reached max_iter.
    """
    n_int, n_bl, n_chan, n_pol = vis.shape
    if wt.shape != vis.shape:
        raise ValueError("wt must have the shape of vis (n_int, n_bl, n_chan, n_pol)")
    if ant1.shape[0] != n_bl or ant2.shape[0] != n_bl:
        raise ValueError("ant1 and ant2 must have n_bl elements")
    for b in range(n_bl):
        if ant1[b] < 0 or ant2[b] >= n_ant or ant1[b] >= ant2[b]:
            raise ValueError("baselines must satisfy 0 <= ant1 < ant2 < n_ant")
    if freqs.shape[0] != n_chan:
        raise ValueError("freqs must have n_chan elements")

    delay = np.zeros((n_int, n_ant, n_pol))
    phase = np.zeros((n_int, n_ant, n_pol))
    paramerr = np.zeros((n_int, n_ant, n_pol))
    flag = np.ones((n_int, n_ant, n_pol), np.bool_)
    refant_used = np.full(n_int, -1, np.int32)
    n_iter = np.zeros(n_int, np.int64)
    converged = np.ones(n_int, np.bool_)

    chan_pos, n_pad, df = _chan_grid(freqs)
    dfac = np.empty(n_chan)
    span = 0.0
    for c in range(n_chan):
        dfac[c] = TWO_PI * (freqs[c] - ref_freq) * 1e-9  # rad per ns
    for c in range(n_chan):
        span = max(span, abs(TWO_PI * (freqs[c] - freqs[0]) * 1e-9))

    tau = np.zeros(n_ant)
    theta = np.zeros(n_ant)
    known = np.zeros(n_ant, np.bool_)
    pidx = np.zeros(n_ant, np.int64)
    has = np.zeros((n_ant, n_pol), np.bool_)
    err = np.zeros(n_ant)
    ok = np.zeros(n_ant, np.bool_)

    for it in range(n_int):
        ref = _choose_refant(wt, it, ant1, ant2, refants, has)
        refant_used[it] = ref
        if ref < 0:
            continue
        for k in range(n_pol):
            if not has[ref, k]:
                continue
            flag[it, ref, k] = False
            if n_pad == 0:
                continue  # a single channel: no delay information
            _fft_start(vis, wt, it, k, ant1, ant2, n_ant, ref, freqs, ref_freq, chan_pos,
                       n_pad, df, tau, theta, known)
            m = 0
            for a in range(n_ant):
                if a == ref:
                    pidx[a] = -2
                elif known[a]:
                    pidx[a] = 2 * m
                    m += 1
                else:
                    pidx[a] = -1
            if m == 0:
                continue
            if refine:
                ni, conv = _refine(vis, wt, it, k, ant1, ant2, dfac, span, tau, theta, pidx,
                                   2 * m, max_iter, tol)
                n_iter[it] = max(n_iter[it], ni)
                converged[it] = converged[it] and conv
            _delay_errors(vis, wt, it, k, ant1, ant2, dfac, tau, theta, pidx, 2 * m, err, ok)
            for a in range(n_ant):
                if ok[a]:
                    delay[it, a, k] = tau[a]
                    phase[it, a, k] = np.arctan2(np.sin(theta[a]), np.cos(theta[a]))
                    paramerr[it, a, k] = err[a]
                    flag[it, a, k] = False
    return delay, phase, paramerr, flag, refant_used, n_iter, converged
