"""QA score mappings of fastcal.pipeline.qa, checked at their boundaries."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fastcal.errors import ParameterError
from fastcal.pipeline import qa


@pytest.mark.parametrize("score, colour", [
    (0.0, "red"), (0.33, "red"), (0.3301, "yellow"), (0.66, "yellow"), (0.6601, "blue"),
    (0.9, "blue"), (0.9001, "green"), (1.0, "green"), (None, "grey"), (float("nan"), "grey"),
])
def test_colour_boundaries_follow_pipeline_weblog(score, colour):
    assert qa.colour_of(score) == colour


def test_qascore_rejects_out_of_range_and_round_trips():
    with pytest.raises(ParameterError, match="score=1.5 is invalid"):
        qa.QAScore("x", 1.0, 1.5, "m")
    q = qa.QAScore("x", float("nan"), 0.5, "m", "u", "spw 3")
    d = q.to_dict()
    assert d["value"] is None and d["colour"] == "yellow"
    back = qa.QAScore.from_dict(d)
    assert back.score == 0.5 and math.isnan(back.value) and back.applies_to == "spw 3"


def test_linear_score_clips_and_rejects_degenerate():
    assert qa.linear_score(0.0, 1.0, 2.0, 0.0, 1.0) == 0.0
    assert qa.linear_score(1.5, 1.0, 2.0, 0.0, 1.0) == pytest.approx(0.5)
    assert qa.linear_score(9.0, 1.0, 2.0, 0.0, 1.0) == 1.0
    with pytest.raises(ParameterError, match="x1 == x2"):
        qa.linear_score(1.0, 2.0, 2.0)


@pytest.mark.parametrize("frac, expected", [
    (0.0, 1.0), (0.05, 1.0), (0.275, 0.75), (0.5, 0.5), (0.5001, 0.0), (1.0, 0.0),
])
def test_flagged_fraction_score_pipeline_mapping(frac, expected):
    assert qa.flagged_fraction_score(frac).score == pytest.approx(expected)


def test_flagged_fraction_rejects_bad_fraction():
    with pytest.raises(ParameterError, match="frac_flagged=1.2 is invalid"):
        qa.flagged_fraction_score(1.2)


@pytest.mark.parametrize("frac, expected", [(0.0, 1.0), (0.05, 1.0), (0.325, 0.5), (0.6, 0.0), (0.9, 0.0)])
def test_agent_score_is_linear_between_5_and_60_percent(frac, expected):
    assert qa.agent_flagged_score(frac).score == pytest.approx(expected)


def test_wvr_score_mapping():
    assert qa.wvr_improvement_score(1.5).score == 1.0
    one = qa.wvr_improvement_score(1.5, n_flagged_ant=1).score
    assert one == pytest.approx(0.67 + 0.8 / 0.9 * 0.23) and qa.colour_of(one) == "blue"
    two = qa.wvr_improvement_score(1.5, n_flagged_ant=1, n_high_disc=1).score
    assert two == pytest.approx(0.67 + 0.7 / 0.9 * 0.23) and two < one
    assert qa.wvr_improvement_score(1.5, n_flagged_ant=20).score == pytest.approx(0.67)
    noisy = qa.wvr_improvement_score(1.5, bandpass_noisy=True)
    assert noisy.score == pytest.approx(0.66) and noisy.colour == "yellow"
    assert qa.wvr_improvement_score(0.95).score == pytest.approx(0.66)
    assert qa.wvr_improvement_score(0.95, n_high_rms=1).score == pytest.approx(0.34 + 0.56 / 0.66 * 0.32)
    assert "No WVR improvement" in qa.wvr_improvement_score(1.0).message
    cloudy = qa.wvr_improvement_score(0.9, median_disc_um=600.0)
    assert cloudy.score == pytest.approx(0.33) and cloudy.colour == "red"
    with pytest.raises(ParameterError, match="improvement=0"):
        qa.wvr_improvement_score(0.0)


@pytest.mark.parametrize("snr, colour", [
    (0.75 * 32, "green"), (0.7499 * 32, "blue"), (0.5 * 32, "blue"), (0.4999 * 32, "yellow"),
    (0.33 * 32, "yellow"), (0.3299 * 32, "red"),
])
def test_phaseup_snr_colour_bands(snr, colour):
    assert qa.phaseup_snr_score(snr, 32.0).colour == colour


def test_phaseup_uses_given_threshold():
    assert qa.phaseup_snr_score(4.0, 5.0).colour == "green"  # intphasesnr=5: 0.8 x
    assert qa.phaseup_snr_score(4.0, 32.0).colour == "red"


def test_bandpass_snr_mapping():
    assert qa.bandpass_snr_score(50.0).score == 1.0
    assert qa.bandpass_snr_score(20.0).score == pytest.approx(0.66)
    assert qa.bandpass_snr_score(35.0).score == pytest.approx(0.83)
    assert qa.bandpass_snr_score(0.0).score == 0.0
    assert qa.bandpass_snr_score(10.0).score == pytest.approx(0.33)


def test_lowgain_outliers_limits():
    amps = np.array([0.49, 0.5, 1.0, 1.0, 1.0, 1.5, 1.51, np.nan])
    out = qa.lowgain_outliers(amps)
    assert out.tolist() == [True, False, False, False, False, False, True, False]
    assert not qa.lowgain_outliers(np.full(3, np.nan)).any()
    with pytest.raises(ParameterError, match="lo=2"):
        qa.lowgain_outliers(amps, lo=2.0, hi=1.0)
    assert qa.lowgain_score(1, 10).score == pytest.approx(qa.flagged_fraction_score(0.1).score)


def test_radiometer_equation_scaling_and_single_baseline_form():
    base = qa.theoretical_rms_jy(100.0, 2e9, 60.0, 10)
    assert qa.theoretical_rms_jy(200.0, 2e9, 60.0, 10) == pytest.approx(2 * base)
    assert qa.theoretical_rms_jy(100.0, 8e9, 60.0, 10) == pytest.approx(base / 2)
    assert qa.theoretical_rms_jy(100.0, 2e9, 240.0, 10) == pytest.approx(base / 2)
    assert qa.theoretical_rms_jy(100.0, 2e9, 60.0, 11) == pytest.approx(base * math.sqrt(90 / 110))
    # one baseline, one polarisation: SEFD / sqrt(2 dnu t), with SEFD = 2 k Tsys / (eta A)
    sefd = 2 * 1.380649e-23 * 100.0 / (0.7 * math.pi * 36.0) / 1e-26
    one = qa.theoretical_rms_jy(100.0, 2e9, 60.0, 2, n_pol=1)
    assert one == pytest.approx(sefd / math.sqrt(2 * 2e9 * 60.0), rel=1e-12)
    with pytest.raises(ParameterError, match="n_ant=1"):
        qa.theoretical_rms_jy(100.0, 2e9, 60.0, 1)


def test_sensitivity_score_flags_more_than_10_percent_worse():
    assert qa.sensitivity_score(1.1, 1.0).score == 1.0
    worse = qa.sensitivity_score(1.1001, 1.0)
    assert worse.score <= 0.66 and "more than 10% worse" in worse.message
    assert qa.sensitivity_score(2.0, 1.0).score == pytest.approx(0.33)
    assert qa.sensitivity_score(3.0, 1.0).score == 0.0
    assert qa.sensitivity_score(0.8, 1.0).score == 1.0
    with pytest.raises(ParameterError, match="achieved_rms=0"):
        qa.sensitivity_score(0.0, 1.0)


def test_phase_transfer_score_wraps_phase_differences():
    assert qa.phase_transfer_score([0.0, 10.0, 20.0]).value == pytest.approx(10.0)
    wrapped = qa.phase_transfer_score([170.0, -170.0])
    assert wrapped.value == pytest.approx(20.0) and wrapped.score == 1.0
    assert qa.phase_transfer_score([0.0, 30.0]).score == 1.0
    assert qa.phase_transfer_score([0.0, 90.0]).score == pytest.approx(0.33)
    assert qa.phase_transfer_score([0.0, 60.0]).score == pytest.approx(qa.linear_score(60, 30, 90, 1.0, 0.33))
    assert qa.phase_transfer_score([5.0, np.nan]).score == 0.5


@pytest.mark.parametrize("x, expected", [
    (0.5, 1.0), (1.0, 1.0), (1.5, pytest.approx(0.835)), (2.0, pytest.approx(0.67)),
    (3.0, pytest.approx(0.495)), (4.0, pytest.approx(0.33)), (6.0, pytest.approx(0.165)), (9.0, 0.0),
])
def test_band_mapping_colour_bands(x, expected):
    assert qa.band_mapping(x, 1.0, 2.0, 4.0, 8.0) == expected


def test_band_mapping_rejects_unordered_limits():
    with pytest.raises(ParameterError, match="good=2"):
        qa.band_mapping(1.0, 2.0, 1.0, 4.0, 8.0)


def test_tsys_antenna_score_uses_the_spw_array_median_and_names_the_worst():
    med = {(1, a): 100.0 for a in "ABCDE"} | {(2, a): 200.0 for a in "ABCDE"}
    assert qa.tsys_antenna_score(med).score == 1.0
    med[(2, "C")] = 500.0  # 2.5 x the spw-2 median of 200 K
    q = qa.tsys_antenna_score(med)
    assert q.value == pytest.approx(2.5) and q.colour == "yellow"
    assert q.applies_to == "antenna C spw 2" and "1 above 2.00" in q.message
    med[(2, "C")] = 40.0  # 5 x below
    assert qa.tsys_antenna_score(med).value == pytest.approx(5.0)
    assert qa.tsys_antenna_score(med).colour == "red"
    with pytest.raises(ParameterError, match="no finite value"):
        qa.tsys_antenna_score({(1, "A"): float("nan")})
    with pytest.raises(ParameterError, match="<= 0 K"):
        qa.tsys_antenna_score({(1, "A"): 0.0, (1, "B"): 10.0})


def test_tsys_derivative_score_flags_a_ringing_antenna():
    der = {(1, a): 0.5 for a in "ABCD"} | {(1, "E"): 3.5}
    q = qa.tsys_derivative_score(der)
    assert q.value == pytest.approx(7.0) and q.colour == "yellow" and q.applies_to == "antenna E spw 1"
    assert qa.tsys_derivative_score({(1, "A"): 0.0, (1, "B"): 0.0, (1, "C"): 0.2}).score == 1.0


def test_tsys_band_score_against_typical_values():
    assert qa.expected_tsys_k(230e9) == (6, 70.0, 150.0)
    assert qa.expected_tsys_k(60e9) is None
    assert qa.tsys_band_score(120.0, 230e9).score == 1.0
    assert qa.tsys_band_score(40.0, 230e9).score == 1.0  # good weather: above lo/2
    assert qa.tsys_band_score(300.0, 230e9).score == pytest.approx(0.67)  # 2 x hi
    hot = qa.tsys_band_score(600.0, 230e9, "spw 3")
    assert hot.score == pytest.approx(0.33) and "spw 3" in hot.message
    assert qa.tsys_band_score(17.5, 230e9).score == pytest.approx(0.33)  # lo/4
    with pytest.raises(ParameterError, match="freq_hz=60000000000.0 is outside the ALMA bands"):
        qa.tsys_band_score(100.0, 60e9)


def test_bandpass_and_gain_score_mappings():
    assert qa.bandpass_amp_rms_score({(0, "A"): 0.05}).score == 1.0
    assert qa.bandpass_amp_rms_score({(0, "A"): 0.1}).score == pytest.approx(0.67)
    assert qa.bandpass_amp_rms_score({(0, "A"): 0.2, (0, "B"): 0.01}).applies_to == "antenna A spw 0"
    assert qa.bandpass_phase_rms_score({(0, "A"): np.degrees(0.2)}).score == pytest.approx(0.33)
    o = qa.bandpass_outlier_score({(0, "A"): (1, 100), (3, "B"): (10, 100), (3, "C"): (0, 0)})
    assert o.value == pytest.approx(0.1) and o.applies_to == "antenna B spw 3"
    assert o.score == pytest.approx(0.67) and "10 of 100" in o.message
    assert qa.gain_phase_scatter_score({(0, "A"): 15.0}).score == 1.0
    assert qa.gain_phase_scatter_score({(0, "A"): 60.0}).score == pytest.approx(0.33)
    assert qa.gain_amp_scatter_score({(0, "A"): 0.1}, "amp").score == pytest.approx(0.67)
    assert qa.gain_snr_score(32.0, 32.0).score == 1.0
    assert qa.gain_snr_score(16.0, 32.0).score == pytest.approx(0.67)
    assert qa.gain_snr_score(8.0, 32.0).score == pytest.approx(0.34)
    assert qa.gain_snr_score(0.0, 32.0).score == 0.0
    with pytest.raises(ParameterError, match="target=0"):
        qa.gain_snr_score(5.0, 0.0)
