"""fluxcalflag: flag the atmospheric lines of solar-system flux calibrators (hifa_fluxcalflag,
reference section 8 stage 3).

For every flux calibrator whose FIELD name is a body of the built-in catalogue
(:mod:`fastcal.pipeline.heuristics_lines`: Mars, Venus, Neptune, Titan; Uranus known, no
lines), the channels of each science spw whose extent overlaps a catalogued line range
(widened by 0.5 km/s for the TOPO/GEO difference, see that module) are flagged in the rows
of that field with the flux intent (``*CALIBRATE_FLUX*``, the pipeline's AMPLITUDE intent),
in all their correlations. Quasars (names not in the catalogue) get nothing.

``threshold = 0.75`` (the pipeline's): a spw with more than 75 % of its channels in lines
cannot give a flux scale of its own; :func:`reference_spwmap` maps it to the unflagged-enough
science spw nearest in centre frequency (the pipeline's ``refspwmap`` for fluxscale, ``[-1]``
when no spw needs mapping or none can serve). The line channels are flagged in every case.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from fastcal.errors import ParameterError, SelectionError
from fastcal.pipeline.context import Context
from fastcal.pipeline.heuristics_lines import (
    TOPO_GEO_MAX_KMS,
    format_channel_ranges,
    line_channel_mask,
    line_ranges_hz,
    lines_for,
)
from fastcal.pipeline.qa import QAScore, agent_flagged_score
from fastcal.pipeline.stage import OK, SKIPPED, Stage, StageResult

__all__ = ["FluxcalflagStage", "FluxcalSummary", "fluxcal_line_channels", "flag_fluxcal_lines",
           "reference_spwmap", "FLUX_INTENT", "THRESHOLD"]

logger = logging.getLogger(__name__)

FLUX_INTENT = "*CALIBRATE_FLUX*"
THRESHOLD = 0.75


@dataclass
class FluxcalSummary:
    """What :func:`flag_fluxcal_lines` found and flagged.

    ``lines``: one dict per (field, line, spw) overlap (species, transition, rest_ghz, spw,
    channels); ``channels``: "field/spw" -> flagged channel indices; ``fraction``:
    "field/spw" -> flagged fraction of the spw's channels; ``refspwmap``: see
    :func:`reference_spwmap`; ``not_solar_system`` / ``no_lines``: fields left alone;
    ``no_flux_rows``: fields without rows of the flux intent; ``n_new``/``n_total``: newly
    flagged / examined visibilities; ``template``: flag-template lines.
    """

    lines: list[dict[str, Any]] = field(default_factory=list)
    channels: dict[str, list[int]] = field(default_factory=dict)
    fraction: dict[str, float] = field(default_factory=dict)
    refspwmap: list[int] = field(default_factory=lambda: [-1])
    not_solar_system: list[str] = field(default_factory=list)
    no_lines: list[str] = field(default_factory=list)
    no_flux_rows: list[str] = field(default_factory=list)
    n_new: int = 0
    n_total: int = 0
    template: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fluxcal_line_channels(info, field_name: str, spws: Sequence[int], margin_kms: float = TOPO_GEO_MAX_KMS
                          ) -> tuple[dict[int, np.ndarray], list[dict[str, Any]]] | None:
    """Line channels of `field_name` in `spws`.

    Returns
    -------
    (masks, overlaps) or None
        ``masks``: spw -> bool[nchan] (only spws with at least one line channel);
        ``overlaps``: one dict per overlapping line. None when the field is not a catalogued
        body.
    """
    lines = lines_for(field_name)
    if lines is None:
        return None
    masks: dict[int, np.ndarray] = {}
    overlaps: list[dict[str, Any]] = []
    for s in spws:
        sp = info.spws[int(s)]
        total = np.zeros(sp.num_chan, bool)
        for ln in lines:
            m = line_channel_mask(sp.chan_freq, sp.chan_width, line_ranges_hz([ln], margin_kms))
            if m.any():
                total |= m
                overlaps.append(dict(field=field_name, species=ln.species, transition=ln.transition,
                                     rest_ghz=ln.rest_ghz, range_ghz=[ln.lo_ghz, ln.hi_ghz], spw=int(s),
                                     channels=format_channel_ranges(np.flatnonzero(m))))
        if total.any():
            masks[int(s)] = total
    return masks, overlaps


def reference_spwmap(fractions: dict[int, float], centre_hz: dict[int, float], threshold: float = THRESHOLD
                     ) -> list[int]:
    """fluxscale ``refspwmap``: spws with a flagged fraction > `threshold` -> nearest other spw.

    Parameters
    ----------
    fractions : dict
        Science spw -> largest line-flagged fraction over the flux calibrators (0 when none).
    centre_hz : dict
        Science spw -> centre frequency (Hz).
    threshold : float
        In (0, 1].

    Returns
    -------
    list of int
        ``[-1]`` when no spw exceeds the threshold or every spw does; else the identity map
        up to the largest science spw id with the flagged spws replaced by the spw (at most
        `threshold` flagged) nearest in centre frequency.
    """
    if not 0.0 < threshold <= 1.0:
        raise ParameterError(f"threshold={threshold!r} is invalid; valid: 0 < threshold <= 1")
    bad = sorted(s for s, f in fractions.items() if f > threshold)
    good = sorted(s for s, f in fractions.items() if f <= threshold)
    if not bad or not good:
        return [-1]
    spwmap = list(range(max(fractions) + 1))
    for s in bad:
        spwmap[s] = min(good, key=lambda g: (abs(centre_hz[g] - centre_hz[s]), g))
    return spwmap


def flag_fluxcal_lines(vis: str, fields: Sequence[str], spw: Sequence[int], *, intent: str = FLUX_INTENT,
                       threshold: float = THRESHOLD, margin_kms: float = TOPO_GEO_MAX_KMS) -> FluxcalSummary:
    """Flag the catalogued line channels of solar-system flux calibrators (module docstring).

    Parameters
    ----------
    vis : str
        Measurement Set (FLAG written in place).
    fields : sequence of str
        Flux-calibrator field names; names not in the catalogue are left alone.
    spw : sequence of int
        Science spws.
    intent : str
        Intent pattern of the rows to flag.
    threshold : float
        Flagged fraction above which a spw is mapped in ``refspwmap``.
    margin_kms : float
        Range widening (km/s) for the TOPO/GEO frame difference.

    Returns
    -------
    FluxcalSummary

    Raises
    ------
    ParameterError
        Unknown field or spw, bad threshold or margin.
    """
    from fastcal.ms import ChunkWriter, open_ms, read_block, read_chunks

    info = open_ms(vis)
    for f in fields:
        if f not in info.field_names:
            raise ParameterError(f"fluxcalflag: field {f!r} is not in {info.path}; valid: "
                                 f"{', '.join(info.field_names)}")
    bad_spw = [s for s in spw if not 0 <= int(s) < len(info.spws)]
    if bad_spw:
        raise ParameterError(f"fluxcalflag: spw {bad_spw} not in {info.path}; valid: 0..{len(info.spws) - 1}")
    reference_spwmap({}, {}, threshold)  # validates threshold
    out = FluxcalSummary()
    worst = {int(s): 0.0 for s in spw}
    for fname in fields:
        found = fluxcal_line_channels(info, fname, spw, margin_kms)
        if found is None:
            out.not_solar_system.append(fname)
            continue
        masks, overlaps = found
        if not masks:
            out.no_lines.append(fname)
            continue
        out.lines += overlaps
        for s, m in masks.items():
            key = f"{fname}/{s}"
            out.channels[key] = np.flatnonzero(m).tolist()
            out.fraction[key] = float(m.mean())
            worst[s] = max(worst[s], out.fraction[key])
        n_new = _flag_channels(info, fname, masks, intent, out, read_chunks, read_block, ChunkWriter)
        if n_new < 0:
            out.no_flux_rows.append(fname)
            continue
        for s, m in masks.items():
            out.template.append(f"mode='manual' field='{fname}' intent='{intent}' "
                                f"spw='{s}:{format_channel_ranges(np.flatnonzero(m))}' reason='fastcal:fluxcalflag'")
    out.refspwmap = reference_spwmap(worst, {int(s): info.spws[int(s)].centre_freq for s in spw}, threshold)
    logger.info("fluxcalflag %s: %s; refspwmap %s; %d new flags", info.path,
                {k: format_channel_ranges(v) for k, v in out.channels.items()} or "no line channels",
                out.refspwmap, out.n_new)
    return out


def _flag_channels(info, fname, masks, intent, out, read_chunks, read_block, ChunkWriter) -> int:
    """Flag the masked channels of `fname` (rows of `intent`); -1 when it has no such rows."""
    try:
        chunks = read_chunks(info, ("FLAG",), field=fname, spw=",".join(map(str, masks)), intent=intent)
    except SelectionError:
        logger.warning("fluxcalflag: field %s has no rows with intent %s in spws %s; nothing flagged",
                       fname, intent, list(masks))
        return -1
    n_new = 0
    with ChunkWriter(info) as w:
        for c in chunks:
            sel = masks[c.spw_id][c.chan]
            for b in range(c.n_blocks):
                flag = np.array(read_block(c, b, ("FLAG",))["FLAG"], copy=True)
                out.n_total += flag.size
                new = int((~flag[:, sel, :]).sum())
                if new:
                    flag[:, sel, :] = True
                    w.write("FLAG", c.rows[c.block_slice(b)], flag, channels=c.chan)
                    n_new += new
    out.n_new += n_new
    return n_new


class FluxcalflagStage(Stage):
    """Flag catalogued lines in solar-system flux calibrators (hifa_fluxcalflag)."""

    name = "fluxcalflag"
    title = "flag lines of solar-system flux calibrators"
    modifies_flags = True

    def run(self, ctx: Context) -> StageResult:
        fields = list(ctx.roles.get("flux", []))
        if not fields:
            return StageResult(self.name, SKIPPED, messages=["no flux calibrator: nothing to flag"])
        s = ctx.call(flag_fluxcal_lines, vis=ctx.vis, fields=fields, spw=list(ctx.science_spws),
                     intent=FLUX_INTENT, threshold=THRESHOLD)
        ctx.refresh()
        if s.n_new:
            ctx.add_flags("fluxcalflag", "\n".join(s.template), s.n_new, s.n_total)
        msgs = [f"{ln['field']} {ln['species']}({ln['transition']}) {ln['rest_ghz']:.3f} GHz: spw "
                f"{ln['spw']}:{ln['channels']}" for ln in s.lines]
        if s.not_solar_system:
            msgs.append(f"not solar-system objects (nothing to flag): {', '.join(s.not_solar_system)}")
        if s.no_lines:
            msgs.append(f"no catalogued line in the science spws: {', '.join(s.no_lines)}")
        if s.no_flux_rows:
            msgs.append(f"no rows with intent {FLUX_INTENT}: {', '.join(s.no_flux_rows)}")
        if s.refspwmap != [-1]:
            msgs.append(f"spws more than {THRESHOLD:.0%} in lines; fluxscale refspwmap {s.refspwmap}")
        frac = s.n_new / s.n_total if s.n_total else 0.0
        qa = [agent_flagged_score(frac, "fluxcalflag")]
        if s.refspwmap != [-1]:
            qa.append(QAScore("fluxcalflag_refspwmap", float(sum(v > THRESHOLD for v in s.fraction.values())),
                              0.66, msgs[-1], "spws mapped"))
        return StageResult(self.name, OK, inputs=dict(fields=fields, intent=FLUX_INTENT, threshold=THRESHOLD),
                           outputs=s.to_dict(), qa=qa, messages=msgs or ["no line channels to flag"])
