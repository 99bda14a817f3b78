"""tsys: the Tsys table (h_tsyscal + hifa_tsysflag, reference section 8 stages 6-7).

``fastcal.tsys.tsys_table`` builds the ``B TSYS`` table from SYSCAL, ``flag_tsys`` flags it
with the hifa_tsysflag metrics (the flagged copy is the one registered), and ``tsys_spwmap``
(``chantol=1``, as h_tsyscal) maps the science spws onto the Tsys spws. The table is
registered with ``interp='linear,linear'``, that spw map and ``calwt=True``.

``gainfield`` per intent (:func:`tsys_gainfield_map`, the pipeline's CAS-12213 / PIPE-2394
mapping for interferometric data): a "Tsys field of intent X" is a field with intent X that
also has ATMOSPHERE scans.

==============  ==========================================================  ======================
data intent     Tsys from (preferred)                                       fallback
==============  ==========================================================  ======================
BANDPASS        the BANDPASS fields with Tsys                               ``'nearest'``
AMPLITUDE       the AMPLITUDE (flux) fields with Tsys                       ``'nearest'``
PHASE           ATMOSPHERE fields without AMP/BP/DIFFGAIN/POL/TARGET        same, TARGET allowed
TARGET, CHECK   ATMOSPHERE fields without AMP/BP/DIFFGAIN/POL/PHASE         same, PHASE allowed
==============  ==========================================================  ======================

So each calibrator gets its own Tsys, and the target (and check source) the target's own
Tsys when it was measured, else the phase calibrator's. Registration
(:func:`tsys_entries`): the intents whose Tsys fields are exactly their own fields (every
field of the intent has ATMOSPHERE scans: the usual case) share the entry ``"tsys"`` with
``gainfield='nearest'`` (for such a field the nearest Tsys field on the sky is itself, so this
is the same selection, and the solver pre-apply of ``"tsys"`` gives every calibrator its own
Tsys); every other intent gets an entry ``"tsys_<intent>"`` restricted to its scans with the
explicit field list. An intent with neither a preferred nor a fallback Tsys field (the
pipeline stops there) gets ``'nearest'`` and a message. Without SYSCAL the stage is skipped
with a message (documented fallback).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from fastcal.pipeline.context import Context
from fastcal.pipeline.qa import QAScore, flagged_fraction_score
from fastcal.pipeline.stage import OK, SKIPPED, PlotSpec, Stage, StageResult

__all__ = ["TsysStage", "pipeline_intents", "tsys_gainfield_map", "tsys_entries", "APPLY_GLOBS"]

logger = logging.getLogger(__name__)

#: OBS_MODE token prefix -> the pipeline's short intent name.
_SHORT = (
    ("CALIBRATE_BANDPASS", "BANDPASS"), ("CALIBRATE_FLUX", "AMPLITUDE"), ("CALIBRATE_AMPLI", "AMPLITUDE"),
    ("CALIBRATE_PHASE", "PHASE"), ("OBSERVE_TARGET", "TARGET"), ("OBSERVE_CHECK", "CHECK"),
    ("CALIBRATE_ATMOSPHERE", "ATMOSPHERE"), ("CALIBRATE_POL_ANGLE", "POLANGLE"),
    ("CALIBRATE_POL_LEAKAGE", "POLLEAKAGE"), ("CALIBRATE_POLARIZATION", "POLARIZATION"),
    ("CALIBRATE_DIFFGAIN#REFERENCE", "DIFFGAINREF"), ("CALIBRATE_DIFFGAIN#SOURCE", "DIFFGAINSRC"),
)

#: Short intent -> OBS_MODE globs of the data it calibrates (CalEntry.intents).
APPLY_GLOBS: dict[str, list[str]] = {
    "BANDPASS": ["CALIBRATE_BANDPASS*"], "AMPLITUDE": ["CALIBRATE_FLUX*", "CALIBRATE_AMPLI*"],
    "PHASE": ["CALIBRATE_PHASE*"], "TARGET": ["OBSERVE_TARGET*"], "CHECK": ["OBSERVE_CHECK*"],
}

_CAL_EXCLUDE = {"AMPLITUDE", "BANDPASS", "DIFFGAINREF", "DIFFGAINSRC", "POLARIZATION", "POLANGLE", "POLLEAKAGE"}


def pipeline_intents(tokens: Sequence[str]) -> set[str]:
    """The pipeline's short intent names (BANDPASS, AMPLITUDE, PHASE, TARGET, CHECK,
    ATMOSPHERE, ...) of OBS_MODE tokens such as ``CALIBRATE_PHASE#ON_SOURCE``."""
    out = set()
    for tok in tokens:
        for prefix, short in _SHORT:
            if tok.startswith(prefix):
                out.add(short)
                break
    return out


def _tsys_fields(fields: Mapping[str, set[str]], intent: str, exclude: set[str] = frozenset()) -> list[str]:
    """Fields with `intent` and ATMOSPHERE scans and none of the `exclude` intents."""
    return [f for f, ints in fields.items() if intent in ints and "ATMOSPHERE" in ints and not (ints & exclude)]


def tsys_gainfield_map(fields: Mapping[str, set[str]]) -> dict[str, str]:
    """Tsys ``gainfield`` per data intent (see the module table).

    Parameters
    ----------
    fields : mapping
        Field name -> its short intents (:func:`pipeline_intents` of its scans' tokens).

    Returns
    -------
    dict
        Short intent (only those present in `fields`) -> comma-separated field names, or
        ``'nearest'`` (BANDPASS/AMPLITUDE fallback, or no Tsys field at all).
    """
    present = set().union(*fields.values()) if fields else set()
    out: dict[str, str] = {}
    for intent in ("BANDPASS", "AMPLITUDE"):
        if intent in present:
            out[intent] = ",".join(_tsys_fields(fields, intent)) or "nearest"
    for intent, other in (("PHASE", "TARGET"), ("TARGET", "PHASE"), ("CHECK", "PHASE")):
        if intent not in present:
            continue
        pref = _tsys_fields(fields, "ATMOSPHERE", _CAL_EXCLUDE | {other})
        fall = _tsys_fields(fields, "ATMOSPHERE", _CAL_EXCLUDE)
        out[intent] = ",".join(pref or fall) or "nearest"
    return out


def tsys_entries(fields: Mapping[str, set[str]]) -> list[tuple[str, str, list[str]]]:
    """``(entry name, gainfield, intent globs)`` to register (see the module docstring).

    The first entry is always ``"tsys"``: the intents whose Tsys fields are their own fields
    (or whose fallback is ``'nearest'`` while each of their fields has Tsys scans), with
    ``gainfield='nearest'`` (or, when there is no such intent, the first intent's mapping).
    """
    gmap = tsys_gainfield_map(fields)
    own, other = [], []
    for intent, gf in gmap.items():
        mine = sorted(f for f, ints in fields.items() if intent in ints)
        if (sorted(gf.split(",")) == mine if gf != "nearest"
                else all("ATMOSPHERE" in fields[f] for f in mine)):  # 'nearest' = itself
            own.append(intent)
        else:
            other.append((intent, gf))
    entries: list[tuple[str, str, list[str]]] = []
    if own:
        entries.append(("tsys", "nearest", [g for i in own for g in APPLY_GLOBS[i]]))
    for intent, gf in other:
        name = "tsys" if not entries else f"tsys_{intent.lower()}"
        entries.append((name, gf, list(APPLY_GLOBS[intent])))
    return entries


def _field_intents(info) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for s in info.scans:
        for f in s.field_ids:
            out.setdefault(info.fields[f].name, set()).update(pipeline_intents(s.intents))
    return out


class TsysStage(Stage):
    """Tsys table from SYSCAL, hifa_tsysflag flagging, Tsys spw map; registered for applycal."""

    name = "tsys"
    title = "Tsys table, tsysflag, Tsys spw map"
    simplified = True

    def run(self, ctx: Context) -> StageResult:
        from fastcal.tsys import flag_tsys, tsys_spwmap, tsys_table

        if not ctx.info.has_syscal:
            return StageResult(self.name, SKIPPED, messages=[
                "no SYSCAL table: Tsys calibration is not applied (amplitudes stay in correlator units)"])
        raw = ctx.path("working", f"{ctx.vis_name}.tsyscal.raw.tbl")
        final = ctx.path("calibration", f"{ctx.vis_name}.tsyscal.tbl")
        ctx.call(tsys_table, vis=ctx.vis, caltable=raw, overwrite=True)
        table, report = ctx.call(flag_tsys, caltable=raw, vis=ctx.vis, output=final, overwrite=True)
        spwmap = ctx.call(tsys_spwmap, vis=ctx.vis, tsystable=final, trim=False, chantol=1)
        spwmap = [int(s) for s in spwmap]
        fields = _field_intents(ctx.info)
        tab_fields = {ctx.info.fields[int(f)].name for f in set(table.field_id.tolist())}
        gmap = tsys_gainfield_map(fields)
        msgs = [report.summary()]
        entries = tsys_entries(fields)
        if not entries:  # no scan intents (roles from the options): one entry for every field
            entries = [("tsys", "nearest", [])]
            msgs.append("no scan intents: Tsys applied to every field with gainfield 'nearest'")
        for name, gf, globs in entries:
            missing = [f for f in gf.split(",") if gf != "nearest" and f not in tab_fields]
            if missing:  # ATMOSPHERE scans but no Tsys solutions (e.g. SYSCAL rows missing)
                msgs.append(f"Tsys for {', '.join(globs)}: fields {missing} have no Tsys solutions; "
                            f"gainfield 'nearest' used instead of {gf!r}")
                gf = "nearest"
            ctx.register_table(name, final, interp="linear,linear", spwmap=spwmap, calwt=True,
                               gainfield=gf, intents=globs)
        none = [i for i, g in gmap.items() if g == "nearest" and i not in ("BANDPASS", "AMPLITUDE")]
        if none:
            msgs.append(f"no Tsys field for intent(s) {none} (the pipeline stops here): gainfield 'nearest'")
        msgs.append("Tsys gainfield per intent: " + ", ".join(f"{i}: {g}" for i, g in gmap.items()))
        measured = {int(s) for s in table.spw_ids}
        unmapped = [s for s in ctx.science_spws if (spwmap[s] if s < len(spwmap) else s) not in measured]
        qa = [flagged_fraction_score(float(report.flagged_after), "Tsys values")]
        if unmapped:
            msgs.append(f"science spw(s) {unmapped} have no Tsys spw (mapped to themselves)")
            qa.append(QAScore("tsys_unmapped_spws", float(len(unmapped)), 0.5,
                              f"science spws without a Tsys spw: {unmapped}", "spws"))
        return StageResult(self.name, OK, inputs=dict(chantol=1),
                           outputs=dict(caltable=final, spwmap=spwmap, flagged_before=report.flagged_before,
                                        flagged_after=report.flagged_after, new_flags=dict(report.new_flags),
                                        gainfield_map=gmap,
                                        entries=[dict(name=n, gainfield=g, intents=i) for n, g, i in entries]),
                           qa=qa, messages=msgs,
                           plots=[PlotSpec("tsys", "Tsys spectra per antenna", {"table": final})])
