"""Terminal progress of ``fastcal pipeline`` / ``fastcal demo`` (a stage line plus a per-chunk
bar on a terminal, nothing drawn otherwise) and the CLI's exit codes, --quiet and --verbose."""

from __future__ import annotations

import argparse
import io
import logging
import os
import re
import subprocess
import sys

import pytest
from ms_edit import flag_all_rows

from fastcal.errors import ParameterError
from fastcal.pipeline import (
    EXIT_FAILED,
    EXIT_INCOMPLETE,
    EXIT_OK,
    PlaceholderStage,
    Stage,
    StageError,
    StageResult,
    TerminalProgress,
    add_cli_arguments,
    run,
    run_from_args,
    terminal_progress,
)
from fastcal.progress import chunk_progress


class FakeTTY(io.StringIO):
    """A text stream that claims to be a terminal."""

    def isatty(self) -> bool:
        return True


class _Chunky(Stage):
    """A stage whose library loop reports `n` chunks through fastcal.progress."""

    title = "a loop over chunks"

    def __init__(self, name: str, n: int = 4, fail: bool = False) -> None:
        self._n, self.n, self.fail = name, n, fail

    @property
    def name(self):  # type: ignore[override]
        return self._n

    def run(self, ctx):
        with chunk_progress(f"{self.name}-loop", self.n) as bar:
            for _ in range(self.n):
                bar.advance()
        if self.fail:
            raise ParameterError(f"injected failure in {self.name}")
        return StageResult(self.name)


def _recipe(fail=False):
    return [_Chunky("alpha", 3), _Chunky("beta", 5, fail=fail)]


def test_terminal_shows_stage_lines_and_chunk_bars(tiny_ms, tmp_path, monkeypatch):
    tty = FakeTTY()
    monkeypatch.setattr(sys, "stderr", tty)
    prog = terminal_progress()
    assert isinstance(prog, TerminalProgress)
    run(tiny_ms[0], tmp_path / "o", recipe=_recipe(), progress=prog)
    text = tty.getvalue()
    assert "[1/2] alpha: a loop over chunks ..." in text
    assert "[1/2] alpha: alpha-loop [" in text and "] 1/3" in text and "] 2/3" in text
    assert "[2/2] beta: beta-loop [" in text and "] 4/5" in text
    # each stage ends with its status on a line of its own
    lines = [seg.split("\r")[-1].replace("\033[K", "") for seg in text.split("\n")]
    assert lines[0].startswith("[1/2] alpha: ok (") and lines[1].startswith("[2/2] beta: ok (")
    # the bar is full width when the loop is done, then the plain stage line comes back
    assert "[" + "#" * prog.width + "]" not in text  # done == total is not drawn as a bar
    assert text.count("\n") == 2


def test_library_loops_draw_bars_inside_real_stages(tiny_ms, copy_ms, tmp_path, monkeypatch):
    """The solvers report their chunk loop (fastcal.progress): a bar on the bandpass line."""
    ms = copy_ms(tiny_ms[0])
    tty = FakeTTY()
    monkeypatch.setattr(sys, "stderr", tty)
    run(ms, tmp_path / "o", stages=["importdata", "refant", "bandpass"], progress=terminal_progress())
    text = tty.getvalue()
    assert re.search(r"\r\[3/3\] bandpass: \S+ \[[#.]+\] \d+/\d+", text), text[-500:]
    assert re.search(r"\r\[3/3\] bandpass: ok \(\d+\.\d s\)\033\[K\n$", text)


def test_failed_stage_line_and_no_bar_left_behind(tiny_ms, tmp_path, monkeypatch):
    tty = FakeTTY()
    monkeypatch.setattr(sys, "stderr", tty)
    with pytest.raises(StageError, match="stage 'beta' failed"):
        run(tiny_ms[0], tmp_path / "o", recipe=_recipe(fail=True), progress=terminal_progress())
    last = tty.getvalue().split("\n")[-2].split("\r")[-1]
    assert last.startswith("[2/2] beta: failed (")
    assert tty.getvalue().endswith("\n")  # the error message starts on a fresh line
    from fastcal.progress import _callback  # the chunk callback is uninstalled after the run

    assert _callback is None


def test_nothing_drawn_when_not_a_tty_or_quiet_or_verbose(tiny_ms, tmp_path, monkeypatch):
    plain = io.StringIO()
    monkeypatch.setattr(sys, "stderr", plain)
    assert terminal_progress() is None
    run(tiny_ms[0], tmp_path / "o", recipe=_recipe(), progress=terminal_progress())
    assert "\r" not in plain.getvalue() and "alpha-loop" not in plain.getvalue()
    monkeypatch.setattr(sys, "stderr", FakeTTY())
    assert terminal_progress(quiet=True) is None
    assert terminal_progress(verbose=True) is None
    root = logging.getLogger()
    old = root.level
    root.setLevel(logging.DEBUG)  # fastcal -v: debug log lines instead of bars
    try:
        assert terminal_progress() is None
    finally:
        root.setLevel(old)


def test_log_records_clear_the_line_and_console_shows_warnings_only(monkeypatch):
    tty = FakeTTY()
    handler = logging.StreamHandler(tty)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    log = logging.getLogger("fastcal.test_progress")
    monkeypatch.setattr(log, "level", logging.INFO)
    try:
        prog = TerminalProgress(tty)
        with prog.session():
            prog.begin("[1/1] x", "title")
            log.warning("careful")
            log.info("chatter")
        log.info("after")
        assert handler.level == logging.NOTSET and not handler.filters  # restored
    finally:
        root.removeHandler(handler)
    text = tty.getvalue()
    assert "[1/1] x: title ...\033[K\r\033[Kcareful\n" in text
    assert "chatter" not in text and "after\n" in text


class _Talker(Stage):
    name, title = "talker", "logs at INFO"

    def run(self, ctx):
        logging.getLogger("fastcal.pipeline.test").info("stage chatter")
        return StageResult(self.name)


def test_quiet_console_stays_quiet_while_the_full_log_gets_info(tiny_ms, tmp_path, monkeypatch):
    """``fastcal -q demo`` / library use with WARNING logging: the pipeline's log file gets
    INFO, the console handlers do not."""
    console = io.StringIO()
    handler = logging.StreamHandler(console)
    root = logging.getLogger()
    monkeypatch.setattr(root, "level", logging.WARNING)
    monkeypatch.setattr(logging.getLogger("fastcal"), "level", logging.NOTSET)
    root.addHandler(handler)
    try:
        run(tiny_ms[0], tmp_path / "o", recipe=[_Talker()])
    finally:
        root.removeHandler(handler)
    assert handler.level == logging.NOTSET  # restored
    assert "stage chatter" not in console.getvalue()
    with open(tmp_path / "o" / "log" / "fastcal_pipeline.log") as f:
        assert "stage chatter" in f.read()


def test_demo_draws_simulation_and_stage_lines(tmp_path, monkeypatch):
    import fastcal.pipeline.recipe as recipe
    from fastcal.demo import run_demo
    from fastcal.pipeline.stages.importdata import ImportDataStage
    from fastcal.pipeline.stages.refant import RefantStage
    from fastcal.simulate import SimConfig

    # the wiring, not the calibration: a short recipe with one chunked loop (< 10 s)
    monkeypatch.setattr(recipe, "alma_recipe", lambda: [ImportDataStage(), RefantStage(), _Chunky("loop", 3)])
    tty = FakeTTY()
    monkeypatch.setattr(sys, "stderr", tty)
    demo = run_demo(tmp_path / "d", progress=terminal_progress(), config=SimConfig.tiny(seed=3))
    text = tty.getvalue()
    assert "simulate: 5 antennas" in text and "\rsimulate: ok (" in text
    for line in ("[1/3] importdata: ok (", "[2/3] refant: ok (", "[3/3] loop: loop-loop [", "[3/3] loop: ok ("):
        assert line in text
    assert [s for s, status, _ in demo.stage_status] == ["importdata", "refant", "loop"]
    assert (demo.ms / "table.dat").is_file()


# ----------------------------------------------------------------------------- CLI


def _parser():
    p = argparse.ArgumentParser()
    add_cli_arguments(p)
    return p


def test_run_from_args_exit_code_3_for_placeholders(tiny_ms, tmp_path, monkeypatch, capsys):
    import fastcal.pipeline.recipe as recipe

    monkeypatch.setattr(recipe, "alma_recipe", lambda: [_Chunky("alpha", 1), PlaceholderStage("later", "not yet")])
    args = _parser().parse_args([str(tiny_ms[0]), "--out", str(tmp_path / "o"), "--quiet"])
    assert run_from_args(args) == EXIT_INCOMPLETE
    out = capsys.readouterr().out
    assert "incomplete: stage(s) later are not implemented" in out and "NOT fully calibrated" in out
    args = _parser().parse_args([str(tiny_ms[0]), "--out", str(tmp_path / "p"), "--stages", "alpha"])
    assert run_from_args(args) == EXIT_OK
    assert "alpha" in capsys.readouterr().out  # the stage table (not --quiet)


def _cli(*argv, cwd):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "fastcal.cli", *argv], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env=env)


def test_cli_exit_codes_quiet_and_verbose(tiny_ms, copy_ms, tmp_path):
    ms = copy_ms(tiny_ms[0], "a.ms")
    ok = _cli("pipeline", str(ms), "--out", "q", "--stages", "importdata,flagdata", "--quiet", cwd=tmp_path)
    assert ok.returncode == EXIT_OK, ok.stderr
    assert ok.stdout == "" and " INFO " not in ok.stderr and "\r" not in ok.stderr


def test_cli_verbose_shows_debug_log_and_table(tiny_ms, tmp_path):
    ms = tiny_ms[0]
    loud = _cli("pipeline", str(ms), "--out", "v", "--stages", "importdata", "--verbose", cwd=tmp_path)
    assert loud.returncode == EXIT_OK, loud.stderr
    assert " DEBUG " in loud.stderr and " INFO " in loud.stderr
    assert re.search(r"^importdata +ok ", loud.stdout, re.M) and "state, logs and package in" in loud.stdout


def test_cli_exit_code_2_names_the_failed_stage(tiny_ms, copy_ms, tmp_path):
    ms = copy_ms(tiny_ms[0], "a.ms")
    flag_all_rows(ms)
    bad = _cli("pipeline", str(ms), "--out", "f", "--stages", "importdata,refant", "--quiet", cwd=tmp_path)
    assert bad.returncode == EXIT_FAILED
    assert "fastcal pipeline: error: stage 'refant' failed: " in bad.stderr
    assert "every antenna is fully flagged" in bad.stderr and "Traceback" not in bad.stderr
    assert os.path.isfile(tmp_path / "f" / "README")  # the package records what ran


def test_demo_cli_exit_codes(tmp_path, monkeypatch, capsys):
    """``fastcal demo``: 0 when the recipe ran, 2 with the failed stage named (small dataset and
    recipe patched in: the exit path, not the calibration)."""
    import fastcal.pipeline.recipe as recipe
    from fastcal.cli import main
    from fastcal.simulate import SimConfig

    monkeypatch.setattr(SimConfig, "demo", classmethod(lambda cls, seed=1, **kw: SimConfig.tiny(seed=seed)))
    monkeypatch.setattr(recipe, "alma_recipe", lambda: [_Chunky("alpha", 2)])
    assert main(["demo", "--out", str(tmp_path / "ok")]) == EXIT_OK
    out = capsys.readouterr().out
    assert "alpha" in out and "Package:" in out
    monkeypatch.setattr(recipe, "alma_recipe", lambda: [_Chunky("alpha", 2), _Chunky("beta", 2, fail=True)])
    assert main(["demo", "--out", str(tmp_path / "bad")]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "fastcal demo: error: stage 'beta' failed: injected failure in beta" in err
    assert (tmp_path / "bad" / "pipeline" / "README").is_file()
