"""qa: the final QA2 checks (docs/pipeline.md, "QA scores").

Each check gives a number, a 0-1 score and a message naming the worst antenna and spw
(mappings in :mod:`fastcal.pipeline.qa`):

* Tsys (SYSCAL, the raw values: tsysflag may have flagged the bad spectra in the caltable):
  per-antenna median Tsys against the array median of each Tsys spw (hifa_tsysflag
  ``nmedian``, limit 2), ringing spectra (``derivative``, limit 5), and the array median of
  each Tsys spw against the typical Tsys of its ALMA band (:func:`tsys_checks`);
* bandpass (the registered ``bandpass`` table): per-channel amplitude and phase noise after
  a smooth (local quadratic) fit, and the fraction of outlier channels (:func:`bandpass_checks`);
* gains (``phase_int``, ``phase_scan``, ``amp_cal`` tables): scatter between consecutive
  solutions (per-integration phases within a scan, per-scan amplitudes of one field) and the
  median solution SNR (:func:`gain_checks`);
* sensitivity: per target and science spw, the achieved point-source rms against the
  radiometer equation (:func:`fastcal.pipeline.package.theoretical_rms_table`), flagged when
  more than 10 % worse (:func:`~fastcal.pipeline.qa.sensitivity_score`). Achieved rms =
  standard deviation of the imaginary parts of the calibrated (CORRECTED_DATA) unflagged
  cross-correlations of the parallel hands, divided by sqrt(number of samples): the noise of
  the naturally weighted image peak of a point source at the phase centre (whose visibilities
  have no imaginary part); equal weights are assumed. Only after applycal;
* a summary score: the lowest QA score of every stage (WVR improvement, flux scale against
  the catalogue and phase transfer are scored by the wvr, fluxscale and timegaincal stages).

Each check runs when its input exists (SYSCAL, a registered table, calibrated data); the
stage is skipped only when none does.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from fastcal.errors import FastcalError
from fastcal.pipeline.context import Context
from fastcal.pipeline.qa import (
    QAScore,
    bandpass_amp_rms_score,
    bandpass_channel_stats,
    bandpass_outlier_score,
    bandpass_phase_rms_score,
    consecutive_scatter,
    expected_tsys_k,
    gain_amp_scatter_score,
    gain_phase_scatter_score,
    gain_snr_score,
    sensitivity_score,
    tsys_antenna_score,
    tsys_band_score,
    tsys_derivative_score,
)
from fastcal.pipeline.stage import OK, SKIPPED, Stage, StageResult

__all__ = ["QA2Stage", "achieved_rms_jy", "tsys_statistics", "tsys_checks", "bandpass_checks",
           "gain_checks", "GAIN_TABLE_CHECKS"]

logger = logging.getLogger(__name__)

#: Registered gain tables checked by the qa stage: name -> (kind, grouping, SNR target).
#: Per-integration phases are compared within a scan, per-scan amplitudes within a field;
#: per-scan phases only get the SNR check (their scan-to-scan change is the phase-transfer
#: QA of timegaincal).
GAIN_TABLE_CHECKS: dict[str, tuple[str, str, float]] = {
    "phase_int": ("phase", "scan", 5.0),
    "phase_scan": ("", "", 32.0),
    "amp_cal": ("amp", "field", 20.0),
}


def achieved_rms_jy(vis, field: str, spw: int) -> tuple[float, int]:
    """(rms in Jy of the point-source flux estimate, number of samples) from CORRECTED_DATA."""
    from fastcal.ms import open_ms, read_block, read_chunks, require_parallel_hands

    info = open_ms(vis)
    if "CORRECTED_DATA" not in info.columns:
        return float("nan"), 0
    ims = []
    for chunk in read_chunks(info, ("CORRECTED_DATA", "FLAG"), field=field, spw=str(spw),
                             include_autocorr=False):
        hands = list(require_parallel_hands(info.pols[chunk.pol_id]))
        for b in range(chunk.n_blocks):
            arr = read_block(chunk, b, ("CORRECTED_DATA", "FLAG"))
            d = arr["CORRECTED_DATA"][:, :, hands]
            good = ~arr["FLAG"][:, :, hands] & np.isfinite(d)
            ims.append(d.imag[good].astype(np.float64))
    v = np.concatenate(ims) if ims else np.zeros(0)
    if v.size < 2:
        return float("nan"), int(v.size)
    return float(np.std(v, ddof=1) / np.sqrt(v.size)), int(v.size)


# ----------------------------------------------------------------------------- Tsys


def tsys_statistics(vis: str) -> dict[str, dict]:
    """Per (Tsys spw, antenna) statistics of the SYSCAL Tsys spectra.

    Returns
    -------
    dict
        ``median`` (K) and ``derivative`` (median over the spectra of the median absolute
        channel-to-channel difference, K): dicts ``(spw, antenna name) -> float``; ``freq``:
        spw -> mean frequency (Hz). Values <= 0 or non-finite are ignored (CASA flags Tsys
        below FLT_MIN).
    """
    from fastcal.ms import open_ms
    from fastcal.tsys import read_syscal

    info = open_ms(vis)
    sc = read_syscal(vis)
    names = info.antenna_names
    med: dict[tuple[int, str], float] = {}
    der: dict[tuple[int, str], float] = {}
    for s, spectra in sc.tsys.items():
        ants = sc.antenna[sc.rows[s]]
        x = spectra.astype(np.float64)  # (row, chan, pol)
        x[~np.isfinite(x) | (x <= 0)] = np.nan
        for a in np.unique(ants):
            v = x[ants == a]
            if not np.isfinite(v).any() or not 0 <= a < len(names):
                continue
            key = (int(s), names[int(a)])
            med[key] = float(np.nanmedian(v))
            if v.shape[1] >= 3:
                with np.errstate(all="ignore"):
                    d = np.nanmedian(np.abs(np.diff(v, axis=1)), axis=1)  # (row, pol)
                if np.isfinite(d).any():
                    der[key] = float(np.nanmedian(d))
    freq = {int(s): float(np.mean(info.spws[int(s)].chan_freq)) for s in sc.tsys}
    return dict(median=med, derivative=der, freq=freq)


def tsys_checks(vis: str) -> tuple[list[QAScore], dict[str, Any]]:
    """Tsys QA2 scores (antenna outliers, ringing, band expectation) and their numbers."""
    st = tsys_statistics(vis)
    qa: list[QAScore] = []
    if st["median"]:
        qa.append(tsys_antenna_score(st["median"]))
    if st["derivative"]:
        qa.append(tsys_derivative_score(st["derivative"]))
    array_median = {}
    for s, f in sorted(st["freq"].items()):
        vals = [v for k, v in st["median"].items() if k[0] == s]
        if not vals:
            continue
        array_median[s] = float(np.median(vals))
        if expected_tsys_k(f) is not None:
            qa.append(tsys_band_score(array_median[s], f, f"Tsys spw {s}"))
    out = dict(median_k={f"{s}:{a}": v for (s, a), v in st["median"].items()},
               array_median_k={str(s): v for s, v in array_median.items()})
    return qa, out


# ----------------------------------------------------------------------------- bandpass


def bandpass_checks(caltable: str, antenna_names: tuple[str, ...] | list[str],
                    spws: list[int] | None = None) -> tuple[list[QAScore], dict[str, Any]]:
    """Bandpass noise and outlier-channel scores of a B table (every solution time).

    Parameters
    ----------
    caltable : str
        Bandpass table path.
    antenna_names : sequence of str
        MS antenna names (index = antenna id).
    spws : list of int, optional
        Spws to check (default: every spw in the table).
    """
    from fastcal.caltable import read_caltable

    tab = read_caltable(caltable)
    amp: dict[tuple[int, str], float] = {}
    phase: dict[tuple[int, str], float] = {}
    counts: dict[tuple[int, str], list[int]] = {}
    notes: list[str] = []
    for s in sorted(int(x) for x in np.unique(tab.spw_id)):
        if spws is not None and s not in spws:
            continue
        sol = tab.solutions(s)
        for t in range(sol.params.shape[0]):
            st = bandpass_channel_stats(sol.params[t], sol.flag[t])
            for a in range(sol.params.shape[1]):
                key = (s, antenna_names[a] if a < len(antenna_names) else str(a))
                if np.isfinite(st["amp_rms"][a]):
                    amp[key] = max(amp.get(key, 0.0), float(st["amp_rms"][a]))
                if np.isfinite(st["phase_rms_deg"][a]):
                    phase[key] = max(phase.get(key, 0.0), float(st["phase_rms_deg"][a]))
                if st["n_valid"][a]:
                    c = counts.setdefault(key, [0, 0])
                    c[0] += int(st["n_outlier"][a])
                    c[1] += int(st["n_valid"][a])
    qa = []
    if amp:
        qa.append(bandpass_amp_rms_score(amp))
    if phase:
        qa.append(bandpass_phase_rms_score(phase))
    if counts:
        qa.append(bandpass_outlier_score({k: (v[0], v[1]) for k, v in counts.items()}))
    if not counts:
        notes.append(f"{os.path.basename(caltable.rstrip('/'))}: bandpass noise and outlier channels "
                     f"not assessed (fewer than 32 unflagged channels per solution)")
    out = dict(notes=notes, amp_rms={f"{s}:{a}": v for (s, a), v in amp.items()},
               phase_rms_deg={f"{s}:{a}": v for (s, a), v in phase.items()},
               outlier_channels={f"{s}:{a}": v for (s, a), v in counts.items()})
    return qa, out


# ----------------------------------------------------------------------------- gains


def gain_checks(caltable: str, antenna_names: tuple[str, ...] | list[str], *, kind: str,
                group_by: str, snr_target: float, label: str = "",
                spws: list[int] | None = None) -> tuple[list[QAScore], dict[str, Any]]:
    """Scatter between consecutive solutions and median SNR of a G table.

    Parameters
    ----------
    caltable : str
    antenna_names : sequence of str
    kind : {"phase", "amp", ""}
        What :func:`~fastcal.pipeline.qa.consecutive_scatter` measures ("" = SNR only).
    group_by : {"scan", "field", ""}
        Solutions compared only within a scan / a field.
    snr_target : float
        Target of :func:`~fastcal.pipeline.qa.gain_snr_score`.
    label : str
        Table label for the messages (default: the file name).
    """
    from fastcal.caltable import read_caltable

    label = label or os.path.basename(caltable.rstrip("/"))
    tab = read_caltable(caltable)
    scatter: dict[tuple[int, str], float] = {}
    snrs = []
    for s in sorted(int(x) for x in np.unique(tab.spw_id)):
        if spws is not None and s not in spws:
            continue
        sol = tab.solutions(s)
        ok = ~np.asarray(sol.flag, bool)
        snrs.append(np.asarray(sol.snr, np.float64)[ok])
        if not kind:
            continue
        groups = {"scan": sol.scan, "field": sol.field_id}.get(group_by, np.zeros(sol.time.size, int))
        sc = consecutive_scatter(sol.params[:, :, 0, :], sol.flag[:, :, 0, :], groups, kind=kind)
        for a, v in enumerate(sc):
            if np.isfinite(v):
                scatter[(s, antenna_names[a] if a < len(antenna_names) else str(a))] = float(v)
    qa = []
    if scatter:
        qa.append((gain_phase_scatter_score if kind == "phase" else gain_amp_scatter_score)(scatter, label))
    v = np.concatenate(snrs) if snrs else np.zeros(0)
    v = v[np.isfinite(v)]
    med = float(np.median(v)) if v.size else float("nan")
    if v.size:
        qa.append(gain_snr_score(med, snr_target, label))
    out = dict(scatter={f"{s}:{a}": x for (s, a), x in scatter.items()},
               median_snr=med if np.isfinite(med) else None)
    return qa, out


# ----------------------------------------------------------------------------- stage


class QA2Stage(Stage):
    """QA2 checks (Tsys, bandpass, gains, sensitivity) and the summary of all QA scores."""

    name = "qa"
    title = "QA2 checks (Tsys, bandpass, gains, sensitivity; summary)"
    simplified = True

    def run(self, ctx: Context) -> StageResult:
        qa: list[QAScore] = []
        outputs: dict[str, Any] = {}
        msgs: list[str] = []
        names = ctx.info.antenna_names
        spws = list(ctx.science_spws) or None
        if ctx.info.has_syscal:
            self._check(qa, outputs, msgs, "tsys", tsys_checks, ctx.vis)
        else:
            msgs.append("no SYSCAL: Tsys checks not done")
        registered = {e.name: e.path for e in ctx.callib}
        if "bandpass" in registered:
            if self._check(qa, outputs, msgs, "bandpass", bandpass_checks, registered["bandpass"], names, spws):
                msgs += outputs["bandpass"]["notes"]
        else:
            msgs.append("no bandpass table registered: bandpass checks not done")
        for tname, (kind, group, target) in GAIN_TABLE_CHECKS.items():
            if tname in registered:
                self._check(qa, outputs, msgs, tname, gain_checks, registered[tname], names, kind=kind,
                            group_by=group, snr_target=target, label=tname, spws=spws)
        if ctx.results.get("applycal", {}).get("status") == "ok":
            q, outputs["sensitivity"] = self._sensitivity(ctx)
            qa += q
        else:
            msgs.append("no calibrated data (applycal has not run): sensitivity not measured")
        if not qa:
            return StageResult(self.name, SKIPPED, messages=msgs + ["nothing to check"])
        worst = [(s, min(q["score"] for q in res["qa"])) for s, res in ctx.results.items()
                 if res.get("qa") and s != self.name]
        if worst:
            s, w = min(worst, key=lambda x: x[1])
            qa.append(QAScore("lowest_stage_score", w, w, f"lowest stage score: {s} ({w:.2f})", "score"))
        for q in qa:
            if q.score is not None and q.score <= 0.66 and q.name != "lowest_stage_score":
                logger.warning("QA2 %s: %s (score %.2f)", q.name, q.message, q.score)
        msgs.append("not in this version: flux scale history checks, per-field Tsys checks")
        return StageResult(self.name, OK, outputs=outputs, qa=qa, messages=msgs)

    @staticmethod
    def _check(qa: list, outputs: dict, msgs: list, key: str, func, *args, **kwargs) -> bool:
        """Run one check; a fastcal error (unreadable SYSCAL or table) becomes a message."""
        try:
            q, outputs[key] = func(*args, **kwargs)
        except FastcalError as exc:
            logger.warning("QA2 %s checks not done: %s", key, exc)
            msgs.append(f"{key} checks not done: {exc}")
            return False
        qa += q
        return True

    @staticmethod
    def _sensitivity(ctx: Context) -> tuple[list[QAScore], list[dict]]:
        from fastcal.pipeline.package import theoretical_rms_table

        qa, rows = [], []
        for r in theoretical_rms_table(ctx):
            ach, n = achieved_rms_jy(ctx.vis, r["field"], r["spw"])
            r = dict(r, achieved_rms_jy=ach, n_samples=n)
            rows.append(r)
            if np.isfinite(ach) and ach > 0 and np.isfinite(r["rms_jy"]) and r["rms_jy"] > 0:
                qa.append(sensitivity_score(ach, r["rms_jy"], f"{r['field']} spw {r['spw']}"))
        return qa, rows
