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
again to resume). A failed run still writes the package (README, qa/, weblog, script/) with
what ran and the error.

Progress: on a terminal (stderr a tty, not ``--quiet``/``--verbose``) :func:`terminal_progress`
gives a :class:`TerminalProgress`: one status line per stage, with a bar for the chunk loop
running inside it (:mod:`fastcal.progress`), rewritten in place; the console shows warnings
only (the full log is in ``log/fastcal_pipeline.log``). Otherwise: plain log lines.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastcal.errors import FastcalError
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
    "PlaceholderStage", "LoopStage", "PipelineRun", "run", "replay_commands", "terminal_progress",
    "TerminalProgress", "add_cli_arguments", "cli_options", "run_from_args", "EXIT_OK", "EXIT_FAILED",
    "EXIT_INCOMPLETE",
]

logger = logging.getLogger(__name__)

EXIT_OK = 0
#: A stage failed: ``fastcal``'s exit code for a :class:`~fastcal.errors.FastcalError` (cli.main).
EXIT_FAILED = 2
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
        ``progress(k, n, stage, result_or_None)`` before and after each stage (also after a
        failed one). If it has a ``session()`` context manager (:class:`TerminalProgress`),
        the run happens inside it (per-chunk bars).

    Raises
    ------
    StageError
        A stage failed (the state is saved, and the package written with what ran and the
        error; run again to resume).
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
    old_level, shown = flog.level, flog.getEffectiveLevel()
    # the full log gets INFO; the other handlers (the console) keep showing what they did
    quieted = [(h, h.level) for lg in (logging.getLogger(), flog) for h in lg.handlers if h.level < shown]
    if shown > logging.INFO:
        for h, _ in quieted:
            h.setLevel(shown)
        flog.setLevel(logging.INFO)
    flog.addHandler(handler)
    session = progress.session() if hasattr(progress, "session") else contextlib.nullcontext()
    try:
        with session:
            logger.info("fastcal pipeline on %s -> %s", info.path, out)
            try:
                results = run_stages(ctx, recipe, stages=stages, start=start, stop=stop, progress=progress)
            except Exception as exc:
                if isinstance(exc, StageError) or not isinstance(exc, FastcalError):  # a stage failed
                    ctx.current_stage = ""
                    _package_after_failure(ctx)
                raise
    finally:
        flog.removeHandler(handler)
        handler.close()
        flog.setLevel(old_level)
        if shown > logging.INFO:
            for h, lev in quieted:
                h.setLevel(lev)
    missing = [r.stage for r in results if r.status == NOT_IMPLEMENTED]
    return PipelineRun(ctx, results, missing)


def _package_after_failure(ctx: Context) -> None:
    """Write the package (README, qa/, weblog, script/) after a failed stage, so that it
    records what ran and why the run stopped; its own errors are logged, never raised."""
    from fastcal.pipeline.package import write_package

    try:
        write_package(ctx)
        logger.info("package with the stages run so far written to %s", ctx.out_dir)
    except Exception as exc:  # noqa: BLE001 - the stage's error is the one to report
        logger.warning("the package could not be written after the failure: %s", exc)


# ----------------------------------------------------------------------------- progress


class TerminalProgress:
    """Stage status lines with a per-chunk bar, drawn in place on a terminal stream.

    Used as the `progress` of :func:`run`: called ``(k, n, stage, None)`` when a stage starts
    (``[3/15] flagdata: deterministic flags ...``) and ``(k, n, stage, result)`` when it ends
    (``[3/15] flagdata: ok (0.1 s)``, newline). :meth:`chunk` is a
    :func:`fastcal.progress.progress_callback` callback: it appends
    ``applycal [#####.....] 3/10`` to the current stage line. :meth:`session` installs it and,
    on the console handlers writing to the same stream, clears the line before a log record
    and shows warnings only (the full log goes to the package's log file).

    Parameters
    ----------
    stream : file-like, optional
        Default ``sys.stderr`` at construction.
    width : int
        Bar width (characters).
    """

    def __init__(self, stream=None, width: int = 24) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.width = int(width)
        self._label = ""
        self._title = ""
        self._pending = False
        self._lock = threading.RLock()  # chunk loops may advance from worker threads

    # ---- drawing
    def _draw(self, text: str, end: str = "") -> None:
        with self._lock:
            self.stream.write(f"\r{text}\033[K{end}")
            self.stream.flush()
            self._pending = not end

    def clear(self) -> None:
        """Erase an unfinished line (before something else is written to the stream)."""
        with self._lock:
            if self._pending:
                self.stream.write("\r\033[K")
                self.stream.flush()
                self._pending = False

    def begin(self, label: str, title: str) -> None:
        """Start a status line ``label: title ...``."""
        self._label, self._title = label, title
        self._draw(f"{label}: {title} ...")

    def end(self, status: str, seconds: float) -> None:
        """Finish the current status line with ``status (seconds s)``."""
        self._draw(f"{self._label}: {status} ({seconds:.1f} s)", end="\n")
        self._label = self._title = ""

    def __call__(self, k: int, n: int, stage: Stage, result: StageResult | None) -> None:
        if result is None:
            self.begin(f"[{k}/{n}] {stage.name}", stage.title)
        else:
            self._label = self._label or f"[{k}/{n}] {stage.name}"
            self.end(result.status, result.duration_s)

    def chunk(self, desc: str, done: int, total: int) -> None:
        """Per-chunk callback (:mod:`fastcal.progress`): a bar after the stage label."""
        prefix = f"{self._label}: " if self._label else ""
        if total > 0 and done >= total:  # loop finished: back to the plain stage line
            if self._label:
                self._draw(f"{prefix}{self._title} ...")
            else:
                self.clear()
            return
        frac = 0.0 if total <= 0 else min(1.0, done / total)
        filled = int(round(frac * self.width))
        count = f"{done}/{total}" if total > 0 else f"{done}"
        self._draw(f"{prefix}{desc} [{'#' * filled}{'.' * (self.width - filled)}] {count}")

    @contextlib.contextmanager
    def step(self, name: str, title: str) -> Iterator[None]:
        """A status line around a block that is not a stage (e.g. the demo's simulation)."""
        t0 = time.perf_counter()
        self.begin(name, title)
        try:
            yield
        except BaseException:
            self.end("failed", time.perf_counter() - t0)
            raise
        self.end("ok", time.perf_counter() - t0)

    @contextlib.contextmanager
    def session(self) -> Iterator[TerminalProgress]:
        """Install :meth:`chunk` for :mod:`fastcal.progress` and tame the console log (see the
        class docstring); nested sessions are harmless."""
        from fastcal.progress import progress_callback

        clear = _ClearLine(self)
        handlers = [h for lg in (logging.getLogger(), logging.getLogger("fastcal")) for h in lg.handlers
                    if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
                    and getattr(h, "stream", None) is self.stream]
        levels = [h.level for h in handlers]
        for h in handlers:
            h.addFilter(clear)
            h.setLevel(max(h.level, logging.WARNING))
        try:
            with progress_callback(self.chunk):
                yield self
        finally:
            for h, lev in zip(handlers, levels, strict=True):
                h.removeFilter(clear)
                h.setLevel(lev)
            self.clear()


class _ClearLine(logging.Filter):
    """Clears the progress line before a console log record is written."""

    def __init__(self, progress: TerminalProgress) -> None:
        super().__init__()
        self.progress = progress

    def filter(self, record: logging.LogRecord) -> bool:
        self.progress.clear()
        return True


def terminal_progress(quiet: bool = False, verbose: bool | None = None) -> TerminalProgress | None:
    """The progress for :func:`run` (and ``fastcal demo``): a :class:`TerminalProgress` on
    stderr when it is a terminal, unless `quiet` or `verbose` (debug log lines would break the
    bars; `verbose` None: the root logger is at DEBUG); else None (plain log lines only)."""
    if verbose is None:
        verbose = logging.getLogger().getEffectiveLevel() < logging.INFO
    stream = sys.stderr
    isatty = getattr(stream, "isatty", None)
    if quiet or verbose or stream is None or not (callable(isatty) and isatty()):
        return None
    return TerminalProgress(stream)


# ----------------------------------------------------------------------------- CLI


def _csv(value: str) -> list[str]:
    return [s.strip() for s in value.split(",") if s.strip()]


def _pwv_mm(value: str) -> float:
    """``--pwv-mm``: a finite PWV >= 0 (mm)."""
    try:
        v = float(value)
    except ValueError:
        v = float("nan")
    if not (v >= 0 and v != float("inf")):
        raise argparse.ArgumentTypeError(f"--pwv-mm {value!r} is invalid; valid: a PWV >= 0 in mm, e.g. 1.5")
    return v


def _spw_id(value: str) -> int:
    """``--representative-spw``: a spw id (int >= 0); flagdata checks it is a science spw."""
    try:
        v = int(value)
    except ValueError:
        v = -1
    if v < 0:
        raise argparse.ArgumentTypeError(f"--representative-spw {value!r} is invalid; valid: a science spw "
                                         f"id (integer >= 0)")
    return v


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
                      help="do not flag TDM edge channels nor FDM baseband-edge channels")
    opts.add_argument("--no-online-flags", dest="flag_online", action="store_false", default=None,
                      help="do not apply the online flags (FLAG_CMD)")
    opts.add_argument("--no-lowtrans-flags", dest="flag_lowtrans", action="store_false", default=None,
                      help="do not flag science spws of low atmospheric transmission")
    opts.add_argument("--pwv-mm", dest="pwv_mm", type=_pwv_mm, default=None, metavar="MM",
                      help="zenith PWV (mm) for the low-transmission flags (default: ASDM_CALWVR, else "
                           "a WVR retrieval)")
    opts.add_argument("--representative-spw", dest="representative_spw", type=_spw_id, default=None,
                      metavar="SPW", help="representative science spw (low-transmission limit 0.05; the "
                                          "other spws 0.1)")
    # SUPPRESS: when absent, do not override fastcal's global -q/-v given before the subcommand
    opts.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                      help="warnings and errors only")
    opts.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                      help="debug logging")


_OPTION_KEYS = ("bandpass_field", "flux_field", "phase_field", "target_field", "check_field",
                "antpos_file", "refantignore", "flag_shadow", "flag_edgespw", "flux_csv",
                "flag_online", "flag_lowtrans", "pwv_mm", "representative_spw")


def cli_options(args: argparse.Namespace) -> dict[str, Any]:
    """Stage options (``ctx.options``) from parsed ``fastcal pipeline`` arguments; options not
    given are None (:func:`run` drops them, so a resumed run keeps the saved ones)."""
    options: dict[str, Any] = {k: getattr(args, k, None) for k in _OPTION_KEYS}
    if getattr(args, "setjy", None):
        from fastcal.pipeline.stages.setjy import parse_setjy_option

        options["setjy_models"] = [parse_setjy_option(t) for t in args.setjy]
    return options


def run_from_args(args: argparse.Namespace) -> int:
    """Run ``fastcal pipeline`` from parsed arguments; returns the exit code (see the module)."""
    from fastcal.pipeline.recipe import alma_recipe

    if getattr(args, "list_stages", False):
        recipe = alma_recipe()
        width = max(len(s.name) for s in recipe)
        for s in recipe:
            mark = ("   [not implemented in this version]" if not s.implemented
                    else "   [simplified: see docs/pipeline.md]" if s.simplified else "")
            print(f"{s.name:{width}s} {s.title}{mark}")
        return EXIT_OK
    if not args.vis or not args.out:
        from fastcal.errors import ParameterError

        raise ParameterError("give the Measurement Set and --out DIR (e.g. fastcal pipeline obs.ms --out obs_cal)")
    if getattr(args, "quiet", False):
        for h in logging.getLogger().handlers:
            h.setLevel(logging.WARNING)
    options = cli_options(args)
    quiet = getattr(args, "quiet", False)
    res = run(args.vis, args.out, stages=args.stages, start=args.start, stop=args.stop,
              restart=args.restart, options=options,
              progress=terminal_progress(quiet, verbose=bool(getattr(args, "verbose", False)) or None))
    ctx = res.context
    if not getattr(args, "quiet", False):
        width = max((len(r.stage) for r in res.results), default=0)
        for r in res.results:
            qa = "  ".join(f"{q.name}={q.score:.2f}({q.colour})" for q in r.qa)
            print(f"{r.stage:{width}s} {r.status:16s} {r.duration_s:7.2f} s  {qa}")
        print(f"state, logs and package in {ctx.out_dir}")
    if res.not_implemented:
        print(f"fastcal pipeline: incomplete: stage(s) {', '.join(res.not_implemented)} are not "
              f"implemented in this version; the data are NOT fully calibrated")
        return EXIT_INCOMPLETE
    return EXIT_OK
