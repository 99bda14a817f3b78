"""Tests of the reduction kernel (fastcal.kernels.average)."""

import numpy as np
import pytest
from reference import baselines, reduce_reference

from fastcal.kernels.average import (
    _reduce_general,
    average_model,
    average_point_model,
    baseline_index,
    count_unflagged,
    dense_baselines,
    n_ant_from_n_bl,
)

N_ANT, N_TIME, N_CHAN, N_CORR = 5, 4, 6, 4
CORR_INDEX = np.array([0, 3], np.int32)
CHAN_BIN = np.array([0, 0, 1, 1, 2, -1], np.int32)
N_OUT, N_INT = 3, 2


def make_chunk(seed, jones_chan=N_CHAN, spectral_weight=True, n_rec=2):
    """A tiny chunk: all baselines incl. autocorrelations, some rows written (q, p)."""
    rng = np.random.default_rng(seed)
    rows = [(t, p, q) for t in range(N_TIME) for p in range(N_ANT) for q in range(p, N_ANT)]
    t, a1, a2 = (np.array(x, np.int32) for x in zip(*rows, strict=True))
    swap = rng.random(len(t)) < 0.3
    a1, a2 = np.where(swap, a2, a1).astype(np.int32), np.where(swap, a1, a2).astype(np.int32)
    n_row = len(t)
    shape = (n_row, N_CHAN, N_CORR)
    data = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    model = (1 + rng.random(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    flag = rng.random(shape) < 0.05
    wshape = (n_row, N_CHAN if spectral_weight else 1, N_CORR)
    weight = rng.uniform(-0.2, 2.0, wshape).astype(np.float32)
    interval = (t // 2).astype(np.int32)
    interval[rng.random(n_row) < 0.1] = -1
    jshape = (N_TIME, N_ANT, jones_chan, n_rec)
    jones = (1 + 0.3 * rng.standard_normal(jshape)
             + 0.3j * rng.standard_normal(jshape)).astype(np.complex64)
    jones_flag = rng.random(jshape) < 0.05
    return dict(data=data, model=model, flag=flag, weight=weight, ant1=a1, ant2=a2,
                interval_idx=interval, jones=jones, jones_flag=jones_flag,
                jones_time_idx=t.astype(np.int32))


def empty_sums():
    shape = (N_INT, N_ANT * (N_ANT - 1) // 2, N_OUT, len(CORR_INDEX))
    return np.zeros(shape, np.complex128), np.zeros(shape), np.zeros(shape, np.int64)


def run_kernel(c, calwt=True, use_jones=True, rows=slice(None), sums=None):
    vis, wt, n = sums if sums is not None else empty_sums()
    jones, jflag = c["jones"], c["jones_flag"]
    if not use_jones:
        jones, jflag = jones[:0], jflag[:0]
    average_model(c["data"][rows], c["model"][rows], c["flag"][rows], c["weight"][rows],
                  c["ant1"][rows], c["ant2"][rows], c["interval_idx"][rows], CHAN_BIN,
                  CORR_INDEX, jones, jflag, c["jones_time_idx"][rows], calwt, vis, wt, n)
    return vis, wt, n


def run_reference(c, calwt=True, use_jones=True, model_spec=None):
    jones = c["jones"] if use_jones else c["jones"][:0]
    return reduce_reference(c["data"], c["model"], c["flag"], c["weight"], c["ant1"],
                            c["ant2"], c["interval_idx"], CHAN_BIN, CORR_INDEX, jones,
                            c["jones_flag"], c["jones_time_idx"], calwt, N_INT, N_ANT, N_OUT,
                            model_spec=model_spec)


def test_dense_baseline_layout_matches_index():
    a1, a2 = dense_baselines(7)
    assert [baseline_index(p, q, 7) for p, q in zip(a1, a2, strict=True)] == list(range(21))
    np.testing.assert_array_equal(a1, baselines(7)[0])
    assert n_ant_from_n_bl(21) == 7
    with pytest.raises(ValueError, match="20 baselines"):
        n_ant_from_n_bl(20)


@pytest.mark.parametrize("use_jones", [False, True])
@pytest.mark.parametrize("calwt", [False, True])
@pytest.mark.parametrize("jones_chan,spectral_weight,n_rec",
                         [(N_CHAN, True, 2), (1, False, 1)])
def test_matches_reference(use_jones, calwt, jones_chan, spectral_weight, n_rec):
    c = make_chunk(1, jones_chan=jones_chan, spectral_weight=spectral_weight, n_rec=n_rec)
    vis, wt, n = run_kernel(c, calwt=calwt, use_jones=use_jones)
    rvis, rwt, rn = run_reference(c, calwt=calwt, use_jones=use_jones)
    np.testing.assert_array_equal(n, rn)
    np.testing.assert_allclose(vis, rvis, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(wt, rwt, rtol=1e-12, atol=1e-12)
    assert n.sum() > 0 and (n == 0).any()  # the fixture exercises both outcomes


def test_chunks_add_exactly():
    c = make_chunk(2)
    whole = run_kernel(c)
    split = empty_sums()
    for rows in (slice(0, 23), slice(23, None)):
        run_kernel(c, rows=rows, sums=split)
    for a, b in zip(whole, split, strict=True):
        np.testing.assert_array_equal(a, b)


def test_ratio_recovers_the_calibrated_visibility():
    """V = J_p conj(J_q) M with J pre-applied gives X = V'/M = 1 and calwt weights."""
    c = make_chunk(3)
    c["flag"][:] = False
    c["jones_flag"][:] = False
    c["weight"] = np.abs(c["weight"]) + np.float32(0.1)
    jones = c["jones"].astype(np.complex128)
    jp = jones[c["jones_time_idx"], c["ant1"]]  # (row, chan, rec)
    jq = jones[c["jones_time_idx"], c["ant2"]]
    rec = np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])  # XX XY YX YY receptors
    gains = jp[:, :, rec[0]] * np.conj(jq[:, :, rec[1]])
    c["data"] = (gains * c["model"]).astype(np.complex64)
    vis, wt, n = run_kernel(c)
    good = wt > 0
    np.testing.assert_allclose(vis[good] / wt[good], 1.0, atol=2e-6)
    # calwt: sum of w |M|^2 |J_p J_q|^2 over the samples of one output cell
    cross = c["ant1"] != c["ant2"]
    row = np.flatnonzero(cross & (c["interval_idx"] == 0))
    sel = row[(c["ant1"][row] == 0) & (c["ant2"][row] == 1) | (c["ant1"][row] == 1)
              & (c["ant2"][row] == 0)]
    expect = sum(float(c["weight"][r, ch, 0]) * abs(complex(c["model"][r, ch, 0])) ** 2
                 * abs(complex(gains[r, ch, 0])) ** 2 for r in sel for ch in (0, 1))
    assert wt[0, 0, 0, 0] == pytest.approx(expect, rel=1e-9)
    assert n[0, 0, 0, 0] == 2 * len(sel)


def test_any_flagged_correlation_excludes_all():
    """corrdepflags=False: flagging only XY of one sample removes its XX and YY."""
    c = make_chunk(4)
    c["flag"][:] = False
    c["weight"] = np.abs(c["weight"]) + np.float32(0.1)
    base = run_kernel(c, use_jones=False)[2]
    r = int(np.flatnonzero((c["ant1"] != c["ant2"]) & (c["interval_idx"] == 1))[0])
    c["flag"][r, 2, 1] = True  # channel 2 -> bin 1, cross-hand only
    after = run_kernel(c, use_jones=False)[2]
    diff = base - after
    assert diff.sum() == 2 and (diff[1, :, 1, :] == 1).all(axis=-1).sum() == 1


def test_point_model_equals_broadcast_array_model():
    c = make_chunk(5)
    rng = np.random.default_rng(5)
    spec = rng.uniform(0.5, 2.0, (N_CHAN, 2)).astype(np.float32).astype(np.float64)
    c["model"][:] = 0
    c["model"][:, :, CORR_INDEX] = spec[None].astype(np.complex64)
    array_sums = run_kernel(c)
    point_sums = empty_sums()
    average_point_model(c["data"], spec, c["flag"], c["weight"], c["ant1"], c["ant2"],
                        c["interval_idx"], CHAN_BIN, CORR_INDEX, c["jones"], c["jones_flag"],
                        c["jones_time_idx"], True, *point_sums)
    for a, b in zip(array_sums, point_sums, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(point_sums[0],
                               run_reference(c, model_spec=spec)[0], rtol=1e-12, atol=1e-12)


def test_inconsistent_shapes_raise():
    c = make_chunk(6)
    with pytest.raises(ValueError, match="corr_index entries"):
        average_model(c["data"], c["model"], c["flag"], c["weight"], c["ant1"], c["ant2"],
                      c["interval_idx"], CHAN_BIN, np.array([0, 4], np.int32), c["jones"],
                      c["jones_flag"], c["jones_time_idx"], True, *empty_sums())
    vis, wt, n = (a[:, :7] for a in empty_sums())
    with pytest.raises(ValueError, match="dense baselines"):
        average_model(c["data"], c["model"], c["flag"], c["weight"], c["ant1"], c["ant2"],
                      c["interval_idx"], CHAN_BIN, CORR_INDEX, c["jones"], c["jones_flag"],
                      c["jones_time_idx"], True, vis.copy(), wt.copy(), n.copy())
    with pytest.raises(ValueError, match="model_spec must be"):
        average_point_model(c["data"], np.ones((N_CHAN, 3)), c["flag"], c["weight"],
                            c["ant1"], c["ant2"], c["interval_idx"], CHAN_BIN, CORR_INDEX,
                            c["jones"], c["jones_flag"], c["jones_time_idx"], True,
                            *empty_sums())


def test_count_unflagged_counts_cross_rows_only():
    c = make_chunk(7)
    got = count_unflagged(c["flag"], c["ant1"], c["ant2"])
    cross = c["ant1"] != c["ant2"]
    expect = np.where(cross, (~c["flag"]).reshape(len(cross), -1).sum(axis=1), 0)
    np.testing.assert_array_equal(got, expect)
    assert got.dtype == np.float64 and (got[~cross] == 0).all() and got[cross].max() > 0
    # a strided view (not C-contiguous) takes the cell-by-cell path: same counts
    sub = c["flag"][:, ::2, :]
    expect_sub = np.where(cross, (~sub).reshape(len(cross), -1).sum(axis=1), 0)
    np.testing.assert_array_equal(count_unflagged(sub, c["ant1"], c["ant2"]), expect_sub)


@pytest.mark.parametrize("use_jones", [False, True])
def test_empty_n_samples_skips_counting_only(use_jones):
    """n_samples with a first axis of length 0: the same sums, nothing counted."""
    c = make_chunk(8, spectral_weight=False, n_rec=2)
    vis, wt, n = run_kernel(c, use_jones=use_jones)
    vis2, wt2, _ = empty_sums()
    no_n = np.zeros((0, 1, 1, len(CORR_INDEX)), np.int64)
    jones, jflag = (c["jones"], c["jones_flag"]) if use_jones else (c["jones"][:0], c["jones_flag"][:0])
    spec = np.ones((N_CHAN, 2))
    c["model"][:] = 0
    c["model"][:, :, CORR_INDEX] = 1
    ref = empty_sums()
    for sums in (ref, (vis2, wt2, no_n)):
        average_point_model(c["data"], spec, c["flag"], c["weight"], c["ant1"], c["ant2"],
                            c["interval_idx"], CHAN_BIN, CORR_INDEX, jones, jflag,
                            c["jones_time_idx"], True, *sums)
    np.testing.assert_array_equal(vis2, ref[0])
    np.testing.assert_array_equal(wt2, ref[1])
    assert ref[2].sum() > 0 and no_n.size == 0
    with pytest.raises(ValueError, match="n_samples"):
        average_point_model(c["data"], spec, c["flag"], c["weight"], c["ant1"], c["ant2"],
                            c["interval_idx"], CHAN_BIN, CORR_INDEX, jones, jflag,
                            c["jones_time_idx"], True, vis2, wt2, np.zeros((1, 1, 1, 2), np.int64))


FAST_N_CHAN = 40


def _general(data, spec, flag, weight, a1, a2, interval, chan_bin, corr_index, jones, jflag,
             jt, calwt, sums, wscale):
    """The sample-by-sample loop on the same inputs (the oracle of the vectorised path)."""
    _reduce_general(data, data, spec, True, flag, weight, a1, a2, interval, chan_bin,
                    corr_index, jones, jflag, jt, calwt, *sums, wscale)


@pytest.mark.parametrize("chan_bin", [
    np.zeros(FAST_N_CHAN, np.int32),                                  # solint 'inf' gain: one bin
    np.arange(FAST_N_CHAN, dtype=np.int32),                           # bandpass: bin per channel
    np.r_[np.full(3, -1), np.repeat([0, 1], 17), np.full(3, 5)].astype(np.int32),  # wide bins
    np.zeros(1, np.int32),                                            # one channel
], ids=["one-bin", "per-channel", "wide-bins", "one-channel"])
@pytest.mark.parametrize("n_corr", [2, 4])
@pytest.mark.parametrize("jones_mode", ["none", "calwt", "no-calwt", "wscale", "chan-calwt",
                                        "chan-no-calwt", "chan-wscale"])
def test_vectorised_point_path_matches_reference(chan_bin, n_corr, jones_mode):
    """The vectorised path (point model, one weight per row, Jones absent, per row or per
    channel, bins of >= 16 channels or one per channel) gives the sums of the reference and
    of the sample-by-sample loop, including rows with NaN/Inf visibilities (flagged and not),
    zero-model channels, bad weights, flagged or zero Jones terms and rows written (q, p)."""
    rng = np.random.default_rng(11)
    n_ant, n_time, n_chan = 6, 3, chan_bin.size
    rows = [(t, p, q) for t in range(n_time) for p in range(n_ant) for q in range(p, n_ant)]
    t, a1, a2 = (np.array(x, np.int32) for x in zip(*rows, strict=True))
    swap = rng.random(t.size) < 0.4
    a1, a2 = np.where(swap, a2, a1).astype(np.int32), np.where(swap, a1, a2).astype(np.int32)
    shape = (t.size, n_chan, n_corr)
    data = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    flag = rng.random(shape) < 0.1
    data[flag & (rng.random(shape) < 0.3)] = np.inf  # non-finite flagged samples
    weight = rng.uniform(-0.3, 2.0, (t.size, 1, n_corr)).astype(np.float32)
    weight[3, 0, 0] = np.nan
    corr_index = np.array([0, n_corr - 1], np.int32)
    spec = rng.uniform(0.5, 2.0, (n_chan, 2))
    spec[min(7, n_chan - 1), 1] = 0.0
    interval = (t // 2).astype(np.int32)
    n_out = int(chan_bin.max()) + 1
    n_int = int(interval.max()) + 1
    jshape = (n_time if jones_mode != "none" else 0, n_ant,
              n_chan if jones_mode.startswith("chan") else 1, 2)
    jones = (1 + 0.3 * rng.standard_normal(jshape)
             + 0.3j * rng.standard_normal(jshape)).astype(np.complex64)
    jflag = rng.random(jshape) < 0.1
    if jones_mode != "none":
        jones[1, 2, 0, 1] = 0
    jt = t.astype(np.int32)
    jt[5] = n_time  # no calibration for this row
    wscale = (rng.uniform(0.5, 1.5, jshape).astype(np.float32)
              if jones_mode.endswith("wscale") else np.zeros((0, 1, 1, 1), np.float32))
    calwt = not jones_mode.endswith("no-calwt")

    def run(kernel_data):
        out = tuple(np.zeros((n_int, n_ant * (n_ant - 1) // 2, n_out, 2), dt)
                    for dt in (np.complex128, np.float64, np.int64))
        average_point_model(kernel_data, spec, flag, weight, a1, a2, interval, chan_bin,
                            corr_index, jones, jflag, jt, calwt, *out,
                            wscale if wscale.shape[0] else None)
        ref = tuple(np.zeros_like(a) for a in out)
        _general(kernel_data, spec, flag, weight, a1, a2, interval, chan_bin, corr_index,
                 jones, jflag, jt, calwt, ref, wscale)
        np.testing.assert_array_equal(out[2], ref[2])
        np.testing.assert_allclose(out[0], ref[0], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(out[1], ref[1], rtol=1e-12, atol=1e-12)
        return out

    sums = run(data)
    assert np.isfinite(sums[0]).all() and sums[2].sum() > 0
    if not jones_mode.endswith("wscale"):  # the independent reference has no weight scale
        model = np.zeros(shape, np.complex64)
        model[:, :, corr_index] = spec[None]
        iv_ref = interval.copy()
        if jshape[0]:
            iv_ref[5] = -1  # the row without calibration: skipped (the reference would wrap)
        rvis, rwt, rn = reduce_reference(data, model, flag, weight, a1, a2, iv_ref,
                                         chan_bin, corr_index, jones, jflag, jt, calwt,
                                         n_int, n_ant, n_out, model_spec=spec)
        np.testing.assert_array_equal(sums[2], rn)
        np.testing.assert_allclose(sums[0], rvis, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(sums[1], rwt, rtol=1e-12, atol=1e-12)
    # unflagged NaN samples are skipped, as by the sample-by-sample loop
    data[rng.random(shape) < 0.02] = np.nan
    usable = ~flag.any(axis=2) & ((a1 != a2) & (weight[:, 0, 0] > 0))[:, None]
    r_nan, c_nan = np.nonzero(usable)
    data[r_nan[::3], c_nan[::3], corr_index[0]] = np.nan  # a third of the usable samples
    assert (run(data)[2] < sums[2]).any()
