"""Bad input for the pipeline (issue 8 section 6): every case either stops with a message
naming the stage or continues with a documented, logged fallback, and the package (state
file, commands log, README, weblog) records what ran.

Each case edits a copy of the session's tiny simulated MS (5 antennas, 2 science spws) with
python-casacore: STATE intents cleared or changed, SYSCAL emptied, the WVR spw dropped (as
split would: rows removed, later spw ids renumbered), FLAG set.
"""

from __future__ import annotations

import json
import logging
import os
import re

import casacore.tables as ct
import numpy as np
import pytest

from fastcal.pipeline import StageError, run
from fastcal.pipeline.recipe import stage_names
from fastcal.pipeline.stage import COMMANDS_LOG, FULL_LOG, STATE_FILE

ROLE_OPTIONS = {"bandpass_field": "J1924-2914", "phase_field": "J1832-2039", "target_field": "G11.92-0.61"}

# ----------------------------------------------------------------------------- MS edits


def _set_obs_mode(ms, modes: dict[int, str]) -> None:
    with ct.table(os.path.join(str(ms), "STATE"), readonly=False, ack=False) as t:
        for row, text in modes.items():
            t.putcell("OBS_MODE", row, text)


def _clear_intents(ms) -> None:
    with ct.table(os.path.join(str(ms), "STATE"), readonly=False, ack=False) as t:
        t.putcol("OBS_MODE", [""] * t.nrows())


def _drop_state(ms) -> None:
    """No STATE rows at all (STATE_ID -1), as in some raw or converted MSs."""
    with ct.table(os.path.join(str(ms), "STATE"), readonly=False, ack=False) as t:
        t.removerows(list(range(t.nrows())))
    with ct.table(str(ms), readonly=False, ack=False) as t:
        t.putcol("STATE_ID", np.full(t.nrows(), -1, np.int32))


def _state_row(ms, token: str) -> int:
    with ct.table(os.path.join(str(ms), "STATE"), ack=False) as t:
        modes = list(t.getcol("OBS_MODE"))
    return next(i for i, m in enumerate(modes) if token in m)


def _remove_syscal(ms) -> None:
    with ct.table(os.path.join(str(ms), "SYSCAL"), readonly=False, ack=False) as t:
        t.removerows(list(range(t.nrows())))


def _copy_without_spw(src, dst, spw: int) -> None:
    """`src` without spw `spw` (DDID == spw id in the simulator), renumbered as split does."""
    with ct.table(str(src), ack=False) as t:
        sel = t.query(f"DATA_DESC_ID != {spw}")
        sel.copy(str(dst), deep=True).close()
        sel.close()
    with ct.table(str(dst), readonly=False, ack=False) as t:
        dd = t.getcol("DATA_DESC_ID")
        t.putcol("DATA_DESC_ID", np.where(dd > spw, dd - 1, dd))
    for sub in ("DATA_DESCRIPTION", "SPECTRAL_WINDOW"):
        with ct.table(os.path.join(str(dst), sub), readonly=False, ack=False) as t:
            t.removerows([spw])
    for sub in ("DATA_DESCRIPTION", "SYSCAL", "SOURCE", "FEED"):
        with ct.table(os.path.join(str(dst), sub), readonly=False, ack=False) as t:
            s = t.getcol("SPECTRAL_WINDOW_ID")
            if sub in ("SYSCAL", "SOURCE"):
                t.removerows(np.flatnonzero(s == spw).tolist())
                s = t.getcol("SPECTRAL_WINDOW_ID")
            t.putcol("SPECTRAL_WINDOW_ID", np.where(s > spw, s - 1, s))


def _flag_rows(ms, field: int | None = None, ddids=None) -> None:
    with ct.table(str(ms), readonly=False, ack=False) as t:
        fid, dd = t.getcol("FIELD_ID"), t.getcol("DATA_DESC_ID")
        sel = np.ones(t.nrows(), bool)
        if field is not None:
            sel &= fid == field
        if ddids is not None:
            sel &= np.isin(dd, list(ddids))
        for r in np.flatnonzero(sel):
            f = t.getcell("FLAG", int(r))
            f[:] = True
            t.putcell("FLAG", int(r), f)


# ----------------------------------------------------------------------------- package checks


def _state(out) -> dict:
    with open(os.path.join(str(out), STATE_FILE)) as f:
        return json.load(f)["context"]


def _text(out, rel) -> str:
    with open(os.path.join(str(out), rel), encoding="utf-8") as f:
        return f.read()


def _check_package(out, statuses: dict[str, str]) -> str:
    """The state, commands log, README and weblog record exactly the stages run, with their
    statuses; returns the README."""
    st = _state(out)
    assert {k: v["status"] for k, v in st["results"].items()} == statuses
    log = _text(out, COMMANDS_LOG)
    logged = dict(re.findall(r"^# stage (\w+): (\w+)", log, flags=re.M))
    assert logged == statuses
    readme = _text(out, "README")
    stage_lines = dict(re.findall(r"^  (\w+)\s+(ok|failed|skipped|not_implemented)\s", readme, flags=re.M))
    assert {k: v for k, v in stage_lines.items() if k != "exportdata"} == \
        {k: v for k, v in statuses.items() if k != "exportdata"}
    weblog = os.path.join(str(out), "qa", "index.html")
    try:
        import fastcal.report.weblog  # noqa: F401
    except ImportError:
        assert "HTML weblog not produced" in readme
    else:
        assert os.path.isfile(weblog)
        html = _text(out, os.path.join("qa", "index.html"))
        assert all(name in html for name in statuses if name != "exportdata")  # it writes the weblog
        assert ("failed" in html) == ("failed" in statuses.values())
    assert os.path.isfile(os.path.join(str(out), "script", "fastcal_rerun.py"))
    return readme


def _all_done(statuses: dict[str, str], names=None) -> bool:
    return list(statuses) == list(names or stage_names()) and set(statuses.values()) <= {"ok", "skipped"}


#: The recipe without the stages that take time but play no part in a case (tests < 10 s).
SHORT = ["importdata", "flagdata", "refant", "tsys", "wvr", "setjy", "bandpass", "fluxscale",
         "timegaincal", "applycal", "exportdata"]


def _statuses(res) -> dict[str, str]:
    return {r.stage: r.status for r in res.results}


def _stopped_at(out, stage: str) -> dict[str, str]:
    """Statuses in the state: every recipe stage before `stage` ok/skipped, `stage` failed,
    nothing after it."""
    st = {k: v["status"] for k, v in _state(out)["results"].items()}
    names = stage_names()
    assert list(st) == names[:names.index(stage) + 1]
    assert st[stage] == "failed" and set(list(st.values())[:-1]) <= {"ok", "skipped"}
    return st


# ----------------------------------------------------------------------------- intents


def test_no_intents_without_role_options_stops_in_importdata(tiny_ms, copy_ms, tmp_path):
    ms = copy_ms(tiny_ms[0], "raw.ms")
    _clear_intents(ms)
    out = tmp_path / "out"
    with pytest.raises(StageError, match=r"stage 'importdata' failed: .*no scan intents.*"
                                         r"--bandpass-field.*--phase-field"):
        run(ms, out)
    readme = _check_package(out, {"importdata": "failed"})
    assert "error: " in readme and "no scan intents" in readme
    assert "the run stopped: stage 'importdata' failed" in readme
    assert "stage importdata failed" in _text(out, FULL_LOG)


@pytest.mark.parametrize("strip", [_clear_intents, _drop_state], ids=["empty_obs_mode", "no_state_rows"])
def test_no_intents_roles_and_spws_from_options_and_syscal(tiny_ms, copy_ms, tmp_path, caplog, strip):
    from fastcal.ms import open_ms

    intact = open_ms(tiny_ms[0])
    ms = copy_ms(tiny_ms[0], "raw.ms")
    strip(ms)
    with pytest.raises(StageError, match="stage 'importdata' failed: .*no scan intents"):
        run(ms, tmp_path / "out", stages=["importdata"])
    with caplog.at_level(logging.WARNING, logger="fastcal"):
        ctx = run(ms, tmp_path / "out", stages=["importdata"], options=ROLE_OPTIONS).context
    assert ctx.roles_source == "options"
    assert ctx.roles["bandpass"] == ctx.roles["flux"] == ["J1924-2914"]
    assert ctx.roles["phase"] == ["J1832-2039"] and ctx.roles["target"] == ["G11.92-0.61"]
    # without CALIBRATE_ATMOSPHERE the Tsys spws are told apart from the science spws by SYSCAL
    assert ctx.science_spws == list(intact.spws_with_role("science"))
    assert ctx.tsys_spws == list(intact.spws_with_role("tsys"))
    msgs = ctx.results["importdata"]["messages"]
    assert any("calibrator roles from the options" in m for m in msgs)
    assert any("taken as Tsys spws" in m for m in msgs)
    assert "calibrator roles from the options" in caplog.text
    # a bare field gets a calapply line without intent selection, chosen by its role
    intents, bare = ctx.field_intents()
    assert bare == [0, 1, 2]
    assert intents[2] == ["OBSERVE_TARGET#ON_SOURCE"]


def test_no_intents_with_role_options_calibrates(tiny_ms, copy_ms, tmp_path):
    ms = copy_ms(tiny_ms[0], "raw.ms")
    _clear_intents(ms)
    out = tmp_path / "out"
    res = run(ms, out, stages=SHORT, options=ROLE_OPTIONS)
    statuses = _statuses(res)
    assert _all_done(statuses, SHORT)
    assert statuses["wvr"] == "skipped" and statuses["tsys"] == "ok"
    readme = _check_package(out, statuses)
    assert "Roles (options)" in readme
    lines = _text(out, os.path.join("calibration", "raw.ms.calapply.txt")).splitlines()[1:]
    assert len(lines) == 3 and all("intent=''" in s for s in lines)
    assert all("tsyscal" in s and "bcal" in s for s in lines)  # Tsys and bandpass applied everywhere


def test_no_bandpass_calibrator_uses_flux_calibrator(tiny_ms, copy_ms, tmp_path):
    ms = copy_ms(tiny_ms[0], "nobp.ms")
    _set_obs_mode(ms, {_state_row(ms, "CALIBRATE_BANDPASS"): "CALIBRATE_FLUX#ON_SOURCE,CALIBRATE_WVR#ON_SOURCE"})
    out = tmp_path / "out"
    res = run(ms, out, stages=SHORT)
    statuses = _statuses(res)
    assert _all_done(statuses, SHORT) and statuses["bandpass"] == "ok"
    ctx = res.context
    assert ctx.roles["bandpass"] == ctx.roles["flux"] == ["J1924-2914"]
    assert ctx.results["bandpass"]["inputs"]["field"] == "J1924-2914"
    msg = "no bandpass calibrator: using the flux calibrator J1924-2914 for the bandpass"
    assert msg in ctx.results["importdata"]["messages"]
    readme = _check_package(out, statuses)
    assert "Fallbacks and skipped stages" in readme and msg in readme
    assert f"WARNING fastcal.pipeline.stages.importdata: {msg}" in _text(out, FULL_LOG)


def test_no_bandpass_or_flux_calibrator_uses_phase_calibrator(tiny_ms, copy_ms, tmp_path):
    ms = copy_ms(tiny_ms[0], "nobp.ms")
    _set_obs_mode(ms, {_state_row(ms, "CALIBRATE_BANDPASS"): "CALIBRATE_WVR#ON_SOURCE"})
    out = tmp_path / "out"
    res = run(ms, out, stages=["importdata", "flagdata", "refant", "setjy", "bandpass", "fluxscale",
                               "exportdata"])
    statuses = _statuses(res)
    assert statuses == {"importdata": "ok", "flagdata": "ok", "refant": "ok", "setjy": "ok",
                        "bandpass": "ok", "fluxscale": "skipped", "exportdata": "ok"}
    ctx = res.context
    assert ctx.roles["bandpass"] == ctx.roles["flux"] == ["J1832-2039"]
    msgs = ctx.results["importdata"]["messages"]
    assert "no bandpass calibrator: using the phase calibrator J1832-2039 for the bandpass" in msgs
    assert "no flux calibrator: the bandpass calibrator J1832-2039 sets the flux scale" in msgs
    readme = _check_package(out, statuses)
    assert "no transfer calibrator" in readme  # the skipped stage says why, in the README too


def test_no_phase_calibrator_stops_in_importdata(tiny_ms, copy_ms, tmp_path):
    ms = copy_ms(tiny_ms[0], "noph.ms")
    _set_obs_mode(ms, {_state_row(ms, "CALIBRATE_PHASE"): "CALIBRATE_WVR#ON_SOURCE"})
    out = tmp_path / "out"
    with pytest.raises(StageError, match=r"stage 'importdata' failed: .*no phase calibrator.*--phase-field"):
        run(ms, out)
    _check_package(out, {"importdata": "failed"})
    # the option is the documented way out: the same MS runs once the role is given
    res = run(ms, out, stages=["importdata"], options={"phase_field": "J1832-2039"})
    assert res.context.roles["phase"] == ["J1832-2039"] and res.context.roles_source == "intents+options"


# ----------------------------------------------------------------------------- SYSCAL, WVR


def test_no_syscal_skips_tsys_and_continues(tiny_ms, copy_ms, tmp_path):
    ms = copy_ms(tiny_ms[0], "nosys.ms")
    _remove_syscal(ms)
    out = tmp_path / "out"
    names = SHORT[:-1] + ["qa", "exportdata"]  # qa: the theoretical rms needs Tsys
    res = run(ms, out, stages=names)
    statuses = _statuses(res)
    assert _all_done(statuses, names) and statuses["tsys"] == "skipped"
    ctx = res.context
    assert not any(e.name.startswith("tsys") for e in ctx.callib)
    assert "no SYSCAL table: Tsys calibration will be skipped" in ctx.results["importdata"]["messages"]
    readme = _check_package(out, statuses)
    assert "no SYSCAL table: Tsys calibration is not applied" in readme
    assert "tsyscal" not in _text(out, os.path.join("calibration", "nosys.ms.calapply.txt"))
    assert "no SYSCAL table" in _text(out, FULL_LOG)


def test_no_wvr_spw_skips_wvr_and_continues(tiny_ms, tmp_path):
    from fastcal.ms import open_ms

    ms = tmp_path / "nowvr.ms"
    _copy_without_spw(tiny_ms[0], ms, 0)  # spw 0 is the simulator's WVR spw
    info = open_ms(ms)
    assert "wvr" not in info.spw_roles.values() and len(info.spws) == len(open_ms(tiny_ms[0]).spws) - 1
    out = tmp_path / "out"
    res = run(ms, out, stages=SHORT)
    statuses = _statuses(res)
    assert _all_done(statuses, SHORT) and statuses["wvr"] == "skipped"
    ctx = res.context
    assert ctx.wvr_spws == [] and "wvr" not in {e.name for e in ctx.callib}
    assert "no WVR spectral window: WVR correction will be skipped" in ctx.results["importdata"]["messages"]
    readme = _check_package(out, statuses)
    assert "no WVR spectral window: no WVR correction" in readme
    assert "wvrgcal" not in _text(out, os.path.join("calibration", "nowvr.ms.calapply.txt"))


# ----------------------------------------------------------------------------- flags


def test_all_antennas_flagged_stops_in_refant(tiny_ms, copy_ms, tmp_path):
    ms = copy_ms(tiny_ms[0], "flagged.ms")
    _flag_rows(ms)
    out = tmp_path / "out"
    with pytest.raises(StageError, match="stage 'refant' failed: .*every antenna is fully flagged"):
        run(ms, out)
    readme = _check_package(out, _stopped_at(out, "refant"))
    assert "every antenna is fully flagged" in readme and "the run stopped: stage 'refant'" in readme
    log = _text(out, COMMANDS_LOG)
    assert "flag_deterministic(" in log and "rank_refants(" in log  # what ran, replayable
    # resuming runs the failed stage again, not the ones before it
    before = _state(out)["results"]["flagdata"]
    with pytest.raises(StageError, match="stage 'refant' failed"):
        run(ms, out)
    assert _state(out)["results"]["flagdata"] == before


def test_stage_flagging_every_antenna_stops_the_next_stage(tmp_path):
    """Every antenna's data are exact zeros: flagdata flags them all, refant stops."""
    from fastcal.simulate import SimConfig, simulate

    ms = tmp_path / "zeros.ms"
    simulate(ms, config=SimConfig.tiny(seed=7, bad_antennas=[(i, "zeros") for i in range(5)]))
    out = tmp_path / "out"
    with pytest.raises(StageError, match="stage 'refant' failed: .*every antenna is fully flagged"):
        run(ms, out)
    readme = _check_package(out, _stopped_at(out, "refant"))
    assert "every antenna is fully flagged" in readme
    st = _state(out)
    zeros = [f for f in st["flags"] if f["agent"] == "clip_zeros"]
    assert zeros and zeros[0]["n_new"] > 0
    template = _text(out, os.path.join("calibration", "zeros.ms.flagtemplate.txt"))
    assert "clipzeros=True" in template  # the flags that stopped the run are in the package


def test_bandpass_calibrator_fully_flagged_stops_naming_a_stage(tiny_ms, copy_ms, tmp_path):
    from fastcal.ms import open_ms

    ms = copy_ms(tiny_ms[0], "bpflag.ms")
    info = open_ms(ms)
    sci = info.spws_with_role("science")
    _flag_rows(ms, field=info.field_names.index("J1924-2914"), ddids=[info.ddid_for_spw(s) for s in sci])
    out = tmp_path / "out"
    with pytest.raises(StageError, match=r"stage '(\w+)' failed: .*flagged") as exc:
        run(ms, out)
    failed = re.match(r"stage '(\w+)'", str(exc.value)).group(1)
    _check_package(out, _stopped_at(out, failed))
    assert "flagged" in _state(out)["results"][failed]["error"]
    # the wvr stage is not the one that stops: its improvement check falls back to the phase
    # calibrator, said in the README's fallbacks
    names = stage_names()
    assert names.index(failed) > names.index("wvr")
    wvr = _state(out)["results"]["wvr"]
    assert wvr["status"] == "ok" and wvr["outputs"]["improvement_intents"] == ["PHASE"]
    readme = _text(out, "README")
    fallbacks = readme.split("Fallbacks and skipped stages", 1)[1].split("\n\n", 1)[0]
    assert "wvr" in fallbacks and "phase calibrator only" in fallbacks


@pytest.mark.parametrize("stage, options, match", [
    ("setjy", {"setjy_models": [{"field": "NOPE", "fluxdensity": 1.0}]}, r"no field named 'NOPE'.*valid: 0 J1924-2914"),
    ("setjy", {"flux_csv": "/nonexistent/flux.csv"}, r"/nonexistent/flux.csv does not exist"),
    ("refant", {"refantignore": "XX99"}, r"refantignore: 'XX99' is not an antenna.*valid: DA41"),
    ("antpos", {"antpos_file": "/nonexistent/antennapos.csv"}, r"/nonexistent/antennapos.csv"),
    ("flagdata", {"representative_spw": 0}, r"representative_spw=0 is not a science spw .*valid: \[3, 4\]"),
], ids=["setjy_field", "flux_csv", "refantignore", "antpos_file", "representative_spw"])
def test_bad_options_stop_naming_the_stage_and_option(tiny_ms, copy_ms, tmp_path, stage, options, match):
    ms = copy_ms(tiny_ms[0])
    out = tmp_path / "out"
    with pytest.raises(StageError, match=rf"stage '{stage}' failed: .*{match}"):
        run(ms, out, stages=["importdata", stage], options=options)
    assert _state(out)["results"][stage]["status"] == "failed"
    assert f"the run stopped: stage '{stage}' failed" in _text(out, "README")
