"""fastcal.applycal: accuracy against the simulator's truth, applymodes, calwt, flags and
flag backups, bad input (nothing written), and the CLI."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess

import casacore.tables as ct
import numpy as np
import pytest
from truth_tables import true_bandpass, true_gains

from fastcal.apply import add_cli_arguments, applycal, run_from_args
from fastcal.caltable import CalTable
from fastcal.errors import CalTableError, MSError, ParameterError, SelectionError
from fastcal.flagversions import list_flag_versions, restore_flags


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """A tiny MS in Jy (no Tsys, WVR or dry-path terms) with noise, and truth-built tables."""
    from fastcal.simulate import SimConfig, simulate

    d = tmp_path_factory.mktemp("apply")
    path = d / "obs.ms"
    truth = simulate(
        path, config=SimConfig.tiny(seed=7).replace(tsys=False, wvr=False, dry_residual=False)
    )
    sci = [int(s) for s in truth.science_spw_ids]
    g = true_gains(truth, path)
    b = true_bandpass(truth, path)
    k = CalTable.from_solutions(
        "K Jones",
        {s: -truth.delays_ns[None, :, None, :] for s in sci},
        times=truth.time[:1],
        ms=path,
    )
    tables = {
        "G": str(g.write(d / "obs.G")),
        "B": str(b.write(d / "obs.B")),
        "K": str(k.write(d / "obs.K")),
    }
    return path, truth, sci, tables


def _cols(ms, *cols, spws=None):
    """Columns of the rows of `spws` (default: every DDID), concatenated DDID by DDID (cells of
    different shapes are flattened per row)."""
    with ct.table(str(ms), ack=False) as t:
        ddids = sorted(set(t.getcol("DATA_DESC_ID").tolist())) if spws is None else list(spws)
        parts = {c: [] for c in cols}
        for d in ddids:
            q = t.query(f"DATA_DESC_ID == {d}")
            for c in cols:
                v = q.getcol(c)
                parts[c].append(v)
            q.close()
    if spws is None or len({p.shape[1:] for p in parts[cols[0]]}) > 1:
        return {c: np.concatenate([p.reshape(-1) for p in parts[c]]) for c in cols}
    return {c: np.concatenate(parts[c]) for c in cols}


def _others(ms, spws):
    with ct.table(str(ms), ack=False) as t:
        return sorted(set(t.getcol("DATA_DESC_ID").tolist()) - set(spws))


def _model(truth, field_id, freq):
    return (
        truth.field_flux_jy[field_id][:, None]
        * (freq[None, :] / truth.flux_ref_freq_hz) ** truth.field_spix[field_id][:, None]
    )


def test_true_gains_recover_the_model_within_the_noise(sim, copy_ms):
    path, truth, sci, tabs = sim
    ms = copy_ms(path)
    data_before = _cols(ms, "DATA")["DATA"]
    rep = applycal(
        ms,
        [tabs["G"], tabs["B"], tabs["K"]],
        interp=["linear", "nearest", "nearest"],
        spw=",".join(map(str, sci)),
    )
    assert rep.n_newly_flagged == 0 and rep.flag_version == "applycal_1"
    assert set(rep.columns_written) >= {"CORRECTED_DATA", "FLAG", "WEIGHT"}
    np.testing.assert_array_equal(_cols(ms, "DATA")["DATA"], data_before)  # data is sacred
    for s in sci:
        c = _cols(
            ms, "CORRECTED_DATA", "WEIGHT", "SIGMA", "FIELD_ID", "ANTENNA1", "ANTENNA2", spws=[s]
        )
        cross = c["ANTENNA1"] != c["ANTENNA2"]
        freq = truth.science_chan_freq[truth.science_index(s)]
        model = _model(truth, c["FIELD_ID"][cross], freq)
        resid = c["CORRECTED_DATA"][cross][:, :, [0, -1]] - model[:, :, None]
        z2 = np.abs(resid) ** 2 * c["WEIGHT"][cross][:, None, [0, -1]]
        assert 1.7 < z2.mean() < 2.3  # |n|^2 = 2 sigma^2 with sigma = 1/sqrt(WEIGHT): noise-limited
        z = resid * np.sqrt(c["WEIGHT"][cross][:, None, [0, -1]])
        assert abs(z.mean()) < 5 * np.sqrt(2 / z.size)  # unbiased
        # calwt: WEIGHT = |g_p g_q|^2 |b|^2 / SIGMA^2, never the raw 1/SIGMA^2
        assert not np.allclose(c["WEIGHT"], 1 / c["SIGMA"] ** 2, rtol=1e-3)


def test_rerun_is_identical_and_calwt_false_keeps_weights(sim, copy_ms):
    path, truth, sci, tabs = sim
    ms = copy_ms(path)
    spw = ",".join(map(str, sci))
    applycal(ms, [tabs["G"], tabs["B"]], spw=spw, flagbackup=False)
    first = _cols(ms, "CORRECTED_DATA", "WEIGHT", "FLAG")
    applycal(ms, [tabs["G"], tabs["B"]], spw=spw, flagbackup=False)
    second = _cols(ms, "CORRECTED_DATA", "WEIGHT", "FLAG")
    for k in first:
        np.testing.assert_array_equal(first[k], second[k])
    w0 = _cols(path, "WEIGHT")["WEIGHT"]
    ms2 = copy_ms(path, "nowt.ms")
    rep = applycal(ms2, [tabs["G"]], spw=spw, calwt=False, n_threads=1)
    np.testing.assert_array_equal(_cols(ms2, "WEIGHT")["WEIGHT"], w0)
    assert "WEIGHT" not in rep.columns_written


def _flagged_g(path, truth, sci, bad_ant):
    flag = {s: np.zeros((truth.time.size, len(truth.antenna_names), 1, 2), bool) for s in sci}
    for s in sci:
        flag[s][:, bad_ant] = True
    return true_gains(truth, path, flag=flag)


def test_flagged_solutions_flag_data_and_backup_restores(sim, copy_ms):
    path, truth, sci, tabs = sim
    ms = copy_ms(path)
    spw = ",".join(map(str, sci))
    flag0 = _cols(ms, "FLAG")["FLAG"]
    rep = applycal(ms, [_flagged_g(path, truth, sci, 2)], spw=spw)
    c = _cols(ms, "FLAG", "ANTENNA1", "ANTENNA2", spws=sci)
    has2 = (c["ANTENNA1"] == 2) | (c["ANTENNA2"] == 2)
    assert c["FLAG"][has2].all()
    assert not c["FLAG"][~has2].any()
    assert not _cols(ms, "FLAG", spws=_others(ms, sci))["FLAG"].any()
    assert rep.n_newly_flagged == int(c["FLAG"].sum())
    assert [v.name for v in list_flag_versions(ms)] == ["applycal_1"]
    restore_flags(ms, "applycal_1")
    np.testing.assert_array_equal(_cols(ms, "FLAG")["FLAG"], flag0)


def test_applymodes(sim, copy_ms):
    path, truth, sci, tabs = sim
    spw = ",".join(map(str, sci))
    g = _flagged_g(path, truth, sci, 1)
    # trial: nothing written at all
    ms = copy_ms(path, "trial.ms")
    rep = applycal(ms, [g], spw=spw, applymode="trial")
    assert rep.n_newly_flagged > 0 and rep.columns_written == ()
    with ct.table(str(ms), ack=False) as t:
        assert "CORRECTED_DATA" not in t.colnames()
    assert not _cols(ms, "FLAG")["FLAG"].any()
    assert not os.path.exists(str(ms) + ".flagversions")
    # flagonly: flags, no CORRECTED_DATA
    ms = copy_ms(path, "fo.ms")
    rep = applycal(ms, [g], spw=spw, applymode="flagonly")
    with ct.table(str(ms), ack=False) as t:
        assert "CORRECTED_DATA" not in t.colnames()
    assert _cols(ms, "FLAG")["FLAG"].sum() == rep.n_newly_flagged
    # calonly: data calibrated, flags untouched, flagged solutions counted and left uncorrected
    ms = copy_ms(path, "co.ms")
    rep = applycal(ms, [g], spw=spw, applymode="calonly")
    c = _cols(ms, "FLAG", "DATA", "CORRECTED_DATA", "ANTENNA1", "ANTENNA2", spws=sci)
    assert not c["FLAG"].any() and rep.n_uncalibrated > 0 and rep.flag_version is None
    bad = (c["ANTENNA1"] == 1) | (c["ANTENNA2"] == 1)
    auto1 = (c["ANTENNA1"] == 1) & (c["ANTENNA2"] == 1)
    np.testing.assert_array_equal(c["CORRECTED_DATA"][auto1], c["DATA"][auto1])  # J_1 taken as 1
    assert not np.allclose(c["CORRECTED_DATA"][~bad], c["DATA"][~bad])
    with pytest.raises(ParameterError, match="applymode='bogus'"):
        applycal(ms, [g], applymode="bogus")


def test_default_spw_selection_skips_wvr_and_tsys_spws(sim, copy_ms):
    path, truth, sci, tabs = sim
    ms = copy_ms(path)
    rep = applycal(ms, [tabs["G"]], flagbackup=False)
    assert set(rep.skipped_spws) == {int(truth.wvr_spw_id), *map(int, truth.tsys_spw_ids)}
    c = _cols(ms, "DATA", "CORRECTED_DATA", spws=_others(ms, sci))
    np.testing.assert_array_equal(c["CORRECTED_DATA"], c["DATA"])


# ----------------------------------------------------------------------------- bad input


def _untouched(ms):
    with ct.table(str(ms), ack=False) as t:
        assert "CORRECTED_DATA" not in t.colnames()
    assert not _cols(ms, "FLAG")["FLAG"].any()
    assert not os.path.exists(str(ms) + ".flagversions")


def test_not_a_caltable_and_unsupported_type(sim, copy_ms, tmp_path):
    path, truth, sci, tabs = sim
    ms = copy_ms(path)
    with pytest.raises(CalTableError, match="Measurement Set"):
        applycal(ms, [str(path)], spw=str(sci[0]))
    fake = tmp_path / "fake.D"
    shutil.copytree(tabs["G"], fake)
    with ct.table(str(fake), readonly=False, ack=False) as t:
        t.putinfo({"type": "Calibration", "subType": "D Jones", "readme": ""})
        t.putkeyword("VisCal", "D Jones")
    with pytest.raises(CalTableError, match="D Jones"):
        applycal(ms, [str(fake)], spw=str(sci[0]))
    with pytest.raises(CalTableError, match="does not exist|missing|not"):
        applycal(ms, [str(tmp_path / "nothing.G")], spw=str(sci[0]))
    _untouched(ms)


def test_missing_spw_and_far_times(sim, copy_ms):
    path, truth, sci, tabs = sim
    ms = copy_ms(path)
    g1 = CalTable.from_solutions(
        "G Jones", {sci[0]: truth.gains[:, :, 0, :][:, :, None, :]}, times=truth.time, ms=path
    )
    with pytest.raises(CalTableError, match=f"no solutions for spw {sci[1]}.*no spwmap given"):
        applycal(ms, [g1], spw=",".join(map(str, sci)))
    far = CalTable.from_solutions(
        "G Jones",
        {s: truth.gains[:1, :, 0, :][:, :, None, :] for s in sci},
        times=truth.time[:1] + 5 * 86400.0,
        ms=path,
    )
    with pytest.raises(CalTableError, match="no solutions near the data"):
        applycal(ms, [far], spw=",".join(map(str, sci)))
    with pytest.raises(ParameterError, match="gaintable is empty"):
        applycal(ms, [])
    _untouched(ms)
    # with a spwmap it works
    rep = applycal(
        ms,
        [g1],
        spw=",".join(map(str, sci)),
        spwmap=[[0] * sci[0] + [sci[0], sci[0]]],
        flagbackup=False,
    )
    assert rep.n_rows > 0


def test_calflagstrict_flags_spws_the_tables_cannot_calibrate(sim, copy_ms):
    """calflagstrict (CASA): a selected spw without solutions is flagged entirely instead of
    raising; its CORRECTED_DATA is left as initialised (DATA); the other spw is calibrated."""
    path, truth, sci, tabs = sim
    g1 = CalTable.from_solutions(
        "G Jones", {sci[0]: truth.gains[:, :, 0, :][:, :, None, :]}, times=truth.time, ms=path
    )
    spw = ",".join(map(str, sci))
    ms = copy_ms(path, "strict.ms")
    rep = applycal(ms, [g1], spw=spw, applymode="calflagstrict", flagbackup=False)
    assert rep.strict_flagged_spws == (sci[1],) and "flagged: [" in rep.summary()
    c1 = _cols(ms, "FLAG", "DATA", "CORRECTED_DATA", spws=[sci[1]])
    assert c1["FLAG"].all()
    np.testing.assert_array_equal(c1["CORRECTED_DATA"], c1["DATA"])
    c0 = _cols(ms, "FLAG", "DATA", "CORRECTED_DATA", spws=[sci[0]])
    assert not c0["FLAG"].all() and not np.allclose(c0["CORRECTED_DATA"], c0["DATA"])
    assert rep.n_newly_flagged >= c1["FLAG"].size
    with pytest.raises(SelectionError, match="no selected spw"):
        applycal(copy_ms(path, "strict_none.ms"), [g1], spw=str(sci[1]),
                 applymode="calflagstrict")


def test_read_only_ms(sim, copy_ms):
    path, truth, sci, tabs = sim
    ms = copy_ms(path)
    if shutil.which("chattr") is None:
        pytest.skip("chattr not available")
    proc = subprocess.run(["chattr", "+i", str(ms), str(ms / "table.dat")], capture_output=True)
    if proc.returncode != 0:
        pytest.skip("cannot make the MS immutable here")
    try:
        with pytest.raises(MSError, match="read-only"):
            applycal(ms, [tabs["G"]], spw=str(sci[0]))
        assert not os.path.exists(str(ms) + ".flagversions")
        rep = applycal(ms, [tabs["G"]], spw=str(sci[0]), applymode="trial")  # reading is fine
        assert rep.n_rows > 0
    finally:
        subprocess.run(["chattr", "-i", str(ms), str(ms / "table.dat")], check=True)
    _untouched(ms)


def test_cli(sim, copy_ms, capsys):
    path, truth, sci, tabs = sim
    ms = copy_ms(path)
    p = argparse.ArgumentParser()
    add_cli_arguments(p)
    args = p.parse_args(
        [
            str(ms),
            "--gaintable",
            tabs["G"],
            tabs["B"],
            "--interp",
            "linear",
            "nearest",
            "--spw",
            ",".join(map(str, sci)),
            "--calwt",
            "true",
            "false",
            "--no-flagbackup",
        ]
    )
    assert run_from_args(args) == 0
    assert "CORRECTED_DATA" in capsys.readouterr().out
    args = p.parse_args([str(ms), "--gaintable", str(path)])
    assert run_from_args(args) == 2
    assert "not a calibration table" in capsys.readouterr().err


def test_antpos_table_removes_a_simulated_position_error(tmp_path):
    from fastcal.simulate import SimConfig, simulate

    path = tmp_path / "ap.ms"
    truth = simulate(
        path,
        config=SimConfig.tiny(seed=5).replace(
            tsys=False,
            wvr=False,
            dry_residual=False,
            noise=False,
            gains=False,
            bandpass=False,
            delays=False,
            antpos_error_m=0.003,
        ),
    )
    sci = [int(s) for s in truth.science_spw_ids]
    off = truth.antpos_offsets[None, :, None, :]
    tab = CalTable.from_solutions("KAntPos Jones", {0: off}, times=np.array([0.0]), ms=path)
    rep = applycal(path, [tab], spw=",".join(map(str, sci)), flagbackup=False)
    assert rep.n_newly_flagged == 0
    for s in sci:
        c = _cols(path, "DATA", "CORRECTED_DATA", "FIELD_ID", "ANTENNA1", "ANTENNA2", spws=[s])
        cross = c["ANTENNA1"] != c["ANTENNA2"]
        model = _model(
            truth, c["FIELD_ID"][cross], truth.science_chan_freq[truth.science_index(s)]
        )[:, :, None]
        before = np.abs(np.angle(c["DATA"][cross][:, :, [0, -1]] / model)).max()
        after = np.abs(np.angle(c["CORRECTED_DATA"][cross][:, :, [0, -1]] / model)).max()
        assert before > 0.1 and after < 1e-3, (before, after)


def test_spectral_weights_are_calibrated_per_channel_b_by_its_channel_mean(tmp_path):
    from fastcal.simulate import SimConfig, simulate

    path = tmp_path / "ws.ms"
    truth = simulate(
        path,
        config=SimConfig.tiny(seed=9).replace(
            tsys=False, wvr=False, dry_residual=False, delays=False, weight_spectrum=True
        ),
    )
    sci = [int(s) for s in truth.science_spw_ids]
    g = true_gains(truth, path)
    b = true_bandpass(truth, path)
    rep = applycal(
        path, [g, b], interp=["nearest", "nearest"], spw=",".join(map(str, sci)), flagbackup=False
    )
    assert "WEIGHT_SPECTRUM" in rep.columns_written
    for i, s in enumerate(sci):
        c = _cols(
            path, "WEIGHT_SPECTRUM", "SIGMA", "WEIGHT", "TIME", "ANTENNA1", "ANTENNA2", spws=[s]
        )
        ti = truth.time_index(c["TIME"])
        # G per channel (one value anyway); B by the mean of |B|^2 over its channels, also
        # for WEIGHT_SPECTRUM, as CASA's BJones::calcWtScale (casatasks 6.7 gives a constant)
        b2 = np.mean(np.abs(truth.bandpass[i]) ** 2, axis=1)  # (n_ant, 2)
        gp = np.abs(truth.gains[ti, c["ANTENNA1"], i]) ** 2 * b2[c["ANTENNA1"]]
        gq = np.abs(truth.gains[ti, c["ANTENNA2"], i]) ** 2 * b2[c["ANTENNA2"]]
        expect = (gp * gq)[:, None, :] / c["SIGMA"][:, None, [0, -1]] ** 2
        ws = c["WEIGHT_SPECTRUM"][:, :, [0, -1]]
        np.testing.assert_allclose(ws, np.broadcast_to(expect, ws.shape), rtol=1e-4)
        np.testing.assert_allclose(c["WEIGHT"], np.median(c["WEIGHT_SPECTRUM"], axis=1), rtol=1e-6)


def test_channel_selection_calibrates_only_those_channels(sim, copy_ms):
    path, truth, sci, tabs = sim
    ms = copy_ms(path)
    rep = applycal(ms, [tabs["G"]], spw=f"{sci[0]}:2~5", flagbackup=False)
    assert rep.n_samples == rep.n_rows * 4 * 2
    c = _cols(ms, "DATA", "CORRECTED_DATA", spws=[sci[0]])
    np.testing.assert_array_equal(c["CORRECTED_DATA"][:, :2], c["DATA"][:, :2])
    np.testing.assert_array_equal(c["CORRECTED_DATA"][:, 6:], c["DATA"][:, 6:])
    assert not np.allclose(c["CORRECTED_DATA"][:, 2:6], c["DATA"][:, 2:6])


# --------------------------------------------------------------------------- the block pipeline

_CORR_REC = {9: (0, 0), 10: (0, 1), 11: (1, 0), 12: (1, 1)}


def _expected(ms, tables, interp, spw, mode):
    """CORRECTED_DATA, FLAG, WEIGHT per selected row as the per-chunk reference computes them:
    fastcal.interp.chunk_jones (NumPy product of the tables) + the reference kernel apply_rows on
    FLAG | FLAG_ROW and 1/SIGMA^2 (the code path applycal used before the block pipeline)."""
    from kernels.apply_rows_reference import apply_rows

    from fastcal.interp import chunk_jones, prepare_gaintables
    from fastcal.kernels.apply import N_COUNTS
    from fastcal.ms import open_ms, parse_selection, read_chunks

    info = open_ms(ms)
    specs = prepare_gaintables(info, tables, (), interp, (), True)
    out = {}
    for c in read_chunks(info, ("DATA", "FLAG"), selection=parse_selection(info, spw=spw)):
        cols = c.read(("DATA", "FLAG"))
        with ct.table(str(ms), ack=False) as t:
            s = np.stack([t.getcell("SIGMA", int(r)) for r in c.rows]).astype(np.float32)
        ut, tidx = np.unique(c.time, return_inverse=True)
        cj = chunk_jones(specs, info, spw_id=c.spw_id, field_id=c.field_id, scan=c.scan,
                         observation_id=c.observation_id, times=ut, chan_freq=c.freq,
                         n_ant=len(info.antennas), spectral_wscale=False)  # fmt: skip
        with np.errstate(divide="ignore"):
            w = np.where(s > 0, 1 / np.square(s, dtype=np.float32), 0).astype(np.float32)
        w = w[:, None, :]
        corr_rec = np.array([_CORR_REC[k] for k in c.corr_types], np.int64)
        d, f = cols["DATA"], cols["FLAG"]
        apply_rows(d, f, w, c.antenna1.astype(np.int32), c.antenna2.astype(np.int32),
                   tidx.astype(np.int64), cj.jones, cj.flag, np.ones((1, 1, 1, 2), np.float32),
                   cj.wscale_mean, corr_rec, mode, True, d, f, w, np.zeros(N_COUNTS, np.int64))  # fmt: skip
        out[c.spw_id] = (c.rows, d, f, w[:, 0, :])
    return out


def _full_pol_sim(tmp_path_factory):
    from fastcal.simulate import SimConfig, simulate

    d = tmp_path_factory.mktemp("fullpol")
    path = d / "fp.ms"
    truth = simulate(
        path,
        config=SimConfig.tiny(seed=4).replace(
            tsys=False, wvr=False, dry_residual=False, corr="XX,XY,YX,YY"
        ),
    )
    return path, truth


@pytest.fixture(scope="module")
def fullpol(tmp_path_factory):
    return _full_pol_sim(tmp_path_factory)


def _tables_with_flags(path, truth, sci, d):
    """G with a flagged antenna and one flagged solution, B with a flagged channel, K."""
    n_ant = len(truth.antenna_names)
    gflag = {s: np.zeros((truth.time.size, n_ant, 1, 2), bool) for s in sci}
    bflag = {s: np.zeros((1, n_ant, truth.bandpass[0].shape[1], 2), bool) for s in sci}
    for s in sci:
        gflag[s][:, 2] = True
        gflag[s][3, 1, 0, 0] = True
        bflag[s][0, 3, 2, 1] = True
    g = true_gains(truth, path, flag=gflag)
    b = true_bandpass(truth, path, flag=bflag)
    k = CalTable.from_solutions(
        "K Jones", {s: -truth.delays_ns[None, :, None, :] for s in sci},
        times=truth.time[:1], ms=path,
    )  # fmt: skip
    return [str(g.write(d / "f.G")), str(b.write(d / "f.B")), str(k.write(d / "f.K"))]


@pytest.mark.parametrize("which", ["dual", "full"])
@pytest.mark.parametrize("applymode", ["calflag", "calonly", "flagonly"])
def test_block_pipeline_equals_per_chunk_reference(
    which, applymode, sim, fullpol, copy_ms, tmp_path
):
    from fastcal.kernels.apply import MODE_CALFLAG, MODE_CALONLY, MODE_FLAGONLY

    path, truth = (sim[0], sim[1]) if which == "dual" else fullpol
    sci = [int(s) for s in truth.science_spw_ids]
    tables = _tables_with_flags(path, truth, sci, tmp_path)
    interp = ["linear", "nearest,linearflag", "nearest"]
    spw = ",".join(map(str, sci))
    ms = copy_ms(path, "ref.ms")
    with ct.table(str(ms), readonly=False, ack=False) as t:
        fr = t.getcol("FLAG_ROW")
        fr[[5, 77]] = True  # FLAG_ROW over a partial FLAG
        t.putcol("FLAG_ROW", fr)
    mode = {"calflag": MODE_CALFLAG, "calonly": MODE_CALONLY, "flagonly": MODE_FLAGONLY}
    expect = _expected(ms, tables, interp, spw, mode[applymode])
    rep = applycal(ms, tables, interp=interp, spw=spw, applymode=applymode, flagbackup=False,
                   chunk_bytes=6000, n_threads=3)  # fmt: skip
    assert rep.n_blocks > 3 * len(sci)  # several blocks per chunk, buffers reused
    with ct.table(str(ms), ack=False) as t:
        for rows, d, f, w in expect.values():
            names = [c for c in ("CORRECTED_DATA", "FLAG", "FLAG_ROW", "WEIGHT", "DATA")
                     if c in t.colnames()]  # fmt: skip
            got = {c: np.stack([t.getcell(c, int(r)) for r in rows]) for c in names}
            if applymode == "flagonly":
                assert "CORRECTED_DATA" not in got
            else:
                np.testing.assert_array_equal(got["CORRECTED_DATA"], d)
                np.testing.assert_array_equal(got["WEIGHT"], w)
            if applymode != "calonly":
                np.testing.assert_array_equal(got["FLAG"], f)
                np.testing.assert_array_equal(got["FLAG_ROW"], f.reshape(len(f), -1).all(1))
    if applymode == "calflag":
        assert rep.n_newly_flagged > 0


def test_unchanged_flags_are_not_rewritten(sim, copy_ms, monkeypatch):
    from fastcal.ms import ChunkWriter

    path, truth, sci, tabs = sim
    written = []
    orig = ChunkWriter.write_runs

    def spy(self, column, runs, values):
        written.append(column)
        return orig(self, column, runs, values)

    monkeypatch.setattr(ChunkWriter, "write_runs", spy)
    spw = ",".join(map(str, sci))
    ms = copy_ms(path)
    flag0 = _cols(ms, "FLAG", "FLAG_ROW")
    rep = applycal(ms, [tabs["G"], tabs["B"]], spw=spw, flagbackup=False)
    assert rep.n_newly_flagged == 0
    assert "CORRECTED_DATA" in written and "WEIGHT" in written and "FLAG" not in written
    after = _cols(ms, "FLAG", "FLAG_ROW")
    for k in flag0:
        np.testing.assert_array_equal(after[k], flag0[k])
    written.clear()
    ms2 = copy_ms(path, "flagged.ms")
    rep = applycal(ms2, [_flagged_g(path, truth, sci, 2)], spw=spw, flagbackup=False)
    assert rep.n_newly_flagged > 0 and "FLAG" in written


def test_progress_is_reported_per_block(sim, copy_ms):
    from fastcal.progress import progress_callback

    path, truth, sci, tabs = sim
    seen, calls = [], []
    with progress_callback(lambda desc, done, total: seen.append((desc, done, total))):
        rep = applycal(copy_ms(path), [tabs["G"]], spw=",".join(map(str, sci)),
                       flagbackup=False, chunk_bytes=20000,
                       progress=lambda done, total: calls.append((done, total)))  # fmt: skip
    n = rep.n_blocks
    assert n > 2
    assert seen == [("applycal", k, n) for k in range(n + 1)]
    assert calls == [(k, n) for k in range(1, n + 1)]


def test_write_runs_rejects_bad_input(sim, copy_ms):
    from fastcal.ms import ChunkWriter

    path, truth, sci, tabs = sim
    ms = copy_ms(path)
    with ct.table(str(ms), ack=False) as t:
        row = int(np.flatnonzero(t.getcol("DATA_DESC_ID") == sci[0])[0])
    with ChunkWriter(ms) as w:
        with pytest.raises(ParameterError, match="Data is sacred"):
            w.write_runs("DATA", [(0, 0, 1)], np.zeros((1, 8, 2), np.complex64))
        with pytest.raises(ParameterError, match="C-contiguous float32"):
            w.write_runs("WEIGHT", [(0, 0, 1)], np.zeros((1, 2), np.float64))
        with pytest.raises(ParameterError, match="do not fit"):
            w.write_runs("WEIGHT", [(0, 0, 3)], np.zeros((2, 2), np.float32))
        w.write_runs("WEIGHT", [(0, row, 2)], np.full((2, 2), 7.0, np.float32))
        with pytest.raises(MSError, match="writing WEIGHT failed"):  # wrong cell shape
            w.write_runs("WEIGHT", [(0, row, 1)], np.zeros((1, 3), np.float32))
    with ct.table(str(ms), ack=False) as t:
        np.testing.assert_array_equal(t.getcol("WEIGHT", row, 2), 7.0)
