"""Stages, their results, and the runner (selection, resume, timing, commands log).

A :class:`Stage` has a ``name`` and a ``run(ctx) -> StageResult``; it only reads from and
writes to the :class:`~fastcal.pipeline.context.Context`, and calls fastcal functions through
:meth:`Context.call` so that every call lands in the commands log.

:func:`run_stages` runs an ordered recipe:

* ``stages=[...]`` runs exactly those stages (re-running them if done before);
  ``start``/``stop`` run a contiguous range; with neither, a run *resumes*: stages whose last
  result is ``ok`` or ``skipped`` are not run again;
* after every stage the context is saved to ``<out>/fastcal_pipeline_state.json`` (atomic)
  and the commands log ``<out>/log/fastcal_commands.log`` is rewritten;
* a stage that modifies flags gets a flag backup ``fastcal_before_<stage>`` before its first
  run (via :mod:`fastcal.flagversions`); a re-run first restores that backup, so re-running a
  flagging stage does not stack flags;
* a stage raising :class:`~fastcal.errors.FastcalError` is recorded as ``failed`` and the
  runner raises :class:`StageError` naming the stage; the state keeps everything before it.

The commands log lists, per stage in recipe order, the fastcal calls of that stage's last run,
one literal Python call per line; :func:`replay_commands` runs them again (optionally on
another copy of the raw MS).
"""

from __future__ import annotations

import ast
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, ClassVar

from fastcal.errors import FastcalError, ParameterError
from fastcal.pipeline.context import Context, format_call, resolve_function
from fastcal.pipeline.qa import QAScore

__all__ = [
    "PlotSpec", "StageResult", "Stage", "PlaceholderStage", "LoopStage", "StageError", "run_stages",
    "STATE_FILE", "COMMANDS_LOG", "FULL_LOG", "load_context", "save_context",
    "write_commands_log", "read_commands_log", "replay_commands",
]

logger = logging.getLogger(__name__)

STATE_FILE = "fastcal_pipeline_state.json"
COMMANDS_LOG = os.path.join("log", "fastcal_commands.log")
FULL_LOG = os.path.join("log", "fastcal_pipeline.log")
_STATE_VERSION = 1

OK, FAILED, SKIPPED, NOT_IMPLEMENTED = "ok", "failed", "skipped", "not_implemented"
_DONE = (OK, SKIPPED)  # placeholders run again on resume (cheap; picks up new implementations)


class StageError(FastcalError, RuntimeError):
    """A pipeline stage failed; the message names the stage and the cause."""


@dataclass
class PlotSpec:
    """What to plot (the report module renders it; stages never draw)."""

    kind: str
    title: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class StageResult:
    """Outcome of one stage run.

    Attributes
    ----------
    stage : str
    status : {"ok", "failed", "skipped", "not_implemented"}
    inputs : dict
        Parameters the stage used.
    outputs : dict
        Products (paths, lists, numbers), JSON-serialisable.
    qa : list of QAScore
    plots : list of PlotSpec
    messages : list of str
        Notes, fallbacks and warnings for the weblog.
    started : str
        ISO UTC time the stage started.
    duration_s : float
    error : str
        The error message of a failed stage.
    """

    stage: str
    status: str = OK
    inputs: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    qa: list[QAScore] = field(default_factory=list)
    plots: list[PlotSpec] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    started: str = ""
    duration_s: float = 0.0
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["qa"] = [q.to_dict() for q in self.qa]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StageResult:
        d = dict(d)
        d["qa"] = [QAScore.from_dict(q) for q in d.get("qa", [])]
        d["plots"] = [PlotSpec(**p) for p in d.get("plots", [])]
        return cls(**d)


class Stage:
    """Base class of pipeline stages.

    Subclasses set ``name`` (unique in a recipe), ``title`` (one line) and implement
    :meth:`run`. ``modifies_flags = True`` gives the stage a flag backup (see the module
    docstring).
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    implemented: ClassVar[bool] = True
    modifies_flags: ClassVar[bool] = False
    #: True when the stage leaves out some of the ALMA pipeline's heuristics (it says which).
    simplified: ClassVar[bool] = False

    def run(self, ctx: Context) -> StageResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<stage {self.name}>"


class PlaceholderStage(Stage):
    """A recipe stage that this version of fastcal does not implement.

    Running it never pretends: it returns status ``not_implemented`` with a message saying
    what the stage would do and what it waits for, and logs a warning.
    """

    implemented = False

    def __init__(self, name: str, title: str, needs: str = "") -> None:
        self._name, self._title, self.needs = name, title, needs

    @property
    def name(self) -> str:  # type: ignore[override]
        return self._name

    @property
    def title(self) -> str:  # type: ignore[override]
        return self._title

    def run(self, ctx: Context) -> StageResult:
        msg = f"stage {self.name!r} ({self.title}) is not implemented in this version of fastcal"
        if self.needs:
            msg += f"; it needs {self.needs}"
        logger.warning("%s", msg)
        return StageResult(self.name, NOT_IMPLEMENTED, messages=[msg])


class LoopStage(Stage):
    """Run `body` stages in rounds until a round adds no new flags, or `max_rounds` rounds.

    This is the recipe's "inspect, flag, re-derive, re-apply" loop. Calls and flags made by
    the body are recorded under the loop's name; each round is recorded in
    ``outputs["rounds"]`` (round number, status of each body stage, visibilities newly
    flagged, QA). If a body stage is not implemented the loop stops and says so.
    """

    modifies_flags = True

    @property
    def simplified(self) -> bool:  # type: ignore[override]
        return any(s.simplified for s in self.body)

    def __init__(self, name: str, title: str, body: Sequence[Stage], max_rounds: int = 3) -> None:
        if max_rounds < 1:
            raise ParameterError(f"{name}: max_rounds={max_rounds!r} is invalid; valid: >= 1")
        if not body:
            raise ParameterError(f"{name}: the loop needs at least one body stage")
        self._name, self._title, self.body, self.max_rounds = name, title, list(body), max_rounds

    @property
    def name(self) -> str:  # type: ignore[override]
        return self._name

    @property
    def title(self) -> str:  # type: ignore[override]
        return self._title

    @property
    def implemented(self) -> bool:  # type: ignore[override]
        return all(s.implemented for s in self.body)

    def run(self, ctx: Context) -> StageResult:
        missing = [s.name for s in self.body if not s.implemented]
        if missing:
            msg = (f"stage {self.name!r} ({self.title}) is not implemented in this version of fastcal; "
                   f"it needs the stage(s) {', '.join(missing)}")
            logger.warning("%s", msg)
            return StageResult(self.name, NOT_IMPLEMENTED, messages=[msg])
        rounds: list[dict[str, Any]] = []
        last: list[StageResult] = []
        new = 0
        for i in range(1, self.max_rounds + 1):
            n_before = sum(f.n_new for f in ctx.flags)
            last = [s.run(ctx) for s in self.body]
            new = sum(f.n_new for f in ctx.flags) - n_before
            rounds.append(dict(round=i, stages={r.stage: r.status for r in last}, new_flags=new,
                               qa=[q.to_dict() for r in last for q in r.qa]))
            logger.info("%s round %d: %d visibilities newly flagged", self.name, i, new)
            if new == 0:
                break
        converged = new == 0
        msgs = [f"{len(rounds)} round(s); " + ("no new flags in the last round" if converged else
                f"still {new} newly flagged visibilities after max_rounds={self.max_rounds}")]
        return StageResult(self.name, OK, outputs=dict(rounds=rounds, converged=converged),
                           qa=[q for r in last for q in r.qa], messages=msgs + [m for r in last for m in r.messages])


# ----------------------------------------------------------------------------- state


def save_context(ctx: Context) -> str:
    """Write the context to ``<out>/fastcal_pipeline_state.json`` atomically; returns the path."""
    path = ctx.path(STATE_FILE)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"version": _STATE_VERSION, "context": ctx.to_dict()}, f, indent=1, default=_json_default)
    os.replace(tmp, path)
    return path


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON-serialisable")


def load_context(out_dir: str | os.PathLike) -> Context | None:
    """The context saved in `out_dir`, or None when there is no state file."""
    path = os.path.join(os.fspath(out_dir), STATE_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise ParameterError(f"{path}: the pipeline state cannot be read ({exc}); remove it to "
                             f"start afresh") from exc
    if d.get("version") != _STATE_VERSION:
        raise ParameterError(f"{path}: pipeline state version {d.get('version')!r}; this fastcal "
                             f"reads version {_STATE_VERSION}; remove it to start afresh")
    return Context.from_dict(d["context"])


# ----------------------------------------------------------------------------- commands log


def write_commands_log(ctx: Context, order: Sequence[str]) -> str:
    """Rewrite ``<out>/log/fastcal_commands.log`` from the context (stages in `order`)."""
    path = ctx.path(COMMANDS_LOG)
    lines = [f"# fastcal commands log for {ctx.vis}",
             "# one fastcal call per line; replay with fastcal.pipeline.replay_commands(<this file>)"]
    names = list(order) + [s for s in ctx.results if s not in order]
    for name in names:
        cmds = [c for c in ctx.commands if c.stage == name]
        res = ctx.results.get(name)
        if res is None:
            continue
        lines.append(f"# stage {name}: {res.get('status')} ({res.get('started', '')}, "
                     f"{res.get('duration_s', 0.0):.2f} s)")
        lines += [c.line() for c in cmds]
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)
    return path


def read_commands_log(path: str | os.PathLike) -> list[tuple[str, dict[str, Any]]]:
    """``(function, kwargs)`` of every call line of a commands log (nothing is evaluated)."""
    out = []
    with open(os.fspath(path), encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            where = f"{path}:{n}"
            try:
                call = ast.parse(s, mode="eval").body
            except SyntaxError as exc:
                raise ParameterError(f"{where}: not a Python call: {exc.msg}") from exc
            if not isinstance(call, ast.Call) or call.args:
                raise ParameterError(f"{where}: expected 'fastcal.module.function(key=value, ...)'")
            name = ast.unparse(call.func)
            try:
                kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
            except ValueError as exc:
                raise ParameterError(f"{where}: arguments must be literals") from exc
            out.append((name, kwargs))
    return out


def replay_commands(path: str | os.PathLike, vis: str | None = None) -> list[Any]:
    """Run every call of a commands log in order; `vis` replaces each call's ``vis=``.

    Returns the list of return values.
    """
    calls = read_commands_log(path)
    results = []
    for name, kwargs in calls:
        func = resolve_function(name)
        if vis is not None and "vis" in kwargs:
            kwargs["vis"] = os.path.abspath(vis)
        logger.info("replay %s", format_call(name, kwargs))
        results.append(func(**kwargs))
    return results


# ----------------------------------------------------------------------------- runner


def _select(recipe: Sequence[Stage], ctx: Context, stages: Sequence[str] | None, start: str | None,
            stop: str | None) -> list[Stage]:
    names = [s.name for s in recipe]
    for label, value in (("start", start), ("stop", stop)):
        if value is not None and value not in names:
            raise ParameterError(f"{label}={value!r} is not a stage; valid: {', '.join(names)}")
    if stages:
        bad = [s for s in stages if s not in names]
        if bad:
            raise ParameterError(f"stages={list(stages)!r}: {', '.join(bad)} not in the recipe; "
                                 f"valid: {', '.join(names)}")
        if start is not None or stop is not None:
            raise ParameterError("give either stages= or start=/stop=, not both")
        return [s for s in recipe if s.name in set(stages)]
    if start is not None or stop is not None:
        i0 = names.index(start) if start is not None else 0
        i1 = names.index(stop) if stop is not None else len(names) - 1
        if i1 < i0:
            raise ParameterError(f"stop={stop!r} comes before start={start!r} in the recipe")
        return list(recipe[i0:i1 + 1])
    # resume: skip stages already done
    return [s for s in recipe if ctx.results.get(s.name, {}).get("status") not in _DONE]


def _flag_backup(ctx: Context, stage: Stage) -> str:
    """Save the flags before `stage` as ``fastcal_before_<stage>``; on a re-run, first put the
    saved flags back (and save them again, so the commands log stays complete)."""
    from fastcal.flagversions import (
        delete_flag_version,
        list_flag_versions,
        restore_flags,
        save_flags,
    )

    name = f"fastcal_before_{stage.name}"
    if name in {v.name for v in list_flag_versions(ctx.vis)}:
        logger.info("restoring flag version %s before re-running %s", name, stage.name)
        restore_flags(ctx.vis, name)
        delete_flag_version(ctx.vis, name)
        ctx.refresh()
    ctx.call(save_flags, vis=ctx.vis, versionname=name,
             comment=f"fastcal pipeline: flags before stage {stage.name}")
    return name


def run_stages(ctx: Context, recipe: Sequence[Stage], *, stages: Sequence[str] | None = None,
               start: str | None = None, stop: str | None = None,
               progress: Callable[[int, int, Stage, StageResult | None], None] | None = None,
               ) -> list[StageResult]:
    """Run (part of) a recipe; see the module docstring.

    `progress(k, n, stage, result)` is called before each stage (result None) and after it
    (also when it failed: status ``failed``, before the error is raised).

    Returns
    -------
    list of StageResult
        The results of the stages run now, in order.

    Raises
    ------
    ParameterError
        Unknown stage names, or an inconsistent selection.
    StageError
        A stage failed (its result, with the error, is saved in the state first).
    """
    names = [s.name for s in recipe]
    if len(set(names)) != len(names):
        raise ParameterError(f"recipe has duplicate stage names: {names}")
    todo = _select(recipe, ctx, stages, start, stop)
    done: list[StageResult] = []
    for k, stage in enumerate(todo, start=1):
        ctx.current_stage = stage.name
        ctx.forget_stage(stage.name)
        t0 = time.perf_counter()
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        logger.info("stage %d/%d %s: %s", k, len(todo), stage.name, stage.title)
        if progress is not None:
            progress(k, len(todo), stage, None)
        try:
            if stage.modifies_flags and stage.implemented:
                _flag_backup(ctx, stage)
            result = stage.run(ctx)
        except FastcalError as exc:
            result = StageResult(stage.name, FAILED, error=str(exc), started=started,
                                 duration_s=time.perf_counter() - t0)
            _finish(ctx, result, names)
            logger.error("stage %s failed: %s", stage.name, exc)
            _report(progress, k, len(todo), stage, result)
            raise StageError(f"stage {stage.name!r} failed: {exc} (state saved in {ctx.out_dir}; "
                             f"fix the cause and run again to resume)") from exc
        except Exception as exc:  # a bug: record it, then let the traceback through
            result = StageResult(stage.name, FAILED, error=f"{type(exc).__name__}: {exc}",
                                 started=started, duration_s=time.perf_counter() - t0)
            _finish(ctx, result, names)
            _report(progress, k, len(todo), stage, result)
            raise
        result.started, result.duration_s = started, time.perf_counter() - t0
        _finish(ctx, result, names)
        logger.info("stage %s: %s (%.2f s)%s", stage.name, result.status, result.duration_s,
                    "".join(f"; QA {q.name}={q.score:.2f}" for q in result.qa))
        done.append(result)
        if progress is not None:
            progress(k, len(todo), stage, result)
    ctx.current_stage = ""
    return done


def _report(progress, k: int, n: int, stage: Stage, result: StageResult) -> None:
    """Tell `progress` a stage failed; its own errors must not hide the stage's."""
    if progress is None:
        return
    try:
        progress(k, n, stage, result)
    except Exception:  # noqa: BLE001
        logger.debug("progress callback failed", exc_info=True)


def _finish(ctx: Context, result: StageResult, order: Sequence[str]) -> None:
    ctx.results.pop(result.stage, None)  # keep dict order = latest run order
    ctx.results[result.stage] = result.to_dict()
    save_context(ctx)
    write_commands_log(ctx, order)
