"""QA2 checks of the qa stage (Tsys, bandpass, gains) on small simulated data.

A clean simulation scores green; an injected problem (one antenna's SYSCAL Tsys x5, a
low-SNR bandpass, outlier bandpass channels, jittery gains) lowers the score and the message
names the antenna and spw.
"""

from __future__ import annotations

import warnings

import casacore.tables as ct
import numpy as np
import pytest

from fastcal.caltable import read_caltable
from fastcal.errors import ParameterError
from fastcal.ms import open_ms
from fastcal.pipeline import qa
from fastcal.pipeline.stages.qa2 import bandpass_checks, gain_checks, tsys_checks, tsys_statistics
from fastcal.simulate import SimConfig, simulate

STAGES = ["importdata", "flagdata", "refant", "tsys", "bandpass", "timegaincal"]


def _run_to(path, out, stop):
    """Run the stages the checks need (no WVR, lowgainflag, setjy or fluxscale: faster)."""
    from fastcal.pipeline import run

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run(path, str(out), stages=STAGES[:STAGES.index(stop) + 1],
                   options={"hm_bandpass": "fixed"}).context  # per-channel bandpass to assess


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """A 64-channel single-spw tiny simulation with Tsys, bandpass and gain tables (~1.5 s)."""
    d = tmp_path_factory.mktemp("qa2clean")
    path = d / "clean.ms"
    simulate(path, config=SimConfig.tiny(seed=5, n_chan=64, n_spw=1))
    ctx = _run_to(path, d / "out", "timegaincal")
    return path, ctx


def _by_name(scores):
    out = {}
    for q in scores:
        out.setdefault(q.name, []).append(q)
    return out


def test_clean_simulation_scores_green_in_every_qa2_check(clean):
    from fastcal.pipeline import run

    path, ctx = clean
    res = run(path, ctx.out_dir, stages=["qa"]).context.results["qa"]
    assert res["status"] == "ok"
    scores = {q["name"]: q for q in res["qa"]}
    want = {"tsys_antenna_outlier", "tsys_derivative", "tsys_band", "bandpass_amp_rms",
            "bandpass_phase_rms", "bandpass_outliers", "gain_phase_scatter", "gain_amp_scatter",
            "gain_snr"}
    assert want <= set(scores)
    for name in want:
        assert scores[name]["score"] > 0.9, scores[name]
    # applycal has not run: no sensitivity, and the stage says so
    assert "sensitivity" not in scores and any("applycal" in m for m in res["messages"])


def test_tsys_x5_on_one_antenna_is_red_and_named(clean, copy_ms):
    path = copy_ms(clean[0])
    info = open_ms(path)
    bad = 2
    clean_scores = _by_name(tsys_checks(str(path))[0])
    with ct.table(str(path / "SYSCAL"), readonly=False, ack=False) as t:
        ant = t.getcol("ANTENNA_ID")
        for r in np.flatnonzero(ant == bad):
            t.putcell("TSYS_SPECTRUM", int(r), t.getcell("TSYS_SPECTRUM", int(r)) * 5.0)
    scores, out = tsys_checks(str(path))
    s = _by_name(scores)
    worst = s["tsys_antenna_outlier"][0]
    assert clean_scores["tsys_antenna_outlier"][0].score == 1.0
    assert worst.score <= 0.33 and worst.colour == "red"
    assert 4.0 < worst.value < 6.0  # 5 x its own Tsys over an unchanged array median
    tsys_spws = sorted({int(k.split(":")[0]) for k in out["median_k"]})
    assert info.antenna_names[bad] in worst.message and f"spw {tsys_spws[0]}" in worst.message
    assert worst.applies_to == f"antenna {info.antenna_names[bad]} spw {tsys_spws[0]}"
    # the other antennas are not blamed; the band check still sees a normal array median
    assert all(a not in worst.message for i, a in enumerate(info.antenna_names) if i != bad)
    assert all(q.score == 1.0 for q in s["tsys_band"])


def test_tsys_extreme_for_the_whole_array_fails_the_band_check(clean, copy_ms):
    path = copy_ms(clean[0])
    with ct.table(str(path / "SYSCAL"), readonly=False, ack=False) as t:
        t.putcol("TSYS_SPECTRUM", t.getcol("TSYS_SPECTRUM") * 8.0)
    st = tsys_statistics(str(path))
    s = _by_name(tsys_checks(str(path))[0])
    assert s["tsys_antenna_outlier"][0].score == 1.0  # every antenna alike
    for q in s["tsys_band"]:
        assert q.score <= 0.5 and "above the typical band 6 range" in q.message
        spw = int(q.applies_to.split()[-1])
        assert q.value == pytest.approx(np.median([v for k, v in st["median"].items() if k[0] == spw]))


@pytest.fixture(scope="module")
def noisy_bandpass(tmp_path_factory):
    d = tmp_path_factory.mktemp("qa2noisy")
    path = d / "noisy.ms"
    simulate(path, config=SimConfig.tiny(seed=5, n_chan=64, n_spw=1, noise_scale=6.0))
    return path, _run_to(path, d / "out", "bandpass")


def test_low_snr_bandpass_scores_lower_with_the_spw_named(clean, noisy_bandpass):
    path, ctx = clean
    names = open_ms(path).antenna_names
    good = _by_name(bandpass_checks(ctx.callib.get("bandpass").path, names)[0])
    bad_ctx = noisy_bandpass[1]
    bad, out = bandpass_checks(bad_ctx.callib.get("bandpass").path, names)
    bad = _by_name(bad)
    spw = bad_ctx.science_spws[0]
    for name in ("bandpass_amp_rms", "bandpass_phase_rms"):
        g, b = good[name][0], bad[name][0]
        assert g.score > 0.9 and b.score <= 0.66
        assert b.value > 3 * g.value  # noise x6 -> channel noise several times larger
        assert f"spw {spw}" in b.message and b.applies_to.split()[1] in names
    # the reported noise is the channel noise: ~ 1/SNR of the solutions
    snr = float(bad_ctx.results["bandpass"]["outputs"]["median_snr"])
    med_amp = np.median(list(out["amp_rms"].values()))
    assert 0.5 < med_amp * snr < 2.0


def _inject(table_path, new_path, spw, ant, fn):
    tab = read_caltable(table_path)
    rows = (tab.antenna1 == ant) & (tab.spw_id == spw)
    tab.params[rows] = fn(tab.params[rows])
    tab.write(str(new_path), overwrite=True)
    return str(new_path)


def test_outlier_bandpass_channels_are_counted_for_that_antenna(clean, tmp_path):
    path, ctx = clean
    names = open_ms(path).antenna_names
    spw, ant = ctx.science_spws[0], 3
    chans = [10, 11, 30, 31, 50, 51, 52]

    def spike(p):
        p = p.copy()
        p[:, chans, :] *= 1.6
        return p

    bad = _inject(ctx.callib.get("bandpass").path, tmp_path / "bp_spikes.tbl", spw, ant, spike)
    scores, out = bandpass_checks(bad, names)
    q = _by_name(scores)["bandpass_outliers"][0]
    assert q.applies_to == f"antenna {names[ant]} spw {spw}"
    n, tot = out["outlier_channels"][f"{spw}:{names[ant]}"]
    assert n >= 2 * len(chans) - 2 and tot == 2 * 60  # 2 pols x 60 unedged channels
    assert q.score < 0.66
    others = [v[0] for k, v in out["outlier_channels"].items() if k != f"{spw}:{names[ant]}"]
    assert max(others) <= 2


def test_noisy_phase_corrections_name_the_antenna(clean, tmp_path):
    path, ctx = clean
    names = open_ms(path).antenna_names
    spw, ant = ctx.science_spws[0], 1
    rng = np.random.default_rng(3)

    def jitter(p):
        return p * np.exp(1j * np.radians(rng.normal(0.0, 60.0, p.shape))).astype(p.dtype)

    src = ctx.callib.get("phase_int").path
    good = _by_name(gain_checks(src, names, kind="phase", group_by="scan", snr_target=5.0)[0])
    bad = _inject(src, tmp_path / "phase_jitter.tbl", spw, ant, jitter)
    q = _by_name(gain_checks(bad, names, kind="phase", group_by="scan", snr_target=5.0)[0])
    g, b = good["gain_phase_scatter"][0], q["gain_phase_scatter"][0]
    assert g.score == 1.0 and b.score <= 0.66
    assert b.applies_to == f"antenna {names[ant]} spw {spw}" and names[ant] in b.message
    assert 40.0 < b.value < 75.0  # wrapped N(0, 60 deg) differences / sqrt(2)


def test_noisy_amplitude_corrections_name_the_antenna(clean, tmp_path):
    path, ctx = clean
    names = open_ms(path).antenna_names
    spw, ant = ctx.science_spws[0], 4
    src = ctx.callib.get("amp_cal").path
    n_time = read_caltable(src).solutions(spw).time.size

    def scale(p):  # alternate scans 0.7 / 1.3 x
        f = np.where(np.arange(len(p)) % 2 == 0, 0.7, 1.3)[:, None, None]
        return (p * f).astype(p.dtype)

    bad = _inject(src, tmp_path / "amp_jumps.tbl", spw, ant, scale)
    good = _by_name(gain_checks(src, names, kind="amp", group_by="field", snr_target=20.0)[0])
    q = _by_name(gain_checks(bad, names, kind="amp", group_by="field", snr_target=20.0)[0])
    assert n_time >= 3
    assert good["gain_amp_scatter"][0].score == 1.0
    b = q["gain_amp_scatter"][0]
    assert b.score <= 0.66 and names[ant] in b.message and f"spw {spw}" in b.message


def test_consecutive_scatter_respects_groups_and_flags():
    p = np.ones((6, 2, 1), np.complex64)
    p[3:, 0, 0] = np.exp(1j * np.radians(90.0))  # a jump between groups only
    groups = np.array([0, 0, 0, 1, 1, 1])
    s = qa.consecutive_scatter(p, np.zeros(p.shape, bool), groups, kind="phase")
    assert s[0] == pytest.approx(0.0, abs=1e-4)
    s2 = qa.consecutive_scatter(p, np.zeros(p.shape, bool), np.zeros(6, int), kind="phase")
    assert s2[0] == pytest.approx(90.0 / np.sqrt(5) / np.sqrt(2), rel=1e-4)
    fl = np.zeros(p.shape, bool)
    fl[:, 1, 0] = True
    assert np.isnan(qa.consecutive_scatter(p, fl, groups, kind="amp")[1])
    with pytest.raises(ParameterError, match="kind='delay'"):
        qa.consecutive_scatter(p, fl, groups, kind="delay")


def test_smooth_residuals_remove_slow_ripple_and_measure_white_noise():
    rng = np.random.default_rng(0)
    x = np.arange(256)
    ripple = 0.05 * np.sin(2 * np.pi * x / 40.0) + 0.02 * x / 256
    assert np.sqrt(np.mean(qa.smooth_residuals(1.0 + ripple) ** 2)) < 0.002
    noise = rng.normal(0, 0.03, x.size)
    est = np.sqrt(np.mean(qa.smooth_residuals(1.0 + ripple + noise) ** 2))
    assert est == pytest.approx(0.03, rel=0.12)


def test_bandpass_stats_need_enough_channels_and_skip_the_refant_phase():
    rng = np.random.default_rng(1)
    n_ant, n_chan = 3, 64
    p = (1 + rng.normal(0, 0.02, (n_ant, n_chan, 2))) * np.exp(1j * rng.normal(0, 0.02, (n_ant, n_chan, 2)))
    p[0] = np.abs(p[0])  # reference antenna: zero phase
    st = qa.bandpass_channel_stats(p, np.zeros(p.shape, bool))
    assert np.isnan(st["phase_rms_deg"][0]) and np.all(st["phase_rms_deg"][1:] > 0.5)
    assert np.all((st["amp_rms"] > 0.012) & (st["amp_rms"] < 0.03))
    few = qa.bandpass_channel_stats(p[:, :16], np.zeros((n_ant, 16, 2), bool))
    assert np.all(np.isnan(few["amp_rms"])) and not few["n_valid"].any()
    with pytest.raises(ParameterError, match="flag shape"):
        qa.bandpass_channel_stats(p, np.zeros((2, 2, 2), bool))


def test_qa_stage_checks_what_exists_and_reports_the_rest(tiny_ms, copy_ms, tmp_path):
    from fastcal.pipeline import run

    path = copy_ms(tiny_ms[0])
    res = run(path, str(tmp_path / "o"), stages=["importdata", "qa"]).context.results["qa"]
    assert res["status"] == "ok"
    names = {q["name"] for q in res["qa"]}
    assert {"tsys_antenna_outlier", "tsys_derivative", "tsys_band"} <= names
    assert not names & {"bandpass_amp_rms", "gain_phase_scatter", "sensitivity"}
    assert any("no bandpass table registered" in m for m in res["messages"])
    with ct.table(str(path / "SYSCAL"), readonly=False, ack=False) as t:  # unreadable SYSCAL
        t.removecols(["TSYS_SPECTRUM"])
    res = run(path, str(tmp_path / "o2"), stages=["importdata", "qa"]).context.results["qa"]
    assert res["status"] == "skipped"
    assert any("tsys checks not done" in m and "TSYS_SPECTRUM" in m for m in res["messages"])
