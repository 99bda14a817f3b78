"""pytest-benchmark: read_chunks versus plain getcolnp on a small simulated MS (~40 MB).

    pytest benchmarks/test_read.py --benchmark-only --benchmark-group-by=group

Warm page cache (the MS was just written). All benchmarks in group "read" read DATA, FLAG and
WEIGHT of every row; compare their means (floor / read_chunks, goal >= 0.9). For a >= 1 GB MS
use ``python benchmarks/bench_read.py --make-gb 1``.
"""

from __future__ import annotations

import casacore.tables as ct
import dask
import numpy as np
import pytest

from fastcal.ms import iter_blocks, open_ms, read_chunks

COLUMNS = ("DATA", "FLAG", "WEIGHT")


@pytest.fixture(scope="module")
def bench_ms(tmp_path_factory):
    from fastcal.simulate import SimConfig, simulate

    path = tmp_path_factory.mktemp("bench") / "demo.ms"
    simulate(path, config=SimConfig.demo(seed=1))
    info = open_ms(path)
    runs = [
        (int(s), int(n), c.n_chan, c.n_corr)
        for c in read_chunks(info, COLUMNS)
        for i in range(c.n_blocks)
        for s, n in zip(c._blocks[i].run_start, c._blocks[i].run_len, strict=True)
    ]
    return info, runs


def _floor(path, runs):
    with ct.table(str(path), ack=False) as t:
        for start, n, nchan, ncorr in runs:
            t.getcolnp("DATA", np.empty((n, nchan, ncorr), np.complex64), start, n)
            t.getcolnp("FLAG", np.empty((n, nchan, ncorr), np.bool_), start, n)
            t.getcolnp("WEIGHT", np.empty((n, ncorr), np.float32), start, n)


def _rows(block):
    return block.shape[0]


def _dask(info, threads):
    chunks = read_chunks(info, COLUMNS)
    lazy = [
        dask.delayed(_rows)(b)
        for c in chunks
        for a in c.arrays.values()
        for b in a.to_delayed(optimize_graph=False).ravel()
    ]
    return sum(dask.compute(*lazy, scheduler="threads", num_workers=threads, optimize_graph=False))


@pytest.mark.benchmark(group="read")
def test_bench_getcolnp_floor(benchmark, bench_ms):
    info, runs = bench_ms
    benchmark(_floor, info.path, runs)


@pytest.mark.benchmark(group="read")
@pytest.mark.parametrize("threads", [1, 2])
def test_bench_read_chunks_dask(benchmark, bench_ms, threads):
    info, _ = bench_ms
    total = benchmark(_dask, info, threads)
    assert total == info.n_rows * len(COLUMNS)


@pytest.mark.benchmark(group="read")
def test_bench_iter_blocks(benchmark, bench_ms):
    info, _ = bench_ms
    benchmark(lambda: sum(a["DATA"].shape[0] for _, _, a in iter_blocks(info, COLUMNS)))


@pytest.mark.benchmark(group="metadata")
def test_bench_open_ms(benchmark, bench_ms):
    info, _ = bench_ms
    benchmark(open_ms, info.path)
