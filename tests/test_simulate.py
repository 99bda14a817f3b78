"""Tests of the ALMA-like Measurement Set simulator (fastcal.simulate).

Every MS here is tiny (SimConfig.tiny: 5 antennas, 2 spws x 16 channels, 12 integrations) so
the whole module runs in seconds.  Expected values are recomputed independently from the
truth file with the formulas of docs/simulate.md, not taken from the writer.
"""

from __future__ import annotations

import argparse
import json
import os

import casacore.tables as ct
import numpy as np
import pytest

from fastcal.errors import ParameterError
from fastcal.simulate import (
    SimConfig,
    add_cli_arguments,
    atmosphere,
    load_truth,
    run_from_args,
    simulate,
    truth_paths,
)
from fastcal.simulate import array as sim_array
from fastcal.simulate.schedule import estimate_size_bytes

C = 299792458.0
ALL_OFF = dict(gains=False, bandpass=False, delays=False, tsys=False, wvr=False,
               dry_residual=False, noise=False)


# ---------------------------------------------------------------------------- helpers
def _sim(tmp_path_factory, name: str, **params):
    path = tmp_path_factory.mktemp("sim") / name
    truth = simulate(path, config=SimConfig.tiny(**params))
    return path, truth


def _query(ms, where: str, cols: list[str]) -> dict[str, np.ndarray]:
    with ct.table(str(ms), ack=False) as tab:
        sub = ct.taql(f"select from $1 where {where}", tables=[tab])
        out = {c: sub.getcol(c) for c in cols}
        sub.close()
    return out


def _source_vector(truth, field_id: int, time_mjd_s: np.ndarray) -> np.ndarray:
    """Unit vector to the field in the earth-fixed frame, (n_time, 3)."""
    with ct.table(os.path.join(truth.ms_path, "FIELD"), ack=False) as f:
        ra, dec = f.getcell("PHASE_DIR", field_id)[0]
    h = sim_array.gmst_rad(np.atleast_1d(time_mjd_s)) - ra
    return np.stack([np.cos(dec) * np.cos(h), -np.cos(dec) * np.sin(h),
                     np.full(h.shape, np.sin(dec))], axis=-1)


def _predict(truth, a1, a2, time, spw_id, field_id, with_tsys=True):
    """Noise-free DATA (nchan, 2) of one cross-correlation row from the truth arrays alone."""
    k = truth.science_index(spw_id)
    ti = truth.time_index(time)
    nu = truth.science_chan_freq[k]
    nu_c = 0.5 * (nu[0] + nu[-1])
    g = truth.gains[ti, :, k, :]
    kdel = np.exp(-2j * np.pi * truth.delays_ns[:, None, :] * 1e-9 * (nu - nu_c)[None, :, None])
    dw = truth.antpos_offsets @ _source_vector(truth, field_id, time)[0]  # geometric w error
    path = truth.wet_path[ti] + truth.dry_path[ti] - dw
    atm = np.exp(-2j * np.pi * nu[None, :] * path[:, None] / C)[..., None]
    f = g[:, None, :] * truth.bandpass[k] * kdel * atm
    s = truth.model_flux(field_id, nu)[:, None]
    if with_tsys:
        f = f / np.sqrt(truth.true_tsys(nu, truth.elevation[ti]))
        s = s / truth.jy_per_k
    return f[a1] * np.conj(f[a2]) * s


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Default tiny MS: every corruption on."""
    return _sim(tmp_path_factory, "tiny.ms")


@pytest.fixture(scope="module")
def gains_only(tmp_path_factory):
    """Noise-free tiny MS with only the gain corruption."""
    return _sim(tmp_path_factory, "gains.ms", **{**ALL_OFF, "gains": True})


# ---------------------------------------------------------------------------- structure
def test_ms_structure_matches_casa_schema(tiny):
    ms, _truth = tiny
    with ct.table(str(ms), ack=False) as t:
        assert t.info()["type"] == "Measurement Set"
        kw = t.getkeywords()
        assert kw["MS_VERSION"] == pytest.approx(2.0)
        for sub in ("ANTENNA", "DATA_DESCRIPTION", "FEED", "FIELD", "FLAG_CMD", "HISTORY",
                    "OBSERVATION", "POINTING", "POLARIZATION", "PROCESSOR", "SPECTRAL_WINDOW",
                    "STATE", "SOURCE", "SYSCAL"):
            assert str(kw[sub]).startswith("Table:"), sub
            with ct.table(str(ms / sub), ack=False) as s:
                required = ct.required_ms_desc(sub)
                for col, desc in required.items():
                    if col.startswith("_"):
                        continue
                    assert col in s.colnames(), f"{sub}.{col}"
                    assert s.getcoldesc(col)["valueType"] == desc["valueType"], f"{sub}.{col}"
        for col, desc in ct.required_ms_desc("MAIN").items():
            if not col.startswith("_"):
                assert t.getcoldesc(col)["valueType"] == desc["valueType"], col
        assert t.getcoldesc("DATA")["valueType"] == "complex"
        for col in ("DATA", "FLAG"):
            assert t.getdminfo(col)["TYPE"] == "TiledShapeStMan"
        assert t.getcolkeyword("TIME", "MEASINFO") == {"type": "epoch", "Ref": "UTC"}
        assert t.getcolkeyword("TIME", "QuantumUnits") == ["s"]
        assert t.getcolkeyword("UVW", "MEASINFO") == {"type": "uvw", "Ref": "J2000"}
        assert t.getcolkeyword("UVW", "QuantumUnits") == ["m", "m", "m"]
    with ct.table(str(ms / "SPECTRAL_WINDOW"), ack=False) as s:
        assert s.getcolkeyword("CHAN_FREQ", "MEASINFO")["VarRefCol"] == "MEAS_FREQ_REF"
        assert s.getcolkeyword("CHAN_FREQ", "QuantumUnits") == ["Hz"]
    with ct.table(str(ms / "POINTING"), ack=False) as s:
        assert s.getcolkeyword("DIRECTION", "MEASINFO")["Ref"] == "AZELGEO"
    with ct.table(str(ms / "SYSCAL"), ack=False) as s:
        assert s.getcolkeyword("TSYS_SPECTRUM", "QuantumUnits") == ["K"]
    with ct.table(str(ms / "OBSERVATION"), ack=False) as s:
        assert s.getcell("TELESCOPE_NAME", 0) == "ALMA"


def test_antennas_look_like_alma(tiny):
    ms, truth = tiny
    with ct.table(str(ms / "ANTENNA"), ack=False) as a:
        names, pos = a.getcol("NAME"), a.getcol("POSITION")
        assert a.nrows() == 5 and np.all(a.getcol("DISH_DIAMETER") == 12.0)
        stations = a.getcol("STATION")
    assert all(n[:2] in ("DA", "DV", "PM") for n in names) and len(set(names)) == 5
    assert all(s[0] in "AWNSP" for s in stations)
    enu = sim_array.itrf_to_enu(pos)
    assert np.all(np.abs(enu[:, :2]) < 2000.0) and np.all(np.abs(enu[:, 2]) < 50.0)
    assert list(names) == truth.antenna_names


def test_spectral_windows_and_polarizations(tiny):
    ms, truth = tiny
    with ct.table(str(ms / "SPECTRAL_WINDOW"), ack=False) as s:
        names = s.getcol("NAME")
        nchan = s.getcol("NUM_CHAN")
        bbc = s.getcol("BBC_NO")
        freqs = [s.getcell("CHAN_FREQ", i) for i in range(s.nrows())]
        widths = [s.getcell("CHAN_WIDTH", i) for i in range(s.nrows())]
        assert np.all(s.getcol("MEAS_FREQ_REF") == 5)
        assert np.allclose(s.getcol("TOTAL_BANDWIDTH"), [w.sum() for w in widths])
    with ct.table(str(ms / "DATA_DESCRIPTION"), ack=False) as d:
        spw_of_dd, pol_of_dd = d.getcol("SPECTRAL_WINDOW_ID"), d.getcol("POLARIZATION_ID")
    with ct.table(str(ms / "POLARIZATION"), ack=False) as p:
        corr_types = [list(p.getcell("CORR_TYPE", i)) for i in range(p.nrows())]
    assert names[0] == "WVR#NOMINAL" and nchan[0] == 4
    assert corr_types[pol_of_dd[0]] == [9]
    wvr_freq = freqs[0]
    assert np.all(np.abs(wvr_freq - 183.31e9) < 8e9)
    for tsys_id in truth.tsys_spw_ids:
        assert "#BB_" in names[tsys_id] and nchan[tsys_id] == 32
    for spw, tsys_id in zip(truth.science_spw_ids, truth.science_tsys_spw, strict=True):
        assert corr_types[pol_of_dd[spw]] == [9, 12]
        assert bbc[spw] == bbc[tsys_id] and 1 <= bbc[spw] <= 4
        lo = freqs[spw][0] - widths[spw][0] / 2
        hi = freqs[spw][-1] + widths[spw][-1] / 2
        tlo = freqs[tsys_id][0] - widths[tsys_id][0] / 2
        thi = freqs[tsys_id][-1] + widths[tsys_id][-1] / 2
        assert tlo - 1.0 <= lo and hi <= thi + 1.0
        assert atmosphere.alma_band(freqs[spw]) == 6
    assert list(spw_of_dd) == list(range(len(names)))


def test_scan_structure_and_intents(tiny):
    ms, truth = tiny
    with ct.table(str(ms), ack=False) as t:
        scan, ddid = t.getcol("SCAN_NUMBER"), t.getcol("DATA_DESC_ID")
        field, state = t.getcol("FIELD_ID"), t.getcol("STATE_ID")
        time, a1, a2 = t.getcol("TIME"), t.getcol("ANTENNA1"), t.getcol("ANTENNA2")
    with ct.table(str(ms / "STATE"), ack=False) as s:
        modes = s.getcol("OBS_MODE")
    scans = list(dict.fromkeys(scan))
    assert scans == list(range(1, len(scans) + 1)) and np.all(np.diff(scan) >= 0)
    mode_of = {n: modes[state[scan == n][0]] for n in scans}
    field_of = {n: truth.field_roles[field[scan == n][0]] for n in scans}
    atm = [n for n in scans if "CALIBRATE_ATMOSPHERE" in mode_of[n]]
    # ATM(bp), BANDPASS+FLUX, ATM(phase), PHASE, ATM(target), TARGET, PHASE
    assert atm == [1, 3, 5]
    assert "CALIBRATE_BANDPASS#ON_SOURCE" in mode_of[2] and "CALIBRATE_FLUX#ON_SOURCE" in mode_of[2]
    assert "CALIBRATE_PHASE#ON_SOURCE" in mode_of[4] and mode_of[6] == "OBSERVE_TARGET#ON_SOURCE"
    assert [field_of[n] for n in scans] == ["bandpass", "bandpass", "phase", "phase", "target",
                                            "target", "phase"]
    assert "CALIBRATE_PHASE" in mode_of[scans[-1]]
    assert all("CALIBRATE_WVR#OFF_SOURCE" in mode_of[n] for n in atm)
    tsys_dd, sci_dd = set(truth.tsys_spw_ids), set(truth.science_spw_ids)
    for n in scans:
        dds = set(ddid[scan == n])
        assert dds == ({0} | (tsys_dd if n in atm else sci_dd))
        # DDID-major inside a scan, then time, then baseline with ANTENNA1 <= ANTENNA2
        sel = scan == n
        assert np.all(np.diff(ddid[sel]) >= 0)
        for d in dds:
            rows = sel & (ddid == d)
            t_d, p, q = time[rows], a1[rows], a2[rows]
            assert np.all(np.diff(t_d) >= 0)
            assert np.all(p <= q)
            same_t = np.diff(t_d) == 0
            key = p * 100 + q
            assert np.all(np.diff(key)[same_t] > 0)
    n_bl = 5 * 6 // 2
    assert np.sum((scan == 2) & (ddid == truth.science_spw_ids[0])) == 3 * n_bl


def test_wvr_rows_carry_sky_brightness(tiny):
    ms, truth = tiny
    r = _query(ms, "DATA_DESC_ID==0", ["ANTENNA1", "ANTENNA2", "TIME", "INTERVAL", "DATA",
                                        "FIELD_ID", "PROCESSOR_ID"])
    assert np.all(r["ANTENNA1"] == r["ANTENNA2"]) and r["DATA"].shape[1:] == (4, 1)
    assert np.allclose(r["INTERVAL"], 1.152)
    times = np.unique(r["TIME"])
    steps = np.diff(times)
    assert np.allclose(steps[steps < 2.0], 1.152)
    assert np.all(np.bincount(np.searchsorted(times, r["TIME"])) == 5)  # every antenna, every time
    assert np.allclose(times, truth.wvr_time)
    assert np.all(r["DATA"].imag == 0)
    # brightness recomputed from the truth path, which is line-of-sight: the slant water
    # column is pwv / sin(el) + L / PATH_PER_PWV (wvr_brightness takes the zenith column)
    wi = np.searchsorted(truth.wvr_time, r["TIME"])
    el = np.empty(r["TIME"].size)
    for fid in np.unique(r["FIELD_ID"]):
        sel = r["FIELD_ID"] == fid
        with ct.table(str(ms / "FIELD"), ack=False) as f:
            ra, dec = f.getcell("PHASE_DIR", int(fid))[0]
        el[sel] = sim_array.azel(r["TIME"][sel], ra, dec)[1]
    slant = truth.pwv_mm / np.sin(el) + truth.wvr_path[wi, r["ANTENNA1"]] * 1e3 / atmosphere.PATH_PER_PWV
    expect = atmosphere.wvr_brightness(slant * np.sin(el), el)
    resid = r["DATA"][:, :, 0].real - expect
    assert np.std(resid) == pytest.approx(truth.noise_sigma["0"], rel=0.15)
    assert np.all(expect[:, 0] > expect[:, 3])  # channel 1 (nearest the line) brightest


@pytest.fixture(scope="module")
def quiet(tmp_path_factory):
    """Tiny simulation without noise (two cycles)."""
    return _sim(tmp_path_factory, "quiet.ms", noise=False, n_cycles=2)


def _wvr_elevation(ms, r) -> np.ndarray:
    el = np.empty(r["TIME"].size)
    with ct.table(str(ms / "FIELD"), ack=False) as f:
        for fid in np.unique(r["FIELD_ID"]):
            ra, dec = f.getcell("PHASE_DIR", int(fid))[0]
            sel = r["FIELD_ID"] == fid
            el[sel] = sim_array.azel(r["TIME"][sel], ra, dec)[1]
    return el


def test_wvr_sees_the_line_of_sight_water(quiet):
    """The same line-of-sight path drives the visibilities and the WVRs: the WVR sees the
    slant column pwv / sin(el) + L / PATH_PER_PWV, not a zenith column pwv + L / PATH_PER_PWV
    times the airmass (which reads 1 / sin(el) too much path)."""
    ms, truth = quiet
    r = _query(ms, "DATA_DESC_ID==0", ["ANTENNA1", "TIME", "DATA", "FIELD_ID"])
    el = _wvr_elevation(ms, r)
    path_mm = truth.wvr_path[np.searchsorted(truth.wvr_time, r["TIME"]), r["ANTENNA1"]] * 1e3
    slant = truth.pwv_mm / np.sin(el) + path_mm / atmosphere.PATH_PER_PWV
    tb = r["DATA"][:, :, 0].real
    np.testing.assert_allclose(tb, atmosphere.wvr_brightness(slant * np.sin(el), el), atol=1e-3)
    zenith_model = atmosphere.wvr_brightness(truth.pwv_mm + path_mm / atmosphere.PATH_PER_PWV, el)
    assert np.abs(tb - zenith_model).max() > 0.05  # the old model is distinguishable here


def test_correlator_path_is_the_integration_average(quiet):
    """Visibilities carry the path averaged over each 6.048 s integration: it matches the mean
    of the WVR samples inside the integration much better than the nearest single sample."""
    _, truth = quiet
    it = truth.config.int_time_s
    d_mean, d_near = [], []
    for i in np.nonzero(~truth.time_is_atm)[0]:
        dt = truth.wvr_time - truth.time[i]
        inside = np.abs(dt) < it / 2
        if inside.sum() < 5:
            continue
        d_mean.append(truth.wet_path[i] - truth.wvr_path[inside].mean(axis=0))
        d_near.append(truth.wet_path[i] - truth.wvr_path[np.argmin(np.abs(dt))])
    assert len(d_mean) >= 5
    rms_mean, rms_near = np.sqrt(np.mean(np.square(d_mean))), np.sqrt(np.mean(np.square(d_near)))
    assert rms_near > 0
    assert rms_mean < 0.5 * rms_near, (rms_mean, rms_near)


def test_syscal_holds_true_tsys_at_atmosphere_scans(tiny):
    ms, truth = tiny
    with ct.table(str(ms / "SYSCAL"), ack=False) as s:
        tsys = s.getcol("TSYS_SPECTRUM")
        t, iv = s.getcol("TIME"), s.getcol("INTERVAL")
        spw, ant = s.getcol("SPECTRAL_WINDOW_ID"), s.getcol("ANTENNA_ID")
        tsys_mean = s.getcol("TSYS")
    n_atm, n_bb = 3, 2
    assert tsys.shape == (n_atm * n_bb * 5, 32, 2)
    assert np.unique(t).size == n_atm  # one TIME shared by all antennas and spws
    assert set(spw) == set(truth.tsys_spw_ids) and set(ant) == set(range(5))
    atm = _query(ms, "DATA_DESC_ID==1", ["TIME", "INTERVAL", "SCAN_NUMBER"])
    for tc, ivl in zip(np.unique(t), iv[np.unique(t, return_index=True)[1]], strict=True):
        sel = np.abs(atm["TIME"] - tc) < ivl / 2
        assert sel.any()
        starts = atm["TIME"][sel] - atm["INTERVAL"][sel] / 2
        ends = atm["TIME"][sel] + atm["INTERVAL"][sel] / 2
        assert starts.min() == pytest.approx(tc - ivl / 2) and ends.max() == pytest.approx(tc + ivl / 2)
    np.testing.assert_allclose(tsys, truth.syscal_tsys.reshape(tsys.shape), rtol=1e-6)
    np.testing.assert_allclose(tsys_mean, tsys.mean(axis=1), rtol=1e-5)
    assert 40.0 < tsys.min() and tsys.max() < 400.0  # band 6, high elevation


def test_uvw_matches_antenna_geometry(tiny):
    ms, truth = tiny
    r = _query(ms, "DATA_DESC_ID==3 && SCAN_NUMBER==6", ["UVW", "ANTENNA1", "ANTENNA2", "TIME"])
    pos = truth.antenna_positions
    b = pos[r["ANTENNA2"]] - pos[r["ANTENNA1"]]
    blen = np.linalg.norm(b, axis=1)
    uvw_len = np.linalg.norm(r["UVW"], axis=1)
    np.testing.assert_allclose(uvw_len, blen, atol=1e-6)  # a rotation keeps lengths
    auto = r["ANTENNA1"] == r["ANTENNA2"]
    assert np.all(r["UVW"][auto] == 0) and np.all(uvw_len[~auto] > 15.0)
    s = _source_vector(truth, truth.field_id("target"), r["TIME"])
    np.testing.assert_allclose(r["UVW"][:, 2], np.sum(b * s, axis=1), atol=1e-6)
    assert np.all(np.abs(r["UVW"][:, :2]).max(axis=1) <= blen + 1e-9)


def test_pointing_follows_fields(tiny):
    ms, truth = tiny
    with ct.table(str(ms / "POINTING"), ack=False) as p:
        t, ant = p.getcol("TIME"), p.getcol("ANTENNA_ID")
        direction = p.getcol("DIRECTION")[:, 0, :]
    assert t.size == truth.time.size * 5
    assert np.all(np.bincount(ant) == truth.time.size)
    idx = truth.time_index(t)
    np.testing.assert_allclose(direction[:, 1], truth.elevation[idx], atol=1e-9)
    np.testing.assert_allclose(direction[:, 0], truth.azimuth[idx], atol=1e-9)
    assert np.degrees(truth.elevation).min() > 30.0


# ---------------------------------------------------------------------------- data values
def test_gains_only_data_equal_truth_prediction(gains_only):
    ms, truth = gains_only
    spw = int(truth.science_spw_ids[1])
    r = _query(ms, f"DATA_DESC_ID=={spw}", ["DATA", "ANTENNA1", "ANTENNA2", "TIME", "FIELD_ID",
                                             "SIGMA", "WEIGHT"])
    k = truth.science_index(spw)
    nu = truth.science_chan_freq[k]
    ti = truth.time_index(r["TIME"])
    g = truth.gains[ti][:, :, k, :]  # (n_rows, n_ant, 2)
    rows = np.arange(ti.size)
    s = np.stack([truth.model_flux(f, nu) for f in r["FIELD_ID"]])
    cross = r["ANTENNA1"] != r["ANTENNA2"]
    expect = (g[rows, r["ANTENNA1"]] * np.conj(g[rows, r["ANTENNA2"]]))[:, None, :] * s[..., None]
    np.testing.assert_allclose(r["DATA"][cross], expect[cross], rtol=2e-6, atol=1e-7)
    # autocorrelations: |G|^2 times the SEFD J * Tsys_ref (data in Jy when Tsys is off)
    auto_expect = np.abs(g[rows, r["ANTENNA1"]]) ** 2 * truth.jy_per_k * truth.tsys_ref_k
    np.testing.assert_allclose(r["DATA"][~cross].real, np.broadcast_to(
        auto_expect[~cross][:, None, :], r["DATA"][~cross].shape), rtol=1e-5)
    # weights: radiometer equation in Jy, sigma = J Tsys_ref / sqrt(2 dnu dt)
    sigma = truth.jy_per_k * truth.tsys_ref_k / np.sqrt(2 * (nu[1] - nu[0]) * 6.048)
    np.testing.assert_allclose(r["SIGMA"], sigma, rtol=1e-5)
    np.testing.assert_allclose(r["WEIGHT"], 1 / sigma**2, rtol=1e-5)
    assert truth.noise_sigma[str(spw)] == 0.0


def test_full_corruption_residual_is_radiometer_noise(tiny):
    ms, truth = tiny
    spw = int(truth.science_spw_ids[0])
    r = _query(ms, f"DATA_DESC_ID=={spw} && ANTENNA1!=ANTENNA2",
               ["DATA", "ANTENNA1", "ANTENNA2", "TIME", "FIELD_ID", "SIGMA", "WEIGHT"])
    resid = np.stack([
        r["DATA"][i] - _predict(truth, r["ANTENNA1"][i], r["ANTENNA2"][i], r["TIME"][i], spw,
                                r["FIELD_ID"][i])
        for i in range(r["TIME"].size)
    ])
    nu = truth.science_chan_freq[0]
    sigma = 1.0 / np.sqrt(2.0 * (nu[1] - nu[0]) * 6.048)
    assert np.std(resid.real) == pytest.approx(sigma, rel=0.1)
    assert np.std(resid.imag) == pytest.approx(sigma, rel=0.1)
    assert abs(np.mean(resid)) < 0.1 * sigma
    np.testing.assert_allclose(r["SIGMA"], sigma, rtol=1e-5)
    np.testing.assert_allclose(r["WEIGHT"], 1 / sigma**2, rtol=1e-5)
    # the signal is well above the noise on the bandpass calibrator
    sig = _predict(truth, 0, 1, truth.time[truth.time_scan == 2][0], spw, 0)
    assert np.median(np.abs(sig)) > 3 * sigma


def test_tsys_and_jy_scaling_recover_flux(tmp_path_factory):
    """Tsys on, everything else off: DATA * sqrt(Tsys_p Tsys_q) * J equals the flux in Jy."""
    ms, truth = _sim(tmp_path_factory, "tsys.ms", **{**ALL_OFF, "tsys": True})
    spw = int(truth.science_spw_ids[0])
    r = _query(ms, f"DATA_DESC_ID=={spw} && ANTENNA1!=ANTENNA2 && FIELD_ID==0",
               ["DATA", "ANTENNA1", "ANTENNA2", "TIME"])
    nu = truth.science_chan_freq[0]
    ti = truth.time_index(r["TIME"])
    tsys = truth.true_tsys(nu, truth.elevation[ti])  # (n_rows, n_ant, nchan, 2)
    rows = np.arange(ti.size)
    scale = np.sqrt(tsys[rows, r["ANTENNA1"]] * tsys[rows, r["ANTENNA2"]]) * truth.jy_per_k
    jy = r["DATA"] * scale
    np.testing.assert_allclose(jy.real, np.broadcast_to(truth.model_flux(0, nu)[:, None], jy.shape),
                               rtol=1e-5)
    assert np.all(np.abs(jy.imag) < 1e-5)
    assert truth.jy_per_k == pytest.approx(2 * 1.380649e-23 / (0.7 * np.pi * 36) * 1e26)


def test_tsys_depends_on_band_and_elevation(tmp_path_factory):
    means = {}
    for band in (3, 6, 7):
        _ms, truth = _sim(tmp_path_factory, f"b{band}.ms", band=band)
        means[band] = truth.syscal_tsys.mean()
        nu = truth.science_chan_freq[0]
        lo = truth.true_tsys(nu, np.deg2rad(30.0)).mean()
        hi = truth.true_tsys(nu, np.deg2rad(80.0)).mean()
        assert lo > 1.05 * hi
    assert means[3] < means[6] < means[7]


def test_antenna_position_errors_appear_as_geometric_phase(tmp_path_factory):
    ms, truth = _sim(tmp_path_factory, "antpos.ms", **{**ALL_OFF, "antpos_error_m": 0.005})
    off = truth.antpos_offsets
    assert 1e-4 < np.abs(off).max() < 0.05
    with ct.table(str(ms / "ANTENNA"), ack=False) as a:
        np.testing.assert_allclose(a.getcol("POSITION"), truth.antenna_positions)
    spw = int(truth.science_spw_ids[0])
    r = _query(ms, f"DATA_DESC_ID=={spw} && ANTENNA1!=ANTENNA2",
               ["DATA", "ANTENNA1", "ANTENNA2", "TIME", "FIELD_ID"])
    nu = truth.science_chan_freq[0]
    for i in range(0, r["TIME"].size, 7):
        # CASA's KAntPos geometry (precession, nutation, UT1; frame at antenna 0)
        from fastcal.geometry import antpos_direction_itrf

        with ct.table(str(ms / "FIELD"), ack=False) as f:
            ra, dec = f.getcell("PHASE_DIR", int(r["FIELD_ID"][i]))[0]
        s = antpos_direction_itrf(r["TIME"][i], ra, dec, truth.antenna_positions[0])
        dw = off @ s  # w error per antenna (m)
        p, q = r["ANTENNA1"][i], r["ANTENNA2"][i]
        expect = truth.model_flux(r["FIELD_ID"][i], nu) * np.exp(2j * np.pi * nu * (dw[p] - dw[q]) / C)
        np.testing.assert_allclose(r["DATA"][i][:, 0], expect, rtol=1e-4, atol=1e-6)


def test_full_pol_and_model_columns(tmp_path_factory):
    ms, truth = _sim(tmp_path_factory, "fullpol.ms", corr="XX,XY,YX,YY", model_data=True,
                     weight_spectrum=True, **{**ALL_OFF, "gains": True})
    with ct.table(str(ms / "POLARIZATION"), ack=False) as p:
        assert list(p.getcell("CORR_TYPE", 1)) == [9, 10, 11, 12]
        assert p.getcell("CORR_PRODUCT", 1).tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    spw = int(truth.science_spw_ids[0])
    r = _query(ms, f"DATA_DESC_ID=={spw} && ANTENNA1!=ANTENNA2",
               ["DATA", "MODEL_DATA", "WEIGHT_SPECTRUM", "SIGMA_SPECTRUM", "WEIGHT", "FIELD_ID"])
    assert r["DATA"].shape[1:] == (16, 4)
    assert np.all(r["DATA"][..., 1:3] == 0) and np.all(np.abs(r["DATA"][..., [0, 3]]) > 0)
    nu = truth.science_chan_freq[0]
    np.testing.assert_allclose(r["MODEL_DATA"][..., 0].real,
                               np.stack([truth.model_flux(f, nu) for f in r["FIELD_ID"]]), rtol=1e-6)
    assert np.all(r["MODEL_DATA"][..., 1:3] == 0)
    np.testing.assert_allclose(r["WEIGHT_SPECTRUM"], 1 / r["SIGMA_SPECTRUM"] ** 2, rtol=1e-5)
    np.testing.assert_allclose(r["WEIGHT_SPECTRUM"][:, 0, :], r["WEIGHT"], rtol=1e-6)


@pytest.mark.parametrize("n_ant", [4, 64])
def test_antenna_count_extremes(tmp_path_factory, n_ant):
    params = dict(n_ant=n_ant)
    if n_ant == 64:
        params.update(n_spw=1, n_chan=8, tsys_nchan=8)
    ms, truth = _sim(tmp_path_factory, f"ant{n_ant}.ms", **params)
    n_bl = n_ant * (n_ant + 1) // 2
    spw = int(truth.science_spw_ids[0])
    r = _query(ms, f"DATA_DESC_ID=={spw} && SCAN_NUMBER==2", ["ANTENNA1", "ANTENNA2"])
    assert r["ANTENNA1"].size == 3 * n_bl
    assert len(set(zip(r["ANTENNA1"], r["ANTENNA2"], strict=True))) == n_bl
    assert len(truth.antenna_names) == n_ant == len(set(truth.antenna_names))
    assert truth.gains.shape[1] == n_ant


# ---------------------------------------------------------------------------- faults
def test_bad_antennas(tmp_path_factory):
    ms, truth = _sim(tmp_path_factory, "bad.ms", bad_antennas=["1:zeros", (3, "dead")])
    assert truth.bad_antennas == {1: "zeros", 3: "dead"}
    for ddid in range(5):  # the WVR rows too
        r = _query(ms, f"DATA_DESC_ID=={ddid} && (ANTENNA1==1 || ANTENNA2==1)", ["DATA"])
        assert r["DATA"].size > 0 and np.all(r["DATA"] == 0), ddid
    spw = int(truth.science_spw_ids[0])
    dead = _query(ms, f"DATA_DESC_ID=={spw} && FIELD_ID==0 && ANTENNA1!=ANTENNA2 && "
                      f"(ANTENNA1==3 || ANTENNA2==3)", ["DATA"])["DATA"]
    good = _query(ms, f"DATA_DESC_ID=={spw} && FIELD_ID==0 && ANTENNA1!=ANTENNA2 && "
                      f"ANTENNA1!=3 && ANTENNA2!=3 && ANTENNA1!=1 && ANTENNA2!=1", ["DATA"])["DATA"]
    sigma = truth.noise_sigma[str(spw)]
    assert abs(dead.mean()) < 0.2 * sigma  # noise only
    assert np.abs(good.mean(axis=0)).mean() > 3 * sigma  # signal present
    assert np.all(truth.gains[:, 3] == 0)
    with pytest.raises(ParameterError, match="bad_antennas name 'XX99'"):
        simulate(tmp_path_factory.mktemp("sim") / "x.ms", config=SimConfig.tiny(bad_antennas=["XX99"]))


def test_rfi_and_edge_channels(tmp_path_factory):
    ms, truth = _sim(tmp_path_factory, "rfi.ms", rfi=True, rfi_n_spikes=2, edge_channels=True,
                     n_chan=32, **{**ALL_OFF, "noise": True})
    spw = int(truth.science_spw_ids[0])
    r = _query(ms, f"DATA_DESC_ID=={spw} && ANTENNA1!=ANTENNA2", ["DATA"])
    amp = np.abs(r["DATA"]).mean(axis=(0, 2))
    chans = truth.rfi_channels[0]
    assert chans.size == 2 and np.all(chans >= 0)
    others = np.setdiff1d(np.arange(32), chans)
    assert amp[chans].min() > 3 * np.median(amp[others])
    edge = truth.edge_channels[0]
    assert edge[:2].all() and edge[-2:].all() and not edge[2:-2].any()
    bp = np.abs(truth.bandpass[0]).mean(axis=(0, 2))
    assert bp[0] < 0.1 * bp[16] and bp[-1] < 0.1 * bp[16]
    assert np.median(amp[[0, 31]]) < 0.2 * np.median(amp[others])
    meta = json.loads(truth_paths(ms)[1].read_text())
    assert meta["rfi_channels"][str(spw)] == [int(c) for c in chans]


# ---------------------------------------------------------------------------- API
def test_reproducible_with_seed(tmp_path_factory):
    base = tmp_path_factory.mktemp("seed")
    datas = []
    for name, seed in (("a.ms", 3), ("b.ms", 3), ("c.ms", 4)):
        simulate(base / name, config=SimConfig.tiny(seed=seed))
        datas.append(_query(base / name, "DATA_DESC_ID==3", ["DATA"])["DATA"])
    np.testing.assert_array_equal(datas[0], datas[1])
    assert not np.allclose(datas[0], datas[2])


def test_truth_roundtrip(tiny):
    ms, truth = tiny
    loaded = load_truth(ms)
    assert loaded.config == truth.config
    assert loaded.antenna_names == truth.antenna_names
    assert set(loaded.arrays) == set(truth.arrays)
    for key, value in truth.arrays.items():
        np.testing.assert_array_equal(loaded.arrays[key], value, err_msg=key)
    meta = json.loads(truth_paths(ms)[1].read_text())
    assert meta["config"]["n_ant"] == 5 and meta["arrays"]["gains"]["shape"] == list(truth.gains.shape)
    assert truth.gains.shape == (truth.time.size, 5, 2, 2)
    assert truth.bandpass.shape == (2, 5, 16, 2) and truth.delays_ns.shape == (5, 2)
    assert truth.wvr_path.shape == (truth.wvr_time.size, 5)
    assert truth.dry_path.shape == truth.wet_path.shape == (truth.time.size, 5)
    assert np.std(truth.dry_path) == pytest.approx(
        truth.config.dry_fraction * np.std(truth.wet_path), rel=0.3
    )
    with pytest.raises(Exception, match="truth file"):
        load_truth(ms.parent / "missing.ms")


def test_overwrite_refused_then_allowed(tmp_path_factory):
    path = tmp_path_factory.mktemp("ow") / "o.ms"
    simulate(path, config=SimConfig.tiny(n_chan=8, tsys_nchan=8))
    with pytest.raises(ParameterError, match="already exists"):
        simulate(path, config=SimConfig.tiny())
    truth = simulate(path, config=SimConfig.tiny(n_chan=8, tsys_nchan=8, seed=5), overwrite=True)
    assert load_truth(path).config.seed == 5 == truth.config.seed


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"n_ant": 3}, "n_ant=3"),
        ({"n_ant": 65}, "n_ant=65"),
        ({"band": 5}, "band=5"),
        ({"corr": "RR,LL"}, "corr='RR,LL'"),
        ({"n_chan": 4}, "n_chan=4"),
        ({"chan_width_hz": 1e8, "n_chan": 64}, "chan_width_hz"),
        ({"scan_lengths": {"science": 10.0}}, "scan_lengths key 'science'"),
        ({"bad_antennas": ["2:broken"]}, "mode 'broken'"),
        ({"bad_antennas": [9]}, "index 9"),
        ({"noise_scale": -1.0}, "noise_scale"),
        ({"gains": "yes"}, "gains='yes'"),
        ({"n_antennas": 5}, "unknown simulator parameter"),
    ],
)
def test_bad_parameters_raise(params, match):
    with pytest.raises(ParameterError, match=match):
        SimConfig.tiny(**params)


def test_cli_arguments_and_size_estimate(tmp_path):
    parser = argparse.ArgumentParser()
    add_cli_arguments(parser)
    path = tmp_path / "cli.ms"
    args = parser.parse_args([str(path), "--preset", "tiny", "--n-ant", "4", "--full-pol",
                              "--no-noise", "--bad-antennas", "0:zeros", "--seed", "7"])
    truth = run_from_args(args)
    cfg = truth.config
    assert (cfg.n_ant, cfg.corr, cfg.noise, cfg.seed) == (4, "XX,XY,YX,YY", False, 7)
    assert cfg.bad_antennas == ((0, "zeros"),)
    assert path.is_dir() and truth_paths(path)[0].exists()
    with pytest.raises(ParameterError, match="already exists"):
        run_from_args(args)
    # size estimate against a real write (subtables excluded from the estimate)
    cfg = SimConfig.large(0.01, n_ant=6, n_spw=1)
    assert estimate_size_bytes(cfg) == pytest.approx(0.01e9, rel=0.3)
    simulate(tmp_path / "size.ms", config=cfg)
    main = sum(f.stat().st_size for f in (tmp_path / "size.ms").iterdir() if f.is_file())
    assert main == pytest.approx(estimate_size_bytes(cfg), rel=0.3)


# ---------------------------------------------------------------------------- CASA
@pytest.mark.casa
def test_casa_reads_simulated_ms(tmp_path):
    """CASA (subprocess) lists the MS, finds intents/WVR spw, builds Tsys and WVR tables."""
    from casa_helpers import run_casa, skip_without_casa

    skip_without_casa()
    ms = tmp_path / "casa.ms"
    truth = simulate(ms, config=SimConfig.tiny(wvr_noise_k=0.01, n_cycles=2))
    out = run_casa(f"""
        import casatasks, casatools
        ms = {str(ms)!r}
        casatasks.listobs(ms, listfile='listobs.txt', overwrite=True)
        md = casatools.msmetadata(); md.open(ms)
        res = dict(intents=sorted(md.intents()), wvr=list(md.almaspws(wvr=True)),
                   nscans=int(md.nscans()), bbc=[int(md.baseband(i)) for i in range(md.nspw())])
        md.close()
        casatasks.gencal(vis=ms, caltable={str(tmp_path / 'tsys.cal')!r}, caltype='tsys')
        casatasks.wvrgcal(vis=ms, caltable={str(tmp_path / 'wvr.cal')!r}, toffset=0)
        res['listobs'] = open('listobs.txt').read()
        emit(res)
    """)
    assert "CALIBRATE_BANDPASS#ON_SOURCE" in out["intents"] and out["wvr"] == [0]
    assert out["nscans"] == len(set(truth.time_scan)) and "WVR#NOMINAL" in out["listobs"]
    with ct.table(str(tmp_path / "tsys.cal"), ack=False) as t:
        fparam = t.getcol("FPARAM")  # (nrow, nchan, npol)
        assert t.nrows() == truth.syscal_tsys.shape[0] * 2 * 5
        # B TSYS TIME = SYSCAL TIME - INTERVAL / 2 (gencal); rows matched by (time, spw, antenna)
        i_t = np.argmin(np.abs(t.getcol("TIME")[:, None]
                               - (truth.syscal_time - truth.syscal_interval / 2)[None]), axis=1)
        i_s = np.searchsorted(truth.tsys_spw_ids, t.getcol("SPECTRAL_WINDOW_ID"))
        expect = truth.syscal_tsys[i_t, i_s, t.getcol("ANTENNA1")]
        np.testing.assert_allclose(fparam, expect, rtol=1e-5)
    with ct.table(str(tmp_path / "wvr.cal"), ack=False) as t:
        sel = t.query(f"SPECTRAL_WINDOW_ID=={int(truth.science_spw_ids[0])}")
        phase, ant, time = np.angle(sel.getcol("CPARAM")[:, 0, 0]), sel.getcol("ANTENNA1"), sel.getcol("TIME")
        sel.close()
    # wvrgcal's T Jones phase (-2 pi nu_c L / c) follows the truth wet path, same sign
    nu_c = truth.science_chan_freq[0][8]
    ref = ant == 0
    for p in range(1, 5):
        mine = ant == p
        dphi = np.unwrap(phase[mine] - phase[ref])
        wi = np.searchsorted(truth.wvr_time, time[mine])
        expect = -2 * np.pi * nu_c * (truth.wvr_path[wi, p] - truth.wvr_path[wi, 0]) / C
        assert np.corrcoef(dphi, expect)[0, 1] > 0.8


def test_simulate_reports_progress_per_scan(tmp_path):
    from fastcal.progress import progress_callback

    seen = []
    with progress_callback(lambda desc, done, total: seen.append((desc, done, total))):
        simulate(str(tmp_path / "p.ms"), config=SimConfig.tiny(seed=3))
    sim = [s for s in seen if s[0] == "simulate"]
    with ct.table(str(tmp_path / "p.ms"), ack=False) as t:
        n_scans = np.unique(t.getcol("SCAN_NUMBER")).size
    assert sim[0][1] == 0 and sim[-1][1] == sim[-1][2] == n_scans > 0
    assert [d for _, d, _ in sim] == list(range(n_scans + 1))
