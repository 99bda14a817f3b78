"""The ``fastcal`` command line and the public API surface."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

import fastcal
from fastcal.cli import main


def test_every_public_name_resolves():
    for name in fastcal.__all__:
        assert getattr(fastcal, name) is not None, name


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        fastcal.nope  # noqa: B018


def test_demo_simulates_and_summarises(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert (out / "demo.ms").is_dir()
    assert (out / "demo.ms.truth.json").is_file()
    info = fastcal.open_ms(out / "demo.ms")
    # the printed summary is the listobs-like summary of what was written
    for f in info.fields:
        assert f.name in text
    assert "CALIBRATE_BANDPASS#ON_SOURCE" in text
    assert "WVR#NOMINAL" in text
    # ... and it ran the recipe: a weblog, a package and a bootstrapped flux close to the truth
    assert (out / "pipeline" / "qa" / "index.html").is_file()
    assert (out / "pipeline" / "calibration" / "demo.ms.calapply.txt").is_file()
    line = next(ln for ln in text.splitlines() if ln.startswith("Phase calibrator"))
    percent = float(line.rsplit("(", 1)[1].split("%")[0])
    assert abs(percent) < 2.0


def test_listobs_missing_path_is_a_clean_error(tmp_path, capsys):
    missing = tmp_path / "nope.ms"
    assert main(["listobs", str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err
    assert "Traceback" not in err


def test_simulate_refuses_to_overwrite(tmp_path, capsys):
    path = tmp_path / "s.ms"
    assert main(["simulate", str(path), "--preset", "tiny"]) == 0
    assert main(["simulate", str(path), "--preset", "tiny"]) == 2
    assert "exists" in capsys.readouterr().err


def test_console_script_entry_point_runs():
    proc = subprocess.run(
        [sys.executable, "-m", "fastcal.cli", "--help"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0
    assert "demo" in proc.stdout and "simulate" in proc.stdout


def test_functions_named_like_modules_stay_functions():
    import fastcal.fluxscale  # noqa: F401
    import fastcal.simulate  # noqa: F401

    assert callable(fastcal.simulate) and fastcal.simulate.__name__ == "simulate"
    assert callable(fastcal.fluxscale) and fastcal.fluxscale.__name__ == "fluxscale"


def _run_in_fresh_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


_SUBCOMMAND_MODULES = (
    "fastcal.solve", "fastcal.apply", "fastcal.tsys", "fastcal.antpos", "fastcal.wvr",
    "fastcal.flux", "fastcal.fluxscale", "fastcal.pipeline", "fastcal.report.weblog",
    "fastcal.simulate", "fastcal.demo", "fastcal.ms",
)  # fmt: skip


def test_top_level_help_imports_no_subcommand_module():
    code = (
        "import sys\n"
        "from fastcal.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        f"print('LOADED', [m for m in {_SUBCOMMAND_MODULES!r} if m in sys.modules])\n"
    )
    proc = _run_in_fresh_python(code)
    assert proc.returncode == 0, proc.stderr
    assert "LOADED []" in proc.stdout
    for name in ("gaincal", "bandpass", "applycal", "wvrgcal", "pipeline", "listobs"):
        assert name in proc.stdout


def test_subcommand_help_shows_its_arguments_only_importing_its_module():
    code = (
        "import sys\n"
        "from fastcal.cli import main\n"
        "try:\n    main(['-q', 'gaincal', '--help'])\nexcept SystemExit as e:\n"
        "    assert e.code == 0\n"
        "print('APPLY', 'fastcal.apply' in sys.modules, 'SOLVE', 'fastcal.solve' in sys.modules)\n"
    )
    proc = _run_in_fresh_python(code)
    assert proc.returncode == 0, proc.stderr
    assert "--gaintype" in proc.stdout and "caltable" in proc.stdout
    assert "APPLY False SOLVE True" in proc.stdout


def test_unknown_command_lists_the_valid_ones(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["nosuchcommand"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "nosuchcommand" in err and "gaincal" in err and "listobs" in err


def test_full_parser_configures_every_command():
    from fastcal.cli import COMMANDS, build_parser

    parser = build_parser()
    args = parser.parse_args(["listobs", "x.ms"])
    assert args.vis == "x.ms" and callable(args.func)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == set(COMMANDS)
    assert all(p.get_default("func") is not None for p in sub.choices.values())


def _fake_demo(statuses):
    from types import SimpleNamespace

    return SimpleNamespace(
        summary="SUMMARY", ms="x.ms", simulate_s=0.1, pipeline_s=0.2, phasecal_flux=None,
        sensitivity_ratio=None, lowest_qa=None, weblog="w/index.html", package="pkg",
        stage_status=[(name, status, 0.0) for name, status in statuses])


@pytest.mark.parametrize("quiet", [False, True])
@pytest.mark.parametrize("statuses, code", [([("a", "ok"), ("b", "skipped")], 0),
                                            ([("a", "ok"), ("b", "not_implemented")], 3)])
def test_demo_exit_code_and_quiet_output(monkeypatch, capsys, tmp_path, quiet, statuses, code):
    import fastcal.demo

    monkeypatch.setattr(fastcal.demo, "run_demo", lambda *a, **k: _fake_demo(statuses))
    argv = (["-q"] if quiet else []) + ["demo", "--out", str(tmp_path)]
    assert main(argv) == code
    out = capsys.readouterr().out
    if quiet:
        assert out.strip() == "Package: pkg"
    else:
        assert "SUMMARY" in out and "Package: pkg" in out
        assert ("Incomplete: stage(s) b" in out) == (code == 3)
