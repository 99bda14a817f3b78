"""QA scores of the fastcal pipeline: a number, a 0-1 score, a message and a colour.

Every check of the recipe turns one measured value into a :class:`QAScore`. The mappings
follow the ALMA pipeline where the shared reference (``casa-calibration-reference.md``) or
the pipeline source gives them, and are fastcal's own (documented as such) elsewhere.
docs/pipeline.md has the same table.

Colours (ALMA pipeline weblog, ``rendererutils.get_bar_class``; inclusive upper bounds)::

    score <= 0.33  red     (error)
    score <= 0.66  yellow  (warning)
    score <= 0.90  blue    (sub-optimal)
    score >  0.90  green   (ok)

Note: the reference's "(>= 0.9 green)" is approximate; the pipeline source makes a score of
exactly 0.9 blue, and fastcal follows the source.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from fastcal.errors import ParameterError

__all__ = [
    "QAScore",
    "SCORE_RED",
    "SCORE_YELLOW",
    "SCORE_BLUE",
    "colour_of",
    "linear_score",
    "flagged_fraction_score",
    "agent_flagged_score",
    "wvr_improvement_score",
    "bandpass_snr_score",
    "phaseup_snr_score",
    "lowgain_outliers",
    "lowgain_score",
    "theoretical_rms_jy",
    "sensitivity_score",
    "phase_transfer_score",
    "flux_deviation_score",
    "worst",
    "ALMA_TSYS_TYPICAL",
    "band_mapping",
    "tsys_antenna_score",
    "tsys_derivative_score",
    "expected_tsys_k",
    "tsys_band_score",
    "smooth_residuals",
    "bandpass_channel_stats",
    "bandpass_amp_rms_score",
    "bandpass_phase_rms_score",
    "bandpass_outlier_score",
    "consecutive_scatter",
    "gain_phase_scatter_score",
    "gain_amp_scatter_score",
    "gain_snr_score",
]

#: Upper bounds (inclusive) of the red, yellow and blue bands.
SCORE_RED = 0.33
SCORE_YELLOW = 0.66
SCORE_BLUE = 0.9

#: Boltzmann constant (J/K).
K_BOLTZMANN = 1.380649e-23


def colour_of(score: float | None) -> str:
    """Weblog colour of a score: "red", "yellow", "blue", "green" ("grey" for None/NaN)."""
    if score is None or not math.isfinite(score):
        return "grey"
    if score <= SCORE_RED:
        return "red"
    if score <= SCORE_YELLOW:
        return "yellow"
    if score <= SCORE_BLUE:
        return "blue"
    return "green"


@dataclass
class QAScore:
    """One QA check.

    Attributes
    ----------
    name : str
        Short metric name, e.g. ``"flagged_fraction"``.
    value : float
        The measured value the score is computed from (units in `unit`).
    score : float
        In [0, 1]; see :func:`colour_of`.
    message : str
        One line for the weblog and the README.
    unit : str
        Unit or meaning of `value`.
    applies_to : str
        What was measured (e.g. ``"spw 3"``, ``"all data"``).
    """

    name: str
    value: float
    score: float
    message: str
    unit: str = ""
    applies_to: str = ""

    def __post_init__(self) -> None:
        if not (self.score is None or (math.isfinite(self.score) and 0.0 <= self.score <= 1.0)):
            raise ParameterError(f"QA score {self.name}: score={self.score!r} is invalid; valid: 0..1")

    @property
    def colour(self) -> str:
        return colour_of(self.score)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["value"] = _json_float(self.value)
        d["colour"] = self.colour
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QAScore:
        d = {k: v for k, v in d.items() if k != "colour"}
        if d.get("value") is None:
            d["value"] = float("nan")
        return cls(**d)


def _json_float(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def worst(scores: Iterable[QAScore]) -> QAScore | None:
    """The lowest-scoring entry (None when empty)."""
    s = [q for q in scores if q.score is not None]
    return min(s, key=lambda q: q.score) if s else None


def linear_score(x: float, x1: float, x2: float, y1: float = 0.0, y2: float = 1.0) -> float:
    """Straight line through (x1, y1) and (x2, y2), clipped to [min(y), max(y)].

    The ALMA pipeline's ``scorecalculator.linear_score``.
    """
    if x1 == x2:
        raise ParameterError(f"linear_score: x1 == x2 == {x1!r}; valid: two different abscissae")
    y = y1 + (x - x1) * (y2 - y1) / (x2 - x1)
    return float(min(max(y, min(y1, y2)), max(y1, y2)))


def _check_fraction(name: str, f: float) -> float:
    f = float(f)
    if not (math.isfinite(f) and 0.0 <= f <= 1.0):
        raise ParameterError(f"{name}={f!r} is invalid; valid: a fraction in [0, 1]")
    return f


def flagged_fraction_score(frac_flagged: float, applies_to: str = "all data") -> QAScore:
    """Total flagged fraction -> score (pipeline ``score_total_data_flagged``).

    ``<= 5 %`` -> 1.0; 5..50 % -> linear from 1.0 down to 0.5; ``> 50 %`` -> 0.0.
    """
    f = _check_fraction("frac_flagged", frac_flagged)
    score = 0.0 if f > 0.5 else linear_score(f, 0.05, 0.5, 1.0, 0.5)
    return QAScore("flagged_fraction", f, score, f"{100 * f:.2f}% of {applies_to} flagged",
                   "fraction", applies_to)


def agent_flagged_score(frac_new: float, agents: str = "deterministic", *, lo: float = 0.05,
                        hi: float = 0.6) -> QAScore:
    """Fraction newly flagged by some agents -> score (pipeline ``score_data_flagged_by_agents``).

    Linear from 1.0 at `lo` (default 5 %) to 0.0 at `hi` (default 60 %), clipped; these are
    the ALMA defaults for the online/shadow/template agents of hifa_flagdata.
    """
    f = _check_fraction("frac_new", frac_new)
    score = linear_score(f, lo, hi, 1.0, 0.0)
    return QAScore(f"flagged_by_{agents}", f, score,
                   f"{100 * f:.2f}% of the data newly flagged by the {agents} agents", "fraction")


def wvr_improvement_score(improvement: float, *, n_flagged_ant: int = 0, n_high_disc: int = 0,
                          n_high_rms: int = 0, bandpass_noisy: bool = False,
                          median_disc_um: float = 0.0, median_rms_um: float = 0.0) -> QAScore:
    """WVR score as ``hifa_wvrgcal``'s ``score_wvrgcal`` (reference section 6.5).

    `improvement` = 1/median(phase-rms with WVR / without WVR); n = flagged antennas +
    antennas with Disc > 500 um + antennas with RMS > 500 um.

    * improvement > 1, n = 0, bandpass phases not noisy: 1.0;
    * improvement > 1 otherwise: raw = 0.9 - 0.1 n (>= 0) mapped linearly from [0, 0.9]
      onto [0.67, 0.9] (blue); with noisy bandpass phases raw = 0.66 - 0.1 n mapped from
      [0, 0.66] onto [0.34, 0.66] (yellow);
    * improvement <= 1 ("No WVR improvement"): 0.33 when the median Disc or RMS exceeds
      500 um (cloud; "remcloud suggested"), else raw = 0.66 - 0.1 n mapped onto [0.34, 0.66].

    This is the mapping :func:`fastcal.wvr.wvr_qa_score` implements from the pipeline source
    (minus its phase-calibrator refinements); the wvr stage should use that function.
    """
    if not math.isfinite(improvement) or improvement <= 0:
        raise ParameterError(f"improvement={improvement!r} is invalid; valid: a positive ratio")
    n = n_flagged_ant + n_high_disc + n_high_rms

    def band(top: float, lo: float, hi: float) -> float:
        raw = max(top - 0.1 * n, 0.0)
        return lo + raw / top * (hi - lo)

    if improvement > 1.0:
        msg = f"WVR improves the phase rms by a factor {improvement:.2f}"
        if bandpass_noisy:
            score, msg = band(0.66, 0.34, 0.66), msg + " (bandpass phases noisy)"
        elif n:
            score, msg = band(0.9, 0.67, 0.9), msg + f" ({n} antenna issue(s))"
        else:
            score = 1.0
    else:
        cloudy = median_disc_um > 500.0 or median_rms_um > 500.0
        score = 0.33 if cloudy else band(0.66, 0.34, 0.66)
        msg = f"No WVR improvement (factor {improvement:.2f})" + ("; remcloud suggested" if cloudy else "")
    return QAScore("wvr_improvement", improvement, score, msg, "rms ratio without/with WVR")


def bandpass_snr_score(median_snr: float, *, bpsnr: float = 50.0, minbpsnr: float = 20.0) -> QAScore:
    """Median bandpass solution SNR -> score (fastcal mapping around hifa_bandpass defaults).

    The reference gives the SNR targets (``bpsnr=50``, ``minbpsnr=20``) but no score mapping;
    fastcal uses: SNR >= bpsnr -> 1.0; minbpsnr..bpsnr -> linear 0.66..1.0; below minbpsnr ->
    linear from 0.66 at minbpsnr to 0.0 at SNR 0.
    """
    if not math.isfinite(median_snr) or median_snr < 0:
        raise ParameterError(f"median_snr={median_snr!r} is invalid; valid: a number >= 0")
    if median_snr >= bpsnr:
        score = 1.0
    elif median_snr >= minbpsnr:
        score = linear_score(median_snr, minbpsnr, bpsnr, 0.66, 1.0)
    else:
        score = linear_score(median_snr, 0.0, minbpsnr, 0.0, 0.66)
    return QAScore("bandpass_snr", median_snr, score,
                   f"median bandpass SNR {median_snr:.1f} (target {bpsnr:g})", "SNR")


def phaseup_snr_score(median_snr: float, threshold: float = 32.0) -> QAScore:
    """Phase-up SNR -> score (reference section 8, stage 14, hifa_spwphaseup).

    Blue/yellow/red when the median SNR is below 0.75/0.5/0.33 times the threshold
    (``phasesnr=32`` for PHASE/CHECK, ``intphasesnr=5`` otherwise). The reference gives the
    colour bands only; fastcal scores 1.0 (>= 0.75 x), 0.75 (blue), 0.5 (yellow), 0.2 (red).
    """
    if not math.isfinite(median_snr) or median_snr < 0 or threshold <= 0:
        raise ParameterError(f"median_snr={median_snr!r}, threshold={threshold!r} are invalid; "
                             f"valid: SNR >= 0 and threshold > 0")
    r = median_snr / threshold
    score = 1.0 if r >= 0.75 else 0.75 if r >= 0.5 else 0.5 if r >= 0.33 else 0.2
    return QAScore("phaseup_snr", median_snr, score,
                   f"median phase-up SNR {median_snr:.1f} = {r:.2f} x threshold {threshold:g}", "SNR")


def lowgain_outliers(amplitudes: np.ndarray, *, lo: float = 0.5, hi: float = 1.5) -> np.ndarray:
    """bool mask of gain amplitudes outside [lo, hi] x median (hif_lowgainflag limits).

    Parameters
    ----------
    amplitudes : float[...]
        Gain amplitudes (e.g. per scan and antenna); NaN entries are ignored (never outliers).
    lo, hi : float
        ``fnm_lo_limit=0.5``, ``fnm_hi_limit=1.5``.
    """
    a = np.asarray(amplitudes, np.float64)
    if not 0 <= lo < hi:
        raise ParameterError(f"lo={lo!r}, hi={hi!r} are invalid; valid: 0 <= lo < hi")
    good = np.isfinite(a)
    if not good.any():
        return np.zeros(a.shape, bool)
    med = float(np.median(a[good]))
    with np.errstate(invalid="ignore"):
        return good & ((a < lo * med) | (a > hi * med))


def lowgain_score(n_flagged_ant: int, n_ant: int) -> QAScore:
    """Antennas flagged by lowgainflag -> the standard flagged-fraction score of that fraction."""
    if n_ant <= 0 or not 0 <= n_flagged_ant <= n_ant:
        raise ParameterError(f"n_flagged_ant={n_flagged_ant!r}, n_ant={n_ant!r} are invalid")
    q = flagged_fraction_score(n_flagged_ant / n_ant, "antennas")
    return QAScore("lowgain_flagged_antennas", n_flagged_ant, q.score,
                   f"{n_flagged_ant} of {n_ant} antennas have outlier gain amplitudes", "antennas")


def theoretical_rms_jy(tsys_k: float, bandwidth_hz: float, time_s: float, n_ant: int, *,
                       dish_diameter_m: float = 12.0, aperture_efficiency: float = 0.7,
                       n_pol: int = 2, efficiency: float = 1.0) -> float:
    """Point-source rms (Jy) of a naturally weighted image, radiometer equation.

    ``sigma = 2 k Tsys / (eta A sqrt(N (N - 1) n_pol dnu t))`` with A = pi D^2 / 4 and
    eta = aperture_efficiency x efficiency (ALMA Technical Handbook form; `efficiency` stands
    for the quantisation x correlator efficiencies, 1 for fastcal's simulator, about
    0.96 x 0.88 for real ALMA 12-m data).

    Parameters
    ----------
    tsys_k : float
        System temperature (K).
    bandwidth_hz : float
        Total bandwidth used (Hz).
    time_s : float
        Time on source (s).
    n_ant : int
        Antennas (>= 2).
    """
    if tsys_k <= 0 or bandwidth_hz <= 0 or time_s <= 0 or n_ant < 2 or n_pol < 1:
        raise ParameterError(f"theoretical_rms_jy: tsys_k={tsys_k!r}, bandwidth_hz={bandwidth_hz!r}, "
                             f"time_s={time_s!r}, n_ant={n_ant!r}, n_pol={n_pol!r}; valid: positive "
                             f"values and n_ant >= 2")
    area = math.pi * dish_diameter_m**2 / 4.0
    jy_per_k = 2.0 * K_BOLTZMANN / (aperture_efficiency * efficiency * area) / 1e-26
    return jy_per_k * tsys_k / math.sqrt(n_ant * (n_ant - 1) * n_pol * bandwidth_hz * time_s)


def sensitivity_score(achieved_rms: float, theoretical_rms: float, applies_to: str = "") -> QAScore:
    """Achieved / theoretical rms -> score (issue: flag when more than 10 % worse).

    ratio <= 1.1 -> 1.0; 1.1..2.0 -> linear 0.66..0.33 (blue/yellow, flagged in the message);
    >= 3 -> 0.0 with a linear fall from 0.33 between 2 and 3. fastcal mapping (no pipeline
    mapping in the reference).
    """
    if not (achieved_rms > 0 and theoretical_rms > 0):
        raise ParameterError(f"achieved_rms={achieved_rms!r}, theoretical_rms={theoretical_rms!r}; "
                             f"valid: positive values")
    r = achieved_rms / theoretical_rms
    if r <= 1.1:
        score, msg = 1.0, f"rms {r:.2f} x theoretical"
    elif r <= 2.0:
        score = linear_score(r, 1.1, 2.0, 0.66, 0.33)
        msg = f"rms {r:.2f} x theoretical: more than 10% worse than expected"
    else:
        score = linear_score(r, 2.0, 3.0, 0.33, 0.0)
        msg = f"rms {r:.2f} x theoretical: far worse than expected"
    return QAScore("sensitivity", r, score, msg, "achieved/theoretical rms", applies_to)


def phase_transfer_score(scan_phases_deg: Sequence[float] | np.ndarray, *, good_deg: float = 30.0,
                         bad_deg: float = 90.0) -> QAScore:
    """Phase-transfer stability from the phase calibrator's per-scan phases.

    Value = rms of the wrapped phase change between consecutive phase-calibrator scans (deg;
    NaN scans skipped). fastcal mapping (the reference gives no thresholds): <= `good_deg`
    (30) -> 1.0; linear to 0.33 at `bad_deg` (90); beyond, linear to 0 at 2 x `bad_deg`.
    Fewer than two scans: score 0.5 ("cannot be assessed").
    """
    p = np.asarray(scan_phases_deg, np.float64)
    p = p[np.isfinite(p)]
    if p.size < 2:
        return QAScore("phase_transfer", float("nan"), 0.5,
                       "fewer than two phase-calibrator scans: phase transfer cannot be assessed", "deg")
    d = (np.diff(p) + 180.0) % 360.0 - 180.0
    rms = float(np.sqrt(np.mean(d**2)))
    if rms <= good_deg:
        score = 1.0
    elif rms <= bad_deg:
        score = linear_score(rms, good_deg, bad_deg, 1.0, 0.33)
    else:
        score = linear_score(rms, bad_deg, 2 * bad_deg, 0.33, 0.0)
    return QAScore("phase_transfer", rms, score,
                   f"rms phase change between phase-calibrator scans {rms:.1f} deg", "deg")



def flux_deviation_score(derived_jy: float, expected_jy: float, field: str = "") -> QAScore:
    """Derived calibrator flux against its catalogue value (hifa_gfluxscale QA).

    The reference says large deviations "(e.g. > ~10-20 %)" lower the score without exact
    thresholds; fastcal maps d = |derived/expected - 1|: d <= 10 % -> 1.0; 10-20 % linear
    1.0 -> 0.66; 20-50 % linear 0.66 -> 0.33; beyond, linear to 0 at 100 %.
    """
    if not (derived_jy > 0 and expected_jy > 0):
        raise ParameterError(f"derived_jy={derived_jy!r}, expected_jy={expected_jy!r}; valid: positive fluxes")
    d = abs(derived_jy / expected_jy - 1.0)
    if d <= 0.1:
        score = 1.0
    elif d <= 0.2:
        score = linear_score(d, 0.1, 0.2, 1.0, 0.66)
    elif d <= 0.5:
        score = linear_score(d, 0.2, 0.5, 0.66, 0.33)
    else:
        score = linear_score(d, 0.5, 1.0, 0.33, 0.0)
    return QAScore("flux_deviation", d, score, f"{field} derived {derived_jy:.4g} Jy vs catalogue "
                   f"{expected_jy:.4g} Jy ({100 * d:.1f}% off)", "fraction", field)


# ----------------------------------------------------------------------------- QA2 checks
#
# The functions below take per-(spw, antenna) numbers, keyed ``(spw_id, antenna_name)``, and
# score the worst entry, naming it (and counting the others beyond the warning limit) in the
# message. The statistics helpers turn calibration arrays into such numbers; the qa stage
# (:mod:`fastcal.pipeline.stages.qa2`) reads the tables and calls them.

Key = tuple[int, str]

#: Typical ALMA Tsys per band (reference section 5.4, "approximate, unverified"):
#: band -> (f_lo GHz, f_hi GHz, typical Tsys lo K, typical Tsys hi K).
ALMA_TSYS_TYPICAL: dict[int, tuple[float, float, float, float]] = {
    3: (84.0, 116.0, 50.0, 100.0),
    4: (125.0, 163.0, 70.0, 120.0),
    5: (163.0, 211.0, 100.0, 300.0),
    6: (211.0, 275.0, 70.0, 150.0),
    7: (275.0, 373.0, 100.0, 250.0),
    8: (385.0, 500.0, 300.0, 1000.0),
    9: (602.0, 720.0, 500.0, 2000.0),
    10: (787.0, 950.0, 1000.0, 3000.0),
}


def _finite_items(values: Mapping[Key, float], name: str) -> dict[Key, float]:
    out = {k: float(v) for k, v in values.items() if v is not None and math.isfinite(float(v))}
    if not out:
        raise ParameterError(f"{name}: no finite value given ({len(values)} entries); valid: at "
                             f"least one (spw, antenna) with a finite number")
    return out


def _where(key: Key) -> str:
    return f"antenna {key[1]} spw {key[0]}"


def _worst_message(items: dict[Key, float], worst: Key, what: str, fmt: str, limit: float,
                   unit: str) -> str:
    beyond = sorted((k for k, v in items.items() if v > limit), key=lambda k: -items[k])
    msg = f"{what} {format(items[worst], fmt)}{unit} at {_where(worst)}"
    if beyond:
        names = ", ".join(_where(k) for k in beyond[:5]) + (" ..." if len(beyond) > 5 else "")
        msg += f"; {len(beyond)} above {format(limit, fmt)}{unit}: {names}"
    return msg


def band_mapping(x: float, good: float, warn: float, bad: float, zero: float) -> float:
    """fastcal's standard falling mapping of a "larger is worse" value.

    ``x <= good`` -> 1.0; good..warn linear 1.0 -> 0.67 (blue at warn); warn..bad linear
    0.66 -> 0.33 (yellow); bad..zero linear 0.33 -> 0.0 (red); beyond -> 0.0.
    """
    if not good < warn < bad < zero:
        raise ParameterError(f"band_mapping: good={good!r} < warn={warn!r} < bad={bad!r} < "
                             f"zero={zero!r} is required")
    if x <= good:
        return 1.0
    if x <= warn:
        return linear_score(x, good, warn, 1.0, 0.67)
    if x <= bad:
        return linear_score(x, warn, bad, 0.66, 0.33)
    return linear_score(x, bad, zero, 0.33, 0.0)


def tsys_antenna_score(median_tsys_k: Mapping[Key, float], *, limit: float = 2.0) -> QAScore:
    """Per-antenna median Tsys against the array median of the same spw.

    The hifa_tsysflag ``nmedian`` metric (reference section 5.5: a spectrum whose median
    exceeds ``fnm_limit = 2.0`` x the median of all spectra is flagged) as a QA2 check on the
    SYSCAL values: for every (spw, antenna) r = median Tsys / median over the antennas of that
    spw; value = the largest of r and 1/r (an antenna far *below* the array is suspect too).
    Score (:func:`band_mapping`): <= 1.5 -> 1.0; 1.5..`limit` -> 1.0..0.67;
    `limit`..2 `limit` -> 0.66..0.33; 2 `limit`..4 `limit` -> 0.33..0.

    Parameters
    ----------
    median_tsys_k : mapping (spw, antenna name) -> float
        Median Tsys (K) over the channels, polarisations and times of each antenna.
    """
    items = _finite_items(median_tsys_k, "median_tsys_k")
    if any(v <= 0 for v in items.values()):
        raise ParameterError("median_tsys_k has values <= 0 K; valid: positive Tsys")
    ratio = {}
    for spw in {k[0] for k in items}:
        med = float(np.median([v for k, v in items.items() if k[0] == spw]))
        for k, v in items.items():
            if k[0] == spw:
                ratio[k] = max(v / med, med / v)
    worst = max(ratio, key=ratio.get)
    score = band_mapping(ratio[worst], 1.5, limit, 2 * limit, 4 * limit)
    msg = _worst_message(ratio, worst, "Tsys / array median (or its inverse)", ".2f", limit, "")
    msg += f" (Tsys {items[worst]:.0f} K)"
    return QAScore("tsys_antenna_outlier", ratio[worst], score, msg, "ratio to array median",
                   _where(worst))


def tsys_derivative_score(median_derivative: Mapping[Key, float], *, limit: float = 5.0) -> QAScore:
    """Ringing Tsys spectra: hifa_tsysflag ``derivative`` metric (``fd_max_limit = 5``).

    For every (spw, antenna) the median absolute channel-to-channel difference of its Tsys
    spectra (K), divided by the median of that number over the antennas of the spw; value =
    the largest ratio (1 for a spw whose median is 0). Score: <= `limit`/2 -> 1.0; `limit`/2..`limit` -> 1.0..0.67;
    `limit`..2 `limit` -> 0.66..0.33; 2..4 `limit` -> 0.33..0.
    """
    items = _finite_items(median_derivative, "median_derivative")
    ratio = {}
    for spw in {k[0] for k in items}:
        med = float(np.median([v for k, v in items.items() if k[0] == spw]))
        for k, v in items.items():
            if k[0] == spw:
                ratio[k] = v / med if med > 0 else 1.0  # flat spectra: no ringing to compare
    worst = max(ratio, key=ratio.get)
    value = ratio[worst]
    score = band_mapping(value, limit / 2, limit, 2 * limit, 4 * limit)
    msg = _worst_message(ratio, worst, "Tsys channel-to-channel derivative / array median", ".2f",
                         limit, "")
    return QAScore("tsys_derivative", value, score, msg, "ratio to array median", _where(worst))


def expected_tsys_k(freq_hz: float) -> tuple[int, float, float] | None:
    """(ALMA band, typical Tsys low, high in K) at `freq_hz`, or None outside the table."""
    f = float(freq_hz) / 1e9
    for band, (f0, f1, lo, hi) in ALMA_TSYS_TYPICAL.items():
        if f0 <= f <= f1:
            return band, lo, hi
    return None


def tsys_band_score(median_tsys_k: float, freq_hz: float, applies_to: str = "") -> QAScore:
    """Array-median Tsys of a spw against the typical values of its ALMA band.

    Typical ranges: reference section 5.4 (rule of thumb, "unverified"), so the mapping is
    lenient: within [lo/2, hi] -> 1.0; above, r = Tsys/hi: 1..2 -> 1.0..0.67, 2..4 ->
    0.66..0.33, 4..8 -> 0.33..0 ("extreme Tsys": bad weather, low elevation, an atmospheric
    line or a calibration problem); below lo/2 linear from 1.0 down to 0.33 at lo/4
    ("implausibly low Tsys").

    Raises
    ------
    ParameterError
        Tsys <= 0 or a frequency outside the ALMA bands of the table.
    """
    exp = expected_tsys_k(freq_hz)
    if exp is None:
        raise ParameterError(f"freq_hz={freq_hz!r} is outside the ALMA bands with typical Tsys "
                             f"values; valid: {', '.join(f'{v[0]:g}-{v[1]:g}' for v in ALMA_TSYS_TYPICAL.values())} GHz")
    if not (math.isfinite(median_tsys_k) and median_tsys_k > 0):
        raise ParameterError(f"median_tsys_k={median_tsys_k!r} is invalid; valid: a positive Tsys (K)")
    band, lo, hi = exp
    t = float(median_tsys_k)
    if t > hi:
        score = band_mapping(t / hi, 1.0, 2.0, 4.0, 8.0)
        msg = f"median Tsys {t:.0f} K above the typical band {band} range {lo:g}-{hi:g} K"
    elif t < lo / 2:
        score = linear_score(t, lo / 4, lo / 2, 0.33, 1.0)
        msg = f"median Tsys {t:.0f} K implausibly low for band {band} (typical {lo:g}-{hi:g} K)"
    else:
        score = 1.0
        msg = f"median Tsys {t:.0f} K (typical band {band}: {lo:g}-{hi:g} K)"
    return QAScore("tsys_band", t, score, (applies_to + ": " if applies_to else "") + msg, "K", applies_to)


# ---- bandpass


@functools.lru_cache(maxsize=8)
def _window_projection(w: int, deg: int) -> np.ndarray:
    """(w, w) hat matrix of a least-squares polynomial of degree `deg` on w equally spaced
    points: row i gives the fitted value at point i."""
    x = np.arange(w, dtype=np.float64) - (w - 1) / 2
    v = np.vander(x, deg + 1)
    proj = v @ np.linalg.pinv(v)
    proj.setflags(write=False)
    return proj


def smooth_residuals(y: np.ndarray, half: int = 2) -> np.ndarray:
    """Residuals of `y` from a local quadratic (Savitzky-Golay, ``2 half + 1`` points) fit,
    each divided by its standard deviation for unit white noise, so that their rms estimates
    the per-point noise while smooth structure (ripples longer than ~8 points) is removed.

    Interior points use the centred window; the first/last `half` points use the fit of the
    first/last window evaluated there. O(n).

    Parameters
    ----------
    y : float[n]
        Values at consecutive, equally spaced points (NaN not allowed).

    Returns
    -------
    numpy.ndarray
        float64[n]; zeros when n < 4 (no noise estimate possible).
    """
    y = np.asarray(y, np.float64)
    n = y.size
    if n < 4:
        return np.zeros(n)
    w = 2 * half + 1
    if n < w:  # one quadratic over all points
        proj = _window_projection(n, 2)
        r_op = np.eye(n) - proj
        return (r_op @ y) / np.sqrt(np.einsum("ij,ij->i", r_op, r_op))
    proj = _window_projection(w, 2)
    fit = np.empty(n)
    fit[half:n - half] = np.correlate(y, proj[half], mode="valid")
    fit[:half] = proj[:half] @ y[:w]
    fit[n - half:] = proj[w - half:] @ y[n - w:]
    # variance of a residual for unit white noise: |e_i - h_i|^2 = 1 - 2 h_ii + sum_j h_ij^2
    var_row = 1.0 - 2.0 * np.diag(proj) + np.einsum("ij,ij->i", proj, proj)
    var = np.full(n, var_row[half])
    var[:half] = var_row[:half]
    var[n - half:] = var_row[w - half:]
    return (y - fit) / np.sqrt(var)


def bandpass_channel_stats(params: np.ndarray, flag: np.ndarray, *, nsigma: float = 5.0,
                           min_chan: int = 32) -> dict[str, np.ndarray]:
    """Noise and outlier channels of complex bandpass solutions, per antenna.

    For each antenna and polarisation (unflagged channels taken in order): amplitude
    divided by its median; phase unwrapped along frequency (deg); :func:`smooth_residuals` of
    both. Noise = rms of the normalised residuals (max over polarisations); an outlier channel
    has an amplitude or phase residual beyond `nsigma` x the robust (1.4826 MAD) rms of that
    antenna/pol. Antennas whose phases are all zero (the reference antenna) get NaN phase
    noise. Fewer than `min_chan` (32) unflagged channels: NaN - the 5-point fit removes
    ripples longer than ~8 channels only, so with fewer channels bandpass structure (e.g. the
    simulator's ripple, periods down to 1/8 of the spw) cannot be told from noise.

    Parameters
    ----------
    params : complex[n_ant, n_chan, n_pol]
    flag : bool[n_ant, n_chan, n_pol]

    Returns
    -------
    dict
        ``amp_rms`` (fraction), ``phase_rms_deg``, ``n_outlier``, ``n_valid`` - float/int
        arrays of shape (n_ant,).
    """
    p = np.asarray(params)
    fl = np.asarray(flag, bool)
    if p.ndim != 3 or fl.shape != p.shape:
        raise ParameterError(f"params shape {p.shape} / flag shape {fl.shape}; valid: equal "
                             f"(n_ant, n_chan, n_pol) shapes")
    fl = fl | ~np.isfinite(p) | (p == 0)
    n_ant = p.shape[0]
    amp_rms = np.full(n_ant, np.nan)
    ph_rms = np.full(n_ant, np.nan)
    n_out = np.zeros(n_ant, np.int64)
    n_valid = np.zeros(n_ant, np.int64)
    for a in range(n_ant):
        for c in range(p.shape[2]):
            good = ~fl[a, :, c]
            if good.sum() < min_chan:
                continue
            z = p[a, good, c].astype(np.complex128)
            amp = np.abs(z)
            ra = smooth_residuals(amp / np.median(amp))
            ph = np.degrees(np.unwrap(np.angle(z)))
            is_ref = np.all(np.abs(np.angle(z)) < 1e-6)
            rp = smooth_residuals(ph)
            amp_rms[a] = np.nanmax([amp_rms[a], float(np.sqrt(np.mean(ra**2)))])
            out = _robust_outliers(ra, nsigma)
            if not is_ref:
                ph_rms[a] = np.nanmax([ph_rms[a], float(np.sqrt(np.mean(rp**2)))])
                out |= _robust_outliers(rp, nsigma)
            n_out[a] += int(out.sum())
            n_valid[a] += int(good.sum())
    return dict(amp_rms=amp_rms, phase_rms_deg=ph_rms, n_outlier=n_out, n_valid=n_valid)


def _robust_outliers(r: np.ndarray, nsigma: float) -> np.ndarray:
    mad = 1.4826 * float(np.median(np.abs(r - np.median(r))))
    if mad <= 0:
        return np.zeros(r.shape, bool)
    return np.abs(r - np.median(r)) > nsigma * mad


def bandpass_amp_rms_score(amp_rms: Mapping[Key, float]) -> QAScore:
    """Noisy bandpass amplitudes: per-channel amplitude noise (fraction of the median).

    Value = the largest :func:`bandpass_channel_stats` ``amp_rms`` over (spw, antenna).
    fastcal mapping tied to hifa_bandpass's SNR targets (a channel noise of 1/SNR):
    <= 1/20 (5 %, ``minbpsnr=20``) -> 1.0; 5..10 % -> 1.0..0.67; 10..20 % (SNR 5) ->
    0.66..0.33; 20..50 % -> 0.33..0.
    """
    items = _finite_items(amp_rms, "amp_rms")
    worst = max(items, key=items.get)
    v = items[worst]
    score = band_mapping(v, 0.05, 0.10, 0.20, 0.50)
    pct = {k: 100 * x for k, x in items.items()}
    msg = _worst_message(pct, worst, "bandpass amplitude noise", ".1f", 10.0, "%")
    return QAScore("bandpass_amp_rms", v, score, msg, "fraction", _where(worst))


def bandpass_phase_rms_score(phase_rms_deg: Mapping[Key, float]) -> QAScore:
    """Noisy bandpass phases: per-channel phase noise (deg) after removing a smooth fit.

    Same thresholds as :func:`bandpass_amp_rms_score` in radians: <= 2.9 deg (1/20 rad) ->
    1.0; 2.9..5.7 -> 1.0..0.67; 5.7..11.5 -> 0.66..0.33; 11.5..28.6 deg -> 0.33..0.
    """
    items = _finite_items(phase_rms_deg, "phase_rms_deg")
    worst = max(items, key=items.get)
    v = items[worst]
    d = math.degrees
    score = band_mapping(v, d(0.05), d(0.10), d(0.20), d(0.50))
    msg = _worst_message(items, worst, "bandpass phase noise", ".1f", d(0.10), " deg")
    return QAScore("bandpass_phase_rms", v, score, msg, "deg", _where(worst))


def bandpass_outlier_score(counts: Mapping[Key, tuple[int, int]]) -> QAScore:
    """Outlier bandpass channels: fraction of the unflagged channels of an antenna (both
    polarisations) whose amplitude or phase departs from the smooth fit by > 5 sigma.

    Value = the largest fraction over (spw, antenna). fastcal mapping: <= 2 % -> 1.0;
    2..10 % -> 1.0..0.67; 10..25 % -> 0.66..0.33; 25..50 % -> 0.33..0.
    """
    frac = {k: n / v for k, (n, v) in counts.items() if v > 0}
    items = _finite_items(frac, "counts")
    worst = max(items, key=items.get)
    score = band_mapping(items[worst], 0.02, 0.10, 0.25, 0.50)
    pct = {k: 100 * x for k, x in items.items()}
    n, tot = counts[worst]
    msg = _worst_message(pct, worst, "bandpass outlier channels", ".1f", 10.0, "%")
    msg += f" ({n} of {tot} channel-polarisations)"
    return QAScore("bandpass_outliers", items[worst], score, msg, "fraction", _where(worst))


# ---- gains


def consecutive_scatter(params: np.ndarray, flag: np.ndarray, groups: np.ndarray, *,
                        kind: str) -> np.ndarray:
    """Per-solution scatter of gains from the differences between consecutive solutions.

    Parameters
    ----------
    params : complex[n_time, n_ant, n_pol]
        Gains of one spw (single channel), time-ordered.
    flag : bool[n_time, n_ant, n_pol]
    groups : int[n_time]
        Solutions are compared only with the previous one of the same group (e.g. the scan
        for per-integration solutions, the field for per-scan ones).
    kind : {"phase", "amp"}
        ``phase``: wrapped phase difference (deg); ``amp``: log amplitude ratio (~ fractional
        change).

    Returns
    -------
    numpy.ndarray
        float64[n_ant]: rms of the differences / sqrt(2) (the scatter of one solution if the
        errors are independent), max over polarisations; NaN without any pair.
    """
    p = np.asarray(params)
    fl = np.asarray(flag, bool)
    g = np.asarray(groups)
    if kind not in ("phase", "amp"):
        raise ParameterError(f"kind={kind!r} is invalid; valid: 'phase', 'amp'")
    if p.ndim != 3 or fl.shape != p.shape or g.shape != (p.shape[0],):
        raise ParameterError(f"params {p.shape}, flag {fl.shape}, groups {g.shape}; valid: "
                             f"(n_time, n_ant, n_pol), the same, (n_time,)")
    fl = fl | ~np.isfinite(p) | (p == 0)
    out = np.full(p.shape[1], np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        for a in range(p.shape[1]):
            for c in range(p.shape[2]):
                diffs = []
                for grp in np.unique(g):
                    idx = np.flatnonzero((g == grp) & ~fl[:, a, c])
                    if idx.size < 2:
                        continue
                    z = p[idx, a, c].astype(np.complex128)
                    if kind == "phase":
                        d = np.degrees(np.angle(z[1:] * np.conj(z[:-1])))
                    else:
                        d = np.log(np.abs(z[1:]) / np.abs(z[:-1]))
                    diffs.append(d)
                if diffs:
                    d = np.concatenate(diffs)
                    s = float(np.sqrt(np.mean(d**2)) / math.sqrt(2.0))
                    out[a] = s if not np.isfinite(out[a]) else max(out[a], s)
    return out


def gain_phase_scatter_score(scatter_deg: Mapping[Key, float], table: str = "") -> QAScore:
    """Noisy phase corrections: :func:`consecutive_scatter` of a phase table (deg).

    Includes the real atmospheric phase changes between solutions as well as the noise.
    fastcal mapping: <= 15 deg -> 1.0; 15..30 -> 1.0..0.67; 30..60 -> 0.66..0.33;
    60..90 deg -> 0.33..0 (one-solution noise of 1/SNR rad: 30 deg is SNR ~ 2).
    """
    items = _finite_items(scatter_deg, "scatter_deg")
    worst = max(items, key=items.get)
    score = band_mapping(items[worst], 15.0, 30.0, 60.0, 90.0)
    msg = _worst_message(items, worst, f"{table + ': ' if table else ''}phase scatter between "
                         f"consecutive solutions", ".1f", 30.0, " deg")
    return QAScore("gain_phase_scatter", items[worst], score, msg, "deg", _where(worst))


def gain_amp_scatter_score(scatter: Mapping[Key, float], table: str = "") -> QAScore:
    """Noisy amplitude corrections: :func:`consecutive_scatter` ``kind='amp'`` (fraction).

    fastcal mapping: <= 5 % -> 1.0; 5..10 % -> 1.0..0.67; 10..20 % -> 0.66..0.33;
    20..40 % -> 0.33..0.
    """
    items = _finite_items(scatter, "scatter")
    worst = max(items, key=items.get)
    score = band_mapping(items[worst], 0.05, 0.10, 0.20, 0.40)
    pct = {k: 100 * x for k, x in items.items()}
    msg = _worst_message(pct, worst, f"{table + ': ' if table else ''}amplitude scatter between "
                         f"consecutive solutions", ".1f", 10.0, "%")
    return QAScore("gain_amp_scatter", items[worst], score, msg, "fraction", _where(worst))


def gain_snr_score(median_snr: float, target: float, table: str = "") -> QAScore:
    """Median SNR of the unflagged gain solutions of a table against a target SNR.

    r = SNR / target: >= 1 -> 1.0; 0.5..1 -> 0.67..1.0; 0.25..0.5 -> 0.34..0.66; below ->
    linear 0..0.33. Targets used by the qa stage (fastcal's choice): per-integration phases
    ``intphasesnr`` 5, per-scan phases on the phase calibrator ``phasesnr`` 32, per-scan
    amplitudes 20 (5 % amplitude error).
    """
    if not math.isfinite(median_snr) or median_snr < 0 or not target > 0:
        raise ParameterError(f"median_snr={median_snr!r}, target={target!r}; valid: SNR >= 0, "
                             f"target > 0")
    r = median_snr / target
    if r >= 1.0:
        score = 1.0
    elif r >= 0.5:
        score = linear_score(r, 0.5, 1.0, 0.67, 1.0)
    elif r >= 0.25:
        score = linear_score(r, 0.25, 0.5, 0.34, 0.66)
    else:
        score = linear_score(r, 0.0, 0.25, 0.0, 0.33)
    return QAScore("gain_snr", median_snr, score,
                   f"{table + ': ' if table else ''}median solution SNR {median_snr:.1f} "
                   f"(target {target:g})", "SNR", table)
