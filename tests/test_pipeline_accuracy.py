"""End-to-end accuracy of the pipeline on a small simulated dataset (issue 8, section 5).

One run (~6 s) of the whole recipe on SimConfig.demo with 8 antennas, 2 spws x 16 channels
and 3 cycles, every corruption on; the flux calibrator's catalogue model comes from the
truth, everything else from the data.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastcal.pipeline import run
from fastcal.pipeline.accuracy import field_flux_ratio, transfer_prediction
from fastcal.simulate import SimConfig, simulate


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    d = tmp_path_factory.mktemp("accuracy")
    ms = str(d / "acc.ms")
    truth = simulate(ms, config=SimConfig.demo(seed=1, n_ant=8, n_spw=2, n_chan=16, n_cycles=3))
    fid = truth.field_id("bandpass")
    catalogue = [{"field": truth.field_names[fid], "fluxdensity": float(truth.field_flux_jy[fid]),
                  "spix": [float(truth.field_spix[fid])], "reffreq": float(truth.flux_ref_freq_hz)}]
    res = run(ms, str(d / "out"), restart=True, options={"setjy_models": catalogue})
    return ms, truth, res.context


def test_phase_calibrator_flux_within_2_percent(calibrated):
    ms, truth, ctx = calibrated
    pid = truth.field_id("phase")
    f = ctx.results["fluxscale"]["outputs"]["fluxes"][truth.field_names[pid]]
    true_jy = float(truth.model_flux(pid, f["ref_freq_hz"]))
    assert abs(f["flux_jy"] / true_jy - 1) < 0.02
    for r in field_flux_ratio(ms, truth, pid):  # and the calibrated data per spw
        assert abs(r.ratio - 1) < 0.02, r


def test_target_flux_within_3_percent_and_equal_to_decorrelation_prediction(calibrated):
    ms, truth, _ = calibrated
    phase = {r.spw: r.ratio for r in field_flux_ratio(ms, truth, truth.field_id("phase"))}
    target = field_flux_ratio(ms, truth, truth.field_id("target"))
    assert len(target) == len(truth.science_spw_ids)
    for k, r in enumerate(target):
        assert abs(r.ratio - 1) < 0.03, r
        # what is left is the phase-calibrator flux scale times the physical decorrelation
        # of the unseen path between phase-calibrator visits
        pred = transfer_prediction(truth, k)
        assert 0.95 < pred.coherence < 1.0
        assert abs(r.ratio - phase[r.spw] * pred.coherence) < 0.015, (r, pred)


def test_target_residual_phase_within_unseen_path_plus_noise(calibrated):
    ms, truth, _ = calibrated
    for k, r in enumerate(field_flux_ratio(ms, truth, truth.field_id("target"))):
        unseen = transfer_prediction(truth, k).rms_deg
        no_wvr = transfer_prediction(truth, k, unseen_only=False).rms_deg
        assert r.phase_rms_deg <= 1.1 * np.hypot(unseen, r.noise_phase_deg), (r, unseen)
        # the WVR correction reaches the target (without it the wet path would remain)
        assert r.phase_rms_deg < 0.8 * np.hypot(no_wvr, r.noise_phase_deg), (r, no_wvr)


def test_transfer_prediction_refuses_bad_spw_index(calibrated):
    from fastcal.errors import ParameterError

    _, truth, _ = calibrated
    with pytest.raises(ParameterError, match="spw_index 2 .*valid: 0..1"):
        transfer_prediction(truth, 2)
