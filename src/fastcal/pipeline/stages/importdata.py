"""importdata: calibration roles of the fields (from intents or options) and an MS summary.

Roles come from the scan intents (``STATE.OBS_MODE``), as hifa_importdata sets them:

===============  ========================================
role             intents (globs)
===============  ========================================
bandpass         ``CALIBRATE_BANDPASS*``
flux             ``CALIBRATE_FLUX*``, ``CALIBRATE_AMPLI*``
phase            ``CALIBRATE_PHASE*``
target           ``OBSERVE_TARGET*``
check            ``OBSERVE_CHECK_SOURCE*``
polarization     ``CALIBRATE_POL*``
===============  ========================================

Options ``bandpass_field``, ``flux_field``, ``phase_field``, ``target_field``,
``check_field`` (comma-separated field names) override the intents role by role; a raw MS
without intents needs at least the bandpass and phase fields given that way, else the stage
stops with a message saying which options to give.

Documented fallbacks (logged, and listed in the stage messages): no flux calibrator -> the
bandpass calibrator sets the flux scale; no bandpass calibrator -> the flux calibrator, else
the phase calibrator, is used for the bandpass; no target -> calibrators only.

Spw roles come from :attr:`fastcal.ms.MSInfo.spw_roles`, which needs the
``CALIBRATE_ATMOSPHERE`` intents to tell Tsys spws from science spws. Without intents
(:func:`spw_roles`): a spw listed in SYSCAL whose rows are all in scans holding no spw outside
SYSCAL (the atmosphere scans) is a Tsys spw, the others science (a TDM spw used for both stays
science), and the stage says so.
"""

from __future__ import annotations

import fnmatch
import logging
from typing import Any

import numpy as np

from fastcal.errors import ParameterError, SelectionError
from fastcal.pipeline.context import Context
from fastcal.pipeline.qa import QAScore
from fastcal.pipeline.stage import OK, Stage, StageResult

__all__ = ["ROLE_INTENTS", "ROLE_OPTIONS", "roles_from_intents", "resolve_roles", "spw_roles",
           "ms_summary", "ImportDataStage"]

logger = logging.getLogger(__name__)

ROLE_INTENTS: dict[str, tuple[str, ...]] = {
    "bandpass": ("CALIBRATE_BANDPASS*",),
    "flux": ("CALIBRATE_FLUX*", "CALIBRATE_AMPLI*"),
    "phase": ("CALIBRATE_PHASE*",),
    "target": ("OBSERVE_TARGET*",),
    "check": ("OBSERVE_CHECK_SOURCE*",),
    "polarization": ("CALIBRATE_POL*",),
}
#: Option name -> role.
ROLE_OPTIONS: dict[str, str] = {f"{r}_field": r for r in ("bandpass", "flux", "phase", "target", "check")}


def roles_from_intents(info) -> dict[str, list[str]]:
    """Role -> names of the fields observed with that role's intents (field id order)."""
    out: dict[str, list[str]] = {}
    for role, pats in ROLE_INTENTS.items():
        ids = sorted({f for s in info.scans for f in s.field_ids
                      if any(fnmatch.fnmatchcase(i, p) for i in s.intents for p in pats)})
        if ids:
            out[role] = [info.fields[i].name for i in ids]
    return out


def _split_names(info, option: str, value: Any) -> list[str]:
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    names = [str(v).strip() for v in items if str(v).strip()]
    valid = list(info.field_names)
    for n in names:
        if n not in valid:
            raise SelectionError(f"{option}={value!r}: {n!r} is not a field of {info.path}; "
                                 f"valid: {', '.join(valid)}")
    return names


def resolve_roles(info, options: dict[str, Any] | None = None) -> tuple[dict[str, list[str]], str, list[str]]:
    """Roles from intents, overridden by options, with the documented fallbacks.

    Returns
    -------
    roles : dict
        Role -> field names.
    source : str
        ``"intents"``, ``"options"`` or ``"intents+options"``.
    messages : list of str
        Fallbacks applied.

    Raises
    ------
    ParameterError
        No intents and no role options; or no bandpass/phase calibrator can be found.
    SelectionError
        An option names a field that is not in the MS.
    """
    options = options or {}
    roles = roles_from_intents(info)
    given = {ROLE_OPTIONS[k]: _split_names(info, k, v) for k, v in options.items()
             if k in ROLE_OPTIONS and v}
    has_intents = bool(roles)
    if not has_intents and not given:
        raise ParameterError(
            f"{info.path} has no scan intents (STATE.OBS_MODE is empty or absent), so the "
            f"calibrator roles are unknown; give them as options: bandpass_field=, phase_field=, "
            f"flux_field=, target_field= (CLI: --bandpass-field, --phase-field, --flux-field, "
            f"--target-field)")
    roles.update(given)
    source = "options" if not has_intents else "intents+options" if given else "intents"
    messages: list[str] = []
    if "bandpass" not in roles:
        alt = "flux" if "flux" in roles else "phase" if "phase" in roles else None
        if alt is None:
            raise ParameterError(f"{info.path}: no bandpass calibrator (no CALIBRATE_BANDPASS intent "
                                 f"and no flux or phase calibrator to fall back on); give "
                                 f"bandpass_field= (--bandpass-field)")
        roles["bandpass"] = list(roles[alt])
        messages.append(f"no bandpass calibrator: using the {alt} calibrator "
                        f"{', '.join(roles[alt])} for the bandpass")
    if "phase" not in roles:
        raise ParameterError(f"{info.path}: no phase calibrator (no CALIBRATE_PHASE intent); give "
                             f"phase_field= (--phase-field)")
    if "flux" not in roles:
        roles["flux"] = list(roles["bandpass"])
        messages.append(f"no flux calibrator: the bandpass calibrator {', '.join(roles['bandpass'])} "
                        f"sets the flux scale")
    if "target" not in roles:
        messages.append("no science target: only the calibrators are calibrated")
    for m in messages:
        logger.warning("%s", m)
    return roles, source, messages


def _syscal_spws(path: str) -> set[int]:
    import os

    from casacore.tables import table

    sub = os.path.join(path, "SYSCAL")
    if not os.path.isdir(sub):
        return set()
    with table(sub, ack=False) as t:
        return {int(s) for s in t.getcol("SPECTRAL_WINDOW_ID")} if t.nrows() else set()


def spw_roles(info) -> tuple[dict[int, str], str]:
    """Spw id -> role (``wvr``, ``chavg``, ``tsys``, ``science``, ``unused``), and a note.

    With scan intents this is :attr:`MSInfo.spw_roles` and the note is "". Without them
    (every scan's OBS_MODE empty) the Tsys spws are the SYSCAL spws whose rows are all in scans
    with no non-SYSCAL science-like spw (the atmosphere scans); the note says so.
    """
    roles = dict(info.spw_roles)
    if info.intents:
        return roles, ""
    data = {s for s, r in roles.items() if r == "science"}
    syscal = _syscal_spws(info.path) & data if info.has_syscal else set()
    if not syscal:
        return roles, (f"no scan intents: every spw with data except WVR/channel-average is a science "
                       f"spw ({sorted(data)})")
    atm_scans = [s for s in info.scans if {int(x) for x in s.spw_ids} & data <= syscal]
    other = [s for s in info.scans if s not in atm_scans and {int(x) for x in s.spw_ids} & data]
    tsys = {x for x in syscal if not any(x in s.spw_ids for s in other)} if other else set()
    if not tsys or tsys == data:
        return roles, (f"no scan intents: the SYSCAL spws {sorted(syscal)} also hold science data; all "
                       f"data spws are science spws ({sorted(data)})")
    for x in tsys:
        roles[x] = "tsys"
    return roles, (f"no scan intents: spws {sorted(tsys)} (SYSCAL spws with rows only in scans without "
                   f"other spws) are taken as Tsys spws, {sorted(data - tsys)} as science spws")


def _time_on_source(info, spws: list[int]) -> dict[str, float]:
    """Field name -> integration time (s) over the scans with science-spw rows."""
    idx = info.index
    ddids = [d.id for d in info.ddescs if d.spw_id in spws]
    use = np.isin(idx.ddid, ddids)
    out: dict[str, float] = {}
    for s in info.scans:
        rows = use & (idx.scan == s.number)
        if not rows.any():
            continue
        t = np.unique(idx.time[rows])
        dt = float(np.median(np.diff(t))) if t.size > 1 else 0.0
        for f in s.field_ids:
            name = info.fields[f].name
            out[name] = out.get(name, 0.0) + float(t.size * dt)
    return out


def ms_summary(info, science_spws: list[int], roles: dict[int, str] | None = None) -> dict[str, Any]:
    """JSON-friendly summary of the MS for the context, README and weblog (`roles`: spw roles,
    default :attr:`MSInfo.spw_roles`)."""
    roles = roles if roles is not None else info.spw_roles
    return dict(
        name=info.path.rstrip("/").rsplit("/", 1)[-1], path=info.path, n_rows=info.n_rows,
        telescope=info.telescope_name, time_range=list(info.time_range),
        antennas=list(info.antenna_names), n_ant=len(info.antennas),
        dish_diameter_m=[float(a.dish_diameter) for a in info.antennas],
        spws=[dict(id=s.id, name=s.name, num_chan=s.num_chan, centre_freq_hz=float(s.centre_freq),
                   total_bandwidth_hz=float(s.total_bandwidth), baseband=int(s.baseband),
                   role=roles[s.id]) for s in info.spws],
        fields=[dict(id=f.id, name=f.name) for f in info.fields],
        intents=list(info.intents), has_syscal=bool(info.has_syscal),
        time_on_source_s=_time_on_source(info, science_spws),
        n_scans=len(info.scans),
    )


class ImportDataStage(Stage):
    """Roles of the fields, spw roles and an MS summary into the context."""

    name = "importdata"
    title = "MS summary and calibrator roles"

    def run(self, ctx: Context) -> StageResult:
        ctx.refresh()
        info = ctx.info
        roles, source, messages = resolve_roles(info, ctx.options)
        ctx.roles, ctx.roles_source = roles, source
        sroles, note = spw_roles(info)
        if note:
            logger.warning("%s", note)
            messages.append(note)
        ctx.science_spws = sorted(s for s, r in sroles.items() if r == "science")
        ctx.tsys_spws = sorted(s for s, r in sroles.items() if r == "tsys")
        ctx.wvr_spws = sorted(s for s, r in sroles.items() if r == "wvr")
        if not ctx.science_spws:
            raise ParameterError(f"{info.path} has no science spectral window (spw roles: "
                                 f"{sroles}); nothing to calibrate")
        ctx.ms = ms_summary(info, ctx.science_spws, sroles)
        if source == "options":
            msg = f"no scan intents in {ctx.vis_name}: calibrator roles from the options"
            logger.warning("%s", msg)
            messages.insert(0, msg)
        missing = ([] if info.has_syscal else ["no SYSCAL table: Tsys calibration will be skipped"]) + \
                  ([] if ctx.wvr_spws else ["no WVR spectral window: WVR correction will be skipped"])
        for m in missing:
            logger.warning("%s", m)
        messages += missing
        score = 1.0 if source == "intents" else 0.9
        score -= 0.1 * sum("no flux" in m or "no bandpass" in m for m in messages)
        qa = [QAScore("roles", float(len(roles)), max(score, 0.0),
                      f"roles from {source}: " + "; ".join(f"{r}={','.join(v)}" for r, v in roles.items()),
                      "roles")]
        return StageResult(self.name, OK, inputs={k: ctx.options[k] for k in ROLE_OPTIONS if k in ctx.options},
                           outputs=dict(roles=roles, roles_source=source, science_spws=ctx.science_spws,
                                        tsys_spws=ctx.tsys_spws, wvr_spws=ctx.wvr_spws,
                                        time_on_source_s=ctx.ms["time_on_source_s"]),
                           qa=qa, messages=messages)
