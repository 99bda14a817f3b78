"""fastcal.tsys.flag_tsys: the hifa_tsysflag metrics on simulated bad Tsys (tables in memory)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fastcal.caltable import CalTable
from fastcal.errors import CalTableError, ParameterError
from fastcal.tsys import TSYS_METRICS, flag_tsys, tsys_table


@pytest.fixture(scope="module")
def clean(tiny_ms):
    """(table, truth, Tsys spw): the tiny MS's Tsys table (3 measurements x 5 antennas)."""
    path, truth = tiny_ms
    return tsys_table(path), truth, int(truth.tsys_spw_ids[0])


def _modified(tab: CalTable, spw: int, fn) -> CalTable:
    """Copy of `tab` whose spw cells (n_time, n_ant, nchan, npol) are changed by fn(p, f)."""
    params, flag = tab.params.copy(), tab.flag.copy()
    rows = np.flatnonzero(tab.spw_id == spw)
    n_t = len(tab.times(spw))
    p = params[rows].reshape(n_t, -1, *params.shape[1:])
    f = flag[rows].reshape(n_t, -1, *flag.shape[1:])
    fn(p, f)
    params[rows] = p.reshape(-1, *params.shape[1:])
    flag[rows] = f.reshape(-1, *flag.shape[1:])
    return dataclasses.replace(tab, params=params, flag=flag)


def _spectra_flagged(tab, spw):
    """(n_time, n_ant, npol) spectra entirely flagged."""
    return tab.solutions(spw).flag[:, :, : tab.nchan(spw)].all(axis=2)


def test_clean_table_raises_no_flags(clean):
    tab, _, _ = clean
    out, rep = flag_tsys(tab)
    assert rep.actions == [] and rep.flagged_after == 0.0
    assert rep.metrics == TSYS_METRICS
    assert out == tab


def test_nmedian_flags_hot_antenna(clean):
    tab, _, spw = clean

    def hot(p, f):
        p[1, 3] *= 3.0

    bad = _modified(tab, spw, hot)
    out, rep = flag_tsys(bad, metrics="nmedian")
    sf = _spectra_flagged(out, spw)
    assert sf[1, 3].all() and sf.sum() == 2  # both pols of that spectrum only
    assert {a.metric for a in rep.actions} == {"nmedian"}
    assert rep.new_flags["nmedian"] == 2 * tab.nchan(spw)
    # threshold configurable: a 1.5x hot antenna passes at the default 2.0 but not at 1.3
    mild = _modified(tab, spw, lambda p, f: p[1, 3].__imul__(1.5))
    assert not flag_tsys(mild, metrics="nmedian")[1].actions
    assert _spectra_flagged(flag_tsys(mild, metrics="nmedian", fnm_limit=1.3)[0], spw)[1, 3].all()
    # the source table is untouched
    assert not tab.flag.any()


def test_nmedian_byfield_catches_a_scan_to_scan_jump(clean):
    """All antennas jump x3 at one Tsys scan: per field nothing stands out; with
    fnm_byfield=False the jumped scan (1 of 3) is flagged for every antenna."""
    tab, _, spw = clean
    bad = _modified(tab, spw, lambda p, f: p[2].__imul__(3.0))
    assert not flag_tsys(bad, metrics="nmedian")[1].actions
    out, _ = flag_tsys(bad, metrics="nmedian", fnm_byfield=False)
    sf = _spectra_flagged(out, spw)
    assert sf[2].all() and not sf[:2].any()


def test_derivative_flags_ringing_spectrum(clean):
    tab, _, spw = clean
    n = tab.nchan(spw)
    ring = 1 + 0.1 * np.random.default_rng(3).standard_normal(n)  # noisy / ringing
    bad = _modified(tab, spw, lambda p, f: p[0, 2, :n, 0].__imul__(ring.astype(np.float32)))
    out, rep = flag_tsys(bad, metrics="derivative")
    sf = _spectra_flagged(out, spw)
    assert sf[0, 2, 0] and sf.sum() == 1
    assert rep.actions[0].value > 5.0


def test_fieldshape_flags_odd_shape_on_target_scan(clean):
    tab, truth, spw = clean
    n = tab.nchan(spw)
    t_target = int(np.flatnonzero(truth.syscal_field == truth.field_id("target"))[0])
    slope = (1 + 2 * np.linspace(0, 1, n)).astype(np.float32)

    def tilt(p, f):
        p[t_target, 0, :n, :] *= slope[:, None]

    out, rep = flag_tsys(_modified(tab, spw, tilt), metrics="fieldshape")
    sf = _spectra_flagged(out, spw)
    assert sf[t_target, 0].all() and sf.sum() == 2
    assert all(a.value > 13 for a in rep.actions)
    # the limit is configurable: metric ~25 passes ff_max_limit=40
    assert not flag_tsys(_modified(tab, spw, tilt), metrics="fieldshape",
                         ff_max_limit=40)[1].actions


def test_birdies_flags_spiky_channel_for_one_antenna(clean):
    tab, _, spw = clean

    def spike(p, f):
        p[:, 1, 10, :] *= 1.6

    out, rep = flag_tsys(_modified(tab, spw, spike), metrics="birdies")
    fl = out.solutions(spw).flag
    assert fl[:, 1, 9:12].all()  # the spike and the channels bracketing its steps
    others = np.delete(np.arange(fl.shape[1]), 1)
    assert not fl[:, others].any()
    assert rep.actions[0].antenna == 1 and 10 in rep.actions[0].channels


def test_edgechans_flags_rolled_off_edges(clean):
    tab, _, spw = clean
    n = tab.nchan(spw)
    taper = np.ones(n, np.float32)
    taper[:3] = [0.2, 0.5, 0.8]
    taper[-3:] = [0.8, 0.5, 0.2]
    out, rep = flag_tsys(_modified(tab, spw, lambda p, f: p[:, :, :n, :].__imul__(taper[:, None])),
                         metrics="edgechans")
    fl = out.solutions(spw).flag[:, :, :n]
    chans = np.flatnonzero(fl.all(axis=(0, 1, 3)))
    assert set(chans) >= {0, 1, n - 2, n - 1}
    assert 4 <= chans.size <= 6 and not fl[:, :, 3:n - 3].any()


def test_toomany_flags_timestamp_and_spw(clean):
    tab, _, spw = clean

    def four_of_five_at_t0(p, f):
        f[0, :4] = True

    out, _ = flag_tsys(_modified(tab, spw, four_of_five_at_t0), metrics="toomany")
    sf = _spectra_flagged(out, spw)
    assert sf[0].all() and not sf[1:].any()

    def four_antennas_everywhere(p, f):
        f[:, :4] = True

    out, _ = flag_tsys(_modified(tab, spw, four_antennas_everywhere), metrics="toomany",
                       tmf1_limit=1.0)
    assert _spectra_flagged(out, spw).all()
    # at the limit nothing happens: 4/5 = 0.8 is not > 0.8
    out, _ = flag_tsys(_modified(tab, spw, four_antennas_everywhere), metrics="toomany",
                       tmf1_limit=1.0, tmef1_limit=0.8)
    assert not _spectra_flagged(out, spw)[:, 4].any()


def test_metrics_see_earlier_flags_and_output_written(clean, tmp_path):
    tab, _, spw = clean
    bad = _modified(tab, spw, lambda p, f: p[1, 3].__imul__(3.0))
    out, rep = flag_tsys(bad, output=tmp_path / "flagged.tsys")
    assert rep.new_flags["nmedian"] > 0 and rep.flagged_after > rep.flagged_before
    from fastcal.caltable import read_caltable
    assert read_caltable(tmp_path / "flagged.tsys").flag.sum() == out.flag.sum()


def test_bad_arguments(clean, tiny_ms):
    tab, _, _ = clean
    with pytest.raises(ParameterError, match="unknown.*valid: nmedian"):
        flag_tsys(tab, metrics="nmedian,bogus")
    with pytest.raises(ParameterError, match="tmf1_limit"):
        flag_tsys(tab, tmf1_limit=2)
    from fastcal.antpos import antpos_table
    with pytest.raises(CalTableError, match="KAntPos.*B TSYS"):
        flag_tsys(antpos_table(tiny_ms[0], antenna="DA41", offsets=[0, 0, 0.01]))


def test_table_from_disk_finds_its_ms(tiny_ms, tmp_path, caplog):
    """A table read back from disk finds the MS (MSName next to it) for the field intents;
    without any MS, fieldshape is skipped and said so."""
    import logging
    import shutil

    from fastcal.caltable import read_caltable

    path, truth = tiny_ms
    ms = tmp_path / path.name
    shutil.copytree(path, ms)
    tsys_table(ms, tmp_path / "t.tsys")
    tab = read_caltable(tmp_path / "t.tsys")
    _, rep = flag_tsys(tab)
    assert "fieldshape" not in rep.skipped
    shutil.rmtree(ms)
    with caplog.at_level(logging.WARNING, logger="fastcal.tsys"):
        _, rep = flag_tsys(read_caltable(tmp_path / "t.tsys"))
    assert rep.skipped["fieldshape"] == "no MS intents"
    assert "no MS for field intents" in caplog.text


def test_sharps_kernel_broadens_over_the_wings():
    from fastcal.kernels.tsys import edge_index, sharps

    d = 1 + 0.001 * np.sin(np.arange(32.0))
    d[9], d[10], d[11] = 1.1, 1.5, 1.1  # wings 0.1, peak 0.5
    f = np.zeros(32, bool)
    assert np.flatnonzero(sharps(d, f, 0.15)).tolist() == [8, 9, 10, 11]
    assert not sharps(d, f, 0.6).any()
    f[10] = True  # a flagged peak hides the feature's steps
    assert not sharps(d, f, 0.15)[10:12].any()
    # edge finder: a smooth spectrum has no edge; a steep first quarter ends where it flattens
    assert edge_index(np.linspace(1, 2, 32), np.zeros(32, bool), 3.0) == 0
    e = np.ones(32)
    e[:3] = [0.2, 0.5, 0.8]
    e[3:] += 0.001 * np.arange(29)
    assert edge_index(e, np.zeros(32, bool), 3.0) == 3  # channels 0..2 are the edge
