"""The pipeline :class:`Context`: everything stages share, and what a resumed run reloads.

A stage reads from and writes to the context only (style guide, "A pipeline stage and the
CLI"). The context holds:

* the MS summary and the calibration roles of its fields (``roles``) and spws;
* the ranked reference-antenna list (``refant``);
* the calibration library (``callib``): registered caltables with their apply parameters,
  which can be written as an ALMA ``*.calapply.txt`` (via :mod:`fastcal.calapply`);
* the flags the pipeline added (``flags``; the package writes them as a flag template);
* the stage results with their QA scores (``results``);
* the commands log (``commands``): every fastcal call a stage made, with its parameters, in
  a form :func:`fastcal.pipeline.stage.replay_commands` can run again.

Everything is JSON-serialisable (:meth:`Context.to_dict`), so the runner can save the context
after each stage and resume after a failure.
"""

from __future__ import annotations

import ast
import importlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from fastcal.errors import ParameterError

__all__ = ["CalEntry", "CalLibrary", "CommandRecord", "Context", "FlagRecord", "format_call",
           "format_calapply_text", "APPLY_INTENTS", "ROLE_APPLY_INTENT"]

logger = logging.getLogger(__name__)

#: Intents (glob) that get their own applycal line in a calapply file, in pipeline order.
APPLY_INTENTS: tuple[str, ...] = (
    "CALIBRATE_BANDPASS#ON_SOURCE", "CALIBRATE_FLUX#ON_SOURCE", "CALIBRATE_AMPLI#ON_SOURCE",
    "CALIBRATE_PHASE#ON_SOURCE", "OBSERVE_CHECK_SOURCE#ON_SOURCE", "OBSERVE_TARGET#ON_SOURCE",
)


#: The intent a field's role stands for when the MS has no intents (roles from the options).
ROLE_APPLY_INTENT: dict[str, str] = {
    "bandpass": "CALIBRATE_BANDPASS#ON_SOURCE", "flux": "CALIBRATE_FLUX#ON_SOURCE",
    "phase": "CALIBRATE_PHASE#ON_SOURCE", "check": "OBSERVE_CHECK_SOURCE#ON_SOURCE",
    "target": "OBSERVE_TARGET#ON_SOURCE",
}


# ----------------------------------------------------------------------------- records


@dataclass
class CommandRecord:
    """One fastcal call made by a stage: ``function`` is the dotted name (``fastcal.x.f``)."""

    stage: str
    function: str
    kwargs: dict[str, Any]

    def line(self) -> str:
        return format_call(self.function, self.kwargs)


@dataclass
class FlagRecord:
    """Flags a stage added: one flag-template line (CASA flagdata list syntax) and counts.

    ``n_new`` counts newly flagged visibilities (row x chan x corr elements) out of
    ``n_total`` considered by the agent.
    """

    stage: str
    agent: str
    command: str
    n_new: int
    n_total: int

    @property
    def fraction(self) -> float:
        return self.n_new / self.n_total if self.n_total else 0.0


@dataclass
class CalEntry:
    """A registered calibration table and how to apply it.

    Attributes
    ----------
    name : str
        Role label, unique in the library (``"tsys"``, ``"wvr"``, ``"bandpass"``...).
    path : str
        Caltable path.
    stage : str
        Stage that registered it.
    interp : str
        CASA ``interp`` string (``"linear"``, ``"nearest"``, ``"linear,linear"``...).
    gainfield : str
        CASA ``gainfield`` ("" = all, "nearest", or field ids/names).
    spwmap : list of int
        CASA ``spwmap`` for this table ([] = identity).
    calwt : bool
        Calibrate the weights.
    intents : list of str
        Apply only to scans with one of these intents (globs; [] = all).
    """

    name: str
    path: str
    stage: str
    interp: str = "linear"
    gainfield: str = ""
    spwmap: list[int] = field(default_factory=list)
    calwt: bool = True
    intents: list[str] = field(default_factory=list)

    def applies_to(self, intent: str) -> bool:
        import fnmatch

        return not self.intents or any(fnmatch.fnmatchcase(intent, p) for p in self.intents)


class CalLibrary:
    """The ordered list of registered caltables (CASA application order = registration order)."""

    def __init__(self, entries: Sequence[CalEntry] = ()) -> None:
        self.entries: list[CalEntry] = list(entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self):
        return iter(self.entries)

    def add(self, entry: CalEntry) -> None:
        """Register `entry`; an entry with the same name is replaced in place."""
        for i, e in enumerate(self.entries):
            if e.name == entry.name:
                self.entries[i] = entry
                return
        self.entries.append(entry)

    def remove_stage(self, stage: str) -> None:
        """Drop every entry a stage registered (before the stage is re-run)."""
        self.entries = [e for e in self.entries if e.stage != stage]

    def get(self, name: str) -> CalEntry:
        for e in self.entries:
            if e.name == name:
                return e
        raise ParameterError(f"no caltable {name!r} registered; registered: "
                             f"{', '.join(e.name for e in self.entries) or 'none'}")

    def for_intent(self, intent: str) -> list[CalEntry]:
        """Entries that apply to data with `intent`, in application order."""
        return [e for e in self.entries if e.applies_to(intent)]

    def applycal_args(self, intent: str) -> dict[str, list]:
        """``gaintable``/``gainfield``/``interp``/``spwmap``/``calwt`` lists for `intent`."""
        es = self.for_intent(intent)
        return dict(gaintable=[e.path for e in es], gainfield=[e.gainfield for e in es],
                    interp=[e.interp for e in es], spwmap=[list(e.spwmap) for e in es],
                    calwt=[bool(e.calwt) for e in es])

    def calapply_calls(self, vis: str, field_intents: dict[int, list[str]], spw: str,
                       relative_to: str | None = None, no_intent_fields: Sequence[int] = ()) -> list:
        """One :class:`fastcal.calapply.ApplycalCall` per field and set of tables.

        Intents of one field that get the same tables share a line (``intent='A,B'``, CASA's
        "any of" selection); intents outside :data:`APPLY_INTENTS` get no line. A field in
        `no_intent_fields` (its scans have no intents in the MS; `field_intents` gives the
        intents of its role) gets one line without intent selection (``intent=''``), with the
        tables of its first intent in :data:`APPLY_INTENTS` order.

        Parameters
        ----------
        vis : str
            MS name written into each line (the base name, as the pipeline does).
        field_intents : dict
            Field id -> the intents (``OBS_MODE`` tokens) of its scans.
        spw : str
            Spw selection of every line (the science spws).
        relative_to : str, optional
            Write table paths relative to this directory (the package's calibration/).
        """
        ApplycalCall = _applycal_call_class()
        calls = []
        for fid in sorted(field_intents):
            groups: dict[str, list[str]] = {}  # same tables -> one line, intents joined by ","
            args_of: dict[str, dict] = {}
            for intent in field_intents[fid]:
                if intent not in APPLY_INTENTS:
                    continue
                args = self.applycal_args(intent)
                if not args["gaintable"]:
                    continue
                key = repr(args)
                groups.setdefault(key, []).append(intent)
                args_of[key] = args
            if fid in set(no_intent_fields) and groups:
                first = min(groups, key=lambda k: min(APPLY_INTENTS.index(i) for i in groups[k]))
                if len(groups) > 1:
                    logger.warning("field %d has no scan intents and roles with different tables (%s); "
                                   "applying the tables of %s", fid, "; ".join(",".join(v) for v in
                                                                              groups.values()),
                                   ",".join(groups[first]))
                groups = {first: [""]}
            for key, intents in groups.items():
                args = args_of[key]
                if relative_to:
                    args["gaintable"] = [os.path.relpath(p, relative_to) if os.path.isabs(p) else p
                                         for p in args["gaintable"]]
                calls.append(ApplycalCall(vis=vis, field=str(fid), intent=",".join(i for i in intents if i),
                                          spw=spw, **args))
        return calls

    def to_list(self) -> list[dict]:
        return [asdict(e) for e in self.entries]

    @classmethod
    def from_list(cls, items: Sequence[dict]) -> CalLibrary:
        return cls([CalEntry(**d) for d in items])


# ----------------------------------------------------------------------------- calapply


@dataclass
class _ApplyLine:
    """Fallback for :class:`fastcal.calapply.ApplycalCall` (same fields and line layout),
    used only when that module cannot be imported."""

    vis: str = ""
    field: str = ""
    intent: str = ""
    spw: str = ""
    antenna: str = ""
    gaintable: list = None  # type: ignore[assignment]
    gainfield: list = None  # type: ignore[assignment]
    interp: list = None  # type: ignore[assignment]
    spwmap: list = None  # type: ignore[assignment]
    calwt: list = None  # type: ignore[assignment]

    def to_line(self) -> str:
        keys = ("vis", "field", "intent", "spw", "antenna", "gaintable", "gainfield", "spwmap",
                "interp", "calwt")
        return f"applycal({', '.join(f'{k}={getattr(self, k)!r}' for k in keys)})"


def _applycal_call_class():
    try:
        from fastcal.calapply import ApplycalCall
    except Exception as exc:  # the applycal helper's module is missing or broken
        logger.warning("fastcal.calapply unavailable (%s); using the pipeline's own calapply writer", exc)
        return _ApplyLine
    return ApplycalCall


def format_calapply_text(calls: Sequence[Any], vis: str) -> str:
    """Text of an ALMA ``*.calapply.txt``: ``# Apply file for <vis>`` then one line per call."""
    try:
        from fastcal.calapply import format_calapply
    except Exception:
        return "".join([f"# Apply file for {vis}\n"] + [c.to_line() + "\n" for c in calls])
    return format_calapply(calls, vis)


# ----------------------------------------------------------------------------- calls


def _check_literal(value: Any, where: str) -> None:
    text = repr(value)
    try:
        back = ast.literal_eval(text)
    except (ValueError, SyntaxError) as exc:
        raise ParameterError(f"{where}={text[:60]} is not a literal; commands must have literal "
                             f"arguments (str, number, bool, None, list, dict) to be replayable") from exc
    if back != value:
        raise ParameterError(f"{where}={text[:60]} does not survive repr/literal_eval")


def format_call(function: str, kwargs: dict[str, Any]) -> str:
    """``fastcal.mod.func(key=value, ...)`` with literal values (one line)."""
    return f"{function}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"


def _function_name(func: Callable) -> str:
    mod = getattr(func, "__module__", "") or ""
    name = getattr(func, "__qualname__", getattr(func, "__name__", ""))
    if not mod.startswith("fastcal") or "." in name or "<" in name:
        raise ParameterError(f"{func!r} is not a module-level fastcal function; only those can be "
                             f"recorded in the commands log")
    return f"{mod}.{name}"


def resolve_function(dotted: str) -> Callable:
    """The callable named by a commands-log line (only ``fastcal.*`` names are accepted)."""
    if not dotted.startswith("fastcal."):
        raise ParameterError(f"{dotted!r}: only fastcal functions can be replayed")
    mod, _, name = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError) as exc:
        raise ParameterError(f"{dotted!r} does not name a fastcal function: {exc}") from exc


# ----------------------------------------------------------------------------- context


@dataclass
class Context:
    """State shared by the pipeline stages (see the module docstring).

    Attributes
    ----------
    vis : str
        Absolute path of the MS being calibrated.
    out_dir : str
        Absolute path of the output (package) directory.
    options : dict
        User options (role overrides, antpos file, ...), JSON-serialisable.
    ms : dict
        MS summary written by importdata (antennas, spws, fields, time on source...).
    roles : dict
        Role -> field names (``bandpass``, ``flux``, ``phase``, ``target``, ``check``...).
    roles_source : str
        ``"intents"`` or ``"options"``.
    science_spws, tsys_spws, wvr_spws : list of int
    refant : list of str
        Ranked reference antennas, best first.
    results : dict
        Stage name -> :class:`~fastcal.pipeline.stage.StageResult` (as dicts), run order.
    """

    vis: str
    out_dir: str
    options: dict[str, Any] = field(default_factory=dict)
    ms: dict[str, Any] = field(default_factory=dict)
    roles: dict[str, list[str]] = field(default_factory=dict)
    roles_source: str = ""
    science_spws: list[int] = field(default_factory=list)
    tsys_spws: list[int] = field(default_factory=list)
    wvr_spws: list[int] = field(default_factory=list)
    refant: list[str] = field(default_factory=list)
    callib: CalLibrary = field(default_factory=CalLibrary)
    flags: list[FlagRecord] = field(default_factory=list)
    commands: list[CommandRecord] = field(default_factory=list)
    results: dict[str, dict] = field(default_factory=dict)
    current_stage: str = ""
    _info: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.vis = os.path.abspath(os.fspath(self.vis))
        self.out_dir = os.path.abspath(os.fspath(self.out_dir))

    # ---- the MS
    @property
    def info(self):
        """:class:`fastcal.ms.MSInfo` of `vis`, re-read after :meth:`refresh`."""
        if self._info is None:
            from fastcal.ms import open_ms

            self._info = open_ms(self.vis)
        return self._info

    def refresh(self) -> None:
        """Forget the cached MSInfo (call after writing into the MS)."""
        self._info = None

    @property
    def vis_name(self) -> str:
        return os.path.basename(self.vis.rstrip("/"))

    def path(self, *parts: str) -> str:
        """A path inside the output directory (parent directories created)."""
        p = os.path.join(self.out_dir, *parts)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        return p

    def tables(self, *names: str) -> dict[str, list]:
        """applycal/pre-apply arguments (``gaintable``, ``gainfield``, ``interp``, ``spwmap``,
        ``calwt``) of the registered tables `names`, in that order; unknown names raise."""
        es = [self.callib.get(n) for n in names]
        return dict(gaintable=[e.path for e in es], gainfield=[e.gainfield for e in es],
                    interp=[e.interp for e in es], spwmap=[list(e.spwmap) for e in es],
                    calwt=[bool(e.calwt) for e in es])

    def preapply(self, *names: str) -> dict[str, list]:
        """Solver pre-apply arguments (``gaintable``, ``gainfield``, ``interp``, ``spwmap``)
        of the registered tables `names`, in that order (:meth:`tables` without ``calwt``)."""
        args = self.tables(*names)
        args.pop("calwt")
        return args

    def register_table(self, name: str, path: str, **apply: Any) -> CalEntry:
        """Register a caltable written by the current stage (see :class:`CalEntry`)."""
        entry = CalEntry(name, os.path.abspath(path), self.current_stage, **apply)
        self.callib.add(entry)
        return entry

    def fields_with_role(self, role: str) -> list[str]:
        return list(self.roles.get(role, []))

    def field_intents(self) -> tuple[dict[int, list[str]], list[int]]:
        """Field id -> intents of its scans, and the fields whose scans have no intents.

        A field without intents in the MS (a raw MS, roles given as options) gets the intents
        of its roles (:data:`ROLE_APPLY_INTENT`), so that the tables registered for those
        intents apply to it.
        """
        info = self.info
        out: dict[int, list[str]] = {}
        for s in info.scans:
            for f in s.field_ids:
                lst = out.setdefault(int(f), [])
                lst += [i for i in s.intents if i not in lst]
        bare: list[int] = []
        names = list(info.field_names)
        for role, fields in self.roles.items():
            intent = ROLE_APPLY_INTENT.get(role)
            for name in fields:
                if intent is None or name not in names:
                    continue
                fid = names.index(name)
                if out.get(fid) and fid not in bare:
                    continue
                if fid not in bare:
                    bare.append(fid)
                lst = out.setdefault(fid, [])
                if intent not in lst:
                    lst.append(intent)
        return out, sorted(bare)

    def calapply_calls(self, lib: CalLibrary | None = None, relative_to: str | None = None) -> list:
        """The applycal calls of `lib` (default the context's library) for every field and the
        science spws (:meth:`CalLibrary.calapply_calls`; fields without scan intents get a line
        without intent selection, chosen by their roles)."""
        intents, bare = self.field_intents()
        return (lib if lib is not None else self.callib).calapply_calls(
            self.vis_name, intents, ",".join(map(str, self.science_spws)), relative_to=relative_to,
            no_intent_fields=bare)

    # ---- recorded calls
    def call(self, func: Callable, **kwargs: Any) -> Any:
        """Call a fastcal function and record it in the commands log.

        Every argument must be a literal (paths, strings, numbers, lists, dicts), so that
        the log can be replayed; a CalTable must be written and passed by path.
        """
        name = _function_name(func)
        for k, v in kwargs.items():
            _check_literal(v, f"{name}: {k}")
        self.commands.append(CommandRecord(self.current_stage, name, dict(kwargs)))
        logger.debug("call %s", format_call(name, kwargs))
        return func(**kwargs)

    def add_flags(self, agent: str, command: str, n_new: int, n_total: int) -> None:
        self.flags.append(FlagRecord(self.current_stage, agent, command, int(n_new), int(n_total)))

    def forget_stage(self, stage: str) -> None:
        """Drop what `stage` recorded (commands, flags, tables) before it runs again."""
        self.commands = [c for c in self.commands if c.stage != stage]
        self.flags = [f for f in self.flags if f.stage != stage]
        self.callib.remove_stage(stage)

    # ---- serialisation
    def to_dict(self) -> dict[str, Any]:
        return dict(
            vis=self.vis, out_dir=self.out_dir, options=self.options, ms=self.ms, roles=self.roles,
            roles_source=self.roles_source, science_spws=self.science_spws, tsys_spws=self.tsys_spws,
            wvr_spws=self.wvr_spws, refant=self.refant, callib=self.callib.to_list(),
            flags=[asdict(f) for f in self.flags], commands=[asdict(c) for c in self.commands],
            results=self.results,
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Context:
        d = dict(d)
        callib = CalLibrary.from_list(d.pop("callib", []))
        flags = [FlagRecord(**f) for f in d.pop("flags", [])]
        commands = [CommandRecord(**c) for c in d.pop("commands", [])]
        known = {f for f in cls.__dataclass_fields__ if not f.startswith("_")}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ParameterError(f"pipeline state has unknown keys {unknown}; it was written by "
                                 f"another fastcal version")
        return cls(callib=callib, flags=flags, commands=commands, **d)
