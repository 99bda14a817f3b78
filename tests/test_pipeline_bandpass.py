"""The SNR-based phase-up solint of the bandpass stage (hifa_bandpass phaseupsnr heuristic)."""

from __future__ import annotations

import math

import pytest

from fastcal.errors import ParameterError
from fastcal.pipeline.stages.bandpass import PHASEUP_MAX_SOLINT_S, PHASEUP_SNR, phaseup_solint


def test_enough_snr_per_integration_keeps_int():
    assert phaseup_solint(PHASEUP_SNR, 6.048, 120.0) == "int"
    assert phaseup_solint(float("nan"), 6.048, 120.0) == "int"


def test_low_snr_grows_as_sqrt_time():
    # SNR 10 per integration needs (20/10)^2 = 4 integrations
    assert phaseup_solint(10.0, 6.048, 120.0) == f"{4 * 6.048:.3f}s"
    # SNR 15: ceil(1.78) = 2 integrations
    assert phaseup_solint(15.0, 6.048, 120.0) == f"{2 * 6.048:.3f}s"


def test_caps_at_max_solint_and_nsols_per_scan():
    assert phaseup_solint(1.0, 6.048, 600.0) == f"{PHASEUP_MAX_SOLINT_S:.3f}s"
    assert phaseup_solint(1.0, 6.048, 72.0) == f"{72.0 / 2:.3f}s"  # two solutions per scan
    # a scan of two integrations leaves one integration per solution: 'int'
    assert phaseup_solint(1.0, 6.048, 2 * 6.048) == "int"
    t = float(phaseup_solint(5.0, 2.0, 120.0)[:-1])
    assert math.isclose(t, 16 * 2.0)


@pytest.mark.parametrize("kw, match", [
    (dict(int_time_s=0.0, scan_time_s=60.0), "int_time_s=0.0"),
    (dict(int_time_s=6.0, scan_time_s=-1.0), "scan_time_s=-1.0"),
])
def test_bad_times_refused(kw, match):
    with pytest.raises(ParameterError, match=match):
        phaseup_solint(5.0, **kw)


def test_bad_nsols_refused():
    with pytest.raises(ParameterError, match="nsols=0"):
        phaseup_solint(5.0, 6.0, 60.0, nsols=0)


# ---------------------------------------------------------------------------------------------
# hm_bandpass='snr': frequency solint from the per-channel SNR, evenbpints, auto fillgaps
# ---------------------------------------------------------------------------------------------

import casacore.tables as ct  # noqa: E402
import numpy as np  # noqa: E402

from fastcal.caltable import read_caltable  # noqa: E402
from fastcal.pipeline.stages import bandpass as bpmod  # noqa: E402
from fastcal.pipeline.stages.bandpass import (  # noqa: E402
    BP_NSOLS,
    BP_SNR,
    auto_fillgaps,
    bandpass_freq_solint,
)
from fastcal.simulate import SimConfig, simulate  # noqa: E402


def test_freq_solint_keeps_channels_at_high_snr():
    assert bandpass_freq_solint(BP_SNR, 64) == "inf"
    assert bandpass_freq_solint(200.0, 64) == "inf"
    assert bandpass_freq_solint(float("nan"), 64) == "inf"


def test_freq_solint_sqrt_rule_and_even_divisor():
    # (50/30)^2 = 2.8 -> 3 channels; 64 has no divisor 3: the next one, 4
    assert bandpass_freq_solint(30.0, 64) == "inf,4ch"
    # (50/20)^2 = 6.25 -> 7; divisors of 120 above: 8
    assert bandpass_freq_solint(20.0, 120) == "inf,8ch"
    # (50/40)^2 = 1.56 -> 2
    assert bandpass_freq_solint(40.0, 128) == "inf,2ch"


def test_freq_solint_keeps_at_least_bpnsols_channels():
    for nchan in (16, 64, 120, 128, 240, 3840):
        si = bandpass_freq_solint(1.0, nchan)
        n = int(si.split(",")[1][:-2])
        assert nchan % n == 0 and nchan // n >= BP_NSOLS, (nchan, si)
    assert bandpass_freq_solint(1.0, 64) == "inf,8ch"
    # fewer than 2 * bpnsols channels, or no divisor <= nchan / 8: per channel
    assert bandpass_freq_solint(1.0, 15) == "inf"
    assert bandpass_freq_solint(1.0, 127) == "inf"


@pytest.mark.parametrize("kw, match", [
    (dict(snr_chan=5.0, nchan=0), "nchan=0"),
    (dict(snr_chan=5.0, nchan=64, snr=0.0), "snr=0.0"),
    (dict(snr_chan=5.0, nchan=64, nsols=0), "nsols=0"),
])
def test_freq_solint_bad_inputs(kw, match):
    with pytest.raises(ParameterError, match=match):
        bandpass_freq_solint(**kw)


def test_auto_fillgaps_is_a_quarter_of_the_channels():
    assert [auto_fillgaps(n) for n in (16, 64, 127, 3840)] == [4, 16, 31, 960]


def _run_stage(path, out, options=None, **kw):
    from fastcal.pipeline import run
    from fastcal.pipeline.stages.bandpass import BandpassStage
    from fastcal.pipeline.stages.importdata import ImportDataStage
    from fastcal.pipeline.stages.refant import RefantStage

    opts = {"hm_bandpass": "snr", **(options or {})}
    return run(str(path), str(out), recipe=[ImportDataStage(), RefantStage(), BandpassStage()], options=opts,
               **kw).context


def _bandpass_error(tab, truth) -> float:
    """Rms of |B_p B_q^* / (T_p T_q^*) - 1| over baselines, channels and pols, with the table
    interpolated (linear in amplitude and phase) onto the data channels and each baseline's
    mean amplitude and linear phase slope (delays, not part of truth.bandpass) removed."""
    errs = []
    for k, s in enumerate(truth.science_spw_ids):
        sol = tab.solutions(int(s))
        p, fl = np.asarray(sol.params)[0], np.asarray(sol.flag)[0]
        cf, df = np.asarray(tab.chan_freq[int(s)]), np.asarray(truth.science_chan_freq[k])
        o = np.argsort(cf)
        b = np.full(truth.bandpass[k].shape, np.nan, complex)
        for a in range(p.shape[0]):
            for j in range(2):
                ok = ~fl[a, o, j]
                if ok.sum() >= 2:
                    x, y = cf[o][ok], p[a, o, j][ok]
                    b[a, :, j] = np.interp(df, x, np.abs(y)) * np.exp(1j * np.interp(df, x, np.unwrap(np.angle(y))))
        t = truth.bandpass[k]
        for a in range(p.shape[0]):
            for c in range(a + 1, p.shape[0]):
                r = b[a] * np.conj(b[c]) / (t[a] * np.conj(t[c]))
                for j in range(2):
                    uw = np.unwrap(np.angle(r[:, j]))
                    fit = np.polyval(np.polyfit(df - df.mean(), uw, 1), df - df.mean())
                    e = np.abs(r[:, j]) / np.mean(np.abs(r[:, j])) * np.exp(1j * (uw - fit)) - 1
                    errs.append(np.abs(e))
    return float(np.sqrt(np.nanmean(np.concatenate(errs) ** 2)))


@pytest.fixture(scope="module")
def bright_ms(tmp_path_factory):
    path = tmp_path_factory.mktemp("bp_bright") / "bright.ms"
    simulate(path, config=SimConfig.tiny(seed=3))
    return path


@pytest.fixture(scope="module")
def faint(tmp_path_factory):
    """64 channels, noise x 6: about 5 per channel on the bandpass calibrator."""
    d = tmp_path_factory.mktemp("bp_faint")
    truth = simulate(d / "faint.ms", config=SimConfig.tiny(seed=2, n_chan=64, noise_scale=6.0))
    ctx = _run_stage(d / "faint.ms", d / "out")
    return d / "faint.ms", truth, ctx


def test_high_snr_keeps_per_channel_solutions(bright_ms, copy_ms, tmp_path):
    path = copy_ms(bright_ms)
    ctx = _run_stage(path, tmp_path / "out")
    out = ctx.results["bandpass"]["outputs"]
    spws = [int(s) for s in ctx.science_spws]
    assert all(out["channel_snr"][str(s)] > BP_SNR for s in spws)
    assert out["bandpass_solint"] == {str(s): "inf" for s in spws}
    tab = read_caltable(out["caltable"])
    assert all(tab.nchan(s) == ctx.info.spws[s].num_chan for s in spws)
    assert out["fillgaps"] == {str(s): ctx.info.spws[s].num_chan // 4 for s in spws}
    calls = [c for c in ctx.commands if c.function.endswith("solve_bandpass")]
    assert len(calls) == 1 and calls[0].kwargs["fillgaps"] == 4 and calls[0].kwargs["solint"] == "inf"


def test_low_snr_averages_channels_and_beats_per_channel_solutions(faint, tmp_path):
    from fastcal.solve import solve_bandpass

    path, truth, ctx = faint
    r = ctx.results["bandpass"]
    out = r["outputs"]
    spws = [int(s) for s in ctx.science_spws]
    assert all(out["channel_snr"][str(s)] < 10 for s in spws)
    tab = read_caltable(out["caltable"])
    for s in spws:
        nchan = ctx.info.spws[s].num_chan
        n = int(out["bandpass_solint"][str(s)].split(",")[1][:-2])
        assert nchan % n == 0 and tab.nchan(s) == nchan // n >= BP_NSOLS
        assert out["fillgaps"][str(s)] == nchan // 4 == 16
        assert any(m.startswith(f"bandpass spw {s}: SNR") and "inf," in m for m in r["messages"])
    assert any("bpflagchans skipped" in m for m in r["messages"])
    # the same solve per channel, with the stage's phase-up pre-applied
    per_chan = solve_bandpass(str(path), str(tmp_path / "perchan.tbl"), field=",".join(ctx.roles["bandpass"]), spw=",".join(map(str, spws)), solint="inf",
                              combine="scan", refant=",".join(ctx.refant), minblperant=4, minsnr=3.0,
                              solnorm=True, gaintable=[out["phaseup"]])
    e_avg, e_chan = _bandpass_error(tab, truth), _bandpass_error(per_chan, truth)
    print(f"bandpass error vs truth: averaged {e_avg:.3f}, per channel {e_chan:.3f}")
    assert e_avg < 0.8 * e_chan, (e_avg, e_chan)


def test_fillgaps_fills_a_flagged_channel_run(bright_ms, copy_ms, tmp_path):
    path = copy_ms(bright_ms)
    from fastcal.ms import open_ms

    info = open_ms(path)
    s0 = info.spws_with_role("science")[0]
    dd = info.ddid_for_spw(s0)
    with ct.table(str(path), readonly=False, ack=False) as t:
        sub = t.query(f"DATA_DESC_ID=={dd}")
        f = sub.getcol("FLAG")
        f[:, 6:9, :] = True  # 3 channels <= fillgaps = 16 // 4
        sub.putcol("FLAG", f)
        sub.close()
    ctx = _run_stage(path, tmp_path / "out", options={"bpflagchans": False})
    sol = read_caltable(ctx.results["bandpass"]["outputs"]["caltable"]).solutions(s0)
    assert not np.asarray(sol.flag)[0][:, 6:9].any()


def test_mixed_solints_are_solved_per_group_and_merged(bright_ms, copy_ms, tmp_path, monkeypatch):
    path = copy_ms(bright_ms)
    s_lo = None

    def fake_snr(table, spw):
        return 5.0 if spw == s_lo else 500.0

    from fastcal.ms import open_ms

    s_lo = open_ms(path).spws_with_role("science")[1]
    monkeypatch.setattr(bpmod, "channel_snr", fake_snr)
    ctx = _run_stage(path, tmp_path / "out")
    out = ctx.results["bandpass"]["outputs"]
    spws = [int(s) for s in ctx.science_spws]
    assert out["bandpass_solint"] == {str(s): ("inf,2ch" if s == s_lo else "inf") for s in spws}
    tab = read_caltable(out["caltable"])
    assert {s: tab.nchan(s) for s in spws} == {s: (8 if s == s_lo else 16) for s in spws}
    assert sorted(np.unique(tab.spw_id).tolist()) == sorted(spws)
    for s in spws:  # the padded cells of the averaged spw are not part of its solutions
        sol = tab.solutions(s)
        assert np.asarray(sol.params).shape[2] == tab.nchan(s) and not np.asarray(sol.flag).all()
    assert sorted(tab.extra["merged_from"]) == sorted(
        str(p) for p in (tmp_path / "out" / "working").glob("*.bcal.part*.tbl"))


def test_fixed_mode_keeps_channels_and_bad_mode_refused(faint, copy_ms, tmp_path):
    from fastcal.pipeline import run
    from fastcal.pipeline.stages.bandpass import HM_BANDPASS_DEFAULT, BandpassStage
    from fastcal.pipeline.stages.importdata import ImportDataStage
    from fastcal.pipeline.stages.refant import RefantStage

    path = copy_ms(faint[0])
    ctx = _run_stage(path, tmp_path / "out", options={"hm_bandpass": "fixed"})
    out = ctx.results["bandpass"]["outputs"]
    assert set(out["bandpass_solint"].values()) == {"inf"}
    assert all(v < 10 for v in out["channel_snr"].values())  # 'snr' would average (test above)
    ctx = run(str(path), str(tmp_path / "out_default"), recipe=[ImportDataStage(), RefantStage(), BandpassStage()]).context
    expect = "inf" if HM_BANDPASS_DEFAULT == "fixed" else "inf,8ch"
    assert set(ctx.results["bandpass"]["outputs"]["bandpass_solint"].values()) == {expect}
    from fastcal.pipeline.stage import StageError

    with pytest.raises(StageError, match="hm_bandpass='smooth'; valid: 'snr'"):
        _run_stage(path, tmp_path / "out2", options={"hm_bandpass": "smooth"})
