"""The ``fastcal`` command line.

Thin by design: each subcommand parses its arguments, calls one public function and prints
what it returns. A :class:`~fastcal.errors.FastcalError` is reported as one line on stderr
(no traceback) with exit code 2; ``--verbose`` shows DEBUG logging.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from fastcal.errors import FastcalError

log = logging.getLogger("fastcal")


def _cmd_demo(args: argparse.Namespace) -> int:
    from fastcal.demo import run_demo
    from fastcal.pipeline import EXIT_INCOMPLETE, EXIT_OK, terminal_progress

    demo = run_demo(args.out, seed=args.seed, progress=terminal_progress(args.quiet))
    incomplete = [stage for stage, status, _ in demo.stage_status if status == "not_implemented"]
    if args.quiet:
        print(f"Package: {demo.package}")
        return EXIT_INCOMPLETE if incomplete else EXIT_OK
    print(demo.summary)
    print()
    print(f"Simulated {demo.ms} in {demo.simulate_s:.1f} s (truth: {demo.ms}.truth.json/.npz)")
    print(f"Calibrated it with the ALMA-style recipe in {demo.pipeline_s:.1f} s:")
    width = max((len(stage) for stage, _, _ in demo.stage_status), default=0)
    for stage, status, seconds in demo.stage_status:
        print(f"  {stage:{width}s} {status:10s} {seconds:6.2f} s")
    if demo.phasecal_flux:
        name, flux, err, true = demo.phasecal_flux
        print(
            f"Phase calibrator {name}: {flux:.4f} +- {err:.4f} Jy bootstrapped, "
            f"{true:.4f} Jy injected ({100 * (flux - true) / true:+.2f} %)"
        )
    if demo.sensitivity_ratio:
        lo, hi = min(demo.sensitivity_ratio), max(demo.sensitivity_ratio)
        print(f"Target rms / radiometer-equation rms: {lo:.2f} to {hi:.2f} over the science spws")
    if demo.lowest_qa:
        stage, name, score, message = demo.lowest_qa
        print(f"Lowest QA score: {score:.2f} ({stage}/{name}: {message})")
    print(f"Weblog:  {demo.weblog}")
    print(f"Package: {demo.package} (README, calibration/, qa/, log/, script/)")
    if incomplete:
        print(f"Incomplete: stage(s) {', '.join(incomplete)} are not implemented in this version")
    return EXIT_INCOMPLETE if incomplete else EXIT_OK


def _cmd_simulate(args: argparse.Namespace) -> int:
    from fastcal.simulate import run_from_args

    t0 = time.perf_counter()
    run_from_args(args)
    print(f"wrote {args.path} in {time.perf_counter() - t0:.1f} s")
    return 0


def _cmd_listobs(args: argparse.Namespace) -> int:
    from fastcal.ms import open_ms

    print(open_ms(args.vis).summary())
    return 0


def _add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", default="fastcal_demo", help="output directory (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (default: %(default)s)")
    parser.set_defaults(func=_cmd_demo)


def _add_simulate_arguments(parser: argparse.ArgumentParser) -> None:
    from fastcal.simulate import add_cli_arguments

    add_cli_arguments(parser)
    parser.set_defaults(func=_cmd_simulate)


def _add_listobs_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("vis", help="Measurement Set path")
    parser.set_defaults(func=_cmd_listobs)


def _module_command(module: str, *extra: Any) -> Callable[[argparse.ArgumentParser], None]:
    """Arguments and action of a subcommand that live in `module` (add_cli_arguments /
    run_from_args), so this file stays a thin map from commands to public functions."""

    def configure(parser: argparse.ArgumentParser) -> None:
        mod = importlib.import_module(module)
        mod.add_cli_arguments(parser, *extra)
        parser.set_defaults(func=lambda args: _as_exit_code(mod.run_from_args(args)))

    return configure


def _as_exit_code(result: Any) -> int:
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


#: command -> (one-line help, function adding its arguments and action to its parser).
#: A command's module is imported only when that command is parsed, so ``fastcal --help``
#: and ``fastcal listobs`` stay fast.
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "demo": ("simulate a small ALMA-like dataset and calibrate it end to end",
             _add_demo_arguments),
    "simulate": ("write a simulated ALMA-like Measurement Set", _add_simulate_arguments),
    "gaincal": ("solve antenna gains (G, T) or delays (K), as CASA gaincal",
                _module_command("fastcal.solve", "gaincal")),
    "bandpass": ("solve a per-channel bandpass, as CASA bandpass",
                 _module_command("fastcal.solve", "bandpass")),
    "applycal": ("apply calibration tables (or an ALMA calapply.txt via --calapply) "
                 "to CORRECTED_DATA", _module_command("fastcal.apply")),
    "tsys": ("build (and flag) a B TSYS table from SYSCAL; print the Tsys spwmap",
             _module_command("fastcal.tsys")),
    "antpos": ("write a KAntPos Jones table from offsets or a corrections file",
               _module_command("fastcal.antpos")),
    "wvrgcal": ("WVR phase correction (T Jones table) from the 183 GHz radiometers",
                _module_command("fastcal.wvr")),
    "setjy": ("set calibrator flux-density models (virtual or MODEL_DATA), flux.csv",
              _module_command("fastcal.flux")),
    "fluxscale": ("bootstrap calibrator flux densities from a G/T table",
                  _module_command("fastcal.fluxscale")),
    "pipeline": ("run the ALMA-style calibration recipe (QA, weblog, delivery package)",
                 _module_command("fastcal.pipeline")),
    "weblog": ("re-render the HTML weblog of a pipeline output directory",
               _module_command("fastcal.report.weblog")),
    "listobs": ("print a listobs-like summary of a Measurement Set", _add_listobs_arguments),
}  # fmt: skip


def build_parser(commands: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The ``fastcal`` argument parser.

    Parameters
    ----------
    commands : iterable of str, optional
        Subcommands whose arguments are added (importing their modules); the others are
        listed with their one-line help only. Default: all of them.
    """
    wanted = set(COMMANDS) if commands is None else set(commands)
    parser = argparse.ArgumentParser(
        prog="fastcal",
        description="Fast, CASA-compatible calibration of ALMA-like Measurement Sets.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, configure) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        if name in wanted:
            configure(cmd)
    return parser


def _command_in(argv: Sequence[str]) -> str | None:
    """The subcommand named in `argv`: its first token that is not a top-level option."""
    for token in argv:
        if token == "--":
            continue
        if not token.startswith("-"):
            return token if token in COMMANDS else None
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = _command_in(argv)
    parser = build_parser([command] if command else [])
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except FastcalError as exc:
        print(f"fastcal {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fastcal {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
