"""The reference kernel apply_rows (tests/kernels/apply_rows_reference.py) against a
per-sample NumPy reference, all correlation layouts; kernels.apply.correct_block (Jones
product + correction in one call) against apply_rows."""

from __future__ import annotations

import numpy as np
import pytest

from fastcal.kernels.apply import (
    MODE_CALFLAG,
    MODE_CALONLY,
    MODE_FLAGONLY,
    N_COUNTS,
    correct_block,
)
from kernels.apply_rows_reference import apply_rows

LAYOUTS = {
    "XX,YY": np.array([[0, 0], [1, 1]], np.int64),
    "XX,XY,YX,YY": np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.int64),
}


def _problem(rng, corr_rec, n_chan=5, n_ant=4, n_utime=3, n_jchan=5):
    n_corr = corr_rec.shape[0]
    p, q = np.triu_indices(n_ant, 1)
    n_bl = p.size
    rows = n_bl * n_utime
    ant1 = np.tile(p, n_utime).astype(np.int32)
    ant2 = np.tile(q, n_utime).astype(np.int32)
    tidx = np.repeat(np.arange(n_utime), n_bl).astype(np.int64)
    shape = (rows, n_chan, n_corr)
    data = (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)
    flag = rng.random(shape) < 0.1
    weight = rng.uniform(0.5, 2.0, (rows, 1, n_corr)).astype(np.float32)
    jshape = (n_utime, n_ant, n_jchan, 2)
    jones = (rng.uniform(0.5, 1.5, jshape) * np.exp(1j * rng.uniform(-3, 3, jshape))).astype(np.complex64)
    jflag = rng.random(jshape) < 0.1
    jones[0, 2, 1, 1] = 0.0  # a zero solution counts as flagged
    wscale = (np.abs(jones) ** 2).astype(np.float32)
    wscale_w = wscale.mean(axis=2, keepdims=True).astype(np.float32)
    return data, flag, weight, ant1, ant2, tidx, jones, jflag, wscale, wscale_w


def _reference(data, flag, weight, ant1, ant2, tidx, jones, jflag, wscale_w, corr_rec, mode):
    out = data.astype(np.complex128).copy()
    oflag = flag.copy()
    ow = weight.astype(np.float64).copy()
    rows, n_chan, n_corr = data.shape
    n_jchan = jones.shape[2]
    for r in range(rows):
        t, p, q = tidx[r], ant1[r], ant2[r]
        for k in range(n_corr):
            a, b = corr_rec[k]
            ow[r, 0, k] *= wscale_w[t, p, 0, a] * wscale_w[t, q, 0, b]
            for c in range(n_chan):
                cj = c if n_jchan > 1 else 0
                jp, jq = complex(jones[t, p, cj, a]), complex(jones[t, q, cj, b])
                bad_p = jflag[t, p, cj, a] or jp == 0
                bad_q = jflag[t, q, cj, b] or jq == 0
                # a flagged element already holds the product of the table's unflagged terms
                # (chunk_jones, CASA's setMatByOk) and is divided out; a zero one counts as 1
                out[r, c, k] /= (jp if jp != 0 else 1) * np.conj(jq if jq != 0 else 1)
                if mode == MODE_CALFLAG and (bad_p or bad_q):
                    oflag[r, c, k] = True
    return out, oflag, ow


@pytest.mark.parametrize("mode", [MODE_CALFLAG, MODE_CALONLY])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_apply_rows_matches_reference(layout, mode):
    rng = np.random.default_rng(7)
    corr_rec = LAYOUTS[layout]
    data, flag, weight, a1, a2, tidx, jones, jflag, ws, wsw = _problem(rng, corr_rec)
    out_d = np.empty_like(data)
    out_f = np.empty_like(flag)
    out_w = np.empty_like(weight)
    counts = np.zeros(N_COUNTS, np.int64)
    apply_rows(data, flag, weight, a1, a2, tidx, jones, jflag, ws, wsw, corr_rec, mode, True,
               out_d, out_f, out_w, counts)
    ref_d, ref_f, ref_w = _reference(data, flag, weight, a1, a2, tidx, jones, jflag, wsw,
                                     corr_rec, mode)
    np.testing.assert_allclose(out_d, ref_d, rtol=2e-6, atol=1e-6)
    np.testing.assert_array_equal(out_f, ref_f)
    np.testing.assert_allclose(out_w, ref_w, rtol=1e-6)
    assert counts[0] == data.size
    assert counts[1] == np.count_nonzero(flag)
    if mode == MODE_CALFLAG:
        assert counts[2] == np.count_nonzero(ref_f & ~flag)


# --------------------------------------------------------------------------- correct_block


def _terms(rng, n_utime, n_ant, n_chan):
    """A per-time single-channel term (G-like, antenna 1 of time 0 flagged, one zero) and a
    one-time channelised term (B-like, one flagged channel) with its mean weight scale."""
    g = rng.uniform(0.5, 1.5, (n_utime, n_ant, 1, 2)) * np.exp(
        1j * rng.uniform(-3, 3, (n_utime, n_ant, 1, 2))
    )
    gf = np.zeros(g.shape, bool)
    gf[0, 1] = True
    g[1, 3, 0, 0] = 0.0
    b = rng.uniform(0.8, 1.2, (1, n_ant, n_chan, 2)) * np.exp(
        1j * rng.uniform(-1, 1, (1, n_ant, n_chan, 2))
    )
    bf = np.zeros(b.shape, bool)
    bf[0, 2, 1, 1] = True
    bm = rng.uniform(0.9, 1.1, (1, n_ant, 1, 2))
    return g, gf, b, bf, bm


def _combined(g, gf, b, bf, bm, n_utime):
    """The product of the two terms by fastcal.interp.chunk_jones's rules (NumPy)."""
    jones = np.ones(np.broadcast_shapes(g.shape, b.shape), np.complex64)
    jflag = np.zeros(jones.shape, bool)
    wmean = np.ones((n_utime, g.shape[1], 1, 2), np.float32)
    for j, f, mws in ((g, gf, None), (b, bf, bm)):
        f = f | (j == 0)
        jones *= np.where(f, np.complex64(1.0), j)
        jflag |= f
        if mws is None:
            mws = np.where(f, 1.0, np.abs(j) ** 2)
        wmean *= np.where(f.all(axis=2, keepdims=True), 1.0, mws)
    return jones, jflag, wmean


@pytest.mark.parametrize("mode", [MODE_CALFLAG, MODE_CALONLY, MODE_FLAGONLY])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_correct_block_equals_jones_product_and_apply_rows(layout, mode):
    rng = np.random.default_rng(11)
    corr_rec = LAYOUTS[layout]
    n_chan, n_ant, n_utime = 6, 5, 3
    data, flag, _, a1, a2, tidx, *_ = _problem(
        rng, corr_rec, n_chan=n_chan, n_ant=n_ant, n_utime=n_utime, n_jchan=n_chan
    )
    n_row, n_corr = data.shape[0], corr_rec.shape[0]
    flag_row = np.zeros(n_row, bool)
    flag_row[[2, 5]] = True  # FLAG_ROW set over partial FLAG: folded into the flags
    flag[7] = True  # every flag set but FLAG_ROW not: FLAG_ROW becomes True
    sigma = rng.uniform(0.5, 2.0, (n_row, 1, n_corr)).astype(np.float32)
    sigma[4, 0, 0] = 0.0  # weight 0
    g, gf, b, bf, bm = _terms(rng, n_utime, n_ant, n_chan)
    jones, jflag, wmean = _combined(g, gf, b, bf, bm, n_utime)

    # reference: the (separately tested) apply_rows on FLAG | FLAG_ROW and 1/SIGMA^2
    with np.errstate(divide="ignore"):
        w0 = np.where(sigma > 0, 1 / np.square(sigma, dtype=np.float32), 0).astype(np.float32)
    fin = flag | flag_row[:, None, None]
    ref_d, ref_f, ref_w = np.empty_like(data), np.empty_like(flag), np.empty_like(w0)
    ref_counts = np.zeros(N_COUNTS, np.int64)
    ws = np.ones((1, 1, 1, 2), np.float32)
    apply_rows(data, fin, w0, a1, a2, tidx, jones, jflag, ws, wmean, corr_rec, mode, True,
               ref_d, ref_f, ref_w, ref_counts)  # fmt: skip

    d, f, w = data.copy(), flag.copy(), sigma.copy()
    row_flagged = np.empty(n_row, bool)
    counts = np.zeros(N_COUNTS, np.int64)
    n_changed = correct_block(
        d, f, flag_row, w, a1, a2, tidx, n_utime, n_ant, (g, b), (gf, bf),
        (np.empty((0, 1, 1, 2)), bm), np.array([1, 1], np.int8), corr_rec, mode, True, True,
        row_flagged, counts,
    )  # fmt: skip
    if mode != MODE_FLAGONLY:
        np.testing.assert_array_equal(d, ref_d)
    np.testing.assert_array_equal(f, ref_f)
    np.testing.assert_array_equal(w, ref_w)
    np.testing.assert_array_equal(counts, ref_counts)
    assert n_changed == np.count_nonzero(f != flag) > 0
    np.testing.assert_array_equal(row_flagged, f.reshape(n_row, -1).all(axis=1))
    assert row_flagged[[2, 5, 7]].all()
    assert ref_w[4, 0, 0] == 0.0


def test_correct_block_unchanged_flags_report_zero_changes():
    rng = np.random.default_rng(3)
    corr_rec = LAYOUTS["XX,YY"]
    data, flag, _, a1, a2, tidx, *_ = _problem(rng, corr_rec, n_chan=4, n_ant=4, n_utime=2)
    g = np.ones((2, 4, 1, 2), complex)
    f = flag.copy()
    counts = np.zeros(N_COUNTS, np.int64)
    n_changed = correct_block(
        data.copy(), f, np.zeros(len(f), bool), np.ones((len(f), 1, 2), np.float32), a1, a2,
        tidx, 2, 4, (g,), (np.zeros(g.shape, bool),), (np.empty((0, 1, 1, 2)),),
        np.array([0], np.int8), corr_rec, MODE_CALFLAG, False, False, np.empty(len(f), bool), counts,
    )  # fmt: skip
    assert n_changed == 0
    np.testing.assert_array_equal(f, flag)
    assert counts[1] == np.count_nonzero(flag) and counts[2] == 0
