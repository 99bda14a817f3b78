"""fastcal.interp: CASA's time/frequency interpolation rules, table types, spwmap, gainfield,
order of application and validation errors, on small hand-made tables."""

from __future__ import annotations

import numpy as np
import pytest

from fastcal.caltable import CalTable
from fastcal.errors import CalTableError, ParameterError, UnsupportedError
from fastcal.geometry import SPEED_OF_LIGHT, antpos_direction_itrf, gmst_rad
from fastcal.interp import (
    MAX_TIME_GAP_S,
    check_coverage,
    chunk_jones,
    parse_interp,
    prepare_gaintables,
)
from fastcal.ms import open_ms


@pytest.fixture(scope="module")
def ms(tiny_ms):
    path, truth = tiny_ms
    info = open_ms(path)
    return path, truth, info


def _sci(truth):
    return [int(s) for s in truth.science_spw_ids]


def _g_table(
    ms_path, info, spw, times, gains, flag=None, field_id=0, vis_cal="G Jones", obs_id=0, **kw
):
    """gains: (n_time, n_ant, n_par) complex."""
    g = np.asarray(gains)[:, :, None, :]
    fl = None if flag is None else {spw: np.asarray(flag)[:, :, None, :]}
    return CalTable.from_solutions(
        vis_cal,
        {spw: g},
        times=np.asarray(times, float),
        ms=ms_path,
        flag=fl,
        field_id=field_id,
        obs_id=obs_id,
        **kw,
    )


def _jones(specs, info, spw, times, freq=None, field_id=0, obs=0):
    freq = info.spws[spw].chan_freq if freq is None else np.asarray(freq, float)
    return chunk_jones(
        specs,
        info,
        spw_id=spw,
        field_id=field_id,
        scan=1,
        observation_id=obs,
        times=np.asarray(times, float),
        chan_freq=freq,
        n_ant=len(info.antennas),
    )


# ----------------------------------------------------------------------------- parse_interp


def test_parse_interp_modes():
    m = parse_interp("linearPDperobs")
    assert (m.time, m.pd, m.perobs, m.freq, m.freq_flag) == ("linear", True, True, "linear", False)
    m = parse_interp("nearest,linearflag", "B Jones")
    assert (m.time, m.freq, m.freq_flag) == ("nearest", "linear", True)
    assert parse_interp("").time == "linear" and parse_interp(None).freq == "linear"


@pytest.mark.parametrize("bad", ["cubicc", "linear,foo", "a,b,c", "nearestX"])
def test_parse_interp_rejects_garbage(bad):
    with pytest.raises(ParameterError, match="interp="):
        parse_interp(bad)


@pytest.mark.parametrize(
    "bad,vis_cal",
    [("linear,cubic", "B Jones"), ("linear,linearflagrel", "B Jones"), ("linearPD", "B Jones")],
)
def test_parse_interp_unsupported(bad, vis_cal):
    with pytest.raises(UnsupportedError, match="interp="):
        parse_interp(bad, vis_cal)


# ----------------------------------------------------------------------------- time interpolation


def test_linear_time_interpolates_amplitude_and_unwrapped_phase(ms):
    path, truth, info = ms
    spw = _sci(truth)[0]
    n_ant = len(info.antennas)
    t0 = float(truth.time[0])
    g = np.ones((2, n_ant, 2), complex)
    g[0, 1, 0] = 1.0 * np.exp(1j * np.deg2rad(170))
    g[1, 1, 0] = 2.0 * np.exp(1j * np.deg2rad(-170))  # +20 deg across the branch cut
    tab = _g_table(path, info, spw, [t0, t0 + 100], g)
    specs = prepare_gaintables(info, [tab], interp=["linear"])
    cj = _jones(specs, info, spw, [t0 + 25, t0 + 50, t0 - 30, t0 + 500])
    j = cj.jones[:, 1, 0, 0]
    np.testing.assert_allclose(np.abs(j[:2]), [1.25, 1.5], rtol=1e-6)
    np.testing.assert_allclose(np.rad2deg(np.angle(j[:2])) % 360, [175, 180], atol=1e-4)
    # no extrapolation: the first / last solution outside the range
    np.testing.assert_allclose(j[2], g[0, 1, 0], rtol=1e-6)
    np.testing.assert_allclose(j[3], g[1, 1, 0], rtol=1e-6)
    assert cj.jones.shape == (4, n_ant, 1, 2) and cj.jones.dtype == np.complex64


def test_nearest_ties_to_earlier_and_flags_follow_the_chosen_solution(ms):
    path, truth, info = ms
    spw = _sci(truth)[0]
    n_ant = len(info.antennas)
    t0 = float(truth.time[0])
    g = np.stack([np.full((n_ant, 2), 1.0 + 0j), np.full((n_ant, 2), 3.0 + 0j)])
    flag = np.zeros((2, n_ant, 2), bool)
    flag[1, 2, :] = True
    tab = _g_table(path, info, spw, [t0, t0 + 10], g, flag=flag)
    cj = _jones(
        prepare_gaintables(info, [tab], interp="nearest"), info, spw, [t0 + 4, t0 + 5, t0 + 6]
    )
    np.testing.assert_allclose(cj.jones[:, 0, 0, 0].real, [1, 1, 3])
    assert cj.flag[:, 2, 0, 0].tolist() == [False, False, True]
    lin = _jones(prepare_gaintables(info, [tab], interp="linear"), info, spw, [t0 + 4, t0])
    assert lin.flag[:, 2, 0, 0].tolist() == [
        True,
        False,
    ]  # bracketing flagged -> flagged; exact -> own
    assert not lin.flag[:, 0].any()


def test_linear_pd_scales_phase_by_frequency_ratio(ms):
    path, truth, info = ms
    s0, s1 = _sci(truth)
    n_ant = len(info.antennas)
    t0 = float(truth.time[0])
    g = np.ones((1, n_ant, 1), complex) * np.exp(1j * 0.3)
    tab = _g_table(path, info, s0, [t0], g, vis_cal="T Jones")
    specs = prepare_gaintables(info, [tab], interp=["linearPD"], spwmap=[[s0, s0, s0, s0, s0]])
    f_cal = info.spws[s0].chan_freq
    f_data = info.spws[s1].chan_freq
    cj = _jones(specs, info, s1, [t0], freq=f_data)
    ratio = f_data[f_data.size // 2] / tab.chan_freq[s0][0]
    np.testing.assert_allclose(np.angle(cj.jones[0, 0, 0, :]), 0.3 * ratio, rtol=1e-5)
    plain = _jones(prepare_gaintables(info, [tab], spwmap=[[s0] * 5]), info, s1, [t0], freq=f_data)
    np.testing.assert_allclose(np.angle(plain.jones[0, 0, 0, :]), 0.3, rtol=1e-5)
    assert f_cal.size == f_data.size


def test_perobs_does_not_cross_observation_boundary(ms):
    path, truth, info = ms
    spw = _sci(truth)[0]
    n_ant = len(info.antennas)
    t0 = float(truth.time[0])
    a = _g_table(path, info, spw, [t0], np.full((1, n_ant, 2), 2.0 + 0j), obs_id=0)
    b = _g_table(path, info, spw, [t0 + 100], np.full((1, n_ant, 2), 4.0 + 0j), obs_id=1)
    tab = CalTable(
        **{
            k: (
                np.concatenate([getattr(a, k), getattr(b, k)])
                if isinstance(getattr(a, k), np.ndarray)
                else getattr(a, k)
            )
            for k in (
                "vis_cal",
                "time",
                "interval",
                "field_id",
                "spw_id",
                "antenna1",
                "antenna2",
                "scan",
                "obs_id",
                "params",
                "paramerr",
                "snr",
                "flag",
            )
        },
        chan_freq=a.chan_freq,
        chan_width=a.chan_width,
        subtables=None,
        ms_path=str(path),
    )
    both = _jones(prepare_gaintables(info, [tab], interp="linear"), info, spw, [t0 + 50])
    np.testing.assert_allclose(both.jones[0, 0, 0, 0].real, 3.0, rtol=1e-6)
    per = _jones(
        prepare_gaintables(info, [tab], interp="linearperobs"), info, spw, [t0 + 50], obs=0
    )
    np.testing.assert_allclose(per.jones[0, 0, 0, 0].real, 2.0, rtol=1e-6)


def test_perscan_uses_the_data_scan_and_flags_scans_without_solutions(ms):
    """'linearperscan' (CASA 6.7): only the data scan's solutions (caltable SCAN_NUMBER) are
    interpolated; a scan without solutions is flagged instead of raising."""
    path, truth, info = ms
    spw = _sci(truth)[0]
    n_ant = len(info.antennas)
    t0 = float(truth.time[0])
    g = np.stack([np.full((n_ant, 2), 2.0 + 0j), np.full((n_ant, 2), 4.0 + 0j)])
    tab = _g_table(path, info, spw, [t0, t0 + 100], g, scan=np.array([1, 2], np.int32))
    both = _jones(prepare_gaintables(info, [tab], interp="linear"), info, spw, [t0 + 50])
    np.testing.assert_allclose(both.jones[0, 0, 0, 0].real, 3.0, rtol=1e-6)
    specs = prepare_gaintables(info, [tab], interp="nearestperscan")
    for scan, value in ((1, 2.0), (2, 4.0)):
        cj = chunk_jones(
            specs,
            info,
            spw_id=spw,
            field_id=0,
            scan=scan,
            observation_id=0,
            times=np.array([t0 + 50]),
            chan_freq=info.spws[spw].chan_freq,
            n_ant=n_ant,
        )
        np.testing.assert_allclose(cj.jones[0, :, 0, :].real, value, rtol=1e-6)
        assert not cj.flag.any()
    cj = chunk_jones(
        specs,
        info,
        spw_id=spw,
        field_id=0,
        scan=3,
        observation_id=0,
        times=np.array([t0 + 50]),
        chan_freq=info.spws[spw].chan_freq,
        n_ant=n_ant,
    )
    assert cj.flag.all()
    m = parse_interp("linearPDperscan")
    assert (m.time, m.pd, m.perscan, m.perobs) == ("linear", True, True, False)
    assert parse_interp("linearperobsperscan").perscan and not parse_interp("linear").perscan


# ----------------------------------------------------------------------------- frequency


def _b_table(path, info, spw, values, flags, freq):
    n_ant = len(info.antennas)
    v = np.broadcast_to(np.asarray(values)[None, None, :, None], (1, n_ant, len(values), 2)).astype(
        complex
    )
    f = np.broadcast_to(np.asarray(flags)[None, None, :, None], v.shape)
    return CalTable.from_solutions(
        "B Jones",
        {spw: v},
        times=np.array([0.0]),
        ms=path,
        flag={spw: f},
        chan_freq={spw: np.asarray(freq, float)},
        chan_width={spw: np.full(len(freq), 1e6)},
    )


def test_frequency_linear_skips_flagged_channels_and_uses_edges(ms):
    path, truth, info = ms
    spw = _sci(truth)[0]
    fin = np.array([100.0, 101.0, 102.0, 103.0]) * 1e6 + info.spws[spw].chan_freq[0]
    tab = _b_table(path, info, spw, [1.0, 9.0, 3.0, 4.0], [False, True, False, False], fin)
    fout = np.array([fin[0] - 5e5, fin[0] + 5e5, fin[2] + 5e5, fin[3] + 1e6])
    cj = _jones(
        prepare_gaintables(info, [tab], interp="nearest,linear"),
        info,
        spw,
        [truth.time[0]],
        freq=fout,
    )
    np.testing.assert_allclose(cj.jones[0, 0, :, 0].real, [1.0, 1.5, 3.5, 4.0], rtol=1e-6)
    assert not cj.flag.any()
    fl = _jones(
        prepare_gaintables(info, [tab], interp="nearest,linearflag"),
        info,
        spw,
        [truth.time[0]],
        freq=fout,
    )
    assert fl.flag[0, 0, :, 0].tolist() == [True, True, False, False]
    nn = _jones(
        prepare_gaintables(info, [tab], interp="nearest,nearest"),
        info,
        spw,
        [truth.time[0]],
        freq=fout,
    )
    np.testing.assert_allclose(nn.jones[0, 0, :, 0].real, [1.0, 1.0, 3.0, 4.0], rtol=1e-6)


def test_linearflag_exact_channel_takes_its_own_flag(ms):
    """CASA (CTPatchedInterp::resampleFlagsInFreq): a data channel exactly on a calibration
    channel takes that channel's flag; one between two channels is flagged if either is."""
    path, truth, info = ms
    spw = _sci(truth)[0]
    fin = np.array([100.0, 101.0, 102.0, 103.0]) * 1e6 + info.spws[spw].chan_freq[0]
    tab = _b_table(path, info, spw, [1.0, 9.0, 3.0, 4.0], [False, True, False, False], fin)
    fout = np.array([fin[0], fin[0] + 5e5, fin[1], fin[2], fin[2] + 5e5])
    fl = _jones(
        prepare_gaintables(info, [tab], interp="nearest,linearflag"),
        info,
        spw,
        [truth.time[0]],
        freq=fout,
    )
    assert fl.flag[0, 0, :, 0].tolist() == [False, True, True, False, False]
    np.testing.assert_allclose(fl.jones[0, 0, [0, 3, 4], 0].real, [1.0, 3.0, 3.5], rtol=1e-6)


def test_frequency_same_grid_is_copied(ms):
    path, truth, info = ms
    spw = _sci(truth)[0]
    freq = info.spws[spw].chan_freq
    vals = np.linspace(1, 2, freq.size) * np.exp(1j * np.linspace(-3, 3, freq.size))
    tab = _b_table(path, info, spw, vals, np.zeros(freq.size, bool), freq)
    cj = _jones(prepare_gaintables(info, [tab]), info, spw, [truth.time[0]])
    np.testing.assert_allclose(cj.jones[0, 3, :, 1], vals, rtol=1e-5)


# ----------------------------------------------------------------------------- other types


def test_delay_phase_about_the_centre_channel(ms):
    path, truth, info = ms
    spw = _sci(truth)[0]
    n_ant = len(info.antennas)
    tau = np.zeros((1, n_ant, 1, 2))
    tau[0, 1, 0, :] = [0.5, -0.25]  # ns
    tab = CalTable.from_solutions("K Jones", {spw: tau}, times=np.array([truth.time[0]]), ms=path)
    freq = info.spws[spw].chan_freq
    cj = _jones(prepare_gaintables(info, [tab], interp="nearest"), info, spw, [truth.time[0]])
    nu0 = tab.chan_freq[spw][0]
    expect = np.exp(2j * np.pi * 0.5e-9 * (freq - nu0))
    np.testing.assert_allclose(cj.jones[0, 1, :, 0], expect, atol=2e-6)
    assert cj.jones.shape[2] == freq.size
    old = CalTable.from_solutions("K Jones", {spw: tau}, times=np.array([truth.time[0]]), ms=path)
    old.casa_version = None  # a pre-5.3 CASA table: reference = the spw's REF_FREQUENCY
    cj_old = _jones(prepare_gaintables(info, [old], interp="nearest"), info, spw, [truth.time[0]])
    ref = info.spws[spw].ref_freq
    np.testing.assert_allclose(
        cj_old.jones[0, 1, :, 0], np.exp(2j * np.pi * 0.5e-9 * (freq - ref)), atol=1e-4
    )


def test_tsys_is_inverse_sqrt_with_mean_weight_scale(ms):
    path, truth, info = ms
    spw = _sci(truth)[0]
    n_ant = len(info.antennas)
    freq = info.spws[spw].chan_freq
    tsys = np.broadcast_to(
        np.linspace(50, 150, freq.size)[None, None, :, None], (1, n_ant, freq.size, 2)
    ).copy()
    flag = np.zeros_like(tsys, bool)
    flag[0, :, 0, :] = True  # excluded from the mean
    tsys[0, :, 0, :] = 1e6
    tab = CalTable.from_solutions(
        "B TSYS", {spw: tsys}, times=np.array([truth.time[0]]), ms=path, flag={spw: flag}
    )
    cj = _jones(prepare_gaintables(info, [tab], calwt=True), info, spw, [truth.time[0]])
    np.testing.assert_allclose(
        cj.jones[0, 0, 1:, 0].real, 1 / np.sqrt(tsys[0, 0, 1:, 0]), rtol=1e-6
    )
    np.testing.assert_allclose(cj.wscale[0, 0, 1:, 0], 1 / tsys[0, 0, 1:, 0], rtol=1e-5)
    # channel 0 is flagged but linear frequency interpolation fills it from its neighbour (CASA)
    assert not cj.flag.any()
    # non-spectral weights: 1/mean over the unflagged calibration channels (CASA)
    np.testing.assert_allclose(cj.wscale_mean[0, 0, 0, 0], 1 / tsys[0, 0, 1:, 0].mean(), rtol=1e-5)


def test_antpos_delay_follows_source_direction(ms):
    path, truth, info = ms
    spw = _sci(truth)[0]
    n_ant = len(info.antennas)
    off = np.zeros((1, n_ant, 1, 3))
    off[0, 2, 0] = [0.01, -0.02, 0.005]
    tab = CalTable.from_solutions("KAntPos Jones", {0: off}, times=np.array([0.0]), ms=path)
    times = truth.time[:3]
    fld = info.fields[1]
    cj = _jones(prepare_gaintables(info, [tab]), info, spw, times, field_id=1)
    s = antpos_direction_itrf(times, fld.ra_rad, fld.dec_rad, info.antennas[0].position)
    tau = s @ off[0, 2, 0] / SPEED_OF_LIGHT
    freq = info.spws[spw].chan_freq
    np.testing.assert_allclose(
        np.angle(cj.jones[:, 2, 5, 0]), np.angle(np.exp(2j * np.pi * tau * freq[5])), atol=1e-4
    )
    np.testing.assert_allclose(np.abs(cj.jones), 1.0, rtol=1e-6)
    assert 0 <= gmst_rad(times).min() and gmst_rad(times).max() < 2 * np.pi


def test_order_product_and_weight_scale_only_from_calwt_tables(ms):
    path, truth, info = ms
    spw = _sci(truth)[0]
    n_ant = len(info.antennas)
    t = [float(truth.time[0])]
    g = _g_table(path, info, spw, t, np.full((1, n_ant, 2), 2.0 + 0j))
    tt = _g_table(path, info, spw, t, np.full((1, n_ant, 1), 1j * 3.0), vis_cal="T Jones")
    specs = prepare_gaintables(info, [tt, g], calwt=[False, True])
    assert [s.vis_cal for s in specs] == ["G Jones", "T Jones"] and [s.index for s in specs] == [
        1,
        0,
    ]
    cj = _jones(specs, info, spw, t)
    np.testing.assert_allclose(cj.jones[0, :, 0, :], 6j, rtol=1e-6)
    np.testing.assert_allclose(cj.wscale, 4.0, rtol=1e-6)
    none = _jones(prepare_gaintables(info, [g], calwt=False), info, spw, t)
    assert none.wscale is None


def test_flagged_element_is_one_in_its_own_term_only(ms):
    """CASA (VisJones::syncJones: invert, then setMatByOk): a flagged solution element counts
    as J = 1 in that table only; the other tables' corrections for that element still apply,
    and the element stays flagged. A zero solution behaves like a flagged one."""
    path, truth, info = ms
    spw = _sci(truth)[0]
    n_ant = len(info.antennas)
    t = [float(truth.time[0])]
    gflag = np.zeros((1, n_ant, 2), bool)
    gflag[0, 2, 0] = True
    gval = np.full((1, n_ant, 2), 2.0 + 0j)
    gval[0, 3, 1] = 0.0
    g = _g_table(path, info, spw, t, gval, flag=gflag)
    tt = _g_table(path, info, spw, t, np.full((1, n_ant, 1), 1j * 3.0), vis_cal="T Jones")
    cj = _jones(prepare_gaintables(info, [g, tt]), info, spw, t)
    j = cj.jones[0, :, 0, :]
    np.testing.assert_allclose(j[2, 0], 3j, rtol=1e-6)  # G flagged: only T applies
    np.testing.assert_allclose(j[3, 1], 3j, rtol=1e-6)  # G zero: likewise
    np.testing.assert_allclose(j[2, 1], 6j, rtol=1e-6)
    assert cj.flag[0, 2, 0, 0] and cj.flag[0, 3, 0, 1]
    assert cj.flag[0, :, 0, :].sum() == 2


# ----------------------------------------------------------------------------- spwmap / gainfield / errors


def test_missing_spw_needs_spwmap(ms):
    path, truth, info = ms
    s0, s1 = _sci(truth)
    n_ant = len(info.antennas)
    tab = _g_table(path, info, s0, [truth.time[0]], np.ones((1, n_ant, 2), complex))
    with pytest.raises(CalTableError, match=f"no solutions for spw {s1}.*spwmap"):
        prepare_gaintables(info, [tab], spws=[s0, s1])
    specs = prepare_gaintables(info, [tab], spwmap=[[0, 1, 2, s0, s0]], spws=[s0, s1])
    assert specs[0].cal_spw(s1) == s0


def test_gainfield_selection_and_nearest(ms):
    path, truth, info = ms
    spw = _sci(truth)[0]
    n_ant = len(info.antennas)
    t = float(truth.time[0])
    a = _g_table(path, info, spw, [t], np.full((1, n_ant, 2), 2.0 + 0j), field_id=0)
    b = _g_table(path, info, spw, [t + 1], np.full((1, n_ant, 2), 5.0 + 0j), field_id=1)
    keys = (
        "vis_cal",
        "time",
        "interval",
        "field_id",
        "spw_id",
        "antenna1",
        "antenna2",
        "scan",
        "obs_id",
        "params",
        "paramerr",
        "snr",
        "flag",
    )
    tab = CalTable(
        **{
            k: np.concatenate([getattr(a, k), getattr(b, k)]) if k != "vis_cal" else a.vis_cal
            for k in keys
        },
        chan_freq=a.chan_freq,
        chan_width=a.chan_width,
        ms_path=str(path),
    )
    name1 = info.fields[1].name
    cj = _jones(prepare_gaintables(info, [tab], gainfield=[name1]), info, spw, [t], field_id=2)
    np.testing.assert_allclose(cj.jones[0, 0, 0, 0].real, 5.0)
    # target (field 2) is 4.6 deg from the phase calibrator (field 1): nearest picks field 1
    near = _jones(prepare_gaintables(info, [tab], gainfield="nearest"), info, spw, [t], field_id=2)
    np.testing.assert_allclose(near.jones[0, 0, 0, 0].real, 5.0)
    own = _jones(
        prepare_gaintables(info, [tab], gainfield="nearest"), info, spw, [t + 1], field_id=0
    )
    np.testing.assert_allclose(own.jones[0, 0, 0, 0].real, 2.0)
    with pytest.raises(ParameterError, match="no field matches 'NOPE'"):
        prepare_gaintables(info, [tab], gainfield=["NOPE"])
    with pytest.raises(CalTableError, match="no solutions for gainfield"):
        prepare_gaintables(info, [tab], gainfield=["2"])


def test_time_gap_and_parameter_errors(ms):
    path, truth, info = ms
    spw = _sci(truth)[0]
    n_ant = len(info.antennas)
    far = float(truth.time[0]) + 2 * MAX_TIME_GAP_S
    tab = _g_table(path, info, spw, [far], np.ones((1, n_ant, 2), complex))
    specs = prepare_gaintables(info, [tab])
    with pytest.raises(CalTableError, match="no solutions near the data"):
        check_coverage(specs, info, spw_id=spw, field_id=0, observation_id=0, times=truth.time[:5])
    with pytest.raises(ParameterError, match="interp has 2 entries for 1"):
        prepare_gaintables(info, [tab], interp=["linear", "nearest"])
    with pytest.raises(ParameterError, match="spwmap"):
        prepare_gaintables(info, [tab], spwmap=[[-3]])
    with pytest.raises(ParameterError, match="calwt"):
        prepare_gaintables(info, [tab], calwt=["yes"])


def test_tsys_table_without_spwmap_is_mapped_by_baseband(ms):
    path, truth, info = ms
    tsys = {int(b): truth.syscal_tsys[:, k] for k, b in enumerate(truth.tsys_spw_ids)}
    tab = CalTable.from_solutions("B TSYS", tsys, times=truth.syscal_time, ms=path)
    sci = _sci(truth)
    specs = prepare_gaintables(info, [tab], spws=sci)
    assert [specs[0].cal_spw(s) for s in sci] == [int(t) for t in truth.science_tsys_spw]
    explicit = prepare_gaintables(info, [tab], spwmap=[[0, 1, 2, 1, 1]])
    assert explicit[0].spwmap == (0, 1, 2, 1, 1)


def test_multiband_delay_pivots_on_zero_frequency(ms):
    path, truth, info = ms
    spw = _sci(truth)[0]
    n_ant = len(info.antennas)
    tau = np.zeros((1, n_ant, 1, 2))
    tau[0, 3, 0, :] = 0.01  # ns
    tab = CalTable.from_solutions(
        "KMBD Jones", {spw: tau}, times=np.array([truth.time[0]]), ms=path
    )
    cj = _jones(prepare_gaintables(info, [tab]), info, spw, [truth.time[0]])
    freq = info.spws[spw].chan_freq
    np.testing.assert_allclose(cj.jones[0, 3, :, 1], np.exp(2j * np.pi * 0.01e-9 * freq), atol=1e-4)
