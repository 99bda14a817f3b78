"""Static HTML weblog of a pipeline run: an overview page and one page per stage.

Layout written under ``out_dir``::

    index.html              overview: stage table with colour-coded QA scores
    style.css               the one stylesheet
    stage01.html ...        one page per stage: QA rows, inputs, outputs, messages, plots
    stage01/*.png ...       that stage's images

Every link is relative and every resource lives in ``out_dir`` (no CDN, no script), so the
directory can be tarred into the QA2 package and opened anywhere. All text coming from the
results is escaped with :func:`html.escape`.

Stage results are read by duck typing so the weblog does not depend on the pipeline's
classes: see :func:`render_weblog` for the attributes (or mapping keys) used.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import html
import logging
import math
import os
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastcal.errors import FastcalError, ParameterError
from fastcal.report import templates

__all__ = ["render_weblog", "score_colour", "StagePage", "QARow", "PlotRef"]

log = logging.getLogger(__name__)

#: CSS class per colour name.
_COLOUR_CLASS = {
    "green": "qa-green",
    "blue": "qa-blue",
    "yellow": "qa-yellow",
    "red": "qa-red",
    "grey": "qa-none",
}
_INDEX = "index.html"
_CSS = "style.css"


def score_colour(score: float | None) -> str:
    """Weblog colour of a QA score: ``"green"``, ``"blue"``, ``"yellow"``, ``"red"``, or
    ``"grey"`` for no score (None or NaN).

    The ALMA pipeline's bands, upper bounds inclusive (the one implementation is
    :func:`fastcal.pipeline.qa.colour_of`): ``<= 0.33`` red, ``<= 0.66`` yellow,
    ``<= 0.90`` blue, ``> 0.90`` green.
    """
    from fastcal.pipeline.qa import colour_of

    if score is not None and not isinstance(score, (int, float)):
        score = float(score)
    return colour_of(score)


# --------------------------------------------------------------------------------------
# Normalised view of the results
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QARow:
    """One QA check as shown in a table (all fields are plain text, not yet escaped)."""

    name: str
    value: str
    unit: str
    score: float | None
    message: str
    applies_to: str = ""

    @property
    def colour(self) -> str:
        return score_colour(self.score)


@dataclass(frozen=True)
class PlotRef:
    """One image on a stage page: `src` relative to ``out_dir`` (None if it could not be
    made, then `note` says why)."""

    src: str | None
    caption: str
    note: str = ""


@dataclass
class StagePage:
    """Everything the weblog shows for one stage."""

    number: int
    name: str
    status: str
    score: float | None
    summary: str
    qa: list[QARow] = field(default_factory=list)
    inputs: list[tuple[str, str]] = field(default_factory=list)
    outputs: list[tuple[str, str]] = field(default_factory=list)
    messages: list[tuple[str, str]] = field(default_factory=list)
    tables: list[tuple[str, list[str], list[list[str]]]] = field(default_factory=list)
    plot_specs: list[Any] = field(default_factory=list)
    plots: list[PlotRef] = field(default_factory=list)
    duration_s: float | None = None

    @property
    def filename(self) -> str:
        return f"stage{self.number:02d}.html"

    @property
    def image_dir(self) -> str:
        return f"stage{self.number:02d}"


def _get(obj: Any, *names: str, default: Any = None) -> Any:
    """First of `names` present on `obj` (attribute or mapping key) and not None."""
    for name in names:
        value = obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)
        if value is not None:
            return value
    return default


#: Longest list shown in a table cell (items beyond are counted, not shown).
MAX_LIST_ITEMS = 50
#: Longest text shown in a table cell (characters).
MAX_CELL_CHARS = 4000


def _fmt(value: Any) -> str:
    """Short human text for a value of an inputs/outputs/QA table (capped in length)."""
    text = _fmt_value(value)
    if len(text) > MAX_CELL_CHARS:
        text = f"{text[:MAX_CELL_CHARS]} ... ({len(text) - MAX_CELL_CHARS} more characters)"
    return text


def _fmt_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}"
    if isinstance(value, (os.PathLike,)):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_fmt_value(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
        more = f", ... ({len(items) - MAX_LIST_ITEMS} more)" if len(items) > MAX_LIST_ITEMS else ""
        return "[" + ", ".join(_fmt_value(v) for v in items[:MAX_LIST_ITEMS]) + more + "]"
    if hasattr(value, "tolist") and hasattr(value, "dtype"):  # numpy scalar / array
        return _fmt_value(value.tolist())
    return str(value)


def _pairs(value: Any) -> list[tuple[str, str]]:
    """An inputs/outputs field as (key, text) rows."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        return [(str(k), _fmt(v)) for k, v in value.items()]
    if isinstance(value, (str, os.PathLike)):
        return [("", _fmt(value))]
    if isinstance(value, Iterable):
        rows = []
        for item in value:
            if isinstance(item, tuple) and len(item) == 2:
                rows.append((str(item[0]), _fmt(item[1])))
            else:
                rows.append(("", _fmt(item)))
        return rows
    return [("", _fmt(value))]


def _messages(value: Any) -> list[tuple[str, str]]:
    """Messages as (level, text): str, (level, text) pairs, or objects with level/message."""
    out = []
    for item in value or ():
        if isinstance(item, str):
            out.append(("info", item))
        elif isinstance(item, tuple) and len(item) == 2:
            out.append((str(item[0]).lower(), str(item[1])))
        else:
            level = _get(item, "level", "levelname", default="info")
            text = _get(item, "message", "text", "msg", default=str(item))
            out.append((str(level).lower(), str(text)))
    return out


def _qa_rows(value: Any) -> list[QARow]:
    """QA checks: one score-like object, a list of them, or a mapping name -> check."""
    if value is None:
        return []
    if _looks_like_score(value):
        items = [("", value)]
    elif isinstance(value, Mapping):
        items = [(str(k), v) for k, v in value.items()]
    else:
        items = [("", v) for v in value]
    rows = []
    for default_name, q in items:
        if isinstance(q, (int, float)):
            q = {"score": q}
        score = _get(q, "score")
        score = None if score is None else float(score)
        rows.append(QARow(
            name=str(_get(q, "name", default=default_name)),
            value=_fmt(_get(q, "value")),
            unit=str(_get(q, "unit", default="")),
            score=score if score is not None and math.isfinite(score) else None,
            message=str(_get(q, "message", "longmsg", default="")),
            applies_to=str(_get(q, "applies_to", default="")),
        ))
    return rows


def _looks_like_score(value: Any) -> bool:
    return not isinstance(value, (list, tuple)) and _get(value, "score") is not None


def _tables(value: Any) -> list[tuple[str, list[str], list[list[str]]]]:
    """Extra tables: (title, header, rows) tuples or objects/mappings with those fields."""
    out = []
    for t in value or ():
        if isinstance(t, tuple) and len(t) == 3:
            title, header, rows = t
        else:
            title = _get(t, "title", "name", default="")
            header = _get(t, "header", "columns", default=[])
            rows = _get(t, "rows", default=[])
        out.append((str(title), [str(h) for h in header], [[_fmt(c) for c in r] for r in rows]))
    return out


def _stage_page(result: Any, number: int) -> StagePage:
    qa = _qa_rows(_get(result, "qa", "qa_scores", "scores"))
    score = _get(result, "score")
    if score is None and qa:
        finite = [q.score for q in qa if q.score is not None]
        score = min(finite) if finite else None
    error = _get(result, "error", "exception")
    status = str(_get(result, "status", default="failed" if error else "ok"))
    messages = _messages(_get(result, "messages", "log", "notes"))
    if error and not any(level in ("error", "critical") for level, _ in messages):
        messages.append(("error", str(error)))
    worst = min((q for q in qa if q.score is not None), key=lambda q: q.score, default=None)
    default_summary = (str(error) if error else worst.message if worst
                       else messages[0][1] if messages else "")
    summary = _get(result, "summary", default=default_summary)
    duration = _get(result, "duration_s", "duration", "elapsed_s")
    name = _get(result, "stage", "name", "title", default=f"stage {number}")
    return StagePage(
        number=number,
        name=str(name),
        status=status,
        score=None if score is None else float(score),
        summary=str(summary),
        qa=qa,
        inputs=_pairs(_get(result, "inputs", "parameters", "params")),
        outputs=_pairs(_get(result, "outputs", "products")),
        messages=messages,
        tables=_tables(_get(result, "tables")),
        plot_specs=list(_get(result, "plots", "plot_specs", default=[]) or []),
        duration_s=_as_seconds(duration),
    )


def _as_seconds(value: Any) -> float | None:
    """Seconds from a number or a :class:`datetime.timedelta` (None stays None)."""
    if value is None:
        return None
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    return float(value)


def _stage_results(results: Any) -> list[Any]:
    """The stage results in order, from a sequence, a mapping or a context with ``results``."""
    if results is None:
        raise ParameterError("results is None; give the stage results (a list) or a context")
    if not isinstance(results, (Sequence, Mapping)):
        results = _get(results, "results", "stage_results", "stages", default=results)
    if isinstance(results, Mapping):
        items = []
        for key, value in results.items():
            if isinstance(value, Mapping) and "name" not in value:
                value = {"name": key, **value}
            items.append(value)
        return items
    if isinstance(results, (str, bytes)) or not isinstance(results, Iterable):
        raise ParameterError(
            f"results of type {type(results).__name__} cannot be rendered; give a list of stage "
            f"results, a mapping name -> result, or a context with a `results` list"
        )
    return list(results)


# --------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------


def _slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._")
    return s[:60] or "plot"


def _make_plots(page: StagePage, out_dir: Path) -> list[PlotRef]:
    """Turn a stage's plot specs into images under ``out_dir/<stage dir>``."""
    refs = []
    used: set[str] = set()
    for k, spec in enumerate(page.plot_specs):
        caption = str(_get(spec, "caption", "title", default="") or "")
        try:
            rel = _one_plot(spec, page, out_dir, k, used)
        except Exception as exc:  # noqa: BLE001 - a failed plot must not lose the weblog
            note = _plot_failure_note(exc)
            log.warning("stage %s: plot %d not made: %s", page.name, k + 1, note)
            refs.append(PlotRef(None, caption, note))
            continue
        refs.append(PlotRef(rel, caption or Path(rel).stem))
    return refs


def _plot_failure_note(exc: Exception) -> str:
    if isinstance(exc, FastcalError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _unique_name(base: str, used: set[str]) -> str:
    name, n = base, 1
    while name in used:
        n += 1
        name = f"{base}_{n}"
    used.add(name)
    return name


def _one_plot(spec: Any, page: StagePage, out_dir: Path, k: int, used: set[str]) -> str:
    """Make or copy one image; returns its path relative to `out_dir` (posix)."""
    image_dir = out_dir / page.image_dir
    source = spec if isinstance(spec, (str, os.PathLike)) else _get(spec, "path", "png", "file")
    kind = None if isinstance(spec, (str, os.PathLike)) else _get(spec, "kind", "function")
    if kind is None and source is not None:
        src = Path(source)
        if not src.is_file():
            raise ParameterError(f"plot image {str(src)!r} does not exist")
        name = _unique_name(_slug(src.stem), used)
        dst = image_dir / f"{name}{src.suffix.lower() or '.png'}"
        image_dir.mkdir(parents=True, exist_ok=True)
        if src.resolve() != dst.resolve():
            shutil.copyfile(src, dst)
        return dst.relative_to(out_dir).as_posix()
    if kind is None:
        raise ParameterError(
            f"plot spec {spec!r} has neither a `kind` (a fastcal.report.plots function) nor a "
            f"`path` of an existing image"
        )
    from fastcal.report.plots import make_plot

    base = _get(spec, "name", default=None) or f"{k + 1:02d}_{kind}"
    name = _unique_name(_slug(str(base)), used)
    args = tuple(_get(spec, "args", default=()) or ())
    kwargs = dict(_get(spec, "params", "kwargs", "options", default={}) or {})
    path = make_plot(str(kind), image_dir / f"{name}.png", *args, **kwargs)
    return Path(path).relative_to(out_dir).as_posix()


# --------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _score_cell(score: float | None) -> str:
    colour = score_colour(score)
    text = "&ndash;" if score is None else f"{score:.2f}"
    return f'<td class="score {_COLOUR_CLASS[colour]}" title="{colour}">{text}</td>'


def _kv_table(rows: list[tuple[str, str]], what: str) -> str:
    if not rows:
        return f'<p class="note">No {what} recorded.</p>'
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f'<table class="{_e(what)}">{body}</table>'


def _qa_table(rows: list[QARow]) -> str:
    if not rows:
        return '<p class="note">No QA scores for this stage.</p>'
    head = ("<tr><th>Check</th><th>Applies to</th><th>Value</th><th>Unit</th><th>Score</th>"
            "<th>Message</th></tr>")
    body = "".join(
        f"<tr><td>{_e(q.name)}</td><td>{_e(q.applies_to)}</td><td class=\"num\">{_e(q.value)}"
        f"</td><td>{_e(q.unit)}</td>{_score_cell(q.score)}<td>{_e(q.message)}</td></tr>"
        for q in rows
    )
    return f'<table class="qa">{head}{body}</table>'


def _messages_html(messages: list[tuple[str, str]]) -> str:
    if not messages:
        return '<p class="note">No messages.</p>'
    items = "".join(
        f'<li class="msg-{_e(_slug(level))}"><b>{_e(level.upper())}</b> {_e(text)}</li>'
        for level, text in messages
    )
    return f'<ul class="messages">{items}</ul>'


def _extra_tables(tables: list[tuple[str, list[str], list[list[str]]]]) -> str:
    parts = []
    for title, header, rows in tables:
        head = "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>" if header else ""
        body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
        parts.append(f"<h2>{_e(title)}</h2><table>{head}{body}</table>")
    return "".join(parts)


def _plots_html(plots: list[PlotRef]) -> str:
    if not plots:
        return '<p class="note">No plots for this stage.</p>'
    figs = []
    for p in plots:
        if p.src is None:
            caption = f"{p.caption}: " if p.caption else ""
            figs.append(f'<p class="note">Plot not made: {_e(caption)}{_e(p.note)}</p>')
        else:
            figs.append(templates.FIGURE.substitute(src=_e(p.src), alt=_e(p.caption),
                                                    caption=_e(p.caption)))
    return '<div class="plots">' + "".join(figs) + "</div>"


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def _status_html(status: str) -> str:
    text = status.replace("_", " ")
    return f'<span class="status-{_e(_slug(status.lower()))}">{_e(text)}</span>'


def _page(title: str, heading: str, subheading: str, nav: str, body: str, footer: str) -> str:
    return templates.PAGE.substitute(
        page_title=_e(title), css_href=_CSS, heading=_e(heading), subheading=subheading,
        nav=nav, body=body, footer=footer,
    )


def _nav(pages: list[StagePage], i: int | None) -> str:
    links = [f'<a href="{_INDEX}">Overview</a>']
    if i is not None:
        if i > 0:
            links.append(f'<a href="{pages[i - 1].filename}">&larr; {_e(pages[i - 1].name)}</a>')
        if i + 1 < len(pages):
            links.append(f'<a href="{pages[i + 1].filename}">{_e(pages[i + 1].name)} &rarr;</a>')
    return "".join(links)


def _overview_body(pages: list[StagePage], info: list[tuple[str, str]]) -> str:
    rows = []
    for p in pages:
        duration = _seconds(p.duration_s)
        rows.append(
            f'<tr><td class="num">{p.number}</td><td><a href="{p.filename}">{_e(p.name)}</a></td>'
            f"<td>{_status_html(p.status)}</td>{_score_cell(p.score)}"
            f'<td>{_e(p.summary)}</td><td class="num">{duration}</td></tr>'
        )
    head = ("<tr><th>#</th><th>Stage</th><th>Status</th><th>QA score</th><th>Summary</th>"
            "<th>Time (s)</th></tr>")
    scored = [p.score for p in pages if p.score is not None]
    overall = min(scored) if scored else None
    overall_html = (f'<table class="overall"><tr><th>Lowest stage score</th>'
                    f"{_score_cell(overall)}</tr></table>")
    parts = []
    if info:
        parts.append("<h2>Dataset</h2>" + _kv_table(info, "info"))
    parts.append("<h2>Stages</h2>" + templates.LEGEND + overall_html)
    parts.append(f'<table class="stages">{head}{"".join(rows)}</table>')
    return "\n".join(parts)


def _stage_body(p: StagePage) -> str:
    duration = "" if p.duration_s is None else f", {_seconds(p.duration_s)} s"
    return "\n".join([
        f'<table class="overall"><tr><th>Status</th><td>{_status_html(p.status)}{duration}</td>'
        f"<th>Stage score</th>{_score_cell(p.score)}</tr></table>",
        "<h2>QA scores</h2>" + templates.LEGEND + _qa_table(p.qa),
        "<h2>Plots</h2>" + _plots_html(p.plots),
        "<h2>Inputs</h2>" + _kv_table(p.inputs, "inputs"),
        "<h2>Outputs</h2>" + _kv_table(p.outputs, "outputs"),
        _extra_tables(p.tables),
        "<h2>Messages</h2>" + _messages_html(p.messages),
    ])


def _context_info(context: Any) -> list[tuple[str, str]]:
    """Dataset rows from a pipeline context (MS, roles, spws, reference antennas)."""
    if isinstance(context, (Sequence, Mapping)) or _get(context, "vis") is None:
        return []
    rows = [("Measurement Set", _fmt(_get(context, "vis")))]
    for label, attr in (("Field roles", "roles"), ("Science spws", "science_spws"),
                        ("Tsys spws", "tsys_spws"), ("WVR spws", "wvr_spws"),
                        ("Reference antennas", "refant")):
        value = _get(context, attr)
        if value:
            rows.append((label, _fmt(value)))
    return rows


def _footer() -> str:
    from fastcal import __version__

    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"fastcal {_e(__version__)} weblog, written {now}"


# --------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------


def render_weblog(
    results: Any,
    out_dir: str | os.PathLike,
    *,
    title: str | None = None,
    info: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
) -> Path:
    """Write the static HTML weblog of a pipeline run.

    Parameters
    ----------
    results : sequence, mapping or context
        Stage results in order: a list, a mapping ``name -> result``, or an object with a
        ``results`` list (the pipeline context). Each result is an object or a mapping; the
        weblog reads (first name found wins, all optional):

        - ``stage`` / ``name``: stage name;
        - ``status`` ("ok", "failed", "skipped"...), ``error``: failure text;
        - ``qa`` / ``qa_scores`` / ``scores``: QA checks, each with ``name``, ``value``,
          ``unit``, ``score`` (0-1 or None), ``message``, ``applies_to``
          (e.g. :class:`fastcal.pipeline.qa.QAScore`);
        - ``score``: the stage score (default: the lowest QA score);
        - ``summary``: one line for the overview (default: the worst QA message);
        - ``inputs`` / ``parameters``, ``outputs`` / ``products``: mappings or lists;
        - ``messages``: strings, (level, text) pairs, or objects with level/message;
        - ``tables``: extra tables, (title, header, rows);
        - ``plots`` / ``plot_specs``: images, each either a plot spec -- ``kind`` (a key of
          :data:`fastcal.report.plots.PLOT_KINDS`), ``params`` (keyword arguments of that
          function, e.g. ``{"table": path}``; ``args`` for positional ones), ``title``
          (the caption), optional ``name`` (file stem) -- as
          :class:`fastcal.pipeline.stage.PlotSpec` has; or an existing image: its path, or an
          object with ``path`` and ``caption``;
        - ``duration_s``: wall time (s).
    out_dir : path
        Directory to write (created; files of an earlier weblog there are replaced).
    title : str, optional
        Title of the pages; default ``"fastcal weblog: <MS name>"`` for a context, else
        ``"fastcal calibration weblog"``.
    info : mapping or list of (key, value), optional
        Dataset rows shown on the overview (MS name, date, fastcal version...).

    Returns
    -------
    Path
        ``out_dir/index.html``.

    Raises
    ------
    ParameterError
        If `results` is not a sequence/mapping/context of stage results.

    Notes
    -----
    A plot that cannot be made (matplotlib missing, bad table) is replaced by a note on its
    page and a logged warning; the weblog is still written.
    """
    stages = _stage_results(results)
    if title is None:
        vis = _get(results, "vis") if not isinstance(results, (Sequence, Mapping)) else None
        title = (f"fastcal weblog: {os.path.basename(os.fspath(vis).rstrip('/'))}" if vis
                 else "fastcal calibration weblog")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pages = [_stage_page(r, i + 1) for i, r in enumerate(stages)]
    for p in pages:
        stale = out / p.image_dir
        if stale.is_dir():
            shutil.rmtree(stale)
        p.plots = _make_plots(p, out)
    (out / _CSS).write_text(templates.STYLE_CSS, encoding="utf-8")
    footer = _footer()
    info_rows = _pairs(info) if info is not None else _context_info(results)
    n_scored = sum(p.score is not None for p in pages)
    sub = _e(f"{len(pages)} stages, {n_scored} with QA scores")
    index = out / _INDEX
    index.write_text(
        _page(title, title, sub, _nav(pages, None), _overview_body(pages, info_rows), footer),
        encoding="utf-8",
    )
    for i, p in enumerate(pages):
        heading = f"Stage {p.number}: {p.name}"
        (out / p.filename).write_text(
            _page(f"{heading} - {title}", heading, _e(title), _nav(pages, i), _stage_body(p),
                  footer),
            encoding="utf-8",
        )
    log.info("weblog written: %s (%d stages)", index, len(pages))
    return index


# --------------------------------------------------------------------------------------
# Command line: ``fastcal weblog DIR`` re-renders the weblog of a pipeline output directory
# --------------------------------------------------------------------------------------


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``fastcal weblog``."""
    parser.add_argument("dir", help="pipeline output directory (holds the saved pipeline state)")
    parser.add_argument("--out", default=None,
                        help="weblog directory (default: DIR/qa, where the pipeline writes it)")
    parser.add_argument("--title", default=None, help="page title")


def run_from_args(args: argparse.Namespace) -> int:
    """Render the weblog from the state saved in ``args.dir``; prints the index path."""
    from fastcal.pipeline.stage import STATE_FILE, load_context

    ctx = load_context(args.dir)
    if ctx is None:
        raise ParameterError(
            f"{args.dir}: no pipeline state ({STATE_FILE}) there; give the --out directory of "
            f"a `fastcal pipeline` run"
        )
    out = args.out if args.out is not None else os.path.join(os.fspath(args.dir), "qa")
    index = render_weblog(ctx, out, title=args.title)
    print(f"weblog written: {index}")  # noqa: T201 - CLI output
    return 0
