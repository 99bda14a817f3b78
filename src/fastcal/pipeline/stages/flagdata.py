"""flagdata: the deterministic flags of hifa_flagdata (reference section 8, stage 2).

Agents, applied in this order (each counts only the visibilities it newly flags):

``intents``
    Rows of scans with non-science intents (default ``*POINTING*``, ``*FOCUS*``,
    ``*SIDEBAND_RATIO*``, ``*ATMOSPHERE*``).
``online``
    Online flags: the FLAG_CMD rows with APPLIED = False (any TYPE), whose COMMAND is in
    CASA flagdata syntax. Understood keys: ``mode`` (``'manual'`` only), ``antenna``,
    ``timerange``, ``spw`` (with channels), ``scan``, ``field``, ``intent``, ``observation``,
    ``correlation``, ``autocorr`` and ``reason`` (ignored), resolved with
    :func:`fastcal.ms.select.parse_selection` (so ``antenna='DV04&&*'`` and
    ``timerange='2024/06/15/01:02:03.0~2024/06/15/01:02:09.0'`` mean what they mean in CASA:
    rows whose TIME lies in the range, widened by ``tbuff``: by default the pipeline's
    ``hm_tbuff='halfint'``, 0.5 t_int - 0.048 s before and 0.5 t_int after, t_int the median
    integration time; 0.048 s / 0 with 7-m antennas). A command with another mode, an
    unknown key, broken quoting or a selection that names nothing in the MS is skipped with
    a warning (listed in the summary). FLAG_CMD itself is not changed (APPLIED stays False; the pipeline also
    applies the online flags through a flag file).
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
    one of those channel counts and a total bandwidth of at least 1.5 GHz.
``fdm_edge``
    (with ``edgespw``) FDM science spws (not TDM above, and n_corr x n_chan > 256, the
    pipeline's FDM test): a spw wider than 1875 MHz loses the channels reaching beyond
    +-937.5 MHz of its centre (CAS-5231); a spw of exactly 62.5/125/250/500/1000 MHz (the
    ACA correlator widths, PIPE-425) loses the channels overlapping the outer
    5/10/20/40/62.5 MHz of its baseband. The baseband range is that of a spw of the same
    BBC_NO whose name contains ``SQLD``, else (fastcal's fallback) of the widest other spw of
    that baseband spanning at least 1875 MHz (e.g. the TDM Tsys spw); without either the spw
    is listed in ``missing_baseband_spws`` and not flagged.
``lowtrans``
    Science spws with low atmospheric transmission (PIPE-624): the transmission
    ``exp(-A (tau_dry + PWV kappa))`` of :mod:`fastcal.atmosphere`'s thin-layer model (water
    lines + continuum, dry opacity scaled as nu^2; no O2 lines) at every channel and every
    TARGET scan (airmass = mean of the scan's start and end airmass at the array centre);
    a spw is flagged entirely when at least 60 % of these (channel, scan) values are below
    ``mintransrepspw = 0.05`` (representative spw) or ``mintransnonrepspws = 0.1`` (others).
    Without ``representative_spw`` every spw gets the lenient ``mintransrepspw``. PWV: the
    ``pwv_mm`` argument, else the median ``water`` of ASDM_CALWVR, else a retrieval
    (:func:`fastcal.atmosphere.fit_layer`) on the median on-source WVR brightness; without
    any, the agent is skipped and says so.
``clip_zeros``
    Visibilities that are exactly 0 or not finite (flagdata ``mode='clip' clipzeros=True``).

WVR spectral windows are never touched (their autocorrelations are the WVR solver's input;
online flags on WVR spws are not applied); edge channels and low transmission apply to
science spws only.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from fastcal.errors import FastcalError, ParameterError
from fastcal.pipeline.context import Context
from fastcal.pipeline.qa import agent_flagged_score
from fastcal.pipeline.stage import OK, PlotSpec, Stage, StageResult

__all__ = ["DEFAULT_FLAG_INTENTS", "TDM_NCHAN", "FPS_NCHAN", "ACA_EDGE_MHZ", "edge_channel_count",
           "shadowed_antennas", "parse_flag_command", "OnlineCommand", "online_tbuff", "online_flag_commands",
           "fdm_edge_channels", "median_pwv", "spw_transmission", "low_transmission_spws",
           "FlagSummary", "flag_deterministic", "FlagDataStage"]

logger = logging.getLogger(__name__)

DEFAULT_FLAG_INTENTS = "*POINTING*,*FOCUS*,*SIDEBAND_RATIO*,*ATMOSPHERE*"
TDM_NCHAN = (64, 128, 256)
FPS_NCHAN = (62, 124, 248)
_MIN_TDM_BW_HZ = 1.5e9
AGENTS = ("intents", "online", "autocorr", "shadow", "edgespw", "fdm_edge", "lowtrans", "clip_zeros")
#: FDM spws wider than this lose the channels beyond +-half of it from the centre (CAS-5231).
FDM_MAX_BW_HZ = 1875e6
#: ACA spw bandwidth (MHz) -> width of the baseband edge flagged (MHz) (PIPE-425).
ACA_EDGE_MHZ = {62.5: 5.0, 125.0: 10.0, 250.0: 20.0, 500.0: 40.0, 1000.0: 62.5}
#: Fraction of (channel, scan) transmissions below the threshold that flags a spw (PIPE-624).
MAX_FRAC_LOW_TRANS = 0.6
ONLINE_KEYS = ("mode", "antenna", "timerange", "spw", "scan", "field", "intent", "observation",
               "correlation", "autocorr", "reason")


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


# ----------------------------------------------------------------------------- online flags


_CMD_TOKEN = re.compile(r"""\s*([A-Za-z_]+)\s*=\s*(?:'([^']*)'|"([^"]*)"|([^\s'"]+))""")


def parse_flag_command(command: str) -> dict[str, str]:
    """``key='value' key2="value" key3=value`` (CASA flagdata list syntax) -> dict.

    Raises
    ------
    ParameterError
        Text that is not a sequence of ``key=value`` pairs, or a key given twice.
    """
    out: dict[str, str] = {}
    pos, text = 0, command.strip()
    while pos < len(text):
        m = _CMD_TOKEN.match(text, pos)
        if not m:
            raise ParameterError(f"flag command {command!r}: cannot parse from {text[pos:pos + 30]!r}; "
                                 f"valid: key='value' pairs separated by spaces")
        key = m.group(1).lower()
        if key in out:
            raise ParameterError(f"flag command {command!r}: {key!r} given twice")
        out[key] = next(g for g in m.groups()[1:] if g is not None)
        pos = m.end()
    return out


@dataclass
class OnlineCommand:
    """One usable FLAG_CMD command resolved against the MS.

    ``rows`` int64 row numbers of the main table (sorted); ``selection`` the
    :class:`fastcal.ms.select.Selection` (for spw channels); ``corr`` correlation names or
    None (all); ``whole_rows`` True when every channel and correlation of the rows is flagged.
    """

    text: str
    rows: np.ndarray
    selection: Any
    corr: tuple[str, ...] | None
    whole_rows: bool


class _TimeIndex:
    """Rows sorted by TIME, so that a command's timerange is resolved by bisection and its
    other parts are evaluated on the rows of that time window only."""

    def __init__(self, info) -> None:
        self.index = info.index
        self.order = np.argsort(info.index.time, kind="stable")
        self.sorted_time = info.index.time[self.order]

    def rows(self, info, sel, tbuff: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
        from fastcal.ms.select import row_mask

        if sel.time_range is None:
            return np.flatnonzero(row_mask(info, sel)).astype(np.int64)
        sel = dataclasses.replace(sel, time_range=(sel.time_range[0] - tbuff[0], sel.time_range[1] + tbuff[1]))
        lo = np.searchsorted(self.sorted_time, sel.time_range[0], "left")
        hi = np.searchsorted(self.sorted_time, sel.time_range[1], "right")
        cand = np.sort(self.order[lo:hi])
        sub = type(self.index)(**{f.name: getattr(self.index, f.name)[cand]
                                  for f in dataclasses.fields(self.index)})
        return cand[row_mask(info, sel, sub)].astype(np.int64)


def _online_command(info, command: str, tindex: _TimeIndex,
                    tbuff: tuple[float, float] = (0.0, 0.0)) -> OnlineCommand:
    """Resolve one command; raises FastcalError (ParameterError, SelectionError) if unusable."""
    from fastcal.ms.select import parse_selection

    kv = parse_flag_command(command)
    unknown = sorted(set(kv) - set(ONLINE_KEYS))
    if unknown:
        raise ParameterError(f"unsupported key(s) {unknown}; understood: {', '.join(ONLINE_KEYS)}")
    mode = kv.get("mode", "manual").strip().lower()
    if mode != "manual":
        raise ParameterError(f"mode={mode!r} is not applied (only mode='manual' online flags)")
    sel_keys = ("antenna", "timerange", "spw", "scan", "field", "intent", "observation")
    if not any(kv.get(k, "").strip() for k in sel_keys + ("correlation",)):
        raise ParameterError("the command selects everything (no antenna, timerange, spw, scan, field, "
                             "intent, observation or correlation): refused")
    sel = parse_selection(info, **{k: (kv[k] if kv.get(k, "").strip() else None) for k in sel_keys})
    rows = tindex.rows(info, sel, tbuff)
    if kv.get("autocorr", "").strip().lower() in ("true", "1"):
        rows = rows[info.index.antenna1[rows] == info.index.antenna2[rows]]
    corr = None
    if kv.get("correlation", "").strip():
        corr = tuple(c.strip().upper() for c in kv["correlation"].split(",") if c.strip())
        known = {c for p in info.pols for c in p.corr_names}
        bad = [c for c in corr if c not in known]
        if bad:
            raise ParameterError(f"correlation {bad} not in the MS; valid: {', '.join(sorted(known))}")
    whole = corr is None and (sel.spw_channels is None or all(
        np.array_equal(sel.channels(s, info.spws[s].num_chan), np.arange(info.spws[s].num_chan))
        for s in sel.spw_channels))
    parts = [f"{k}='{kv[k]}'" for k in ("antenna", "timerange", "spw", "scan", "field", "intent",
                                        "observation", "correlation") if kv.get(k, "").strip()]
    if kv.get("autocorr", "").strip().lower() in ("true", "1"):
        parts.append("autocorr=True")
    return OnlineCommand("mode='manual' " + " ".join(parts), rows, sel, corr, whole)


def online_tbuff(info) -> tuple[float, float]:
    """The pipeline's ``hm_tbuff='halfint'`` padding (s) of online-flag time ranges.

    (0.5 t_int - 0.048, 0.5 t_int) with t_int the median integration time of the
    cross-correlations (the 0.048 s allows for the ALMA control system's time stamps);
    (0.048, 0) when the array has 7-m antennas (ACA) or no integration time is known.
    """
    from fastcal.pipeline.stages.wvr import science_int_time

    if any(abs(a.dish_diameter - 7.0) < 0.01 for a in info.antennas):
        return 0.048, 0.0
    t_int = science_int_time(info.path)
    if not t_int > 0.096:
        return 0.048, 0.0
    return 0.5 * t_int - 0.048, 0.5 * t_int


def online_flag_commands(info, tbuff: tuple[float, float] = (0.0, 0.0)
                         ) -> tuple[int, list[OnlineCommand], list[str]]:
    """The FLAG_CMD rows to apply: (rows in FLAG_CMD, usable commands, skipped "command: why").

    Rows with APPLIED = True are neither applied nor reported as skipped. Time ranges are
    widened by `tbuff` = (before, after) seconds.
    """
    import casacore.tables as ct

    sub = os.path.join(info.path, "FLAG_CMD")
    if not os.path.isdir(sub):
        return 0, [], []
    with ct.table(sub, ack=False) as t:
        n = int(t.nrows())
        if n == 0 or "COMMAND" not in t.colnames():
            return n, [], []
        cmds = [str(c) for c in t.getcol("COMMAND")]
        applied = (np.asarray(t.getcol("APPLIED"), bool) if "APPLIED" in t.colnames()
                   else np.zeros(n, bool))
    usable, skipped = [], []
    tindex = _TimeIndex(info)
    for c, done in zip(cmds, applied, strict=True):
        if done:
            continue
        try:
            usable.append(_online_command(info, c, tindex, tbuff))
        except FastcalError as exc:
            skipped.append(f"{c}: {exc}")
            logger.warning("%s FLAG_CMD: skipping %r: %s", info.path, c, exc)
    return n, usable, skipped


# ----------------------------------------------------------------------------- FDM edges


def _chan_edges(spw) -> tuple[np.ndarray, np.ndarray]:
    w = np.abs(np.asarray(spw.chan_width, np.float64)) / 2
    f = np.asarray(spw.chan_freq, np.float64)
    return f - w, f + w


def _is_fdm(info, sid: int, fracspw: float, fracspwfps: float) -> bool:
    sp = info.spws[sid]
    ncorr = max((len(info.pols[d.pol_id].corr_types) for d in info.ddescs if d.spw_id == sid), default=1)
    return (edge_channel_count(sp.num_chan, sp.total_bandwidth, fracspw, fracspwfps) == 0
            and ncorr * sp.num_chan > 256)


def _baseband_range(info, sid: int) -> tuple[float, float] | None:
    """(low, high) Hz of the baseband of `sid`: an SQLD spw of the same BBC_NO, else the widest
    other spw of that baseband spanning >= 1875 MHz (not WVR)."""
    sp = info.spws[sid]
    roles = info.spw_roles
    same = [s for s in info.spws if s.id != sid and s.baseband == sp.baseband and roles[s.id] != "wvr"]
    sqld = [s for s in same if "SQLD" in s.name.upper()]
    wide = sorted((s for s in same if s.total_bandwidth >= FDM_MAX_BW_HZ * (1 - 1e-6)),
                  key=lambda s: -s.total_bandwidth)
    pick = (sqld or wide or [None])[0]
    if pick is None:
        return None
    lo, hi = _chan_edges(pick)
    return float(lo.min()), float(hi.max())


def fdm_edge_channels(info, sid: int, *, fracspw: float = 0.03125,
                      fracspwfps: float = 0.048387) -> tuple[np.ndarray, bool]:
    """Channels of science spw `sid` flagged by the FDM edge heuristics (module docstring).

    Returns
    -------
    (numpy.ndarray, bool)
        int64 channel indices (empty for TDM spws or when nothing is close to an edge), and
        whether the spw needed a baseband range that could not be found.
    """
    sp = info.spws[sid]
    if not _is_fdm(info, sid, fracspw, fracspwfps):
        return np.zeros(0, np.int64), False
    lo, hi = _chan_edges(sp)
    tol = 1e-3 * float(np.median(np.abs(sp.chan_width)))
    bw = float(sp.total_bandwidth)
    flag = np.zeros(sp.num_chan, bool)
    if bw > FDM_MAX_BW_HZ * (1 + 1e-9):
        centre = 0.5 * (float(lo.min()) + float(hi.max()))
        flag |= (lo < centre - FDM_MAX_BW_HZ / 2 - tol) | (hi > centre + FDM_MAX_BW_HZ / 2 + tol)
    missing = False
    aca = [e for b, e in ACA_EDGE_MHZ.items() if abs(bw / 1e6 - b) <= 1e-3 * b]
    if aca:
        bb = _baseband_range(info, sid)
        if bb is None:
            missing = True
        else:
            edge = aca[0] * 1e6
            flag |= (lo < bb[0] + edge - tol) & (hi > bb[0] + tol)
            flag |= (hi > bb[1] - edge + tol) & (lo < bb[1] - tol)
    return np.flatnonzero(flag).astype(np.int64), missing


# ----------------------------------------------------------------------------- low transmission


def median_pwv(info) -> tuple[float | None, str, float, float]:
    """(zenith PWV in mm or None, source, layer temperature K, pressure kPa) of the MS.

    ASDM_CALWVR ``water`` (m; median) when present, else the thin-layer retrieval on the
    median on-source WVR brightness (the layer temperature and pressure come from that fit;
    270 K and 50 kPa otherwise).
    """
    import casacore.tables as ct

    sub = os.path.join(info.path, "ASDM_CALWVR")
    if os.path.isdir(sub):
        with ct.table(sub, ack=False) as t:
            if t.nrows() and "water" in t.colnames():
                w = np.asarray(t.getcol("water"), np.float64) * 1e3
                w = w[np.isfinite(w) & (w > 0)]
                if w.size:
                    return float(np.median(w)), "ASDM_CALWVR", 270.0, 50.0
    if not info.spws_with_role("wvr"):
        return None, "no WVR data", 270.0, 50.0
    from fastcal import atmosphere
    from fastcal.wvr import read_wvr_data

    try:
        d = read_wvr_data(info.path)
        use = d.on_source if d.on_source.any() else np.ones(d.time.size, bool)
        samples = d.tb[use].reshape(-1, 4)
        samples = samples[np.isfinite(samples).all(axis=1)]
        if samples.shape[0] == 0:
            return None, "no usable WVR samples", 270.0, 50.0
        tb = np.median(samples, axis=0)
        el = float(np.nanmedian(d.elevation[use]))
        fit = atmosphere.fit_layer(tb, el)
    except (FastcalError, ValueError) as exc:
        logger.warning("%s: no PWV from the WVR data (%s)", info.path, exc)
        return None, f"WVR retrieval failed: {exc}", 270.0, 50.0
    return float(fit.pwv_mm), "WVR retrieval", float(fit.t_k), float(fit.p_kpa)


def spw_transmission(freq_hz: np.ndarray, pwv_mm: float, airmass: np.ndarray, *,
                     t_k: float = 270.0, p_kpa: float = 50.0) -> np.ndarray:
    """Atmospheric transmission ``exp(-A (tau_dry(nu) + PWV kappa(nu)))``.

    Parameters
    ----------
    freq_hz : float[F]
    pwv_mm : float
        Zenith PWV (mm), >= 0.
    airmass : float[S]
        >= 1.

    Returns
    -------
    numpy.ndarray
        float64[S, F] in (0, 1].
    """
    from fastcal import atmosphere

    f = np.atleast_1d(np.asarray(freq_hz, np.float64))
    a = np.atleast_1d(np.asarray(airmass, np.float64))
    if not (np.isfinite(pwv_mm) and pwv_mm >= 0) or not np.all(a >= 1.0):
        raise ParameterError(f"pwv_mm={pwv_mm!r} / airmass {a.min() if a.size else None!r}; valid: "
                             f"PWV >= 0 mm and airmass >= 1")
    tau = (atmosphere.DRY_OPACITY_183 * (f / atmosphere.WVR_LINE_HZ) ** 2
           + pwv_mm * atmosphere.water_opacity_per_mm(f, t_k, p_kpa))
    return np.exp(-a[:, None] * tau[None, :])


def _scan_airmasses(info) -> np.ndarray:
    """Mean of start and end airmass of every TARGET scan (else every non-atmosphere scan)."""
    from fastcal import atmosphere

    centre = np.mean([a.position for a in info.antennas], axis=0)
    scans = [s for s in info.scans if any("TARGET" in i for i in s.intents)]
    if not scans:
        scans = [s for s in info.scans if not any("ATMOSPHERE" in i for i in s.intents)]
    out = []
    for s in scans:
        f = info.fields[s.field_ids[0]]
        _, el = atmosphere.azel(np.array([s.start, s.end]), f.ra_rad, f.dec_rad, centre)
        if np.all(el > np.radians(3.0)):
            out.append(float(np.mean(1.0 / np.sin(el))))
    return np.array(out)


def low_transmission_spws(info, spws, pwv_mm: float, *, t_k: float = 270.0, p_kpa: float = 50.0,
                          mintransrepspw: float = 0.05, mintransnonrepspws: float = 0.1,
                          representative_spw: int | None = None) -> tuple[list[int], dict[int, float]]:
    """Science spws to flag for low transmission, and the median transmission of each spw."""
    airmass = _scan_airmasses(info)
    if airmass.size == 0:
        return [], {}
    flagged, median = [], {}
    for sid in spws:
        thr = mintransrepspw if representative_spw is None or sid == representative_spw else mintransnonrepspws
        tr = spw_transmission(info.spws[sid].chan_freq, pwv_mm, airmass, t_k=t_k, p_kpa=p_kpa)
        median[sid] = float(np.median(tr))
        frac = float(np.mean(tr < thr))
        if frac >= MAX_FRAC_LOW_TRANS:
            flagged.append(sid)
            logger.info("%s spw %d: %.0f%% of the transmission values below %g: flagged", info.path, sid,
                        100 * frac, thr)
    return flagged, median


def or_flags_by_baseline(info, spws, mask_of, *, include_autocorr: bool = True) -> int:
    """OR a per-row channel mask into FLAG for every row of `spws`, block by block.

    Parameters
    ----------
    info : MSInfo
    spws : sequence of int
        Spectral windows to visit.
    mask_of : callable ``(chunk, antenna1, antenna2) -> bool (n_row, n_chan)``
        The samples to flag in one block (all correlations), channels as ``chunk.chan``.
    include_autocorr : bool
        Visit autocorrelation rows too.

    Returns
    -------
    int
        Newly flagged samples (channels x correlations); only blocks that change are written.
    """
    from fastcal.ms import ChunkWriter, read_block, read_chunks

    n_new = 0
    if not len(spws):
        return n_new
    with ChunkWriter(info) as w:
        for c in read_chunks(info, ("FLAG",), spw=",".join(map(str, spws)),
                             include_autocorr=include_autocorr):
            for b in range(c.n_blocks):
                sl = c.block_slice(b)
                m = mask_of(c, c.antenna1[sl], c.antenna2[sl])
                if not m.any():
                    continue
                flag = np.array(read_block(c, b, ("FLAG",))["FLAG"], copy=True)
                new = m[:, :, None] & ~flag
                if new.any():
                    n_new += int(new.sum())
                    flag |= m[:, :, None]
                    w.write("FLAG", c.rows[sl], flag, channels=c.chan)
    return n_new


def _flag_cmd_rows(path: str) -> int:
    import casacore.tables as ct

    sub = os.path.join(path, "FLAG_CMD")
    if not os.path.isdir(sub):
        return 0
    with ct.table(sub, ack=False) as t:
        return int(t.nrows())


@dataclass
class FlagSummary:
    """What :func:`flag_deterministic` flagged.

    ``new`` is agent -> newly flagged visibilities (row x chan x corr); ``total`` the
    visibilities considered (all non-WVR rows); ``flagged_before``/``flagged_after`` the
    flagged ones before and after; ``edge_channels`` spw -> TDM channels per edge;
    ``fdm_edge_channels`` spw -> FDM channels flagged near the baseband edges;
    ``missing_baseband_spws`` ACA-width FDM spws whose baseband range is unknown;
    ``shadowed`` the number of (time, antenna) pairs found shadowed; ``template`` the flag
    template lines (CASA flagdata list syntax); ``online_flag_commands`` rows in FLAG_CMD,
    ``online_applied`` the commands applied, ``online_skipped`` "command: reason" of those
    skipped, ``online_tbuff_s`` the time padding used; ``pwv_mm``/``pwv_source`` the PWV used for low transmission (None: agent
    skipped), ``transmission`` spw -> median model transmission, ``lowtrans_spws`` the spws
    flagged for it.
    """

    vis: str
    new: dict[str, int] = field(default_factory=dict)
    total: int = 0
    flagged_before: int = 0
    flagged_after: int = 0
    edge_channels: dict[int, int] = field(default_factory=dict)
    fdm_edge_channels: dict[int, list[int]] = field(default_factory=dict)
    missing_baseband_spws: list[int] = field(default_factory=list)
    shadowed: int = 0
    template: list[str] = field(default_factory=list)
    online_flag_commands: int = 0
    online_applied: int = 0
    online_skipped: list[str] = field(default_factory=list)
    online_tbuff_s: list[float] = field(default_factory=list)
    pwv_mm: float | None = None
    pwv_source: str = ""
    transmission: dict[int, float] = field(default_factory=dict)
    lowtrans_spws: list[int] = field(default_factory=list)

    @property
    def fraction_new(self) -> float:
        return sum(self.new.values()) / self.total if self.total else 0.0

    @property
    def fraction_flagged(self) -> float:
        return self.flagged_after / self.total if self.total else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("edge_channels", "fdm_edge_channels", "transmission"):
            d[k] = {str(s): v for s, v in getattr(self, k).items()}
        return d


def _spw_string(ids) -> str:
    return ",".join(str(i) for i in ids)


def _ranges(ch: np.ndarray) -> str:
    """Channel list -> CASA ``a~b;c~d`` ranges."""
    ch = np.unique(ch)
    out, start = [], 0
    for i in range(1, ch.size + 1):
        if i == ch.size or ch[i] != ch[i - 1] + 1:
            a, b = int(ch[start]), int(ch[i - 1])
            out.append(f"{a}~{b}" if b > a else f"{a}")
            start = i
    return ";".join(out)


def _online_masks(cmds: list[OnlineCommand], n_rows: int) -> tuple[np.ndarray | None, list[OnlineCommand]]:
    """Union of the whole-row commands (bool[n_rows] or None) and the partial ones."""
    whole = [c for c in cmds if c.whole_rows]
    union = None
    if whole:
        union = np.zeros(n_rows, bool)
        for c in whole:
            union[c.rows] = True
    return union, [c for c in cmds if not c.whole_rows]


def _partial_mask(cmd: OnlineCommand, chunk, rows_sel: np.ndarray, shape, info) -> np.ndarray:
    """Flag mask (row, chan, corr) of a channel- or correlation-restricted command."""
    mask = np.zeros(shape, bool)
    if cmd.selection.spw_channels is not None and chunk.spw_id not in cmd.selection.spw_channels:
        return mask
    chans = cmd.selection.channels(chunk.spw_id, info.spws[chunk.spw_id].num_chan)
    cm = np.isin(chunk.chan, chans)
    names = np.array(info.pols[chunk.pol_id].corr_names)
    pm = np.ones(names.size, bool) if cmd.corr is None else np.isin(names, cmd.corr)
    mask[np.ix_(rows_sel, cm, pm)] = True
    return mask


def _tbuff_pair(tbuff) -> tuple[float, float]:
    vals = [float(tbuff)] * 2 if np.isscalar(tbuff) else [float(x) for x in tbuff]
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2 or not all(np.isfinite(v) and v >= 0 for v in vals):
        raise ParameterError(f"tbuff={tbuff!r} is invalid; valid: seconds >= 0, one number or "
                             f"[before, after]")
    return vals[0], vals[1]


def flag_deterministic(vis: str, *, autocorr: bool = True, shadow: bool = True, tolerance: float = 0.0,
                       edgespw: bool = True, fracspw: float = 0.03125, fracspwfps: float = 0.048387,
                       clipzeros: bool = True, intents: str = DEFAULT_FLAG_INTENTS, online: bool = True,
                       lowtrans: bool = True, mintransrepspw: float = 0.05, mintransnonrepspws: float = 0.1,
                       representative_spw: int | None = None, pwv_mm: float | None = None,
                       tbuff: list[float] | float | None = None) -> FlagSummary:
    """Apply the deterministic flags to FLAG (see the module docstring); one pass over the MS.

    Parameters
    ----------
    vis : str
        Measurement Set (written in place: FLAG and FLAG_ROW).
    autocorr, shadow, edgespw, clipzeros, online, lowtrans : bool
        Switch the agents (``edgespw`` covers the TDM and the FDM edge channels).
    tolerance : float
        Shadowing tolerance (m).
    fracspw, fracspwfps : float
        Edge fractions for TDM and FPS-trimmed TDM spws.
    intents : str
        Comma-separated intent globs whose scans are flagged ("" = none).
    mintransrepspw, mintransnonrepspws : float
        Transmission thresholds (0..1) of the representative and the other science spws.
    representative_spw : int, optional
        The representative spw (None: unknown, every spw gets `mintransrepspw`).
    pwv_mm : float, optional
        Zenith PWV (mm) for the transmission model (default: from the MS, see
        :func:`median_pwv`).
    tbuff : float or [float, float], optional
        Padding (s) of the online flags' time ranges, before and after (one number: both);
        default the pipeline's ``hm_tbuff='halfint'`` (:func:`online_tbuff`).

    Returns
    -------
    FlagSummary

    Raises
    ------
    ParameterError
        Bad fractions, thresholds, PWV or a negative tolerance.
    """
    from fastcal.ms import ChunkWriter, open_ms, read_block, read_chunks

    if tolerance < 0:
        raise ParameterError(f"tolerance={tolerance!r} is invalid; valid: >= 0 m")
    for name, v in (("mintransrepspw", mintransrepspw), ("mintransnonrepspws", mintransnonrepspws)):
        if not 0.0 <= v <= 1.0:
            raise ParameterError(f"{name}={v!r} is invalid; valid: a transmission in [0, 1]")
    if pwv_mm is not None and not (np.isfinite(pwv_mm) and pwv_mm >= 0):
        raise ParameterError(f"pwv_mm={pwv_mm!r} is invalid; valid: >= 0 mm (or None: from the MS)")
    if tbuff is not None:
        _tbuff_pair(tbuff)
    edge_channel_count(64, 2e9, fracspw, fracspwfps)  # validates the fractions
    info = open_ms(vis)
    roles = info.spw_roles
    spws = [s.id for s in info.spws if roles[s.id] not in ("wvr", "unused")]
    science = [s for s in spws if roles[s] == "science"]
    if representative_spw is not None and representative_spw not in science:
        raise ParameterError(f"representative_spw={representative_spw!r} is not a science spw of "
                             f"{info.path}; valid: {science}")
    summary = FlagSummary(vis=info.path, new={a: 0 for a in AGENTS})
    if online:
        pad = online_tbuff(info) if tbuff is None else _tbuff_pair(tbuff)
        summary.online_tbuff_s = [float(pad[0]), float(pad[1])]
        summary.online_flag_commands, cmds, summary.online_skipped = online_flag_commands(info, pad)
        summary.online_applied = len(cmds)
    else:
        summary.online_flag_commands, cmds = _flag_cmd_rows(info.path), []
    if not spws:
        return summary
    online_rows, online_partial = _online_masks(cmds, info.n_rows)
    pats = [p.strip() for p in intents.split(",") if p.strip()]
    bad_states = np.array([any(fnmatch.fnmatchcase(i, p) for i in s.intents for p in pats)
                           for s in info.states] or [False], bool)
    state_of_row = info.index.state_id
    diam = np.array([a.dish_diameter for a in info.antennas], np.float64)
    edges = {s: edge_channel_count(info.spws[s].num_chan, info.spws[s].total_bandwidth, fracspw, fracspwfps)
             for s in science} if edgespw else {}
    summary.edge_channels = {s: n for s, n in edges.items() if n}
    fdm: dict[int, np.ndarray] = {}
    if edgespw:
        for s in science:
            ch, missing = fdm_edge_channels(info, s, fracspw=fracspw, fracspwfps=fracspwfps)
            if ch.size:
                fdm[s] = ch
            if missing:
                summary.missing_baseband_spws.append(s)
    summary.fdm_edge_channels = {s: ch.tolist() for s, ch in fdm.items()}
    low: set[int] = set()
    if lowtrans and science:
        if pwv_mm is not None:
            pwv, src, t_k, p_kpa = float(pwv_mm), "pwv_mm argument", 270.0, 50.0
        else:
            pwv, src, t_k, p_kpa = median_pwv(info)
        summary.pwv_mm, summary.pwv_source = pwv, src
        if pwv is not None:
            flagged, summary.transmission = low_transmission_spws(
                info, science, pwv, t_k=t_k, p_kpa=p_kpa, mintransrepspw=mintransrepspw,
                mintransnonrepspws=mintransnonrepspws, representative_spw=representative_spw)
            low = set(flagged)
            summary.lowtrans_spws = sorted(low)
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
                if online_rows is not None:
                    agent("online", online_rows[rows][:, None, None] & full)
                for cmd in online_partial:
                    hit = np.isin(rows, cmd.rows)
                    if hit.any():
                        agent("online", _partial_mask(cmd, chunk, hit, flag.shape, info))
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
                if chunk.spw_id in fdm:
                    cm = np.zeros(flag.shape[1:], bool)
                    cm[np.isin(chunk.chan, fdm[chunk.spw_id]), :] = True
                    agent("fdm_edge", np.broadcast_to(cm, flag.shape))
                if chunk.spw_id in low:
                    agent("lowtrans", np.ones(flag.shape, bool))
                if clipzeros:
                    d = arr["DATA"]
                    agent("clip_zeros", (d == 0) | ~np.isfinite(d))
                summary.flagged_after += int(flag.sum())
                if (flag != before).any():
                    writer.write("FLAG", rows, flag, channels=chunk.chan)
    summary.shadowed = len(shadowed_pairs)
    summary.template = _template(summary, spws, pats, autocorr, shadow, tolerance, clipzeros, info, cmds)
    logger.info("flagdata %s: newly flagged %s of %d visibilities (%.2f%% flagged now)", info.path,
                {k: v for k, v in summary.new.items() if v}, summary.total, 100 * summary.fraction_flagged)
    if summary.online_skipped:
        logger.warning("%s: %d of %d online flag commands skipped (unsupported or not matching the MS)",
                       info.path, len(summary.online_skipped), summary.online_flag_commands)
    return summary


def _template(s: FlagSummary, spws, pats, autocorr, shadow, tolerance, clipzeros, info, cmds) -> list[str]:
    spw = _spw_string(spws)
    out = []
    if pats and s.new["intents"]:
        out.append(f"mode='manual' spw='{spw}' intent='{','.join(pats)}' reason='fastcal:intents'")
    if s.new["online"]:
        out += [f"{c.text} reason='fastcal:online'" for c in cmds]
    if autocorr and s.new["autocorr"]:
        out.append(f"mode='manual' spw='{spw}' autocorr=True reason='fastcal:autocorr'")
    if shadow and s.new["shadow"]:
        out.append(f"mode='shadow' tolerance={tolerance!r} reason='fastcal:shadow'")
    for sid, n in sorted(s.edge_channels.items()):
        last = info.spws[sid].num_chan - 1
        out.append(f"mode='manual' spw='{sid}:0~{n - 1};{last - n + 1}~{last}' reason='fastcal:edgespw'")
    for sid, ch in sorted(s.fdm_edge_channels.items()):
        out.append(f"mode='manual' spw='{sid}:{_ranges(np.asarray(ch))}' reason='fastcal:fdm_edge'")
    for sid in s.lowtrans_spws:
        out.append(f"mode='manual' spw='{sid}' reason='fastcal:lowtrans'")
    if clipzeros and s.new["clip_zeros"]:
        out.append(f"mode='clip' spw='{spw}' clipzeros=True reason='fastcal:clip_zeros'")
    return out


class FlagDataStage(Stage):
    """Deterministic flags (online, intents, autocorrelations, shadowing, TDM/FDM edges, low
    transmission, zeros)."""

    name = "flagdata"
    title = "deterministic flagging"
    simplified = True
    modifies_flags = True

    def run(self, ctx: Context) -> StageResult:
        o = ctx.options
        rep = o.get("representative_spw")
        pwv = o.get("pwv_mm")
        params = dict(vis=ctx.vis, autocorr=bool(o.get("flag_autocorr", True)),
                      shadow=bool(o.get("flag_shadow", True)), tolerance=float(o.get("shadow_tolerance", 0.0)),
                      edgespw=bool(o.get("flag_edgespw", True)), fracspw=float(o.get("fracspw", 0.03125)),
                      fracspwfps=float(o.get("fracspwfps", 0.048387)),
                      clipzeros=bool(o.get("flag_zeros", True)),
                      intents=str(o.get("flag_intents", DEFAULT_FLAG_INTENTS)),
                      online=bool(o.get("flag_online", True)), lowtrans=bool(o.get("flag_lowtrans", True)),
                      mintransrepspw=float(o.get("mintransrepspw", 0.05)),
                      mintransnonrepspws=float(o.get("mintransnonrepspws", 0.1)),
                      representative_spw=None if rep is None else int(rep),
                      pwv_mm=None if pwv is None else float(pwv),
                      tbuff=None if o.get("online_tbuff") is None else
                      [float(x) for x in np.atleast_1d(o["online_tbuff"])])
        summary = ctx.call(flag_deterministic, **params)
        ctx.refresh()
        cmd_of: dict[str, list[str]] = {}
        for line in summary.template:
            reason = line.rsplit("reason='fastcal:", 1)[1].rstrip("'")
            cmd_of.setdefault(reason, []).append(line)
        for a in AGENTS:
            if summary.new[a]:
                ctx.add_flags(a, "\n".join(cmd_of.get(a, [])), summary.new[a], summary.total)
        return StageResult(self.name, OK, inputs={k: v for k, v in params.items() if k != "vis"},
                           outputs=summary.to_dict(), qa=_qa(summary), messages=_messages(summary),
                           plots=[PlotSpec("flag_summary", "Flagged fraction per agent",
                                           {"new": summary.new, "total": summary.total})])


def _qa(summary: FlagSummary) -> list:
    """Scores: unexpected flags (shadow + zeros) and, when they flagged anything, the online
    and low-transmission agents (pipeline ``score_data_flagged_by_agents`` limits 5 %/60 %)."""
    total = max(summary.total, 1)
    q = agent_flagged_score((summary.new["shadow"] + summary.new["clip_zeros"]) / total, "shadow+zeros")
    q.message += (f"; {100 * summary.fraction_flagged:.1f}% flagged in total (incl. "
                  f"autocorrelations, non-science intents, online flags and edges)")
    qa = [q]
    if summary.new["online"]:
        qa.append(agent_flagged_score(summary.new["online"] / total, "online"))
    if summary.new["lowtrans"]:
        lt = agent_flagged_score(summary.new["lowtrans"] / total, "lowtrans")
        lt.message += f" (spws {summary.lowtrans_spws}, PWV {summary.pwv_mm:.2f} mm)"
        qa.append(lt)
    return qa


def _messages(summary: FlagSummary) -> list[str]:
    m = []
    if summary.online_flag_commands:
        m.append(f"FLAG_CMD: {summary.online_applied} of {summary.online_flag_commands} online flag "
                 f"commands applied ({summary.new['online']} visibilities newly flagged)")
    if summary.online_skipped:
        m.append(f"{len(summary.online_skipped)} online flag command(s) skipped: "
                 + "; ".join(summary.online_skipped[:3]) + (" ..." if len(summary.online_skipped) > 3 else ""))
    if summary.fdm_edge_channels:
        m.append("FDM baseband-edge channels flagged: " + ", ".join(
            f"spw {s}: {_ranges(np.asarray(c))}" for s, c in sorted(summary.fdm_edge_channels.items())))
    if summary.missing_baseband_spws:
        m.append(f"spws {summary.missing_baseband_spws}: no baseband spw (SQLD or >= 1875 MHz) found, "
                 f"ACA baseband-edge channels not flagged")
    if summary.pwv_mm is None and summary.pwv_source:
        m.append(f"low-transmission flagging skipped: no PWV ({summary.pwv_source})")
    elif summary.lowtrans_spws:
        m.append(f"spws {summary.lowtrans_spws} flagged for low atmospheric transmission (PWV "
                 f"{summary.pwv_mm:.2f} mm from {summary.pwv_source})")
    if summary.fraction_flagged >= 1.0:
        m.append("all data are flagged")
    return m
