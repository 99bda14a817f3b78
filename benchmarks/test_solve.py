"""Benchmarks of the solver drivers on small in-memory problems (pytest-benchmark).

Run with ``pytest benchmarks/test_solve.py --benchmark-only``. The calibrator is read once
into a :class:`fastcal.solve.VisCache` (16 antennas, 2 spws x 64 channels); the timed calls
solve from memory, so they measure the driver + kernels without I/O. Every fixture solves
once before timing, so JIT loading is never measured.
"""

import numpy as np
import pytest

from fastcal.kernels import dense_baselines
from fastcal.kernels.reapply import reduce_cached
from fastcal.simulate import SimConfig, simulate
from fastcal.solve import load_calibrator, solve_bandpass, solve_gains


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench_solve") / "b.ms"
    cfg = SimConfig.tiny(seed=1).replace(n_ant=16, n_chan=64,
                                         scan_lengths={"bandpass": 60.48})
    truth = simulate(path, config=cfg, tsys=False, wvr=False)
    c = load_calibrator(path, field="0", spw=",".join(map(str, truth.science_spw_ids)))
    ph = solve_gains(c, solint="int", calmode="p", refant="0")
    solve_bandpass(c, refant="0", gaintable=[ph])
    return c, ph


def test_bench_phase_up_from_cache(benchmark, cache):
    c, _ = cache
    tab = benchmark(solve_gains, c, solint="int", calmode="p", refant="0")
    benchmark.extra_info["solutions"] = int(tab.nrow)


def test_bench_bandpass_from_cache_with_preapply(benchmark, cache):
    c, ph = cache
    tab = benchmark(solve_bandpass, c, refant="0", gaintable=[ph])
    benchmark.extra_info["solutions"] = int(tab.nrow)


def test_bench_reduce_cached_kernel(benchmark):
    """Re-reduction of cached sums with a per-channel Jones: samples per second."""
    rng = np.random.default_rng(0)
    n_t, n_ant, n_chan = 20, 32, 256
    a1, a2 = dense_baselines(n_ant)
    shape = (n_t, a1.size, n_chan, 2)
    vis = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    wt = np.ones(shape, np.float32)
    jones = np.exp(1j * rng.standard_normal((n_t, n_ant, n_chan, 2))).astype(np.complex64)
    jflag = np.zeros(jones.shape, bool)
    slot = np.zeros(n_t, np.int64)
    cb = np.arange(n_chan, dtype=np.int32)
    out = (np.zeros((1, a1.size, n_chan, 2), np.complex128), np.zeros((1, a1.size, n_chan, 2)),
           np.zeros((1, a1.size, n_chan, 2), np.int64))
    args = (vis, wt, slot, cb, a1, a2, jones, jflag, np.arange(n_t, dtype=np.int64), True, *out)
    reduce_cached(*args)
    benchmark(reduce_cached, *args)
    benchmark.extra_info["samples"] = int(vis.size)
