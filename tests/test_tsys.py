"""fastcal.tsys: Tsys tables from SYSCAL, SYSCAL time repair, the Tsys spw map."""

from __future__ import annotations

import argparse
import logging
import shutil
import textwrap

import casacore.tables as ct
import numpy as np
import pytest
from casa_helpers import run_casa, skip_without_casa

from fastcal.caltable import read_caltable
from fastcal.errors import CalTableError, MissingColumnError, ParameterError, SelectionError
from fastcal.simulate import SimConfig, simulate
from fastcal.tsys import (
    fix_syscal_times,
    tsys_spwmap,
    tsys_table,
)


def _truth_table_arrays(truth):
    """Expected (per Tsys spw) times, fields, scans and (n_time, n_ant, nchan, 2) Tsys."""
    out = {}
    for b, spw in enumerate(truth.tsys_spw_ids):
        out[int(spw)] = dict(
            time=truth.syscal_time - truth.syscal_interval / 2,
            field=truth.syscal_field, scan=truth.syscal_scan,
            tsys=truth.syscal_tsys[:, b].astype(np.float32),
        )
    return out


def test_table_matches_truth_exactly(tiny_ms):
    path, truth = tiny_ms
    tab = tsys_table(path)
    assert tab.vis_cal == "B TSYS" and tab.par_type == "Float"
    assert sorted(tab.spw_ids.tolist()) == sorted(int(s) for s in truth.tsys_spw_ids)
    for spw, exp in _truth_table_arrays(truth).items():
        sol = tab.solutions(spw)
        np.testing.assert_array_equal(sol.time, exp["time"])
        np.testing.assert_array_equal(sol.field_id, exp["field"])
        np.testing.assert_array_equal(sol.scan, exp["scan"])
        np.testing.assert_array_equal(sol.params, exp["tsys"])
        assert not sol.flag.any()
        assert np.all(sol.paramerr == np.float32(0.1)) and np.all(sol.snr == 1.0)
        assert np.all(sol.refant == -1) and np.all(sol.interval == 0.0)
        np.testing.assert_array_equal(tab.chan_freq[spw], truth.tsys_chan_freq[
            list(truth.tsys_spw_ids).index(spw)])


def test_written_table_reads_back(tiny_ms, tmp_path):
    path, _ = tiny_ms
    out = tmp_path / "t.tsys"
    tab = tsys_table(path, out)
    assert read_caltable(out) == tab
    with pytest.raises(CalTableError, match="exists"):
        tsys_table(path, out)


def test_spw_and_antenna_selection(tiny_ms):
    path, truth = tiny_ms
    spw = int(truth.tsys_spw_ids[1])
    tab = tsys_table(path, spw=str(spw), antenna=truth.antenna_names[2])
    assert tab.spw_ids.tolist() == [spw]
    flag = tab.solutions(spw).flag
    assert not flag[:, 2].any() and flag[:, [0, 1, 3, 4]].all()
    with pytest.raises(SelectionError, match="spw=.*'99'.*valid"):
        tsys_table(path, spw="99")
    with pytest.raises(SelectionError, match="NOPE.*DA41"):
        tsys_table(path, antenna="NOPE")


def test_negative_and_nan_tsys_flagged_and_counted(tiny_ms, copy_ms, caplog):
    path, truth = tiny_ms
    ms = copy_ms(path)
    with ct.table(str(ms / "SYSCAL"), readonly=False, ack=False) as t:
        cell = t.getcell("TSYS_SPECTRUM", 0)
        cell[3:5, 0] = -20.0
        cell[7, 1] = np.nan
        t.putcell("TSYS_SPECTRUM", 0, cell)
        spw0, ant0 = int(t.getcell("SPECTRAL_WINDOW_ID", 0)), int(t.getcell("ANTENNA_ID", 0))
    with caplog.at_level(logging.WARNING, logger="fastcal.tsys"):
        tab = tsys_table(ms)
    assert "flagged 2 negative/zero and 1 NaN/inf" in caplog.text
    sol = tab.solutions(spw0)
    assert sol.flag[0, ant0, 3:5, 0].all() and sol.flag[0, ant0, 7, 1]
    assert sol.flag.sum() == 3
    assert np.isfinite(sol.params).all()


def test_ms_without_syscal_is_a_clear_error(tiny_ms, copy_ms):
    ms = copy_ms(tiny_ms[0])
    with ct.table(str(ms), readonly=False, ack=False) as t:
        t.removekeyword("SYSCAL")
    shutil.rmtree(ms / "SYSCAL")
    with pytest.raises(MissingColumnError, match=r"tiny\.ms: the SYSCAL subtable is absent"):
        tsys_table(ms)


def test_channel_mismatch_is_an_error(tiny_ms, copy_ms):
    ms = copy_ms(tiny_ms[0])
    with ct.table(str(ms / "SPECTRAL_WINDOW"), readonly=False, ack=False) as t:
        t.putcell("NUM_CHAN", int(tiny_ms[1].tsys_spw_ids[0]), 7)
    with pytest.raises(CalTableError, match="NUM_CHAN=7"):
        tsys_table(ms, fix_times=False)


def test_time_major_row_order_gives_the_same_table(tiny_ms, tmp_path):
    """Rows sorted by TIME (several spws per integration, as importasdm writes them): the
    main-table summary splits runs by DATA_DESC_ID and the table is unchanged."""
    path, truth = tiny_ms
    sorted_ms = tmp_path / "sorted" / path.name  # same MSName
    sorted_ms.parent.mkdir()
    with ct.table(str(path), ack=False) as t, t.sort("TIME, DATA_DESC_ID, ANTENNA1, ANTENNA2") as s:
        s.copy(str(sorted_ms), deep=True).close()
    with ct.table(str(sorted_ms), ack=False) as t:
        tm, dd = t.getcol("TIME"), t.getcol("DATA_DESC_ID")
    assert np.any((tm[1:] == tm[:-1]) & (dd[1:] != dd[:-1]))  # mixed-spw integrations
    for fix in (False, "auto"):
        a, b = tsys_table(path, fix_times=fix), tsys_table(sorted_ms, fix_times=fix)
        assert a.differences(b) == []


# ------------------------------------------------------------------ SYSCAL time repair


@pytest.fixture(scope="module")
def offset_ms(tmp_path_factory):
    path = tmp_path_factory.mktemp("syscal_offset") / "off.ms"
    truth = simulate(path, config=SimConfig.tiny(seed=7, syscal_time_offset_s=40.0))
    return path, truth


def test_offset_syscal_times_realigned(offset_ms):
    path, truth = offset_ms
    raw = tsys_table(path, fix_times=False)
    fixed = tsys_table(path)  # "auto"
    spw = int(truth.tsys_spw_ids[0])
    exp = truth.syscal_time - truth.syscal_interval / 2
    np.testing.assert_allclose(raw.solutions(spw).time, exp + 40.0)
    # the raw stamps fall in the gap after the atmosphere scans: wrong scans
    assert not np.array_equal(raw.solutions(spw).scan, truth.syscal_scan)
    sol = fixed.solutions(spw)
    np.testing.assert_allclose(sol.time, exp, atol=1e-6)
    np.testing.assert_array_equal(sol.scan, truth.syscal_scan)
    np.testing.assert_array_equal(sol.field_id, truth.syscal_field)
    assert fixed.extra["syscal_time_fix"]["n_realigned"] == 2 * len(truth.syscal_time)


def test_fix_does_not_touch_ms_unless_asked(offset_ms, copy_ms):
    ms = copy_ms(offset_ms[0])
    with ct.table(str(ms / "SYSCAL"), ack=False) as t:
        before = t.getcol("TIME")
    fix = fix_syscal_times(ms)
    assert fix.n_realigned > 0
    with ct.table(str(ms / "SYSCAL"), ack=False) as t:
        np.testing.assert_array_equal(t.getcol("TIME"), before)
    fix_syscal_times(ms, write=True)
    with ct.table(str(ms / "SYSCAL"), ack=False) as t:
        np.testing.assert_allclose(t.getcol("TIME"), before - 40.0, atol=1e-6)
    backups = list(ms.parent.glob(ms.name + ".syscal_backup_*"))
    assert len(backups) == 1
    with ct.table(str(backups[0]), ack=False) as t:
        np.testing.assert_array_equal(t.getcol("TIME"), before)


def test_realign_leaves_a_lone_stray_measurement(tiny_ms, copy_ms):
    """One measurement moved past the end of the data: no common shift places more
    measurements on their scans, so nothing is shifted (the others stay on their scans)."""
    path, truth = tiny_ms
    ms = copy_ms(path)
    with ct.table(str(ms / "SYSCAL"), readonly=False, ack=False) as t:
        tim = t.getcol("TIME")
        last = tim == tim.max()
        tim[last] += 500.0
        t.putcol("TIME", tim)
    exp = truth.syscal_time - truth.syscal_interval / 2
    got = tsys_table(ms).solutions(int(truth.tsys_spw_ids[0])).time
    np.testing.assert_allclose(got, np.r_[exp[:-1], exp[-1] + 500.0], atol=1e-6)


def test_small_offset_needs_strict_realign(tiny_ms, copy_ms):
    path, truth = tiny_ms
    ms = copy_ms(path)
    with ct.table(str(ms / "SYSCAL"), readonly=False, ack=False) as t:
        t.putcol("TIME", t.getcol("TIME") + 2.0)  # still inside the 6 s atmosphere scan
    exp = truth.syscal_time - truth.syscal_interval / 2
    spw = int(truth.tsys_spw_ids[0])
    np.testing.assert_allclose(tsys_table(ms).solutions(spw).time, exp + 2.0)
    np.testing.assert_allclose(tsys_table(ms, fix_times=True).solutions(spw).time, exp, atol=1e-6)


def test_fixsyscaltimes_rule_merges_per_antenna_times(tiny_ms, copy_ms):
    """Antennas with different INTERVALs (TIME = stamp + INTERVAL/2): one row group per
    measurement after the fix, at TIME = mean(stamp) + newinterval/2."""
    path, truth = tiny_ms
    ms = copy_ms(path)
    with ct.table(str(ms / "SYSCAL"), readonly=False, ack=False) as t:
        ant = t.getcol("ANTENNA_ID")
        tim, itv = t.getcol("TIME"), t.getcol("INTERVAL")
        stamp = tim - itv / 2
        new_itv = itv + 0.2 * ant
        t.putcol("TIME", stamp + new_itv / 2)
        t.putcol("INTERVAL", new_itv)
    spw = int(truth.tsys_spw_ids[0])
    raw = tsys_table(ms, fix_times=False)
    # CASA iterates by exact TIME: one row group per antenna, each with only that antenna
    n_meas = len(truth.syscal_time) * len(truth.tsys_spw_ids)
    assert raw.nrow == n_meas * truth.n_ant * truth.n_ant
    assert raw.flag.all(axis=(1, 2)).sum() == n_meas * truth.n_ant * (truth.n_ant - 1)
    fix = fix_syscal_times(ms, realign=False)
    assert fix.n_spread == 2 * len(truth.syscal_time)
    np.testing.assert_allclose(np.unique(fix.new_interval), [2.0])
    tab = tsys_table(ms, fix_times="auto")
    np.testing.assert_allclose(tab.solutions(spw).time, truth.syscal_time - truth.syscal_interval / 2,
                               atol=1e-6)
    assert not tab.solutions(spw).flag.any()
    with pytest.raises(ParameterError, match="newinterval"):
        fix_syscal_times(ms, newinterval=0)


# ------------------------------------------------------------------ spw map


def test_spwmap_matches_truth(tiny_ms):
    path, truth = tiny_ms
    full = tsys_spwmap(path, trim=False)
    for s, t in zip(truth.science_spw_ids, truth.science_tsys_spw, strict=True):
        assert full[int(s)] == int(t)
    for t in truth.tsys_spw_ids:
        assert full[int(t)] == int(t)
    assert full[0] == 0  # WVR spw: no Tsys spw in baseband 0
    assert tsys_spwmap(path, tsys_table(path)) == full[: len(tsys_spwmap(path))]


def test_spwmap_trim_drops_trailing_identity(tiny_ms, copy_ms):
    path, truth = tiny_ms
    ms = copy_ms(path)
    last = int(truth.science_spw_ids[-1])
    with ct.table(str(ms / "SPECTRAL_WINDOW"), readonly=False, ack=False) as t:
        t.putcell("BBC_NO", last, 4)  # no Tsys spw in baseband 4
    full = tsys_spwmap(ms, trim=False)
    assert full[last] == last
    assert tsys_spwmap(ms) == full[:last]


def test_tsys_spws_covering_no_science_spw(tiny_ms, copy_ms, caplog):
    path, truth = tiny_ms
    ms = copy_ms(path)
    with ct.table(str(ms / "SPECTRAL_WINDOW"), readonly=False, ack=False) as t:
        for s in truth.science_spw_ids:
            t.putcell("BBC_NO", int(s), 4)
    with caplog.at_level(logging.WARNING, logger="fastcal.tsys"):
        full = tsys_spwmap(ms, trim=False)
    assert full == list(range(len(full)))
    assert "cover no science spw" in caplog.text


def test_spwmap_chantol_widens_the_match(tiny_ms, copy_ms):
    path, truth = tiny_ms
    ms = copy_ms(path)
    s = int(truth.science_spw_ids[0])
    t_spw = int(truth.science_tsys_spw[0])
    with ct.table(str(ms / "SPECTRAL_WINDOW"), ack=False) as t:
        tf = t.getcell("CHAN_FREQ", t_spw)
    dv = tf[1] - tf[0]
    with ct.table(str(ms / "SPECTRAL_WINDOW"), readonly=False, ack=False) as t:
        f = t.getcell("CHAN_FREQ", s)
        t.putcell("CHAN_FREQ", s, f + (tf.max() + dv / 2 - (f.max() + (f[1] - f[0]) / 2)) + 0.5 * dv)
    assert tsys_spwmap(ms, trim=False, chantol=0)[s] == s
    assert tsys_spwmap(ms, trim=False, chantol=1)[s] == t_spw


def test_cli_runs(tiny_ms, tmp_path, capsys):
    from fastcal.tsys import add_cli_arguments, run_from_args

    parser = argparse.ArgumentParser()
    add_cli_arguments(parser)
    out = tmp_path / "cli.tsys"
    args = parser.parse_args([str(tiny_ms[0]), str(out), "--flag"])
    assert run_from_args(args) == 0
    assert read_caltable(out).vis_cal == "B TSYS"
    assert "spwmap for applycal" in capsys.readouterr().out


# ------------------------------------------------------------------ CASA parity


@pytest.mark.casa
def test_matches_casa_gencal(tiny_ms, offset_ms, tmp_path):
    """fix_times=False reproduces CASA 6.7 gencal(caltype='tsys') exactly, also for SYSCAL
    stamps in the gaps between scans (+40 s), inside the previous scan (-3 s) and past the
    last integration (the +40 s MS's last measurement)."""
    skip_without_casa()
    cases = {"plain": tiny_ms[0], "plus40": offset_ms[0], "minus3": tiny_ms[0]}
    mss = {}
    for name, src in cases.items():
        mss[name] = tmp_path / f"{name}.ms"
        shutil.copytree(src, mss[name])
    with ct.table(str(mss["minus3"] / "SYSCAL"), readonly=False, ack=False) as t:
        t.putcol("TIME", t.getcol("TIME") - 3.0)
    run_casa(textwrap.dedent(f"""
        from casatasks import gencal
        for ms in {[str(m) for m in mss.values()]!r}:
            gencal(vis=ms, caltable=ms + '.casa.tsys', caltype='tsys')
        emit({{"ok": True}})
    """))
    for name, ms in mss.items():
        casa = read_caltable(str(ms) + ".casa.tsys")
        ours = tsys_table(ms, fix_times=False)
        assert ours.differences(casa) == ["casa_version", "extra"], name
        np.testing.assert_array_equal(ours.params, casa.params)
        np.testing.assert_array_equal(ours.time, casa.time)
