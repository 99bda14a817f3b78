"""wvr stage: the wvrgcalflag antenna iteration (broken radiometer -> wvrflag -> re-solve),
and the improvement check's fallback to the phase calibrator."""

from __future__ import annotations

import logging
import os

import casacore.tables as ct
import numpy as np
import pytest

from fastcal.errors import ParameterError
from fastcal.ms import open_ms
from fastcal.pipeline import StageError, run
from fastcal.pipeline.package import stage_notes
from fastcal.pipeline.stage import COMMANDS_LOG, read_commands_log
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


# ----------------------------------------------------------------------------- improvement fallback


def _flag_science_rows(ms, field_names) -> None:
    """Flag every row of these fields in the science spws (the WVR spw stays: the solver
    reads it)."""
    info = open_ms(ms)
    fids = [info.field_names.index(f) for f in field_names]
    ddids = [info.ddid_for_spw(s) for s in info.spws_with_role("science")]
    with ct.table(str(ms), readonly=False, ack=False) as t:
        sel = np.isin(t.getcol("FIELD_ID"), fids) & np.isin(t.getcol("DATA_DESC_ID"), ddids)
        for r in np.flatnonzero(sel):
            f = t.getcell("FLAG", int(r))
            f[:] = True
            t.putcell("FLAG", int(r), f)


def _improvement_calls(out) -> list[dict]:
    return [kw for name, kw in read_commands_log(os.path.join(str(out), COMMANDS_LOG))
            if name.endswith("wvr_improvement")]


def test_improvement_uses_both_calibrators_by_default(tiny_ms, tmp_path):
    out = tmp_path / "out"
    res = run(tiny_ms[0], out, stages=["importdata", "wvr"], restart=True)
    r = res.context.results["wvr"]
    assert r["outputs"]["improvement_intents"] == ["PHASE", "BANDPASS"]
    assert not any("phase calibrator only" in m for m in r["messages"])
    assert r["outputs"]["fallbacks"] == [] and not [n for n in stage_notes(res.context) if n[0] == "wvr"]
    assert [sorted(kw) for kw in _improvement_calls(out)] == [["table", "vis"]]


def test_bandpass_calibrator_flagged_falls_back_to_phase_calibrator(tiny_ms, copy_ms, tmp_path, caplog):
    ms = copy_ms(tiny_ms[0], "bpflagged.ms")
    _flag_science_rows(ms, ["J1924-2914"])  # the bandpass (and flux) calibrator
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="fastcal.pipeline.stages.wvr"):
        res = run(ms, out, stages=["importdata", "wvr"], restart=True)
    r = res.context.results["wvr"]
    assert r["status"] == "ok"
    o = r["outputs"]
    assert o["improvement_intents"] == ["PHASE"]
    assert o["improvement"] > 1.0 and o["applied"]
    assert res.context.callib.get("wvr").path == o["caltable"]
    assert any("CALIBRATE_BANDPASS" in m and "phase calibrator only" in m for m in r["messages"])
    assert "phase calibrator only" in caplog.text
    assert o["fallbacks"] and ("wvr", o["fallbacks"][0]) in stage_notes(res.context)  # README section
    # the failed call is not in the commands log; every logged check names the fallback
    calls = _improvement_calls(out)
    assert len(calls) == len(o["iterations"]) and all(kw["intents"] == ["PHASE"] for kw in calls)


def test_phase_calibrator_flagged_too_stops_the_wvr_stage(tiny_ms, copy_ms, tmp_path):
    ms = copy_ms(tiny_ms[0], "allcal.ms")
    _flag_science_rows(ms, ["J1924-2914", "J1832-2039"])
    with pytest.raises(StageError, match=r"stage 'wvr' failed: .*CALIBRATE_PHASE.*flagged"):
        run(ms, tmp_path / "out", stages=["importdata", "wvr"], restart=True)
