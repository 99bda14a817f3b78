"""refant: the ALMA pipeline's reference-antenna ranking (hif_refant, reference section 8 stage 5).

score = geometry score + flagging score, per antenna:

* geometry: ``N_ant * (1 - d / d_max)``, d = horizontal distance (m) of the antenna from the
  array centre (mean ITRF position; the vertical component along the local up direction is
  removed, as findrefant works in longitude/latitude);
* flagging: ``N_ant * (unflagged_p / max_q unflagged_q)``, unflagged = unflagged cross-correlation
  visibilities of the antenna (counted on both ANTENNA1 and ANTENNA2) in scans with the
  calibrator intents (default AMPLITUDE/FLUX, BANDPASS, PHASE, POLARIZATION) and science spws.

Antennas are sorted by descending score (ties: antenna id); antennas with a zero flagging
score (no unflagged data) are removed (PIPE-1805), and ``refantignore`` antennas are excluded.
This complements :func:`fastcal.refant.rank_refants` (a simpler flagged-fraction ranking).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fastcal.errors import ParameterError
from fastcal.pipeline.context import Context
from fastcal.pipeline.qa import QAScore
from fastcal.pipeline.stage import OK, Stage, StageResult

__all__ = ["REFANT_INTENTS", "RefantRanking", "horizontal_distance_m", "unflagged_per_antenna",
           "rank_refants", "RefantStage"]

logger = logging.getLogger(__name__)

REFANT_INTENTS = "CALIBRATE_AMPLI*,CALIBRATE_FLUX*,CALIBRATE_BANDPASS*,CALIBRATE_PHASE*,CALIBRATE_POL*"


@dataclass
class RefantRanking:
    """Result of :func:`rank_refants`.

    ``names`` best first; ``geometry``, ``flagging``, ``total``: antenna name -> sub-scores;
    ``removed``: antennas dropped (no unflagged data, or ignored).
    """

    names: list[str]
    geometry: dict[str, float]
    flagging: dict[str, float]
    total: dict[str, float]
    removed: list[str]

    @property
    def refant(self) -> str:
        """The CASA ``refant`` string (comma-separated, best first)."""
        return ",".join(self.names)


def horizontal_distance_m(positions: np.ndarray) -> np.ndarray:
    """float64[n_ant]: distance (m) of each ITRF position from their mean, in the local
    horizontal plane."""
    pos = np.asarray(positions, np.float64).reshape(-1, 3)
    centre = pos.mean(axis=0)
    up = centre / np.linalg.norm(centre)
    off = pos - centre
    horiz = off - np.outer(off @ up, up)
    return np.linalg.norm(horiz, axis=1)


def _valid_intents(info, intent: str) -> str | None:
    import fnmatch

    pats = [p.strip() for p in intent.split(",") if p.strip()]
    keep = [p for p in pats if any(fnmatch.fnmatchcase(i, p) for i in info.intents)]
    return ",".join(keep) if keep else None


def unflagged_per_antenna(vis, *, intent: str = REFANT_INTENTS, spw: Sequence[int] | None = None) -> np.ndarray:
    """int64[n_ant]: unflagged cross-correlation visibilities per antenna.

    Intent patterns that match nothing are ignored; when none matches (or the MS has no
    intents) all scans are used.
    """
    from fastcal.ms import open_ms, read_block, read_chunks

    info = open_ms(vis)
    if spw is None:
        spw = list(info.spws_with_role("science"))
    if not spw:
        raise ParameterError(f"{info.path}: no science spw to count flags in")
    sel_intent = _valid_intents(info, intent) if info.states else None
    counts = np.zeros(len(info.antennas), np.int64)
    for chunk in read_chunks(info, ("FLAG",), spw=",".join(map(str, spw)), intent=sel_intent,
                             include_autocorr=False):
        for b in range(chunk.n_blocks):
            sl = chunk.block_slice(b)
            good = (~read_block(chunk, b, ("FLAG",))["FLAG"]).sum(axis=(1, 2))
            np.add.at(counts, chunk.antenna1[sl], good)
            np.add.at(counts, chunk.antenna2[sl], good)
    return counts


def rank_refants(vis, *, intent: str = REFANT_INTENTS, spw: Sequence[int] | None = None,
                 refantignore: Sequence[str] = (), geometry: bool = True, flagging: bool = True) -> RefantRanking:
    """Ranked reference antennas (see the module docstring).

    Raises
    ------
    ParameterError
        Both heuristics switched off, an unknown antenna in `refantignore`, or no antenna left
        (all flagged or ignored).
    """
    from fastcal.ms import open_ms

    if not (geometry or flagging):
        raise ParameterError("rank_refants: geometry=False and flagging=False leave nothing to rank by")
    info = open_ms(vis)
    names = list(info.antenna_names)
    for a in refantignore:
        if a not in names:
            raise ParameterError(f"refantignore: {a!r} is not an antenna of {info.path}; valid: {', '.join(names)}")
    n = len(names)
    geo = np.zeros(n)
    if geometry:
        d = horizontal_distance_m(np.array([a.position for a in info.antennas]))
        geo = n * (1.0 - d / max(float(d.max()), 1e-9))
    flg = np.full(n, float(n))
    removed: list[str] = []
    if flagging:
        unfl = unflagged_per_antenna(info, intent=intent, spw=spw).astype(np.float64)
        if unfl.max() <= 0:
            raise ParameterError(f"{info.path}: every antenna is fully flagged in the refant intents "
                                 f"({intent}); no reference antenna can be chosen")
        flg = n * unfl / unfl.max()
        removed = [names[i] for i in range(n) if flg[i] <= 0.0]
    total = geo + flg
    order = np.argsort(-total, kind="stable")
    drop = set(removed) | set(refantignore)
    ranked = [names[i] for i in order if names[i] not in drop]
    if not ranked:
        raise ParameterError(f"{info.path}: no reference antenna left after removing {sorted(drop)}")
    removed = sorted(drop, key=names.index)
    return RefantRanking(ranked, dict(zip(names, geo.tolist(), strict=True)), dict(zip(names, flg.tolist(), strict=True)),
                         dict(zip(names, total.tolist(), strict=True)), removed)


class RefantStage(Stage):
    """Rank the reference antennas into ``ctx.refant``."""

    name = "refant"
    title = "reference antenna ranking"

    def run(self, ctx: Context) -> StageResult:
        ignore = ctx.options.get("refantignore") or []
        if isinstance(ignore, str):
            ignore = [s.strip() for s in ignore.split(",") if s.strip()]
        params = dict(vis=ctx.vis, intent=str(ctx.options.get("refant_intent", REFANT_INTENTS)),
                      spw=list(ctx.science_spws) or None, refantignore=list(ignore))
        ranking = ctx.call(rank_refants, **params)
        ctx.refant = list(ranking.names)
        n_ant = len(ranking.total)
        frac = len(ranking.names) / n_ant
        q = QAScore("refant_candidates", float(len(ranking.names)), 1.0 if frac >= 0.5 else 0.5,
                    f"{len(ranking.names)} of {n_ant} antennas ranked; best {ranking.names[0]}"
                    + (f"; removed {', '.join(ranking.removed)}" if ranking.removed else ""), "antennas")
        msgs = [f"antenna {a} removed from the refant list (no unflagged data or ignored)" for a in ranking.removed]
        return StageResult(self.name, OK, inputs={k: v for k, v in params.items() if k != "vis"},
                           outputs=dict(refant=ranking.names, geometry=ranking.geometry,
                                        flagging=ranking.flagging, total=ranking.total,
                                        removed=ranking.removed),
                           qa=[q], messages=msgs)
