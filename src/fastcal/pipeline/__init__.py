"""The ALMA-style calibration pipeline: ``fastcal pipeline vis.ms --out DIR``.

>>> from fastcal.pipeline import run                                   # doctest: +SKIP
>>> result = run("obs.ms", "obs_pipeline", options={"phase_field": "J1832-2039"})

Modules: :mod:`~fastcal.pipeline.context` (shared state, cal library, commands),
:mod:`~fastcal.pipeline.stage` (stages, runner, resume, commands log, replay),
:mod:`~fastcal.pipeline.qa` (QA scores), :mod:`~fastcal.pipeline.recipe` (the stage list),
:mod:`~fastcal.pipeline.stages` (implemented stages), :mod:`~fastcal.pipeline.package`
(delivery package). See docs/pipeline.md for what is implemented and what is planned.

Exit codes of ``fastcal pipeline``: 0 every selected stage ran; 3 the run finished but some
stages are not implemented in this version (listed); 2 a stage failed (message names it; run
again to resume).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fastcal.pipeline.context import CalEntry, CalLibrary, Context
from fastcal.pipeline.qa import QAScore
from fastcal.pipeline.stage import (
    FULL_LOG,
    NOT_IMPLEMENTED,
    LoopStage,
    PlaceholderStage,
    Stage,
    StageError,
    StageResult,
    load_context,
    replay_commands,
    run_stages,
)

__all__ = [
    "CalEntry", "CalLibrary", "Context", "QAScore", "Stage", "StageResult", "StageError",
    "PlaceholderStage", "LoopStage", "PipelineRun", "run", "replay_commands", "terminal_progress", "add_cli_arguments", "run_from_args",
    "EXIT_OK", "EXIT_INCOMPLETE",
]

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_INCOMPLETE = 3


@dataclass
class PipelineRun:
    """What :func:`run` did: the context, the results of the stages run now, and the names
    of those that are not implemented in this version."""

    context: Context
    results: list[StageResult] = field(default_factory=list)
    not_implemented: list[str] = field(default_factory=list)

    @property
    def out_dir(self) -> str:
        return self.context.out_dir


def _attach_full_log(out_dir: str) -> logging.Handler:
    path = os.path.join(out_dir, FULL_LOG)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    h = logging.FileHandler(path, encoding="utf-8")
    h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    h.setLevel(logging.DEBUG)
    return h


def run(vis: str | os.PathLike, out_dir: str | os.PathLike, *, stages: Sequence[str] | None = None,
        start: str | None = None, stop: str | None = None, restart: bool = False,
        options: dict[str, Any] | None = None, recipe: Sequence[Stage] | None = None,
        progress=None) -> PipelineRun:
    """Run the calibration recipe on `vis`, writing state, logs and the package to `out_dir`.

    Parameters
    ----------
    vis : str
        Measurement Set (FLAG is written; DATA never).
    out_dir : str
        Output directory; a previous run's state there is resumed unless `restart`.
    stages : sequence of str, optional
        Run exactly these stages.
    start, stop : str, optional
        Run the stages from `start` to `stop` (inclusive).
    restart : bool
        Ignore a saved state and start afresh.
    options : dict, optional
        Stage options (``bandpass_field``, ``phase_field``, ``flux_field``, ``target_field``,
        ``check_field``, ``antpos_file``, ``refantignore``, ``flag_shadow``, ...); merged
        over the saved ones when resuming.
    recipe : sequence of Stage, optional
        Default :func:`fastcal.pipeline.recipe.alma_recipe`.
    progress : callable, optional
        ``progress(k, n, stage, result_or_None)`` before and after each stage.

    Raises
    ------
    StageError
        A stage failed (the state is saved; run again to resume).
    ParameterError
        Bad stage names, or a state directory that belongs to another MS.
    """
    from fastcal.errors import ParameterError
    from fastcal.ms import open_ms
    from fastcal.pipeline.recipe import alma_recipe

    info = open_ms(vis)  # fail early with the MS errors
    out = os.path.abspath(os.fspath(out_dir))
    os.makedirs(out, exist_ok=True)
    ctx = None if restart else load_context(out)
    if ctx is not None and ctx.vis != info.path:
        raise ParameterError(f"{out} holds the pipeline state of {ctx.vis}, not {info.path}; use "
                             f"another output directory or restart=True (--restart)")
    if ctx is None:
        ctx = Context(vis=info.path, out_dir=out)
    ctx.options.update({k: v for k, v in (options or {}).items() if v is not None})
    recipe = list(recipe) if recipe is not None else alma_recipe()
    handler = _attach_full_log(out)
    flog = logging.getLogger("fastcal")
    old_level = flog.level
    if flog.getEffectiveLevel() > logging.INFO:
        flog.setLevel(logging.INFO)
    flog.addHandler(handler)
    try:
        logger.info("fastcal pipeline on %s -> %s", info.path, out)
        results = run_stages(ctx, recipe, stages=stages, start=start, stop=stop, progress=progress)
    finally:
        flog.removeHandler(handler)
        handler.close()
        flog.setLevel(old_level)
    missing = [r.stage for r in results if r.status == NOT_IMPLEMENTED]
    return PipelineRun(ctx, results, missing)


# ----------------------------------------------------------------------------- CLI


def _csv(value: str) -> list[str]:
    return [s.strip() for s in value.split(",") if s.strip()]


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``fastcal pipeline``."""
    parser.add_argument("vis", nargs="?", help="Measurement Set to calibrate (FLAG is modified)")
    parser.add_argument("--out", default=None, help="output directory: state, logs, delivery package")
    sel = parser.add_argument_group("stage selection")
    sel.add_argument("--stages", type=_csv, default=None, help="comma-separated stages to run (exactly these)")
    sel.add_argument("--from", dest="start", default=None, help="first stage to run")
    sel.add_argument("--to", dest="stop", default=None, help="last stage to run")
    sel.add_argument("--restart", action="store_true", help="ignore the saved state in --out")
    sel.add_argument("--list-stages", action="store_true", help="print the recipe's stages and exit")
    roles = parser.add_argument_group("calibrator roles (override or replace the scan intents)")
    for r in ("bandpass", "flux", "phase", "target", "check"):
        roles.add_argument(f"--{r}-field", dest=f"{r}_field", default=None, help=f"{r} field name(s)")
    opts = parser.add_argument_group("stage options")
    opts.add_argument("--antpos", dest="antpos_file", default=None,
                      help="antenna position corrections (antennapos.csv or JSON)")
    opts.add_argument("--refantignore", default=None, help="antennas never to use as refant")
    opts.add_argument("--flux-csv", dest="flux_csv", default=None, help="ALMA flux.csv with calibrator fluxes")
    opts.add_argument("--setjy", dest="setjy", action="append", default=None, metavar="FIELD:I[:SPIX[:REFFREQ]]",
                      help="manual calibrator model (repeatable), e.g. J1924-2914:3.1:-0.6:233GHz")
    opts.add_argument("--no-shadow", dest="flag_shadow", action="store_false", default=None,
                      help="do not flag shadowed antennas")
    opts.add_argument("--no-edgespw", dest="flag_edgespw", action="store_false", default=None,
                      help="do not flag TDM edge channels")
    # SUPPRESS: when absent, do not override fastcal's global -q/-v given before the subcommand
    opts.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                      help="warnings and errors only")
    opts.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                      help="debug logging")


def terminal_progress(quiet: bool = False):
    """The per-stage progress callback for :func:`run` when stderr is a terminal (and not
    `quiet`), else None: plain log lines only."""
    return None if quiet or not sys.stderr.isatty() else _terminal_progress


def _terminal_progress(k: int, n: int, stage: Stage, result: StageResult | None) -> None:
    """One status line per stage on a terminal (rewritten in place while the stage runs)."""
    if result is None:
        sys.stderr.write(f"\r[{k}/{n}] {stage.name}: {stage.title} ...\033[K")
    else:
        sys.stderr.write(f"\r[{k}/{n}] {stage.name}: {result.status} ({result.duration_s:.1f} s)\033[K\n")
    sys.stderr.flush()


_OPTION_KEYS = ("bandpass_field", "flux_field", "phase_field", "target_field", "check_field",
                "antpos_file", "refantignore", "flag_shadow", "flag_edgespw", "flux_csv")


def run_from_args(args: argparse.Namespace) -> int:
    """Run ``fastcal pipeline`` from parsed arguments; returns the exit code (see the module)."""
    from fastcal.pipeline.recipe import alma_recipe

    if getattr(args, "list_stages", False):
        for s in alma_recipe():
            mark = ("   [not implemented in this version]" if not s.implemented
                    else "   [simplified: see docs/pipeline.md]" if s.simplified else "")
            print(f"{s.name:12s} {s.title}{mark}")
        return EXIT_OK
    if not args.vis or not args.out:
        from fastcal.errors import ParameterError

        raise ParameterError("give the Measurement Set and --out DIR (e.g. fastcal pipeline obs.ms --out obs_cal)")
    if getattr(args, "quiet", False):
        for h in logging.getLogger().handlers:
            h.setLevel(logging.WARNING)
    options = {k: getattr(args, k, None) for k in _OPTION_KEYS}
    if getattr(args, "setjy", None):
        from fastcal.pipeline.stages.setjy import parse_setjy_option

        options["setjy_models"] = [parse_setjy_option(t) for t in args.setjy]
    quiet = getattr(args, "quiet", False)
    res = run(args.vis, args.out, stages=args.stages, start=args.start, stop=args.stop,
              restart=args.restart, options=options,
              progress=terminal_progress(quiet))
    ctx = res.context
    if not getattr(args, "quiet", False):
        for r in res.results:
            qa = "  ".join(f"{q.name}={q.score:.2f}({q.colour})" for q in r.qa)
            print(f"{r.stage:12s} {r.status:16s} {r.duration_s:7.2f} s  {qa}")
        print(f"state, logs and package in {ctx.out_dir}")
    if res.not_implemented:
        print(f"fastcal pipeline: incomplete: stage(s) {', '.join(res.not_implemented)} are not "
              f"implemented in this version; the data are NOT fully calibrated")
        return EXIT_INCOMPLETE
    return EXIT_OK
