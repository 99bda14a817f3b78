"""Micro-benchmarks of the Numba kernels (pytest-benchmark).

Run with ``pytest benchmarks/test_kernels.py --benchmark-only``. Every fixture calls its
kernel once before timing, so compilation is never measured. Throughput and per-interval
times are stored in each benchmark's ``extra_info`` (shown with ``--benchmark-json``) and
summarised in docs/kernels.md.
"""

import numpy as np
import pytest

from fastcal.kernels import (
    CALMODE_AP,
    average_model,
    average_point_model,
    dense_baselines,
    solve_delays,
    solve_gains,
)

N_INT = 10  # intervals per solver call; times per interval = call time / N_INT


# ------------------------------------------------------------------ reduction


def reduction_chunk(n_ant=16, n_time=20, n_chan=512, n_corr=2, seed=1):
    """An MS-like chunk: every baseline incl. autocorrelations, WEIGHT (not spectral)."""
    rng = np.random.default_rng(seed)
    rows = [(t, p, q) for t in range(n_time) for p in range(n_ant) for q in range(p, n_ant)]
    t, a1, a2 = (np.array(x, np.int32) for x in zip(*rows, strict=True))
    shape = (len(t), n_chan, n_corr)
    data = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    model = np.ones(shape, np.complex64)
    flag = rng.random(shape) < 0.01
    weight = np.ones((len(t), 1, n_corr), np.float32)
    jshape = (n_time, n_ant, n_chan, 2)
    jones = (1 + 0.1 * rng.standard_normal(jshape)).astype(np.complex64)
    n_bl = n_ant * (n_ant - 1) // 2
    sums = (
        np.zeros((2, n_bl, n_chan // 8, 2), np.complex128),
        np.zeros((2, n_bl, n_chan // 8, 2)),
        np.zeros((2, n_bl, n_chan // 8, 2), np.int64),
    )
    return dict(
        data=data,
        model=model,
        flag=flag,
        weight=weight,
        ant1=a1,
        ant2=a2,
        interval_idx=(t >= n_time // 2).astype(np.int32),
        chan_bin=(np.arange(n_chan) // 8).astype(np.int32),
        corr_index=np.arange(2, dtype=np.int32),
        jones=jones,
        jones_flag=np.zeros(jshape, bool),
        jones_time_idx=t,
        sums=sums,
    )


@pytest.fixture(scope="module")
def chunk():
    return reduction_chunk()


def _bench(benchmark, kernel, args):
    """Time `kernel(*args)` after one untimed call (JIT compilation never measured)."""
    kernel(*args)
    benchmark(kernel, *args)


def _reduction_args(c, model, jones, jones_flag):
    """Arguments of average_model / average_point_model for chunk `c` (model: the array or
    the point-source spectrum)."""
    return (
        c["data"],
        model,
        c["flag"],
        c["weight"],
        c["ant1"],
        c["ant2"],
        c["interval_idx"],
        c["chan_bin"],
        c["corr_index"],
        jones,
        jones_flag,
        c["jones_time_idx"],
        True,
        *c["sums"],
    )


def _record_throughput(benchmark, c):
    mean = benchmark.stats.stats.mean
    benchmark.extra_info["n_vis"] = int(c["data"].size)
    benchmark.extra_info["GB/s DATA"] = c["data"].nbytes / mean / 1e9
    benchmark.extra_info["Mvis/s"] = c["data"].size / mean / 1e6


@pytest.mark.parametrize("pre_apply", [False, True], ids=["no-jones", "jones"])
def test_bench_reduction_model_array(benchmark, chunk, pre_apply):
    c = chunk
    jones, jflag = (
        (c["jones"], c["jones_flag"]) if pre_apply else (c["jones"][:0], c["jones_flag"][:0])
    )
    _bench(benchmark, average_model, _reduction_args(c, c["model"], jones, jflag))
    _record_throughput(benchmark, c)


def test_bench_reduction_point_model(benchmark, chunk):
    c = chunk
    spec = np.ones((c["data"].shape[1], 2))
    args = _reduction_args(c, spec, c["jones"], c["jones_flag"])
    _bench(benchmark, average_point_model, args)
    _record_throughput(benchmark, c)


def test_bench_reduction_point_model_plain(benchmark, chunk):
    """Point model, nothing pre-applied (plain gaincal / bandpass): the hoisted fast path."""
    c = chunk
    spec = np.ones((c["data"].shape[1], 2))
    args = _reduction_args(c, spec, c["jones"][:0], c["jones_flag"][:0])
    _bench(benchmark, average_point_model, args)
    _record_throughput(benchmark, c)


# ------------------------------------------------------------------ applycal


@pytest.mark.parametrize("corrs", ["XX,YY", "XX,XY,YX,YY"])
def test_bench_correct_block(benchmark, corrs):
    """applycal's correction of one block (Jones product of G x B, inverse, correction, flags,
    weights from SIGMA, FLAG_ROW): 43 antennas, 16 times, 128 channels, calwt. In place, with
    unit-modulus Jones and SIGMA = 1, so repeated calls keep the values bounded."""
    from fastcal.kernels.apply import MODE_CALFLAG, N_COUNTS, correct_block

    rng = np.random.default_rng(3)
    n_ant, n_time, n_chan = 43, 16, 128
    rec = [[0, 0], [1, 1]] if corrs == "XX,YY" else [[0, 0], [0, 1], [1, 0], [1, 1]]
    rows = [(t, p, q) for t in range(n_time) for p in range(n_ant) for q in range(p, n_ant)]
    t, a1, a2 = (np.array(x, np.int32) for x in zip(*rows, strict=True))
    shape = (len(t), n_chan, len(rec))
    data = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    flag = rng.random(shape) < 0.01
    sigma = np.ones((len(t), 1, len(rec)), np.float32)
    g = np.exp(1j * rng.uniform(-3, 3, (n_time, n_ant, 1, 2)))
    b = np.exp(1j * rng.uniform(-1, 1, (1, n_ant, n_chan, 2)))
    no_mws = np.empty((0, 1, 1, 2))
    args = (data, flag, np.zeros(len(t), bool), sigma, a1, a2, t.astype(np.int64), n_time, n_ant,
            (g, b), (np.zeros(g.shape, bool), np.zeros(b.shape, bool)),
            (no_mws, np.ones((1, n_ant, 1, 2))), np.array([1, 2], np.int8),
            np.array(rec, np.int64), MODE_CALFLAG, True, True, np.empty(len(t), bool),
            np.zeros(N_COUNTS, np.int64))  # fmt: skip
    _bench(benchmark, correct_block, args)
    _record_throughput(benchmark, {"data": data})


# ------------------------------------------------------------------ solvers


def solver_problem(n_ant, n_chan, seed=2, delays=False):
    """N_INT intervals of averaged ratios with random gains (or delays) and noise."""
    rng = np.random.default_rng(seed)
    a1, a2 = dense_baselines(n_ant)
    freqs = 100e9 + 15.6e6 * np.arange(n_chan)
    if delays:
        tau = rng.uniform(-2, 2, (n_ant, 2))
        ph = (
            2e-9
            * np.pi
            * (tau[a1] - tau[a2])[:, None, :]
            * (freqs - freqs[n_chan // 2])[None, :, None]
        )
        x = np.exp(1j * ph)
    else:
        g = (1 + 0.1 * rng.standard_normal((n_ant, n_chan, 2))) * np.exp(
            1j * rng.uniform(-np.pi, np.pi, (n_ant, n_chan, 2))
        )
        x = g[a1] * np.conj(g[a2])
    shape = (N_INT,) + x.shape
    noise = 0.1 * (rng.standard_normal(shape) + 1j * rng.standard_normal(shape))
    vis = np.ascontiguousarray(x[None] + noise)
    return vis, np.ones(shape), a1, a2, freqs


def _record_per_interval(benchmark, n_ant):
    benchmark.extra_info["n_ant"] = n_ant
    benchmark.extra_info["ms_per_interval"] = benchmark.stats.stats.mean / N_INT * 1e3


def _bench_gain_solve(benchmark, n_ant, n_chan):
    """StEFCal (calmode ap, minblperant 4) on N_INT intervals of `n_chan` channels."""
    vis, wt, a1, a2, _ = solver_problem(n_ant, n_chan)
    _bench(benchmark, solve_gains, (vis, wt, a1, a2, n_ant, CALMODE_AP, False, 4, 0.0, 100, 1e-8))
    _record_per_interval(benchmark, n_ant)


@pytest.mark.parametrize("n_ant", [8, 16, 32, 64])
def test_bench_gain_solve_per_interval(benchmark, n_ant):
    """gaincal G, calmode ap: one channel, two pols, per interval."""
    _bench_gain_solve(benchmark, n_ant, 1)


@pytest.mark.parametrize("n_ant", [8, 64])
def test_bench_bandpass_solve_per_interval(benchmark, n_ant):
    """bandpass B: 64 solution channels, two pols, per interval."""
    _bench_gain_solve(benchmark, n_ant, 64)


@pytest.mark.parametrize("n_ant", [8, 16, 32, 64])
def test_bench_delay_solve_per_interval(benchmark, n_ant):
    """gaincal K: 64 channels of 15.6 MHz, two pols, FFT + Gauss-Newton, per interval."""
    vis, wt, a1, a2, freqs = solver_problem(n_ant, 64, delays=True)
    args = (vis, wt, a1, a2, n_ant, freqs, freqs[32], np.array([0], np.int32), True, 30, 1e-8)
    _bench(benchmark, solve_delays, args)
    _record_per_interval(benchmark, n_ant)
