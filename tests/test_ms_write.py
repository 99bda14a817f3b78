"""ensure_column / write_column / ChunkWriter on copies of the tiny simulated MS."""

from __future__ import annotations

import casacore.tables as ct
import dask
import numpy as np
import pytest

from fastcal.errors import ParameterError
from fastcal.ms import ChunkWriter, ensure_column, open_ms, read_chunks, write_column


@pytest.fixture
def ms(tiny_ms, copy_ms):
    return copy_ms(tiny_ms[0])


def getcol(path, column):
    """Reference read: a list of cells for array columns (shapes vary per spw), else getcol."""
    with ct.table(str(path), ack=False) as t:
        if column in ("FLAG_ROW",):
            return t.getcol(column)
        return [np.asarray(t.getcell(column, r)) for r in range(t.nrows())]


def rows_of(cells, rows):
    return np.stack([cells[r] for r in rows])


def science(path):
    info = open_ms(path)
    return info, info.spws_with_role("science")[0]


def test_ensure_column_copies_data_layout_and_values(ms):
    assert ensure_column(ms, "CORRECTED_DATA") is True
    assert ensure_column(ms, "CORRECTED_DATA") is False
    with ct.table(str(ms), ack=False) as t:
        dd, dc = t.getdminfo("DATA"), t.getdminfo("CORRECTED_DATA")
        assert dc["TYPE"] == dd["TYPE"] and dc["NAME"] != dd["NAME"]
        np.testing.assert_array_equal(
            dc["SPEC"]["DEFAULTTILESHAPE"], dd["SPEC"]["DEFAULTTILESHAPE"]
        )
        tiles_d = {
            tuple(h["CellShape"]): tuple(h["TileShape"]) for h in dd["SPEC"]["HYPERCUBES"].values()
        }
        tiles_c = {
            tuple(h["CellShape"]): tuple(h["TileShape"]) for h in dc["SPEC"]["HYPERCUBES"].values()
        }
        assert tiles_c == tiles_d
        assert t.getcoldesc("CORRECTED_DATA")["valueType"] == "complex"
    for a, b in zip(getcol(ms, "CORRECTED_DATA"), getcol(ms, "DATA"), strict=True):
        np.testing.assert_array_equal(a, b)


def test_ensure_model_and_weight_spectrum(ms):
    ensure_column(ms, "MODEL_DATA")
    ensure_column(ms, "WEIGHT_SPECTRUM")
    assert all(np.all(m == 1 + 0j) for m in getcol(ms, "MODEL_DATA"))  # XX, YY only here
    weight = getcol(ms, "WEIGHT")
    for r, ws in enumerate(getcol(ms, "WEIGHT_SPECTRUM")):
        np.testing.assert_array_equal(ws, np.broadcast_to(weight[r], ws.shape))
    info = open_ms(ms)
    assert info.has_weight_spectrum and {"MODEL_DATA", "WEIGHT_SPECTRUM"} <= info.columns
    with pytest.raises(
        ParameterError,
        match="cannot be created; valid: CORRECTED_DATA, MODEL_DATA, WEIGHT_SPECTRUM",
    ):
        ensure_column(ms, "FLAG")


@pytest.mark.parametrize("chans", [[2, 3, 4, 5, 6], [1, 5, 9, 13], [0, 3, 4, 10], [7], None])
def test_write_channel_subsets(ms, chans):
    info, sid = science(ms)
    c = read_chunks(info, ("DATA",), spw=str(sid))[1]
    nchan = info.spws[sid].num_chan
    sel = np.arange(nchan) if chans is None else np.array(chans)
    rng = np.random.default_rng(1)
    vals = (rng.normal(size=(c.n_row, sel.size, c.n_corr)) + 1j).astype(np.complex64)
    write_column(ms, "CORRECTED_DATA", c.rows, vals, channels=None if chans is None else sel)
    data, corr = getcol(ms, "DATA"), getcol(ms, "CORRECTED_DATA")
    other = np.setdiff1d(np.arange(nchan), sel)
    for k, r in enumerate(c.rows):
        np.testing.assert_array_equal(corr[r][sel], vals[k])
        np.testing.assert_array_equal(corr[r][other], data[r][other])
    untouched = np.setdiff1d(np.arange(info.n_rows), c.rows)
    assert all(np.array_equal(corr[r], data[r]) for r in untouched)


def test_unsorted_rows_land_in_the_right_place(ms):
    info, sid = science(ms)
    c = read_chunks(info, ("DATA",), spw=str(sid))[0]
    perm = np.random.default_rng(3).permutation(c.n_row)
    vals = np.arange(c.n_row, dtype=np.float32)[:, None] * np.ones((1, c.n_corr), np.float32)
    write_column(ms, "WEIGHT", c.rows[perm], vals[perm])
    np.testing.assert_array_equal(rows_of(getcol(ms, "WEIGHT"), c.rows), vals)


def test_flag_write_keeps_flag_row_consistent(ms):
    info, sid = science(ms)
    c = read_chunks(info, ("FLAG",), spw=str(sid))[0]
    rows = c.rows[:4]
    full = np.zeros((4, c.n_chan, c.n_corr), bool)
    full[:2] = True  # rows 0, 1 fully flagged
    write_column(ms, "FLAG", rows, full)
    np.testing.assert_array_equal(getcol(ms, "FLAG_ROW")[rows], [True, True, False, False])
    write_column(ms, "FLAG", rows[:1], np.zeros((1, 3, c.n_corr), bool), channels=[0, 1, 2])
    np.testing.assert_array_equal(getcol(ms, "FLAG_ROW")[rows], [False, True, False, False])
    f = getcol(ms, "FLAG")[rows[0]]
    assert not f[:3].any() and f[3:].all()


def test_expanded_weight_without_spectrum_is_channel_mean(ms):
    info, sid = science(ms)
    assert not info.has_weight_spectrum
    c = read_chunks(info, ("WEIGHT",), spw=str(sid))[0]
    w = c.arrays["WEIGHT"].compute()
    write_column(ms, "WEIGHT", c.rows, w)  # channel-constant: comes back unchanged
    np.testing.assert_array_equal(rows_of(getcol(ms, "WEIGHT"), c.rows), w[:, 0, :])
    ramp = w * np.geomspace(0.1, 10.0, c.n_chan, dtype=np.float32)[None, :, None]  # mean != median
    write_column(ms, "WEIGHT", c.rows, ramp)
    np.testing.assert_allclose(rows_of(getcol(ms, "WEIGHT"), c.rows), ramp.mean(axis=1), rtol=1e-6)
    assert "WEIGHT_SPECTRUM" not in open_ms(ms).columns


def test_expanded_weight_with_spectrum_sets_weight_to_median(ms):
    ensure_column(ms, "WEIGHT_SPECTRUM")
    info, sid = science(ms)
    c = read_chunks(info, ("WEIGHT",), spw=str(sid))[0]
    rng = np.random.default_rng(7)
    ws = rng.uniform(1, 2, size=(c.n_row, 5, c.n_corr)).astype(np.float32)
    chans = np.array([0, 2, 4, 6, 8])
    write_column(ms, "WEIGHT", c.rows, ws, channels=chans)
    spec = getcol(ms, "WEIGHT_SPECTRUM")
    weight = getcol(ms, "WEIGHT")
    for k, r in enumerate(c.rows):
        np.testing.assert_array_equal(spec[r][chans], ws[k])
        np.testing.assert_allclose(weight[r], np.median(spec[r], axis=0), rtol=1e-6)


def test_full_spectrum_weight_write_sets_weight_to_median(ms):
    ensure_column(ms, "WEIGHT_SPECTRUM")
    info, sid = science(ms)
    c = read_chunks(info, ("WEIGHT",), spw=str(sid))[1]
    ws = np.random.default_rng(8).exponential(size=(c.n_row, c.n_chan, c.n_corr)).astype(np.float32)
    write_column(ms, "WEIGHT", c.rows, ws)
    np.testing.assert_array_equal(rows_of(getcol(ms, "WEIGHT_SPECTRUM"), c.rows), ws)
    np.testing.assert_allclose(
        rows_of(getcol(ms, "WEIGHT"), c.rows), np.median(ws, axis=1), rtol=1e-6
    )
    again = read_chunks(ms, ("WEIGHT",), spw=str(sid))[1].arrays["WEIGHT"].compute()
    np.testing.assert_array_equal(again, ws)


def test_chunk_writer_while_dask_reads(ms):
    """applycal pattern: dask threads read DATA while the driver writes CORRECTED_DATA."""
    info = open_ms(ms)
    chunks = read_chunks(info, ("DATA",), max_rows=15)
    with ChunkWriter(info) as w:
        for c in chunks:
            blocks = c.arrays["DATA"].to_delayed().ravel()
            results = dask.compute(
                *[dask.delayed(np.multiply)(b, 2) for b in blocks],
                scheduler="threads",
                num_workers=2,
            )
            for i, v in enumerate(results):
                w.write_chunk(c, "CORRECTED_DATA", v, block=i)
    for a, b in zip(getcol(ms, "CORRECTED_DATA"), getcol(ms, "DATA"), strict=True):
        np.testing.assert_array_equal(a, 2 * b)


@pytest.mark.parametrize(
    "column, rows, values, kw, match",
    [
        ("CORRECTED_DATA", [0, 1, 0], np.zeros((3, 4, 1)), {}, "duplicates"),
        ("CORRECTED_DATA", [10**6], np.zeros((1, 4, 1)), {}, r"rows must be in 0\.\.{last} for"),
        (
            "CORRECTED_DATA",
            [0, 1],
            np.zeros((3, 4, 1)),
            {},
            r"values of shape \(3, 4, 1\) do not match 2 rows",
        ),
        ("CORRECTED_DATA", [0], np.zeros((1, 5, 1)), {}, r"expected \(nrow, 4, 1\)"),
        (
            "CORRECTED_DATA",
            [0],
            np.zeros((1, 2, 1)),
            {"channels": [3, 1]},
            "strictly increasing indices in 0..3",
        ),
        (
            "UVW",
            [0],
            np.zeros((1, 3)),
            {},
            "cannot be written; valid: CORRECTED_DATA, MODEL_DATA, FLAG",
        ),
        ("SIGMA", [0], np.zeros((1, 1)), {}, "cannot be written"),
    ],
)
def test_bad_writes(ms, column, rows, values, kw, match):
    info = open_ms(ms)
    wvr_row = int(
        np.flatnonzero(info.index.ddid == info.ddid_for_spw(info.spws_with_role("wvr")[0]))[0]
    )
    rows = [wvr_row if r == 0 else wvr_row + 1 if r == 1 else r for r in rows]
    match = match.replace("{last}", str(info.n_rows - 1))
    with pytest.raises(ParameterError, match=match):
        write_column(ms, column, rows, values, **kw)


def test_rows_of_two_cell_shapes_are_refused(ms):
    info = open_ms(ms)
    a = int(np.flatnonzero(info.index.ddid == info.ddid_for_spw(info.spws_with_role("wvr")[0]))[0])
    b = int(
        np.flatnonzero(info.index.ddid == info.ddid_for_spw(info.spws_with_role("science")[0]))[0]
    )
    with pytest.raises(ParameterError, match="cell shapes .* write one spw at a time"):
        write_column(ms, "FLAG", [a, b], np.zeros((2, 4, 1), bool))


def test_model_data_is_unpolarised_in_full_pol(tmp_path):
    from fastcal.simulate import SimConfig, simulate

    path = tmp_path / "fullpol.ms"
    simulate(path, config=SimConfig.tiny(seed=3, corr="XX,XY,YX,YY"))
    ensure_column(path, "MODEL_DATA")
    info = open_ms(path)
    sid = info.spws_with_role("science")[0]
    c = read_chunks(info, ("MODEL_DATA", "DATA"), spw=str(sid))[0]
    assert c.corr_types == (9, 10, 11, 12)
    m = c.arrays["MODEL_DATA"].compute()
    np.testing.assert_array_equal(m[..., [0, 3]], 1)
    np.testing.assert_array_equal(m[..., [1, 2]], 0)
    assert c.arrays["DATA"].shape == (c.n_row, info.spws[sid].num_chan, 4)
