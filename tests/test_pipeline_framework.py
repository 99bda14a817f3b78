"""Pipeline framework: stage runner, resume, selection, commands log and replay, importdata,
the CLI hook and the delivery package."""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import subprocess
import sys

import casacore.tables as ct
import numpy as np
import pytest
from ms_edit import flag_all_rows

from fastcal.errors import ParameterError, SelectionError
from fastcal.pipeline import (
    EXIT_OK,
    CalEntry,
    CalLibrary,
    Context,
    StageError,
    add_cli_arguments,
    cli_options,
    replay_commands,
    run,
    run_from_args,
)
from fastcal.pipeline.qa import QAScore, linear_score, theoretical_rms_jy
from fastcal.pipeline.recipe import stage_names
from fastcal.pipeline.stage import (
    COMMANDS_LOG,
    STATE_FILE,
    PlaceholderStage,
    Stage,
    StageResult,
    read_commands_log,
)
from fastcal.pipeline.stages.importdata import resolve_roles

# ----------------------------------------------------------------------------- dummy stages

RAN: list[str] = []


class _Dummy(Stage):
    def __init__(self, name: str, x: float) -> None:
        self._n, self.x = name, x

    @property
    def name(self):  # type: ignore[override]
        return self._n

    title = "dummy"

    def run(self, ctx):
        RAN.append(self.name)
        if ctx.options.get(f"fail_{self.name}"):
            raise ParameterError(f"injected failure in {self.name}")
        y = ctx.call(linear_score, x=self.x, x1=0.0, x2=10.0)
        return StageResult(self.name, qa=[QAScore("y", y, y, "dummy")])


def _recipe():
    return [_Dummy("a", 1.0), _Dummy("b", 2.0), _Dummy("c", 3.0)]


def _state(out):
    with open(os.path.join(out, STATE_FILE)) as f:
        return json.load(f)["context"]


def test_resume_after_failure_reruns_only_remaining(tiny_ms, tmp_path):
    RAN.clear()
    out = str(tmp_path / "out")
    with pytest.raises(StageError, match="stage 'b' failed: injected failure in b"):
        run(tiny_ms[0], out, recipe=_recipe(), options={"fail_b": True})
    st = _state(out)
    assert st["results"]["a"]["status"] == "ok" and st["results"]["b"]["status"] == "failed"
    assert "injected failure" in st["results"]["b"]["error"] and "c" not in st["results"]
    assert RAN == ["a", "b"]
    res = run(tiny_ms[0], out, recipe=_recipe(), options={"fail_b": False})
    assert RAN == ["a", "b", "b", "c"]  # a was not run again
    assert [r.stage for r in res.results] == ["b", "c"]
    assert all(r.duration_s >= 0 and r.started for r in res.results)
    assert run(tiny_ms[0], out, recipe=_recipe()).results == []  # nothing left to do
    calls = read_commands_log(os.path.join(out, COMMANDS_LOG))
    assert [kw["x"] for _, kw in calls] == [1.0, 2.0, 3.0]  # each stage's last run, recipe order


def test_stage_selection(tiny_ms, tmp_path):
    RAN.clear()
    out = str(tmp_path / "sel")
    run(tiny_ms[0], out, recipe=_recipe(), stages=["c"])
    run(tiny_ms[0], out, recipe=_recipe(), start="b", stop="c")
    run(tiny_ms[0], out, recipe=_recipe(), stop="a")
    assert RAN == ["c", "b", "c", "a"]
    for kwargs, msg in [(dict(stages=["zz"]), "zz not in the recipe"),
                        (dict(start="q"), "start='q' is not a stage"),
                        (dict(start="c", stop="a"), "comes before"),
                        (dict(stages=["a"], start="a"), "not both")]:
        with pytest.raises(ParameterError, match=msg):
            run(tiny_ms[0], out, recipe=_recipe(), **kwargs)


def test_state_of_another_ms_is_refused(tiny_ms, copy_ms, tmp_path):
    out = str(tmp_path / "o")
    run(tiny_ms[0], out, recipe=_recipe())
    other = copy_ms(tiny_ms[0], "other.ms")
    with pytest.raises(ParameterError, match="holds the pipeline state of"):
        run(other, out, recipe=_recipe())
    assert run(other, out, recipe=_recipe(), restart=True).context.vis == str(other)


def test_placeholder_never_pretends(tiny_ms, tmp_path):
    res = run(tiny_ms[0], str(tmp_path / "p"), recipe=[PlaceholderStage("bandpass", "bp", "fastcal.solve")])
    assert res.not_implemented == ["bandpass"]
    r = res.results[0]
    assert r.status == "not_implemented" and "not implemented in this version" in r.messages[0]


def test_context_round_trip_and_literal_calls(tmp_path):
    ctx = Context(vis=str(tmp_path / "x.ms"), out_dir=str(tmp_path / "o"), roles={"phase": ["P"]})
    ctx.callib.add(CalEntry("tsys", "/t/a.tsys", "tsys", "linear,linear", spwmap=[0, 1]))
    ctx.current_stage = "s"
    assert ctx.call(linear_score, x=0.5, x1=0.0, x2=1.0) == 0.5
    ctx.add_flags("autocorr", "mode='manual' autocorr=True", 3, 10)
    back = Context.from_dict(json.loads(json.dumps(ctx.to_dict())))
    assert back.to_dict() == ctx.to_dict()
    assert back.flags[0].fraction == pytest.approx(0.3)
    with pytest.raises(ParameterError, match="is not a literal"):
        ctx.call(linear_score, x=object(), x1=0.0, x2=1.0)
    with pytest.raises(ParameterError, match="not a module-level fastcal function"):
        ctx.call(len, obj=[1])


def test_calapply_line_without_intent_for_bare_fields(tmp_path):
    lib = CalLibrary([CalEntry("bp", "/t/bp", "bandpass", "linear,linear"),
                      CalEntry("cal", "/t/cal", "timegaincal", gainfield="nearest", intents=["CALIBRATE_*"]),
                      CalEntry("tgt", "/t/tgt", "timegaincal", gainfield="P", intents=["OBSERVE_TARGET*"])])
    fi = {0: ["CALIBRATE_BANDPASS#ON_SOURCE", "CALIBRATE_FLUX#ON_SOURCE"], 1: ["OBSERVE_TARGET#ON_SOURCE"],
          2: ["CALIBRATE_PHASE#ON_SOURCE"]}
    calls = lib.calapply_calls("x.ms", fi, "3,4", no_intent_fields=[0, 1])
    by_field = {c.field: c for c in calls}
    assert len(calls) == 3
    assert by_field["0"].intent == "" and by_field["0"].gaintable == ["/t/bp", "/t/cal"]
    assert by_field["1"].intent == "" and by_field["1"].gaintable == ["/t/bp", "/t/tgt"]
    assert by_field["2"].intent == "CALIBRATE_PHASE#ON_SOURCE"  # fields with intents keep them


# ----------------------------------------------------------------------------- importdata


def test_roles_from_intents(tiny_ms):
    from fastcal.ms import open_ms

    roles, source, msgs = resolve_roles(open_ms(tiny_ms[0]))
    truth_names = {f.name for f in open_ms(tiny_ms[0]).fields}
    assert source == "intents" and set(sum(roles.values(), [])) <= truth_names
    assert roles["bandpass"] and roles["phase"] and roles["target"]
    assert not set(roles["phase"]) & set(roles["target"])


def _strip_intents(path):
    with ct.table(os.path.join(str(path), "STATE"), readonly=False, ack=False) as t:
        t.putcol("OBS_MODE", [""] * t.nrows())


def test_ms_without_intents_needs_role_options(tiny_ms, copy_ms):
    from fastcal.ms import open_ms

    path = copy_ms(tiny_ms[0])
    _strip_intents(path)
    info = open_ms(path)
    with pytest.raises(ParameterError, match="no scan intents.*--bandpass-field"):
        resolve_roles(info)
    names = info.field_names
    roles, source, msgs = resolve_roles(info, {"bandpass_field": names[0], "phase_field": names[1],
                                               "target_field": names[2]})
    assert source == "options" and roles["bandpass"] == [names[0]] and roles["flux"] == [names[0]]
    assert any("no flux calibrator" in m for m in msgs)
    with pytest.raises(SelectionError, match="'NOPE' is not a field"):
        resolve_roles(info, {"phase_field": "NOPE"})


# ----------------------------------------------------------------------------- real stages


def _flags(path):
    with ct.table(str(path), ack=False) as t:
        return [t.getcell("FLAG", r) for r in range(t.nrows())]


def _same_flags(p, q):
    return all(np.array_equal(a, b) for a, b in zip(_flags(p), _flags(q), strict=True))


def test_commands_log_replays_every_call(tiny_ms, copy_ms, tmp_path):
    a = copy_ms(tiny_ms[0], "a.ms")
    out = str(tmp_path / "out")
    res = run(a, out, stages=["importdata", "flagdata", "refant"])
    ctx = res.context
    log = os.path.join(out, COMMANDS_LOG)
    calls = read_commands_log(log)
    assert [n for n, _ in calls] == [c.function for c in ctx.commands]
    names = {n.rsplit(".", 1)[1] for n, _ in calls}
    assert {"save_flags", "flag_deterministic", "rank_refants"} <= names
    b = copy_ms(tiny_ms[0], "b.ms")
    assert not _same_flags(a, b)
    replayed = replay_commands(log, vis=str(b))
    assert _same_flags(a, b)
    assert replayed[-1].names == ctx.refant  # rank_refants gives the same list


def test_rerun_script_reproduces_flags(tiny_ms, copy_ms, tmp_path):
    a = copy_ms(tiny_ms[0], "a.ms")
    out = str(tmp_path / "out")
    run(a, out, stages=["importdata", "flagdata", "refant", "exportdata"])
    script = os.path.join(out, "script", "fastcal_rerun.py")
    c = copy_ms(tiny_ms[0], "c.ms")
    subprocess.run([sys.executable, script, str(c)], check=True, capture_output=True, timeout=120)
    assert _same_flags(a, c)


def test_flagdata_rerun_restores_backup_first(tiny_ms, copy_ms, tmp_path):
    from fastcal.flagversions import list_flag_versions

    a = copy_ms(tiny_ms[0], "a.ms")
    out = str(tmp_path / "out")
    run(a, out, stages=["importdata", "flagdata"])
    first = _flags(a)
    with ct.table(str(a), readonly=False, ack=False) as t:  # a later stage's flags
        f = t.getcell("FLAG", 100)
        f[:] = True
        t.putcell("FLAG", 100, f)
    run(a, out, stages=["flagdata"])
    assert all(np.array_equal(x, y) for x, y in zip(first, _flags(a), strict=True))
    assert [v.name for v in list_flag_versions(a)] == ["fastcal_before_flagdata"]


def test_cli_full_recipe_and_package(tiny_ms, copy_ms, tmp_path, capsys):
    a = copy_ms(tiny_ms[0], "a.ms")
    out = str(tmp_path / "pkg")
    p = argparse.ArgumentParser()
    add_cli_arguments(p)
    assert run_from_args(p.parse_args(["--list-stages"])) == 0
    listing = capsys.readouterr().out
    assert [line.split()[0] for line in listing.splitlines()] == stage_names()
    assert "bandpass" in listing and "[simplified" in listing
    with pytest.raises(ParameterError, match="--out DIR"):
        run_from_args(p.parse_args([str(a)]))
    stages = "importdata,flagdata,refant,setjy,exportdata"
    assert run_from_args(p.parse_args([str(a), "--out", out, "--stages", stages, "--quiet"])) == EXIT_OK
    assert "NOT fully calibrated" not in capsys.readouterr().out
    for rel in ("README", "calibration/a.ms.calapply.txt", "calibration/a.ms.flagtemplate.txt",
                "qa/qa_scores.json", "log/fastcal_commands.log", "log/fastcal_pipeline.log",
                "script/fastcal_rerun.py"):
        assert os.path.isfile(os.path.join(out, rel)), rel
    readme = open(os.path.join(out, "README")).read()
    assert "theor.(mJy)" in readme and "Calibrator fluxes" in readme
    assert "flux calibrator(s) J1924-2914" in readme  # no flux model given: said, and scored red
    tmpl = open(os.path.join(out, "calibration", "a.ms.flagtemplate.txt")).read()
    assert "autocorr=True" in tmpl
    assert "fastcal pipeline on" in open(os.path.join(out, "log", "fastcal_pipeline.log")).read()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_cli_arguments(p)
    return p


def test_cli_flagdata_options_parsed_into_stage_options():
    p = _parser()
    opts = cli_options(p.parse_args(["a.ms", "--out", "o", "--pwv-mm", "2.5", "--representative-spw", "3",
                                     "--no-online-flags", "--no-lowtrans-flags"]))
    assert opts["pwv_mm"] == 2.5 and isinstance(opts["pwv_mm"], float)
    assert opts["representative_spw"] == 3 and isinstance(opts["representative_spw"], int)
    assert opts["flag_online"] is False and opts["flag_lowtrans"] is False
    # not given: None, so run() keeps the saved option (resume) or the stage default
    opts = cli_options(p.parse_args(["a.ms", "--out", "o"]))
    assert all(opts[k] is None for k in ("pwv_mm", "representative_spw", "flag_online", "flag_lowtrans"))


@pytest.mark.parametrize("argv, match", [
    (["--pwv-mm", "-1"], r"--pwv-mm '-1' is invalid; valid: a PWV >= 0 in mm"),
    (["--pwv-mm", "wet"], r"--pwv-mm 'wet' is invalid"),
    (["--representative-spw", "x"], r"--representative-spw 'x' is invalid; valid: a science spw id"),
], ids=["negative_pwv", "pwv_not_a_number", "spw_not_an_int"])
def test_cli_flagdata_options_bad_values(argv, match, capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["a.ms", "--out", "o", *argv])
    assert re.search(match, capsys.readouterr().err)


def test_cli_flagdata_options_reach_the_stage_and_the_package(tiny_ms, copy_ms, tmp_path):
    """--pwv-mm 50 with a representative spw: the other science spw (transmission ~0.075,
    below the 0.1 limit of the non-representative spws) is flagged and gets no theoretical rms."""
    from fastcal.ms import open_ms

    a = copy_ms(tiny_ms[0], "a.ms")
    out = str(tmp_path / "pkg")
    info = open_ms(a)
    rep, other = info.spws_with_role("science")[:2]
    args = _parser().parse_args([str(a), "--out", out, "--stages", "importdata,flagdata,exportdata", "--quiet",
                                 "--pwv-mm", "50", "--representative-spw", str(rep), "--no-online-flags"])
    assert run_from_args(args) == EXIT_OK
    st = _state(out)
    assert st["options"]["pwv_mm"] == 50.0 and st["options"]["representative_spw"] == rep
    fd = st["results"]["flagdata"]
    assert fd["inputs"]["pwv_mm"] == 50.0 and fd["inputs"]["representative_spw"] == rep
    assert fd["inputs"]["online"] is False and fd["inputs"]["lowtrans"] is True
    assert fd["outputs"]["pwv_source"] == "pwv_mm argument"
    assert fd["outputs"]["lowtrans_spws"] == [other]
    assert 0.05 < fd["outputs"]["transmission"][str(rep)] and fd["outputs"]["transmission"][str(other)] < 0.1
    rms = st["results"]["exportdata"]["outputs"]["theoretical_rms"]
    assert rms and {r["spw"] for r in rms} == {rep} | set(info.spws_with_role("science")[2:])
    readme = open(os.path.join(out, "README")).read()
    assert f"spws {other}: flagged for low atmospheric transmission" in readme


def test_theoretical_rms_bandwidth_without_flagged_edges(tiny_ms, copy_ms, tmp_path):
    """TDM edges (per side) and FDM baseband-edge channels (a list) come off the bandwidth;
    low-transmission spws get no row. The flagdata outputs are written with FlagSummary, so
    they carry its exact output names."""
    from fastcal.ms import open_ms
    from fastcal.pipeline.package import effective_bandwidth_hz, theoretical_rms_table
    from fastcal.pipeline.stages.flagdata import FlagSummary

    a = copy_ms(tiny_ms[0], "a.ms")
    ctx = run(a, str(tmp_path / "pkg"), stages=["importdata", "flagdata"]).context
    info = open_ms(a)
    s0, s1 = ctx.science_spws[:2]
    n = info.spws[s0].num_chan
    base = {r["spw"]: r for r in theoretical_rms_table(ctx)}
    assert base[s0]["bandwidth_hz"] == pytest.approx(info.spws[s0].total_bandwidth)  # nothing flagged
    fake = FlagSummary(vis=str(a), edge_channels={s0: 1}, fdm_edge_channels={s0: [0, 1, 2, n - 3, n - 2, n - 1]},
                       lowtrans_spws=[s1]).to_dict()
    ctx.results["flagdata"]["outputs"].update({k: fake[k] for k in ("edge_channels", "fdm_edge_channels",
                                                                     "lowtrans_spws")})
    rows = theoretical_rms_table(ctx)
    assert {r["spw"] for r in rows} == set(ctx.science_spws) - {s1}
    r = next(r for r in rows if r["spw"] == s0)
    bw = info.spws[s0].total_bandwidth * (n - 6) / n  # channels 0 and n-1 counted once
    assert r["bandwidth_hz"] == pytest.approx(bw)
    assert r["rms_jy"] == pytest.approx(base[s0]["rms_jy"] * np.sqrt(n / (n - 6)))
    # every channel flagged: no bandwidth, no rms (instead of an error)
    assert effective_bandwidth_hz(info.spws[s0], n // 2 + 1) == 0.0
    ctx.results["flagdata"]["outputs"]["fdm_edge_channels"] = {str(s0): list(range(n))}
    r = next(r for r in theoretical_rms_table(ctx) if r["spw"] == s0)
    assert r["bandwidth_hz"] == 0.0 and np.isnan(r["rms_jy"])


def _syscal_median(path, tsys_spw):
    with ct.table(os.path.join(str(path), "SYSCAL"), ack=False) as t:
        spw = t.getcol("SPECTRAL_WINDOW_ID")
        v = np.concatenate([t.getcell("TSYS_SPECTRUM", int(r)).ravel() for r in np.flatnonzero(spw == tsys_spw)])
    return float(np.median(v[np.isfinite(v) & (v > 0)]))


def test_package_calapply_and_theoretical_rms(tiny_ms, copy_ms, tmp_path):
    from fastcal.ms import open_ms
    from fastcal.pipeline.package import theoretical_rms_table, write_package

    a = copy_ms(tiny_ms[0], "a.ms")
    out = str(tmp_path / "pkg")
    ctx = run(a, out, stages=["importdata", "flagdata"]).context
    table = tmp_path / "elsewhere" / "a.ms.tsys.tbl"
    table.mkdir(parents=True)
    (table / "table.dat").write_bytes(b"x")
    ctx.callib.add(CalEntry("tsys", str(table), "tsys", "linear,linear", intents=["CALIBRATE_*", "OBSERVE_TARGET*"]))
    report = write_package(ctx)
    caldir = os.path.join(out, "calibration")
    assert os.path.isdir(os.path.join(caldir, "a.ms.tsys.tbl"))
    lines = open(report["calapply"]).read().splitlines()
    assert lines[0] == "# Apply file for a.ms"
    calls = [ast.parse(s, mode="eval").body for s in lines[1:]]
    kws = [{k.arg: ast.literal_eval(k.value) for k in c.keywords} for c in calls]
    assert kws and all(k["gaintable"] == ["a.ms.tsys.tbl"] and k["interp"] == ["linear,linear"] for k in kws)
    info = open_ms(a)
    intents = [i for k in kws for i in k["intent"].split(",")]
    assert "OBSERVE_TARGET#ON_SOURCE" in intents and "CALIBRATE_PHASE#ON_SOURCE" in intents
    assert len(intents) == len(set(intents)) and len({k["field"] for k in kws}) == len(kws)
    rows = theoretical_rms_table(ctx)
    assert {r["spw"] for r in rows} == set(ctx.science_spws)
    for r in rows:
        sp = info.spws[r["spw"]]
        tsys_spw = next(s.id for s in info.spws if info.spw_roles[s.id] == "tsys" and s.baseband == sp.baseband)
        tsys = _syscal_median(a, tsys_spw)
        assert r["tsys_k"] == pytest.approx(tsys)
        assert r["rms_jy"] == pytest.approx(theoretical_rms_jy(tsys, sp.total_bandwidth, r["time_s"], len(info.antennas)))
        assert 0 < r["time_s"] < info.time_range[1] - info.time_range[0]


def test_antpos_stage_registers_table(tiny_ms, copy_ms, tmp_path):
    a = copy_ms(tiny_ms[0], "a.ms")
    csv = tmp_path / "antennapos.csv"
    csv.write_text("ms,antenna,xoffset,yoffset,zoffset,comment\na.ms,DV04,0.001,-0.002,0.0,test\n")
    out = str(tmp_path / "out")
    res = run(a, out, stages=["importdata", "antpos"], options={"antpos_file": str(csv)})
    entry = res.context.callib.get("antpos")
    assert os.path.isdir(entry.path) and entry.calwt is False
    assert res.results[1].outputs["caltable"] == entry.path
    assert "antpos_table" in open(os.path.join(out, COMMANDS_LOG)).read()
    skipped = run(a, str(tmp_path / "o2"), stages=["antpos"])
    assert skipped.results[0].status == "skipped" and "--antpos" in skipped.results[0].messages[0]


def test_all_antennas_flagged_stops_naming_the_stage(tiny_ms, copy_ms, tmp_path):
    a = copy_ms(tiny_ms[0], "a.ms")
    flag_all_rows(a)
    out = str(tmp_path / "out")
    with pytest.raises(StageError, match="stage 'refant' failed: .*every antenna is fully flagged"):
        run(a, out, stages=["importdata", "refant"])
    assert _state(out)["results"]["refant"]["status"] == "failed"


class _Flagger(Stage):
    """Adds a scripted number of flags per call (to drive a LoopStage)."""

    name = "flagger"
    title = "dummy flagger"

    def __init__(self, per_round):
        self.per_round = list(per_round)

    def run(self, ctx):
        n = self.per_round.pop(0) if self.per_round else 0
        if n:
            ctx.add_flags("dummy", "mode='manual'", n, 100)
        return StageResult(self.name, qa=[QAScore("new", n, 1.0 if n == 0 else 0.5, f"{n} new")])


def test_loop_stage_stops_when_no_new_flags(tiny_ms, copy_ms, tmp_path):
    from fastcal.pipeline import LoopStage

    ms = copy_ms(tiny_ms[0])  # the loop backs up (and on re-runs restores) the flags

    loop = LoopStage("calflag", "loop", [_Flagger([5, 2, 0, 7])], max_rounds=5)
    res = run(ms, str(tmp_path / "l"), recipe=[loop])
    out = res.results[0].outputs
    assert [r["new_flags"] for r in out["rounds"]] == [5, 2, 0] and out["converged"]
    capped = LoopStage("calflag", "loop", [_Flagger([5, 2, 0])], max_rounds=2)
    out = run(ms, str(tmp_path / "m"), recipe=[capped]).results[0].outputs
    assert [r["new_flags"] for r in out["rounds"]] == [5, 2] and not out["converged"]
    body = LoopStage("calflag", "loop", [PlaceholderStage("rederive", "re-solve")])
    r = run(ms, str(tmp_path / "n"), recipe=[body]).results[0]
    assert r.status == "not_implemented" and "rederive" in r.messages[0]
    with pytest.raises(ParameterError, match="max_rounds=0"):
        LoopStage("x", "x", [_Flagger([])], max_rounds=0)


def test_tsys_and_wvr_stages_register_tables(tiny_ms, copy_ms, tmp_path):
    from fastcal.ms import open_ms

    a = copy_ms(tiny_ms[0], "a.ms")
    ctx = run(a, str(tmp_path / "o"), stages=["importdata", "tsys", "wvr"]).context
    info = open_ms(a)
    tsys = ctx.callib.get("tsys")
    assert os.path.isdir(tsys.path) and tsys.calwt and tsys.interp == "linear,linear"
    for s in ctx.science_spws:  # each science spw maps to the Tsys spw of its baseband
        t = tsys.spwmap[s]
        assert t in ctx.tsys_spws and info.spws[t].baseband == info.spws[s].baseband
    wvr = ctx.results["wvr"]["outputs"]
    assert wvr["applied"] == (wvr["improvement"] > 1.0)
    names = [e.name for e in ctx.callib]
    assert ("wvr" in names) == wvr["applied"]
    if wvr["applied"]:
        assert ctx.callib.get("wvr").interp == "nearest" and not ctx.callib.get("wvr").calwt
    args = ctx.tables(*names)
    assert args["gaintable"] == [e.path for e in ctx.callib]
    with pytest.raises(ParameterError, match="no caltable 'bandpass' registered"):
        ctx.tables("bandpass")


def test_tsys_and_wvr_skip_without_inputs(tiny_ms, copy_ms, tmp_path):
    from fastcal.pipeline.stages.wvr import WvrStage

    a = copy_ms(tiny_ms[0], "a.ms")
    with ct.table(os.path.join(str(a), "SYSCAL"), readonly=False, ack=False) as t:
        t.removerows(list(range(t.nrows())))
    ctx = run(a, str(tmp_path / "o"), stages=["importdata", "tsys"]).context
    assert ctx.results["tsys"]["status"] == "skipped" and "no SYSCAL" in ctx.results["tsys"]["messages"][0]
    assert any("no SYSCAL" in m for m in ctx.results["importdata"]["messages"])
    ctx.wvr_spws = []
    r = WvrStage().run(ctx)
    assert r.status == "skipped" and "no WVR" in r.messages[0]


def test_setjy_stage_manual_models(tiny_ms, copy_ms, tmp_path):
    from fastcal.flux import virtual_model
    from fastcal.ms import open_ms
    from fastcal.pipeline.stages.setjy import parse_setjy_option

    a = copy_ms(tiny_ms[0], "a.ms")
    ctx = run(a, str(tmp_path / "o"), stages=["importdata", "setjy"]).context
    r = ctx.results["setjy"]
    assert r["qa"][0]["colour"] == "red" and "1 Jy default" in r["messages"][0]
    bp = ctx.roles["flux"][0]
    entry = parse_setjy_option(f"{bp}:2.5:-0.7:230GHz")
    assert entry == {"field": bp, "fluxdensity": 2.5, "spix": [-0.7], "reffreq": "230GHz"}
    ctx = run(a, str(tmp_path / "o"), stages=["setjy"], options={"setjy_models": [entry]}).context
    assert ctx.results["setjy"]["qa"][0]["score"] == 1.0
    info = open_ms(a)
    model = virtual_model(info, info.field_names.index(bp))
    spec = model.spectrum(np.array([230e9, 2 * 230e9]), (9, 12))
    np.testing.assert_allclose(spec[:, 0], [2.5, 2.5 * 2 ** -0.7], rtol=1e-6)
    with pytest.raises(ParameterError, match="FIELD:I"):
        parse_setjy_option("J1924")


def test_bandpass_stage_recovers_true_shape(tmp_path):
    """Noise-free data with only a bandpass corruption: the registered table has its shape."""
    from fastcal.caltable import read_caltable
    from fastcal.ms import open_ms
    from fastcal.simulate import SimConfig, load_truth, simulate

    path = tmp_path / "bp.ms"
    # flat-spectrum calibrator: without a setjy model a spectral index would enter the bandpass
    simulate(path, config=SimConfig.tiny(seed=5, gains=False, delays=False, tsys=False, wvr=False,
                                         dry_residual=False, noise=False, bandpass_spix=0.0))
    truth = load_truth(path)
    ctx = run(path, str(tmp_path / "o"), stages=["importdata", "refant", "bandpass"]).context
    bp = read_caltable(ctx.callib.get("bandpass").path)
    info = open_ms(path)
    ref = info.antenna_names.index(ctx.refant[0])
    for k, spw in enumerate(truth.science_spw_ids):
        sol = bp.solutions(int(spw))
        g = np.asarray(sol.params)[0]  # (ant, chan, pol)
        t = truth.bandpass[k]  # (ant, chan, pol)
        amp_s = np.abs(g) / np.abs(g).mean(axis=1, keepdims=True)
        amp_t = np.abs(t) / np.abs(t).mean(axis=1, keepdims=True)
        np.testing.assert_allclose(amp_s, amp_t, atol=1e-4)
        ph_s = np.angle(g * np.conj(g[ref]))
        ph_t = np.angle(t * np.conj(t[ref]))
        d = np.angle(np.exp(1j * (ph_s - ph_t)))
        d -= d.mean(axis=1, keepdims=True)  # a constant phase per antenna is not the bandpass's
        assert np.abs(d).max() < 1e-4
    r = ctx.results["bandpass"]
    assert r["outputs"]["flagged_fraction"] == 0.0 and "simplified" in r["messages"][0]


def test_calibration_stages_end_to_end(tiny_ms, copy_ms, tmp_path):
    """Every corruption on (tiny, noisy): the phase-calibrator flux within 2% of the truth;
    timegaincal registers its tables for the right intents and fields; applycal writes
    calibrated phase-calibrator data at the true flux; the achieved target rms is close to the
    radiometer equation."""
    from fastcal.ms import open_ms
    from fastcal.simulate import load_truth

    path = copy_ms(tiny_ms[0])
    truth = load_truth(path)
    info = open_ms(path)
    fcal = info.field_names[truth.field_id("bandpass")]
    model = {"field": fcal, "fluxdensity": float(truth.field_flux_jy[truth.field_id("bandpass")]),
             "spix": [float(truth.field_spix[truth.field_id("bandpass")])],
             "reffreq": float(truth.flux_ref_freq_hz)}
    ctx = run(path, str(tmp_path / "o"), options={"setjy_models": [model]},
              stages=["importdata", "flagdata", "refant", "tsys", "wvr", "setjy", "bandpass", "fluxscale",
                      "timegaincal", "applycal", "qa"]).context
    pid = truth.field_id("phase")
    got = ctx.results["fluxscale"]["outputs"]["fluxes"][info.field_names[pid]]
    want = float(np.ravel(truth.model_flux(pid, got["ref_freq_hz"]))[0])
    assert got["flux_jy"] == pytest.approx(want, rel=0.02)
    assert os.path.isfile(ctx.results["fluxscale"]["outputs"]["flux_csv"])
    from fastcal.flux import virtual_model

    vm = virtual_model(info, pid)  # the derived flux is now the phase calibrator's model
    assert float(vm.spectrum(np.array([got["ref_freq_hz"]]), (9, 12))[0, 0]) == pytest.approx(got["flux_jy"])
    lib = {e.name: e for e in ctx.callib}
    pf = ",".join(ctx.roles["phase"])
    assert lib["phase_scan"].gainfield == pf and lib["amp_target"].gainfield == pf
    assert lib["phase_int"].gainfield == "nearest" and lib["amp_cal"].calwt
    target = ctx.callib.for_intent("OBSERVE_TARGET#ON_SOURCE")
    assert [e.name for e in target] == ["tsys", "wvr", "bandpass", "phase_scan", "amp_target"]
    cal = ctx.callib.for_intent("CALIBRATE_PHASE#ON_SOURCE")
    assert [e.name for e in cal] == ["tsys", "wvr", "bandpass", "phase_int", "amp_cal"]
    names = [q["name"] for q in ctx.results["timegaincal"]["qa"]]
    assert "phase_transfer" in names
    from fastcal.ms import read_chunks

    spw = ctx.science_spws[0]
    vals = []
    for ch in read_chunks(path, ("CORRECTED_DATA", "FLAG"), field=info.field_names[pid], spw=str(spw),
                          include_autocorr=False):
        d = ch.read()
        vals.append(d["CORRECTED_DATA"].real[~d["FLAG"]])
    freq = float(info.spws[spw].centre_freq)
    want_spw = float(np.ravel(truth.model_flux(pid, freq))[0])
    assert float(np.mean(np.concatenate(vals))) == pytest.approx(want_spw, rel=0.02)
    sens = ctx.results["qa"]["outputs"]["sensitivity"]
    assert sens and all(0.9 < r["achieved_rms_jy"] / r["rms_jy"] < 1.3 for r in sens)
    _check_outlier_flagging(path, ctx)


def _check_outlier_flagging(a, ctx):
    """Outliers injected into calibrated calibrator data: exactly those are flagged."""
    from fastcal.ms import open_ms
    from fastcal.pipeline.stages.calflag import flag_corrected_outliers

    info = open_ms(a)
    bp_field, ph_field = ctx.roles["bandpass"][0], ctx.roles["phase"][0]
    spw = ctx.science_spws[0]
    ddid = info.ddid_for_spw(spw)
    bad_ant, chan = 3, 5
    with ct.table(str(a), readonly=False, ack=False) as t:
        fid, dd = t.getcol("FIELD_ID"), t.getcol("DATA_DESC_ID")
        a1, a2 = t.getcol("ANTENNA1"), t.getcol("ANTENNA2")
        for r in np.flatnonzero((fid == info.field_names.index(bp_field)) & (dd == ddid) & (a1 != a2)):
            d = t.getcell("CORRECTED_DATA", int(r))
            d[chan] *= 4.0
            t.putcell("CORRECTED_DATA", int(r), d)
        ph_rows = (fid == info.field_names.index(ph_field)) & (dd == ddid) & (a1 != a2)
        scan = int(t.getcol("SCAN_NUMBER")[np.flatnonzero(ph_rows)[0]])
        scans = t.getcol("SCAN_NUMBER")
        for r in np.flatnonzero(ph_rows & (scans == scan) & ((a1 == bad_ant) | (a2 == bad_ant))):
            d = t.getcell("CORRECTED_DATA", int(r))
            t.putcell("CORRECTED_DATA", int(r), d * 3.0)
    before = _flags(a)
    s = flag_corrected_outliers(str(a), [bp_field, ph_field], ctx.science_spws)
    assert s.channels == {f"{bp_field}/{spw}": [chan]}
    assert s.antenna_scans == {f"{ph_field}/{spw}": [[info.antenna_names[bad_ant], scan]]}
    after = _flags(a)
    with ct.table(str(a), ack=False) as t:
        fid, dd, sc = t.getcol("FIELD_ID"), t.getcol("DATA_DESC_ID"), t.getcol("SCAN_NUMBER")
        a1, a2 = t.getcol("ANTENNA1"), t.getcol("ANTENNA2")
    for r, (f0, f1) in enumerate(zip(before, after, strict=True)):
        new = f1 & ~f0
        in_bp = fid[r] == info.field_names.index(bp_field) and dd[r] == ddid
        in_ant = (fid[r] == info.field_names.index(ph_field) and dd[r] == ddid and sc[r] == scan
                  and bad_ant in (a1[r], a2[r]) and a1[r] != a2[r])
        expect = np.zeros_like(f0)
        if in_bp:
            expect[chan] = True
        if in_ant:
            expect[:] = True
        np.testing.assert_array_equal(new, expect & ~f0)
    # a field whose calibration is wholesale wrong is not "outliers": refused, nothing flagged
    with ct.table(str(a), readonly=False, ack=False) as t:
        for r in np.flatnonzero(fid == info.field_names.index(bp_field)):
            d = t.getcell("CORRECTED_DATA", int(r))
            d[: d.shape[0] // 2] *= 5.0
            t.putcell("CORRECTED_DATA", int(r), d)
    s2 = flag_corrected_outliers(str(a), [bp_field], ctx.science_spws)
    assert f"{bp_field}/{spw}" in s2.refused and s2.n_new == 0
