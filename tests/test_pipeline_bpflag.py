"""bpflagchans: outlier channels of the bandpass table and of the data (hif_bpflagchans)."""

from __future__ import annotations

import casacore.tables as ct
import numpy as np
import pytest
from ms_edit import multiply_data

from fastcal.caltable import read_caltable
from fastcal.errors import CalTableError, ParameterError
from fastcal.ms import open_ms
from fastcal.pipeline.stages.bpflagchans import (
    bandpass_outliers,
    flag_bandpass_channels,
    noise_inflation,
    smooth_fit,
    window_half_width,
)
from fastcal.simulate import SimConfig, simulate

BAD_ANT, BAD_CHANS = 2, [30, 31, 32]


@pytest.fixture(scope="module")
def bp_ms(tmp_path_factory):
    """Clean tiny MS with 64 channels per spw (read-only by convention; tests copy it)."""
    path = tmp_path_factory.mktemp("bpflag") / "bp.ms"
    simulate(path, config=SimConfig.tiny(seed=3, n_chan=64))
    return path


def _solve(path, tmp_path) -> str:
    """Phase-up + bandpass on the bandpass calibrator, as the bandpass stage does."""
    from fastcal.solve import solve_bandpass, solve_gains

    info = open_ms(path)
    spw = ",".join(map(str, info.spws_with_role("science")))
    kw = dict(field=info.field_names[0], spw=spw, refant=",".join(info.antenna_names), overwrite=True)
    ph = str(tmp_path / "ph.tbl")
    solve_gains(str(path), ph, solint="int", calmode="p", **kw)
    bp = str(tmp_path / "bp.tbl")
    solve_bandpass(str(path), bp, solint="inf", combine="scan", solnorm=True, gaintable=[ph], **kw)
    return bp


def _inject(path, spw, factor):
    """Antenna-based corruption of BAD_CHANS of antenna BAD_ANT: V_pq *= g_p conj(g_q)."""
    dd = open_ms(path).ddid_for_spw(spw)
    for col, g in (("ANTENNA1", factor), ("ANTENNA2", np.conj(factor))):
        multiply_data(path, f"DATA_DESC_ID=={dd} && {col}=={BAD_ANT} && ANTENNA1!=ANTENNA2", BAD_CHANS, g)


def _data_flags(path, spw):
    dd = open_ms(path).ddid_for_spw(spw)
    with ct.table(str(path), ack=False) as t:
        sub = t.query(f"DATA_DESC_ID=={dd}")
        try:
            return sub.getcol("FLAG"), sub.getcol("ANTENNA1"), sub.getcol("ANTENNA2")
        finally:
            sub.close()


# ---------------------------------------------------------------- the fit and the metric


def test_smooth_fit_follows_a_quadratic_and_ignores_a_spike():
    x = np.arange(64.0)
    y = 0.3 + 0.01 * x - 2e-4 * x**2
    y_bad = y.copy()
    y_bad[20] += 1.0
    fit, scale = smooth_fit(y_bad, np.ones(64, bool), window_half_width(64))
    assert np.allclose(fit, y, atol=1e-9)  # leave-one-out: the spike does not pull its own fit
    assert np.all(scale > 1.0) and scale[0] > scale[32]  # edges extrapolate
    with pytest.raises(ParameterError, match="half=0"):
        smooth_fit(y, np.ones(64, bool), 0)


def _synthetic(seed=0, n_ant=6, nchan=64, noise=0.01):
    rng = np.random.default_rng(seed)
    x = np.linspace(-1, 1, nchan)
    amp = 1 + 0.05 * np.sin(2 * np.pi * (x[None, :, None] * rng.uniform(1, 3, (n_ant, 1, 2))))
    ph = rng.uniform(-2, 2, (n_ant, 1, 2)) * x[None, :, None]
    p = amp * np.exp(1j * ph) + noise * (rng.standard_normal((n_ant, nchan, 2))
                                       + 1j * rng.standard_normal((n_ant, nchan, 2)))
    return p, np.zeros(p.shape, bool)


def test_outliers_on_synthetic_bandpass():
    p, fl = _synthetic()
    assert not bandpass_outliers(p, fl).any()
    p[3, 40:42, 1] *= np.exp(1j * np.radians(25))  # one polarisation, two channels
    p[1, 10, :] *= 0.6
    bad = bandpass_outliers(p, fl)
    assert bad.shape == (6, 64)
    assert sorted(map(tuple, np.argwhere(bad))) == [(1, 10), (3, 40), (3, 41)]
    fl[3, 40, :] = True  # already flagged channels are not reported again
    assert not bandpass_outliers(p, fl)[3, 40]
    with pytest.raises(ParameterError, match="limit=0"):
        bandpass_outliers(p, fl, limit=0)


def test_floor_stops_tiny_deviations():
    p, fl = _synthetic(seed=1, noise=1e-3)
    p[2, 20, :] *= 1.04  # far beyond 14 MADs of the 0.1 % noise, but below the 5 % floor
    assert bandpass_outliers(p, fl, min_amp_dev=0.0)[2, 20]
    assert not bandpass_outliers(p, fl)[2, 20]


def test_noise_inflation_from_common_snr_drop():
    snr = np.full((5, 16, 2), 30.0)
    snr[:, 0, :] = 10.0  # every antenna noisier at the edge
    snr[2, 8, :] = 1.0  # one antenna's bad channel does not move the median
    f = noise_inflation(snr, np.zeros(snr.shape, bool))
    assert f.shape == (1, 16, 2)
    assert np.allclose(f[0, 0], 3.0) and np.allclose(f[0, 1:], 1.0)
    assert np.all(noise_inflation(None, np.zeros(snr.shape, bool)) == 1.0)


# ---------------------------------------------------------------- on simulated data


def test_clean_ms_gets_no_flags(bp_ms, copy_ms, tmp_path):
    path = copy_ms(bp_ms)
    bp = _solve(path, tmp_path)
    before = read_caltable(bp).flag.copy()
    s = flag_bandpass_channels(str(path), bp)
    assert s.outliers == {} and s.n_new == 0 and s.n_solutions == 0 and not s.template
    assert np.array_equal(read_caltable(bp).flag, before)


@pytest.mark.parametrize("factor", [2.0, 0.3, np.exp(1j * np.radians(30))], ids=["amp2", "amp0.3", "phase30"])
def test_injected_bad_channels_flagged_in_table_and_data(bp_ms, copy_ms, tmp_path, factor):
    path = copy_ms(bp_ms)
    info = open_ms(path)
    s0, s1 = info.spws_with_role("science")
    _inject(path, s0, factor)
    bp = _solve(path, tmp_path)
    s = flag_bandpass_channels(str(path), bp)
    ant = info.antenna_names[BAD_ANT]
    assert s.outliers == {str(s0): {ant: BAD_CHANS}}
    assert s.template == [f"mode='manual' antenna='{ant}' spw='{s0}:30~32' reason='fastcal:bpflagchans'"]
    sol = read_caltable(bp).solutions(s0)
    assert sol.flag[0, BAD_ANT][BAD_CHANS].all() and s.n_solutions == 3 * 2
    others = np.ones(sol.flag.shape[1:3], bool)
    others[BAD_ANT, BAD_CHANS] = False
    assert not sol.flag[0][others].any()
    flag, a1, a2 = _data_flags(path, s0)
    hit = (a1 == BAD_ANT) | (a2 == BAD_ANT)
    assert flag[hit][:, BAD_CHANS, :].all()
    assert not np.delete(flag[hit], BAD_CHANS, axis=1).any() and not flag[~hit].any()
    assert s.n_new == flag.sum()
    assert not _data_flags(path, s1)[0].any()
    again = flag_bandpass_channels(str(path), bp)  # flagged solutions and data are not flagged twice
    assert again.n_new == 0 and again.n_solutions == 0


def test_bad_inputs(bp_ms, copy_ms, tmp_path):
    path = copy_ms(bp_ms)
    bp = _solve(path, tmp_path)
    with pytest.raises(CalTableError, match="G Jones"):
        flag_bandpass_channels(str(path), str(tmp_path / "ph.tbl"))
    with pytest.raises(ParameterError, match=r"spw \[0\]"):
        flag_bandpass_channels(str(path), bp, spw=[0])
    with pytest.raises(ParameterError, match="max_fraction=0"):
        flag_bandpass_channels(str(path), bp, max_fraction=0)


def test_bandpass_stage_runs_bpflagchans_with_a_flag_backup(bp_ms, copy_ms, tmp_path):
    """The bandpass stage flags the injected channels (table and data) and records them."""
    from fastcal.flagversions import list_flag_versions
    from fastcal.pipeline import run
    from fastcal.pipeline.stages.bandpass import BandpassStage
    from fastcal.pipeline.stages.importdata import ImportDataStage
    from fastcal.pipeline.stages.refant import RefantStage

    path = copy_ms(bp_ms)
    info = open_ms(path)
    s0 = info.spws_with_role("science")[0]
    _inject(path, s0, 2.0)
    ctx = run(path, tmp_path / "out", recipe=[ImportDataStage(), RefantStage(), BandpassStage()],
              options={"hm_bandpass": "fixed"}).context  # per-channel table (SNR ~30 here)
    r = ctx.results["bandpass"]
    assert r["status"] == "ok"
    assert r["outputs"]["bpflagchans"]["outliers"] == {str(s0): {info.antenna_names[BAD_ANT]: BAD_CHANS}}
    assert "fastcal_before_bandpass" in {v.name for v in list_flag_versions(path)}
    (rec,) = [f for f in ctx.flags if f.agent == "bpflagchans"]
    assert rec.stage == "bandpass" and f"spw='{s0}:30~32'" in rec.command
    sol = read_caltable(ctx.callib.get("bandpass").path).solutions(s0)
    assert sol.flag[0, BAD_ANT][BAD_CHANS].all()
    assert any(m.startswith("bpflagchans spw") for m in r["messages"])
    ctx = run(path, tmp_path / "out2", recipe=[ImportDataStage(), RefantStage(), BandpassStage()],
              options={"bpflagchans": False}).context
    assert ctx.results["bandpass"]["outputs"]["bpflagchans"] is None
