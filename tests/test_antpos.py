"""fastcal.antpos: KAntPos Jones tables (gencal antpos) and what applying them removes."""

from __future__ import annotations

import argparse
import shutil
import textwrap

import casacore.tables as ct
import numpy as np
import pytest
from casa_helpers import run_casa, skip_without_casa

from fastcal.antpos import antpos_table, read_antpos_file
from fastcal.caltable import read_caltable
from fastcal.errors import ParameterError, SelectionError
from fastcal.geometry import SPEED_OF_LIGHT, antpos_direction_itrf
from fastcal.simulate import SimConfig, simulate


def test_table_layout_like_gencal(tiny_ms):
    path, truth = tiny_ms
    names = truth.antenna_names
    tab = antpos_table(path, antenna=f"{names[1]},{names[3]}",
                       offsets=[0.01, -0.02, 0.003, 0.0, 0.004, -0.005])
    assert tab.vis_cal == "KAntPos Jones" and tab.par_type == "Float"
    assert tab.nrow == truth.n_ant and tab.spw_ids.tolist() == [0]
    assert np.all(tab.time == 0) and np.all(tab.field_id == -1) and np.all(tab.scan == -1)
    assert np.all(tab.antenna2 == -1) and np.all(tab.interval == 0)
    assert np.all(tab.paramerr == 0) and np.all(tab.snr == 1) and not tab.flag.any()
    p = tab.params[:, 0, :]
    np.testing.assert_allclose(p[1], [0.01, -0.02, 0.003], rtol=1e-6)
    np.testing.assert_allclose(p[3], [0.0, 0.004, -0.005], rtol=1e-6)
    assert not p[[0, 2, 4]].any()


def test_corrections_files(tiny_ms, tmp_path):
    path, truth = tiny_ms
    a, b = truth.antenna_names[0], truth.antenna_names[4]
    plain = tmp_path / "ant.txt"
    plain.write_text(f"# name dx dy dz (m, ITRF)\n{a} 0.001 0.002 0.003  # new pad\n\n"
                     f"{b}, -0.001, 0, 0.0005\n")
    offs = read_antpos_file(plain)
    np.testing.assert_allclose(offs[a], [0.001, 0.002, 0.003])
    csvf = tmp_path / "antennapos.csv"
    csvf.write_text("ms,antenna,xoffset,yoffset,zoffset,comment\n"
                    f"{path.name},{a},0.001,0.002,0.003,from DB\n"
                    f"other.ms,{b},9,9,9,not this MS\n")
    tab_plain = antpos_table(path, file=plain)
    tab_csv = antpos_table(path, file=csvf)
    np.testing.assert_allclose(tab_csv.params[0, 0], [0.001, 0.002, 0.003], rtol=1e-6)
    assert not tab_csv.params[4].any()  # the other MS's row is ignored
    np.testing.assert_allclose(tab_plain.params[4, 0], [-0.001, 0, 0.0005], rtol=1e-6)
    bad = tmp_path / "bad.txt"
    bad.write_text(f"{a} 0.1 0.2\n")
    with pytest.raises(ParameterError, match=r"bad\.txt:1: expected 'name dx dy dz'"):
        antpos_table(path, file=bad)


def test_bad_input(tiny_ms):
    path, truth = tiny_ms
    with pytest.raises(SelectionError, match="unknown antenna 'XX99'; valid names: DA41"):
        antpos_table(path, antenna="XX99", offsets=[0, 0, 0])
    with pytest.raises(ParameterError, match="offsets has 2 values for 1 antenna"):
        antpos_table(path, antenna=truth.antenna_names[0], offsets=[0, 0])
    with pytest.raises(ParameterError, match="give antenna"):
        antpos_table(path)


def test_cli(tiny_ms, tmp_path):
    from fastcal.antpos import add_cli_arguments, run_from_args

    parser = argparse.ArgumentParser()
    add_cli_arguments(parser)
    out = tmp_path / "cli.antpos"
    a = tiny_ms[1].antenna_names[2]
    assert run_from_args(parser.parse_args([str(tiny_ms[0]), str(out), "--antenna", a,
                                            "--offsets", "0.01,0,0"])) == 0
    np.testing.assert_allclose(read_caltable(out).params[2, 0], [0.01, 0, 0], rtol=1e-6)


# ------------------------------------------------------------------ geometry / application


@pytest.fixture(scope="module")
def antpos_ms(tmp_path_factory):
    """Noise-free point-source MS whose only corruption is antenna position errors (1 cm)."""
    path = tmp_path_factory.mktemp("antpos") / "ap.ms"
    cfg = SimConfig.tiny(seed=11, antpos_error_m=0.01, gains=False, bandpass=False,
                         delays=False, tsys=False, wvr=False, dry_residual=False, noise=False)
    truth = simulate(path, config=cfg)
    return path, truth


def _science_rows(path, truth, field_role="target"):
    spw = int(truth.science_spw_ids[0])
    fid = truth.field_id(field_role)
    with ct.table(str(path), ack=False) as t:
        q = t.query(f"DATA_DESC_ID=={spw} && FIELD_ID=={fid} && ANTENNA1!=ANTENNA2")
        out = {c: q.getcol(c) for c in ("TIME", "ANTENNA1", "ANTENNA2", "DATA")}
        q.close()
    with ct.table(str(path / "FIELD"), ack=False) as t:
        ra, dec = t.getcell("PHASE_DIR", fid)[0]
    freq = truth.science_chan_freq[0]
    return out, spw, fid, freq, ra, dec


def test_injected_phase_is_the_geometric_term(antpos_ms):
    """The data phase equals 2 pi nu (dw_p - dw_q) / c with dw = offset . s_hat (ITRF):
    the convention a KAntPos table of the true offsets must undo."""
    path, truth = antpos_ms
    d, spw, fid, freq, ra, dec = _science_rows(path, truth)
    with ct.table(str(path / "ANTENNA"), ack=False) as t:
        ref = t.getcell("POSITION", 0)
    s = antpos_direction_itrf(d["TIME"], ra, dec, ref)  # (row, 3), CASA's KAntPos convention
    dw = np.einsum("rk,rk->r", s, truth.antpos_offsets[d["ANTENNA1"]]) - np.einsum(
        "rk,rk->r", s, truth.antpos_offsets[d["ANTENNA2"]])
    expected = 2 * np.pi * freq[None, :] * dw[:, None] / SPEED_OF_LIGHT
    resid = np.angle(d["DATA"][:, :, 0] * np.exp(-1j * expected))
    assert np.abs(expected).max() > 0.3  # the error is visible (rad)
    assert np.abs(resid).max() < 1e-4


def test_applying_the_true_table_removes_the_phase(antpos_ms):
    """End to end through fastcal.interp (the Jones evaluation applycal uses): dividing the
    data by J_p conj(J_q) of antpos_table(true offsets) leaves the real model flux."""
    interp = pytest.importorskip("fastcal.interp")
    from fastcal.ms import open_ms

    path, truth = antpos_ms
    info = open_ms(path)
    d, spw, fid, freq, ra, dec = _science_rows(path, truth)
    names = list(truth.antenna_names)
    good = antpos_table(path, antenna=names, offsets=truth.antpos_offsets.ravel())
    wrong = antpos_table(path, antenna=names, offsets=np.zeros(3 * len(names)))
    model = truth.model_flux(fid, freq)
    scan = int(np.unique(truth.time_scan[np.isin(truth.time, d["TIME"])])[0])
    res = {}
    for label, tab in (("good", good), ("wrong", wrong)):
        specs = interp.prepare_gaintables(info, [tab])
        ut, inv = np.unique(d["TIME"], return_inverse=True)
        cj = interp.chunk_jones(specs, info, spw_id=spw, field_id=fid, scan=scan,
                                observation_id=0, times=ut, chan_freq=freq, n_ant=truth.n_ant)
        jp = cj.jones[inv, d["ANTENNA1"], :, 0]
        jq = cj.jones[inv, d["ANTENNA2"], :, 0]
        corr = d["DATA"][:, :, 0] / (jp * np.conj(jq))
        res[label] = np.abs(np.angle(corr)).max(), np.abs(np.abs(corr) / model[None] - 1).max()
    assert res["good"][0] < 1e-3 and res["good"][1] < 1e-3
    assert res["wrong"][0] > 0.3


# ------------------------------------------------------------------ CASA parity


@pytest.mark.casa
def test_matches_casa_gencal(tiny_ms, tmp_path):
    skip_without_casa()
    path, truth = tiny_ms
    ms = tmp_path / "c.ms"
    shutil.copytree(path, ms)
    ants = f"{truth.antenna_names[1]},{truth.antenna_names[2]}"
    par = [0.01, 0.02, 0.03, -0.01, 0.0, 0.005]
    run_casa(textwrap.dedent(f"""
        from casatasks import gencal
        gencal(vis={str(ms)!r}, caltable={str(tmp_path / 'casa.ant')!r}, caltype='antpos',
               antenna={ants!r}, parameter={par!r})
        emit({{"ok": True}})
    """))
    casa = read_caltable(tmp_path / "casa.ant")
    ours = antpos_table(ms, antenna=ants, offsets=par)
    assert ours.differences(casa) == ["casa_version", "extra"]


def test_applycal_with_true_table_removes_the_phase(antpos_ms, copy_ms, tmp_path):
    """End to end: fastcal.apply.applycal with antpos_table(true offsets) leaves CORRECTED_DATA
    equal to the real model flux on every science spw and field."""
    apply = pytest.importorskip("fastcal.apply")
    path, truth = antpos_ms
    ms = copy_ms(path)
    names = list(truth.antenna_names)
    table = antpos_table(ms, tmp_path / "true.antpos", antenna=names,
                         offsets=truth.antpos_offsets.ravel())
    assert table.nrow == truth.n_ant
    sci = ",".join(str(int(s)) for s in truth.science_spw_ids)
    apply.applycal(str(ms), gaintable=[str(tmp_path / "true.antpos")], spw=sci, flagbackup=False)
    with ct.table(str(ms), ack=False) as t:
        for k, spw in enumerate(truth.science_spw_ids):
            q = t.query(f"DATA_DESC_ID=={int(spw)} && ANTENNA1!=ANTENNA2")
            cd, data, fid = q.getcol("CORRECTED_DATA"), q.getcol("DATA"), q.getcol("FIELD_ID")
            q.close()
            model = np.stack([truth.model_flux(int(f), truth.science_chan_freq[k]) for f in fid])
            assert np.abs(np.angle(data[:, :, 0])).max() > 0.3  # there was a phase to remove
            np.testing.assert_allclose(np.angle(cd[:, :, [0, -1]]), 0.0, atol=1e-3)
            np.testing.assert_allclose(np.abs(cd[:, :, 0]) / model, 1.0, atol=1e-3)


def test_antpos_direction_is_casa_apparent_geometry():
    """antpos_direction_itrf: exact casacore.measures conversion at every time (the anchor
    grid plus sidereal rotation costs < 1e-7 rad), precession since J2000 visible against
    the simple J2000-as-apparent model (2024: ~5e-3 rad), and a unit vector."""
    from casacore import quanta as qa
    from casacore.measures import measures

    from fastcal.geometry import ANCHOR_SPACING_S, source_direction_itrf

    ra, dec = 1.1, -0.6
    ref = np.array([2225061.164, -5440057.37, -2481681.15])
    t0 = 60476.3 * 86400.0
    times = t0 + np.array([0.0, 0.37 * ANCHOR_SPACING_S, 0.49 * ANCHOR_SPACING_S, 3333.3])
    s = antpos_direction_itrf(times, ra, dec, ref)
    dm = measures()
    dm.do_frame(dm.position("itrf", *[qa.quantity(x, "m") for x in ref]))
    dm.do_frame(dm.direction("J2000", qa.quantity(ra, "rad"), qa.quantity(dec, "rad")))
    for k, t in enumerate(times):
        dm.do_frame(dm.epoch("utc", qa.quantity(t, "s")))
        unit = dm.baseline("itrf", qa.quantity([1.0, 0, 0], "m"), qa.quantity([0, 1.0, 0], "m"),
                           qa.quantity([0, 0, 1.0], "m"))
        exact = np.asarray(dm.to_uvw(unit)["xyz"].get_value()).reshape(3, 3)[:, 2]
        assert np.linalg.norm(s[k] - exact) < 1e-7
    np.testing.assert_allclose(np.linalg.norm(s, axis=-1), 1.0, rtol=1e-12)
    gap = np.linalg.norm(s - source_direction_itrf(times, ra, dec), axis=-1)
    assert np.all((gap > 2e-3) & (gap < 1e-2))
