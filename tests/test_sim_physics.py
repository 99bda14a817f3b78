"""Physics of the simulator: array geometry, atmosphere, corruptions."""

from __future__ import annotations

import re

import numpy as np
import pytest

from fastcal.errors import ParameterError
from fastcal.simulate import array as arr
from fastcal.simulate import atmosphere as atm
from fastcal.simulate import corruptions as cor

SIDEREAL_DAY_S = 86164.0905
MJD_J2000_S = 51544.5 * 86400.0
T_OBS = 60500.25 * 86400.0  # 2024-07-14, an arbitrary epoch


def _wrap(angle_rad: float) -> float:
    """Angle wrapped to [-pi, pi)."""
    return float(np.mod(angle_rad + np.pi, 2 * np.pi) - np.pi)


def _rng(seed: int = 1234) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.fixture(scope="module")
def layout() -> arr.AntennaLayout:
    return arr.alma_layout(24, _rng(7))


# ------------------------------------------------------------------------- array geometry


def test_enu_itrf_round_trip_and_site_radius():
    enu = _rng().normal(0.0, 200.0, (10, 3))
    back = arr.itrf_to_enu(arr.enu_to_itrf(enu))
    np.testing.assert_allclose(back, enu, atol=1e-6)
    # distance from the geocentre: WGS84 radius at -23 deg (~6375.4 km) plus 5.06 km
    radius = np.linalg.norm(arr.ARRAY_CENTER_ITRF)
    assert 6.3795e6 < radius < 6.3815e6
    # moving "up" 1 km changes the geocentric radius by ~1 km
    up = arr.enu_to_itrf(np.array([0.0, 0.0, 1000.0]))
    assert np.linalg.norm(up) - radius == pytest.approx(1000.0, abs=0.1)


def test_site_matches_casacore_measures():
    measures = pytest.importorskip("casacore.measures")
    quanta = pytest.importorskip("casacore.quanta")
    dm = measures.measures()
    pos = dm.position("ITRF", *[quanta.quantity(v, "m") for v in arr.ARRAY_CENTER_ITRF])
    geo = dm.measure(pos, "WGS84")
    assert geo["m0"]["value"] == pytest.approx(arr.ALMA_SITE_LON_RAD, abs=1e-9)
    assert geo["m1"]["value"] == pytest.approx(arr.ALMA_SITE_LAT_RAD, abs=1e-9)
    assert geo["m2"]["value"] == pytest.approx(arr.ALMA_SITE_HEIGHT_M, abs=1e-3)


@pytest.mark.parametrize("n_ant", [4, 24, 64])
def test_layout_is_compact_alma_like(n_ant):
    lay = arr.alma_layout(n_ant, _rng(n_ant), max_baseline_m=300.0)
    assert len(set(lay.names)) == n_ant and len(set(lay.stations)) == n_ant
    assert all(re.fullmatch(r"(DA|DV|PM)\d\d", n) for n in lay.names)
    assert all(re.fullmatch(r"[AWNSP]\d\d\d", s) for s in lay.stations)
    assert lay.positions.shape == (n_ant, 3) and lay.enu.shape == (n_ant, 3)
    np.testing.assert_array_equal(lay.dish_diameter, 12.0)
    sep = np.linalg.norm(lay.enu[:, None, :2] - lay.enu[None, :, :2], axis=-1)
    iu = np.triu_indices(n_ant, 1)
    assert sep[iu].min() > 15.0
    assert sep[iu].max() == pytest.approx(300.0, rel=0.02)
    np.testing.assert_allclose(arr.itrf_to_enu(lay.positions), lay.enu, atol=1e-6)
    assert np.all(np.abs(lay.enu[:, 2]) < 10.0)  # a flat plateau


def test_layout_is_deterministic_given_rng():
    a = arr.alma_layout(16, _rng(5))
    b = arr.alma_layout(16, _rng(5))
    c = arr.alma_layout(16, _rng(6))
    np.testing.assert_array_equal(a.positions, b.positions)
    assert a.names == b.names and a.stations == b.stations
    assert not np.allclose(a.positions, c.positions)


@pytest.mark.parametrize("n_ant", [3, 65, 0])
def test_layout_rejects_bad_n_ant(n_ant):
    with pytest.raises(ParameterError, match="n_ant=.*4..64"):
        arr.alma_layout(n_ant, _rng())


def test_gmst_epoch_and_sidereal_rate():
    # IAU 1982: GMST at 2000-01-01T12:00 UT1 is 280.46061837 deg
    assert np.rad2deg(arr.gmst_rad(MJD_J2000_S)) == pytest.approx(280.46061837, abs=1e-6)
    t = T_OBS + np.array([0.0, SIDEREAL_DAY_S, 0.25 * SIDEREAL_DAY_S])
    g = arr.gmst_rad(t)
    assert _wrap(g[1] - g[0]) == pytest.approx(0.0, abs=1e-6)
    assert _wrap(g[2] - g[0]) == pytest.approx(np.pi / 2, abs=1e-6)
    lst = arr.lst_rad(t[0], arr.ALMA_SITE_LON_RAD)
    assert _wrap(lst - g[0] - arr.ALMA_SITE_LON_RAD) == pytest.approx(0.0, abs=1e-12)


def _transit_time(ra_rad: float) -> float:
    h = arr.hour_angle_rad(T_OBS, ra_rad)
    return T_OBS - h / (2 * np.pi) * SIDEREAL_DAY_S


@pytest.mark.parametrize("dec_deg", [-70.0, -23.0292, -10.0, 20.0])
def test_elevation_at_transit(dec_deg):
    ra, dec = 1.234, np.deg2rad(dec_deg)
    t = _transit_time(ra)
    az, el = arr.azel(t, ra, dec)
    lat = np.rad2deg(arr.ALMA_SITE_LAT_RAD)
    assert np.rad2deg(el) == pytest.approx(90.0 - abs(lat - dec_deg), abs=1e-6)
    if abs(dec_deg - lat) > 1e-3:  # due north (az 0) if dec > lat, due south (az 180) if below
        expect = 0.0 if dec_deg > lat else 180.0
        got = np.rad2deg(az)
        assert min(abs(got - expect), 360 - abs(got - expect)) < 1e-4
    # elevation is lower an hour either side of transit
    _, el2 = arr.azel(t + np.array([-3600.0, 3600.0]), ra, dec)
    assert np.all(el2 < el)


def test_azel_matches_casacore_azelgeo():
    measures = pytest.importorskip("casacore.measures")
    quanta = pytest.importorskip("casacore.quanta")
    dm = measures.measures()
    ra, dec = np.deg2rad(150.0), np.deg2rad(-30.0)
    dm.do_frame(dm.epoch("UTC", quanta.quantity(T_OBS, "s")))
    dm.do_frame(dm.position("ITRF", *[quanta.quantity(v, "m") for v in arr.ARRAY_CENTER_ITRF]))
    # our J2000 is treated as apparent, so compare with an APP direction
    dirn = dm.direction("APP", quanta.quantity(ra, "rad"), quanta.quantity(dec, "rad"))
    ref = dm.measure(dirn, "AZELGEO")
    az, el = arr.azel(T_OBS, ra, dec)
    assert np.rad2deg(el) == pytest.approx(np.rad2deg(ref["m1"]["value"]), abs=0.01)
    d_az = np.rad2deg(az - np.mod(ref["m0"]["value"], 2 * np.pi))
    assert abs((d_az + 180) % 360 - 180) < 0.01


def test_uvw_preserves_baseline_length(layout):
    t = T_OBS + np.linspace(0, 6 * 3600, 7)
    uvw = arr.antenna_uvw(layout.positions, t, 0.7, np.deg2rad(-40.0))
    assert uvw.shape == (7, layout.n_ant, 3)
    p, q = np.triu_indices(layout.n_ant, 1)
    bl = arr.baseline_uvw(uvw, p, q)
    np.testing.assert_allclose(bl, uvw[:, q] - uvw[:, p])
    length = np.linalg.norm(layout.positions[q] - layout.positions[p], axis=-1)
    np.testing.assert_allclose(
        np.linalg.norm(bl, axis=-1), np.broadcast_to(length, bl.shape[:2]), rtol=1e-10
    )


def test_w_is_geometric_delay_towards_source(layout):
    """w of a baseline = projection of (ant2 - ant1) on the source direction (from az/el)."""
    ra, dec = 2.0, np.deg2rad(-50.0)
    t = T_OBS + np.linspace(0, 4 * 3600, 5)
    az, el = arr.azel(t, ra, dec)
    s_enu = np.stack([np.sin(az) * np.cos(el), np.cos(az) * np.cos(el), np.sin(el)], axis=-1)
    uvw = arr.antenna_uvw(layout.positions, t, ra, dec)
    p, q = np.triu_indices(layout.n_ant, 1)
    b_enu = layout.enu[q] - layout.enu[p]
    np.testing.assert_allclose(uvw[:, q, 2] - uvw[:, p, 2], s_enu @ b_enu.T, atol=1e-3)


def test_east_west_baseline_at_transit_and_pole():
    enu = np.array([[0.0, 0.0, 0.0], [100.0, 0.0, 0.0]])  # 100 m due east
    pos = arr.enu_to_itrf(enu)
    ra = 0.3
    t = _transit_time(ra)
    for dec_deg in (-60.0, -20.0, 10.0):
        uvw = arr.antenna_uvw(pos, np.array([t]), ra, np.deg2rad(dec_deg))[0]
        b = uvw[1] - uvw[0]
        # at transit an east-west baseline is all u: v = w = 0
        np.testing.assert_allclose(b, [100.0, 0.0, 0.0], atol=1e-3)
    # towards the (south) celestial pole an east-west baseline stays in the uv plane
    t_all = T_OBS + np.linspace(0, 86400, 9)
    uvw = arr.antenna_uvw(pos, t_all, ra, -np.pi / 2)
    b = uvw[:, 1] - uvw[:, 0]
    np.testing.assert_allclose(b[:, 2], 0.0, atol=1e-6)
    np.testing.assert_allclose(np.hypot(b[:, 0], b[:, 1]), 100.0, rtol=1e-9)


# ------------------------------------------------------------------------- atmosphere


def test_zenith_opacity_typical_chajnantor_values():
    f = np.array([100e9, 230e9, 345e9, 183.31e9])
    tau = atm.zenith_opacity(f, 1.0)
    assert 0.03 <= tau[0] <= 0.05
    assert 0.06 <= tau[1] <= 0.10
    assert 0.15 <= tau[2] <= 0.25
    assert tau[3] > 2.0 and tau[3] > 20 * tau[1]  # the 183 GHz line is opaque
    # opacity is linear in PWV with a positive wet part everywhere
    t0, t1, t2 = atm.zenith_opacity(f, np.array([0.0, 1.0, 2.0]))
    np.testing.assert_allclose(t2 - t1, t1 - t0, rtol=1e-12)
    assert np.all(t1 > t0)


def test_opacity_has_lines_and_windows():
    f = np.array([325.153e9, 345e9, 380.197e9, 118.75e9, 100e9, 60e9])
    tau = atm.zenith_opacity(f, 1.0)
    assert tau[1] < tau[0] and tau[1] < tau[2]  # 345 GHz window between H2O lines
    assert tau[3] > 10 * tau[4] and tau[5] > 10 * tau[4]  # O2 118.75 and 60 GHz are opaque
    assert atm.zenith_opacity(f, np.ones((2, 3))).shape == (2, 3, 6)


def test_zenith_opacity_rejects_negative_pwv():
    with pytest.raises(ParameterError, match="pwv_mm=-0.5"):
        atm.zenith_opacity(np.array([100e9]), -0.5)


@pytest.mark.parametrize(
    "freq,band",
    [
        (90e9, 3),
        (145e9, 4),
        (183e9, 5),
        (230e9, 6),
        (345e9, 7),
        (460e9, 8),
        (650e9, 9),
        (870e9, 10),
    ],
)
def test_alma_band(freq, band):
    assert atm.alma_band(freq) == band


def test_alma_band_rejects_out_of_range():
    with pytest.raises(ParameterError, match="outside ALMA bands"):
        atm.alma_band(30e9)


def test_tsys_typical_values_at_45_deg():
    el = np.deg2rad(45.0)
    b3 = atm.tsys_spectrum(np.array([100e9]), el, 1.0)[0]
    b6 = atm.tsys_spectrum(np.array([230e9]), el, 1.0)[0]
    b7 = atm.tsys_spectrum(np.array([345e9]), el, 1.0)[0]
    # spec receiver temperatures (37, 83, 147 K) plus sky: reference-table ranges
    assert 55.0 < b3 < 85.0
    assert 90.0 < b6 < 150.0
    assert 200.0 < b7 < 320.0
    # better receivers lower Tsys by Trx * exp(tau A)
    b7_cold = atm.tsys_spectrum(np.array([345e9]), el, 1.0, trx_k={7: 80.0})[0]
    tau = atm.zenith_opacity(np.array([345e9]), 1.0)[0]
    assert b7 - b7_cold == pytest.approx(67.0 * np.exp(tau / np.sin(el)), rel=1e-9)


def test_tsys_rises_towards_low_elevation_and_with_pwv():
    f = np.linspace(212e9, 216e9, 16)
    el = np.deg2rad([80.0, 60.0, 40.0, 25.0, 15.0])
    tsys = atm.tsys_spectrum(f, el, 1.0)
    assert tsys.shape == (5, 16)
    assert np.all(np.diff(tsys, axis=0) > 0)
    by_pwv = atm.tsys_spectrum(f, np.deg2rad(50.0), np.array([0.3, 1.0, 2.0, 4.0]))
    assert np.all(np.diff(by_pwv, axis=0) > 0)


def test_band7_tsys_spectrum_shows_325ghz_water_line():
    f = np.linspace(315e9, 335e9, 201)
    tsys = atm.tsys_spectrum(f, np.deg2rad(50.0), 1.0)
    peak = f[np.argmax(tsys)]
    assert abs(peak - 325.153e9) < 0.2e9
    assert tsys.max() > 3.0 * np.median(tsys)


def test_tsys_rejects_bad_receiver_temperature():
    with pytest.raises(ParameterError, match="no entry for band 3"):
        atm.tsys_spectrum(np.array([100e9]), 1.0, 1.0, trx_k={6: 50.0})
    with pytest.raises(ParameterError, match="trx_k=-5"):
        atm.tsys_spectrum(np.array([100e9]), 1.0, 1.0, trx_k=-5.0)


@pytest.mark.parametrize("el", [0.0, -0.1])
def test_tsys_rejects_source_below_horizon(el):
    with pytest.raises(ParameterError, match="elevation"):
        atm.tsys_spectrum(np.array([100e9]), el, 1.0)


def test_wvr_channels_order_monotonic_and_saturating():
    pwv = np.array([0.2, 0.5, 1.0, 2.0, 4.0, 10.0])
    tb = atm.wvr_brightness(pwv, np.pi / 2)
    assert tb.shape == (6, 4)
    assert np.all(np.diff(tb, axis=1) < 0)  # channel 1 (nearest the line) brightest
    assert np.all(np.diff(tb, axis=0) > 0)  # monotonic in PWV
    assert tb[-1, 0] > 0.98 * 270.0  # channel 1 saturates
    assert tb[-1, 3] < 0.8 * 270.0  # channel 4 does not
    low = atm.wvr_brightness(1.0, np.deg2rad(30.0))
    assert np.all(low > tb[2])  # more air mass, brighter


def test_wvr_dtdl_positive_and_channel1_saturates():
    d1 = atm.wvr_dtdl(1.0, np.deg2rad(60.0))
    assert d1.shape == (4,)
    assert np.all(d1 > 0) and np.all(d1 < 30.0)  # K per mm of path, order 1-10
    d5 = atm.wvr_dtdl(5.0, np.deg2rad(60.0))
    assert d5[0] < 0.2 * d1[0]  # channel 1 saturated
    assert d5[3] > 0.5 * d1[3]  # the outer channel keeps its sensitivity
    # dT/dL matches a finite difference of the brightness against line-of-sight path: a
    # zenith water step dw is a slant column dw / sin(el), i.e. a path PATH_PER_PWV dw / sin(el)
    step = 0.01
    el = np.deg2rad(60.0)
    diff = (atm.wvr_brightness(1.0 + step, el) - atm.wvr_brightness(1.0, el)) / (
        step * atm.PATH_PER_PWV / np.sin(el)
    )
    np.testing.assert_allclose(d1, diff, rtol=0.02)


def _line_enu(offsets_m: np.ndarray, axis: int) -> np.ndarray:
    enu = np.zeros((offsets_m.size, 3))
    enu[:, axis] = offsets_m
    return enu


def test_phase_screen_rms_mean_and_reproducible(layout):
    t = np.arange(0.0, 600.0, 2.0)
    p = atm.phase_screen(layout.enu, t, _rng(3), rms_path_m=2e-4)
    assert p.shape == (t.size, layout.n_ant)
    assert np.sqrt(np.mean(p**2)) == pytest.approx(2e-4, rel=1e-9)
    assert abs(p.mean()) < 1e-12
    np.testing.assert_array_equal(p, atm.phase_screen(layout.enu, t, _rng(3), rms_path_m=2e-4))
    assert not np.allclose(p, atm.phase_screen(layout.enu, t, _rng(4), rms_path_m=2e-4))
    np.testing.assert_array_equal(atm.phase_screen(layout.enu, t, _rng(3), rms_path_m=0.0), 0.0)


def test_phase_screen_structure_function_grows_with_baseline():
    r = np.array([0.0, 20.0, 80.0, 320.0])
    t = np.arange(0.0, 1800.0, 1.0)
    d = np.zeros(3)
    for seed in range(3):
        p = atm.phase_screen(_line_enu(r, 0), t, _rng(seed), wind_dir_rad=0.0)
        d += np.mean((p[:, 1:] - p[:, :1]) ** 2, axis=0)
    assert np.all(np.diff(d) > 0)
    slope = np.log(d[1] / d[0]) / np.log(r[2] / r[1])
    assert 1.2 < slope < 2.0  # Kolmogorov 5/3 below the outer scale


def test_phase_screen_is_frozen_flow():
    """Downwind antenna sees the upwind antenna's path delayed by separation / speed."""
    r = np.array([0.0, 100.0])
    t = np.arange(0.0, 300.0, 1.0)
    wind_dir = np.deg2rad(90.0)  # blowing towards the east
    p = atm.phase_screen(_line_enu(r, 0), t, _rng(9), wind_speed_m_s=10.0, wind_dir_rad=wind_dir)
    lag = 10  # 100 m at 10 m/s, 1 s sampling
    np.testing.assert_allclose(p[lag:, 1], p[:-lag, 0], rtol=0, atol=1e-12)
    assert np.std(p[:, 1] - p[:, 0]) > 0.1 * np.std(p)


def test_phase_screen_grid_is_memory_bounded():
    dx, n_a, n_c = atm._screen_grid(10.0 * 7200.0, 300.0, 2000.0)  # 2 h at 10 m/s
    assert n_a * n_c <= 1.2 * atm._MAX_SCREEN_POINTS
    assert n_a * dx > 72000.0 and n_c * dx >= 2000.0
    assert dx < 5.0


def test_phase_screen_rejects_bad_inputs(layout):
    with pytest.raises(ParameterError, match="rms_path_m"):
        atm.phase_screen(layout.enu, np.arange(3.0), _rng(), rms_path_m=-1.0)
    with pytest.raises(ParameterError, match="wind_speed_m_s"):
        atm.phase_screen(layout.enu, np.arange(3.0), _rng(), wind_speed_m_s=-1.0)


# ------------------------------------------------------------------------- corruptions


def test_smooth_gains_have_requested_rms_and_are_smooth():
    t = 5.0e9 + np.arange(0.0, 3600.0, 6.048)
    g = cor.smooth_gains(t, 12, 3, 2, _rng(11), amp_rms=0.08, phase_rms_deg=25.0)
    assert g.shape == (t.size, 12, 3, 2) and g.dtype == np.complex128
    assert np.rad2deg(np.sqrt(np.mean(np.angle(g) ** 2))) == pytest.approx(25.0, rel=1e-6)
    assert np.sqrt(np.mean((np.abs(g) - 1.0) ** 2)) == pytest.approx(0.08, rel=1e-6)
    step = np.rad2deg(np.abs(np.diff(np.angle(g), axis=0)))
    assert np.percentile(step, 99) < 1.0  # 6 s steps on a 30 min timescale
    drift = np.rad2deg(np.ptp(np.angle(g), axis=0))
    assert np.median(drift) > 5.0  # but the gains do vary over the hour
    again = cor.smooth_gains(t, 12, 3, 2, _rng(11), amp_rms=0.08, phase_rms_deg=25.0)
    np.testing.assert_array_equal(g, again)


def test_smooth_gains_switched_off_is_unity():
    g = cor.smooth_gains(np.arange(10.0), 4, 1, 2, _rng(), amp_rms=0.0, phase_rms_deg=0.0)
    np.testing.assert_array_equal(g, 1.0)


def test_smooth_gains_rejects_bad_sizes():
    with pytest.raises(ParameterError, match="n_pol=5"):
        cor.smooth_gains(np.arange(10.0), 4, 1, 5, _rng())
    with pytest.raises(ParameterError, match="amp_rms"):
        cor.smooth_gains(np.arange(10.0), 4, 1, 2, _rng(), amp_rms=-0.1)


def test_bandpass_shape_rolloff_and_ripple():
    f = 230e9 + np.arange(128) * 15.625e6
    bp = cor.bandpass_shape(f, 6, 2, _rng(2), ripple_amp=0.04, ripple_phase_deg=3.0)
    assert bp.shape == (6, 128, 2) and bp.dtype == np.complex128
    amp = np.abs(bp)
    centre = amp[:, 32:96]
    assert np.all(amp[:, [0, -1]].mean(axis=1) < 0.85 * centre.mean(axis=1))
    assert np.std(centre) == pytest.approx(0.04, rel=0.35)
    assert np.max(np.abs(np.diff(amp[:, 16:112], axis=1))) < 0.02  # smooth
    assert not np.allclose(bp[0], bp[1]) and not np.allclose(bp[:, :, 0], bp[:, :, 1])
    flat = cor.bandpass_shape(
        f, 6, 2, _rng(2), ripple_amp=0.0, ripple_phase_deg=0.0, edge_rolloff=False
    )
    np.testing.assert_allclose(flat, 1.0)


def test_antenna_delays_and_phasor():
    d = cor.antenna_delays(4000, 2, _rng(8), rms_ns=0.3)
    assert d.shape == (4000, 2)
    assert np.sqrt(np.mean(d**2)) == pytest.approx(0.3, rel=0.05)
    assert np.corrcoef(d[:, 0], d[:, 1])[0, 1] > 0.5  # pols share the antenna's IF path
    f = 100e9 + np.arange(8) * 1e8
    k = cor.delay_phasor(d[:3], f, f[4])
    assert k.shape == (3, 8, 2)
    np.testing.assert_allclose(k[:, 4], 1.0)
    dphi = np.angle(k[:, 1:] / k[:, :-1])
    np.testing.assert_allclose(
        dphi, np.broadcast_to(-2 * np.pi * d[:3, None, :] * 1e-9 * 1e8, dphi.shape), atol=1e-12
    )


def test_rfi_spikes_distinct_channels():
    ch = cor.rfi_spikes(64, _rng(), 5)
    assert ch.size == 5 and np.unique(ch).size == 5 and ch.min() >= 0 and ch.max() < 64
    assert cor.rfi_spikes(4, _rng(), 10).size == 4
    with pytest.raises(ParameterError, match="n_spikes"):
        cor.rfi_spikes(64, _rng(), -1)


def test_bad_antenna_helpers():
    bad = cor.pick_bad_antennas(10, 3, _rng(), exclude=(0,))
    assert bad.size == 3 and 0 not in bad and np.unique(bad).size == 3
    dead = cor.bad_antenna_gain_factor("dead", 20, 2, _rng())
    np.testing.assert_array_equal(dead, 0.0)
    dead_pol = cor.bad_antenna_gain_factor("dead_pol", 20, 2, _rng())
    assert np.all(dead_pol[:, 1] == 0) and np.all(dead_pol[:, 0] == 1)
    jumps = cor.bad_antenna_gain_factor("phase_jumps", 50, 2, _rng())
    steps = np.abs(np.angle(jumps[1:, 0] / jumps[:-1, 0]))
    assert np.sum(steps > np.deg2rad(59)) >= 1 and np.allclose(np.abs(jumps), 1.0)
    with pytest.raises(ParameterError, match="kind='sad'"):
        cor.bad_antenna_gain_factor("sad", 20, 2, _rng())
