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

Use of the mapping (:func:`phase_plan`, :func:`solve_phase`): the phase solves of
gfluxscaleflag, fluxscale and timegaincal use the mapping of the phase calibrator(s) (intent
PHASE; with several that disagree, a combining one, else the first that maps something):
without combination every spw is solved as before and the table is applied with
``spwmap`` (``interp='linear'``); with combination each group is solved with
``combine='spw'``, ``gaintype='T'`` (one table, the groups' solutions under their lowest
spw) and applied with the combination ``spwmap`` and ``interp='linearPD'`` (the pipeline's
``get_phaseup_overrides``).

Spw phase offsets: when the mapping re-maps or combines spws, the stage also solves the
pipeline's phase-offset table (``spwphaseup_offsets``): ``calmode='p'``, ``gaintype='G'``,
``solint='inf'`` per scan, ``minsnr=3``, ``minblperant=4`` per spw on the bandpass
calibrator, with the prior tables and the bandpass pre-applied, registered for every intent
(``gainfield=''``, ``interp='linear'``, ``calwt=False``) and pre-applied by the later solves.
It carries each spw's instrumental phase relative to the others (the bandpass is normalised
to zero mean phase per spw), which a mapped or combined spw would otherwise take from
another spw. The pipeline registers this table always; fastcal only when a mapping is in use,
so an unmapped run is unchanged.

QA (the pipeline's ``score_phaseup_spw_median_snr_for_phase`` / ``..._for_check`` and
``score_phaseup_mapping_fraction``): per field and spw that is not re-mapped, median SNR
<= 0.3 / 0.5 / 0.75 x ``phasesnr`` -> 0.33 / 0.66 / 0.9, else 1.0 (check sources: 0.7 / 0.8 /
0.9); mapping: none -> 1.0, within one sideband -> 0.9, across sidebands or combined -> 0.66.

Not in this version: the SNR estimate from the catalogue, the decoherence (phase RMS)
assessment, the pipeline's shorter combined-spw ``solint`` for the per-integration phase
table (a quarter of the shortest phase scan), per-field mappings (one mapping serves all
phase calibrators) and the check source's own mapping (the check source gets the phase
calibrator's solutions); the temporary SNR tables stay in ``working/``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from fastcal.errors import ParameterError
from fastcal.pipeline.context import Context
from fastcal.pipeline.qa import QAScore
from fastcal.pipeline.stage import OK, SKIPPED, Stage, StageResult

__all__ = ["SpwMapping", "SpwphaseupStage", "PhasePlan", "spw_mapping", "spw_groups", "spw_snr_score",
           "spw_mapping_score", "select_phase_mapping", "phase_mapping", "phase_plan", "phase_prior",
           "solve_phase", "merge_caltables", "PHASESNR", "OFFSETS_TABLE"]

logger = logging.getLogger(__name__)

PHASESNR = 32.0
_PRIOR = ("antpos", "tsys", "wvr", "bandpass")
#: Name of the spw phase-offset table in the cal library.
OFFSETS_TABLE = "spwphaseup_offsets"


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


# ---------------------------------------------------------------- using the mapping


def select_phase_mapping(fields: Mapping[str, Any]) -> SpwMapping | None:
    """The one mapping used for the phase solutions, from spwphaseup's ``outputs["fields"]``.

    Only fields with ``intent == "PHASE"`` count. None when no such field re-maps or combines
    spws; else, when they disagree, the first combining mapping, otherwise the first that
    re-maps something (a warning names the fields).

    Parameters
    ----------
    fields : dict
        Field name -> dict with ``intent`` and ``mapping`` (:meth:`SpwMapping.to_dict`).

    Returns
    -------
    SpwMapping or None
    """
    maps = {}
    for name, f in fields.items():
        if f.get("intent", "PHASE") != "PHASE" or "mapping" not in f:
            continue
        m = f["mapping"]
        try:
            maps[name] = SpwMapping(**m)
        except TypeError as exc:
            raise ParameterError(f"spwphaseup mapping of field {name!r} is invalid ({m!r}): {exc}") from exc
    used = {k: m for k, m in maps.items() if m.spwmap}
    if not used:
        return None
    first = next(iter(used.values()))
    distinct = {(tuple(m.spwmap), m.combine, m.gaintype) for m in maps.values()}
    if len(distinct) > 1:
        pick = next((k for k, m in used.items() if m.combine), next(iter(used)))
        logger.warning("spwphaseup: phase calibrators %s have different spw mappings; using that of %s (%s)",
                       sorted(maps), pick, used[pick].spwmap)
        return used[pick]
    return first


def phase_mapping(ctx: Context) -> SpwMapping | None:
    """The spwphaseup mapping for the phase solutions of `ctx`, or None (stage not run, or
    it mapped nothing): :func:`select_phase_mapping` of its result."""
    res = ctx.results.get("spwphaseup") or {}
    if res.get("status") != OK:
        return None
    return select_phase_mapping((res.get("outputs") or {}).get("fields") or {})


@dataclass
class PhasePlan:
    """How the phase solves and their application follow a spw mapping.

    ``groups``: spws solved together (one solve per group when ``combine == "spw"``; else one
    group of every science spw); ``combine``/``gaintype``: solve parameters; ``spwmap``/
    ``interp``: apply parameters of the table; ``mapping``: the source (None = identity).
    """

    groups: list[list[int]]
    combine: str = ""
    gaintype: str = "G"
    spwmap: list[int] = field(default_factory=list)
    interp: str = "linear"
    mapping: SpwMapping | None = None

    @property
    def mapped(self) -> bool:
        return bool(self.spwmap)

    def solve_kwargs(self) -> dict[str, Any]:
        """``combine``/``gaintype`` for solve_gains (empty without a mapping, so the calls are
        the same as without spwphaseup)."""
        return dict(combine=self.combine, gaintype=self.gaintype) if self.combine else {}

    def describe(self) -> str:
        if not self.mapped:
            return "no spw mapping"
        if self.combine:
            return f"spws combined (groups {self.groups}, gaintype T), applied with spwmap {self.spwmap}, linearPD"
        return f"applied with spwmap {self.spwmap}"


def phase_plan(ctx: Context, spws: Sequence[int] | None = None) -> PhasePlan:
    """:class:`PhasePlan` of `ctx` for `spws` (default the science spws).

    Raises
    ------
    ParameterError
        The mapping sends a spw to one that is not among `spws` (spwphaseup ran with other
        science spws: run it again).
    """
    spws = [int(s) for s in (ctx.science_spws if spws is None else spws)]
    m = phase_mapping(ctx)
    if m is None:
        return PhasePlan(groups=[spws])
    target = {s: m.mapped_to(s) for s in spws}
    bad = {s: t for s, t in target.items() if t not in spws}
    if bad:
        raise ParameterError(f"spwphaseup spwmap {m.spwmap} maps spw(s) {sorted(bad)} to {sorted(set(bad.values()))}, "
                             f"not among the science spws {sorted(spws)}; run spwphaseup again")
    if not m.combine:
        return PhasePlan(groups=[spws], spwmap=list(m.spwmap), mapping=m)
    groups: dict[int, list[int]] = {}
    for s in sorted(spws):
        groups.setdefault(target[s], []).append(s)
    return PhasePlan(groups=[groups[k] for k in sorted(groups)], combine="spw", gaintype="T",
                     spwmap=list(m.spwmap), interp="linearPD", mapping=m)


def phase_prior(ctx: Context, names: Sequence[str]) -> list[str]:
    """`names` (registered prior tables) plus the spw phase-offset table when registered."""
    return list(names) + ([OFFSETS_TABLE] if any(e.name == OFFSETS_TABLE for e in ctx.callib) else [])


def calibrator_prior(ctx: Context, stage: str) -> list[str]:
    """Tables a post-bandpass gain solve of `stage` pre-applies: the registered prior tables
    (antpos, Tsys, WVR), the bandpass and the spw phase-offset table when registered.

    Raises ParameterError naming `stage` when the bandpass table is not registered yet.
    """
    from fastcal.pipeline.stages.bandpass import PRIOR_TABLES

    try:
        ctx.callib.get("bandpass")
    except ParameterError as exc:
        raise ParameterError(f"{stage} needs the bandpass table; run the bandpass stage first") from exc
    return phase_prior(ctx, [n for n in PRIOR_TABLES if any(e.name == n for e in ctx.callib)] + ["bandpass"])


def solve_phase(ctx: Context, plan: PhasePlan, caltable: str, *, field: str, solint: str, minsnr: float,
                pre: Mapping[str, list], minblperant: int = 4):
    """Phase-only solve of `field` following `plan` (recorded through ``ctx.call``).

    One :func:`fastcal.solve.solve_gains` call over every spw of the plan's groups, or, with
    several combined groups, one call per group into ``working/`` and
    :func:`merge_caltables` into `caltable`.

    Returns
    -------
    CalTable
    """
    from fastcal.solve import solve_gains

    common = dict(vis=ctx.vis, field=field, solint=solint, calmode="p", refant=",".join(ctx.refant),
                  minblperant=minblperant, minsnr=minsnr, overwrite=True, **plan.solve_kwargs(), **pre)
    if len(plan.groups) == 1:
        return ctx.call(solve_gains, caltable=caltable, spw=",".join(map(str, plan.groups[0])), **common)
    parts = []
    for g in plan.groups:
        part = ctx.path("working", f"{os.path.basename(caltable.rstrip('/'))}.spw{g[0]}")
        ctx.call(solve_gains, caltable=part, spw=",".join(map(str, g)), **common)
        parts.append(part)
    return ctx.call(merge_caltables, tables=parts, caltable=caltable, overwrite=True)


def merge_caltables(tables: Sequence[str], caltable: str, overwrite: bool = False):
    """Write the rows of several caltables of one type and disjoint spws into one (CASA
    ``gaincal(append=True)``/``bandpass(append=True)`` for per-group solves). Spws may have
    different solution-channel counts: cells are padded to the largest with flagged values.

    Parameters
    ----------
    tables : sequence of str
        Input caltables (same ``VisCal`` type, no spw in two of them).
    caltable : str
        Output path.
    overwrite : bool
        Replace an existing `caltable`.

    Returns
    -------
    CalTable

    Raises
    ------
    ParameterError
        No table, different types, or a spw in two tables.
    """
    import dataclasses

    from fastcal.caltable import read_caltable

    if not tables:
        raise ParameterError("merge_caltables: tables is empty; valid: at least one caltable path")
    tabs = [read_caltable(t) for t in tables]
    types = {t.vis_cal for t in tabs}
    if len(types) > 1:
        raise ParameterError(f"merge_caltables: tables {list(tables)} have different types {sorted(types)}; "
                             f"valid: one type")
    seen: dict[int, str] = {}
    for path, t in zip(tables, tabs, strict=True):
        for s in np.unique(t.spw_id).tolist():
            if s in seen:
                raise ParameterError(f"merge_caltables: spw {s} is in both {seen[s]} and {path}; valid: "
                                     f"disjoint spws")
            seen[s] = path
    # spws of different solution-channel counts (bandpasses with per-spw frequency solints):
    # cells padded to the largest count with flagged placeholders, as CASA stores such tables
    n_chan = max(t.params.shape[1] for t in tabs)
    fill = {"params": 1.0 + 0.0j, "paramerr": 0.0, "snr": 0.0, "flag": True, "weight": 0.0}

    def pad(a, v):
        out = np.full((a.shape[0], n_chan, *a.shape[2:]), v, a.dtype)
        out[:, :a.shape[1]] = a
        return out

    cat = {k: np.concatenate([getattr(t, k) for t in tabs]) for k in
           ("time", "interval", "field_id", "spw_id", "antenna1", "antenna2", "scan", "obs_id")}
    cat.update({k: np.concatenate([pad(getattr(t, k), fill[k]) for t in tabs])
                for k in ("params", "paramerr", "snr", "flag")})
    weight = None if any(t.weight is None for t in tabs) else \
        np.concatenate([pad(t.weight, fill["weight"]) for t in tabs])
    freq: dict[int, np.ndarray] = {}
    width: dict[int, np.ndarray] = {}
    for t in tabs:
        freq.update({s: v for s, v in t.chan_freq.items() if s in t.spw_id})
        width.update({s: v for s, v in t.chan_width.items() if s in t.spw_id})
    for t in tabs:  # spws without rows keep the first table's axes
        for s, v in t.chan_freq.items():
            freq.setdefault(s, v)
        for s, v in t.chan_width.items():
            width.setdefault(s, v)
    extra: dict[str, Any] = {}
    for t in tabs:  # per-spw dicts (solvestats) merged, other keys from the first table
        for k, v in t.extra.items():
            if isinstance(v, dict) and isinstance(extra.get(k), dict):
                extra[k] = {**extra[k], **v}
            else:
                extra.setdefault(k, v)
    extra["merged_from"] = [os.path.abspath(p) for p in tables]
    out = dataclasses.replace(tabs[0], **cat, weight=weight, chan_freq=freq, chan_width=width, path=None,
                              extra=extra)
    out.write(caltable, overwrite=overwrite)
    return out


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
    """Per-spw phase SNR of the phase calibrators, the spw mapping and, when spws are mapped,
    the spw phase-offset table (simplified)."""

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
        chosen = select_phase_mapping(per_field)
        offsets = self._offsets(ctx, chosen, spws, pre, msgs)
        msgs.append("simplified: SNR measured by a per-scan phase solve (no catalogue estimate); one mapping for all "
                    "phase calibrators; phase-offset table only when spws are mapped")
        return StageResult(self.name, OK, inputs=dict(phasesnr=PHASESNR, prior_tables=prior, fields=phase + check),
                           outputs=dict(fields=per_field, phase_mapping=chosen.to_dict() if chosen else None,
                                        offsets_table=offsets), qa=qa, messages=msgs)

    def _offsets(self, ctx: Context, chosen: SpwMapping | None, spws: list[int], pre: dict[str, list],
                 msgs: list[str]) -> str | None:
        """Solve and register the spw phase-offset table when `chosen` maps spws (module doc)."""
        from fastcal.solve import solve_gains

        if chosen is None:
            msgs.append("phase solutions: no spw mapping (gfluxscaleflag, fluxscale, timegaincal solve every spw)")
            return None
        bp = list(ctx.roles.get("bandpass", []))
        how = (f"combine spws {chosen.spwmap}, gaintype T" if chosen.combine else f"spwmap {chosen.spwmap}")
        if not bp:
            msgs.append(f"phase solutions: {how}; no bandpass calibrator, so no spw phase-offset table (mapped "
                        f"spws get the instrumental phase of the spw they are mapped to)")
            return None
        path = ctx.path("calibration", f"{ctx.vis_name}.{OFFSETS_TABLE}.tbl")
        ctx.call(solve_gains, vis=ctx.vis, caltable=path, field=",".join(bp), spw=",".join(map(str, spws)),
                 solint="inf", calmode="p", gaintype="G", refant=",".join(ctx.refant), minblperant=4, minsnr=3.0,
                 overwrite=True, **pre)
        ctx.register_table(OFFSETS_TABLE, path, interp="linear", gainfield="", calwt=False)
        msgs.append(f"phase solutions: {how} (used by gfluxscaleflag, fluxscale, timegaincal); spw phase offsets "
                    f"from {', '.join(bp)} registered ({os.path.basename(path)})")
        return path
