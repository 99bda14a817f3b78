"""kernels.apply.apply_rows against a per-sample NumPy reference, all correlation layouts."""

from __future__ import annotations

import numpy as np
import pytest

from fastcal.kernels.apply import MODE_CALFLAG, MODE_CALONLY, N_COUNTS, apply_rows

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
