"""Slow, obviously correct NumPy references for the Numba kernels (tests only).

Each function follows the definition in docs/kernels.md literally, with Python loops or
dense linear algebra, and is meant for tiny arrays.
"""

from __future__ import annotations

import itertools

import numpy as np

# ---------------------------------------------------------------- data generation

def baselines(n_ant):
    """(ant1, ant2) int32 arrays of all pairs ant1 < ant2, in lexicographic order."""
    pairs = list(itertools.combinations(range(n_ant), 2))
    return (np.array([p for p, _ in pairs], np.int32), np.array([q for _, q in pairs], np.int32))


def random_gains(rng, shape, amp_sd=0.2, phase_max=np.pi):
    """Complex gains with amplitude 1 + N(0, amp_sd) and uniform phase in +-phase_max."""
    amp = 1.0 + amp_sd * rng.standard_normal(shape)
    return np.abs(amp) * np.exp(1j * rng.uniform(-phase_max, phase_max, shape))


def corrupt(g, ant1, ant2):
    """X_pq = g_p conj(g_q) for g[..., ant, par] -> [..., bl, par]."""
    return g[..., ant1, :] * np.conj(g[..., ant2, :])


def complex_noise(rng, shape, sigma):
    """Complex Gaussian noise with total variance sigma^2 (sigma^2/2 per component)."""
    return sigma / np.sqrt(2.0) * (rng.standard_normal(shape) + 1j * rng.standard_normal(shape))


# ---------------------------------------------------------------- reduction

def reduce_reference(data, model, flag, weight, ant1, ant2, interval_idx, chan_bin,
                     corr_index, jones, jones_flag, jones_time_idx, calwt, n_int, n_ant,
                     n_out, model_spec=None):
    """Sums of w' conj(M) V', w' |M|^2 and counts, one sample at a time (docs/kernels.md)."""
    bl_of = {pq: i for i, pq in enumerate(itertools.combinations(range(n_ant), 2))}
    n_pol = len(corr_index)
    vis_sum = np.zeros((n_int, len(bl_of), n_out, n_pol), np.complex128)
    wt_sum = np.zeros(vis_sum.shape)
    n_samples = np.zeros(vis_sum.shape, np.int64)
    use_jones = jones.shape[0] > 0
    n_row, n_chan, _ = data.shape
    for r in range(n_row):
        it, p, q = int(interval_idx[r]), int(ant1[r]), int(ant2[r])
        if it < 0 or p == q:
            continue
        for c in range(n_chan):
            ob = int(chan_bin[c])
            if ob < 0 or flag[r, c].any():
                continue
            wc = c if weight.shape[1] > 1 else 0
            jc = c if (use_jones and jones.shape[2] > 1) else 0
            t = int(jones_time_idx[r]) if use_jones else 0
            if use_jones:
                recs = [k if jones.shape[3] > 1 else 0 for k in range(n_pol)]
                if any(jones_flag[t, a, jc, kr] or jones[t, a, jc, kr] == 0
                       for a in (p, q) for kr in recs):
                    continue
            for k, ci in enumerate(corr_index):
                w = float(weight[r, wc, ci])
                if not w > 0:
                    continue
                v = complex(data[r, c, ci])
                m = complex(model_spec[c, k]) if model_spec is not None else complex(
                    model[r, c, ci])
                if m == 0:
                    continue
                if use_jones:
                    kr = k if jones.shape[3] > 1 else 0
                    jpq = complex(jones[t, p, jc, kr]) * np.conj(complex(jones[t, q, jc, kr]))
                    v = v / jpq
                    if calwt:
                        w = w * abs(jpq) ** 2
                x = w * np.conj(m) * v
                if p < q:
                    b = bl_of[(p, q)]
                else:
                    b = bl_of[(q, p)]
                    x = np.conj(x)
                vis_sum[it, b, ob, k] += x
                wt_sum[it, b, ob, k] += w * abs(m) ** 2
                n_samples[it, b, ob, k] += 1
    return vis_sum, wt_sum, n_samples


# ---------------------------------------------------------------- gains

def minblperant_reference(blw, ant1, ant2, n_ant, minblperant):
    """CASA SolvableVisCal::verifyConstraints literally: returns bool[n_ant] antOK.

    blw[bl] is the weight sum of each baseline over pols.
    """
    w = np.zeros((n_ant, n_ant))
    for b, (p, q) in enumerate(zip(ant1, ant2, strict=True)):
        w[p, q] += blw[b]
        w[q, p] += blw[b]
    ok = np.ones(n_ant, bool)
    i = 0
    while i < n_ant:
        if ok[i] and np.count_nonzero(w[:, i] > 0) < minblperant:
            ok[i] = False
            w[i, :] = 0
            w[:, i] = 0
            i = -1  # restart from the first antenna, as CASA does
        i += 1
    return ok


def solve_gains_reference(x, w, ant1, ant2, n_ant, solve_t=False, n_iter=60):
    """Dense Gauss-Newton (numpy lstsq, real parameters) for one (interval, chan).

    x, w : [bl, pol]. Minimises sum w |x - g_p conj(g_q)|^2 over g[ant, par]; par = pol
    (G) or 1 (T). Returns g with the phase of antenna 0 (par-wise) set to zero.
    """
    n_bl, n_pol = x.shape
    n_par = 1 if solve_t else n_pol
    g = np.ones((n_ant, n_par), complex)
    for _ in range(n_iter):
        rows, res = [], []
        for b in range(n_bl):
            p, q = ant1[b], ant2[b]
            for k in range(n_pol):
                if w[b, k] <= 0:
                    continue
                j = 0 if solve_t else k
                s = np.sqrt(w[b, k])
                r = s * (x[b, k] - g[p, j] * np.conj(g[q, j]))
                # d(model)/d(Re g_p) = conj(g_q), d/d(Im g_p) = i conj(g_q)
                # d(model)/d(Re g_q) = g_p,       d/d(Im g_q) = -i g_p
                jac = np.zeros(2 * n_ant * n_par, complex)
                jac[2 * (p * n_par + j)] = s * np.conj(g[q, j])
                jac[2 * (p * n_par + j) + 1] = s * 1j * np.conj(g[q, j])
                jac[2 * (q * n_par + j)] = s * g[p, j]
                jac[2 * (q * n_par + j) + 1] = -s * 1j * g[p, j]
                rows += [jac.real, jac.imag]
                res += [r.real, r.imag]
        step = np.linalg.lstsq(np.array(rows), np.array(res), rcond=1e-12)[0]
        g = g + (step[0::2] + 1j * step[1::2]).reshape(n_ant, n_par)
        if np.max(np.abs(step)) < 1e-14:
            break
    return g * np.exp(-1j * np.angle(g[0]))[None, :]


def casa_errors_reference(x, w, ant1, ant2, g, solve_t=False):
    """PARAMERR and SNR from the definitions (VisCalSolver2::getErrors, formSolveSNR).

    g[ant, par]; returns (paramerr, snr) [ant, par]; 0 where H_p = 0.
    """
    n_ant, n_par = g.shape
    chi2, n_wt = 0.0, 0
    hess = np.zeros((n_ant, n_par))
    for b, (p, q) in enumerate(zip(ant1, ant2, strict=True)):
        for k in range(x.shape[1]):
            if w[b, k] > 0:
                j = 0 if solve_t else k
                chi2 += w[b, k] * abs(x[b, k] - g[p, j] * np.conj(g[q, j])) ** 2
                n_wt += 1
                hess[p, j] += w[b, k] * abs(g[q, j]) ** 2
                hess[q, j] += w[b, k] * abs(g[p, j]) ** 2
    nu = max(2 * (n_wt - np.count_nonzero(hess > 0)), 1)
    err = np.where(hess > 0, np.sqrt(2 * chi2 / nu / np.where(hess > 0, hess, 1)), 0.0)
    snr = np.where(err > 0, np.abs(g) / np.where(err > 0, err, 1), 9999999.0)
    return err, snr


# ---------------------------------------------------------------- delays

def k_jones(tau_ns, freqs, ref_freq):
    """CASA K Jones exp(+2 pi i tau (nu - nu_ref)), tau[..., ant] in ns -> [..., ant, chan]."""
    return np.exp(2j * np.pi * tau_ns[..., None] * 1e-9 * (freqs - ref_freq))


def delay_bruteforce(y, freqs, half_range_ns):
    """Delay maximising |sum_c y_c exp(-2 pi i tau nu_c)| (ns): exhaustive search on a
    0.01 ns grid, then on a 1e-5 ns grid around the best point."""
    def best(taus):
        resp = np.abs(np.exp(-2j * np.pi * np.outer(taus * 1e-9, freqs)) @ y)
        return taus[np.argmax(resp)]

    coarse = best(np.arange(-half_range_ns, half_range_ns, 0.01))
    return best(np.arange(coarse - 0.02, coarse + 0.02, 1e-5))


def solve_delays_reference(x, w, ant1, ant2, n_ant, freqs, ref_freq, ref, tau0, theta0,
                           n_iter=30):
    """Dense Gauss-Newton (lstsq) on chi2 = sum w |X - a_pq exp(i phi)|^2 for one pol.

    x, w : [bl, chan]; phi_pq = 2 pi (tau_p - tau_q)(nu - nu_ref) 1e-9 + theta_p - theta_q;
    a_pq one real amplitude per baseline; tau/theta of `ref` fixed at 0. Starts from
    tau0, theta0 [ant]. Returns (tau, theta).
    """
    n_bl, n_chan = x.shape
    tau, theta = tau0.astype(float).copy(), theta0.astype(float).copy()
    tau[ref] = theta[ref] = 0.0
    d = 2 * np.pi * (freqs - ref_freq) * 1e-9
    amp = (w * np.abs(x)).sum(axis=1) / np.maximum(w.sum(axis=1), 1e-300)
    b_idx, c_idx = np.nonzero(w > 0)  # one complex residual per used sample
    p, q = ant1[b_idx], ant2[b_idx]
    s = np.sqrt(w[b_idx, c_idx])
    # parameter vector: tau_0..tau_{n-1}, theta_0..theta_{n-1}, amp_0..amp_{n_bl-1}
    n_par = 2 * n_ant + n_bl
    rows = np.arange(len(b_idx))
    for _ in range(n_iter):
        phi = (tau[p] - tau[q]) * d[c_idx] + theta[p] - theta[q]
        e = np.exp(1j * phi)
        r = s * (x[b_idx, c_idx] - amp[b_idx] * e)
        dm = s * 1j * amp[b_idx] * e  # d model / d phi
        jac = np.zeros((len(b_idx), n_par), complex)
        jac[rows, p] += dm * d[c_idx]
        jac[rows, q] -= dm * d[c_idx]
        jac[rows, n_ant + p] += dm
        jac[rows, n_ant + q] -= dm
        jac[rows, 2 * n_ant + b_idx] = s * e
        keep = np.ones(n_par, bool)
        keep[[ref, n_ant + ref]] = False  # the refant's tau and theta are fixed at 0
        jr = np.concatenate([jac.real, jac.imag])[:, keep]
        step = np.zeros(n_par)
        step[keep] = np.linalg.lstsq(jr, np.concatenate([r.real, r.imag]), rcond=None)[0]
        tau += step[:n_ant]
        theta += step[n_ant:2 * n_ant]
        amp += step[2 * n_ant:]
        if np.max(np.abs(step)) < 1e-12:
            break
    return tau, theta


# ---------------------------------------------------------------- refant

def flex_refant_reference(gains, flag, plan, order=None):
    """fastcal.refant.apply_flex_refant as the NumPy loop it was before the Numba kernel
    (the oracle of the kernel's tests)."""
    eps = 1.1920929e-07

    def usable(f, active):
        good = (~f).any(axis=1)
        if not active.any():
            return np.zeros(f.shape[0], bool)
        return good[:, active].all(axis=1)

    n_int, n_ant, n_ch, n_par = gains.shape
    used = np.full(n_int, -1, np.int32)
    order = np.arange(n_int) if order is None else np.asarray(order)
    active = (~flag).any(axis=(0, 1, 2))  # pars with any solution in this spw
    choices = [a for a in plan.choices if 0 <= a < n_ant] or list(range(n_ant))
    primary = plan.user[0] if plan.user else choices[0]
    prev = -1
    last = -1
    for it in order:
        ok_now = usable(flag[it], active)
        ok_prev = usable(flag[prev], active) if prev >= 0 else np.ones(n_ant, bool)
        if plan.mode == "strict":
            cands = [primary]
        else:
            cands = list(dict.fromkeys([primary] + ([last] if last >= 0 else []) + choices))
        ref = -1
        for a in cands:
            if ok_now[a] and (ok_prev[a] or plan.mode == "strict"):
                ref = a
                break
        if ref < 0 and plan.mode == "flex":  # nothing continuous: any usable antenna
            for a in cands:
                if ok_now[a]:
                    ref = a
                    break
        if ref < 0:
            if plan.mode == "strict":
                flag[it] = True
            prev = it
            continue
        g_ref = gains[it, ref]  # (chan, par)
        amp = np.abs(g_ref)
        valid = ~flag[it, ref] & (amp > eps)
        rot = np.ones_like(g_ref)
        rot[valid] = np.conj(g_ref[valid]) / amp[valid]
        if ref != primary and prev >= 0 and ok_prev[ref]:
            g_prev = gains[prev, ref]
            pa = np.abs(g_prev)
            keep = valid & ~flag[prev, ref] & (pa > eps)
            rot[keep] *= g_prev[keep] / pa[keep]
        gains[it] *= rot[None, :, :]
        if ref == primary or not (prev >= 0 and ok_prev[ref]):
            gains[it, ref][valid] = amp[valid]  # exactly zero phase
        used[it] = ref
        last = ref
        prev = it
    return used


