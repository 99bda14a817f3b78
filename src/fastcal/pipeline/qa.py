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

import math
from collections.abc import Iterable, Sequence
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
