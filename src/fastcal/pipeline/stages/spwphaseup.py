"""spwphaseup: per-spw phase SNR of the phase calibrators and the spw mapping / combination
for the phase solutions (hifa_spwphaseup, reference section 8 stage 14), *simplified*.

SNR (measured, not estimated): for each phase-calibrator (and check-source) field, a
temporary phase-only gaincal per scan (``solint='inf'``, ``calmode='p'``, ``minsnr=3``,
``minblperant=4``, the registered antpos/Tsys/WVR/bandpass tables pre-applied), and the
median SNR of its unflagged solutions per science spw. The pipeline first *estimates* the SNR
from the catalogue flux, Tsys, antennas and scan time (gaincalsnr) to choose the mapping, and
measures it afterwards with the same kind of diagnostic solve for its QA; fastcal uses the
measured value for both.

Mapping (:func:`spw_mapping`, the pipeline's ``hm_spwmapmode='auto'``; ``phasesnr = 32``):

* every spw at or above ``phasesnr``: no mapping (``spwmap = []``);
* some below: within each group of spws (fastcal's stand-in for the SpectralSpec: the spws
  whose names share the text before ``#ALMA_RB``, else all science spws), a low spw is mapped
  to the group's highest-SNR good spw (``snr_n2wspwmap``); if a group has no good spw, the
  whole map falls back to combination;
* none good (or that fallback): ``combine='spw'``, every spw of a group mapped to the group's
  lowest spw id (``combine_spwmap``), ``gaintype='T'``; the combined SNR of a group is the
  root sum of squares of its spws' SNRs, and the groups below ``phasesnr`` are reported
  (``low_combined_snr_spws``);
* no SNR at all (every solution flagged): no mapping, with a warning (the pipeline then maps
  narrow spws to wide ones by bandwidth, not implemented here).

QA (the pipeline's ``score_phaseup_spw_median_snr_for_phase`` / ``..._for_check`` and
``score_phaseup_mapping_fraction``): per field and spw that is not re-mapped, median SNR
<= 0.3 / 0.5 / 0.75 x ``phasesnr`` -> 0.33 / 0.66 / 0.9, else 1.0 (check sources: 0.7 / 0.8 /
0.9); mapping: none -> 1.0, within one sideband -> 0.9, across sidebands or combined -> 0.66.

Not in this version: the spw-to-spw phase-offset table on the bandpass calibrator, the
decoherence (phase RMS) assessment, and the use of the mapping by timegaincal (the result is
in ``outputs``; the temporary tables stay in ``working/``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from fastcal.errors import ParameterError
from fastcal.pipeline.context import Context
from fastcal.pipeline.qa import QAScore
from fastcal.pipeline.stage import OK, SKIPPED, Stage, StageResult

__all__ = ["SpwMapping", "SpwphaseupStage", "spw_mapping", "spw_groups", "spw_snr_score", "spw_mapping_score",
           "PHASESNR"]

logger = logging.getLogger(__name__)

PHASESNR = 32.0
_PRIOR = ("antpos", "tsys", "wvr", "bandpass")


@dataclass
class SpwMapping:
    """A spw map for phase solutions.

    ``spwmap``: CASA spwmap (``[]`` = identity); ``combine``: solve with ``combine='spw'``;
    ``gaintype``: ``'G'`` or ``'T'``; ``low_combined_snr_spws``: spws whose combined SNR is
    still below the threshold; ``combined_snr``: group's reference spw -> combined SNR;
    ``no_snr``: spws without a measured SNR.
    """

    spwmap: list[int] = field(default_factory=list)
    combine: bool = False
    gaintype: str = "G"
    low_combined_snr_spws: list[int] = field(default_factory=list)
    combined_snr: dict[str, float] = field(default_factory=dict)
    no_snr: list[int] = field(default_factory=list)

    def mapped_to(self, spw: int) -> int:
        return self.spwmap[spw] if self.spwmap and spw < len(self.spwmap) else spw

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def spw_groups(names: Mapping[int, str]) -> dict[int, str]:
    """Group key of each spw: the name's text before ``#ALMA_RB`` (ALMA spw names), else ''."""
    out = {}
    for s, n in names.items():
        m = re.match(r"^(.*?)#ALMA_RB", str(n))
        out[int(s)] = m.group(1) if m else ""
    return out


def spw_mapping(snrs: Mapping[int, float | None], groups: Mapping[int, str] | None = None,
                phasesnr: float = PHASESNR) -> SpwMapping:
    """The pipeline's 'auto' spw mapping from per-spw SNRs (module docstring).

    Parameters
    ----------
    snrs : dict
        Science spw -> median phase SNR (None or NaN = not measured).
    groups : dict, optional
        Science spw -> group key (SpectralSpec stand-in); default one group.
    phasesnr : float
        SNR threshold (> 0).

    Returns
    -------
    SpwMapping
    """
    if not phasesnr > 0:
        raise ParameterError(f"phasesnr={phasesnr!r} is invalid; valid: > 0")
    if not snrs:
        raise ParameterError("spw_mapping: no spws given")
    spws = sorted(int(s) for s in snrs)
    groups = {s: (groups or {}).get(s, "") for s in spws}
    val = {s: (float(snrs[s]) if snrs[s] is not None and np.isfinite(snrs[s]) else None) for s in spws}
    out = SpwMapping(no_snr=[s for s in spws if val[s] is None])
    good = {s for s in spws if val[s] is not None and val[s] >= phasesnr}
    if len(out.no_snr) == len(spws):
        logger.warning("spwphaseup: no SNR for any spw %s; standard (identity) spw map", spws)
        return out
    if len(good) == len(spws) or len(spws) == 1:
        return out
    if good:
        spwmap = list(range(max(spws) + 1))
        goodmap = True
        for g in set(groups.values()):
            members = [s for s in spws if groups[s] == g]
            best = [s for s in members if s in good]
            if not best:
                goodmap = False
                break
            target = max(best, key=lambda s: (val[s], -s))
            for s in members:
                if s not in good:
                    spwmap[s] = target
        if goodmap:
            out.spwmap = spwmap
            return out
        logger.warning("spwphaseup: a spw group has no spw with SNR >= %g; combining spws", phasesnr)
    spwmap = list(range(max(spws) + 1))
    for g in set(groups.values()):
        members = [s for s in spws if groups[s] == g]
        ref = min(members)
        for s in members:
            spwmap[s] = ref
        comb = float(np.linalg.norm([val[s] or 0.0 for s in members]))
        out.combined_snr[str(ref)] = comb
        if comb < phasesnr:
            out.low_combined_snr_spws += members
    out.spwmap, out.combine, out.gaintype = spwmap, True, "T"
    return out


def spw_snr_score(median_snr: float, phasesnr: float = PHASESNR, *, check: bool = False,
                  applies_to: str = "") -> QAScore:
    """Median phase SNR of a spw -> score (pipeline ``score_phaseup_spw_median_snr_for_phase``;
    ``check=True``: ``..._for_check``, scores 0.7 / 0.8 / 0.9)."""
    if not (np.isfinite(median_snr) and median_snr >= 0 and phasesnr > 0):
        raise ParameterError(f"median_snr={median_snr!r}, phasesnr={phasesnr!r} are invalid; valid: SNR >= 0, "
                             f"phasesnr > 0")
    r = median_snr / phasesnr
    scores = (0.7, 0.8, 0.9) if check else (0.33, 0.66, 0.9)
    score = scores[0] if r <= 0.3 else scores[1] if r <= 0.5 else scores[2] if r <= 0.75 else 1.0
    return QAScore("spwphaseup_snr", float(median_snr), score,
                   f"{applies_to}: median phase SNR {median_snr:.1f} ({100 * r:.0f}% of phasesnr={phasesnr:g})",
                   "SNR", applies_to)


def spw_mapping_score(mapping: SpwMapping, sidebands: Mapping[int, int], applies_to: str = "") -> QAScore:
    """Mapping -> score (pipeline ``score_phaseup_mapping_fraction``): none 1.0; combined 0.66;
    re-mapped within one sideband 0.9, across sidebands 0.66."""
    if mapping.combine:
        return QAScore("spwphaseup_mapping", 0.0, 0.66, f"{applies_to}: combined spw mapping {mapping.spwmap}",
                       "unmapped spws", applies_to)
    moved = [s for s in sidebands if mapping.mapped_to(s) != s]
    if not moved:
        return QAScore("spwphaseup_mapping", float(len(sidebands)), 1.0, f"{applies_to}: no spw mapping",
                       "unmapped spws", applies_to)
    same = all(sidebands.get(mapping.mapped_to(s)) == sidebands[s] for s in moved)
    return QAScore("spwphaseup_mapping", float(len(sidebands) - len(moved)), 0.9 if same else 0.66,
                   f"{applies_to}: spw mapping {mapping.spwmap} " + ("within" if same else "across") + " sidebands",
                   "unmapped spws", applies_to)


def _median_snr_per_spw(table, spws: Sequence[int]) -> dict[int, float | None]:
    out: dict[int, float | None] = {}
    for s in spws:
        try:
            sol = table.solutions(int(s))
        except Exception:  # no solutions for that spw
            out[int(s)] = None
            continue
        v = np.asarray(sol.snr, np.float64)[~np.asarray(sol.flag, bool)]
        v = v[np.isfinite(v)]
        out[int(s)] = float(np.median(v)) if v.size else None
    return out


class SpwphaseupStage(Stage):
    """Per-spw phase SNR of the phase calibrators and the spw mapping (simplified)."""

    name = "spwphaseup"
    title = "phase SNR per spw and spw mapping for the phase solutions"
    simplified = True

    def run(self, ctx: Context) -> StageResult:
        from fastcal.solve import solve_gains

        phase = list(ctx.roles.get("phase", []))
        check = [f for f in ctx.roles.get("check", []) if f not in phase]
        if not phase + check:
            return StageResult(self.name, SKIPPED, messages=["no phase calibrator: no spw mapping"])
        prior = [n for n in _PRIOR if any(e.name == n for e in ctx.callib)]
        pre = ctx.preapply(*prior)
        spws = [int(s) for s in ctx.science_spws]
        groups = spw_groups({s: ctx.info.spws[s].name for s in spws})
        sidebands = {s: int(ctx.info.spws[s].net_sideband) for s in spws}
        per_field: dict[str, Any] = {}
        qa: list[QAScore] = []
        msgs: list[str] = []
        for fname in phase + check:
            path = ctx.path("working", f"{ctx.vis_name}.spwphaseup_{re.sub(r'[^A-Za-z0-9_.+-]', '_', fname)}.tbl")
            tab = ctx.call(solve_gains, vis=ctx.vis, caltable=path, field=fname, spw=",".join(map(str, spws)),
                           solint="inf", calmode="p", gaintype="G", refant=",".join(ctx.refant), minblperant=4,
                           minsnr=3.0, overwrite=True, **pre)
            snr = _median_snr_per_spw(tab, spws)
            mapping = spw_mapping(snr, groups, PHASESNR)
            is_check = fname in check
            for s in spws:
                if snr[s] is not None and mapping.mapped_to(s) == s:
                    qa.append(spw_snr_score(snr[s], PHASESNR, check=is_check, applies_to=f"{fname} spw {s}"))
            qa.append(spw_mapping_score(mapping, sidebands, fname))
            per_field[fname] = dict(snr={str(k): v for k, v in snr.items()}, mapping=mapping.to_dict(),
                                    intent="CHECK" if is_check else "PHASE", table=path)
            msgs.append(f"{fname}: median SNR " + ", ".join(f"spw {k} {v:.1f}" if v is not None else f"spw {k} -"
                                                             for k, v in snr.items())
                        + (f"; combine spws, spwmap {mapping.spwmap}, gaintype T" if mapping.combine else
                           f"; spwmap {mapping.spwmap}" if mapping.spwmap else "; no spw mapping"))
            if mapping.low_combined_snr_spws:
                msgs.append(f"{fname}: combined SNR still below {PHASESNR:g} for spws {mapping.low_combined_snr_spws}")
        msgs.append("simplified: SNR measured by a per-scan phase solve (no catalogue estimate); no spw phase-offset "
                    "table; timegaincal does not use the mapping in this version")
        return StageResult(self.name, OK, inputs=dict(phasesnr=PHASESNR, prior_tables=prior, fields=phase + check),
                           outputs=dict(fields=per_field), qa=qa, messages=msgs)
