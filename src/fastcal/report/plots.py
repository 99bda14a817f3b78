"""Diagnostic plots for the weblog (matplotlib, Agg, PNG files).

matplotlib is an optional dependency (``pip install fastcal[report]``). It is imported only
when a plot is made; :func:`matplotlib_available` tells whether plots can be made, and every
plot function raises :class:`~fastcal.errors.UnsupportedError` naming the missing package
otherwise. No function touches pyplot's global state: each builds its own
:class:`matplotlib.figure.Figure`, so plotting is safe from worker threads.

Every function writes one small PNG (``dpi`` 90 by default) and returns its path. Inputs are
plain arrays or a :class:`~fastcal.caltable.CalTable` (or the path of one):

===========================  ======================================================
:func:`plot_tsys`            Tsys spectra per antenna (``B TSYS`` table)
:func:`plot_wvr_phase_rms`   phase rms per antenna without / with WVR correction
:func:`plot_bandpass`        bandpass amplitude and phase vs frequency per antenna
:func:`plot_gain_vs_time`    gain phase and amplitude vs time (G / T table)
:func:`plot_flux_spectrum`   derived flux densities vs frequency with the spectral fit
:func:`plot_amp_vs_uvdist`   calibrator amplitude vs uv distance, before / after
:func:`plot_flag_summary`    fraction newly flagged per flagging agent
===========================  ======================================================

Flagged solutions are not drawn (they become NaN). Times are shown as UTC hours of the day
of the first solution; frequencies in GHz; phases in degrees.
"""

from __future__ import annotations

import datetime as _dt
import importlib.util
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fastcal.errors import CalTableError, ParameterError, UnsupportedError

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from fastcal.caltable import CalTable

__all__ = [
    "DEFAULT_DPI",
    "PLOT_KINDS",
    "make_plot",
    "matplotlib_available",
    "plot_tsys",
    "plot_wvr_phase_rms",
    "plot_bandpass",
    "plot_gain_vs_time",
    "plot_flux_spectrum",
    "plot_amp_vs_uvdist",
    "plot_flag_summary",
]

log = logging.getLogger(__name__)

#: Resolution of the PNGs (dots per inch).
DEFAULT_DPI = 90
#: Most points drawn in a scatter plot (a seeded random subset is drawn beyond this).
MAX_SCATTER_POINTS = 20000
#: Antenna panels per row in per-antenna grids.
PANELS_PER_ROW = 5
#: Size (inches) of one antenna panel.
PANEL_SIZE = (2.6, 1.9)
_MJD_EPOCH = _dt.datetime(1858, 11, 17, tzinfo=_dt.timezone.utc)
_POL_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red")


# --------------------------------------------------------------------------------------
# matplotlib access
# --------------------------------------------------------------------------------------


def matplotlib_available() -> bool:
    """True if matplotlib can be imported (plots can be made)."""
    return importlib.util.find_spec("matplotlib") is not None


def _new_figure(width_in: float, height_in: float, constrained: bool = True) -> Figure:
    """A pyplot-free Agg figure of the given size (inches)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise UnsupportedError(
            "plots need matplotlib, which is not installed; install it with "
            "`pip install 'fastcal[report]'` (or `pip install matplotlib`)"
        ) from exc
    fig = Figure(figsize=(width_in, height_in), layout="constrained" if constrained else None)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, out_png: str | os.PathLike, dpi: int) -> Path:
    path = Path(out_png)
    if path.suffix.lower() != ".png":
        raise ParameterError(f"out_png={str(out_png)!r}: plots are written as PNG; use a .png name")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png")
    log.debug("wrote plot %s", path)
    return path


# --------------------------------------------------------------------------------------
# Table helpers
# --------------------------------------------------------------------------------------


def _table(table: CalTable | str | os.PathLike, expected: Sequence[str], what: str) -> CalTable:
    from fastcal.caltable import as_caltable

    tab = as_caltable(table)
    if tab.vis_cal not in expected:
        raise CalTableError(
            f"{tab.path or 'CalTable'}: {what} needs a {' or '.join(expected)} table, "
            f"got {tab.vis_cal!r}"
        )
    return tab


def _antenna_names(tab: CalTable) -> list[str]:
    """Antenna names from the table's ANTENNA subtable (or its MS), else ``ant<i>``."""
    n_ant = tab.n_ant
    names: list[str] = []
    sub = (tab.subtables or {}).get("ANTENNA")
    if sub is not None and "NAME" in sub.columns:
        names = [str(n) for n in sub.columns["NAME"]]
    elif tab.ms_path and os.path.isdir(os.path.join(tab.ms_path, "ANTENNA")):
        import casacore.tables as ct

        with ct.table(os.path.join(tab.ms_path, "ANTENNA"), ack=False) as t:
            names = [str(n) for n in t.getcol("NAME")]
    return [names[i] if i < len(names) else f"ant{i}" for i in range(n_ant)]


def _spw_list(tab: CalTable, spw: int | Sequence[int] | None) -> list[int]:
    have = [int(s) for s in tab.spw_ids]
    if spw is None:
        return have
    wanted = [int(spw)] if np.isscalar(spw) else [int(s) for s in spw]
    missing = [s for s in wanted if s not in have]
    if missing:
        raise ParameterError(
            f"spw={spw!r}: {tab.path or 'CalTable'} has no solutions for spw {missing}; "
            f"spws in the table: {have}"
        )
    return wanted


def _chan_freq_ghz(sol: Any, n_chan: int) -> tuple[np.ndarray, str]:
    """Solution channel frequencies (GHz) and the axis label; channel index if unknown."""
    if sol.chan_freq is not None and len(sol.chan_freq) == n_chan:
        return np.asarray(sol.chan_freq, np.float64) / 1e9, "Frequency (GHz)"
    return np.arange(n_chan, dtype=np.float64), "Channel"


def _masked(values: np.ndarray, flag: np.ndarray) -> np.ndarray:
    out = np.array(values, dtype=np.float64)
    out[flag] = np.nan
    return out


def _utc_hours(time_mjd_s: np.ndarray, t0: float) -> tuple[np.ndarray, str]:
    """Times as hours since 00:00 UTC of the day of `t0`, and the axis label."""
    day0 = math.floor(t0 / 86400.0) * 86400.0
    date = (_MJD_EPOCH + _dt.timedelta(seconds=day0)).date().isoformat()
    return (np.asarray(time_mjd_s, np.float64) - day0) / 3600.0, f"UTC (h) on {date}"


#: Fixed margins (inches) of per-antenna grids: left, right, bottom (x label + legend), top.
_GRID_MARGINS = (0.6, 0.15, 0.8, 0.45)
#: Gaps (inches) between antenna panels: horizontal, vertical.
_GRID_GAPS = (0.45, 0.5)


def _grid_shape(n_panels: int) -> tuple[int, int]:
    ncol = min(PANELS_PER_ROW, max(n_panels, 1))
    return ncol, max(1, math.ceil(n_panels / ncol))


def _grid_size(n_panels: int, rows_per_panel: int = 1) -> tuple[float, float]:
    """Figure size (inches) of a grid of `n_panels` antenna panels."""
    ncol, nrow = _grid_shape(n_panels)
    left, right, bottom, top = _GRID_MARGINS
    panel_h = PANEL_SIZE[1] * (0.6 + 0.5 * (rows_per_panel - 1))
    return (left + right + PANEL_SIZE[0] * ncol,
            bottom + top + nrow * panel_h + (nrow - 1) * _GRID_GAPS[1])


def _antenna_grid(fig: Figure, n_panels: int, rows_per_panel: int = 1) -> list[list[Axes]]:
    """Axes for `n_panels` antenna panels, each `rows_per_panel` axes high (shared x).

    A fixed layout (margins in inches) rather than constrained layout: with tens of
    antennas constrained layout costs seconds per figure.
    """
    ncol, nrow = _grid_shape(n_panels)
    width, height = fig.get_size_inches()
    left, right, bottom, top = _GRID_MARGINS
    gap_w, gap_h = _GRID_GAPS
    ax_w = (width - left - right - (ncol - 1) * gap_w) / ncol
    ax_h = (height - bottom - top - (nrow - 1) * gap_h) / nrow
    outer = fig.add_gridspec(
        nrow, ncol, left=left / width, right=1 - right / width, bottom=bottom / height,
        top=1 - top / height, wspace=gap_w / ax_w, hspace=gap_h / ax_h,
    )
    panels = []
    for k in range(n_panels):
        r, c = divmod(k, ncol)
        inner = outer[r, c].subgridspec(rows_per_panel, 1, hspace=0.08)
        first = fig.add_subplot(inner[0])
        axes = [first] + [fig.add_subplot(inner[i], sharex=first)
                          for i in range(1, rows_per_panel)]
        for ax in axes[:-1]:
            ax.tick_params(labelbottom=False)
        panels.append(axes)
    return panels


def _lines(ax: Axes, x: np.ndarray, ys: np.ndarray, colour: Any, lw: float = 0.7,
           min_span: float = 0.0) -> None:
    """Draw the rows of `ys` (n_lines, n_x) against `x` as one LineCollection (NaN = gap).

    Much faster than one Line2D per spectrum when there are thousands of them. The y range
    is kept at least `min_span` wide (no "1e-8+1" offset axes for constant curves).
    """
    from matplotlib.collections import LineCollection

    ys = np.atleast_2d(ys)
    good = np.isfinite(ys)
    if not good.any():
        return
    segs = np.stack([np.broadcast_to(x, ys.shape), ys], axis=-1)
    ax.add_collection(LineCollection(list(segs), colors=colour, linewidths=lw, alpha=0.85))
    xs = np.broadcast_to(x, ys.shape)[good]
    ax.update_datalim(np.column_stack([xs, ys[good]]))
    ax.autoscale_view()
    _keep_span(ax, min_span)


def _keep_span(ax: Axes, min_span: float) -> None:
    """Widen the y limits of `ax` to at least `min_span` about their centre."""
    lo, hi = ax.get_ylim()
    if hi - lo < min_span:
        mid = 0.5 * (lo + hi)
        ax.set_ylim(mid - 0.5 * min_span, mid + 0.5 * min_span)
    ax.ticklabel_format(axis="y", useOffset=False)


def _select_antennas(
    flag_any: np.ndarray, names: list[str], antennas: Sequence[int] | None
) -> list[int]:
    """Antennas to draw: those given, else every antenna with at least one unflagged value."""
    if antennas is not None:
        bad = [a for a in antennas if not 0 <= int(a) < len(names)]
        if bad:
            raise ParameterError(
                f"antennas={list(antennas)!r}: antenna ids {bad} are out of range "
                f"0..{len(names) - 1}"
            )
        return [int(a) for a in antennas]
    return [a for a in range(len(names)) if a < flag_any.size and not flag_any[a]]


def _no_data(fig: Figure, message: str) -> None:
    ax = fig.add_subplot()
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def _pol_label(p: int, n_par: int) -> str:
    return f"pol {p}" if n_par > 1 else "pol"


# --------------------------------------------------------------------------------------
# Tsys
# --------------------------------------------------------------------------------------


def plot_tsys(
    table: CalTable | str | os.PathLike,
    out_png: str | os.PathLike,
    *,
    spw: int | Sequence[int] | None = None,
    antennas: Sequence[int] | None = None,
    title: str | None = None,
    dpi: int = DEFAULT_DPI,
) -> Path:
    """Tsys spectra, one panel per antenna, every solution time drawn.

    Parameters
    ----------
    table : CalTable or path
        A ``B TSYS`` table (FPARAM = Tsys in K, shape (n_chan, n_pol) per row).
    out_png : path
        PNG to write (parent directories are created).
    spw : int or sequence of int, optional
        Tsys spws to draw (default: all in the table), side by side in frequency.
    antennas : sequence of int, optional
        Antenna ids; default every antenna with unflagged solutions.
    title : str, optional
    dpi : int

    Returns
    -------
    Path
        `out_png`.

    Raises
    ------
    CalTableError
        If `table` is not a ``B TSYS`` table.
    ParameterError
        If `spw` or `antennas` are not in the table.
    UnsupportedError
        If matplotlib is not installed.
    """
    tab = _table(table, ("B TSYS",), "plot_tsys")

    def curves(sol: Any, a: int) -> list[tuple[np.ndarray, float]]:
        return [(_masked(sol.params[:, a].real, sol.flag[:, a]), 2.0)]

    return _spectra_grid(tab, out_png, spw=spw, antennas=antennas, curves=curves,
                         ylabels=["Tsys (K)"], empty="all Tsys solutions flagged",
                         title=title, default_title="Tsys vs frequency", dpi=dpi)


def _spectra_grid(
    tab: CalTable,
    out_png: str | os.PathLike,
    *,
    spw: int | Sequence[int] | None,
    antennas: Sequence[int] | None,
    curves: Callable[[Any, int], list[tuple[np.ndarray, float]]],
    ylabels: Sequence[str],
    empty: str,
    title: str | None,
    default_title: str,
    dpi: int,
) -> Path:
    """Per-antenna grid of spectra vs frequency (every solution time, colour per pol).

    ``curves(sol, ant)`` gives, for one spw's solutions and one antenna, one
    ``(values, min_span)`` per row of the panel: `values` float (n_time, n_chan, n_pol) with
    NaN where flagged, `min_span` the least y range of that row. `ylabels` names the rows;
    `empty` is the message drawn when no antenna has data; the title is `title`, else
    ``"<default_title>, spw <ids>"``.
    """
    names = _antenna_names(tab)
    sols = [tab.solutions(s) for s in _spw_list(tab, spw)]
    flag_all = np.logical_and.reduce([s.flag.all(axis=(0, 2, 3)) for s in sols])
    ants = _select_antennas(flag_all, names, antennas)
    rows = len(ylabels)
    fig = _new_figure(*_grid_size(len(ants), rows_per_panel=rows), constrained=False)
    if not ants:
        _no_data(fig, empty)
        return _save(fig, out_png, dpi)
    panels = _antenna_grid(fig, len(ants), rows_per_panel=rows)
    xlabel = "Frequency (GHz)"
    for axes, a in zip(panels, ants, strict=True):
        for sol in sols:
            freq, xlabel = _chan_freq_ghz(sol, sol.params.shape[2])
            for ax, (values, min_span) in zip(axes, curves(sol, a), strict=True):
                for p in range(values.shape[-1]):
                    _lines(ax, freq, values[..., p], _POL_COLOURS[p % 4], min_span=min_span)
        axes[0].set_title(names[a], fontsize=8, pad=2)
        for ax in axes:
            ax.tick_params(labelsize=7)
    _label_grid(panels, xlabel, ylabels)
    _pol_legend(fig, tab.n_par)
    _grid_title(fig, title or f"{default_title}, spw {', '.join(str(s.spw) for s in sols)}")
    return _save(fig, out_png, dpi)


def _pol_legend(fig: Figure, n_par: int) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=_POL_COLOURS[p % 4], label=_pol_label(p, n_par))
               for p in range(n_par)]
    fig.legend(handles=handles, loc="lower center", ncol=max(n_par, 1), fontsize=7,
               frameon=False)


def _grid_title(fig: Figure, text: str) -> None:
    """Figure title at a fixed distance (inches) from the top, above the panel titles."""
    fig.suptitle(text, fontsize=9, y=1 - 0.08 / fig.get_size_inches()[1], va="top")


def _label_grid(panels: list[list[Axes]], xlabel: str, ylabels: Sequence[str]) -> None:
    """x label under the bottom panel of each column, y labels on the first column."""
    ncol, _ = _grid_shape(len(panels))
    for k, axes in enumerate(panels):
        if k + ncol >= len(panels):
            axes[-1].set_xlabel(xlabel, fontsize=7)
        if k % ncol == 0:
            for ax, label in zip(axes, ylabels, strict=True):
                ax.set_ylabel(label, fontsize=7)


# --------------------------------------------------------------------------------------
# WVR
# --------------------------------------------------------------------------------------


def plot_wvr_phase_rms(
    rms_before_deg: Sequence[float] | np.ndarray,
    rms_after_deg: Sequence[float] | np.ndarray,
    out_png: str | os.PathLike,
    *,
    antenna_names: Sequence[str] | None = None,
    title: str | None = None,
    dpi: int = DEFAULT_DPI,
) -> Path:
    """Phase rms per antenna without and with the WVR correction (grouped bars).

    Parameters
    ----------
    rms_before_deg, rms_after_deg : float (n_ant,)
        Phase rms (deg) without / with WVR (e.g. ``Improvement.rms_without_deg`` and
        ``rms_with_deg``); NaN = no value (reference antenna, no data).
    out_png : path
    antenna_names : sequence of str (n_ant,), optional
    title : str, optional
    dpi : int

    Returns
    -------
    Path

    Raises
    ------
    ParameterError
        If the arrays differ in length or are not 1-D.
    """
    before = np.asarray(rms_before_deg, np.float64)
    after = np.asarray(rms_after_deg, np.float64)
    if before.ndim != 1 or before.shape != after.shape:
        raise ParameterError(
            f"rms_before_deg {before.shape} and rms_after_deg {after.shape} must be 1-D "
            f"arrays of the same length (one value per antenna)"
        )
    names = _names_or_default(antenna_names, before.size)
    x = np.arange(before.size)
    fig = _new_figure(max(4.0, 0.28 * before.size + 1.5), 3.0)
    ax = fig.add_subplot()
    ax.bar(x - 0.2, before, width=0.4, label="without WVR", color="tab:grey")
    ax.bar(x + 0.2, after, width=0.4, label="with WVR", color="tab:blue")
    ax.set_xticks(x, names, rotation=90, fontsize=7)
    ax.set_ylabel("Phase rms (deg)")
    ax.legend(fontsize=8)
    ok = np.isfinite(before) & np.isfinite(after) & (before > 0)
    med = f"; median ratio {np.median(after[ok] / before[ok]):.2f}" if ok.any() else ""
    ax.set_title(title or f"Phase rms without / with WVR{med}", fontsize=9)
    return _save(fig, out_png, dpi)


def _names_or_default(names: Sequence[str] | None, n: int) -> list[str]:
    if names is None:
        return [f"ant{i}" for i in range(n)]
    names = [str(v) for v in names]
    if len(names) != n:
        raise ParameterError(
            f"antenna_names has {len(names)} entries but the data have {n} antennas"
        )
    return names


# --------------------------------------------------------------------------------------
# Bandpass
# --------------------------------------------------------------------------------------


def plot_bandpass(
    table: CalTable | str | os.PathLike,
    out_png: str | os.PathLike,
    *,
    spw: int | Sequence[int] | None = None,
    antennas: Sequence[int] | None = None,
    title: str | None = None,
    dpi: int = DEFAULT_DPI,
) -> Path:
    """Bandpass amplitude (upper) and phase (lower, deg) vs frequency, one panel per antenna.

    Parameters
    ----------
    table : CalTable or path
        A ``B Jones`` table; every solution time is drawn.
    out_png : path
    spw : int or sequence of int, optional
        Default all spws in the table.
    antennas : sequence of int, optional
        Default every antenna with unflagged solutions.
    title : str, optional
    dpi : int

    Returns
    -------
    Path

    Raises
    ------
    CalTableError
        If `table` is not a ``B Jones`` table.
    ParameterError
        If `spw` or `antennas` are not in the table.
    """
    tab = _table(table, ("B Jones",), "plot_bandpass")

    def curves(sol: Any, a: int) -> list[tuple[np.ndarray, float]]:
        g = sol.params[:, a].astype(np.complex128)
        return [(_masked(np.abs(g), sol.flag[:, a]), 0.02),
                (_masked(np.degrees(np.angle(g)), sol.flag[:, a]), 2.0)]

    return _spectra_grid(tab, out_png, spw=spw, antennas=antennas, curves=curves,
                         ylabels=["Amplitude", "Phase (deg)"],
                         empty="all bandpass solutions flagged", title=title,
                         default_title="Bandpass", dpi=dpi)


# --------------------------------------------------------------------------------------
# Gains vs time
# --------------------------------------------------------------------------------------


def plot_gain_vs_time(
    table: CalTable | str | os.PathLike,
    out_png: str | os.PathLike,
    *,
    spw: int | None = None,
    antennas: Sequence[int] | None = None,
    title: str | None = None,
    dpi: int = DEFAULT_DPI,
) -> Path:
    """Gain phase (deg, upper) and amplitude (lower) vs time, one colour per antenna.

    Multi-channel solutions are averaged over unflagged channels (vector mean); every
    polarisation is drawn (circles pol 0, triangles pol 1).

    Parameters
    ----------
    table : CalTable or path
        A ``G Jones`` or ``T Jones`` table.
    out_png : path
    spw : int, optional
        Default the first spw in the table.
    antennas : sequence of int, optional
        Default every antenna with unflagged solutions.
    title : str, optional
    dpi : int

    Returns
    -------
    Path

    Raises
    ------
    CalTableError
        If `table` is not a G or T table.
    ParameterError
        If `spw` or `antennas` are not in the table.
    """
    tab = _table(table, ("G Jones", "T Jones"), "plot_gain_vs_time")
    names = _antenna_names(tab)
    s = _spw_list(tab, spw)[0]
    sol = tab.solutions(s)
    g = np.where(sol.flag, 0, sol.params).astype(np.complex128)
    n_ok = (~sol.flag).sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = g.sum(axis=2) / n_ok  # (n_time, n_ant, n_par)
    mean[n_ok == 0] = np.nan
    ants = _select_antennas(np.all(n_ok == 0, axis=(0, 2)), names, antennas)
    fig = _new_figure(7.5, 5.0)
    if not ants:
        _no_data(fig, "all gain solutions flagged")
        return _save(fig, out_png, dpi)
    hours, xlabel = _utc_hours(sol.time, float(sol.time[0]))
    ax_ph = fig.add_subplot(2, 1, 1)
    ax_amp = fig.add_subplot(2, 1, 2, sharex=ax_ph)
    cmap = _antenna_colours(len(ants))
    markers = ("o", "^", "s", "D")
    for k, a in enumerate(ants):
        for p in range(mean.shape[-1]):
            label = names[a] if p == 0 else None
            kw = dict(color=cmap[k], marker=markers[p % 4], ms=3, lw=0.6, label=label)
            ax_ph.plot(hours, np.degrees(np.angle(mean[:, a, p])), **kw)
            ax_amp.plot(hours, np.abs(mean[:, a, p]), **kw)
    _keep_span(ax_ph, 2.0)
    _keep_span(ax_amp, 0.02)
    ax_ph.set_ylabel("Gain phase (deg)")
    ax_amp.set_ylabel("Gain amplitude")
    ax_amp.set_xlabel(xlabel)
    ax_ph.tick_params(labelbottom=False)
    from matplotlib.lines import Line2D

    handles, labels = ax_ph.get_legend_handles_labels()
    if mean.shape[-1] > 1:
        for p in range(mean.shape[-1]):
            handles.append(Line2D([], [], color="k", marker=markers[p % 4], ms=3, lw=0))
            labels.append(f"pol {p}")
    fig.legend(handles, labels, loc="outside right upper", fontsize=6,
               ncol=1 + len(labels) // 25, frameon=False)
    fig.suptitle(title or f"{tab.vis_cal} gains vs time, spw {s}", fontsize=9)
    return _save(fig, out_png, dpi)


def _antenna_colours(n: int) -> list:
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    cmap = colormaps["turbo"]
    return [cmap(0.05 + 0.9 * i / (n - 1)) for i in range(n)]


# --------------------------------------------------------------------------------------
# Flux spectrum
# --------------------------------------------------------------------------------------


def plot_flux_spectrum(
    freq_hz: Sequence[float] | np.ndarray,
    flux_jy: Sequence[float] | np.ndarray,
    flux_err_jy: Sequence[float] | np.ndarray | None,
    out_png: str | os.PathLike,
    *,
    fit_flux_jy: float | None = None,
    fit_ref_freq_hz: float | None = None,
    spix: float | Sequence[float] = (),
    catalogue_jy: Sequence[float] | np.ndarray | None = None,
    field_name: str = "",
    title: str | None = None,
    dpi: int = DEFAULT_DPI,
) -> Path:
    """Derived flux densities vs frequency with error bars and the spectral fit.

    The fit drawn is CASA fluxscale's: ``log10 S = log10 S0 + alpha x + beta x^2 + ...``
    with ``x = log10(nu / nu0)``.

    Parameters
    ----------
    freq_hz, flux_jy : float (n_spw,)
        Frequency (Hz) and derived flux density (Jy) per spw.
    flux_err_jy : float (n_spw,) or None
        1-sigma errors (Jy).
    out_png : path
    fit_flux_jy, fit_ref_freq_hz : float, optional
        Fitted S0 (Jy) at nu0 (Hz); no fit line without them.
    spix : float or sequence of float
        Spectral index alpha, or [alpha, beta, ...] (CASA ``spidx[1:]``); NaN terms count 0.
    catalogue_jy : float (n_spw,), optional
        Catalogue / model flux densities at the same frequencies, drawn for comparison.
    field_name : str
    title : str, optional
    dpi : int

    Returns
    -------
    Path

    Raises
    ------
    ParameterError
        If the array lengths disagree, or only one of fit_flux_jy / fit_ref_freq_hz is given.
    """
    freq = np.asarray(freq_hz, np.float64)
    flux = np.asarray(flux_jy, np.float64)
    err = None if flux_err_jy is None else np.asarray(flux_err_jy, np.float64)
    cat = None if catalogue_jy is None else np.asarray(catalogue_jy, np.float64)
    for name, arr in (("flux_jy", flux), ("flux_err_jy", err), ("catalogue_jy", cat)):
        if arr is not None and (arr.ndim != 1 or arr.shape != freq.shape):
            raise ParameterError(
                f"{name} has shape {arr.shape}; expected {freq.shape} like freq_hz"
            )
    if (fit_flux_jy is None) != (fit_ref_freq_hz is None):
        raise ParameterError(
            f"give both fit_flux_jy and fit_ref_freq_hz for the fit line (got "
            f"fit_flux_jy={fit_flux_jy!r}, fit_ref_freq_hz={fit_ref_freq_hz!r})"
        )
    fig = _new_figure(5.0, 3.4)
    ax = fig.add_subplot()
    ax.errorbar(freq / 1e9, flux, yerr=err, fmt="o", ms=4, capsize=3, color="tab:blue",
                label="derived")
    if cat is not None:
        ax.plot(freq / 1e9, cat, "x", color="tab:red", label="catalogue")
    if fit_flux_jy is not None:
        _draw_fit(ax, freq, float(fit_flux_jy), float(fit_ref_freq_hz), spix)
    ax.set_xlabel("Frequency (GHz)")
    ax.set_ylabel("Flux density (Jy)")
    ax.legend(fontsize=8)
    ax.set_title(title or f"Flux density {field_name}".rstrip(), fontsize=9)
    return _save(fig, out_png, dpi)


def _draw_fit(ax: Axes, freq: np.ndarray, s0: float, nu0: float, spix: Any) -> None:
    coeffs = np.nan_to_num(np.atleast_1d(np.asarray(spix, np.float64)), nan=0.0)
    lo, hi = (float(freq.min()), float(freq.max())) if freq.size else (nu0, nu0)
    lo, hi = min(lo, nu0), max(hi, nu0)
    pad = 0.05 * (hi - lo) if hi > lo else 0.01 * nu0
    nu = np.linspace(lo - pad, hi + pad, 200)
    x = np.log10(nu / nu0)
    logs = math.log10(s0) + sum(c * x ** (k + 1) for k, c in enumerate(coeffs))
    alpha = f", alpha={coeffs[0]:.2f}" if coeffs.size else ""
    ax.plot(nu / 1e9, 10.0**logs, "-", color="tab:grey",
            label=f"fit: {s0:.3g} Jy at {nu0 / 1e9:.2f} GHz{alpha}")


# --------------------------------------------------------------------------------------
# Amplitude vs uv distance
# --------------------------------------------------------------------------------------


def plot_amp_vs_uvdist(
    uvdist_m: Sequence[float] | np.ndarray,
    amp_before: Sequence[float] | np.ndarray,
    amp_after: Sequence[float] | np.ndarray,
    out_png: str | os.PathLike,
    *,
    model_jy: float | None = None,
    field_name: str = "",
    before_unit: str = "uncalibrated",
    title: str | None = None,
    seed: int = 0,
    dpi: int = DEFAULT_DPI,
) -> Path:
    """Calibrator visibility amplitude vs uv distance, before (left) and after (right).

    Parameters
    ----------
    uvdist_m : float (n,)
        Baseline length sqrt(u^2+v^2) (m) per point.
    amp_before, amp_after : float (n,) or (n, ...)
        Amplitudes of the same points before / after calibration; extra axes (channels,
        correlations) are matched by repeating `uvdist_m`. NaN = flagged, not drawn.
    out_png : path
    model_jy : float, optional
        Model flux density, drawn as a line on the calibrated panel.
    field_name : str
    before_unit : str
        y-axis unit of the uncalibrated panel.
    title : str, optional
    seed : int
        Seed of the random subset drawn when there are more than
        :data:`MAX_SCATTER_POINTS` points.
    dpi : int

    Returns
    -------
    Path

    Raises
    ------
    ParameterError
        If the arrays do not have one row per uv distance.
    """
    uv = np.asarray(uvdist_m, np.float64)
    panels = []
    for name, amp in (("amp_before", amp_before), ("amp_after", amp_after)):
        a = np.asarray(amp, np.float64)
        if uv.ndim != 1 or a.ndim < 1 or a.shape[0] != uv.shape[0]:
            raise ParameterError(
                f"{name} has shape {a.shape}; its first axis must match uvdist_m "
                f"{uv.shape} (one row per visibility)"
            )
        x = np.broadcast_to(uv.reshape((-1,) + (1,) * (a.ndim - 1)), a.shape).ravel()
        panels.append(_subsample(x, a.ravel(), seed))
    fig = _new_figure(8.0, 3.2)
    ax0 = fig.add_subplot(1, 2, 1)
    ax1 = fig.add_subplot(1, 2, 2, sharex=ax0)
    for ax, (x, y), label, unit in ((ax0, panels[0], "before calibration", before_unit),
                                    (ax1, panels[1], "after calibration", "Jy")):
        ax.plot(x, y, ".", ms=2, alpha=0.5, color="tab:blue", rasterized=True)
        ax.set_xlabel("uv distance (m)")
        ax.set_ylabel(f"Amplitude ({unit})")
        ax.set_title(label, fontsize=9)
    if model_jy is not None:
        ax1.axhline(float(model_jy), color="tab:red", lw=1, label=f"model {model_jy:.3g} Jy")
        ax1.legend(fontsize=8)
    fig.suptitle(title or f"Amplitude vs uv distance {field_name}".rstrip(), fontsize=9)
    return _save(fig, out_png, dpi)


def _subsample(x: np.ndarray, y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size > MAX_SCATTER_POINTS:
        pick = np.random.default_rng(seed).choice(x.size, MAX_SCATTER_POINTS, replace=False)
        x, y = x[pick], y[pick]
    return x, y


# --------------------------------------------------------------------------------------
# Flagging summary
# --------------------------------------------------------------------------------------


def plot_flag_summary(
    new: Mapping[str, int],
    total: int,
    out_png: str | os.PathLike,
    *,
    title: str | None = None,
    dpi: int = DEFAULT_DPI,
) -> Path:
    """Percentage of the data newly flagged by each flagging agent (horizontal bars).

    Parameters
    ----------
    new : mapping agent -> int
        Newly flagged visibilities (row x channel x correlation elements) per agent.
    total : int
        Visibilities considered (> 0).
    out_png : path
    title : str, optional
    dpi : int

    Returns
    -------
    Path

    Raises
    ------
    ParameterError
        If `total` is not positive or a count is negative.
    """
    if not isinstance(new, Mapping):
        raise ParameterError(f"new must map agent name -> count, got {type(new).__name__}")
    counts = {str(k): int(v) for k, v in new.items()}
    if int(total) <= 0 or any(v < 0 for v in counts.values()):
        raise ParameterError(
            f"total={total!r}, new={counts!r}: total must be > 0 and counts >= 0"
        )
    agents = list(counts) or ["(none)"]
    pct = [100.0 * counts.get(a, 0) / int(total) for a in agents]
    fig = _new_figure(5.0, 0.9 + 0.32 * len(agents))
    ax = fig.add_subplot()
    y = np.arange(len(agents))
    ax.barh(y, pct, color="tab:blue")
    ax.set_yticks(y, agents, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("Newly flagged (% of the data)")
    ax.set_xlim(0, max(max(pct) * 1.15, 1.0))
    for yi, v in zip(y, pct, strict=True):
        ax.text(v, yi, f" {v:.2f}%", va="center", fontsize=7)
    ax.set_title(title or f"Flags per agent ({int(total):,} visibilities)", fontsize=9)
    return _save(fig, out_png, dpi)


# --------------------------------------------------------------------------------------
# Dispatch by name (plot specs of the pipeline)
# --------------------------------------------------------------------------------------

#: Plot kinds accepted by :func:`make_plot` (a stage's plot spec names one of them).
PLOT_KINDS = {
    "tsys": plot_tsys,
    "wvr_phase_rms": plot_wvr_phase_rms,
    "bandpass": plot_bandpass,
    "gain_vs_time": plot_gain_vs_time,
    "flux_spectrum": plot_flux_spectrum,
    "amp_vs_uvdist": plot_amp_vs_uvdist,
    "flag_summary": plot_flag_summary,
}


def make_plot(kind: str, out_png: str | os.PathLike, *args: Any, **kwargs: Any) -> Path:
    """Call the plot function named `kind` (a key of :data:`PLOT_KINDS`).

    `out_png` is passed as the function's ``out_png``; `args` are its leading positional
    arguments (the table, or the data arrays) and `kwargs` its keyword options.

    Raises
    ------
    ParameterError
        If `kind` is unknown.
    """
    func = PLOT_KINDS.get(kind)
    if func is None:
        raise ParameterError(f"plot kind {kind!r} is unknown; valid: {', '.join(PLOT_KINDS)}")
    return func(*args, out_png=out_png, **kwargs)
