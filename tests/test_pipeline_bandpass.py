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
