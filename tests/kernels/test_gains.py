"""Tests of the gain solver (fastcal.kernels.gains)."""

import numpy as np
import pytest
from reference import (
    baselines,
    casa_errors_reference,
    complex_noise,
    corrupt,
    minblperant_reference,
    random_gains,
    solve_gains_reference,
)

from fastcal.kernels.gains import (
    CALMODE_AP,
    CHAN_BLOCK,
    STATUS_MINBLPERANT,
    STATUS_MINSNR,
    STATUS_NO_DATA,
    STATUS_NO_HESSIAN,
    STATUS_OK,
    apply_refant,
    calmode_code,
    solve_gains,
    vis_ratio,
)

REF0 = np.array([0], np.int32)


def solve(x, w, n_ant, calmode="ap", solve_t=False, minblperant=4, minsnr=0.0,
          max_iter=100, tol=1e-8):
    a1, a2 = baselines(n_ant)
    return solve_gains(np.ascontiguousarray(x, np.complex128),
                       np.ascontiguousarray(w, np.float64), a1, a2, n_ant,
                       calmode_code(calmode), solve_t, minblperant, minsnr, max_iter, tol)


def referenced(g, ref=0):
    """g[..., ant, chan, par] rotated so that antenna `ref` has zero phase."""
    r = g[..., ref:ref + 1, :, :]
    return g * np.conj(r) / np.abs(r)


@pytest.mark.parametrize("solve_t", [False, True], ids=["G", "T"])
@pytest.mark.parametrize("calmode", ["ap", "p", "a"])
def test_noise_free_recovery(calmode, solve_t):
    """Random a&p gains, 2 intervals x 3 channels (B-like): 'ap' recovers g, 'p' its phase,
    'a' its amplitude (CASA conditions the data, then enforces the mode on the solution)."""
    rng = np.random.default_rng(10)
    n_ant = 7
    a1, a2 = baselines(n_ant)
    g = random_gains(rng, (2, n_ant, 3, 1 if solve_t else 2))
    x = corrupt(g.transpose(0, 2, 1, 3), a1, a2).transpose(0, 2, 1, 3)  # (int, bl, ch, par)
    if solve_t:
        x = np.repeat(x, 2, axis=-1)
    w = rng.uniform(0.5, 2.0, x.shape)
    gains, err, snr, flag, status, n_iter, conv = solve(x, w, n_ant, calmode, solve_t)
    assert conv.all() and not flag.any() and (n_iter > 0).all()
    expect = {"ap": g, "p": g / np.abs(g), "a": np.abs(g)}[calmode]
    got = gains.copy()
    used = apply_refant(got, flag, REF0)
    assert (used == 0).all()
    np.testing.assert_allclose(got, referenced(expect), atol=1e-6)
    np.testing.assert_allclose(np.angle(got[:, 0]), 0.0, atol=1e-12)
    assert np.all(snr > 1e5)  # noise-free: tiny PARAMERR


@pytest.mark.parametrize("solve_t", [False, True], ids=["G", "T"])
def test_noisy_solution_is_the_least_squares_optimum(solve_t):
    rng = np.random.default_rng(11)
    n_ant = 6
    a1, a2 = baselines(n_ant)
    g = random_gains(rng, (n_ant, 1 if solve_t else 2))
    x = corrupt(g, a1, a2)
    if solve_t:
        x = np.repeat(x, 2, axis=-1)
    x = x + complex_noise(rng, x.shape, 0.2)
    w = rng.uniform(0.5, 2.0, x.shape)
    w[3, 1] = 0.0
    gains, err, snr, flag, status, _, conv = solve(x[None, :, None], w[None, :, None], n_ant,
                                                   solve_t=solve_t, tol=1e-12, max_iter=1000)
    assert conv.all()
    g_ref = solve_gains_reference(x, w, a1, a2, n_ant, solve_t)
    np.testing.assert_allclose(referenced(gains)[0, :, 0], g_ref, atol=1e-8)
    r_err, r_snr = casa_errors_reference(x, w, a1, a2, gains[0, :, 0], solve_t)
    np.testing.assert_allclose(err[0, :, 0], r_err, rtol=1e-8)
    np.testing.assert_allclose(snr[0, :, 0], r_snr, rtol=1e-8)


def averaged_noisy_intervals(rng, g, n_int, n_avg, sigma):
    """n_int intervals, each the mean of n_avg samples with noise sigma, W = n_avg/sigma^2."""
    n_ant = g.shape[0]
    a1, a2 = baselines(n_ant)
    x0 = corrupt(g, a1, a2)
    noise = complex_noise(rng, (n_int, n_avg) + x0.shape, sigma).mean(axis=1)
    x = (x0[None] + noise)[:, :, None, :]
    return x, np.full(x.shape, n_avg / sigma**2)


def aligned_rms_error(gains, g):
    """rms over intervals of |g_hat - g| per (ant, par) after the best global phase."""
    gh = gains[:, :, 0, :]
    c = np.sum(np.conj(g)[None] * gh, axis=1, keepdims=True)
    gh = gh * np.conj(c) / np.abs(c)
    return np.sqrt(np.mean(np.abs(gh - g[None]) ** 2, axis=0))


def test_errors_shrink_as_one_over_sqrt_n_and_paramerr_predicts_them():
    rng = np.random.default_rng(12)
    n_ant = 8
    g = random_gains(rng, (n_ant, 2), amp_sd=0.1)
    results = {}
    for n_avg in (4, 16):
        x, w = averaged_noisy_intervals(rng, g, 400, n_avg, sigma=0.5)
        gains, err, _snr, flag, _st, _it, conv = solve(x, w, n_ant)
        assert conv.all() and not flag.any()
        actual = aligned_rms_error(gains, g)
        predicted = np.sqrt(np.mean(err[:, :, 0, :] ** 2, axis=0))
        ratio = actual / predicted
        assert np.all((ratio > 0.7) & (ratio < 1.3)), ratio
        results[n_avg] = (actual.mean(), predicted.mean())
    # 4x the samples -> half the error, both measured and predicted
    assert results[4][0] / results[16][0] == pytest.approx(2.0, rel=0.1)
    assert results[4][1] / results[16][1] == pytest.approx(2.0, rel=0.1)


def test_minblperant_gate_is_recursive():
    """Antenna 5 keeps 2 baselines -> removed; then antenna 4 drops to 2 -> removed."""
    n_ant = 6
    a1, a2 = baselines(n_ant)
    g = random_gains(np.random.default_rng(13), (n_ant, 2))
    x = corrupt(g, a1, a2)
    w = np.ones(x.shape)
    for p, q in [(0, 5), (1, 5), (2, 5), (0, 4), (1, 4)]:
        w[(a1 == p) & (a2 == q)] = 0.0
    *_, flag, status, _, _ = solve(x[None, :, None], w[None, :, None], n_ant, minblperant=3)
    st = status[0, :, 0, 0]
    assert list(st) == [STATUS_OK] * 4 + [STATUS_MINBLPERANT] * 2
    assert flag[0, 4:].all() and not flag[0, :4].any()
    expect = minblperant_reference(w.sum(axis=1), a1, a2, n_ant, 3)
    np.testing.assert_array_equal(st == STATUS_OK, expect)


def test_minblperant_matches_casa_loop_on_random_patterns():
    rng = np.random.default_rng(14)
    n_ant = 9
    a1, a2 = baselines(n_ant)
    w = (rng.random((30, len(a1), 1, 2)) < 0.45).astype(float)
    w[..., 1] *= rng.random(w.shape[:-1]) < 0.5  # sometimes only one pol has data
    x = np.ones(w.shape, complex)
    *_, status, _, _ = solve(x, w, n_ant, minblperant=4)
    n_removed = 0
    for i in range(w.shape[0]):
        expect = minblperant_reference(w[i, :, 0].sum(axis=1), a1, a2, n_ant, 4)
        got = status[i, :, 0, 0]
        np.testing.assert_array_equal(np.isin(got, (STATUS_OK, STATUS_NO_HESSIAN)), expect)
        n_removed += np.count_nonzero(got == STATUS_MINBLPERANT)
    assert n_removed > 0


def test_zero_weight_antenna_is_flagged_not_nan():
    rng = np.random.default_rng(15)
    n_ant = 6
    a1, a2 = baselines(n_ant)
    g = random_gains(rng, (n_ant, 2))
    x = corrupt(g, a1, a2)
    w = np.ones(x.shape)
    w[(a1 == 2) | (a2 == 2)] = 0.0                 # antenna 2: nothing
    w[(a1 == 3) | (a2 == 3), 1] = 0.0              # antenna 3: pol Y only missing
    gains, err, snr, flag, status, _, _ = solve(x[None, :, None], w[None, :, None], n_ant)
    for arr in (gains, err, snr):
        assert np.all(np.isfinite(arr))
    assert status[0, 2, 0].tolist() == [STATUS_NO_DATA] * 2
    assert status[0, 3, 0].tolist() == [STATUS_OK, STATUS_NO_HESSIAN]
    assert flag[0, 2].all() and flag[0, 3, 0, 1] and not flag[0, 3, 0, 0]
    np.testing.assert_array_equal(gains[0, 2], 1.0)
    assert err[0, 2].max() == 0 and snr[0, 2].max() == 0
    good = ~flag[0, :, 0]
    np.testing.assert_allclose(referenced(gains)[0, :, 0][good], referenced(
        g[None, :, None])[0, :, 0][good], atol=1e-6)


def test_t_equals_g_on_pol_combined_data():
    """T on (XX, YY) minimises the same chi2 as G on their weighted mean."""
    rng = np.random.default_rng(16)
    n_ant = 7
    a1, a2 = baselines(n_ant)
    g = random_gains(rng, (n_ant, 1))
    x = np.repeat(corrupt(g, a1, a2), 2, axis=-1) + complex_noise(rng, (len(a1), 2), 0.3)
    w = rng.uniform(0.5, 2.0, x.shape)
    t = solve(x[None, :, None], w[None, :, None], n_ant, solve_t=True, tol=1e-12,
              max_iter=1000)[0]
    xc = (w * x).sum(axis=1, keepdims=True) / w.sum(axis=1, keepdims=True)
    gg = solve(xc[None, :, None], w.sum(axis=1, keepdims=True)[None, :, None], n_ant,
               tol=1e-12, max_iter=1000)[0]
    np.testing.assert_allclose(referenced(t), referenced(gg), atol=1e-9)
    # noise-free with a shared gain: T equals G, and G's two pols agree
    x0 = np.repeat(corrupt(g, a1, a2), 2, axis=-1)[None, :, None]
    gt = referenced(solve(x0, np.ones(x0.shape), n_ant, solve_t=True)[0])
    gg = referenced(solve(x0, np.ones(x0.shape), n_ant)[0])
    np.testing.assert_allclose(gg[..., 0], gt[..., 0], atol=1e-7)
    np.testing.assert_allclose(gg[..., 1], gt[..., 0], atol=1e-7)


def test_apply_refant_priority_and_rotation():
    rng = np.random.default_rng(17)
    g = random_gains(rng, (3, 5, 2, 2))
    flag = np.zeros(g.shape, bool)
    flag[1, 1] = True              # interval 1: first choice fully flagged
    flag[2, [1, 3], :, 1] = True   # interval 2: first two choices lack pol Y
    flag[2, 4, 0, :] = True        # ... third has pol Y in channel 1 only
    out = g.copy()
    used = apply_refant(out, flag, np.array([1, 3, 4], np.int32))
    assert used.tolist() == [1, 3, 4]
    for it, ref in enumerate(used):
        # phase differences between antennas are unchanged
        np.testing.assert_allclose(out[it] * np.conj(out[it, :1]), g[it] * np.conj(g[it, :1]),
                                   atol=1e-12)
        good = ~flag[it, ref]
        assert np.all(np.angle(out[it, ref])[good] == 0.0)
    # interval 2, channel 0: the refant is flagged there, so nothing is rotated
    np.testing.assert_array_equal(out[2, :, 0], g[2, :, 0])
    # no usable refant: -1 and unchanged gains
    out2 = g.copy()
    assert apply_refant(out2, np.ones(g.shape, bool), np.array([0], np.int32)).tolist() \
        == [-1] * 3
    np.testing.assert_array_equal(out2, g)


def test_pol_without_any_solution_does_not_disqualify_refant():
    g = random_gains(np.random.default_rng(18), (1, 4, 1, 2))
    flag = np.zeros(g.shape, bool)
    flag[..., 1] = True  # pol Y flagged everywhere (e.g. single-pol data in a 2-pol table)
    assert apply_refant(g.copy(), flag, np.array([2], np.int32)).tolist() == [2]


def test_max_iter_reports_non_convergence_and_minsnr_flags():
    rng = np.random.default_rng(19)
    n_ant = 6
    a1, a2 = baselines(n_ant)
    x = corrupt(random_gains(rng, (n_ant, 2)), a1, a2)[None, :, None]
    x = x + complex_noise(rng, x.shape, 0.1)
    w = np.ones(x.shape)
    _, _, _, _, _, n_iter, conv = solve(x, w, n_ant, max_iter=2)
    assert n_iter.tolist() == [[2]] and conv.tolist() == [[False]]
    gains, err, snr, flag, status, _, conv = solve(x, w, n_ant, minsnr=1e9)
    assert conv.all() and flag.all() and (status == STATUS_MINSNR).all()
    assert np.all(err > 0) and np.all(snr < 1e9) and not np.allclose(gains, 1.0)


def test_bad_inputs_raise():
    n_ant = 4
    a1, a2 = baselines(n_ant)
    x = np.ones((1, len(a1), 1, 2), complex)
    w = np.ones(x.shape)
    with pytest.raises(ValueError, match="calmode must be"):
        solve_gains(x, w, a1, a2, n_ant, 7, False, 4, 0.0, 100, 1e-8)
    with pytest.raises(ValueError, match="0 <= ant1 < ant2 < n_ant"):
        solve_gains(x, w, a1, a2, 3, CALMODE_AP, False, 4, 0.0, 100, 1e-8)
    with pytest.raises(ValueError, match="wt must have the shape"):
        solve_gains(x, w[:, :, :, :1].copy(), a1, a2, n_ant, CALMODE_AP, False, 4, 0.0, 100,
                    1e-8)
    with pytest.raises(ValueError, match="calmode='x' is not supported"):
        calmode_code("x")


def test_vis_ratio_is_zero_without_weight():
    vis_sum = np.array([2 + 2j, 1j, 3.0, -4j]).reshape(1, 2, 1, 2)
    wt_sum = np.array([2.0, 0.0, -1.0, 4.0]).reshape(1, 2, 1, 2)
    np.testing.assert_array_equal(vis_ratio(vis_sum, wt_sum).ravel(), [1 + 1j, 0, 0, -1j])



def plain_stefcal(x, w, a1, a2, g0, tol, max_iter=5000):
    """Un-accelerated StEFCal (Algorithm 1: averaging on even steps) from g0 with the
    kernel's test ||g_even - g_odd|| / ||g_even|| < tol; x, w: [bl, pol].
    Returns (iterations, g)."""
    g = g0.astype(complex)
    for i in range(1, max_iter + 1):
        num = np.zeros_like(g)
        den = np.zeros(g.shape)
        np.add.at(num, a1, w * x * g[a2])
        np.add.at(num, a2, w * np.conj(x) * g[a1])
        np.add.at(den, a1, w * np.abs(g[a2]) ** 2)
        np.add.at(den, a2, w * np.abs(g[a1]) ** 2)
        g_new = num / den
        if i % 2 == 0:
            if np.linalg.norm(g_new - g) <= tol * np.linalg.norm(g_new):
                return i, g_new
            g = 0.5 * (g_new + g)
        else:
            g = g_new
    return max_iter, g


def test_accelerated_phase_only_solve_is_faster_and_reaches_the_same_optimum():
    # low-SNR phase-only data: plain StEFCal converges slowly (linear, ~0.5 per pair)
    rng = np.random.default_rng(23)
    n_ant = 16
    a1, a2 = baselines(n_ant)
    g = np.exp(1j * rng.uniform(-np.pi, np.pi, (n_ant, 2)))
    x = corrupt(g, a1, a2) + complex_noise(rng, (a1.size, 2), 1.5)
    w = rng.uniform(0.5, 2.0, x.shape)
    xp, wp = x / np.abs(x), w * np.abs(x) ** 2  # CASA's enforceAPonData for 'p'
    gains, _, _, _, _, n_iter, conv = solve(x[None, :, None], w[None, :, None], n_ant,
                                           calmode="p")
    assert conv.all()
    _, g_tight = plain_stefcal(xp, wp, a1, a2, np.ones((n_ant, 2)), 1e-14)
    g_tight = g_tight[:, None, :] / np.abs(g_tight[:, None, :])
    np.testing.assert_allclose(referenced(gains)[0], referenced(g_tight), atol=1e-7)
    # even from a start better than the kernel's own guess, plain StEFCal needs more steps
    g_start = g_tight[:, 0] * np.exp(1j * rng.normal(0.0, 0.3, (n_ant, 2)))
    n_plain, _ = plain_stefcal(xp, wp, a1, a2, g_start, 1e-8)
    assert n_iter[0, 0] < 0.75 * n_plain


def test_channel_blocks_equal_independent_solves():
    # channels are conditioned in blocks of CHAN_BLOCK; every channel's solve must be
    # bit-identical to solving that channel alone (no state carried between channels)
    rng = np.random.default_rng(29)
    n_ant, n_ch = 7, CHAN_BLOCK + 5
    a1, a2 = baselines(n_ant)
    g = random_gains(rng, (n_ant, n_ch, 2))
    x = np.stack([corrupt(g[:, c], a1, a2) for c in range(n_ch)], axis=1)
    x = x + complex_noise(rng, x.shape, 0.3)
    w = rng.uniform(0.5, 2.0, x.shape)
    w[(a1 == 4) | (a2 == 4), CHAN_BLOCK + 1] = 0.0
    for calmode in ("ap", "p"):
        together = solve(x[None], w[None], n_ant, calmode=calmode)
        assert together[4][0, 4, CHAN_BLOCK + 1].tolist() == [STATUS_NO_DATA] * 2
        for c in (0, CHAN_BLOCK - 1, CHAN_BLOCK, CHAN_BLOCK + 1, n_ch - 1):
            alone = solve(x[None, :, c:c + 1], w[None, :, c:c + 1], n_ant, calmode=calmode)
            for a, b in zip(together, alone, strict=True):
                np.testing.assert_array_equal(a[:, ..., c:c + 1, :] if a.ndim == 4
                                              else a[:, c:c + 1], b)
