"""Tests of the WVR phase correction (fastcal.wvr) and its atmosphere model (fastcal.atmosphere).

Simulated MSs are small (6 antennas, 30-60 s scans; < 0.3 s each to write). Expected values
come from the simulator's truth file (wet path the WVRs see, dry path they cannot see) or
from independent recomputation (geometry, table constants), never from fastcal.wvr itself.
"""

from __future__ import annotations

import argparse
import logging
import shutil

import casacore.tables as ct
import numpy as np
import pytest

from fastcal import atmosphere
from fastcal.caltable import read_caltable
from fastcal.errors import (
    MSNotFoundError,
    NotAnMSError,
    ParameterError,
    SelectionError,
    UnsupportedError,
)
from fastcal.simulate import SimConfig, simulate
from fastcal.wvr import (
    add_cli_arguments,
    read_wvr_data,
    run_from_args,
    solve_wvr,
    wvr_improvement,
    wvr_qa_score,
)

C = 299792458.0
SCANS = {"bandpass": 30.24, "phase": 30.24, "target": 60.48, "atmosphere": 6.048}


def _sim(tmp_path_factory, name: str, seed: int = 1, **params):
    path = tmp_path_factory.mktemp("wvr") / name
    cfg = SimConfig.tiny(seed=seed).replace(n_ant=6, n_cycles=2, scan_lengths=SCANS, **params)
    truth = simulate(path, config=cfg)
    return path, truth


@pytest.fixture(scope="module")
def wvr_ms(tmp_path_factory):
    """Simulator defaults: WVR noise 0.1 K, dry (unseen) path rms 0.4 x the wet rms."""
    return _sim(tmp_path_factory, "wvr.ms")


@pytest.fixture(scope="module")
def wvr_result(wvr_ms):
    return solve_wvr(wvr_ms[0])


@pytest.fixture(scope="module")
def wet_ms(tmp_path_factory):
    """A mostly wet atmosphere (dry path rms 0.1 x the wet rms) and its WVR solution."""
    path, truth = _sim(tmp_path_factory, "wet.ms", dry_fraction=0.1)
    return path, truth, solve_wvr(path)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.nanmean(x**2)))


def _residuals(truth, res) -> tuple[float, float, float]:
    """(wet before, wet after, dry) rms path (m) at the WVR times, relative to the array mean.

    Compares the retrieved path with the wet path the WVRs saw (exact at the WVR sample
    times). Per-antenna means are removed per segment.
    """
    ti = np.searchsorted(np.round(truth.wvr_time * 1e3), np.round(res.time * 1e3))
    wet = truth.wvr_path[ti]
    sci = ~truth.time_is_atm
    dry = np.stack(
        [np.interp(res.time, truth.time[sci], truth.dry_path[sci, a]) for a in range(wet.shape[1])],
        axis=1,
    )

    def proc(x):
        x = x.copy()
        for s in np.unique(res.segment):
            m = res.segment == s
            x[m] -= np.nanmean(x[m], axis=0)
        return x - np.nanmean(x, axis=1, keepdims=True)

    return _rms(proc(wet)), _rms(proc(wet - res.path_m)), _rms(proc(dry))


def _nearest(t_from: np.ndarray, y: np.ndarray, t_to: np.ndarray) -> np.ndarray:
    """y (n_from, n_ant) at the nearest of t_from (sorted) to each t_to (applycal 'nearest')."""
    i = np.clip(np.searchsorted(t_from, t_to), 1, t_from.size - 1)
    i -= (t_to - t_from[i - 1]) < (t_from[i] - t_to)
    return y[i]


def _science_residuals(truth, res) -> dict[str, float]:
    """Residual path rms (m) on the science data after applying the WVR table (the criterion).

    At every non-ATM correlator integration: the true total excess path (wet + dry, averaged
    over the integration as the correlator does) relative to the array mean, minus the WVR
    path of the nearest WVR solution (applycal interp='nearest', as the pipeline registers
    it); per-antenna means removed per scan (phase calibration absorbs a constant per scan).
    ``dry`` is the injected dry path processed the same way; ``sampling`` is what a perfect,
    noiseless WVR still leaves: the integration-averaged wet path minus the wet path at the
    nearest WVR sample.
    """
    sci = ~truth.time_is_atm
    t, scan = truth.time[sci], truth.time_scan[sci]
    wet, dry = truth.wet_path[sci], truth.dry_path[sci]
    wvr = _nearest(res.time, res.path_m, t)

    def proc(x):
        x = x - np.nanmean(x, axis=1, keepdims=True)
        for s in np.unique(scan):
            m = scan == s
            x[m] -= np.nanmean(x[m], axis=0)
        return x

    return {
        "before": _rms(proc(wet + dry)),
        "after": _rms(proc(wet + dry - wvr)),
        "dry": _rms(proc(dry)),
        "sampling": _rms(proc(wet - _nearest(truth.wvr_time, truth.wvr_path, t))),
    }


# ---------------------------------------------------------------------------- atmosphere
def test_fit_layer_recovers_its_own_model():
    el = np.radians([40.0, 70.0])
    tb = np.stack([atmosphere.model_brightness(1.2, 262.0, 38.0, e) for e in el])
    fit = atmosphere.fit_layer(tb, el, sigma_k=0.05)
    assert fit.converged
    np.testing.assert_allclose(fit.params, [1.2, 262.0, 38.0], rtol=2e-3)
    assert np.max(np.abs(fit.residual_k)) < 1e-3


def test_dtdl_matches_finite_difference_of_path():
    el = np.radians(55.0)
    tb = atmosphere.model_brightness(1.5, 270.0, 45.0, el)
    fit = atmosphere.fit_layer(tb, el)
    g, err = atmosphere.dtdl(fit, el)
    # 10 um of line-of-sight path = 10e-3 / 6.3 mm PWV along the line of sight
    dpwv_zenith = 10e-3 / atmosphere.PATH_PER_PWV * np.sin(el)
    dt = atmosphere.model_brightness(
        fit.pwv_mm + dpwv_zenith, fit.t_k, fit.p_kpa, el
    ) - atmosphere.model_brightness(fit.pwv_mm, fit.t_k, fit.p_kpa, el)
    np.testing.assert_allclose(g * 10e-3, dt, rtol=1e-3)
    assert np.all(g > 0) and np.all(err >= 0)


def test_fit_layer_rejects_bad_input():
    with pytest.raises(ParameterError, match="non-positive"):
        atmosphere.fit_layer(np.array([100.0, -1.0, 30.0, 20.0]), 1.0)
    with pytest.raises(ParameterError, match="elevation"):
        atmosphere.model_brightness(1.0, 270.0, 50.0, -0.1)
    with pytest.raises(ParameterError, match="shape"):
        atmosphere.fit_layer(np.ones((2, 4)), np.array([1.0]))


def test_azel_matches_simulator_elevations(wvr_ms):
    path, truth = wvr_ms
    with ct.table(str(path / "ANTENNA"), ack=False) as t:
        pos = t.getcol("POSITION")
    with ct.table(str(path / "FIELD"), ack=False) as t:
        radec = t.getcol("PHASE_DIR")[:, 0, :]
    f = truth.time_field
    _, el = atmosphere.azel(truth.time, radec[f, 0], radec[f, 1], pos[0])
    assert np.max(np.abs(el - truth.elevation)) < np.radians(0.3)


# ---------------------------------------------------------------------------- reading
def test_read_wvr_data_matches_truth_grid(wvr_ms):
    path, truth = wvr_ms
    data = read_wvr_data(path)
    assert data.wvr_spws == (0,)
    np.testing.assert_allclose(data.time, truth.wvr_time, atol=1e-3)
    assert data.tb.shape == (truth.wvr_time.size, 6, 4)
    assert np.all(np.isfinite(data.tb)) and np.all(data.tb > 10)
    assert data.elevation_source == "POINTING"
    # ATM (OFF_SOURCE) samples are not corrected, everything else is
    assert 0 < (~data.on_source).sum() < data.time.size
    # the measured thermal noise is the simulated 0.1 K
    np.testing.assert_allclose(np.median(data.sigma_k), truth.config.wvr_noise_k, rtol=0.3)


def test_field_elevation_used_without_pointing(wvr_ms, copy_ms):
    path = copy_ms(wvr_ms[0])
    ref = read_wvr_data(path)
    with ct.table(str(path / "POINTING"), readonly=False, ack=False) as t:
        t.removerows(np.arange(t.nrows()))
    data = read_wvr_data(path)
    assert data.elevation_source == "FIELD"
    assert np.max(np.abs(data.elevation - ref.elevation)) < np.radians(0.5)


def test_per_antenna_time_jitter_shares_samples(wvr_ms, copy_ms, wvr_result):
    """WVR time stamps that differ by a few ms between antennas still form one sample."""
    path = copy_ms(wvr_ms[0])
    with ct.table(str(path), readonly=False, ack=False) as t:
        t_col = t.getcol("TIME")
        rows = (t.getcol("DATA_DESC_ID") == 0) & (t.getcol("ANTENNA1") == 3)
        t_col[rows] += 0.005
        t.putcol("TIME", t_col)
    data = read_wvr_data(path)
    assert data.time.size == wvr_ms[1].wvr_time.size
    assert np.all(np.isfinite(data.tb))
    res = solve_wvr(path)
    assert not res.stats.flagged.any()
    np.testing.assert_allclose(res.path_m, wvr_result.path_m, atol=1e-9)


def test_msinfo_and_path_give_the_same_table(wvr_ms, wvr_result, tmp_path):
    from fastcal.ms import open_ms

    res = solve_wvr(open_ms(wvr_ms[0]))
    assert res.table.equals(wvr_result.table)
    with pytest.raises(MSNotFoundError, match="does not exist"):
        solve_wvr(tmp_path / "missing.ms")
    (tmp_path / "plain").mkdir()
    with pytest.raises(NotAnMSError, match="plain"):
        solve_wvr(tmp_path / "plain")


def test_ms_without_wvr_spw_is_a_clear_error(wvr_ms, tmp_path):
    path = tmp_path / "nowvr.ms"
    with ct.table(str(wvr_ms[0]), ack=False) as t:
        sel = t.query("DATA_DESC_ID != 0")
        sel.copy(str(path), deep=True).close()
        sel.close()
    with pytest.raises(UnsupportedError, match="no WVR data.*4-channel"):
        solve_wvr(path)


def test_wvrspw_must_be_a_4_channel_spw(wvr_ms):
    with pytest.raises(SelectionError, match="channels; a WVR spw has 4"):
        solve_wvr(wvr_ms[0], wvrspw=[2])
    with pytest.raises(SelectionError, match="does not exist"):
        solve_wvr(wvr_ms[0], wvrspw=[40])


# ---------------------------------------------------------------------------- table
def test_table_format_is_wvrgcal_s(wvr_ms, wvr_result, tmp_path):
    path, truth = wvr_ms
    res = wvr_result
    n_t, n_ant = res.time.size, 6
    with ct.table(str(path / "SPECTRAL_WINDOW"), ack=False) as t:
        freqs = [t.getcell("CHAN_FREQ", i) for i in range(t.nrows())]
    out = res.table.write(str(tmp_path / "w.tab"))
    tab = read_caltable(out)
    assert tab.vis_cal == "T Jones" and tab.n_par == 1
    assert sorted(tab.spw_ids) == list(range(len(freqs)))  # every spw, as wvrgcal 6.7
    assert tab.nrow == n_t * n_ant * len(freqs)
    assert np.all(tab.antenna2 == -1) and np.all(tab.scan == -1)
    assert np.all(tab.paramerr == 0) and np.all(tab.snr == 3)
    np.testing.assert_allclose(tab.interval, 1.152, atol=1e-5)
    with ct.table(out, ack=False) as t:
        assert t.info()["subType"] == "T Jones" and t.getkeyword("ParType") == "Complex"
    for spw, f in enumerate(freqs):
        sol = tab.solutions(spw)
        nu_c = f[len(f) // 2]
        np.testing.assert_allclose(sol.chan_freq, [nu_c])
        assert sol.params.shape == (n_t, n_ant, 1, 1)
        expected = np.exp(-2j * np.pi * nu_c * res.path_m / C)
        np.testing.assert_allclose(sol.params[:, :, 0, 0], expected, atol=2e-6)
        np.testing.assert_array_equal(sol.field_id, res.field_id)
    # only on-source (non-ATM) WVR samples get solutions
    on = read_wvr_data(path).on_source
    np.testing.assert_allclose(res.time, truth.wvr_time[on], atol=1e-3)


def test_reversespw_flips_the_sign(wvr_ms, wvr_result):
    res = solve_wvr(wvr_ms[0], spw=[3, 4], reversespw="4")
    assert res.spw_ids == (3, 4)
    p3 = res.table.solutions(3).params[:, :, 0, 0]
    p4 = res.table.solutions(4).params[:, :, 0, 0]
    nu3, nu4 = res.table.chan_freq[3][0], res.table.chan_freq[4][0]
    np.testing.assert_allclose(np.angle(p4), -np.angle(p3) * nu4 / nu3, atol=1e-5)


# ---------------------------------------------------------------------------- accuracy
def test_path_follows_truth_with_right_sign(wvr_ms, wvr_result):
    _, truth = wvr_ms
    before, after, _dry = _residuals(truth, wvr_result)
    assert after < before / 3  # the correction removes most of the wet fluctuation
    ti = np.searchsorted(np.round(truth.wvr_time * 1e3), np.round(wvr_result.time * 1e3))
    # One zero point per antenna for the whole track (no per-segment offsets: those would
    # break phase transfer from calibrator to target), common-mode (array mean) removed.
    wet = truth.wvr_path[ti] - truth.wvr_path[ti].mean(axis=1, keepdims=True)
    wet -= wet.mean(axis=0)
    got = wvr_result.path_m - wvr_result.path_m.mean(axis=1, keepdims=True)
    got -= got.mean(axis=0)
    r = np.corrcoef(wet.ravel(), got.ravel())[0, 1]
    assert r > 0.95


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_science_residual_within_1p2_of_dry_path(tmp_path_factory, seed):
    """Issue 6 criterion on the science data, simulator defaults (0.1 K WVR noise).

    With the WVR path smoothed over the science integration (6.048 s) and applied 'nearest',
    the residual path rms after correction is <= 1.2 x the injected dry path (processed the
    same way). Over seeds 0..11: median 1.01, range 0.95..1.10.
    """
    path, truth = _sim(tmp_path_factory, f"sci{seed}.ms", seed=seed)
    r = _science_residuals(truth, solve_wvr(path, smooth=truth.config.int_time_s))
    assert r["dry"] > 0
    assert r["after"] < r["before"] / 2, r
    assert r["after"] <= 1.2 * r["dry"], r


def test_unsmoothed_residual_excess_is_noise_and_sampling(wvr_ms, wvr_result):
    """Without smoothing (wvrgcal's default) one 1.152 s WVR sample corrects a 6.048 s
    integration: the excess over the dry path is the radiometer noise plus the wet path that
    changes inside the integration (the criterion then fails for some seeds: 1.07..1.48 x).
    """
    _, truth = wvr_ms
    r = _science_residuals(truth, wvr_result)
    excess = np.sqrt(max(r["after"] ** 2 - r["dry"] ** 2, 0.0))
    thermal = np.nanmedian(wvr_result.stats.thermal_um) * 1e-6
    expected = np.hypot(thermal, r["sampling"])
    assert r["sampling"] > 0
    assert 0.6 * expected < excess < 1.3 * expected, (r, thermal, excess)


def test_residual_excess_is_the_radiometer_noise(wvr_ms, wvr_result):
    """At the WVR sample times the retrieval error is the radiometer's thermal noise."""
    _, truth = wvr_ms
    _before, after, _dry = _residuals(truth, wvr_result)
    thermal = np.nanmedian(wvr_result.stats.thermal_um) * 1e-6
    assert 0.5 * thermal < after < 1.3 * thermal, (after, thermal)


# ---------------------------------------------------------------------------- options
def test_toffset_shifts_times_only(wvr_ms, wvr_result):
    res = solve_wvr(wvr_ms[0], toffset=-1.5)
    np.testing.assert_allclose(res.time, wvr_result.time - 1.5)
    np.testing.assert_allclose(
        res.table.solutions(3).time, wvr_result.table.solutions(3).time - 1.5
    )
    np.testing.assert_array_equal(res.path_m, wvr_result.path_m)


def test_smooth_suppresses_sample_to_sample_noise(wvr_ms, wvr_result):
    res = solve_wvr(wvr_ms[0], smooth="5s")
    same_seg = np.diff(res.segment) == 0
    d0 = np.nanstd(np.diff(wvr_result.path_m, axis=0)[same_seg])
    d1 = np.nanstd(np.diff(res.path_m, axis=0)[same_seg])
    assert d1 < d0 / 1.5
    assert res.stats.thermal_um[0] < wvr_result.stats.thermal_um[0]
    with pytest.raises(ParameterError, match="smooth='fast'"):
        solve_wvr(wvr_ms[0], smooth="fast")


def test_scale_multiplies_the_path(wvr_ms, wvr_result):
    res = solve_wvr(wvr_ms[0], scale=0.5)
    np.testing.assert_allclose(res.path_m, 0.5 * wvr_result.path_m)


def test_segsource_and_tie_control_the_retrievals(wvr_ms, wvr_result):
    n_seg = len(np.unique(wvr_result.segment))
    assert len(wvr_result.stats.retrievals) == n_seg > 3
    one = solve_wvr(wvr_ms[0], segsource=False)
    assert len(one.stats.retrievals) == 1
    tied = solve_wvr(wvr_ms[0], tie=["J1832-2039,G11.92-0.61"])
    assert len(tied.stats.retrievals) == 2  # the bandpass source + the tied pair
    assert set(tied.stats.retrievals[1].sources) == {"J1832-2039", "G11.92-0.61"}
    with pytest.raises(SelectionError, match="unknown source"):
        solve_wvr(wvr_ms[0], tie=["J1832-2039,NoSuchSource"])


def test_wvrflag_interpolates_from_nearest_antennas(wvr_ms, wvr_result):
    path, _ = wvr_ms
    with ct.table(str(path / "ANTENNA"), ack=False) as t:
        pos = t.getcol("POSITION")
        names = list(t.getcol("NAME"))
    a = 1
    res = solve_wvr(path, wvrflag=[names[a]], statsource="J1832-2039")
    dist = np.linalg.norm(pos - pos[a], axis=1)
    near = [int(b) for b in np.argsort(dist) if b != a][:3]
    assert res.stats.interpolated[a] and res.stats.flagged[a] and not res.stats.table_flagged[a]
    # neighbours keep their own paths (the retrieval now excludes the flagged WVR, so the
    # coefficients move slightly, and the array-mean zero point moves: compare baseline paths
    # to another good antenna, which a common-mode term does not change); the flagged antenna
    # gets their mean
    ref = next(b for b in range(len(names)) if b != a and b not in near)
    np.testing.assert_allclose(
        res.path_m[:, near] - res.path_m[:, [ref]],
        wvr_result.path_m[:, near] - wvr_result.path_m[:, [ref]], rtol=0.05, atol=2e-6
    )
    np.testing.assert_allclose(res.path_m[:, a], res.path_m[:, near].mean(axis=1))
    # nothing within 1 m: flagged, CPARAM 1, FLAG True
    far = solve_wvr(path, wvrflag=[a], maxdistm=1.0)
    sol = far.table.solutions(3)
    assert far.stats.table_flagged[a]
    assert np.all(sol.flag[:, a]) and np.all(sol.params[:, a] == 1)
    assert not sol.flag[:, near].any()


def test_zero_wvr_antenna_is_flagged_with_warning(tmp_path_factory, caplog):
    """An antenna whose WVR rows are all 0: warned, its WVR flagged and its path interpolated
    from its neighbours (as wvrgcal 6.7); FLAG=True, CPARAM 1 when none is near enough."""
    path, truth = _sim(tmp_path_factory, "zeros.ms", bad_antennas=[(2, "zeros")])
    with caplog.at_level(logging.WARNING, logger="fastcal.wvr"):
        res = solve_wvr(path)
    assert "valid WVR samples" in caplog.text and truth.antenna_names[2] in caplog.text
    st = res.stats
    assert st.has_wvr[2] and st.flagged[2] and st.good_frac[2] == 0
    assert st.interpolated[2] and not st.table_flagged[2]
    assert not st.flagged[[0, 1, 3, 4, 5]].any()
    far = solve_wvr(path, maxdistm=1.0)
    sol = far.table.solutions(3)
    assert far.stats.table_flagged[2]
    assert np.all(sol.flag[:, 2]) and np.all(sol.params[:, 2] == 1) and np.all(sol.snr[:, 2] == 3)
    assert not sol.flag[:, [0, 1, 3, 4, 5]].any()


def test_garbage_wvr_stands_out_in_disc(tmp_path_factory):
    path, _ = _sim(tmp_path_factory, "badwvr.ms", bad_antennas=[(4, "bad_wvr")])
    res = solve_wvr(path)
    disc = res.stats.disc_um
    assert disc[4] > 5 * np.median(np.delete(disc, 4))
    assert res.stats.rms_um[4] > 3 * np.median(np.delete(res.stats.rms_um, 4))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(minnumants=5), "minnumants=5"),
        (dict(maxdistm=-1.0), "maxdistm=-1.0"),
        (dict(wvrflag=["XX99"]), "unknown antenna 'XX99'"),
        (dict(statsource="Nowhere"), "statsource='Nowhere'"),
        (dict(spw=[99]), "spw 99 does not exist"),
        (dict(mingoodfrac=1.5), "mingoodfrac=1.5"),
    ],
)
def test_bad_parameters(wvr_ms, kwargs, match):
    with pytest.raises((ParameterError, SelectionError), match=match):
        solve_wvr(wvr_ms[0], **kwargs)


# ---------------------------------------------------------------------------- statistics / QA
def test_statistics_are_consistent(wvr_ms, wvr_result):
    st = wvr_result.stats
    assert st.has_wvr.all() and not st.flagged.any()
    np.testing.assert_allclose(
        st.rms_um, np.sqrt(np.nanmean(wvr_result.path_m**2, axis=0)) * 1e6, rtol=1e-9
    )
    np.testing.assert_allclose(st.pwv_mm, wvr_ms[1].pwv_mm, rtol=0.15)
    for r in st.retrievals:
        assert np.all(r.dtdl > 0) and np.all(r.coeffs > 0)
        np.testing.assert_allclose(np.sum(r.coeffs * r.dtdl), 1.0, rtol=1e-6)  # weights sum 1
    d = st.as_dict()
    assert d["Name"][0] == st.antenna_names[0] and len(d["Disc_um"]) == 6
    assert "RMS(um)" in st.report()


@pytest.mark.filterwarnings("ignore:the solver did not converge")
@pytest.mark.parametrize("method", ["gaincal", "direct"])
def test_improvement_ratio_on_calibrators(wet_ms, method):
    path, _truth, res = wet_ms
    imp = wvr_improvement(path, res.table, method=method)
    assert imp.score > 1.5  # WVR removes most of the 100 um rms wet screen
    assert np.nanmedian(imp.ratio) < 0.7
    null = solve_wvr(path, scale=0.0)
    imp0 = wvr_improvement(path, null.table, method=method)
    assert imp0.score == pytest.approx(1.0, abs=1e-4)


@pytest.mark.filterwarnings("ignore:the solver did not converge")
def test_improvement_methods_agree(wvr_ms, wvr_result):
    a = wvr_improvement(wvr_ms[0], wvr_result.table, method="gaincal")
    b = wvr_improvement(wvr_ms[0], wvr_result.table, method="direct")
    assert a.score == pytest.approx(b.score, rel=0.1)
    np.testing.assert_allclose(a.rms_without_deg, b.rms_without_deg, rtol=0.15)
    with pytest.raises(ParameterError, match="method='fast'"):
        wvr_improvement(wvr_ms[0], wvr_result.table, method="fast")


def test_qa_score_mapping(wvr_result):
    st = wvr_result.stats
    assert wvr_qa_score(2.0, st)[0] == 1.0
    bad = type(st)(**{**st.__dict__, "flagged": np.array([True] + [False] * 5)})
    score, msg = wvr_qa_score(2.0, bad)
    assert score == pytest.approx(0.67 + 0.8 / 0.9 * 0.23) and "Flagged antenna" in msg
    cloudy = type(st)(**{**st.__dict__, "disc_um": np.full(6, 800.0)})
    score, msg = wvr_qa_score(0.9, cloudy)
    assert score <= 0.33 and "No WVR improvement" in msg
    score, _ = wvr_qa_score(0.9, st, bp_good=True)
    assert score == pytest.approx(0.9)
    assert 0.34 <= wvr_qa_score(0.9, st)[0] <= 0.66


def test_cli_writes_a_table(wvr_ms, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_cli_arguments(parser)
    out = tmp_path / "cli.wvr"
    args = parser.parse_args([str(wvr_ms[0]), str(out), "--toffset", "0", "--smooth", "2s"])
    assert run_from_args(args) == 0
    assert read_caltable(str(out)).vis_cal == "T Jones"
    assert "Disc" in capsys.readouterr().out


# ---------------------------------------------------------------------------- CASA
@pytest.mark.casa
def test_matches_casa_wvrgcal(wvr_ms, wvr_result, tmp_path):
    """CASA's wvrgcal on the same MS: same rows, times and fields; phases correlate."""
    from casa_helpers import from_json, run_casa, skip_without_casa

    skip_without_casa()
    ms = tmp_path / "c.ms"
    shutil.copytree(wvr_ms[0], ms)
    res = from_json(
        run_casa(f"""
        from casatasks import wvrgcal
        import casatools
        wvrgcal(vis={str(ms)!r}, caltable='w.tab', toffset=0)
        tb = casatools.table(); tb.open('w.tab')
        emit({{c: tb.getcol(c) for c in ['TIME', 'FIELD_ID', 'SPECTRAL_WINDOW_ID', 'ANTENNA1',
                                         'CPARAM', 'SNR', 'FLAG']}})
        tb.close()
    """)
    )
    ours = wvr_result.table
    assert res["TIME"].size == ours.nrow
    spw = 3
    m = res["SPECTRAL_WINDOW_ID"] == spw
    t = np.unique(res["TIME"][m])
    np.testing.assert_allclose(t, wvr_result.time, atol=1e-3)
    ph = np.full((t.size, 6), np.nan)
    ph[np.searchsorted(t, res["TIME"][m]), res["ANTENNA1"][m]] = np.angle(res["CPARAM"][0, 0, m])
    mine = np.angle(ours.solutions(spw).params[:, :, 0, 0])

    def proc(x):
        x = np.unwrap(x, axis=0)
        for s in np.unique(wvr_result.segment):
            k = wvr_result.segment == s
            x[k] -= x[k].mean(axis=0)
        return x - x.mean(axis=1, keepdims=True)

    a, b = proc(ph), proc(mine)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.95
    assert 0.7 < np.sum(a * b) / np.sum(b * b) < 1.5  # libair's dT/dL differ (~1.2x)
