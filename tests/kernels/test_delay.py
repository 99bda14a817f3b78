"""Tests of the delay solver (fastcal.kernels.delay)."""

import numpy as np
import pytest
from reference import (
    baselines,
    complex_noise,
    delay_bruteforce,
    k_jones,
    solve_delays_reference,
)

from fastcal.kernels.delay import fft_delay, next_pow2, solve_delays

N_ANT, N_CHAN, DF = 6, 64, 15.6e6
FREQS = 100e9 + DF * np.arange(N_CHAN)
REF_FREQ = FREQS[N_CHAN // 2]  # CASA >= 5.3 K reference: CHAN_FREQ[nchan // 2]
RESOLUTION_NS = 1e9 / (N_CHAN * DF)  # one channel's delay resolution, ~1 ns


def truth(seed, n_ant=N_ANT):
    rng = np.random.default_rng(seed)
    return rng.uniform(-2.0, 2.0, (n_ant, 2)), rng.uniform(-np.pi, np.pi, (n_ant, 2))


def simulate(tau, theta, freqs=FREQS, ref_freq=REF_FREQ):
    """X[bl, chan, pol] = K_p conj(K_q) exp(i(theta_p - theta_q)), CASA's K convention."""
    a1, a2 = baselines(tau.shape[0])
    k = k_jones(tau.T, freqs, ref_freq).transpose(1, 2, 0)  # (ant, chan, pol)
    ph = np.exp(1j * theta)[:, None, :]
    return np.ascontiguousarray((k * ph)[a1] * np.conj((k * ph)[a2]))


def run(x, w, n_ant=N_ANT, freqs=FREQS, refants=(0,), refine=True, max_iter=30, tol=1e-10):
    a1, a2 = baselines(n_ant)
    x = np.ascontiguousarray(x, np.complex128)
    return solve_delays(x if x.ndim == 4 else x[None], np.ascontiguousarray(
        w if w.ndim == 4 else w[None], np.float64), a1, a2, n_ant,
        np.ascontiguousarray(freqs, np.float64), float(freqs[len(freqs) // 2]),
        np.array(refants, np.int32), refine, max_iter, tol)


def rel(v, ref=0):
    return v - v[ref]


@pytest.mark.parametrize("refine", [False, True], ids=["fft", "fft+gn"])
def test_recovers_injected_delays_noise_free(refine):
    tau, theta = truth(20)
    x = simulate(tau, theta)
    delay, phase, err, flag, used, n_iter, conv = run(x, np.ones(x.shape), refine=refine)
    assert used.tolist() == [0] and conv.all() and not flag.any()
    assert np.all(delay[0, 0] == 0.0)
    assert np.abs(delay[0] - rel(tau)).max() < 0.01 * RESOLUTION_NS
    if refine:
        assert n_iter[0] > 0
        np.testing.assert_allclose(delay[0], rel(tau), atol=1e-8)
        dphi = np.angle(np.exp(1j * (phase[0] - rel(theta))))
        np.testing.assert_allclose(dphi, 0.0, atol=1e-7)


def test_applying_casa_k_with_the_solution_removes_the_delay():
    tau, theta = truth(21)
    x = simulate(tau, theta)
    delay = run(x, np.ones(x.shape))[0][0]
    a1, a2 = baselines(N_ANT)
    k = k_jones(delay.T, FREQS, REF_FREQ).transpose(1, 2, 0)
    corrected = x / (k[a1] * np.conj(k[a2]))
    # the remaining phase is constant across the band on every baseline and pol
    resid = np.angle(corrected * np.conj(corrected[:, :1]))
    assert np.abs(resid).max() < 1e-6
    # a wrong sign convention would leave twice the slope instead
    wrong = x * (k[a1] * np.conj(k[a2]))
    assert np.abs(np.angle(wrong * np.conj(wrong[:, :1]))).max() > 1.0


@pytest.mark.parametrize("tau_ns", [-7.3, -0.41, 0.0, 2.0, 13.9])
def test_fft_peak_matches_bruteforce(tau_ns):
    rng = np.random.default_rng(22)
    y = np.exp(2j * np.pi * tau_ns * 1e-9 * FREQS + 1j * rng.uniform(-3, 3))
    n_pad = next_pow2(8 * N_CHAN)
    got, ok = fft_delay(y, np.arange(N_CHAN, dtype=np.int64), n_pad, DF)
    assert ok
    brute = delay_bruteforce(y, FREQS, 0.5e9 / DF)
    assert got == pytest.approx(brute, abs=0.01 * RESOLUTION_NS)
    assert got == pytest.approx(tau_ns, abs=0.01 * RESOLUTION_NS)


def test_noisy_solution_is_the_least_squares_optimum():
    rng = np.random.default_rng(23)
    tau, theta = truth(23)
    x = simulate(tau, theta)
    x = x + complex_noise(rng, x.shape, 0.5)
    w = rng.uniform(0.5, 2.0, x.shape)
    delay, phase, err, flag, *_ = run(x, w, tol=1e-12)
    a1, a2 = baselines(N_ANT)
    for k in range(2):
        t_ref, th_ref = solve_delays_reference(x[..., k], w[..., k], a1, a2, N_ANT, FREQS,
                                               REF_FREQ, 0, delay[0, :, k], phase[0, :, k])
        np.testing.assert_allclose(delay[0, :, k], t_ref, atol=1e-9)
    assert np.abs(delay[0] - rel(tau)).max() < 5 * err[0].max()


def test_paramerr_predicts_the_scatter():
    rng = np.random.default_rng(24)
    tau, theta = truth(24)
    n_int = 200
    x0 = simulate(tau, theta)
    x = x0[None] + complex_noise(rng, (n_int,) + x0.shape, 1.0)
    delay, _, err, flag, _, _, conv = run(x, np.ones(x.shape))
    assert conv.all() and not flag.any()
    actual = np.sqrt(np.mean((delay - rel(tau)[None]) ** 2, axis=0))[1:]
    predicted = np.sqrt(np.mean(err**2, axis=0))[1:]
    ratio = actual / predicted
    assert np.all((ratio > 0.7) & (ratio < 1.3)), ratio
    assert predicted.max() < 0.1 * RESOLUTION_NS  # a meaningful, not a vacuous, bound


def test_antenna_without_refant_baseline_is_reached_through_neighbours():
    tau, theta = truth(25)
    x = simulate(tau, theta)
    w = np.ones(x.shape)
    a1, a2 = baselines(N_ANT)
    w[(a1 == 0) & (a2 == 3)] = 0.0
    for refine in (False, True):
        delay, _, _, flag, *_ = run(x, w, refine=refine)
        assert not flag.any()
        assert abs(delay[0, 3] - rel(tau)[3]).max() < 0.01 * RESOLUTION_NS


def test_flags_refant_fallback_and_lsb():
    tau, theta = truth(26)
    x = simulate(tau, theta)
    w = np.ones(x.shape)
    a1, a2 = baselines(N_ANT)
    w[(a1 == 0) | (a2 == 0)] = 0.0   # first-choice refant has no data
    w[(a1 == 4) | (a2 == 4)] = 0.0   # antenna 4 has no data
    delay, phase, err, flag, used, *_ = run(x, w, refants=(0, 2))
    assert used.tolist() == [2]
    assert flag[0, [0, 4]].all() and not flag[0, [1, 2, 3, 5]].any()
    assert np.all(delay[0, [0, 4]] == 0) and np.all(err[0, [0, 4, 2]] == 0)
    np.testing.assert_allclose(delay[0, [1, 3, 5]], rel(tau, 2)[[1, 3, 5]], atol=1e-7)
    # decreasing frequencies (LSB): same delays
    lsb = np.ascontiguousarray(FREQS[::-1])
    x_lsb = simulate(tau, theta, lsb, lsb[N_CHAN // 2])
    d_lsb = run(x_lsb, np.ones(x.shape), freqs=lsb)[0]
    np.testing.assert_allclose(d_lsb[0], rel(tau), atol=1e-7)


def test_channel_gap_and_scrambled_channels():
    tau, theta = truth(29)
    keep = np.r_[0:20, 35:64]  # a gap of 15 channels
    f = np.ascontiguousarray(FREQS[keep])
    x = simulate(tau, theta, f, REF_FREQ)
    delay, _, _, flag, *_ = run(x, np.ones(x.shape), freqs=f)
    assert not flag.any()
    np.testing.assert_allclose(delay[0], rel(tau), atol=1e-7)
    perm = np.random.default_rng(29).permutation(N_CHAN)  # not a monotonic grid at all
    f = np.ascontiguousarray(FREQS[perm])
    x = simulate(tau, theta, f, REF_FREQ)
    delay, _, _, flag, *_ = run(x, np.ones(x.shape), freqs=f)
    assert not flag.any()
    np.testing.assert_allclose(delay[0], rel(tau), atol=1e-7)


def test_single_channel_and_no_refant_are_flagged():
    tau, theta = truth(27)
    x = simulate(tau, theta)[:, :1]
    delay, _, _, flag, used, *_ = run(x, np.ones(x.shape), freqs=FREQS[:1])
    assert used.tolist() == [0] and not flag[0, 0].any() and flag[0, 1:].all()
    x = simulate(tau, theta)
    *_, flag, used, _, _ = run(x, np.zeros(x.shape))
    assert used.tolist() == [-1] and flag.all()


def test_bad_inputs_raise():
    x = simulate(*truth(28))
    with pytest.raises(ValueError, match="freqs must have n_chan"):
        run(x, np.ones(x.shape), freqs=FREQS[:10])
    with pytest.raises(ValueError, match="0 <= ant1 < ant2 < n_ant"):
        a1, a2 = baselines(N_ANT)
        solve_delays(x[None], np.ones((1,) + x.shape), a1, a2, 3, FREQS, REF_FREQ,
                     np.array([0], np.int32), True, 30, 1e-10)
