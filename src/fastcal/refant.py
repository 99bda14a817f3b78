"""Reference-antenna handling: CASA's ``refant`` list, ``refantmode`` and phase continuity.

CASA (reference §3.4, ``SolvableVisJones::applyRefAnt``):

* ``refant`` is a comma-separated priority list of antenna names or ids.
* ``refantmode="flex"``: the choice list is the user's refants, then every other antenna
  sorted by distance from the *last* user refant (ANTENNA positions). For each solution
  interval (per spw, in time order) the candidates are tried in the order
  [first user refant, previous interval's refant, other user refants, others by distance]
  and the first one with an unflagged solution in every active parameter, in this *and* the
  previous interval, is used. When it is not the first user refant, the solutions are
  rotated so that the new refant keeps the phase it had in the previous interval (phase
  continuity); with the first user refant its phase is zero.
* ``refantmode="strict"``: only the first user refant; intervals where it has no solution
  are flagged.

:func:`rank_refants` is an ALMA-pipeline-like ranking (geometry + unflagged data) that a
caller can use to build a refant list.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fastcal.errors import ParameterError, SelectionError
from fastcal.kernels.gains import apply_flex_refant as flex_refant_kernel
from fastcal.ms.info import MSInfo

__all__ = ["RefantPlan", "parse_refant", "apply_flex_refant", "rank_refants"]

logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class RefantPlan:
    """The parsed ``refant``/``refantmode``.

    Attributes
    ----------
    user : tuple of int
        The user's refants in priority order (may be empty).
    choices : tuple of int
        Full flex choice list (user refants, then the others by distance from the last user
        refant; antenna id order when `user` is empty).
    mode : {"flex", "strict"}
    """

    user: tuple[int, ...]
    choices: tuple[int, ...]
    mode: str


def _antenna_positions(info: MSInfo) -> np.ndarray:
    return np.array([np.asarray(a.position, float) for a in info.antennas]).reshape(-1, 3)


def parse_refant(info: MSInfo, refant: str | int | Sequence[str | int] | None,
                 refantmode: str = "flex") -> RefantPlan:
    """Resolve ``refant`` to antenna ids and build the flex choice list.

    Parameters
    ----------
    info : MSInfo
    refant : str, int or sequence
        ``"DA41,DV05"``, ``"3"``, ``3``, ``["DA41", 5]``; names are matched first, then ids
        (as CASA does for integers). ``""``/None: no user refant.
    refantmode : {"flex", "strict"}

    Raises
    ------
    ParameterError
        Bad `refantmode`, or ``"strict"`` without a refant.
    SelectionError
        A name or id that is not an antenna of the MS (the message lists the valid names).
    """
    if refantmode not in ("flex", "strict"):
        raise ParameterError(f"refantmode={refantmode!r} is invalid; valid: 'flex', 'strict'")
    if refant is None:
        items: list[str] = []
    elif isinstance(refant, (int, np.integer)) and not isinstance(refant, bool):
        items = [str(int(refant))]
    elif isinstance(refant, str):
        items = [s.strip() for s in refant.split(",") if s.strip()]
    elif isinstance(refant, Sequence):
        items = [str(s).strip() for s in refant if str(s).strip()]
    else:
        raise ParameterError(f"refant={refant!r} has the wrong type; valid: a string such as "
                             f"'DA41,DV05', an antenna id, or a list of those")
    names = list(info.antenna_names)
    user: list[int] = []
    for s in items:
        if s in names:
            a = names.index(s)
        elif s.lstrip("-").isdigit() and 0 <= int(s) < len(names):
            a = int(s)
        else:
            shown = ", ".join(f"{i}:{n}" for i, n in enumerate(names))
            raise SelectionError(
                f"refant={refant!r}: {s!r} is not an antenna of {info.path}; valid: {shown}")
        if a not in user:
            user.append(a)
    if refantmode == "strict" and not user:
        raise ParameterError("refantmode='strict' needs a refant; give refant='<antenna>'")
    pos = _antenna_positions(info)
    others = [a for a in range(len(names)) if a not in user]
    if user and pos.shape[0] == len(names):
        d = np.linalg.norm(pos[others] - pos[user[-1]], axis=1) if others else np.zeros(0)
        others = [others[i] for i in np.argsort(d, kind="stable")]
    return RefantPlan(tuple(user), tuple(user + others), refantmode)


def apply_flex_refant(gains: np.ndarray, flag: np.ndarray, plan: RefantPlan,
                      order: np.ndarray | None = None) -> np.ndarray:
    """Reference the phases of one spw's solutions, in place, as CASA's applyRefAnt does.

    Parameters
    ----------
    gains : complex128[interval, ant, chan, par]
        Unreferenced solutions; rotated in place (every antenna, flagged or not).
    flag : bool[interval, ant, chan, par]
        Solution flags; in ``"strict"`` mode intervals without the refant get every
        solution flagged (in place).
    plan : RefantPlan
    order : int[interval], optional
        Time order of the intervals (default: as given).

    Returns
    -------
    refant_used : int32[interval]
        Refant of each interval, -1 where none was usable (phases left as solved).
    """
    order = np.arange(gains.shape[0]) if order is None else np.asarray(order)
    choices = [a for a in plan.choices if 0 <= a < gains.shape[1]] or list(range(gains.shape[1]))
    primary = plan.user[0] if plan.user else choices[0]
    return flex_refant_kernel(gains, flag, np.asarray(choices, np.int64), int(primary),
                              plan.mode == "strict", order.astype(np.int64))


def rank_refants(info: MSInfo, flagged_fraction: Sequence[float] | np.ndarray | None = None,
                 *, geometry: bool = True, n: int | None = None) -> list[str]:
    """ALMA-pipeline-like refant ranking (``hif_refant`` heuristics, simplified).

    Score per antenna = geometry score (antennas near the array centre score high:
    ``n_ant * (1 - d / d_max)``) + flagging score (``n_ant * (1 - flagged_fraction)``).

    Parameters
    ----------
    info : MSInfo
    flagged_fraction : float[n_ant], optional
        Fraction of flagged data per antenna (0 if not given).
    geometry : bool
        Include the geometry score.
    n : int, optional
        Return only the best `n`.

    Returns
    -------
    list of str
        Antenna names, best first; join with ``","`` for ``refant``.
    """
    names = list(info.antenna_names)
    n_ant = len(names)
    score = np.zeros(n_ant)
    if geometry:
        pos = _antenna_positions(info)
        d = np.linalg.norm(pos - pos.mean(axis=0), axis=1)
        score += n_ant * (1.0 - d / max(float(d.max()), 1e-9))
    if flagged_fraction is not None:
        ff = np.asarray(flagged_fraction, float)
        if ff.shape != (n_ant,):
            raise ParameterError(f"flagged_fraction must have {n_ant} values, got {ff.shape}")
        score += n_ant * (1.0 - np.clip(ff, 0, 1))
    order = np.argsort(-score, kind="stable")
    out = [names[i] for i in order]
    return out[:n] if n else out
