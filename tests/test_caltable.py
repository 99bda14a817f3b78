"""fastcal.caltable: loopback, on-disk layout against CASA 6.7's (reference Appendix A),
SPECTRAL_WINDOW rewrite, atomic writes and error messages."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import casacore.tables as ct
import numpy as np
import pytest

from fastcal import caltable
from fastcal.caltable import (
    DEFAULT_CASA_VERSION,
    SUPPORTED_TYPES,
    CalTable,
    as_caltable,
    read_caltable,
)
from fastcal.errors import CalTableError, ParameterError

TYPES = list(SUPPORTED_TYPES)


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def ms_spws(ms) -> dict[str, np.ndarray]:
    """NUM_CHAN, CHAN_FREQ, CHAN_WIDTH per spw of an MS (lists of arrays)."""
    with ct.table(f"{ms}/SPECTRAL_WINDOW", ack=False) as t:
        return {
            "nchan": t.getcol("NUM_CHAN"),
            "freq": [t.getcell("CHAN_FREQ", i) for i in range(t.nrows())],
            "width": [t.getcell("CHAN_WIDTH", i) for i in range(t.nrows())],
        }


def n_antennas(ms) -> int:
    with ct.table(f"{ms}/ANTENNA", ack=False) as t:
        return t.nrows()


def channelised_spws(ms) -> list[int]:
    """Spws with more than 4 channels (science / Tsys windows, not WVR), widest last."""
    nchan = ms_spws(ms)["nchan"]
    return [int(s) for s in np.argsort(nchan, kind="stable") if nchan[s] > 4]


def complex_values(rng, shape):
    amp = 1 + 0.1 * rng.standard_normal(shape)
    return (amp * np.exp(1j * rng.uniform(-np.pi, np.pi, shape))).astype(np.complex64)


def make_table(vis_cal: str, ms, seed: int = 42) -> CalTable:
    """A table of type `vis_cal` on `ms` with random values, flags, errors, and refants."""
    rng = np.random.default_rng(seed)
    n_ant = n_antennas(ms)
    spws = channelised_spws(ms)
    info = ms_spws(ms)
    t0 = 5.2e9
    kw: dict = {}
    if vis_cal in ("G Jones", "T Jones"):
        npar = 2 if vis_cal == "G Jones" else 1
        use = spws[:2]
        params = {s: complex_values(rng, (3, n_ant, 1, npar)) for s in use}
        times = {s: t0 + np.array([0.0, 30.0, 60.0]) + s for s in use}
        if vis_cal == "G Jones":
            kw.update(refant={s: 1 for s in use}, scan=np.array([1, 2, 3]), field_id=0,
                      paramerr={s: rng.uniform(0.001, 0.01, params[s].shape) for s in use})
        else:  # as wvrgcal writes it
            kw.update(refant=-1, scan=-1, snr={s: np.full(params[s].shape, 3.0) for s in use})
    elif vis_cal == "B Jones":
        s_full, s_avg = spws[0], spws[1]
        n_full, n_avg = info["nchan"][s_full], info["nchan"][s_avg] // 2
        params = {s_full: complex_values(rng, (1, n_ant, n_full, 2)),
                  s_avg: complex_values(rng, (1, n_ant, n_avg, 2))}
        f = info["freq"][s_avg]
        w = info["width"][s_avg]
        times = t0 + 57.0
        kw.update(refant=0, paramerr={s: rng.uniform(0.01, 0.02, p.shape)
                                      for s, p in params.items()},
                  chan_freq={s_avg: f[: 2 * n_avg].reshape(-1, 2).mean(axis=1)},
                  chan_width={s_avg: w[: 2 * n_avg].reshape(-1, 2).sum(axis=1)})
    elif vis_cal in ("K Jones", "KMBD Jones"):
        use = spws[:2] if vis_cal == "K Jones" else spws[:1]
        params = {s: rng.normal(0, 0.3, (1, n_ant, 1, 2)).astype(np.float32) for s in use}
        times = t0 + 20.0
        kw.update(refant=2, paramerr={s: np.zeros(p.shape) for s, p in params.items()})
    elif vis_cal == "KAntPos Jones":
        params = {0: rng.normal(0, 1e-3, (1, n_ant, 1, 3)).astype(np.float32)}
        times = np.array([0.0])
        kw.update(field_id=-1, scan=-1, snr={0: np.ones((1, n_ant, 1, 3))})
    elif vis_cal == "B TSYS":
        use = spws[-1:]
        nchan = info["nchan"][use[0]]
        params = {s: rng.uniform(50, 150, (2, n_ant, nchan, 2)).astype(np.float32)
                  for s in use}
        times = t0 + np.array([10.0, 500.0])
        kw.update(interval=np.array([6.0, 6.0]), scan=np.array([2, 7]),
                  paramerr={s: np.full(p.shape, 0.1) for s, p in params.items()},
                  snr={s: np.ones(p.shape) for s, p in params.items()})
    else:  # pragma: no cover - TYPES only holds the above
        raise AssertionError(vis_cal)
    flags = {s: rng.random(p.shape) < 0.1 for s, p in params.items()}
    return CalTable.from_solutions(vis_cal, params, times=times, ms=ms, flag=flags, **kw)


@pytest.fixture
def ms(tiny_ms):
    return str(tiny_ms[0])


# --------------------------------------------------------------------------------------
# loopback
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("vis_cal", TYPES)
def test_write_read_roundtrip_equal(vis_cal, ms, tmp_path):
    tab = make_table(vis_cal, ms)
    path = tab.write(tmp_path / "x.cal")
    back = read_caltable(path)
    assert back.differences(tab) == []
    assert back == tab
    assert back.path == str(tmp_path / "x.cal")
    # the dense view returns what was given
    for spw in tab.spw_ids:
        a, b = tab.solutions(int(spw)), back.solutions(int(spw))
        for name in ("params", "paramerr", "snr", "flag", "refant", "time", "scan"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


@pytest.mark.parametrize("vis_cal", ["G Jones", "B Jones", "B TSYS"])
def test_read_table_rewritten_elsewhere_without_source(vis_cal, ms, tmp_path):
    """A table read from disk carries its subtables: it can be rewritten after the original
    is gone, and the copy has the same rows and subtables."""
    first = make_table(vis_cal, ms).write(tmp_path / "a.cal")
    tab = read_caltable(first)
    shutil.rmtree(first)
    second = tab.write(tmp_path / "b.cal")
    again = read_caltable(second)
    assert again == tab
    for name in caltable.SUBTABLE_NAMES:
        with ct.table(f"{second}/{name}", ack=False) as t, \
                ct.table(f"{ms}/{name}", ack=False) as m:
            expected = 0 if name == "HISTORY" else m.nrows()
            assert t.nrows() == expected, name


def test_from_solutions_values_and_missing_antennas(ms, tmp_path):
    rng = np.random.default_rng(1)
    n_ant = n_antennas(ms)
    spw = channelised_spws(ms)[0]
    present = np.array([0, 2, 3])
    g = complex_values(rng, (2, len(present), 1, 2))
    g[1, 1, 0, 0] = np.nan  # a failed solution
    err = np.full(g.shape, 0.01)
    tab = CalTable.from_solutions("G Jones", {spw: g}, times=[5e9, 5e9 + 10], ms=ms,
                                  antennas=present, refant=0, paramerr={spw: err})
    assert tab.nrow == 2 * n_ant
    np.testing.assert_array_equal(tab.antenna1, np.tile(np.arange(n_ant), 2))
    sol = read_caltable(tab.write(tmp_path / "g.cal")).solutions(spw)
    missing = np.setdiff1d(np.arange(n_ant), present)
    assert sol.flag[:, missing].all()
    assert (sol.params[:, missing] == 1 + 0j).all()
    assert (sol.snr[:, missing] == 0).all()
    # the NaN solution is flagged and replaced by the placeholder, the rest are kept
    assert sol.flag[1, 2, 0, 0] and sol.params[1, 2, 0, 0] == 1 + 0j and sol.snr[1, 2, 0, 0] == 0
    ok = ~sol.flag[:, present]
    np.testing.assert_array_equal(sol.params[:, present][ok], g[ok])
    # default SNR: |param| / PARAMERR, as CASA writes it
    np.testing.assert_allclose(sol.snr[:, present][ok], np.abs(g[ok]) / 0.01, rtol=1e-6)
    assert (sol.refant == 0).all()


def test_float_table_placeholder_and_snr_without_errors(ms):
    n_ant = n_antennas(ms)
    tab = CalTable.from_solutions("K Jones", {0: np.ones((1, 2, 1, 2))}, times=[5e9], ms=ms,
                                  antennas=[1, 3])
    sol = tab.solutions(0)
    assert sol.params.dtype == np.float32
    others = [a for a in range(n_ant) if a not in (1, 3)]
    assert (sol.params[:, others] == 0.0).all() and sol.flag[:, others].all()
    assert (sol.snr[:, [1, 3]] == caltable.SNR_NO_ERROR).all()


def test_rows_are_sorted_into_casa_order(ms):
    tab = make_table("G Jones", ms)
    order = np.random.default_rng(3).permutation(tab.nrow)
    shuffled = CalTable(
        vis_cal=tab.vis_cal, time=tab.time[order], interval=tab.interval[order],
        field_id=tab.field_id[order], spw_id=tab.spw_id[order], antenna1=tab.antenna1[order],
        antenna2=tab.antenna2[order], scan=tab.scan[order], obs_id=tab.obs_id[order],
        params=tab.params[order], paramerr=tab.paramerr[order], snr=tab.snr[order],
        flag=tab.flag[order], chan_freq=tab.chan_freq, chan_width=tab.chan_width,
        ms_name=tab.ms_name, ms_path=tab.ms_path)
    assert shuffled == tab


def test_spw_ids_times_and_padding(ms, tmp_path):
    tab = make_table("B Jones", ms)
    spws = channelised_spws(ms)
    info = ms_spws(ms)
    n_full, n_avg = info["nchan"][spws[0]], info["nchan"][spws[1]] // 2
    assert tab.spw_ids.tolist() == sorted(spws[:2])
    np.testing.assert_array_equal(tab.times(spws[0]), [5.2e9 + 57.0])
    assert tab.params.shape[1] == max(n_full, n_avg)
    assert tab.nchan(spws[1]) == n_avg
    # padded cells are flagged and never written: on disk each spw has its own shape
    path = tab.write(tmp_path / "b.cal")
    with ct.table(path, ack=False) as t:
        shapes = {int(s): t.getcell("CPARAM", int(np.flatnonzero(t.getcol(
            "SPECTRAL_WINDOW_ID") == s)[0])).shape for s in spws[:2]}
    assert shapes == {spws[0]: (n_full, 2), spws[1]: (n_avg, 2)}
    with pytest.raises(CalTableError, match=r"no solutions for spw 99.*spws in the table"):
        tab.solutions(99)


def test_extra_metadata_roundtrip_and_json_error(ms, tmp_path):
    tab = make_table("T Jones", ms)
    tab.extra = {"solver": "stefcal", "n_iter": [3, 4]}
    assert read_caltable(tab.write(tmp_path / "t.cal")).extra == tab.extra
    tab.extra = {"bad": object()}
    with pytest.raises(CalTableError, match="extra is not JSON-serialisable"):
        tab.write(tmp_path / "t2.cal")
    assert not (tmp_path / "t2.cal").exists()


def test_empty_table_roundtrip(ms, tmp_path):
    e = np.zeros(0)
    cells = np.zeros((0, 1, 2))
    tab = CalTable("G Jones", e, e, e, e, e, e, e, e, cells, cells, cells, cells.astype(bool),
                   ms_path=ms, ms_name="tiny.ms")
    back = read_caltable(tab.write(tmp_path / "e.cal"))
    assert back.nrow == 0 and back == tab
    with ct.table(f"{tmp_path}/e.cal/SPECTRAL_WINDOW", ack=False) as t:
        assert t.getcol("FLAG_ROW").all()  # no spw has solutions


@pytest.mark.parametrize("version", [None, "6.7.0-31", "5.3.0-104"])
def test_casa_version_keyword_is_kept_as_read(version, ms, tmp_path):
    """CASA's KJones picks its delay pivot from CASA_Version (absent/5.3.0-10x: REF_FREQUENCY,
    else the centre channel), so a rewrite keeps the keyword exactly as it was."""
    tab = make_table("K Jones", ms)
    assert tab.casa_version == DEFAULT_CASA_VERSION
    tab.casa_version = version
    back = read_caltable(tab.write(tmp_path / "k.cal"))
    assert back.casa_version == version
    with ct.table(str(tmp_path / "k.cal"), ack=False) as t:
        assert ("CASA_Version" in t.keywordnames()) == (version is not None)
    assert read_caltable(back.write(tmp_path / "k2.cal")).casa_version == version


# --------------------------------------------------------------------------------------
# on-disk layout against Appendix A (CASA 6.7.0.31 output)
# --------------------------------------------------------------------------------------

APPENDIX_A_SCALARS = {
    "TIME": "double", "FIELD_ID": "int", "SPECTRAL_WINDOW_ID": "int", "ANTENNA1": "int",
    "ANTENNA2": "int", "INTERVAL": "double", "SCAN_NUMBER": "int", "OBSERVATION_ID": "int",
}
APPENDIX_A_ARRAYS = {"PARAMERR": "float", "FLAG": "boolean", "SNR": "float", "WEIGHT": "float"}


@pytest.mark.parametrize("vis_cal", TYPES)
def test_layout_matches_casa(vis_cal, ms, tmp_path):
    tab = make_table(vis_cal, ms)
    path = tab.write(tmp_path / "x.cal")
    complex_type = SUPPORTED_TYPES[vis_cal] == "Complex"
    pcol, other = ("CPARAM", "FPARAM") if complex_type else ("FPARAM", "CPARAM")
    with ct.table(path, ack=False) as t:
        assert t.info()["type"] == "Calibration"
        assert t.info()["subType"] == vis_cal
        kw = t.getkeywords()
        assert kw["ParType"] == ("Complex" if complex_type else "Float")
        assert kw["MSName"] == os.path.basename(ms) and "/" not in kw["MSName"]
        assert kw["VisCal"] == vis_cal
        assert kw["PolBasis"] == "unknown"
        assert kw["CASA_Version"] == DEFAULT_CASA_VERSION
        for name in ("OBSERVATION", "ANTENNA", "FIELD", "SPECTRAL_WINDOW", "HISTORY"):
            assert kw[name] == f"Table: {path}/{name}"
        # columns, types, units
        columns = t.colnames()
        assert other not in columns
        expected = {**APPENDIX_A_SCALARS, pcol: "complex" if complex_type else "float",
                    **APPENDIX_A_ARRAYS}
        assert sorted(columns) == sorted(expected)
        for name, vtype in expected.items():
            desc = t.getcoldesc(name)
            assert desc["valueType"] == vtype, name
            assert desc["dataManagerType"] == "StandardStMan", name
            assert ("ndim" in desc) == (name not in APPENDIX_A_SCALARS), name
        assert t.getcolkeywords("TIME") == {"QuantumUnits": ["s"],
                                            "MEASINFO": {"type": "epoch", "Ref": "UTC"}}
        assert t.getcolkeywords("INTERVAL") == {"QuantumUnits": ["s"]}
        assert {dm["TYPE"] for dm in t.getdminfo().values()} == {"StandardStMan"}
        # WEIGHT cells undefined, like CASA
        assert not t.iscelldefined("WEIGHT", 0)
        # cells (nchan, npar), rows ordered spw -> time -> antenna, all antennas per time
        spw, tim, ant = (t.getcol(c) for c in ("SPECTRAL_WINDOW_ID", "TIME", "ANTENNA1"))
        n_ant = n_antennas(ms)
        for s in np.unique(spw):
            rows = np.flatnonzero(spw == s)
            cell = t.getcell(pcol, int(rows[0]))
            assert cell.shape == (tab.nchan(int(s)), tab.n_par)
            assert t.getcell("FLAG", int(rows[0])).shape == cell.shape
            np.testing.assert_array_equal(ant[rows], np.tile(np.arange(n_ant), len(rows) // n_ant))
            assert np.all(np.diff(tim[rows][::n_ant]) > 0)
            assert np.all(tim[rows].reshape(-1, n_ant) == tim[rows][::n_ant, None])
        assert np.all(np.diff(spw) >= 0)
        np.testing.assert_array_equal(t.getcol("ANTENNA2"), tab.antenna2)
    with ct.table(f"{path}/ANTENNA", ack=False) as a:
        assert a.nrows() == n_ant
    with ct.table(f"{path}/HISTORY", ack=False) as h, ct.table(f"{ms}/HISTORY", ack=False) as mh:
        assert h.nrows() == 0 and sorted(h.colnames()) == sorted(mh.colnames())


def test_subtables_are_copies_of_the_ms(ms, tmp_path):
    path = make_table("G Jones", ms).write(tmp_path / "g.cal")
    for name in ("ANTENNA", "FIELD", "OBSERVATION"):
        with ct.table(f"{path}/{name}", ack=False) as c, ct.table(f"{ms}/{name}", ack=False) as m:
            assert c.colnames() == m.colnames(), name
            assert c.nrows() == m.nrows(), name
            for col in m.colnames():
                if m.nrows() and m.iscelldefined(col, 0):
                    a, b = c.getcol(col), m.getcol(col)
                    if isinstance(a, np.ndarray):
                        np.testing.assert_array_equal(a, b, err_msg=f"{name}.{col}")
                    else:
                        assert a == b, f"{name}.{col}"
            assert c.getcoldesc(m.colnames()[0]) == m.getcoldesc(m.colnames()[0])
    with ct.table(f"{path}/ANTENNA", ack=False) as c, ct.table(f"{ms}/ANTENNA", ack=False) as m:
        assert c.getcolkeywords("POSITION") == m.getcolkeywords("POSITION")


def test_spectral_window_rewrite(ms, tmp_path):
    info = ms_spws(ms)
    spws = channelised_spws(ms)
    g_path = make_table("G Jones", ms).write(tmp_path / "g.cal")
    b_tab = make_table("B Jones", ms)
    b_path = b_tab.write(tmp_path / "b.cal")
    solved = set(spws[:2])
    with ct.table(f"{g_path}/SPECTRAL_WINDOW", ack=False) as t, \
            ct.table(f"{ms}/SPECTRAL_WINDOW", ack=False) as m:
        assert t.nrows() == m.nrows()
        for s in range(t.nrows()):
            assert t.getcell("NAME", s) == m.getcell("NAME", s)
            assert t.getcell("REF_FREQUENCY", s) == m.getcell("REF_FREQUENCY", s)
            if s in solved:  # one channel: centroid of the spw, width = its bandwidth
                bw = np.abs(info["width"][s]).sum()
                assert t.getcell("NUM_CHAN", s) == 1
                np.testing.assert_allclose(t.getcell("CHAN_FREQ", s), [info["freq"][s].mean()])
                for col in ("CHAN_WIDTH", "RESOLUTION", "EFFECTIVE_BW"):
                    np.testing.assert_allclose(t.getcell(col, s), [bw], err_msg=col)
                assert t.getcell("TOTAL_BANDWIDTH", s) == pytest.approx(bw)
                assert not t.getcell("FLAG_ROW", s)
            else:  # unsolved: MS row kept, flagged
                assert t.getcell("NUM_CHAN", s) == m.getcell("NUM_CHAN", s)
                np.testing.assert_array_equal(t.getcell("CHAN_FREQ", s), info["freq"][s])
                assert t.getcell("FLAG_ROW", s)
    s_avg = spws[1]
    with ct.table(f"{b_path}/SPECTRAL_WINDOW", ack=False) as t:
        n_avg = info["nchan"][s_avg] // 2
        assert t.getcell("NUM_CHAN", s_avg) == n_avg
        np.testing.assert_allclose(t.getcell("CHAN_FREQ", s_avg), b_tab.chan_freq[s_avg])
        np.testing.assert_allclose(t.getcell("CHAN_WIDTH", s_avg),
                                   2 * np.abs(info["width"][s_avg][: 2 * n_avg:2]))
        assert t.getcell("TOTAL_BANDWIDTH", s_avg) == pytest.approx(
            np.abs(info["width"][s_avg][: 2 * n_avg]).sum())
        np.testing.assert_array_equal(t.getcell("CHAN_FREQ", spws[0]), info["freq"][spws[0]])


# --------------------------------------------------------------------------------------
# atomic writes
# --------------------------------------------------------------------------------------


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".fastcal-" in p.name)


def test_interrupted_write_leaves_nothing(ms, tmp_path, monkeypatch):
    tab = make_table("G Jones", ms)

    def boom(t, table):
        t.putcol("TIME", table.time)
        raise KeyboardInterrupt("interrupted while filling rows")

    monkeypatch.setattr(caltable, "_fill_main_rows", boom)
    with pytest.raises(KeyboardInterrupt):
        tab.write(tmp_path / "g.cal")
    assert not (tmp_path / "g.cal").exists()
    assert leftovers(tmp_path) == []


def test_interrupted_overwrite_keeps_old_table(ms, tmp_path, monkeypatch):
    old = make_table("G Jones", ms, seed=1)
    path = old.write(tmp_path / "g.cal")
    monkeypatch.setattr(caltable, "_fill_main_rows",
                        lambda t, table: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        make_table("G Jones", ms, seed=2).write(path, overwrite=True)
    assert read_caltable(path) == old
    assert leftovers(tmp_path) == []


def test_killed_writer_leaves_only_a_temp_that_is_ignored_then_cleaned(ms, tmp_path):
    """SIGKILL in the middle of filling rows: no table at the target, the temp directory
    is ignored by readers and removed by the next write."""
    target = tmp_path / "g.cal"
    source = make_table("G Jones", ms).write(tmp_path / "source.cal")
    script = textwrap.dedent(f"""
        import time
        from fastcal import caltable
        def slow(t, table):
            t.putcol("TIME", table.time)
            print("filling", flush=True)
            time.sleep(60)
        caltable._fill_main_rows = slow
        caltable.read_caltable({source!r}).write({str(target)!r})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "filling"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not target.exists()
    assert leftovers(tmp_path) == [f"g.cal.fastcal-tmp-{proc.pid}"]
    with pytest.raises(CalTableError, match="does not exist"):
        read_caltable(target)
    tab = make_table("G Jones", ms)
    tab.write(target)
    assert read_caltable(target) == tab
    assert leftovers(tmp_path) == []


def test_overwrite_rules(ms, tmp_path):
    first = make_table("G Jones", ms, seed=1)
    second = make_table("G Jones", ms, seed=2)
    path = first.write(tmp_path / "g.cal")
    with pytest.raises(CalTableError, match=r"g\.cal already exists; pass overwrite=True"):
        second.write(path)
    assert read_caltable(path) == first
    second.write(path, overwrite=True)
    assert read_caltable(path) == second
    assert leftovers(tmp_path) == []


def test_overwrite_refuses_a_measurement_set(ms, copy_ms):
    ms_copy = copy_ms(ms)
    with ct.table(str(ms_copy), ack=False) as t:
        nrow = t.nrows()
    with pytest.raises(CalTableError, match="is not a calibration table; refusing to overwrite"):
        make_table("G Jones", ms).write(ms_copy, overwrite=True)
    assert ct.tableinfo(str(ms_copy))["type"] == "Measurement Set"
    with ct.table(str(ms_copy), ack=False) as t:
        assert t.nrows() == nrow


# --------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------


def test_read_errors(ms, tmp_path):
    with pytest.raises(CalTableError, match=r"nothere\.cal: no such calibration table"):
        read_caltable(tmp_path / "nothere.cal")
    (tmp_path / "plain").mkdir()
    with pytest.raises(CalTableError, match="is not a casacore table"):
        read_caltable(tmp_path / "plain")
    with pytest.raises(CalTableError, match="is a Measurement Set containing visibilities, "
                                            "not a calibration table"):
        read_caltable(ms)


def test_read_unsupported_subtype(ms, tmp_path):
    path = make_table("G Jones", ms).write(tmp_path / "d.cal")
    with ct.table(path, readonly=False, ack=False) as t:
        t.putinfo({"type": "Calibration", "subType": "D Jones", "readme": ""})
        t.putkeyword("VisCal", "D Jones")
    with pytest.raises(CalTableError,
                       match=r"subType 'D Jones' is not supported; expected one of G Jones, "
                             r"T Jones, B Jones, K Jones, KMBD Jones, KAntPos Jones, B TSYS"):
        read_caltable(path)


@pytest.mark.parametrize("vis_cal, column", [("G Jones", "CPARAM"), ("K Jones", "FPARAM")])
def test_read_corrupt_table_without_param_column(vis_cal, column, ms, tmp_path):
    path = make_table(vis_cal, ms).write(tmp_path / "c.cal")
    with ct.table(path, readonly=False, ack=False) as t:
        t.removecols(column)
    with pytest.raises(CalTableError, match=f"corrupt calibration table.*missing columns {column}"):
        read_caltable(path)


def test_as_caltable(ms, tmp_path):
    tab = make_table("K Jones", ms)
    assert as_caltable(tab) is tab
    path = tab.write(tmp_path / "k.cal")
    assert as_caltable(path) == tab
    assert as_caltable(Path(path)) == tab
    with pytest.raises(CalTableError, match="expected a CalTable or the path.*got int"):
        as_caltable(3)


def test_constructor_errors(ms):
    tab = make_table("G Jones", ms)
    with pytest.raises(CalTableError, match=r"table type 'D Jones' is not supported"):
        CalTable("D Jones", tab.time, tab.interval, tab.field_id, tab.spw_id, tab.antenna1,
                 tab.antenna2, tab.scan, tab.obs_id, tab.params, tab.paramerr, tab.snr,
                 tab.flag)
    with pytest.raises(CalTableError, match=r"snr has shape \(3,\); expected params' shape"):
        CalTable("G Jones", tab.time, tab.interval, tab.field_id, tab.spw_id, tab.antenna1,
                 tab.antenna2, tab.scan, tab.obs_id, tab.params, tab.paramerr, np.ones(3),
                 tab.flag)
    with pytest.raises(CalTableError, match=r"ParType 'Float' does not match 'G Jones'"):
        CalTable("G Jones", tab.time, tab.interval, tab.field_id, tab.spw_id, tab.antenna1,
                 tab.antenna2, tab.scan, tab.obs_id, tab.params, tab.paramerr, tab.snr,
                 tab.flag, par_type="Float")


def test_from_solutions_errors(ms):
    n_ant = n_antennas(ms)
    g = np.ones((1, n_ant, 1, 2), np.complex64)
    with pytest.raises(ParameterError, match=r"vis_cal='X Jones' is not supported"):
        CalTable.from_solutions("X Jones", {0: g}, times=[1.0], ms=ms)
    with pytest.raises(ParameterError, match=r"params have n_ant=2 but the MS has .* pass antennas="):
        CalTable.from_solutions("G Jones", {0: g[:, :2]}, times=[1.0], ms=ms)
    with pytest.raises(ParameterError, match=r"2 times for params with n_time=1"):
        CalTable.from_solutions("G Jones", {0: g}, times=[1.0, 2.0], ms=ms)
    with pytest.raises(ParameterError, match=r"params must have shape \(n_time, n_ant, n_chan"):
        CalTable.from_solutions("G Jones", {0: g[0]}, times=[1.0], ms=ms)
    spw = channelised_spws(ms)[0]
    with pytest.raises(ParameterError, match=rf"spw {spw}: params have 3 channels, the MS spw"):
        CalTable.from_solutions("B Jones", {spw: np.ones((1, n_ant, 3, 2))}, times=[1.0], ms=ms)
    with pytest.raises(ParameterError, match=r"give ms \(path of the source MS\) or ms_name"):
        CalTable.from_solutions("G Jones", {0: g}, times=[1.0])


def test_from_solutions_channel_axis_defaults(ms):
    info = ms_spws(ms)
    spw = channelised_spws(ms)[0]
    n_ant = n_antennas(ms)
    one = CalTable.from_solutions("T Jones", {spw: np.ones((1, n_ant, 1, 1))}, times=[1.0],
                                  ms=ms, chan_freq={spw: [1.5e11]})
    np.testing.assert_array_equal(one.chan_width[spw], [np.abs(info["width"][spw]).sum()])
    f = np.array([1.0e11, 1.1e11, 1.2e11])
    three = CalTable.from_solutions("B Jones", {spw: np.ones((1, n_ant, 3, 2))}, times=[1.0],
                                    ms=ms, chan_freq={spw: f})
    np.testing.assert_allclose(three.chan_width[spw], [1e10, 1e10, 1e10])
    with pytest.raises(ParameterError, match="give chan_width for a single solution channel"):
        CalTable.from_solutions("T Jones", {spw: np.ones((1, 2, 1, 1))}, times=[1.0],
                                ms_name="x.ms", chan_freq={spw: [1.5e11]})


def test_write_without_subtables_or_ms(ms, tmp_path):
    tab = make_table("G Jones", ms)
    tab.ms_path = None
    with pytest.raises(CalTableError, match="neither subtables nor ms_path"):
        tab.write(tmp_path / "g.cal")
    assert leftovers(tmp_path) == [] and not (tmp_path / "g.cal").exists()
