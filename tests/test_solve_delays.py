"""gaintype='K' (solve_delays): delays against the truth and the radiometer equation.

Sign: the simulator's K_p = exp(-2 pi i tau_p (nu - nu_c)) (docs/simulate.md) is CASA's
K Jones exp(+2 pi i tau (nu - nu_ref)) with tau = -tau_sim; CASA 6.7 gaincal gives the same
sign as fastcal on this data (checked by hand, scripts/casa_parity_solve.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from fastcal.caltable import read_caltable
from fastcal.simulate import SimConfig, simulate
from fastcal.solve import solve_delays, solve_gains

N_ANT = 8
FIELD = 0


@pytest.fixture(scope="module")
def delay_ms(tmp_path_factory):
    path = tmp_path_factory.mktemp("k") / "k.ms"
    cfg = SimConfig.tiny(seed=21).replace(n_ant=N_ANT, n_chan=64)
    truth = simulate(path, config=cfg, tsys=False, wvr=False, gains=False, bandpass=False,
                     dry_residual=False)
    return path, truth


def test_delays_match_truth_within_radiometer_noise(delay_ms, tmp_path):
    path, truth = delay_ms
    out = tmp_path / "k.cal"
    tab = solve_gains(path, out, field=str(FIELD), spw=",".join(map(str, truth.science_spw_ids)),
                      gaintype="K", refant="0")
    assert tab.vis_cal == "K Jones" and read_caltable(out).equals(tab)
    n = N_ANT
    n_int = int(np.sum((truth.time_field == FIELD) & ~truth.time_is_atm))
    errs, preds = [], []
    for k, spw in enumerate(truth.science_spw_ids):
        s = tab.solutions(int(spw))
        assert np.all(s.refant == -1)  # CASA writes ANTENNA2 = -1 for K
        tau = s.params[0, :, 0, :]     # ns, CASA convention
        want = -(truth.delays_ns - truth.delays_ns[0])
        assert not s.flag.any()
        d = tau - want
        d = d - d.mean(axis=0)         # reference to the array mean (removes refant noise)
        errs.append(np.abs(d).ravel())
        f = truth.science_chan_freq[k]
        flux = truth.model_flux(FIELD, f).mean()
        s_ch = truth.noise_sigma[str(spw)] / (flux * np.sqrt(n_int))   # rad per channel
        s_bl = s_ch / (2 * np.pi * np.sqrt(np.sum((f - f.mean()) ** 2))) * 1e9  # ns
        preds.append(s_bl * np.sqrt(n - 1) / n)
        # PARAMERR is the 1-sigma delay error with the refant fixed: sigma_bl sqrt(2/N)
        ratio = np.median(s.paramerr[0, 1:, 0, :]) / (s_bl * np.sqrt(2 / n))
        assert 0.6 < ratio < 1.6, ratio
    assert np.median(np.concatenate(errs)) <= 1.5 * 0.6745 * np.median(preds)


def test_solve_delays_alias(delay_ms):
    path, truth = delay_ms
    spw = str(truth.science_spw_ids[0])
    a = solve_delays(path, field=str(FIELD), spw=spw, refant="0")
    b = solve_gains(path, field=str(FIELD), spw=spw, refant="0", gaintype="K")
    assert a.equals(b)


def _make_phase_coherent(path, truth):
    """Rewrite DATA so that the delay phase is referenced to 0 Hz in every spw
    (exp(-2 pi i tau nu)) instead of the simulator's per-spw centre: the spws are then
    phase-coherent, the situation multi-band delay fitting assumes."""
    import casacore.tables as ct

    tau = truth.delays_ns * 1e-9  # (ant, pol)
    with ct.table(str(path) + "/DATA_DESCRIPTION", ack=False) as t:
        dd_spw = t.getcol("SPECTRAL_WINDOW_ID")
    with ct.table(str(path) + "/SPECTRAL_WINDOW", ack=False) as t:
        centre = {}
        for s in truth.science_spw_ids:
            f, w = t.getcell("CHAN_FREQ", int(s)), np.abs(t.getcell("CHAN_WIDTH", int(s)))
            centre[int(s)] = 0.5 * ((f[0] - 0.5 * w[0]) + (f[-1] + 0.5 * w[-1]))
    with ct.table(str(path), readonly=False, ack=False) as t:
        spw = dd_spw[t.getcol("DATA_DESC_ID")]
        a1, a2 = t.getcol("ANTENNA1"), t.getcol("ANTENNA2")
        for s, nu_c in centre.items():
            rows = np.flatnonzero(spw == s)
            cuts = np.flatnonzero(np.diff(rows) != 1) + 1
            for run in np.split(rows, cuts):  # runs of consecutive rows
                data = t.getcol("DATA", int(run[0]), run.size)
                for k, c in enumerate([0, data.shape[2] - 1]):  # parallel hands X, Y
                    dtau = tau[a1[run], k] - tau[a2[run], k]
                    data[:, :, c] *= np.exp(-2j * np.pi * dtau * nu_c)[:, None].astype(np.complex64)
                t.putcol("DATA", data, int(run[0]), run.size)


def test_multiband_delay_combine_spw(delay_ms, copy_ms, tmp_path):
    """combine='spw' (CASA's multi-band delay, 'KMBD'): one delay per antenna and pol
    fitted across both spws at once, written once under the lowest spw (as CASA's keepNCT
    does, with the bandwidth-weighted centroid frequency). On phase-coherent spws it recovers
    the truth, more precisely than either spw alone."""
    src, truth = delay_ms
    path = copy_ms(src, "coherent.ms")
    _make_phase_coherent(path, truth)
    spws = [int(s) for s in truth.science_spw_ids]
    sel = dict(field=str(FIELD), spw=",".join(map(str, spws)), refant="0", gaintype="K")
    out = tmp_path / "mbd.cal"
    mbd = solve_gains(path, out, combine="spw", **sel)
    assert mbd.vis_cal == "K Jones" and read_caltable(out).equals(mbd)
    assert list(mbd.spw_ids) == [min(spws)] and mbd.nrow == N_ANT
    f = truth.science_chan_freq
    np.testing.assert_allclose(mbd.chan_freq[min(spws)], [f.mean()], rtol=1e-9)
    s = mbd.solutions(min(spws))
    want = -(truth.delays_ns - truth.delays_ns[0])
    assert not s.flag.any()
    err_mbd = np.abs(s.params[0, :, 0, :] - want)[1:]
    per = solve_gains(path, **sel)
    err_per = [np.abs(per.solutions(k).params[0, :, 0, :] - want)[1:] for k in spws]
    assert np.median(err_mbd) < 0.6 * np.median(np.concatenate(err_per))
    assert err_mbd.max() < 0.01  # ns
    # PARAMERR predicts the error: a 2x wider band and 2x the data -> ~1/(2 sqrt 2) of a spw
    ratio = np.median(s.paramerr[0, 1:, 0, :]) / np.median(
        [per.solutions(k).paramerr[0, 1:, 0, :] for k in spws])
    assert 0.2 < ratio < 0.6, ratio
    # the same solve from a VisCache
    from fastcal.solve import load_calibrator

    cache = load_calibrator(path, field=str(FIELD), spw=sel["spw"])
    again = solve_gains(cache, combine="spw", refant="0", gaintype="K")
    np.testing.assert_allclose(again.params, mbd.params, atol=1e-5)


def test_delay_per_integration(delay_ms):
    path, truth = delay_ms
    spw = int(truth.science_spw_ids[0])
    tab = solve_gains(path, field=str(FIELD), spw=str(spw), refant="0", gaintype="K",
                      solint="int")
    s = tab.solutions(spw)
    n_int = int(np.sum((truth.time_field == FIELD) & ~truth.time_is_atm))
    assert s.params.shape[0] == n_int
    want = -(truth.delays_ns - truth.delays_ns[0])
    assert np.max(np.abs(s.params[:, :, 0, :] - want[None])) < 0.05


@pytest.mark.casa
def test_multiband_delay_matches_casa(delay_ms, copy_ms, tmp_path):
    """CASA 6.7 gaincal(gaintype='K', combine='spw') on the same phase-coherent data: the
    same table layout (K Jones, one row per antenna under the lowest spw, ANTENNA2 -1,
    centroid frequency) and delays within 2 ps (CASA: FFT peak only)."""
    from casa_helpers import run_casa, skip_without_casa

    skip_without_casa()
    src, truth = delay_ms
    path = copy_ms(src, "coherent.ms")
    _make_phase_coherent(path, truth)
    spws = ",".join(str(s) for s in truth.science_spw_ids)
    ours = solve_gains(path, field=str(FIELD), spw=spws, refant="0", gaintype="K",
                       combine="spw")
    out = tmp_path / "casa_mbd.cal"
    res = run_casa(f"""
        from casatasks import gaincal
        from casatools import table
        gaincal(vis={str(path)!r}, caltable={str(out)!r}, field='{FIELD}', spw={spws!r},
                refant='0', gaintype='K', combine='spw', solint='inf')
        tb = table()
        tb.open({str(out)!r})
        r = dict(fparam=tb.getcol('FPARAM').tolist(), spw=tb.getcol('SPECTRAL_WINDOW_ID').tolist(),
                 a1=tb.getcol('ANTENNA1').tolist(), a2=tb.getcol('ANTENNA2').tolist(),
                 viscal=tb.getkeyword('VisCal'))
        tb.close()
        tb.open({str(out)!r} + '/SPECTRAL_WINDOW')
        r['chan_freq'] = [float(tb.getcell('CHAN_FREQ', int(s))[0]) for s in set(r['spw'])]
        tb.close()
        emit(r)
    """)
    lowest = min(int(s) for s in truth.science_spw_ids)
    assert res["viscal"] == ours.vis_cal == "K Jones"
    assert set(res["spw"]) == {lowest} and list(ours.spw_ids) == [lowest]
    assert set(res["a2"]) == {-1} and len(res["a1"]) == ours.nrow == N_ANT
    np.testing.assert_allclose(ours.chan_freq[lowest], res["chan_freq"], rtol=1e-9)
    casa = np.array(res["fparam"])[:, 0, :].T[np.argsort(res["a1"])]  # (ant, pol) ns
    mine = ours.solutions(lowest).params[0, :, 0, :]
    assert np.max(np.abs(mine - casa)) < 2e-3
