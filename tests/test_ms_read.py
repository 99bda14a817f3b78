"""read_chunks / read_block / iter_blocks against plain per-row casacore reads."""

from __future__ import annotations

import threading
import time

import casacore.tables as ct
import dask
import numpy as np
import pytest

import fastcal.ms.read as msread
from fastcal.errors import ParameterError
from fastcal.ms import (
    ensure_column,
    iter_blocks,
    open_ms,
    parse_selection,
    read_block,
    read_chunks,
    write_column,
)


@pytest.fixture(scope="module")
def info(tiny_ms):
    return open_ms(tiny_ms[0])


def cells(path, column, rows):
    """Reference: one getcell per row."""
    with ct.table(str(path), ack=False) as t:
        return [np.asarray(t.getcell(column, int(r))) for r in rows]


def science_spw(info):
    return info.spws_with_role("science")[0]


def test_one_chunk_per_ddid_field_scan(info):
    chunks = read_chunks(info)
    idx = info.index
    keys = {(c.ddid, c.field_id, c.scan) for c in chunks}
    assert len(keys) == len(chunks)
    assert keys == set(
        zip(idx.ddid.tolist(), idx.field_id.tolist(), idx.scan.tolist(), strict=True)
    )
    np.testing.assert_array_equal(
        np.sort(np.concatenate([c.rows for c in chunks])), np.arange(info.n_rows)
    )
    for c in chunks:
        assert np.all(idx.ddid[c.rows] == c.ddid) and np.all(idx.scan[c.rows] == c.scan)
        assert np.all(np.diff(c.time) >= 0)
        np.testing.assert_array_equal(c.time, idx.time[c.rows])
        np.testing.assert_array_equal(c.antenna1, idx.antenna1[c.rows])
        assert (c.spw_id, c.pol_id) == (info.ddescs[c.ddid].spw_id, info.ddescs[c.ddid].pol_id)
        assert c.corr_types == info.pols[c.pol_id].corr_types
        np.testing.assert_array_equal(c.freq, info.spws[c.spw_id].chan_freq)
        assert c.arrays["DATA"].shape == (c.n_row, c.n_chan, c.n_corr)
        assert sum(c.row_chunks) == c.n_row
    starts = [float(c.time[0]) for c in chunks]
    assert starts == sorted(starts)


def test_values_equal_plain_reads(info, tiny_ms):
    path = tiny_ms[0]
    chunks = read_chunks(info, ("DATA", "FLAG", "WEIGHT", "UVW"))
    (computed,) = dask.compute([c.arrays for c in chunks])
    with ct.table(str(path), ack=False) as t:
        flag_row = t.getcol("FLAG_ROW")
        uvw = t.getcol("UVW")
    for c, arrs in zip(chunks, computed, strict=True):
        assert arrs["DATA"].dtype == np.complex64 and arrs["FLAG"].dtype == bool
        assert arrs["WEIGHT"].dtype == np.float32 and arrs["UVW"].dtype == np.float64
        np.testing.assert_array_equal(arrs["DATA"], np.stack(cells(path, "DATA", c.rows)))
        flags = np.stack(cells(path, "FLAG", c.rows)) | flag_row[c.rows][:, None, None]
        np.testing.assert_array_equal(arrs["FLAG"], flags)
        weight = np.stack(cells(path, "WEIGHT", c.rows))
        np.testing.assert_array_equal(
            arrs["WEIGHT"], np.broadcast_to(weight[:, None, :], arrs["WEIGHT"].shape)
        )
        np.testing.assert_array_equal(arrs["UVW"], uvw[c.rows])


@pytest.mark.parametrize("chans", ["2~9", "0~{last}^3", "0~2;5~7;12", "5", "0~{last}"])
def test_channel_selection(info, tiny_ms, chans):
    sid = science_spw(info)
    chans = chans.format(last=info.spws[sid].num_chan - 1)
    expect = parse_selection(info, spw=f"{sid}:{chans}").spw_channels[sid]
    chunks = read_chunks(info, ("DATA", "FLAG", "WEIGHT"), spw=f"{sid}:{chans}")
    assert chunks and all(c.spw_id == sid for c in chunks)
    for c in chunks[:3]:
        np.testing.assert_array_equal(c.chan, expect)
        np.testing.assert_array_equal(c.freq, info.spws[sid].chan_freq[expect])
        full = np.stack(cells(tiny_ms[0], "DATA", c.rows))
        np.testing.assert_array_equal(c.arrays["DATA"].compute(), full[:, expect])
        fl = (
            np.stack(cells(tiny_ms[0], "FLAG", c.rows))[:, expect]
            | info.index.flag_row[c.rows][:, None, None]
        )
        np.testing.assert_array_equal(c.arrays["FLAG"].compute(), fl)
        assert c.arrays["WEIGHT"].shape == (c.n_row, expect.size, c.n_corr)


@pytest.mark.parametrize(
    "kw", [dict(max_rows=7), dict(max_rows=1), dict(chunk_bytes=1), dict(chunk_bytes=4000)]
)
def test_blocks_hold_whole_timestamps(info, kw):
    for c in read_chunks(info, ("DATA", "FLAG"), **kw):
        limit = kw.get("max_rows")
        seen = set()
        for i in range(c.n_blocks):
            t = c.time[c.block_slice(i)]
            assert not seen & set(t.tolist()), "a timestamp is split over two blocks"
            seen |= set(t.tolist())
            if limit is not None and np.unique(t).size > 1:
                assert t.size <= limit
        if "chunk_bytes" in kw and kw["chunk_bytes"] == 1:
            assert c.n_blocks == np.unique(c.time).size  # one timestamp per block


def test_block_size_follows_chunk_bytes(info):
    c = next(c for c in read_chunks(info) if c.spw_id == science_spw(info))
    per_row = c.n_chan * c.n_corr * (8 + 1 + 4)
    per_time = c.n_row // np.unique(c.time).size
    c2 = next(
        x
        for x in read_chunks(info, chunk_bytes=per_row * per_time * 2)
        if x.ddid == c.ddid and x.scan == c.scan
    )
    assert max(c2.row_chunks) == 2 * per_time


def test_dask_threads_read_in_parallel(info, monkeypatch):
    """dask.compute with the threaded scheduler runs the read tasks on 2 threads at once."""
    orig = msread._read_column
    active, peak, threads = [0], [0], set()
    guard = threading.Lock()

    def spy(*args, **kw):
        with guard:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            threads.add(threading.get_ident())
        time.sleep(0.02)  # outside casacore: the other thread can run
        try:
            return orig(*args, **kw)
        finally:
            with guard:
                active[0] -= 1

    monkeypatch.setattr(msread, "_read_column", spy)
    chunks = read_chunks(info, ("DATA", "FLAG"))
    dask.compute(
        *[a for c in chunks for a in c.arrays.values()], scheduler="threads", num_workers=2
    )
    assert len(threads) == 2 and peak[0] == 2


def test_numpy_paths_match_dask(info):
    chunks = read_chunks(info, ("DATA", "FLAG", "WEIGHT"), max_rows=20)
    for c in chunks[:4]:
        lazy = {k: v.compute() for k, v in c.arrays.items()}
        eager = c.read()
        for k in lazy:
            np.testing.assert_array_equal(eager[k], lazy[k])
        blk = read_block(c, c.n_blocks - 1, ["DATA"])
        np.testing.assert_array_equal(blk["DATA"], lazy["DATA"][c.block_slice(c.n_blocks - 1)])
    n = 0
    for c, sl, arrs in iter_blocks(info, ("DATA",), spw=str(science_spw(info)), max_rows=20):
        assert arrs["DATA"].shape[0] == sl.stop - sl.start <= max(20, c.n_row)
        n += arrs["DATA"].shape[0]
    assert n == sum(c.n_row for c in read_chunks(info, ("DATA",), spw=str(science_spw(info))))


def test_weight_blocks_are_read_only_views(info):
    c = read_chunks(info, ("WEIGHT",))[0]
    w = read_block(c, 0)["WEIGHT"]
    assert not w.flags.writeable
    assert w.strides[1] == 0  # WEIGHT broadcast over channels without a copy
    with pytest.raises(ValueError, match="read-only"):
        w[0, 0, 0] = 1.0


def test_weight_from_weight_spectrum(tiny_ms, copy_ms):
    path = copy_ms(tiny_ms[0])
    info = open_ms(path)
    ensure_column(path, "WEIGHT_SPECTRUM")
    c = read_chunks(path, ("WEIGHT",), spw=str(science_spw(info)))[0]
    ws = (np.arange(c.n_row * c.n_chan * c.n_corr, dtype=np.float32) + 1).reshape(
        c.n_row, c.n_chan, c.n_corr
    )
    write_column(path, "WEIGHT_SPECTRUM", c.rows, ws)
    again = read_chunks(info, ("WEIGHT",), spw=str(science_spw(info)))[0]  # stale MSInfo on purpose
    w = again.arrays["WEIGHT"].compute()
    np.testing.assert_array_equal(w, ws)


def test_column_created_after_open_ms_is_readable(tiny_ms, copy_ms):
    path = copy_ms(tiny_ms[0])
    info = open_ms(path)
    assert "CORRECTED_DATA" not in info.columns
    ensure_column(path, "CORRECTED_DATA")
    c = read_chunks(info, ("CORRECTED_DATA", "DATA"))[3]
    np.testing.assert_array_equal(c.arrays["CORRECTED_DATA"].compute(), c.arrays["DATA"].compute())


def test_flag_row_is_merged_and_refreshed(tiny_ms, copy_ms):
    path = copy_ms(tiny_ms[0])
    info = open_ms(path)
    c = read_chunks(info, ("FLAG",))[2]
    before = c.arrays["FLAG"].compute()
    pick = c.rows[[0, 3]]
    write_column(path, "FLAG_ROW", pick, np.ones(2, bool))
    after = read_chunks(info, ("FLAG",))[2].arrays["FLAG"].compute()  # info predates the write
    assert after[[0, 3]].all()
    np.testing.assert_array_equal(
        np.delete(after, [0, 3], axis=0), np.delete(before, [0, 3], axis=0)
    )


def test_include_autocorr(info):
    chunks = read_chunks(info, ("FLAG",), include_autocorr=False)
    assert all(np.all(c.antenna1 != c.antenna2) for c in chunks)
    n_auto = int(np.sum(info.index.antenna1 == info.index.antenna2))
    assert sum(c.n_row for c in chunks) == info.n_rows - n_auto


def test_selection_object_and_strings_agree(info):
    sel = parse_selection(
        info, field="1", intent="CALIBRATE_PHASE*", spw=f"{science_spw(info)}:1~4"
    )
    a = read_chunks(info, ("DATA",), selection=sel)
    b = read_chunks(
        info, ("DATA",), field="1", intent="CALIBRATE_PHASE*", spw=f"{science_spw(info)}:1~4"
    )
    assert [x.rows.tolist() for x in a] == [y.rows.tolist() for y in b]
    assert all(x.field_id == 1 and x.n_chan == 4 for x in a)


def test_weight_broadcast_keeps_each_correlation(tiny_ms, copy_ms):
    path = copy_ms(tiny_ms[0])
    c = read_chunks(path, ("WEIGHT",), spw=str(science_spw(open_ms(path))))[0]
    w = np.stack([np.arange(c.n_row), 1000 + np.arange(c.n_row)], axis=1).astype(np.float32)
    write_column(path, "WEIGHT", c.rows, w)
    got = read_chunks(path, ("WEIGHT",), spw=str(c.spw_id))[0].arrays["WEIGHT"].compute()
    np.testing.assert_array_equal(got, np.broadcast_to(w[:, None, :], got.shape))


def test_chunk_passed_to_dask_delayed_reads_only_what_is_asked(info, monkeypatch):
    """The recommended driver pattern: one delayed task per block calling read_block."""
    calls = []
    orig = msread._read_column

    def spy(handle, column, *args):
        calls.append(column)
        return orig(handle, column, *args)

    monkeypatch.setattr(msread, "_read_column", spy)
    chunks = read_chunks(info, ("DATA", "FLAG", "WEIGHT"), max_rows=30)
    tasks = [
        dask.delayed(lambda c, i: read_block(c, i, ["data"])["DATA"].shape[0])(c, i)
        for c in chunks
        for i in range(c.n_blocks)
    ]
    assert sum(dask.compute(*tasks, scheduler="threads")) == info.n_rows
    assert calls == ["DATA"] * sum(c.n_blocks for c in chunks)
    with pytest.raises(ParameterError, match="made for DATA, FLAG, WEIGHT only"):
        read_block(chunks[0], 0, ["UVW"])


@pytest.mark.parametrize("max_loop_runs", [0, 10**6])  # NumPy gather / slices per run
@pytest.mark.parametrize("layout", ["by_group", "interleaved", "shuffled"])
def test_group_rows_matches_naive_grouping(layout, max_loop_runs, monkeypatch):
    """Grouping through the precomputed runs equals a per-key sort by (time, row)."""
    from types import SimpleNamespace

    from fastcal.ms.info import IndexColumns

    monkeypatch.setattr(msread, "_MAX_LOOP_RUNS", max_loop_runs)
    rng = np.random.default_rng(7)
    n_time, n_bl, n_dd = 12, 6, 3
    t = np.repeat(np.arange(n_time) * 10.0, n_bl * n_dd)
    dd = np.tile(np.repeat(np.arange(n_dd), n_bl), n_time)
    scan = (t // 40).astype(np.int32)
    if layout == "by_group":  # each (ddid, scan) written contiguously
        order = np.lexsort((t, dd, scan))
    elif layout == "interleaved":  # time-major, spws interleaved in every integration
        order = np.arange(t.size)
    else:
        order = rng.permutation(t.size)
    n = t.size
    z = np.zeros(n, np.int32)
    idx = IndexColumns(
        time=t[order], antenna1=z, antenna2=z, ddid=dd[order].astype(np.int32),
        field_id=z, scan=scan[order], state_id=z, observation_id=z, flag_row=z.astype(bool),
    )  # fmt: skip
    info = SimpleNamespace(index=idx)
    for rows in (np.arange(n), np.sort(rng.choice(n, n // 3, replace=False))):
        got = msread._group_rows(info, rows.astype(np.int64))
        keys = sorted({(int(idx.ddid[r]), int(idx.scan[r])) for r in rows})
        assert len(got) == len(keys)
        for (grows, contiguous), (d, s) in zip(got, keys, strict=True):
            want = [r for r in rows if idx.ddid[r] == d and idx.scan[r] == s]
            want.sort(key=lambda r: (idx.time[r], r))
            assert grows.tolist() == want
            assert contiguous == (want == list(range(want[0], want[-1] + 1)))
