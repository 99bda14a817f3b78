"""solve_bandpass on simulated data: accuracy, frequency solint, solnorm, fillgaps,
pre-apply of a phase-up, and the three-solve calibrator sequence from one read."""

from __future__ import annotations

import numpy as np
import pytest

from fastcal.simulate import SimConfig, simulate
from fastcal.solve import load_calibrator, solve_bandpass, solve_gains

N_ANT = 8
BP_FIELD = 0


def _sim(path, **kw):
    cfg = SimConfig.tiny(seed=11).replace(n_ant=N_ANT, gain_timescale_s=1e6)
    opts = dict(tsys=False, wvr=False, gains=False, delays=False, dry_residual=False)
    opts.update(kw)
    return simulate(path, config=cfg, overwrite=True, **opts)


@pytest.fixture(scope="module")
def bp_ms(tmp_path_factory):
    path = tmp_path_factory.mktemp("bp") / "b.ms"
    return path, _sim(path)


def _model(truth):
    return {BP_FIELD: (float(truth.field_flux_jy[BP_FIELD]), float(truth.field_spix[BP_FIELD]),
                       float(truth.flux_ref_freq_hz))}


def _spws(truth):
    return ",".join(str(s) for s in truth.science_spw_ids)


def _n_int(truth):
    return int(np.sum((truth.time_field == BP_FIELD) & ~truth.time_is_atm))


def test_bandpass_matches_truth_within_radiometer_noise(bp_ms):
    """Per channel: amplitude error and phase error (referenced to the array mean) against
    the radiometer prediction for one channel of the whole scan."""
    path, truth = bp_ms
    tab = solve_bandpass(path, field=str(BP_FIELD), spw=_spws(truth), refant="0",
                         model=_model(truth))
    assert tab.vis_cal == "B Jones"
    n = N_ANT
    da, dp, pa, pp = [], [], [], []
    for k, spw in enumerate(truth.science_spw_ids):
        s = tab.solutions(int(spw))
        assert s.params.shape == (1, n, truth.science_chan_freq.shape[1], 2)
        np.testing.assert_allclose(tab.chan_freq[int(spw)], truth.science_chan_freq[k])
        b = s.params[0]                       # (ant, chan, pol)
        bt = truth.bandpass[k]                # (ant, chan, pol)
        ok = ~s.flag[0]
        r = np.where(ok, b / bt, 0)
        common = r.sum(axis=0) / np.abs(r.sum(axis=0))  # per (chan, pol): refant phase etc.
        dp.append(np.abs(np.angle(r * np.conj(common)))[ok])
        da.append(np.abs(np.abs(b) / np.abs(bt) - 1)[1:][ok[1:]])
        flux = truth.model_flux(BP_FIELD, truth.science_chan_freq[k]).mean()
        sy = truth.noise_sigma[str(spw)] / (flux * np.sqrt(_n_int(truth)))
        pa.append(sy * np.sqrt((1 - 1 / (2 * (n - 1))) / (n - 2)))
        pp.append(sy * np.sqrt(n - 1) / n)
    assert np.median(np.concatenate(da)) <= 1.5 * 0.6745 * np.median(pa)
    assert np.median(np.concatenate(dp)) <= 1.5 * 0.6745 * np.median(pp)


def test_frequency_solint_bins_channels(bp_ms):
    path, truth = bp_ms
    spw = int(truth.science_spw_ids[0])
    f = truth.science_chan_freq[0]
    full = solve_bandpass(path, field=str(BP_FIELD), spw=str(spw), refant="0", model=_model(truth))
    binned = solve_bandpass(path, field=str(BP_FIELD), spw=str(spw), refant="0",
                            model=_model(truth), solint="inf,4ch")
    width = abs(f[1] - f[0])
    by_hz = solve_bandpass(path, field=str(BP_FIELD), spw=str(spw), refant="0",
                           model=_model(truth), solint=f"inf,{4 * width / 1e6:g}MHz")
    np.testing.assert_allclose(binned.chan_freq[spw], f.reshape(-1, 4).mean(axis=1))
    np.testing.assert_allclose(binned.chan_width[spw], np.full(f.size // 4, 4 * width))
    assert by_hz.equals(binned)
    # the binned solution is close to the mean of the per-channel solutions (smooth bandpass)
    b4 = binned.solutions(spw).params[0]
    b1 = full.solutions(spw).params[0].reshape(N_ANT, -1, 4, 2).mean(axis=2)
    assert np.median(np.abs(b4 / b1 - 1)) < 0.02


def test_solnorm_normalises_per_antenna(bp_ms):
    path, truth = bp_ms
    tab = solve_bandpass(path, field=str(BP_FIELD), spw=_spws(truth), refant="0",
                         model=_model(truth), solnorm=True)
    b = tab.solutions(int(truth.science_spw_ids[0])).params[0]  # (ant, chan, pol)
    np.testing.assert_allclose(np.sqrt(np.mean(np.abs(b) ** 2, axis=1)), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.angle(np.sum(b / np.abs(b), axis=1)), 0.0, atol=1e-6)


def test_fillgaps_interpolates_short_runs(tmp_path, copy_ms, bp_ms):
    """Flag channels 5-6 of every row: without fillgaps they are flagged solutions; with
    fillgaps=2 they are interpolated (linear in amp and phase) and unflagged."""
    import casacore.tables as ct

    src, truth = bp_ms
    path = copy_ms(src, "gaps.ms")
    with ct.table(str(path), readonly=False, ack=False) as t:
        for d in truth.science_spw_ids:  # DDID = spw id in the simulator
            with t.query(f"DATA_DESC_ID=={int(d)}") as sub:
                fl = sub.getcol("FLAG")
                fl[:, 5:7] = True
                sub.putcol("FLAG", fl)
    spw = int(truth.science_spw_ids[0])
    kw = dict(field=str(BP_FIELD), spw=str(spw), refant="0", model=_model(truth))
    plain = solve_bandpass(path, **kw).solutions(spw)
    filled = solve_bandpass(path, fillgaps=2, **kw).solutions(spw)
    assert plain.flag[0, :, 5:7].all() and not plain.flag[0, :, [4, 7]].any()
    assert not filled.flag[0].any()
    g4, g7 = filled.params[0, :, 4], filled.params[0, :, 7]
    mid = filled.params[0, :, 5]
    np.testing.assert_allclose(np.abs(mid), (2 * np.abs(g4) + np.abs(g7)) / 3, rtol=1e-5)
    assert not solve_bandpass(path, fillgaps=1, **kw).solutions(spw).flag[0, :, 4].any()
    assert solve_bandpass(path, fillgaps=1, **kw).solutions(spw).flag[0, :, 5].all()


def test_phase_up_then_bandpass_from_one_read(tmp_path):
    """With time-variable gains, pre-applying a solint='int' phase-up gives a bandpass
    whose phases match the truth better than without; the cached sequence (one read)
    gives the same tables as reading the MS for each solve."""
    path = tmp_path / "pu.ms"
    cfg = SimConfig.tiny(seed=12).replace(n_ant=N_ANT, gain_timescale_s=60.0,
                                          gain_phase_rms_deg=40.0)
    truth = simulate(path, config=cfg, tsys=False, wvr=False, delays=False, dry_residual=False)
    spws = _spws(truth)
    kw = dict(refant="0")
    ph = solve_gains(path, field=str(BP_FIELD), spw=spws, solint="int", calmode="p",
                     model=_model(truth), **kw)
    bp = solve_bandpass(path, field=str(BP_FIELD), spw=spws, gaintable=[ph], model=_model(truth), **kw)
    amp = solve_gains(path, field=str(BP_FIELD), spw=spws, solint="inf", gaintable=[bp, ph],
                      model=_model(truth), **kw)
    cache = load_calibrator(path, field=str(BP_FIELD), spw=spws, model=_model(truth))
    ph2 = solve_gains(cache, solint="int", calmode="p", **kw)
    bp2 = solve_bandpass(cache, gaintable=[ph2], **kw)
    amp2 = solve_gains(cache, solint="inf", gaintable=[bp2, ph2], **kw)
    assert ph2.equals(ph, rtol=1e-5, atol=1e-6)
    assert bp2.equals(bp, rtol=1e-4, atol=1e-5)
    assert amp2.equals(amp, rtol=1e-4, atol=1e-5)
    # after phase-up + bandpass the residual gain is ~ unity
    a = amp.solutions(int(truth.science_spw_ids[0]))
    assert np.median(np.abs(np.abs(a.params[0]) - 1)) < 0.01
    assert np.median(np.abs(np.angle(a.params[0]))) < 0.01


def test_bandpass_rejects_combine_spw_and_bpoly(bp_ms):
    from fastcal.errors import ParameterError, UnsupportedError

    path, _ = bp_ms
    with pytest.raises(ParameterError, match="combine='spw' is not supported for a bandpass"):
        solve_bandpass(path, combine="scan,spw")
    with pytest.raises(UnsupportedError, match="bandtype='BPOLY'"):
        solve_bandpass(path, bandtype="BPOLY")
