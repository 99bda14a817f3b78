"""wvr stage: the wvrgcalflag antenna iteration (broken radiometer -> wvrflag -> re-solve)."""

from __future__ import annotations

import numpy as np
import pytest

from fastcal.errors import ParameterError
from fastcal.ms import open_ms
from fastcal.pipeline import run
from fastcal.pipeline.stages.wvr import wvr_outlier_antennas
from fastcal.simulate import SimConfig, simulate


def _wvr_run(tmp_path, name, **overrides):
    ms = str(tmp_path / f"{name}.ms")
    simulate(ms, config=SimConfig.tiny(seed=2, n_ant=6, **overrides))
    res = run(ms, str(tmp_path / f"{name}_out"), stages=["importdata", "wvr"], restart=True)
    return ms, res.context


def test_broken_wvr_antenna_ends_up_in_wvrflag(tmp_path):
    ms, ctx = _wvr_run(tmp_path, "bad", bad_antennas=[(2, "bad_wvr")])
    bad = open_ms(ms).antenna_names[2]
    out = ctx.results["wvr"]["outputs"]
    assert out["wvrflag"] == [bad]
    its = out["iterations"]
    assert len(its) == 2
    assert its[0]["wvrflag"] == [] and its[0]["outliers"] == [bad]
    assert its[1]["wvrflag"] == [bad] and its[1]["outliers"] == []
    # flagging it (interpolating its path from the neighbours) helps, and its Disc is gone
    assert its[1]["improvement"] > its[0]["improvement"] > 1.0
    assert its[0]["ratio"][2] > 3 * np.median(its[0]["ratio"])
    assert out["applied"] and out["flagged"] == [bad]
    assert ctx.callib.get("wvr").path == out["caltable"]
    assert any(bad in m and "flagged" in m for m in ctx.results["wvr"]["messages"])


def test_healthy_wvrs_are_not_flagged(tmp_path):
    _, ctx = _wvr_run(tmp_path, "good")
    out = ctx.results["wvr"]["outputs"]
    assert out["wvrflag"] == [] and len(out["iterations"]) == 1 and out["applied"]


def test_outlier_rule():
    ratio = np.array([0.40, 0.25, 0.35, 0.55, 0.21, 0.30])
    disc = np.array([5.0, 6.0, 5.0, 7.0, 6.0, 5.0])
    usable = np.ones(6, bool)
    assert wvr_outlier_antennas(ratio, disc, usable) == []
    r = ratio.copy()
    r[3] = 5.0
    assert wvr_outlier_antennas(r, disc, usable) == [3]
    d = disc.copy()
    d[1] = 4000.0  # a Disc outlier counts only above 500 um
    assert wvr_outlier_antennas(ratio, d, usable) == [1]
    d[1] = 400.0
    assert wvr_outlier_antennas(ratio, d, usable) == []
    # already flagged antennas are not judged, and fewer than 5 values are never judged
    assert wvr_outlier_antennas(r, disc, np.array([1, 1, 1, 0, 1, 1], bool)) == []
    assert wvr_outlier_antennas(r[:4], disc[:4], usable[:4]) == []


def test_outlier_rule_bad_shapes():
    with pytest.raises(ParameterError, match=r"one length per antenna; got shapes \(6,\), \(5,\), \(6,\)"):
        wvr_outlier_antennas(np.ones(6), np.ones(5), np.ones(6, bool))
