"""Weblog (static HTML) and diagnostic plots of a fastcal pipeline run.

- :func:`render_weblog` writes the weblog (overview + one page per stage), see
  :mod:`fastcal.report.weblog`.
- :mod:`fastcal.report.plots` makes the PNG plots (Tsys, WVR, bandpass, gains, flux, uv
  distance). They need matplotlib (``pip install 'fastcal[report]'``), which is imported
  only when a plot is made; the weblog itself needs nothing beyond the standard library.

See ``docs/report.md``.
"""

from __future__ import annotations

from fastcal.report.plots import (
    PLOT_KINDS,
    make_plot,
    matplotlib_available,
    plot_amp_vs_uvdist,
    plot_bandpass,
    plot_flag_summary,
    plot_flux_spectrum,
    plot_gain_vs_time,
    plot_tsys,
    plot_wvr_phase_rms,
)
from fastcal.report.weblog import render_weblog, score_colour

__all__ = [
    "render_weblog",
    "score_colour",
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
