"""flagdata: the deterministic flags of hifa_flagdata (reference section 8, stage 2).

Agents, applied in this order (each counts only the visibilities it newly flags):

``intents``
    Rows of scans with non-science intents (default ``*POINTING*``, ``*FOCUS*``,
    ``*SIDEBAND_RATIO*``, ``*ATMOSPHERE*``).
``autocorr``
    Autocorrelation rows (ANTENNA1 == ANTENNA2).
``shadow``
    At each timestamp, an antenna is shadowed when its projected separation from another
    antenna, ``sqrt(u^2 + v^2)`` from the UVW column, is below the mean of the two dish
    diameters minus ``tolerance`` (m; CASA ``tolerance``, default 0), and it is the one further
    from the source (the UVW convention is ``uvw = x(ANTENNA2) - x(ANTENNA1)`` projected, so
    w > 0 means ANTENNA1 is behind). Every row of a shadowed antenna at that time is flagged,
    in every spw.
``edgespw``
    Edge channels of TDM science spws: ``round(fracspw * nchan)`` channels at each edge,
    ``fracspw = 0.03125`` for 64/128/256-channel spws (2/4/8 channels) and
    ``fracspwfps = 0.048387`` for 62/124/248-channel spws (3/6/12). A spw is TDM when it has
    one of those channel counts and a total bandwidth of at least 1.5 GHz. FDM spws are not
    edge-flagged in this version (the pipeline flags only near-baseband-edge channels there).
``clip_zeros``
    Visibilities that are exactly 0 or not finite (flagdata ``mode='clip' clipzeros=True``).

WVR spectral windows are never touched (their autocorrelations are the WVR solver's input);
edge channels are flagged in science spws only. Online flags (FLAG_CMD) are not applied in
this version: when FLAG_CMD has rows, the summary says so.
"""

from __future__ import annotations

import fnmatch
import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from fastcal.errors import ParameterError
from fastcal.pipeline.context import Context
from fastcal.pipeline.qa import agent_flagged_score
from fastcal.pipeline.stage import OK, PlotSpec, Stage, StageResult

__all__ = ["DEFAULT_FLAG_INTENTS", "TDM_NCHAN", "FPS_NCHAN", "edge_channel_count", "shadowed_antennas",
           "FlagSummary", "flag_deterministic", "FlagDataStage"]

logger = logging.getLogger(__name__)

DEFAULT_FLAG_INTENTS = "*POINTING*,*FOCUS*,*SIDEBAND_RATIO*,*ATMOSPHERE*"
TDM_NCHAN = (64, 128, 256)
FPS_NCHAN = (62, 124, 248)
_MIN_TDM_BW_HZ = 1.5e9
AGENTS = ("intents", "autocorr", "shadow", "edgespw", "clip_zeros")


def edge_channel_count(num_chan: int, total_bandwidth_hz: float, fracspw: float = 0.03125,
                       fracspwfps: float = 0.048387) -> int:
    """Channels flagged at *each* edge of a spw (0 for FDM or narrow spws).

    ``round(fracspw * nchan)`` for 64/128/256 channels, ``round(fracspwfps * nchan)`` for
    62/124/248 channels, when the spw is at least 1.5 GHz wide (TDM).
    """
    if not (0.0 <= fracspw < 0.5 and 0.0 <= fracspwfps < 0.5):
        raise ParameterError(f"fracspw={fracspw!r}, fracspwfps={fracspwfps!r} are invalid; valid: 0 <= f < 0.5")
    if total_bandwidth_hz < _MIN_TDM_BW_HZ:
        return 0
    if num_chan in TDM_NCHAN:
        return int(round(fracspw * num_chan))
    if num_chan in FPS_NCHAN:
        return int(round(fracspwfps * num_chan))
    return 0


def shadowed_antennas(uvw: np.ndarray, antenna1: np.ndarray, antenna2: np.ndarray,
                      diameter: np.ndarray, tolerance: float = 0.0) -> np.ndarray:
    """Antennas shadowed at one timestamp.

    Parameters
    ----------
    uvw : float64[row, 3]
        UVW (m) of the rows of one timestamp (``x(ANTENNA2) - x(ANTENNA1)``, w to the source).
    antenna1, antenna2 : int[row]
    diameter : float[n_ant]
        Dish diameters (m).
    tolerance : float
        Allowed overlap (m).

    Returns
    -------
    numpy.ndarray
        int, sorted ids of the shadowed antennas.
    """
    cross = antenna1 != antenna2
    uv = np.hypot(uvw[cross, 0], uvw[cross, 1])
    a1, a2, w = antenna1[cross], antenna2[cross], uvw[cross, 2]
    limit = 0.5 * (diameter[a1] + diameter[a2]) - tolerance
    hit = uv < limit
    behind = np.where(w[hit] > 0, a1[hit], a2[hit])
    return np.unique(behind)


@dataclass
class FlagSummary:
    """What :func:`flag_deterministic` flagged.

    ``new`` is agent -> newly flagged visibilities (row x chan x corr); ``total`` the
    visibilities considered (all non-WVR rows); ``flagged_before``/``flagged_after`` the
    flagged ones before and after; ``edge_channels`` spw -> channels per edge;
    ``shadowed`` the number of (time, antenna) pairs found shadowed; ``template`` the flag
    template lines (CASA flagdata list syntax); ``online_flag_commands`` rows in FLAG_CMD
    (not applied).
    """

    vis: str
    new: dict[str, int] = field(default_factory=dict)
    total: int = 0
    flagged_before: int = 0
    flagged_after: int = 0
    edge_channels: dict[int, int] = field(default_factory=dict)
    shadowed: int = 0
    template: list[str] = field(default_factory=list)
    online_flag_commands: int = 0

    @property
    def fraction_new(self) -> float:
        return sum(self.new.values()) / self.total if self.total else 0.0

    @property
    def fraction_flagged(self) -> float:
        return self.flagged_after / self.total if self.total else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["edge_channels"] = {str(k): v for k, v in self.edge_channels.items()}
        return d


def _flag_cmd_rows(path: str) -> int:
    import casacore.tables as ct

    sub = os.path.join(path, "FLAG_CMD")
    if not os.path.isdir(sub):
        return 0
    with ct.table(sub, ack=False) as t:
        return int(t.nrows())


def _spw_string(ids) -> str:
    return ",".join(str(i) for i in ids)


def flag_deterministic(vis: str, *, autocorr: bool = True, shadow: bool = True, tolerance: float = 0.0,
                       edgespw: bool = True, fracspw: float = 0.03125, fracspwfps: float = 0.048387,
                       clipzeros: bool = True, intents: str = DEFAULT_FLAG_INTENTS) -> FlagSummary:
    """Apply the deterministic flags to FLAG (see the module docstring); one pass over the MS.

    Parameters
    ----------
    vis : str
        Measurement Set (written in place: FLAG and FLAG_ROW).
    autocorr, shadow, edgespw, clipzeros : bool
        Switch the agents.
    tolerance : float
        Shadowing tolerance (m).
    fracspw, fracspwfps : float
        Edge fractions for TDM and FPS-trimmed TDM spws.
    intents : str
        Comma-separated intent globs whose scans are flagged ("" = none).

    Returns
    -------
    FlagSummary

    Raises
    ------
    ParameterError
        Bad fractions or a negative tolerance.
    """
    from fastcal.ms import ChunkWriter, open_ms, read_block, read_chunks

    if tolerance < 0:
        raise ParameterError(f"tolerance={tolerance!r} is invalid; valid: >= 0 m")
    edge_channel_count(64, 2e9, fracspw, fracspwfps)  # validates the fractions
    info = open_ms(vis)
    roles = info.spw_roles
    spws = [s.id for s in info.spws if roles[s.id] not in ("wvr", "unused")]
    summary = FlagSummary(vis=info.path, new={a: 0 for a in AGENTS})
    summary.online_flag_commands = _flag_cmd_rows(info.path)
    if not spws:
        return summary
    pats = [p.strip() for p in intents.split(",") if p.strip()]
    bad_states = np.array([any(fnmatch.fnmatchcase(i, p) for i in s.intents for p in pats)
                           for s in info.states] or [False], bool)
    state_of_row = info.index.state_id
    diam = np.array([a.dish_diameter for a in info.antennas], np.float64)
    edges = {s: edge_channel_count(info.spws[s].num_chan, info.spws[s].total_bandwidth, fracspw, fracspwfps)
             for s in spws if roles[s] == "science"} if edgespw else {}
    summary.edge_channels = {s: n for s, n in edges.items() if n}
    cols = ["FLAG"] + (["DATA"] if clipzeros else []) + (["UVW"] if shadow else [])
    shadowed_pairs: set[tuple[float, int]] = set()
    with ChunkWriter(info) as writer:
        for chunk in read_chunks(info, cols, spw=_spw_string(spws)):
            for b in range(chunk.n_blocks):
                sl = chunk.block_slice(b)
                arr = read_block(chunk, b, cols)
                flag = np.array(arr["FLAG"], copy=True)
                before = flag.copy()
                rows = chunk.rows[sl]
                a1, a2, t = chunk.antenna1[sl], chunk.antenna2[sl], chunk.time[sl]
                summary.total += flag.size
                summary.flagged_before += int(before.sum())

                def agent(name: str, mask: np.ndarray, flag: np.ndarray = flag) -> None:
                    new = mask & ~flag
                    summary.new[name] += int(new.sum())
                    flag[new] = True

                full = np.ones(flag.shape[1:], bool)
                if pats and state_of_row.size:
                    st = state_of_row[rows]
                    row_bad = (st >= 0) & bad_states[np.clip(st, 0, bad_states.size - 1)]
                    agent("intents", row_bad[:, None, None] & full)
                if autocorr:
                    agent("autocorr", (a1 == a2)[:, None, None] & full)
                if shadow:
                    row_sh = np.zeros(rows.size, bool)
                    for tt in np.unique(t):
                        at = t == tt
                        ants = shadowed_antennas(arr["UVW"][at], a1[at], a2[at], diam, tolerance)
                        if ants.size:
                            row_sh[at] = np.isin(a1[at], ants) | np.isin(a2[at], ants)
                            shadowed_pairs.update((float(tt), int(a)) for a in ants)
                    agent("shadow", row_sh[:, None, None] & full)
                n_edge = edges.get(chunk.spw_id, 0)
                if n_edge:
                    cm = np.zeros(flag.shape[1:], bool)
                    ch = chunk.chan
                    cm[(ch < n_edge) | (ch >= info.spws[chunk.spw_id].num_chan - n_edge), :] = True
                    agent("edgespw", np.broadcast_to(cm, flag.shape))
                if clipzeros:
                    d = arr["DATA"]
                    agent("clip_zeros", (d == 0) | ~np.isfinite(d))
                summary.flagged_after += int(flag.sum())
                if (flag != before).any():
                    writer.write("FLAG", rows, flag, channels=chunk.chan)
    summary.shadowed = len(shadowed_pairs)
    summary.template = _template(summary, spws, pats, autocorr, shadow, tolerance, clipzeros, info)
    logger.info("flagdata %s: newly flagged %s of %d visibilities (%.2f%% flagged now)", info.path,
                {k: v for k, v in summary.new.items() if v}, summary.total, 100 * summary.fraction_flagged)
    if summary.online_flag_commands:
        logger.warning("%s: FLAG_CMD has %d online flag commands; they are not applied in this "
                       "version of fastcal", info.path, summary.online_flag_commands)
    return summary


def _template(s: FlagSummary, spws, pats, autocorr, shadow, tolerance, clipzeros, info) -> list[str]:
    spw = _spw_string(spws)
    out = []
    if pats and s.new["intents"]:
        out.append(f"mode='manual' spw='{spw}' intent='{','.join(pats)}' reason='fastcal:intents'")
    if autocorr and s.new["autocorr"]:
        out.append(f"mode='manual' spw='{spw}' autocorr=True reason='fastcal:autocorr'")
    if shadow and s.new["shadow"]:
        out.append(f"mode='shadow' tolerance={tolerance!r} reason='fastcal:shadow'")
    for sid, n in sorted(s.edge_channels.items()):
        last = info.spws[sid].num_chan - 1
        out.append(f"mode='manual' spw='{sid}:0~{n - 1};{last - n + 1}~{last}' reason='fastcal:edgespw'")
    if clipzeros and s.new["clip_zeros"]:
        out.append(f"mode='clip' spw='{spw}' clipzeros=True reason='fastcal:clip_zeros'")
    return out


class FlagDataStage(Stage):
    """Deterministic flags (autocorrelations, shadowing, TDM edges, zeros, non-science intents)."""

    name = "flagdata"
    title = "deterministic flagging"
    simplified = True
    modifies_flags = True

    def run(self, ctx: Context) -> StageResult:
        o = ctx.options
        params = dict(vis=ctx.vis, autocorr=bool(o.get("flag_autocorr", True)),
                      shadow=bool(o.get("flag_shadow", True)), tolerance=float(o.get("shadow_tolerance", 0.0)),
                      edgespw=bool(o.get("flag_edgespw", True)), fracspw=float(o.get("fracspw", 0.03125)),
                      fracspwfps=float(o.get("fracspwfps", 0.048387)),
                      clipzeros=bool(o.get("flag_zeros", True)),
                      intents=str(o.get("flag_intents", DEFAULT_FLAG_INTENTS)))
        summary = ctx.call(flag_deterministic, **params)
        ctx.refresh()
        cmd_of = {}
        for line in summary.template:
            reason = line.rsplit("reason='fastcal:", 1)[1].rstrip("'")
            cmd_of.setdefault(reason, []).append(line)
        for a in AGENTS:
            if summary.new[a]:
                ctx.add_flags(a, "\n".join(cmd_of.get(a, [])), summary.new[a], summary.total)
        unexpected = (summary.new["shadow"] + summary.new["clip_zeros"]) / max(summary.total, 1)
        qa = [agent_flagged_score(unexpected, "shadow+zeros")]
        qa[0].message += (f"; {100 * summary.fraction_flagged:.1f}% flagged in total (incl. "
                          f"autocorrelations, non-science intents and TDM edges)")
        messages = []
        if summary.online_flag_commands:
            messages.append(f"FLAG_CMD holds {summary.online_flag_commands} online flag commands; applying "
                            f"them is not implemented in this version")
        if summary.fraction_flagged >= 1.0:
            messages.append("all data are flagged")
        return StageResult(self.name, OK, inputs={k: v for k, v in params.items() if k != "vis"},
                           outputs=summary.to_dict(), qa=qa, messages=messages,
                           plots=[PlotSpec("flag_summary", "Flagged fraction per agent",
                                           {"new": summary.new, "total": summary.total})])
