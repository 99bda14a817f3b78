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
from typing import Any

from fastcal.errors import FastcalError

log = logging.getLogger("fastcal")


def _cmd_demo(args: argparse.Namespace) -> int:
    from fastcal.demo import run_demo
    from fastcal.pipeline import terminal_progress

    demo = run_demo(args.out, seed=args.seed, progress=terminal_progress(args.quiet))
    print(demo.summary)
    print()
    print(f"Simulated {demo.ms} in {demo.simulate_s:.1f} s (truth: {demo.ms}.truth.json/.npz)")
    print(f"Calibrated it with the ALMA-style recipe in {demo.pipeline_s:.1f} s:")
    for stage, status, seconds in demo.stage_status:
        print(f"  {stage:12s} {status:10s} {seconds:6.2f} s")
    if demo.phasecal_flux:
        name, flux, err, true = demo.phasecal_flux
        print(f"Phase calibrator {name}: {flux:.4f} +- {err:.4f} Jy bootstrapped, "
              f"{true:.4f} Jy injected ({100 * (flux - true) / true:+.2f} %)")
    if demo.sensitivity_ratio:
        lo, hi = min(demo.sensitivity_ratio), max(demo.sensitivity_ratio)
        print(f"Target rms / radiometer-equation rms: {lo:.2f} to {hi:.2f} over the science spws")
    if demo.lowest_qa:
        stage, name, score, message = demo.lowest_qa
        print(f"Lowest QA score: {score:.2f} ({stage}/{name}: {message})")
    print(f"Weblog:  {demo.weblog}")
    print(f"Package: {demo.package} (README, calibration/, qa/, log/, script/)")
    return 0


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


def _add_module_command(sub: Any, name: str, module: str, help_text: str,
                        *extra: Any) -> None:
    """A subcommand whose arguments and action live in `module` (add_cli_arguments /
    run_from_args), so this file stays a thin map from commands to public functions."""
    mod = importlib.import_module(module)
    parser = sub.add_parser(name, help=help_text)
    mod.add_cli_arguments(parser, *extra)
    parser.set_defaults(func=lambda args: _as_exit_code(mod.run_from_args(args)))


def _as_exit_code(result: Any) -> int:
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastcal",
        description="Fast, CASA-compatible calibration of ALMA-like Measurement Sets.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="simulate a small ALMA-like dataset and calibrate it end to end")
    demo.add_argument("--out", default="fastcal_demo", help="output directory (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=1, help="random seed (default: %(default)s)")
    demo.set_defaults(func=_cmd_demo)

    sim = sub.add_parser("simulate", help="write a simulated ALMA-like Measurement Set")
    from fastcal.simulate import add_cli_arguments

    add_cli_arguments(sim)
    sim.set_defaults(func=_cmd_simulate)

    _add_module_command(sub, "gaincal", "fastcal.solve",
                        "solve antenna gains (G, T) or delays (K), as CASA gaincal", "gaincal")
    _add_module_command(sub, "bandpass", "fastcal.solve",
                        "solve a per-channel bandpass, as CASA bandpass", "bandpass")
    _add_module_command(sub, "applycal", "fastcal.apply",
                        "apply calibration tables (or an ALMA calapply.txt via --calapply) "
                        "to CORRECTED_DATA")
    _add_module_command(sub, "tsys", "fastcal.tsys",
                        "build (and flag) a B TSYS table from SYSCAL; print the Tsys spwmap")
    _add_module_command(sub, "antpos", "fastcal.antpos",
                        "write a KAntPos Jones table from offsets or a corrections file")

    _add_module_command(sub, "wvrgcal", "fastcal.wvr",
                        "WVR phase correction (T Jones table) from the 183 GHz radiometers")
    _add_module_command(sub, "setjy", "fastcal.flux",
                        "set calibrator flux-density models (virtual or MODEL_DATA), flux.csv")
    _add_module_command(sub, "fluxscale", "fastcal.fluxscale",
                        "bootstrap calibrator flux densities from a G/T table")

    _add_module_command(sub, "pipeline", "fastcal.pipeline",
                        "run the ALMA-style calibration recipe (QA, weblog, delivery package)")
    _add_module_command(sub, "weblog", "fastcal.report.weblog",
                        "re-render the HTML weblog of a pipeline output directory")

    lo = sub.add_parser("listobs", help="print a listobs-like summary of a Measurement Set")
    lo.add_argument("vis", help="Measurement Set path")
    lo.set_defaults(func=_cmd_listobs)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
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
