"""solve_gains (G, T) on simulated data: accuracy against the truth and the radiometer
equation, CASA table conventions, refant handling, models, the calibrator cache."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

from fastcal.caltable import read_caltable
from fastcal.simulate import SimConfig, simulate
from fastcal.solve import load_calibrator, solve_bandpass, solve_gains

N_ANT = 8
BP_FIELD = 0
PH_FIELD = 1


def _sim(path, **kw):
    cfg = SimConfig.tiny(seed=7).replace(n_ant=N_ANT, gain_timescale_s=1e6)
    opts = dict(tsys=False, wvr=False, bandpass=False, delays=False, dry_residual=False)
    opts.update(kw)
    return simulate(path, config=cfg, overwrite=True, **opts)


@pytest.fixture(scope="module")
def gain_ms(tmp_path_factory):
    path = tmp_path_factory.mktemp("gains") / "g.ms"
    return path, _sim(path)


@pytest.fixture(scope="module")
def gain_ms_noiseless(tmp_path_factory):
    path = tmp_path_factory.mktemp("gains0") / "g0.ms"
    return path, _sim(path, noise=False)


def _model(truth, fid):
    return {fid: (float(truth.field_flux_jy[fid]), float(truth.field_spix[fid]),
                  float(truth.flux_ref_freq_hz))}


def _science(truth):
    return ",".join(str(s) for s in truth.science_spw_ids)


def _truth_at(truth, k, fid, t_sol, scan, solint):
    m = truth.time_field == fid
    m &= (np.abs(truth.time - t_sol) < 1.0) if solint == "int" else (truth.time_scan == scan)
    return truth.gains[m][:, :, k, :].mean(axis=0), int(m.sum())  # (ant, 2), n_int


def _predicted_sigma(truth, k, spw, fid, n_samp):
    """Radiometer prediction for an n-antenna array with equal weights, all gains ~1.

    sigma_y: noise of one baseline's interval-averaged ratio per real component,
    sigma / (S sqrt(N_samples)). Linearised antenna-based least squares gives
    sigma_amp = sigma_y sqrt((1 - 1/(2(N-1))) / (N-2)) (relative amplitude) and, with the
    phases referenced to the array mean (sum of phase errors 0, which removes the refant's
    own noise shared by every antenna), sigma_phase = sigma_y sqrt(N-1) / N (rad).
    """
    s = truth.model_flux(fid, truth.science_chan_freq[k]).mean()
    sy = truth.noise_sigma[str(spw)] / (s * np.sqrt(n_samp))
    n = N_ANT
    return sy * np.sqrt((1 - 1 / (2 * (n - 1))) / (n - 2)), sy * np.sqrt(n - 1) / n


def _errors(tab, truth, fid, solint, gaintype="G", ref=0):
    da, dp, pa, pp = [], [], [], []
    for k, spw in enumerate(truth.science_spw_ids):
        s = tab.solutions(int(spw))
        for i, t in enumerate(s.time):
            g_true, n_int = _truth_at(truth, k, fid, t, s.scan[i], solint)
            g_true = g_true * np.conj(g_true[ref] / abs(g_true[ref]))
            g = s.params[i, :, 0, :]
            ok = ~s.flag[i, :, 0, :]
            ratio = np.where(ok, g / g_true, 0)
            common = ratio.sum(axis=0) / np.abs(ratio.sum(axis=0))  # mean phase error per pol
            dp.append(np.abs(np.angle(ratio * np.conj(common)))[ok])
            ok[ref] = False
            da.append(np.abs(np.abs(g) / np.abs(g_true) - 1)[ok])
            sa, sp = _predicted_sigma(truth, k, spw, fid, n_int * truth.science_chan_freq.shape[1])
            pa.append(sa)
            pp.append(sp)
    return (np.median(np.concatenate(da)), np.median(np.concatenate(dp)),
            0.6745 * np.median(pa), 0.6745 * np.median(pp))


@pytest.mark.parametrize("solint", ["int", "inf"])
@pytest.mark.parametrize("calmode", ["ap", "p", "a"])
def test_gains_match_truth_within_radiometer_noise(gain_ms, solint, calmode):
    path, truth = gain_ms
    tab = solve_gains(path, field=str(BP_FIELD), spw=_science(truth), solint=solint,
                      refant="0", calmode=calmode, model=_model(truth, BP_FIELD))
    med_a, med_p, pred_a, pred_p = _errors(tab, truth, BP_FIELD, solint)
    if calmode in ("ap", "a"):
        assert med_a <= 1.5 * pred_a, (med_a, pred_a)
    if calmode in ("ap", "p"):
        assert med_p <= 1.5 * pred_p, (med_p, pred_p)
    sols = tab.solutions(int(truth.science_spw_ids[0]))
    amp = np.abs(sols.params[~sols.flag])
    if calmode == "p":
        np.testing.assert_allclose(amp, 1.0, atol=1e-6)
    if calmode == "a":
        assert np.all(np.abs(np.angle(sols.params[~sols.flag])) < 1e-9)


def test_paramerr_matches_radiometer_prediction(gain_ms):
    """PARAMERR (CASA definition, complex error) ~ sqrt(2) x the per-component sigma of an
    antenna with the others fixed: sigma_y / sqrt(N - 1)."""
    path, truth = gain_ms
    tab = solve_gains(path, field=str(BP_FIELD), spw=_science(truth), solint="inf",
                      refant="0", calmode="ap", model=_model(truth, BP_FIELD))
    k, spw = 0, int(truth.science_spw_ids[0])
    s = tab.solutions(spw)
    n_int = int(np.sum((truth.time_field == BP_FIELD) & ~truth.time_is_atm))
    flux = truth.model_flux(BP_FIELD, truth.science_chan_freq[k]).mean()
    sy = truth.noise_sigma[str(spw)] / (flux * np.sqrt(n_int * truth.science_chan_freq.shape[1]))
    rel = s.paramerr[0, :, 0, :] / np.abs(s.params[0, :, 0, :])
    ratio = np.median(rel) / (np.sqrt(2) * sy / np.sqrt(N_ANT - 1))
    assert 0.7 < ratio < 1.4, ratio


def test_t_gains_match_noiseless_solution(gain_ms, gain_ms_noiseless):
    """T: one gain for both pols; with unequal X/Y truth gains compare with the same solve
    on noiseless data (the difference is noise only, with 2x the samples of G)."""
    path, truth = gain_ms
    path0, _ = gain_ms_noiseless
    kw = dict(field=str(BP_FIELD), spw=_science(truth), solint="inf", refant="0",
              gaintype="T", model=_model(truth, BP_FIELD))
    tab, tab0 = solve_gains(path, **kw), solve_gains(path0, **kw)
    assert tab.vis_cal == "T Jones" and tab.params.shape[-1] == 1
    spw = int(truth.science_spw_ids[0])
    g, g0 = tab.solutions(spw).params[0, 1:, 0, 0], tab0.solutions(spw).params[0, 1:, 0, 0]
    n_samp = 2 * int(np.sum((truth.time_field == BP_FIELD) & ~truth.time_is_atm)) * truth.science_chan_freq.shape[1]
    pred_a, pred_p = _predicted_sigma(truth, 0, spw, BP_FIELD, n_samp)
    assert np.median(np.abs(np.abs(g) / np.abs(g0) - 1)) <= 1.5 * 0.6745 * pred_a
    r = g / g0
    r = r * np.conj(r.sum() / abs(r.sum()))
    assert np.median(np.abs(np.angle(r))) <= 1.5 * 0.6745 * pred_p


def test_noiseless_recovers_exactly(gain_ms_noiseless):
    path, truth = gain_ms_noiseless
    tab = solve_gains(path, field=str(BP_FIELD), spw=_science(truth), solint="int",
                      refant="2", model=_model(truth, BP_FIELD), minsnr=0)
    med_a, med_p, _, _ = _errors(tab, truth, BP_FIELD, "int", ref=2)
    assert med_a < 1e-5 and med_p < 1e-5


def _sloped_bandpass(path, truth, amp, vis_cal="B Jones"):
    """A B (or B TSYS) table on the science spws with real amplitude (Tsys) `amp` (n_chan,)
    on every antenna."""
    bp = solve_bandpass(path, field=str(BP_FIELD), spw=_science(truth), refant="0",
                        model=_model(truth, BP_FIELD), minsnr=0)
    dtype = np.complex64 if vis_cal == "B Jones" else np.float32
    params = np.broadcast_to(amp[None, :, None], bp.params.shape).astype(dtype)
    return dataclasses.replace(bp, vis_cal=vis_cal, par_type=None, params=params,
                               flag=np.zeros(bp.flag.shape, bool))


def _channel_weighted_amp(truth, k, x, w):
    """sqrt of the mean of X_c = x (corrected gain product / true) weighted by |M_c|^2 w_c."""
    m2 = truth.model_flux(BP_FIELD, truth.science_chan_freq[k]) ** 2
    return np.sqrt(np.sum(m2 * w * x) / np.sum(m2 * w))


def test_preapplied_bandpass_scales_weights_by_its_channel_mean(gain_ms_noiseless, gain_ms):
    """CASA (BJones::calcWtScale): a pre-applied B scales each antenna's weights by the mean
    of |B|^2 over its channels, the same in every channel (not by |B(nu)|^2 per channel).

    The data have no bandpass, so after dividing by B each channel holds g_p g_q* / b_c^2 and
    the interval gain is the weighted mean of those: with channel-independent weight scales
    the channels count by |M_c|^2 alone; per channel they would count by |M_c|^2 b_c^4."""
    path, truth = gain_ms_noiseless
    n_chan = truth.science_chan_freq.shape[1]
    amp = np.linspace(0.4, 1.6, n_chan)  # strong amplitude slope
    bp = _sloped_bandpass(path, truth, amp)
    kw = dict(spw=_science(truth), solint="inf", refant="0", minsnr=0)
    direct = solve_gains(path, field=str(BP_FIELD), model=_model(truth, BP_FIELD),
                         gaintable=[bp], **kw)
    for k, spw in enumerate(truth.science_spw_ids):
        casa = _channel_weighted_amp(truth, k, amp**-2, 1.0)  # channel-mean weight scale
        per_chan = _channel_weighted_amp(truth, k, amp**-2, amp**4)
        assert abs(casa / per_chan - 1) > 0.1  # the two rules are well apart here
        s = direct.solutions(int(spw))
        for i, t in enumerate(s.time):
            g_true, _ = _truth_at(truth, k, BP_FIELD, t, s.scan[i], "inf")
            ratio = np.abs(s.params[i, :, 0, :]) / np.abs(g_true)
            np.testing.assert_allclose(ratio, casa, rtol=1e-4)
    # the calibrator cache applies the same weights (SNR included), on noisy data
    path_n, truth_n = gain_ms
    bp_n = _sloped_bandpass(path_n, truth_n, amp)
    direct = solve_gains(path_n, field=str(BP_FIELD), model=_model(truth_n, BP_FIELD),
                         gaintable=[bp_n], **kw)
    cache = load_calibrator(path_n, field=str(BP_FIELD), spw=_science(truth_n),
                            model=_model(truth_n, BP_FIELD))
    assert solve_gains(cache, gaintable=[bp_n], **kw).equals(direct, rtol=1e-5, atol=1e-6)


def test_preapplied_tsys_scales_weights_per_channel(gain_ms_noiseless):
    """CASA's solvers calibrate spectral weights (VisEquation::collapse2), so a pre-applied
    Tsys scales them by 1/Tsys(nu) per channel even without WEIGHT_SPECTRUM: channel c
    (corrected value g g* Tsys_c) counts by |M_c|^2 / Tsys_c^2, not by |M_c|^2."""
    path, truth = gain_ms_noiseless
    tsys = np.linspace(50.0, 400.0, truth.science_chan_freq.shape[1])
    tab = solve_gains(path, field=str(BP_FIELD), model=_model(truth, BP_FIELD),
                      spw=_science(truth), solint="inf", refant="0", minsnr=0,
                      gaintable=[_sloped_bandpass(path, truth, tsys, "B TSYS")])
    for k, spw in enumerate(truth.science_spw_ids):
        s = tab.solutions(int(spw))
        g_true, _ = _truth_at(truth, k, BP_FIELD, s.time[0], s.scan[0], "inf")
        np.testing.assert_allclose(np.abs(s.params[0, :, 0, :]) / np.abs(g_true),
                                   _channel_weighted_amp(truth, k, tsys, tsys**-2.0), rtol=1e-4)


def test_table_conventions(gain_ms, tmp_path):
    path, truth = gain_ms
    out = tmp_path / "g.cal"
    tab = solve_gains(path, out, field=str(PH_FIELD), spw=_science(truth), solint="inf",
                      combine="scan", refant=str(truth.antenna_names[1]))
    back = read_caltable(out)
    assert back.equals(tab, rtol=1e-6)
    spw = int(truth.science_spw_ids[0])
    s = back.solutions(spw)
    assert s.params.shape == (1, N_ANT, 1, 2)
    sci = (truth.time_field == PH_FIELD) & ~truth.time_is_atm
    ph_times = truth.time[sci]
    assert abs(s.time[0] - ph_times.mean()) < 1e-3  # centroid of the data used
    assert s.scan[0] == truth.time_scan[sci].min()  # first scan
    assert s.field_id[0] == PH_FIELD
    assert np.all(back.interval == 0.0)
    freq = truth.science_chan_freq[0]
    np.testing.assert_allclose(back.chan_freq[spw], [freq.mean()])
    np.testing.assert_allclose(back.chan_width[spw], [np.abs(np.diff(freq)).mean() * freq.size])
    assert np.all(s.refant == s.refant[0, 0]) and s.refant[0, 0] >= 0


def test_combine_spw_labels_lowest_spw(gain_ms):
    path, truth = gain_ms
    tab = solve_gains(path, field=str(BP_FIELD), spw=_science(truth), solint="inf",
                      combine="spw", refant="0", model=_model(truth, BP_FIELD))
    assert tab.spw_ids.tolist() == [int(min(truth.science_spw_ids))]
    f = truth.science_chan_freq
    np.testing.assert_allclose(tab.chan_freq[int(min(truth.science_spw_ids))], [f.mean()], rtol=1e-9)


def test_cache_gives_the_same_solutions(gain_ms):
    path, truth = gain_ms
    kw = dict(spw=_science(truth), solint="int", refant="0")
    cache = load_calibrator(path, field=str(BP_FIELD), spw=_science(truth),
                            model=_model(truth, BP_FIELD))
    direct = solve_gains(path, field=str(BP_FIELD), model=_model(truth, BP_FIELD), **kw)
    cached = solve_gains(cache, **kw)
    assert cached.equals(direct, rtol=1e-5, atol=1e-6)
    assert cache.nbytes == 12 * 3 * (N_ANT * (N_ANT - 1) // 2) * truth.science_chan_freq.size * 2 // 1


def test_dead_and_zero_antennas_are_flagged(tmp_path):
    path = tmp_path / "dead.ms"
    truth = _sim(path, bad_antennas=["2:dead", "5:zeros"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tab = solve_gains(path, field=str(BP_FIELD), spw=_science(truth), solint="int",
                          refant="0", model=_model(truth, BP_FIELD))
    for spw in truth.science_spw_ids:
        s = tab.solutions(int(spw))
        assert s.flag[:, 2].all() and s.flag[:, 5].all()
        good = np.delete(np.arange(N_ANT), [2, 5])
        assert not s.flag[:, good].any()
        assert np.all(np.isfinite(s.params))


def test_flex_refant_falls_back_with_phase_continuity(tmp_path):
    """Refant 3 dead: the next choice is used in every interval, with a warning."""
    path = tmp_path / "ref.ms"
    truth = _sim(path, bad_antennas=["3:zeros"])
    with pytest.warns(UserWarning, match="refant .* no usable solution"):
        tab = solve_gains(path, field=str(BP_FIELD), spw=_science(truth), solint="int",
                          refant="3", model=_model(truth, BP_FIELD))
    s = tab.solutions(int(truth.science_spw_ids[0]))
    used = s.refant[:, 0]
    assert np.all(used >= 0) and np.all(used != 3)
    assert np.all(np.abs(np.angle(s.params[np.arange(len(used)), used, 0, :])) < 1e-9)


def test_model_precedence_explicit_over_model_data(tmp_path):
    """MODEL_DATA (written by the simulator = the true flux) is used without model=; a 1 Jy
    explicit model then scales the amplitudes by sqrt(S)."""
    path = tmp_path / "m.ms"
    truth = _sim(path, model_data=True, noise=False)
    kw = dict(field=str(BP_FIELD), spw=_science(truth), solint="inf", refant="0", minsnr=0)
    from_col = solve_gains(path, **kw)
    unit = solve_gains(path, model=1.0, **kw)
    spw = int(truth.science_spw_ids[0])
    a_col = np.abs(from_col.solutions(spw).params[0, :, 0, :])
    a_unit = np.abs(unit.solutions(spw).params[0, :, 0, :])
    flux = truth.model_flux(BP_FIELD, truth.science_chan_freq[0]).mean()
    np.testing.assert_allclose(a_unit / a_col, np.sqrt(flux), rtol=2e-3)
    g_true, _ = _truth_at(truth, 0, BP_FIELD, 0, 2, "inf")
    np.testing.assert_allclose(a_col, np.abs(g_true), rtol=2e-3)


@pytest.mark.casa
def test_parity_with_casa_gaincal_and_bandpass(tmp_path):
    """Same MS, same parameters as CASA 6.7 (subprocess): median relative amplitude
    difference < 1e-3 and median phase difference < 0.1 deg on high-SNR data."""
    import sys
    from pathlib import Path

    from casa_helpers import skip_without_casa

    skip_without_casa()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import casa_parity_solve as parity

    ms = parity.make_ms(tmp_path, n_ant=8, noise_scale=0.2, seed=5)
    parity.make_flex_ms(ms)
    spw = "3,4"
    refant = "0"
    parity.run_fastcal(ms, tmp_path, "0", spw, refant)
    parity.run_casa_solves(ms, tmp_path, "0", spw, refant)
    for name in parity.CASES:
        r = parity.compare(tmp_path / f"fc_{name}.cal", tmp_path / f"casa_{name}.cal")
        assert r["fc_rows"] == r["casa_rows"], (name, r)
        assert r["flag_agreement"] > 0.99, (name, r)
        if r["rel_amp"] is not None:
            assert r["rel_amp"]["median"] < 1e-3, (name, r)
            assert r["phase_deg"]["median"] < 0.1, (name, r)
        if r["delay_ns"] is not None:
            assert r["delay_ns"]["median"] < 0.01, (name, r)


@pytest.mark.casa
@pytest.mark.parametrize("vis_cal, weight_spectrum",
                         [("B Jones", False), ("B Jones", True), ("B TSYS", False)])
def test_parity_with_casa_gaincal_preapplied_bandpass(tmp_path, vis_cal, weight_spectrum):
    """casatasks.gaincal 6.7 with the same sloped B (Tsys) pre-applied (its solvers always
    calwt): its amplitudes equal fastcal's and the weight rule of CASA's source, a channel
    mean of |B|^2 with or without WEIGHT_SPECTRUM, 1/Tsys(nu) per channel."""
    from casa_helpers import from_json, run_casa, skip_without_casa

    skip_without_casa()
    path = tmp_path / "p.ms"
    truth = _sim(path, model_data=True, noise=False, weight_spectrum=weight_spectrum)
    n_chan = truth.science_chan_freq.shape[1]
    amp = np.linspace(0.4, 1.6, n_chan) if vis_cal == "B Jones" else np.linspace(50, 400, n_chan)
    x, w = (amp**-2, 1.0) if vis_cal == "B Jones" else (amp, amp**-2)
    bp_path = tmp_path / "slope.bcal"
    _sloped_bandpass(path, truth, amp, vis_cal).write(bp_path)
    spws = _science(truth)
    tab = solve_gains(path, field=str(BP_FIELD), spw=spws, solint="inf", refant="0", minsnr=0,
                      gaintable=[str(bp_path)])
    got = from_json(run_casa(f"""
        from casatasks import gaincal
        from casatools import table
        gaincal(vis={str(path)!r}, caltable="g.cal", field="{BP_FIELD}", spw="{spws}",
                solint="inf", refant="0", minsnr=0.0, calmode="ap",
                gaintable=[{str(bp_path)!r}])
        tb = table()
        tb.open("g.cal")
        emit(dict(spw=tb.getcol("SPECTRAL_WINDOW_ID"), ant=tb.getcol("ANTENNA1"),
                  cparam=tb.getcol("CPARAM"), flag=tb.getcol("FLAG")))
        tb.close()
    """))
    for k, spw in enumerate(truth.science_spw_ids):
        rows = got["spw"] == spw
        casa_amp = np.abs(got["cparam"][:, 0, rows]).T  # (ant, pol)
        sol = tab.solutions(int(spw))
        ours = np.abs(sol.params[0, :, 0, :])
        np.testing.assert_allclose(ours[got["ant"][rows]], casa_amp, rtol=1e-4)
        g_true, _ = _truth_at(truth, k, BP_FIELD, sol.time[0], sol.scan[0], "inf")
        np.testing.assert_allclose(casa_amp / np.abs(g_true[got["ant"][rows]]),
                                   _channel_weighted_amp(truth, k, x, w), rtol=1e-4)


@pytest.mark.parametrize("task", ["gaincal", "bandpass"])
def test_cli_functions(gain_ms, tmp_path, task, capsys):
    import argparse

    from fastcal.solve import add_cli_arguments, run_from_args

    path, truth = gain_ms
    parser = argparse.ArgumentParser()
    add_cli_arguments(parser, task)
    out = tmp_path / f"{task}.cal"
    extra = ["--calmode", "p", "--solint", "int"] if task == "gaincal" else ["--fillgaps", "1"]
    args = parser.parse_args([str(path), str(out), "--field", "0", "--spw",
                              str(truth.science_spw_ids[0]), "--refant", "0", *extra])
    assert run_from_args(args) == 0
    tab = read_caltable(out)
    assert tab.vis_cal == ("G Jones" if task == "gaincal" else "B Jones")
    assert f"wrote {out}" in capsys.readouterr().out


def test_solnorm_one_factor_per_spw_and_no_refant(gain_ms):
    """CASA 6.7: solnorm divides a spw's solutions by one factor, sqrt(mean |g|^2) over all
    unflagged solutions; refant='' writes ANTENNA2 = -1."""
    path, truth = gain_ms
    kw = dict(field="0,1", spw=_science(truth), solint="inf", refant="0")
    plain, normed = solve_gains(path, **kw), solve_gains(path, solnorm=True, **kw)
    for spw in truth.science_spw_ids:
        a, b = plain.solutions(int(spw)), normed.solutions(int(spw))
        good = ~b.flag
        np.testing.assert_allclose(np.mean(np.abs(b.params[good]) ** 2), 1.0, rtol=1e-5)
        ratio = np.abs(b.params[good]) / np.abs(a.params[good])
        np.testing.assert_allclose(ratio, ratio[0], rtol=1e-5)
    tab = solve_gains(path, field="0", spw=_science(truth), solint="int", refant="")
    assert np.all(tab.antenna2 == -1)


def test_dask_distributed_client_gives_the_same_tables(gain_ms):
    distributed = pytest.importorskip("distributed")
    path, truth = gain_ms
    kw = dict(field=str(BP_FIELD), spw=_science(truth), solint="int", refant="0")
    local = solve_gains(path, **kw)
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=2,
                            dashboard_address=None) as client:
        remote = solve_gains(path, parallel=client, **kw)
        cache = load_calibrator(path, field=str(BP_FIELD), spw=_science(truth), parallel=client)
    assert remote.equals(local)
    assert solve_gains(cache, spw=_science(truth), solint="int", refant="0").equals(local, rtol=1e-5, atol=1e-6)


def test_setjy_resolved_virtual_model_equals_model_data(gain_ms, copy_ms):
    """A resolved setjy model evaluated on the fly (virtual, from UVW) gives the same
    solutions as the same model written to MODEL_DATA; both differ from a point source."""
    flux = pytest.importorskip("fastcal.flux")
    path, truth = gain_ms
    virt, scratch = copy_ms(path, "v/g.ms"), copy_ms(path, "s/g.ms")  # same MSName
    model = dict(field="0", fluxdensity=3.0, shape="gaussian", majoraxis="0.4arcsec",
                 minoraxis="0.3arcsec", reffreq=float(truth.flux_ref_freq_hz))
    flux.setjy(virt, **model)
    flux.setjy(scratch, usescratch=True, **model)
    kw = dict(field="0", spw=_science(truth), solint="inf", refant="0", minsnr=0)
    a, b = solve_gains(virt, **kw), solve_gains(scratch, **kw)
    assert a.equals(b, rtol=1e-4, atol=1e-5)
    point = solve_gains(virt, model=3.0, **kw)
    assert not point.equals(a, rtol=1e-3, atol=1e-3)
    for src, ref in ((virt, a), (scratch, b)):  # the cache evaluates the same models
        cache = load_calibrator(src, field="0", spw=_science(truth))
        assert solve_gains(cache, **{k: v for k, v in kw.items() if k != "field"}).equals(
            ref, rtol=1e-4, atol=1e-5)


def test_solvestats_count_the_gates(tmp_path):
    """solvestats (CASA): an all-zero antenna has (unflagged) data but fails the SNR gate;
    every interval used the refant; the counts survive write/read (FASTCAL_EXTRA)."""
    path = tmp_path / "st.ms"
    truth = _sim(path, bad_antennas=["4:zeros"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tab = solve_gains(path, tmp_path / "st.cal", field=str(BP_FIELD),
                          spw=str(truth.science_spw_ids[0]), solint="int", refant="1",
                          model=_model(truth, BP_FIELD))
    st = read_caltable(tmp_path / "st.cal").extra["solvestats"][f"spw{truth.science_spw_ids[0]}"]
    n_int = tab.solutions(int(truth.science_spw_ids[0])).time.size
    assert st["ant4"]["expected"] == st["ant4"]["data_unflagged"] == [n_int, n_int]
    assert st["ant4"]["above_minsnr"] == [0, 0]
    assert st["ant1"]["used_as_refant"] == n_int == st["used_as_refant"]
    assert st["above_minsnr"] == [(N_ANT - 1) * n_int] * 2
