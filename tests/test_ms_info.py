"""open_ms / MSInfo on the tiny simulated MS, checked against plain casacore reads."""

from __future__ import annotations

import time

import casacore.tables as ct
import numpy as np
import pytest

from fastcal.ms import (
    PolInfo,
    ensure_column,
    format_mjd_s,
    open_ms,
    read_chunks,
    require_parallel_hands,
    write_column,
)
from fastcal.ms.info import INDEX_CACHE_ENV, REQUIRED_COLUMNS, clear_cache, disk_signature


@pytest.fixture(scope="module")
def info(tiny_ms):
    return open_ms(tiny_ms[0])


@pytest.fixture(scope="module")
def main_cols(tiny_ms):
    with ct.table(str(tiny_ms[0]), ack=False) as t:
        return {
            c: t.getcol(c)
            for c in (
                "TIME",
                "ANTENNA1",
                "ANTENNA2",
                "DATA_DESC_ID",
                "FIELD_ID",
                "SCAN_NUMBER",
                "STATE_ID",
                "OBSERVATION_ID",
            )
        }


def test_subtables_match_truth(info, tiny_ms):
    _, truth = tiny_ms
    assert info.antenna_names == tuple(truth.antenna_names)
    assert info.field_names == tuple(truth.field_names)
    assert info.telescope_name == "ALMA"
    assert info.has_syscal and not info.has_weight_spectrum
    for spw in info.spws:
        assert spw.chan_freq.shape == spw.chan_width.shape == (spw.num_chan,)
        assert np.all(np.diff(spw.chan_freq) * spw.net_sideband >= 0) or spw.net_sideband == 0
    for a in info.antennas:
        assert a.position.shape == (3,) and 6.3e6 < np.linalg.norm(a.position) < 6.4e6


def test_index_columns_equal_getcol(info, main_cols):
    idx = info.index
    pairs = [
        ("time", "TIME"),
        ("antenna1", "ANTENNA1"),
        ("antenna2", "ANTENNA2"),
        ("ddid", "DATA_DESC_ID"),
        ("field_id", "FIELD_ID"),
        ("scan", "SCAN_NUMBER"),
        ("state_id", "STATE_ID"),
        ("observation_id", "OBSERVATION_ID"),
    ]
    for attr, col in pairs:
        np.testing.assert_array_equal(getattr(idx, attr), main_cols[col])
    assert not idx.time.flags.writeable
    assert info.n_rows == main_cols["TIME"].size
    assert info.time_range == (main_cols["TIME"].min(), main_cols["TIME"].max())


def test_scans_match_naive_reference(info, main_cols):
    """The vectorised scan table equals a per-scan Python loop over the index columns."""
    scan, obs = main_cols["SCAN_NUMBER"], main_cols["OBSERVATION_ID"]
    assert sum(s.n_rows for s in info.scans) == info.n_rows
    assert len(info.scans) == len(set(zip(obs.tolist(), scan.tolist(), strict=True)))
    for s in info.scans:
        m = (scan == s.number) & (obs == s.observation_id)
        assert s.n_rows == m.sum()
        assert s.field_ids == tuple(np.unique(main_cols["FIELD_ID"][m]))
        assert s.state_ids == tuple(np.unique(main_cols["STATE_ID"][m]))
        assert s.ddids == tuple(np.unique(main_cols["DATA_DESC_ID"][m]))
        assert s.spw_ids == tuple(sorted({info.ddescs[d].spw_id for d in s.ddids}))
        assert (s.start, s.end) == (main_cols["TIME"][m].min(), main_cols["TIME"][m].max())
        tokens = {tok for st in s.state_ids for tok in info.states[st].intents}
        assert set(s.intents) == tokens
    starts = [s.start for s in info.scans]
    assert starts == sorted(starts)


def test_spw_roles(info, tiny_ms):
    _, truth = tiny_ms
    roles = info.spw_roles
    assert roles[truth.wvr_spw_id] == "wvr"
    assert info.spws[truth.wvr_spw_id].num_chan == 4
    atm = set(info.scans_with_intent("CALIBRATE_ATMOSPHERE*"))
    for spw_id, role in roles.items():
        used = [s for s in info.scans if spw_id in s.spw_ids]
        if role == "tsys":
            assert used and all(s.number in atm for s in used)
        if role == "science":
            assert any(s.number not in atm for s in used)
    assert len(info.spws_with_role("science")) == truth.config.n_spw
    assert info.spws_with_role("tsys")


def test_lookups(info):
    f = info.fields[1]
    assert info.field_ids(f.name) == (f.id,)
    assert f.id in info.field_ids(f.name[:3] + "*")
    assert info.field_ids("no-such-field") == ()
    a = info.antennas[2]
    assert info.antenna_id(a.name) == a.id
    with pytest.raises(KeyError, match="valid: " + info.antennas[0].name):
        info.antenna_id("XX99")
    for d in info.ddescs:
        assert d.id in info.ddids_for_spw(d.spw_id)
        assert info.ddescs[info.ddid_for_spw(d.spw_id)].spw_id == d.spw_id
    assert info.ddid_for_spw(len(info.spws) + 5) == -1
    bp = info.scans_with_intent("*BANDPASS*")
    assert bp and all(any("BANDPASS" in i for i in s.intents) for s in info.scans if s.number in bp)


def test_summary_lists_everything(info):
    text = info.summary()
    assert str(info) == text
    for name in info.field_names + info.antenna_names:
        assert name in text
    for s in info.scans:
        assert any(
            line.split()[:1] == [str(s.number)] and ",".join(s.intents) in line
            for line in text.splitlines()
        )
    for spw in info.spws:
        assert spw.name in text
    assert format_mjd_s(info.time_range[0]) in text


def test_open_ms_reads_only_metadata(tiny_ms, monkeypatch):
    """open_ms reads the scalar index columns (and FLAG_ROW) of the main table, nothing else."""
    read: list[tuple[str, str]] = []
    for meth in ("getcol", "getcolnp", "getcell", "getcolslice", "getvarcol"):
        orig = getattr(ct.table, meth)

        def spy(self, column, *args, _orig=orig, **kw):
            read.append((self.name(), column))
            return _orig(self, column, *args, **kw)

        monkeypatch.setattr(ct.table, meth, spy)
    open_ms(tiny_ms[0])
    main = str(tiny_ms[0].resolve()) if hasattr(tiny_ms[0], "resolve") else str(tiny_ms[0])
    main_cols = {c for t, c in read if t.rstrip("/") == main.rstrip("/")}
    assert main_cols and main_cols <= set(REQUIRED_COLUMNS) - {"FLAG", "WEIGHT"}


def test_open_ms_passes_msinfo_through(info):
    assert open_ms(info) is info


def test_require_parallel_hands(info):
    dual = next(p for p in info.pols if p.num_corr == 2)
    assert dual.corr_names == ("XX", "YY") and dual.basis == "linear"
    assert require_parallel_hands(dual) == (0, 1)
    assert require_parallel_hands(PolInfo(0, (9, 10, 11, 12), ("XX", "XY", "YX", "YY"))) == (0, 3)
    assert require_parallel_hands(PolInfo(0, (5, 8), ("RR", "LL"))) == (0, 1)


@pytest.mark.parametrize(
    "mjd_s, text",
    [
        (0.0, "1858/11/17/00:00:00.0"),
        (51544.5 * 86400.0, "2000/01/01/12:00:00.0"),
        (51544.5 * 86400.0 + 59.96, "2000/01/01/12:01:00.0"),
    ],
)
def test_format_mjd_s(mjd_s, text):
    assert format_mjd_s(mjd_s) == text
    assert format_mjd_s(mjd_s, date=False) == text.split("/")[-1]


# ---- in-process cache of open_ms


def _spy_main_reads(monkeypatch, path) -> list[str]:
    """Columns of the main table at `path` read through casacore from now on."""
    read: list[str] = []
    main = str(path).rstrip("/")
    for meth in ("getcol", "getcolnp", "getcell", "getcolslice", "getvarcol"):
        orig = getattr(ct.table, meth)

        def spy(self, column, *args, _orig=orig, **kw):
            if self.name().rstrip("/") == main:
                read.append(column)
            return _orig(self, column, *args, **kw)

        monkeypatch.setattr(ct.table, meth, spy)
    return read


def test_open_ms_again_rereads_only_flag_row(tiny_ms, copy_ms, monkeypatch):
    path = copy_ms(tiny_ms[0])
    first = open_ms(path)
    read = _spy_main_reads(monkeypatch, path)
    again = open_ms(path)
    assert read == ["FLAG_ROW"]
    assert again.scans == first.scans and again.spws is first.spws
    np.testing.assert_array_equal(again.index.time, first.index.time)
    clear_cache()
    open_ms(path)
    assert {"TIME", "SCAN_NUMBER"} <= set(read)


def test_open_ms_sees_writes_after_caching(tiny_ms, copy_ms, monkeypatch):
    path = copy_ms(tiny_ms[0])
    info = open_ms(path)
    rows = np.flatnonzero(~info.index.flag_row)[:3]
    write_column(path, "FLAG_ROW", rows, np.ones(rows.size, bool))
    assert open_ms(path).index.flag_row[rows].all()
    time.sleep(0.05)  # the cache compares file modification times
    with ct.table(str(path), readonly=False, ack=False) as t:  # a writer outside fastcal
        t.putcol("TIME", t.getcol("TIME") + 10.0)
    with ct.table(str(path / "FIELD"), readonly=False, ack=False) as t:
        t.putcell("NAME", 0, "RENAMED")
    again = open_ms(path)
    np.testing.assert_array_equal(again.index.time, info.index.time + 10.0)
    assert again.fields[0].name == "RENAMED"


def test_open_ms_cache_survives_visibility_writes(tiny_ms, copy_ms, monkeypatch):
    path = copy_ms(tiny_ms[0])
    open_ms(path)
    ensure_column(path, "CORRECTED_DATA")
    info = open_ms(path)  # new column: table.dat changed, read again
    assert "CORRECTED_DATA" in info.columns
    read = _spy_main_reads(monkeypatch, path)
    c = read_chunks(info, ("DATA", "FLAG"))[0]
    write_column(path, "CORRECTED_DATA", c.rows, np.zeros((c.n_row, c.n_chan, c.n_corr)))
    read.clear()
    again = open_ms(path)
    assert read == ["FLAG_ROW"]
    assert again.signature == disk_signature(path)  # read_chunks need not re-read FLAG_ROW
    flags = c.read(["FLAG"])["FLAG"]
    keep = (~flags).sum(axis=(1, 2)) >= 2  # rows that stay partly unflagged
    flags[:, 0, 0] = True  # one more flag per row: FLAG_ROW does not change
    write_column(path, "FLAG", c.rows[keep], flags[keep])
    read.clear()
    assert open_ms(path).index.flag_row.sum() == again.index.flag_row.sum()
    assert read == ["FLAG_ROW"]


def test_disk_index_cache_serves_a_new_process(tiny_ms, copy_ms, tmp_path, monkeypatch):
    """With FASTCAL_INDEX_CACHE set, a first open_ms (in-process cache empty) reads only
    FLAG_ROW from the MS when the saved index still matches its files."""
    path = copy_ms(tiny_ms[0])
    monkeypatch.setenv(INDEX_CACHE_ENV, str(tmp_path / "index"))
    first = open_ms(path)
    assert len(list((tmp_path / "index").glob("*.npz"))) == 1
    clear_cache()  # as in a new process
    read = _spy_main_reads(monkeypatch, path)
    again = open_ms(path)
    assert read == ["FLAG_ROW"]
    for name in ("time", "antenna1", "ddid", "scan", "state_id", "flag_row"):
        np.testing.assert_array_equal(getattr(again.index, name), getattr(first.index, name))
    assert again.scans == first.scans
    time.sleep(0.05)  # the key holds file modification times
    with ct.table(str(path), readonly=False, ack=False) as t:
        t.putcol("SCAN_NUMBER", t.getcol("SCAN_NUMBER") + 100)
    clear_cache()
    read.clear()
    changed = open_ms(path)
    assert "SCAN_NUMBER" in read  # stale copy ignored, the MS read again
    assert [s.number for s in changed.scans] == [s.number + 100 for s in first.scans]


def test_disk_index_cache_problems_never_fail_open_ms(tiny_ms, copy_ms, tmp_path, monkeypatch):
    path = copy_ms(tiny_ms[0])
    folder = tmp_path / "index"
    monkeypatch.setenv(INDEX_CACHE_ENV, str(folder))
    open_ms(path)
    (cache_file,) = folder.glob("*.npz")
    cache_file.write_bytes(b"not an npz")
    clear_cache()
    assert open_ms(path).n_rows > 0  # a corrupt copy is ignored, then replaced
    clear_cache()
    read = _spy_main_reads(monkeypatch, path)
    open_ms(path)
    assert read == ["FLAG_ROW"]
    monkeypatch.setenv(INDEX_CACHE_ENV, str(tmp_path / "a-file"))
    (tmp_path / "a-file").write_text("x")  # not a directory: nothing is written
    clear_cache()
    assert open_ms(path).n_rows > 0
