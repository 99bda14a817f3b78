"""ALMA ``*.calapply.txt`` files: parse, write and apply.

The ALMA pipeline delivers, beside the calibration tables, a text file listing the
``applycal`` calls that calibrate the MS (reference section 8)::

    # Apply file for uid___A002_X1.ms
    applycal(vis='uid___A002_X1.ms', field='0', intent='CALIBRATE_BANDPASS#ON_SOURCE', spw='17,19',
             antenna='0~11', gaintable=['a.tsyscal.tbl', 'a.bcal.tbl'], gainfield=['', ''],
             spwmap=[[9, 9], []], interp=['linear,linear', 'linear,linear'], calwt=[True, False])

Each line is parsed *safely*: the argument list is read with :func:`ast.parse` and every
keyword value with :func:`ast.literal_eval` (literals only: strings, numbers, booleans, lists);
nothing is ever evaluated. Relative table paths are resolved against the directory of the
calapply file (then the current directory).
"""

from __future__ import annotations

import ast
import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fastcal.errors import ParameterError

__all__ = [
    "ApplycalCall",
    "apply_calapply",
    "format_calapply",
    "parse_calapply",
    "read_calapply",
    "write_calapply",
]

logger = logging.getLogger(__name__)

#: Keywords an applycal line may carry (CASA applycal's parameters).
KNOWN_KEYS = frozenset(
    {
        "vis",
        "field",
        "spw",
        "intent",
        "selectdata",
        "timerange",
        "uvrange",
        "antenna",
        "scan",
        "observation",
        "msselect",
        "docallib",
        "callib",
        "gaintable",
        "gainfield",
        "interp",
        "spwmap",
        "calwt",
        "parang",
        "applymode",
        "flagbackup",
    }
)
_SELECTIONS = ("field", "spw", "intent", "antenna", "scan", "timerange")


@dataclass
class ApplycalCall:
    """One ``applycal(...)`` line.

    Attributes
    ----------
    vis : str
    field, spw, intent, antenna, scan, timerange : str
        Data selection.
    gaintable, gainfield, interp : list of str
    spwmap : list of list of int
    calwt : list of bool
    extra : dict
        Other keywords found (e.g. ``parang``, ``applymode``), kept for the writer.
    line : int
        Line number in the file (1-based, 0 if built in code).
    """

    vis: str = ""
    field: str = ""
    spw: str = ""
    intent: str = ""
    antenna: str = ""
    scan: str = ""
    timerange: str = ""
    gaintable: list[str] = dataclasses.field(default_factory=list)
    gainfield: list[str] = dataclasses.field(default_factory=list)
    interp: list[str] = dataclasses.field(default_factory=list)
    spwmap: list[list[int]] = dataclasses.field(default_factory=list)
    calwt: list[bool] = dataclasses.field(default_factory=lambda: [True])
    extra: dict = dataclasses.field(default_factory=dict)
    line: int = 0

    def to_line(self) -> str:
        """The call as one line of a calapply file (the pipeline's ``as_applycal`` layout)."""
        parts = [
            f"vis={self.vis!r}",
            f"field={self.field!r}",
            f"intent={self.intent!r}",
            f"spw={self.spw!r}",
            f"antenna={self.antenna!r}",
        ]
        if self.scan:
            parts.append(f"scan={self.scan!r}")
        if self.timerange:
            parts.append(f"timerange={self.timerange!r}")
        parts += [
            f"gaintable={list(self.gaintable)!r}",
            f"gainfield={list(self.gainfield)!r}",
            f"spwmap={[list(m) for m in self.spwmap]!r}",
            f"interp={list(self.interp)!r}",
            f"calwt={list(self.calwt)!r}",
        ]
        parts += [f"{k}={v!r}" for k, v in self.extra.items()]
        return f"applycal({', '.join(parts)})"


def _as_str_list(value: Any, key: str, where: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ParameterError(
        f"{where}: {key}={value!r} is invalid; valid: a string or a list of strings"
    )


def _as_spwmap(value: Any, where: str) -> list[list[int]]:
    if not isinstance(value, (list, tuple)):
        raise ParameterError(f"{where}: spwmap={value!r} is invalid; valid: a list of int lists")
    if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return [list(value)] if value else []
    out = []
    for m in value:
        if not isinstance(m, (list, tuple)) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in m
        ):
            raise ParameterError(
                f"{where}: spwmap entry {m!r} is invalid; valid: a list of integers"
            )
        out.append(list(m))
    return out


def _as_bool_list(value: Any, where: str) -> list[bool]:
    if isinstance(value, bool):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, bool) for v in value):
        return list(value)
    raise ParameterError(
        f"{where}: calwt={value!r} is invalid; valid: True/False or a list of them"
    )


def _parse_line(text: str, where: str) -> ApplycalCall:
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ParameterError(f"{where}: not a valid applycal(...) call: {exc.msg}") from exc
    call = tree.body
    if not (
        isinstance(call, ast.Call)
        and isinstance(call.func, ast.Name)
        and call.func.id == "applycal"
    ):
        raise ParameterError(
            f"{where}: expected a line 'applycal(key=value, ...)', got {text.strip()[:60]!r}"
        )
    if call.args:
        raise ParameterError(f"{where}: applycal arguments must be given as key=value")
    kw: dict[str, Any] = {}
    for k in call.keywords:
        if k.arg is None:
            raise ParameterError(f"{where}: '**' arguments are not allowed")
        try:
            kw[k.arg] = ast.literal_eval(k.value)
        except (ValueError, SyntaxError, TypeError) as exc:
            raise ParameterError(
                f"{where}: the value of {k.arg} is not a literal (only strings, numbers, "
                f"booleans and lists are allowed)"
            ) from exc
    unknown = sorted(set(kw) - KNOWN_KEYS)
    if unknown:
        raise ParameterError(
            f"{where}: unknown applycal keyword(s) {', '.join(unknown)}; valid: "
            f"{', '.join(sorted(KNOWN_KEYS))}"
        )
    out = ApplycalCall(line=0)
    for key in ("vis",) + _SELECTIONS:
        if key in kw:
            v = kw.pop(key)
            if isinstance(v, int) and not isinstance(v, bool):
                v = str(v)
            if not isinstance(v, str):
                raise ParameterError(f"{where}: {key}={v!r} is invalid; valid: a string")
            setattr(out, key, v)
    out.gaintable = _as_str_list(kw.pop("gaintable", []), "gaintable", where)
    out.gainfield = _as_str_list(kw.pop("gainfield", []), "gainfield", where)
    out.interp = _as_str_list(kw.pop("interp", []), "interp", where)
    out.spwmap = _as_spwmap(kw.pop("spwmap", []), where)
    out.calwt = _as_bool_list(kw.pop("calwt", [True]), where)
    if not out.gaintable:
        raise ParameterError(f"{where}: gaintable is empty")
    out.extra = kw
    return out


def parse_calapply(text: str, source: str = "<calapply>") -> list[ApplycalCall]:
    """Parse the text of a calapply file: ``#`` comments and blank lines are skipped, every
    other line must be one ``applycal(...)`` call (a call may continue over lines while its
    parentheses are open).

    Raises
    ------
    ParameterError
        A line that is not a literal-only applycal call (the message names the line).
    """
    calls: list[ApplycalCall] = []
    buf, start = "", 0
    for n, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if not buf and (not s or s.startswith("#")):
            continue
        if not buf:
            start = n
        buf += (" " if buf else "") + s
        if buf.count("(") > buf.count(")"):
            continue
        c = _parse_line(buf, f"{source}:{start}")
        c.line = start
        calls.append(c)
        buf = ""
    if buf:
        raise ParameterError(f"{source}:{start}: unterminated applycal( ... call")
    return calls


def read_calapply(path: str | os.PathLike) -> list[ApplycalCall]:
    """Parse a calapply file (see :func:`parse_calapply`)."""
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise ParameterError(f"calapply file {p} does not exist")
    with open(p, encoding="utf-8") as f:
        return parse_calapply(f.read(), p)


def format_calapply(calls: Sequence[ApplycalCall], vis: str = "") -> str:
    """Text of a calapply file: ``# Apply file for <vis>`` then one line per call."""
    vis = vis or (calls[0].vis if calls else "")
    return "".join([f"# Apply file for {vis}\n"] + [c.to_line() + "\n" for c in calls])


def write_calapply(path: str | os.PathLike, calls: Sequence[ApplycalCall], vis: str = "") -> str:
    """Write a calapply file atomically; returns its path."""
    p = os.fspath(path)
    tmp = f"{p}.fastcal-tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(format_calapply(calls, vis))
    os.replace(tmp, p)
    return p


def _resolve(table: str, base: str) -> str:
    if os.path.isabs(table):
        return table
    for d in (base, os.getcwd()):
        cand = os.path.join(d, table)
        if os.path.exists(cand):
            return cand
    return os.path.join(base, table)


def apply_calapply(
    vis: str | os.PathLike,
    calapply: str | os.PathLike | Sequence[ApplycalCall],
    *,
    applymode: str = "calflag",
    flagbackup: bool = True,
    chunk_bytes: int | None = None,
    n_threads: int | None = None,
) -> list:
    """Apply every call of a calapply file to `vis` (its own ``vis=`` is only checked by name).

    All calls are validated (tables read, spws, fields) before the first one writes, and the
    flags are backed up once, before the first call.

    Returns
    -------
    list of ApplyReport
        One per call.
    """
    from fastcal.apply import applycal  # local: apply imports this module for callib=
    from fastcal.flagversions import save_flags
    from fastcal.interp import prepare_gaintables
    from fastcal.ms import open_ms

    if isinstance(calapply, (str, os.PathLike)):
        base = os.path.dirname(os.path.abspath(os.fspath(calapply)))
        calls = read_calapply(calapply)
        src = os.fspath(calapply)
    else:
        base, calls, src = os.getcwd(), list(calapply), "<calls>"
    if not calls:
        raise ParameterError(f"{src} lists no applycal calls")
    info = open_ms(vis)
    name = os.path.basename(info.path.rstrip("/"))
    for c in calls:
        if c.vis and os.path.basename(c.vis.rstrip("/")) != name:
            logger.warning("%s:%d is for vis=%r; applying it to %s", src, c.line, c.vis, info.path)
    resolved = [[_resolve(t, base) for t in c.gaintable] for c in calls]
    for c, tabs in zip(
        calls, resolved, strict=False
    ):  # validate everything before writing anything
        prepare_gaintables(info, tabs, c.gainfield, c.interp, c.spwmap, c.calwt)
    reports = []
    backup_done = not flagbackup
    if not backup_done and str(applymode).lower() in (
        "",
        "calflag",
        "calflagstrict",
        "flagonly",
        "flagonlystrict",
    ):
        first = save_flags(
            info, comment=f"fastcal applycal: flags before applying {os.path.basename(src)}"
        )
        backup_done = True
    else:
        first = None
    for c, tabs in zip(calls, resolved, strict=False):
        r = applycal(
            info.path,
            tabs,
            gainfield=c.gainfield,
            interp=c.interp,
            spwmap=c.spwmap,
            calwt=c.calwt,
            applymode=applymode,
            field=c.field,
            spw=c.spw,
            intent=c.intent,
            scan=c.scan,
            antenna=c.antenna,
            timerange=c.timerange,
            flagbackup=False,
            chunk_bytes=chunk_bytes,
            n_threads=n_threads,
        )
        reports.append(r)
    if reports and first:
        reports[0].flag_version = first
    return reports
