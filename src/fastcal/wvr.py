"""WVR phase correction: ``solve_wvr`` (CASA ``wvrgcal``), its statistics and pipeline QA.

ALMA's 12-m antennas carry 183 GHz water-vapour radiometers whose four double-sideband
channel temperatures follow the wet path above each antenna. :func:`solve_wvr` turns them
into a ``T Jones`` table of phases per antenna, WVR time and spectral window, written exactly
as CASA's wvrgcal writes its tables. The model and the fit are documented in
:mod:`fastcal.atmosphere` and ``docs/wvr.md``.

Pipeline per call:

1. Read the WVR rows (autocorrelations of the 4-channel spw(s), REAL part = T_B in K) in one
   vectorised ``getcol`` per column; elevations from POINTING (AZELGEO directions) or, without
   POINTING, from FIELD PHASE_DIR, time and antenna position.
2. Keep the samples of on-source states (``ON_SOURCE``/``SIGNAL``/``REFERENCE`` intents, as
   wvrgcal); split them into segments (``segsource``: each run of one source).
3. Per retrieval group (a segment, a ``tie`` group of sources, or everything when
   ``segsource=False``) fit the thin-layer model to the array-median segment-mean T_B and
   derive dT_k/dL and its error at each segment's mean elevation.
4. Per segment and antenna: ``L(t) = sum_k c_k (T_k(t) - <T_k>)`` with
   ``c_k = w_k / (dT_k/dL)``, ``w_k`` proportional to ``1 / (sigma_k^2/g_k^2 +
   sigma_L^2 e_k^2/g_k^2)`` (thermal noise and coefficient error; ``g_k = dT_k/dL``,
   ``e_k`` its error, ``sigma_L`` the rms path), normalised to sum 1.
5. ``smooth`` (boxcar), ``scale``, antennas in ``wvrflag`` replaced by the mean of up to 3
   nearest good antennas within ``maxdistm`` (>= ``minnumants`` needed, else FLAG=True in
   the table); antennas without usable WVR data (valid fraction < ``mingoodfrac``: no rows,
   zeros, flags) are treated the same way, with a warning (wvrgcal 6.7 does the same).
6. ``phi = -2 pi nu_c L / c`` per spw with ``nu_c = CHAN_FREQ[nchan // 2]``;
   ``reversespw`` flips the sign.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import casacore.tables as ct
import numpy as np

from fastcal import atmosphere
from fastcal.caltable import CalTable, as_caltable
from fastcal.errors import (
    FastcalError,
    MSNotFoundError,
    NotAnMSError,
    ParameterError,
    SelectionError,
    UnsupportedError,
)
from fastcal.ms import open_ms
from fastcal.ms.info import (
    AntennaInfo,
    DataDescInfo,
    FieldInfo,
    IndexColumns,
    MSInfo,
    SpwInfo,
    StateInfo,
)

__all__ = [
    "WVRData",
    "Retrieval",
    "WVRStats",
    "WVRResult",
    "Improvement",
    "read_wvr_data",
    "solve_wvr",
    "wvr_improvement",
    "wvr_qa_score",
    "add_cli_arguments",
    "run_from_args",
]

logger = logging.getLogger(__name__)

#: Sub-intents wvrgcal corrects (CASA docs, Water Vapor Radiometers).
ON_SOURCE_TOKENS: tuple[str, ...] = ("ON_SOURCE", "SIGNAL", "REFERENCE")
#: Fallback thermal noise of the WVR channels (K) when it cannot be estimated from the data.
DEFAULT_NOISE_K = 0.1
#: Pipeline thresholds (reference section 6.5).
QA_DISC_LIMIT_UM = 500.0
QA_RMS_LIMIT_UM = 500.0


# ----------------------------------------------------------------------------- data classes
@dataclass(frozen=True, eq=False)
class WVRData:
    """WVR samples on a common time grid.

    Attributes
    ----------
    time : float64 (n_t,)
        Sample centres (MJD s), union over antennas and WVR spws.
    interval : float64 (n_t,)
        INTERVAL of the samples (s).
    tb : float64 (n_t, n_ant, 4)
        Brightness temperatures (K); NaN where missing, flagged, zero or non-finite.
    field_id, scan, state_id, observation_id : int (n_t,)
        Of the sample (first antenna's row).
    on_source : bool (n_t,)
        State intents include ON_SOURCE, SIGNAL or REFERENCE (True without STATE).
    elevation : float64 (n_t, n_ant)
        Elevation (rad) of each antenna's line of sight.
    elevation_source : str
        ``"POINTING"`` or ``"FIELD"``.
    wvr_spws : tuple of int
        WVR spws read.
    sigma_k : float64 (n_ant, 4)
        Thermal noise per channel estimated from sample-to-sample differences (K; NaN if
        the antenna has no data).
    present : bool (n_ant,)
        The antenna has WVR rows (usable or not).
    """

    time: np.ndarray
    interval: np.ndarray
    tb: np.ndarray
    field_id: np.ndarray
    scan: np.ndarray
    state_id: np.ndarray
    observation_id: np.ndarray
    on_source: np.ndarray
    elevation: np.ndarray
    elevation_source: str
    wvr_spws: tuple[int, ...]
    sigma_k: np.ndarray
    present: np.ndarray

    @property
    def n_ant(self) -> int:
        return int(self.tb.shape[1])


@dataclass(frozen=True, eq=False)
class Retrieval:
    """One atmospheric retrieval (a segment, a tie group, or the whole observation).

    ``dtdl`` and ``dtdl_err`` are K per mm of line-of-sight path at ``elevation_rad`` (the
    group's mean); ``coeffs`` are the path weights c_k (mm per K) used there.
    """

    sources: tuple[str, ...]
    segments: tuple[int, ...]
    time_range: tuple[float, float]
    elevation_rad: float
    pwv_mm: float
    pwv_err_mm: float
    t_k: float
    p_kpa: float
    chi2: float
    tb_mean_k: np.ndarray
    dtdl: np.ndarray
    dtdl_err: np.ndarray
    coeffs: np.ndarray


@dataclass(frozen=True, eq=False)
class WVRStats:
    """Per-antenna statistics in the spirit of wvrgcal's log (all paths in microns).

    Attributes
    ----------
    antenna_names : tuple of str
    has_wvr : bool (n_ant,)
        The antenna has WVR rows (wvrgcal's "WVR?" column), even if they are unusable.
    flagged : bool (n_ant,)
        Its own WVR is not used: in ``wvrflag`` or valid fraction < ``mingoodfrac``
        (wvrgcal's "Flag?" column; the pipeline QA counts these).
    interpolated : bool (n_ant,)
        Path taken from neighbouring antennas.
    table_flagged : bool (n_ant,)
        FLAG=True (CPARAM 1) in the table: flagged and not interpolable.
    good_frac : float64 (n_ant,)
        Fraction of on-source samples with all 4 channels valid.
    rms_um : float64 (n_ant,)
        RMS of the WVR path fluctuation over the statistics times (per-segment means
        removed): wvrgcal's "RMS".
    disc_um : float64 (n_ant,)
        RMS over time of the weighted spread of the 4 per-channel path estimates about the
        combined path: wvrgcal's "Disc." (channel disagreement; cloud/bad-WVR indicator).
    thermal_um : float64 (n_ant,)
        Expected thermal-noise contribution to the path per sample.
    pwv_mm : float
        Median retrieved PWV over the retrievals.
    retrievals : list of Retrieval
    stat_times : (float, float)
        Range of the times used for the statistics (MJD s).
    """

    antenna_names: tuple[str, ...]
    has_wvr: np.ndarray
    flagged: np.ndarray
    interpolated: np.ndarray
    table_flagged: np.ndarray
    good_frac: np.ndarray
    rms_um: np.ndarray
    disc_um: np.ndarray
    thermal_um: np.ndarray
    pwv_mm: float
    retrievals: list[Retrieval]
    stat_times: tuple[float, float]

    def as_dict(self) -> dict:
        """wvrgcal-like return record (``Name``, ``WVR``, ``Flag``, ``RMS_um``, ``Disc_um``)."""
        return {
            "Name": list(self.antenna_names),
            "WVR": [bool(x) for x in self.has_wvr],
            "Flag": [bool(x) for x in self.flagged],
            "Frac_unflagged": [float(x) for x in self.good_frac],
            "RMS_um": [float(np.nan_to_num(x)) for x in self.rms_um],
            "Disc_um": [float(np.nan_to_num(x)) for x in self.disc_um],
        }

    def report(self) -> str:
        """Multi-line text summary (retrievals and the antenna table), as wvrgcal logs it."""
        lines = [
            "Retrieved parameters",
            "PWV(mm)  err    T(K)   P(kPa)  dT1dL  dT2dL  dT3dL  dT4dL  sources",
        ]
        for r in self.retrievals:
            d = " ".join(f"{x:6.3f}" for x in r.dtdl)
            lines.append(
                f"{r.pwv_mm:7.3f} {r.pwv_err_mm:6.3f} {r.t_k:6.1f} {r.p_kpa:6.1f}  {d}  "
                f"{','.join(r.sources)}"
            )
        lines.append("#  Name      WVR?  Flag?  RMS(um)  Disc(um)")
        for i, name in enumerate(self.antenna_names):
            lines.append(
                f"{i:<3d}{name:<10s}{'Yes' if self.has_wvr[i] else 'No':<6s}"
                f"{'Yes' if self.flagged[i] else 'No':<7s}{self.rms_um[i]:8.1f}  {self.disc_um[i]:8.1f}"
            )
        return "\n".join(lines)


@dataclass(frozen=True, eq=False)
class WVRResult:
    """Output of :func:`solve_wvr`.

    Attributes
    ----------
    table : CalTable
        ``T Jones`` table (written to ``caltable`` when given).
    stats : WVRStats
    time : float64 (n_t,)
        Solution times (MJD s, ``toffset`` included).
    path_m : float64 (n_t, n_ant)
        Path removed by the table (m; NaN where flagged).
    field_id : int (n_t,)
    segment : int (n_t,)
        Segment index of each time.
    spw_ids : tuple of int
        Spws with solutions.
    caltable : str or None
        Path written.
    """

    table: CalTable
    stats: WVRStats
    time: np.ndarray
    path_m: np.ndarray
    field_id: np.ndarray
    segment: np.ndarray
    spw_ids: tuple[int, ...]
    caltable: str | None = None

    def improvement(self, vis: str | os.PathLike | MSInfo, **kwargs) -> Improvement:
        """:func:`wvr_improvement` with this table (phase rms ratio on the phase calibrator)."""
        return wvr_improvement(vis, self.table, **kwargs)


@dataclass(frozen=True, eq=False)
class Improvement:
    """Phase-rms improvement from WVR (pipeline ``hifa_wvrgcalflag`` view).

    Attributes
    ----------
    antenna_names : tuple of str
    rms_without_deg, rms_with_deg : float64 (n_ant,)
        Phase rms per antenna (deg; per-scan means removed), NaN for the reference antenna
        and antennas without data.
    ratio : float64 (n_ant,)
        ``rms_with / rms_without``.
    score : float
        ``1 / median(ratio)`` (> 1: WVR improved the phases).
    refant : int
        -1: the rms is the median over up to 8 reference antennas.
    method : str
        How the phases were obtained.
    scans : tuple of int
    spw : int
    """

    antenna_names: tuple[str, ...]
    rms_without_deg: np.ndarray
    rms_with_deg: np.ndarray
    ratio: np.ndarray
    score: float
    refant: int
    method: str
    scans: tuple[int, ...]
    spw: int


# ----------------------------------------------------------------------------- metadata
@dataclass(frozen=True, eq=False)
class _Meta:
    """The metadata solve_wvr needs: subtables, plus either an open MSInfo's index or the
    DATA_DESC_ID column (reading the 9 index columns of a large MS costs more than the whole
    WVR solve, so a path is opened this lighter way)."""

    path: str
    antennas: tuple[AntennaInfo, ...]
    spws: tuple[SpwInfo, ...]
    ddescs: tuple[DataDescInfo, ...]
    fields: tuple[FieldInfo, ...]
    states: tuple[StateInfo, ...]
    index: IndexColumns | None
    ddid: np.ndarray

    @property
    def antenna_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.antennas)

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def field_ids(self, name: str) -> tuple[int, ...]:
        return tuple(f.id for f in self.fields if f.name == name)

    def spws_with_rows(self) -> set[int]:
        dd = np.unique(self.ddid)
        return {self.ddescs[int(d)].spw_id for d in dd if 0 <= d < len(self.ddescs)}


def _col(t: ct.table, name: str, default):
    return t.getcol(name) if name in t.colnames() and t.nrows() else default


def _read_meta(vis: str | os.PathLike | MSInfo) -> _Meta:
    """Subtables of the MS (and DATA_DESC_ID of every row, unless an MSInfo is given)."""
    if isinstance(vis, MSInfo):
        return _Meta(
            vis.path,
            vis.antennas,
            vis.spws,
            vis.ddescs,
            vis.fields,
            vis.states,
            vis.index,
            np.asarray(vis.index.ddid),
        )
    path = os.path.abspath(os.fspath(vis))
    if not os.path.exists(path):
        raise MSNotFoundError(f"Measurement Set {path} does not exist")
    try:
        with ct.table(path, ack=False) as t:
            kw = t.getkeywords()
            if t.info().get("type") != "Measurement Set" and "MS_VERSION" not in kw:
                raise NotAnMSError(f"{path} is a casacore table but not a Measurement Set")
            ddid = t.getcol("DATA_DESC_ID") if t.nrows() else np.zeros(0, np.int32)
    except RuntimeError as exc:
        raise NotAnMSError(f"{path} is not a readable casacore table: {exc}") from exc
    sub = {
        k: os.path.join(path, k)
        for k in ("ANTENNA", "SPECTRAL_WINDOW", "DATA_DESCRIPTION", "FIELD", "STATE")
    }
    with ct.table(sub["ANTENNA"], ack=False) as t:
        n = t.nrows()
        names = _col(t, "NAME", [f"ANT{i}" for i in range(n)])
        stations = _col(t, "STATION", [""] * n)
        pos = np.asarray(_col(t, "POSITION", np.zeros((n, 3))), dtype=np.float64)
        diam = np.asarray(_col(t, "DISH_DIAMETER", np.zeros(n)), dtype=np.float64)
    antennas = tuple(
        AntennaInfo(i, str(names[i]), str(stations[i]), pos[i], float(diam[i])) for i in range(n)
    )
    spws = []
    with ct.table(sub["SPECTRAL_WINDOW"], ack=False) as t:
        n = t.nrows()
        names = _col(t, "NAME", [""] * n)
        nchan = _col(t, "NUM_CHAN", np.zeros(n, int))
        for i in range(n):
            freq = np.asarray(t.getcell("CHAN_FREQ", i), dtype=np.float64)
            width = np.asarray(t.getcell("CHAN_WIDTH", i), dtype=np.float64)
            spws.append(
                SpwInfo(
                    i,
                    str(names[i]),
                    int(nchan[i]),
                    freq,
                    width,
                    float(freq.mean()) if freq.size else 0.0,
                    float(np.abs(width).sum()),
                    -1,
                    0,
                )
            )
    with ct.table(sub["DATA_DESCRIPTION"], ack=False) as t:
        spw_id = _col(t, "SPECTRAL_WINDOW_ID", [])
        pol_id = _col(t, "POLARIZATION_ID", np.zeros(len(spw_id), int))
    ddescs = tuple(
        DataDescInfo(i, int(a), int(b)) for i, (a, b) in enumerate(zip(spw_id, pol_id, strict=True))
    )
    fields = []
    with ct.table(sub["FIELD"], ack=False) as t:
        n = t.nrows()
        names = _col(t, "NAME", [""] * n)
        src = _col(t, "SOURCE_ID", np.full(n, -1))
        for i in range(n):
            d = np.asarray(t.getcell("PHASE_DIR", i), dtype=np.float64).reshape(-1, 2)
            fields.append(FieldInfo(i, str(names[i]), float(d[0, 0]), float(d[0, 1]), int(src[i])))
    states = []
    if os.path.isdir(sub["STATE"]):
        with ct.table(sub["STATE"], ack=False) as t:
            modes = _col(t, "OBS_MODE", [])
        states = [
            StateInfo(i, str(m), tuple(x.strip() for x in str(m).split(",") if x.strip()))
            for i, m in enumerate(modes)
        ]
    return _Meta(
        path, antennas, tuple(spws), ddescs, tuple(fields), tuple(states), None, np.asarray(ddid)
    )


_ROW_SCALARS = (
    "TIME",
    "ANTENNA1",
    "ANTENNA2",
    "FIELD_ID",
    "SCAN_NUMBER",
    "STATE_ID",
    "OBSERVATION_ID",
    "FLAG_ROW",
)


def _wvr_rows(meta: _Meta, ddids: Sequence[int]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Unflagged autocorrelation rows of `ddids`: row numbers and their columns."""
    rows = np.flatnonzero(np.isin(meta.ddid, ddids))
    if meta.index is not None:
        idx = meta.index
        keep = (idx.antenna1[rows] == idx.antenna2[rows]) & ~idx.flag_row[rows]
        rows = rows[keep]
        cols = _read_rows(meta.path, rows)
        cols.update(
            TIME=idx.time[rows],
            ANTENNA1=idx.antenna1[rows],
            FIELD_ID=idx.field_id[rows],
            SCAN_NUMBER=idx.scan[rows],
            STATE_ID=idx.state_id[rows],
            OBSERVATION_ID=idx.observation_id[rows],
        )
        return rows, cols
    cols = _read_rows(meta.path, rows, ("DATA", "FLAG", "INTERVAL") + _ROW_SCALARS)
    keep = (cols["ANTENNA1"] == cols["ANTENNA2"]) & ~cols["FLAG_ROW"].astype(bool)
    return rows[keep], {k: v[keep] for k, v in cols.items()}


# ----------------------------------------------------------------------------- reading
def _wvr_spw_ids(info: _Meta, wvrspw: Sequence[int] | int | None) -> tuple[int, ...]:
    with_rows = info.spws_with_rows()
    if wvrspw is not None and not (isinstance(wvrspw, (list, tuple)) and len(wvrspw) == 0):
        ids = (wvrspw,) if isinstance(wvrspw, (int, np.integer)) else tuple(wvrspw)
        n_spw = len(info.spws)
        for s in ids:
            if not 0 <= int(s) < n_spw:
                raise SelectionError(
                    f"wvrspw={wvrspw!r}: spw {s} does not exist in {info.path}; valid: 0..{n_spw - 1}"
                )
            if info.spws[int(s)].num_chan != 4:
                raise SelectionError(
                    f"wvrspw={wvrspw!r}: spw {s} ({info.spws[int(s)].name}) has "
                    f"{info.spws[int(s)].num_chan} channels; a WVR spw has 4"
                )
        return tuple(int(s) for s in ids)
    ids = tuple(s.id for s in info.spws if s.num_chan == 4 and s.id in with_rows)
    if not ids:
        names = ", ".join(f"{s.id}:{s.name}({s.num_chan} ch)" for s in info.spws)
        raise UnsupportedError(
            f"{info.path} has no WVR data: no 4-channel spectral window with rows (wvrgcal's "
            f"rule; ALMA names it WVR#NOMINAL). Spws: {names}"
        )
    return ids


def _state_on_source(info: _Meta) -> dict[int, bool]:
    out = {-1: True}
    for s in info.states:
        out[s.id] = any(any(tok in i for tok in ON_SOURCE_TOKENS) for i in s.intents)
    return out


def _read_rows(
    path: str, rows: np.ndarray, columns: Sequence[str] = ("DATA", "FLAG", "INTERVAL")
) -> dict[str, np.ndarray]:
    """Columns of the given (sorted) rows: one getcol per contiguous run of rows, or one
    selection when the runs are many."""
    out: dict[str, list] = {c: [] for c in columns}
    with ct.table(path, ack=False) as t:
        # contiguous runs keep getcol efficient on tiled storage
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        starts = np.concatenate([[0], breaks])
        ends = np.concatenate([breaks, [rows.size]])
        if starts.size > 200:  # many short runs: one selection is faster
            sel = t.selectrows(rows.tolist())
            for c in out:
                out[c].append(sel.getcol(c))
            sel.close()
        else:
            for a, b in zip(starts, ends, strict=True):
                r0, n = int(rows[a]), int(b - a)
                for c in out:
                    out[c].append(t.getcol(c, startrow=r0, nrow=n))
    return {c: np.concatenate(v) if v else np.zeros(0) for c, v in out.items()}


def read_wvr_data(
    vis: str | os.PathLike | MSInfo, wvrspw: Sequence[int] | int | None = None
) -> WVRData:
    """Read the WVR autocorrelations of an MS onto a (time, antenna, channel) grid.

    Parameters
    ----------
    vis : str or MSInfo
        Measurement Set.
    wvrspw : int or sequence of int, optional
        WVR spws; default every 4-channel spw with rows (wvrgcal's rule).

    Returns
    -------
    WVRData

    Raises
    ------
    UnsupportedError
        No WVR spw / no WVR rows.
    """
    info = vis if isinstance(vis, _Meta) else _read_meta(vis)
    spws = _wvr_spw_ids(info, wvrspw)
    ddids = [d.id for d in info.ddescs if d.spw_id in spws]
    rows, cols = _wvr_rows(info, ddids)
    if rows.size == 0:
        raise UnsupportedError(
            f"{info.path}: WVR spw(s) {list(spws)} have no unflagged autocorrelation rows; "
            "cannot compute a WVR correction"
        )
    data = cols["DATA"]
    if data.ndim != 3 or data.shape[1] != 4:
        raise UnsupportedError(
            f"{info.path}: WVR DATA cells have shape {data.shape[1:]}; expected 4 channels"
        )
    tb = data[:, :, 0].real.astype(np.float64)
    bad = cols["FLAG"][:, :, 0] | ~np.isfinite(tb) | (tb == 0.0)
    tb[bad] = np.nan
    n_ant = len(info.antennas)
    times = np.asarray(cols["TIME"], dtype=np.float64)
    # common time grid: antennas' time stamps within a quarter of the sample interval of
    # each other form one sample (robust to per-antenna jitter of the time stamps)
    inv, first = _time_slots(times, cols["INTERVAL"])
    n_t = first.size
    grid = np.full((n_t, n_ant, 4), np.nan)
    ant = np.asarray(cols["ANTENNA1"], dtype=np.int64)
    grid[inv, ant] = tb
    t_mean = np.bincount(inv, weights=times, minlength=n_t) / np.bincount(inv, minlength=n_t)
    field_id = np.asarray(cols["FIELD_ID"])[first]
    scan = np.asarray(cols["SCAN_NUMBER"])[first]
    state = np.asarray(cols["STATE_ID"])[first]
    interval = cols["INTERVAL"][first].astype(np.float64)
    on = _state_on_source(info)
    on_source = np.array([on.get(int(s), True) for s in state], dtype=bool)
    elevation, el_src = _elevations(info, t_mean, field_id)
    return WVRData(
        time=t_mean,
        interval=interval,
        tb=grid,
        field_id=field_id.astype(np.int32),
        scan=scan.astype(np.int32),
        state_id=state.astype(np.int32),
        observation_id=np.asarray(cols["OBSERVATION_ID"])[first].astype(np.int32),
        on_source=on_source,
        elevation=elevation,
        elevation_source=el_src,
        wvr_spws=spws,
        sigma_k=_thermal_noise(grid),
        present=np.bincount(ant, minlength=n_ant) > 0,
    )


def _time_slots(times: np.ndarray, interval: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group row times into samples: (slot index per row, first row of each slot).

    Sorted times start a new slot where the step exceeds a quarter of the median INTERVAL
    (or 0.1 s if INTERVAL is unusable).
    """
    order = np.argsort(times, kind="stable")
    ts = times[order]
    med = float(np.median(interval)) if interval.size else 0.0
    tol = 0.25 * med if np.isfinite(med) and med > 0 else 0.1
    new = np.concatenate([[True], np.diff(ts) > tol])
    slot_sorted = np.cumsum(new) - 1
    inv = np.empty_like(slot_sorted)
    inv[order] = slot_sorted
    first = order[np.flatnonzero(new)]
    return inv, first


def _thermal_noise(tb: np.ndarray) -> np.ndarray:
    """Robust per-antenna, per-channel noise (K) from first differences (1.4826 MAD / sqrt 2)."""
    d = np.diff(tb, axis=0)
    median = np.median if np.isfinite(d).all() else np.nanmedian  # nanmedian is slow
    with np.errstate(all="ignore"), _quiet_nan():
        med = median(d, axis=0)
        mad = median(np.abs(d - med), axis=0)
    return 1.4826 * mad / np.sqrt(2.0)


class _quiet_nan:
    """Silence numpy's all-NaN slice warnings inside a block."""

    def __enter__(self):
        import warnings

        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)
        return self

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)


def _elevations(info: _Meta, times: np.ndarray, field_id: np.ndarray) -> tuple[np.ndarray, str]:
    """(n_t, n_ant) elevation (rad) from POINTING (az/el) or from FIELD directions."""
    n_ant = len(info.antennas)
    el = _pointing_elevation(info.path, times, n_ant)
    if el is not None:
        return el, "POINTING"
    pos = np.stack([a.position for a in info.antennas])  # (n_ant, 3)
    ra = np.array([info.fields[f].ra_rad for f in field_id])
    dec = np.array([info.fields[f].dec_rad for f in field_id])
    _, el = atmosphere.azel(times[:, None], ra[:, None], dec[:, None], pos[None, :, :])
    return el, "FIELD"


def _interp_no_gaps(x: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """Linear interpolation, but the nearest sample across gaps (> 1.5x the median spacing:
    slews between sources, where a straight line between two fields would be wrong)."""
    if xp.size < 2:
        return np.full(x.shape, fp[0] if fp.size else np.nan)
    lin = np.interp(x, xp, fp)
    j = np.clip(np.searchsorted(xp, x), 1, xp.size - 1)
    gap = (xp[j] - xp[j - 1]) > 1.5 * np.median(np.diff(xp))
    nearest = np.where(np.abs(x - xp[j - 1]) <= np.abs(xp[j] - x), fp[j - 1], fp[j])
    return np.where(gap, nearest, lin)


def _pointing_elevation(path: str, times: np.ndarray, n_ant: int) -> np.ndarray | None:
    """Elevation from POINTING DIRECTION when it is an AZEL frame and covers every antenna."""
    sub = os.path.join(path, "POINTING")
    if not os.path.isdir(sub):
        return None
    with ct.table(sub, ack=False) as t:
        if t.nrows() == 0 or "DIRECTION" not in t.colnames():
            return None
        ref = str(t.getcolkeywords("DIRECTION").get("MEASINFO", {}).get("Ref", ""))
        if not ref.upper().startswith("AZEL"):
            logger.info("POINTING DIRECTION frame is %r, not AZEL: using FIELD directions", ref)
            return None
        ant = t.getcol("ANTENNA_ID")
        pt = t.getcol("TIME")
        d = t.getcol("DIRECTION")  # (n, npoly+1, 2)
    pel = d[:, 0, 1]
    out = np.empty((times.size, n_ant))
    for a in range(n_ant):
        m = ant == a
        if not m.any():
            # an antenna without pointing: the array median is fine for an airmass
            m = np.ones_like(ant, dtype=bool)
        order = np.argsort(pt[m])
        out[:, a] = _interp_no_gaps(times, pt[m][order], pel[m][order])
    if not np.all(np.isfinite(out)) or np.any(out <= 0):
        logger.warning("POINTING elevations are invalid (<= 0 or NaN): using FIELD directions")
        return None
    return out


# ----------------------------------------------------------------------------- parameters
def _parse_seconds(value: str | float | int | None, name: str) -> float:
    if value is None or value == "":
        return 0.0
    if isinstance(value, (int, float, np.floating)):
        s = float(value)
    else:
        m = re.fullmatch(r"\s*([0-9.eE+-]+)\s*(s|sec|min|m|h)?\s*", str(value))
        if not m:
            raise ParameterError(
                f"{name}={value!r} is not a time; valid: e.g. '3s', '0.5min', 3.0 (seconds)"
            )
        s = (
            float(m.group(1))
            * {"s": 1, "sec": 1, None: 1, "min": 60, "m": 60, "h": 3600}[m.group(2)]
        )
    if not np.isfinite(s) or s < 0:
        raise ParameterError(f"{name}={value!r} is invalid; valid: >= 0 seconds")
    return s


def _antenna_ids(info: _Meta, values: Iterable, name: str) -> list[int]:
    out = []
    names = info.antenna_names
    for v in values:
        if isinstance(v, (int, np.integer)) or (
            isinstance(v, str) and v.isdigit() and v not in names
        ):
            i = int(v)
            if not 0 <= i < len(names):
                raise SelectionError(
                    f"{name}: antenna {v!r} does not exist; valid: 0..{len(names) - 1} or {list(names)}"
                )
            out.append(i)
        elif v in names:
            out.append(names.index(v))
        else:
            raise SelectionError(f"{name}: unknown antenna {v!r}; valid names: {list(names)}")
    return out


def _spw_list(info: _Meta, spw, name: str) -> list[int]:
    if spw is None or spw == "" or (isinstance(spw, (list, tuple)) and not spw):
        return []
    if isinstance(spw, str):
        spw = [int(x) for x in spw.replace(" ", "").split(",") if x != ""]
    if isinstance(spw, (int, np.integer)):
        spw = [spw]
    out = []
    for s in spw:
        if not 0 <= int(s) < len(info.spws):
            raise SelectionError(
                f"{name}={spw!r}: spw {s} does not exist; valid: 0..{len(info.spws) - 1}"
            )
        out.append(int(s))
    return out


# ----------------------------------------------------------------------------- core
def _segments(data: WVRData, use: np.ndarray, info: _Meta, segsource: bool) -> np.ndarray:
    """Segment index per time (-1 for unused times): runs of one source in time order."""
    seg = np.full(data.time.size, -1, dtype=np.int64)
    idx = np.flatnonzero(use)
    if idx.size == 0:
        return seg
    if not segsource:
        seg[idx] = 0
        return seg
    src = np.array(
        [
            info.fields[f].source_id if info.fields[f].source_id >= 0 else f
            for f in data.field_id[idx]
        ]
    )
    change = np.concatenate([[0], np.cumsum(src[1:] != src[:-1])])
    seg[idx] = change
    return seg


def _boxcar(x: np.ndarray, n: int) -> np.ndarray:
    """Centred running mean of odd length n along axis 0, NaN-aware, shrinking at the edges."""
    if n <= 1 or x.shape[0] < 2:
        return x
    valid = np.isfinite(x)
    xv = np.where(valid, x, 0.0)
    pad = ((1, 0),) + ((0, 0),) * (x.ndim - 1)
    cs = np.pad(np.cumsum(xv, axis=0), pad)
    cn = np.pad(np.cumsum(valid, axis=0), pad)
    h = n // 2
    i = np.arange(x.shape[0])
    lo = np.clip(i - h, 0, x.shape[0])
    hi = np.clip(i + h + 1, 0, x.shape[0])
    s = cs[hi] - cs[lo]
    c = cn[hi] - cn[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = s / c
    out[~valid] = np.nan
    return out


def _weights(g: np.ndarray, e: np.ndarray, sigma: np.ndarray, rms_l: float) -> np.ndarray:
    """Normalised channel weights w_k (sum 1) for the path combination; 0 for unusable channels."""
    ok = np.isfinite(g) & (g > 0) & np.isfinite(sigma)
    var = np.full(4, np.inf)
    var[ok] = (sigma[ok] ** 2 + (rms_l * e[ok]) ** 2) / g[ok] ** 2
    w = np.where(ok, 1.0 / np.maximum(var, 1e-30), 0.0)
    tot = w.sum()
    return w / tot if tot > 0 else w


@dataclass
class _Ctx:
    info: _Meta
    data: WVRData
    use: np.ndarray
    seg: np.ndarray
    good_ant: np.ndarray
    sigma: np.ndarray  # (4,) array thermal noise (K)
    smooth_n: int


def _retrieval_groups(ctx: _Ctx, segsource: bool, tie: Sequence) -> list[list[int]]:
    n_seg = int(ctx.seg.max()) + 1 if (ctx.seg >= 0).any() else 0
    if n_seg == 0:
        return []
    if not segsource:
        return [list(range(n_seg))]
    seg_field = {}
    for s in range(n_seg):
        f = int(ctx.data.field_id[np.flatnonzero(ctx.seg == s)[0]])
        seg_field[s] = ctx.info.fields[f].name
    groups: list[list[int]] = []
    taken = set()
    for grp in tie:
        names = [g.strip() for g in (grp.split(",") if isinstance(grp, str) else grp)]
        unknown = [n for n in names if n not in ctx.info.field_names and not n.isdigit()]
        if unknown:
            raise SelectionError(
                f"tie={list(tie)!r}: unknown source(s) {unknown}; valid: {list(ctx.info.field_names)}"
            )
        names = [ctx.info.field_names[int(n)] if n.isdigit() else n for n in names]
        members = [s for s in range(n_seg) if seg_field[s] in names and s not in taken]
        if members:
            groups.append(members)
            taken.update(members)
    groups += [[s] for s in range(n_seg) if s not in taken]
    return sorted(groups, key=lambda g: g[0])


def _retrieve(
    ctx: _Ctx, segs: list[int], start: np.ndarray | None = None
) -> tuple[dict[int, tuple], Retrieval]:
    """Fit one retrieval group; return per-segment (g, e) and the Retrieval record.

    `start`: the previous retrieval's (PWV, T, P), a good first guess for the next one (the
    fit is the same from any start; it only saves iterations).
    """
    d = ctx.data
    tbs, els = [], []
    for s in segs:
        m = ctx.seg == s
        with _quiet_nan():
            ant_mean = np.nanmean(d.tb[m][:, ctx.good_ant], axis=0)  # (n_good, 4)
            tbs.append(np.nanmedian(ant_mean, axis=0))
            els.append(float(np.nanmean(d.elevation[m][:, ctx.good_ant])))
    tb = np.array(tbs)
    el = np.array(els)
    fit = atmosphere.fit_layer(tb, el, sigma_k=np.maximum(ctx.sigma, 0.05), start=start)
    g, e = atmosphere.dtdl(fit, el)  # (n_seg, 4)
    per_seg = {s: (g[i], e[i]) for i, s in enumerate(segs)}
    sel = np.isin(ctx.seg, segs)
    fields = sorted({ctx.info.fields[int(f)].name for f in d.field_id[sel]})
    gm, em = atmosphere.dtdl(fit, float(el.mean()))
    rec = Retrieval(
        sources=tuple(fields),
        segments=tuple(segs),
        time_range=(float(d.time[sel].min()), float(d.time[sel].max())),
        elevation_rad=float(el.mean()),
        pwv_mm=fit.pwv_mm,
        pwv_err_mm=fit.pwv_err_mm,
        t_k=fit.t_k,
        p_kpa=fit.p_kpa,
        chi2=fit.chi2,
        tb_mean_k=tb.mean(axis=0),
        dtdl=gm,
        dtdl_err=em,
        coeffs=np.zeros(4),
    )
    if not fit.converged:
        logger.warning("WVR retrieval for %s did not converge (chi2 %.3g)", fields, fit.chi2)
    return per_seg, rec


def _noise_orthogonal(ctx: _Ctx, coeff: dict[int, tuple]) -> np.ndarray:
    """Thermal noise per channel (K) from sample-to-sample differences with the common path
    signal projected out.

    A path change moves all channels along ``g = dT/dL``; the part of the differences
    orthogonal to g is radiometer noise. Robust rms (1.4826 MAD) of that part per channel,
    divided by sqrt(2) (differences) and scaled by sqrt(4/3) (one of 4 dimensions removed).
    Falls back to the plain difference estimate where there are too few samples.
    """
    d = ctx.data
    parts = []
    for s, (g, _e) in coeff.items():
        idx = np.flatnonzero(ctx.seg == s)
        if idx.size < 3 or not np.all(np.isfinite(g)):
            continue
        diff = np.diff(d.tb[idx][:, ctx.good_ant], axis=0).reshape(-1, 4)
        diff = diff[np.all(np.isfinite(diff), axis=1)]
        u = g / np.linalg.norm(g)
        parts.append(diff - np.outer(diff @ u, u))
    if not parts:
        return ctx.sigma
    r = np.concatenate(parts)
    if r.shape[0] < 20:
        return ctx.sigma
    mad = np.median(np.abs(r - np.median(r, axis=0)), axis=0)
    sig = 1.4826 * mad / np.sqrt(2.0) * np.sqrt(4.0 / 3.0)
    return np.where(np.isfinite(sig) & (sig > 0), sig, ctx.sigma)


def _segment_paths(ctx: _Ctx, s: int, g: np.ndarray, e: np.ndarray) -> tuple:
    """Path (mm) and per-channel disagreement for one segment: (idx, L (n,n_ant), disc2, c)."""
    d = ctx.data
    idx = np.flatnonzero(ctx.seg == s)
    tb = d.tb[idx]  # (n, n_ant, 4)
    # Relative to the array mean at each time (a path common to all antennas cancels on every
    # baseline), NOT to each antenna's mean over the segment: a per-segment zero point would
    # differ between a calibrator scan and the target scan after it and break phase transfer.
    ref_ant = ctx.good_ant if ctx.good_ant.any() else np.ones(tb.shape[1], bool)
    with _quiet_nan():
        dt = tb - np.nanmean(tb[:, ref_ant], axis=1, keepdims=True)
    dt = _boxcar(dt, ctx.smooth_n)
    lk = dt / np.where(g > 0, g, np.nan)  # per-channel path estimates (mm)
    w0 = _weights(g, np.zeros(4), ctx.sigma, 0.0)
    with _quiet_nan():
        l0 = np.nansum(lk * w0, axis=-1)
        rms0 = float(np.sqrt(np.nanmean(l0[:, ctx.good_ant] ** 2))) if ctx.good_ant.any() else 0.0
    w = _weights(g, e, ctx.sigma, rms0 if np.isfinite(rms0) else 0.0)
    c = np.where(w > 0, w / np.where(g > 0, g, 1.0), 0.0)  # mm per K
    path = np.einsum("tak,k->ta", np.nan_to_num(dt), c)
    path[~np.all(np.isfinite(dt[..., w > 0]), axis=-1)] = np.nan
    with _quiet_nan():
        disc2 = np.nansum(w * (lk - path[..., None]) ** 2, axis=-1)
    return idx, path, disc2, c


def _interpolate_flagged(
    info: _Meta,
    path: np.ndarray,
    good: np.ndarray,
    targets: list[int],
    maxdistm: float,
    minnumants: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Replace the path of `targets` by the mean of up to 3 nearest good antennas."""
    pos = np.stack([a.position for a in info.antennas])
    interp = np.zeros(path.shape[1], dtype=bool)
    for a in targets:
        dist = np.linalg.norm(pos - pos[a], axis=1)
        cand = [int(b) for b in np.argsort(dist) if b != a and good[b] and dist[b] <= maxdistm][:3]
        if len(cand) < minnumants:
            logger.warning(
                "antenna %s: only %d good WVR antenna(s) within maxdistm=%g m (minnumants=%d): "
                "flagged",
                info.antennas[a].name,
                len(cand),
                maxdistm,
                minnumants,
            )
            path[:, a] = np.nan
            continue
        with _quiet_nan():
            path[:, a] = np.nanmean(path[:, cand], axis=1)
        interp[a] = True
        logger.info(
            "antenna %s: WVR path interpolated from %s",
            info.antennas[a].name,
            [info.antennas[b].name for b in cand],
        )
    return path, interp


def solve_wvr(
    vis: str | os.PathLike | MSInfo,
    caltable: str | os.PathLike | None = None,
    *,
    wvrspw: Sequence[int] | int | None = None,
    spw: Sequence[int] | int | str | None = None,
    toffset: float = 0.0,
    segsource: bool = True,
    tie: Sequence[str | Sequence[str]] = (),
    smooth: str | float = "",
    wvrflag: Sequence[str | int] = (),
    maxdistm: float = 500.0,
    minnumants: int = 2,
    mingoodfrac: float = 0.8,
    statsource: str = "",
    scale: float = 1.0,
    reversespw: Sequence[int] | int | str = "",
    overwrite: bool = False,
) -> WVRResult:
    """Compute the WVR phase correction of an ALMA MS (CASA ``wvrgcal``).

    Parameters
    ----------
    vis : str or MSInfo
        Measurement Set with WVR data (an open :class:`MSInfo` saves re-reading its index).
    caltable : str, optional
        Output table path; not written when None.
    wvrspw : int or sequence of int, optional
        WVR spws; default every 4-channel spw with rows.
    spw : int, sequence of int or str, optional
        Spws to write solutions for; default all spws (wvrgcal 6.7 writes every spw of the
        MS, the WVR spw included).
    toffset : float
        Seconds added to the WVR times in the table (wvrgcal ``toffset``).
    segsource : bool
        New retrieval for each run of one source (else one retrieval for all).
    tie : sequence of str or of sequences of str
        Groups of sources ("a,b" or ["a", "b"]) sharing one retrieval.
    smooth : str or float
        Boxcar smoothing time of the WVR data ("3s"); '' = none.
    wvrflag : sequence of antenna names or ids
        WVRs to ignore; their path is the mean of up to 3 nearest good antennas.
    maxdistm : float
        Maximum distance (m) of the antennas used for that interpolation.
    minnumants : int
        Minimum number (1..3) of antennas for an interpolation, else flagged.
    mingoodfrac : float
        Antennas with a smaller fraction of valid on-source samples count as having no WVR.
    statsource : str
        Source name whose times are used for the statistics; '' = all.
    scale : float
        Factor on the path.
    reversespw : int, sequence of int or str
        Spws whose phase sign is reversed.
    overwrite : bool
        Replace an existing `caltable`.

    Returns
    -------
    WVRResult

    Raises
    ------
    UnsupportedError
        No WVR spw or data.
    ParameterError, SelectionError
        Invalid parameters (named with the value and the valid range).
    FastcalError
        Fewer than 1 antenna with usable WVR data.
    """
    info = _read_meta(vis)
    if not np.isfinite(maxdistm) or maxdistm < 0:
        raise ParameterError(f"maxdistm={maxdistm!r} is invalid; valid: >= 0 m")
    if int(minnumants) != minnumants or not 1 <= minnumants <= 3:
        raise ParameterError(f"minnumants={minnumants!r} is invalid; valid: 1, 2 or 3")
    if not 0 <= mingoodfrac <= 1:
        raise ParameterError(f"mingoodfrac={mingoodfrac!r} is invalid; valid: 0..1")
    if not np.isfinite(scale):
        raise ParameterError(f"scale={scale!r} is invalid; valid: a finite number")
    if not np.isfinite(toffset):
        raise ParameterError(f"toffset={toffset!r} is invalid; valid: finite seconds")
    smooth_s = _parse_seconds(smooth, "smooth")
    if isinstance(wvrflag, (str, int)):
        wvrflag = (
            [x for x in str(wvrflag).split(",") if x] if isinstance(wvrflag, str) else [wvrflag]
        )
    flag_ids = _antenna_ids(info, wvrflag, "wvrflag")
    if isinstance(tie, str):
        tie = [tie] if tie else []
    if statsource and statsource not in info.field_names:
        raise SelectionError(
            f"statsource={statsource!r} is not a field of {info.path}; valid: {list(info.field_names)}"
        )
    data = read_wvr_data(info, wvrspw)
    out_spws = _spw_list(info, spw, "spw") or [s.id for s in info.spws]
    rev = set(_spw_list(info, reversespw, "reversespw"))

    use = data.on_source.copy()
    if not use.any():
        raise UnsupportedError(
            f"{info.path}: no WVR samples in on-source states (intents with "
            f"{'/'.join(ON_SOURCE_TOKENS)})"
        )
    n_ant = data.n_ant
    valid = np.all(np.isfinite(data.tb[use]), axis=-1)  # (n_use, n_ant)
    good_frac = valid.mean(axis=0)
    usable = good_frac >= mingoodfrac
    for a in np.flatnonzero(~usable):
        logger.warning(
            "antenna %s: %.0f%% valid WVR samples (< mingoodfrac %.0f%%): its WVR is not used; "
            "path interpolated from neighbours if possible, else flagged",
            info.antennas[a].name,
            100 * good_frac[a],
            100 * mingoodfrac,
        )
    good_ant = usable.copy()
    good_ant[flag_ids] = False
    if not good_ant.any():
        raise FastcalError(
            f"{info.path}: no antenna has usable WVR data (good fraction per antenna: "
            f"{np.round(good_frac, 2).tolist()}, wvrflag={list(wvrflag)})"
        )
    with _quiet_nan():
        sigma = np.nanmedian(data.sigma_k[good_ant], axis=0)
    sigma = np.where(np.isfinite(sigma) & (sigma > 0), sigma, DEFAULT_NOISE_K)
    dt_wvr = float(np.median(np.diff(data.time))) if data.time.size > 1 else 1.152
    smooth_n = max(1, int(round(smooth_s / dt_wvr))) if smooth_s > 0 else 1
    if smooth_n > 1 and smooth_n % 2 == 0:
        smooth_n += 1
    seg = _segments(data, use, info, segsource)
    ctx = _Ctx(info, data, use, seg, good_ant, sigma, smooth_n)

    path = np.full((data.time.size, n_ant), np.nan)
    disc2 = np.full((data.time.size, n_ant), np.nan)
    fits = []
    start = None
    for grp in _retrieval_groups(ctx, segsource, tie):
        per_seg, rec = _retrieve(ctx, grp, start)
        fits.append((grp, per_seg, rec))
        start = np.array([rec.pwv_mm, rec.t_k, rec.p_kpa])
    ctx.sigma = _noise_orthogonal(ctx, {s: v for _, per_seg, _ in fits for s, v in per_seg.items()})
    retrievals = []
    for grp, per_seg, rec in fits:
        coeffs = []
        for s in grp:
            idx, p, dd, c = _segment_paths(ctx, s, *per_seg[s])
            path[idx], disc2[idx] = p, dd
            coeffs.append(c)
        retrievals.append(Retrieval(**{**rec.__dict__, "coeffs": np.mean(coeffs, axis=0)}))
    path[:, ~good_ant] = np.nan
    targets = [int(a) for a in np.flatnonzero(~good_ant)]
    path, interpolated = _interpolate_flagged(info, path, good_ant, targets, maxdistm, minnumants)
    path *= scale
    path_m = path * 1e-3  # mm -> m

    t_idx = np.flatnonzero(use)
    stats = _statistics(
        info,
        data,
        ctx,
        path_m,
        disc2,
        data.present,
        ~good_ant,
        interpolated,
        good_frac,
        retrievals,
        statsource,
        t_idx,
    )
    table = _build_table(info, data, t_idx, path_m, out_spws, rev, toffset)
    written = None
    if caltable is not None:
        written = table.write(os.fspath(caltable), overwrite=overwrite)
        logger.info("wrote WVR table %s (%d rows)", written, table.nrow)
    logger.info("WVR statistics:\n%s", stats.report())
    return WVRResult(
        table=table,
        stats=stats,
        time=data.time[t_idx] + toffset,
        path_m=path_m[t_idx],
        field_id=data.field_id[t_idx],
        segment=seg[t_idx],
        spw_ids=tuple(out_spws),
        caltable=written,
    )


def _statistics(
    info,
    data,
    ctx,
    path_m,
    disc2,
    has_wvr,
    flagged,
    interpolated,
    good_frac,
    retrievals,
    statsource,
    t_idx,
) -> WVRStats:
    sel = t_idx
    if statsource:
        fids = set(info.field_ids(statsource))
        sel = np.array([i for i in t_idx if int(data.field_id[i]) in fids], dtype=np.int64)
        if sel.size == 0:
            logger.warning(
                "statsource=%r has no WVR samples: statistics over all times", statsource
            )
            sel = t_idx
    with _quiet_nan():
        rms = np.sqrt(np.nanmean(path_m[sel] ** 2, axis=0)) * 1e6
        disc = np.sqrt(np.nanmean(disc2[sel], axis=0)) * 1e3
    disc[flagged] = np.nan
    thermal = np.full(data.n_ant, np.nan)
    if retrievals:
        c = np.mean([r.coeffs for r in retrievals], axis=0)
        thermal[~flagged] = (
            float(np.sqrt(np.sum((c * ctx.sigma) ** 2))) * 1e3 / math.sqrt(ctx.smooth_n)
        )
    table_flagged = ~np.isfinite(path_m[t_idx]).any(axis=0)
    for a in np.flatnonzero(~flagged & (disc > 1000)):
        logger.warning(
            "antenna %s: WVR Disc %.0f um > 1000 um (cloud or bad WVR?)",
            info.antennas[a].name,
            disc[a],
        )
    return WVRStats(
        antenna_names=info.antenna_names,
        has_wvr=has_wvr,
        flagged=flagged,
        interpolated=interpolated,
        table_flagged=table_flagged,
        good_frac=good_frac,
        rms_um=rms,
        disc_um=disc,
        thermal_um=thermal,
        pwv_mm=float(np.median([r.pwv_mm for r in retrievals])) if retrievals else float("nan"),
        retrievals=retrievals,
        stat_times=(float(data.time[sel].min()), float(data.time[sel].max())),
    )


def _build_table(info, data, t_idx, path_m, out_spws, rev, toffset) -> CalTable:
    n_t = t_idx.size
    p = path_m[t_idx]
    flag = ~np.isfinite(p)
    params, flags, snr, freqs, widths = {}, {}, {}, {}, {}
    for s in out_spws:
        sp = info.spws[s]
        nu_c = float(sp.chan_freq[sp.num_chan // 2])
        sign = 1.0 if s in rev else -1.0
        phase = sign * 2.0 * np.pi * nu_c * np.nan_to_num(p) / atmosphere.C_LIGHT
        g = np.exp(1j * phase).astype(np.complex64)
        g[flag] = 1.0
        params[s] = g[:, :, None, None]
        flags[s] = flag[:, :, None, None]
        snr[s] = np.full((n_t, p.shape[1], 1, 1), 3.0, dtype=np.float32)
        freqs[s] = np.array([nu_c])
        widths[s] = np.array([abs(float(np.sum(sp.chan_width)))])
    return CalTable.from_solutions(
        "T Jones",
        params,
        times=data.time[t_idx] + toffset,
        ms=info.path,
        refant=-1,
        flag=flags,
        snr=snr,
        paramerr={s: np.zeros_like(v, dtype=np.float32) for s, v in snr.items()},
        chan_freq=freqs,
        chan_width=widths,
        interval=data.interval[t_idx],
        field_id=data.field_id[t_idx],
        scan=-1,
        obs_id=data.observation_id[t_idx],
    )


# ----------------------------------------------------------------------------- improvement
#: Pipeline (wvrg_qa) limits on the 80th-percentile phase rms (deg).
PHASE_NOISY_DEG = 90.0
PHASE_GOOD_DEG = 57.1
_QA_INTENTS = {"BANDPASS": "CALIBRATE_BANDPASS*", "PHASE": "CALIBRATE_PHASE*"}


def _stefcal_phases(vis: np.ndarray, mask: np.ndarray, n_iter: int = 60) -> np.ndarray:
    """Antenna gains per time from (n_t, A, A) Hermitian visibility matrices (model 1).

    Vectorised StEFCal over times; returns complex (n_t, A), NaN for antennas without data.
    """
    n_t, n_ant, _ = vis.shape
    v = np.where(mask, vis, 0.0)
    m = mask.astype(np.float64)
    g = np.ones((n_t, n_ant), dtype=np.complex128)
    for it in range(n_iter):
        num = np.einsum("tpq,tq->tp", v, g)
        den = np.einsum("tpq,tq->tp", m, np.abs(g) ** 2)
        g_new = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
        g = 0.5 * (g + g_new) if it % 2 else g_new
    g[m.sum(axis=2) == 0] = np.nan
    return g


def _chunk_phase_rms(g: np.ndarray, refants: list[int]) -> np.ndarray:
    """Phase rms (deg) per antenna about the complex median of one time chunk.

    Median over up to 8 reference antennas (removes the refant's own fluctuations, as the
    pipeline does). g: (n_t, A) complex.
    """
    n_ant = g.shape[1]
    per_ref = []
    for r in refants:
        rel = g * np.conj(g[:, r : r + 1])
        ok = np.isfinite(rel)
        if not ok[:, r].any():
            continue
        with _quiet_nan():
            med = np.nanmedian(rel.real, axis=0) + 1j * np.nanmedian(rel.imag, axis=0)
            ph = np.degrees(np.angle(rel * np.conj(med)))
            rms = np.sqrt(np.nanmean(ph**2, axis=0))
        rms[r] = np.nan
        per_ref.append(rms)
    if not per_ref:
        return np.full(n_ant, np.nan)
    with _quiet_nan():
        return np.nanmedian(np.array(per_ref), axis=0)


def _table_phasors(table: CalTable, spw: int, times: np.ndarray, n_ant: int) -> np.ndarray:
    """(n_t, n_ant) complex T-Jones factors at the nearest table time (1 where flagged)."""
    sol = table.solutions(spw)
    tt = sol.time
    j = (
        np.clip(np.searchsorted(tt, times), 1, max(tt.size - 1, 1))
        if tt.size > 1
        else np.zeros(times.size, int)
    )
    if tt.size > 1:
        j = np.where(np.abs(tt[j - 1] - times) <= np.abs(tt[j] - times), j - 1, j)
    par = sol.params[j, :, 0, 0]
    flg = sol.flag[j, :, 0, 0]
    par = np.where(flg, 1.0, par)
    out = np.ones((times.size, n_ant), dtype=np.complex128)
    out[:, : par.shape[1]] = par
    return out


def _phase_rms_views(
    info: MSInfo, spw: int, scans: Sequence[int], table: CalTable | None, n_ref: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """Per-antenna phase rms (deg) without and with the WVR table, shape (n_ant, n_chunk)."""
    idx = info.index
    ddids = info.ddids_for_spw(spw)
    sel = (
        np.isin(idx.ddid, ddids)
        & np.isin(idx.scan, scans)
        & (idx.antenna1 != idx.antenna2)
        & ~idx.flag_row
    )
    rows = np.flatnonzero(sel)
    if rows.size == 0:
        raise SelectionError(
            f"{info.path}: no cross-correlations of spw {spw} in scans {list(scans)}"
        )
    pol = info.pol_for_ddid(ddids[0])
    from fastcal.ms.info import require_parallel_hands

    hands = list(require_parallel_hands(pol))
    cols = _read_rows(info.path, rows, ("DATA", "FLAG"))
    data = cols["DATA"][:, :, hands].astype(np.complex128)
    good = ~cols["FLAG"][:, :, hands] & np.isfinite(data)
    data = np.where(good, data, 0.0)
    a1, a2 = idx.antenna1[rows], idx.antenna2[rows]
    t, sc = idx.time[rows], idx.scan[rows]
    n_ant = len(info.antennas)
    # remove each baseline's mean spectrum per scan (bandpass, delay) before averaging channels
    key = (sc.astype(np.int64) * n_ant + a1) * n_ant + a2
    ukey, kinv = np.unique(key, return_inverse=True)
    ref = np.zeros((ukey.size,) + data.shape[1:], dtype=np.complex128)
    np.add.at(ref, kinv, data)
    ref /= np.maximum(np.abs(ref), 1e-30)
    vis = (data * np.conj(ref[kinv])).sum(axis=(1, 2)) / np.maximum(good.sum(axis=(1, 2)), 1)
    valid = good.any(axis=(1, 2))
    utime, tinv = np.unique(t, return_inverse=True)
    tscan = np.zeros(utime.size, dtype=np.int64)
    tscan[tinv] = sc

    def solve(v_rows: np.ndarray) -> np.ndarray:
        mat = np.zeros((utime.size, n_ant, n_ant), dtype=np.complex128)
        msk = np.zeros(mat.shape, dtype=bool)
        mat[tinv, a1, a2] = v_rows
        mat[tinv, a2, a1] = np.conj(v_rows)
        msk[tinv, a1, a2] = valid
        msk[tinv, a2, a1] = valid
        return _stefcal_phases(mat, msk)

    g0 = solve(vis)
    if table is not None:
        tj = _table_phasors(table, spw, t, n_ant)
        tp = tj[np.arange(t.size), a1]
        tq = tj[np.arange(t.size), a2]
        g1 = solve(vis * np.conj(tp) * tq / np.maximum(np.abs(tp * tq) ** 2, 1e-30))
    else:
        g1 = g0
    counts = np.isfinite(g0).sum(axis=0)
    refants = [int(a) for a in np.argsort(-counts, kind="stable")[:n_ref] if counts[a] > 0]
    chunks = np.unique(tscan)
    without = np.stack([_chunk_phase_rms(g0[tscan == c], refants) for c in chunks], axis=1)
    with_ = np.stack([_chunk_phase_rms(g1[tscan == c], refants) for c in chunks], axis=1)
    return without, with_


def _phase_rms_views_solve(
    info: MSInfo, spw: int, pattern: str, table: CalTable, n_ref: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """As :func:`_phase_rms_views` but with ``fastcal.solve.solve_gains`` (gaincal solint='int',
    calmode='p'; the WVR table pre-applied with interp='nearest')."""
    from fastcal.solve import solve_gains

    gains = []
    for gt in ((), (table,)):
        tab = solve_gains(
            info,
            intent=pattern,
            spw=str(spw),
            solint="int",
            calmode="p",
            gaintype="G",
            minsnr=0.0,
            gaintable=list(gt),
            interp=["nearest"] * len(gt),
        )
        sol = tab.solutions(spw)
        par = np.where(sol.flag, np.nan, sol.params)[:, :, 0, :]
        with _quiet_nan():
            g = np.nanmean(par / np.abs(par), axis=-1)  # (n_t, n_ant) mean phasor over pols
        gains.append((g, sol.scan))
    counts = np.isfinite(gains[0][0]).sum(axis=0)
    refants = [int(a) for a in np.argsort(-counts, kind="stable")[:n_ref] if counts[a] > 0]
    out = []
    for g, scans in gains:
        out.append(
            np.stack([_chunk_phase_rms(g[scans == c], refants) for c in np.unique(scans)], axis=1)
        )
    return out[0], out[1]


def wvr_improvement(
    vis: str | os.PathLike | MSInfo,
    table: CalTable | str | os.PathLike,
    *,
    spw: int | None = None,
    intents: Sequence[str] = ("PHASE", "BANDPASS"),
    method: str = "auto",
) -> Improvement:
    """Phase-rms improvement of a WVR table on the calibrators (pipeline wvrgcalflag view).

    Per-integration (solint='int') antenna phases of one spw are solved once without and
    once with the WVR table applied (nearest WVR time): ``method="gaincal"`` uses
    :func:`fastcal.solve.solve_gains` (calmode 'p', the pipeline's way); ``method="direct"``
    solves them here on the channel-averaged data (each baseline's mean spectrum per scan
    divided out first, so bandpass and delay do not decorrelate the average) with a
    vectorised StEFCal and a point model; ``"auto"`` uses gaincal when fastcal.solve is
    importable. Per antenna and scan the
    phase rms about the scan's complex median is taken with up to 8 reference antennas and
    the median over them kept (the pipeline's refant-independent rms). The view is
    ``rms_with / rms_without`` per (antenna, scan); the score of an intent is
    ``1 / median(view)`` and the overall score the median over intents (PHASE only counts
    when its with-WVR 80th-percentile rms is below 90 deg, as in the pipeline).

    Parameters
    ----------
    vis : str or MSInfo
    table : CalTable or str
        WVR (T Jones) table.
    spw : int, optional
        Spw to use; default the first science spw with data in the calibrator scans.
    intents : sequence of str
        ``"PHASE"`` and/or ``"BANDPASS"``.
    method : str
        ``"auto"``, ``"gaincal"`` or ``"direct"``.

    Returns
    -------
    Improvement
        ``rms_*`` and ``ratio`` per antenna are medians over the scans of the first intent
        with data (PHASE by default).

    Raises
    ------
    SelectionError
        No calibrator scans or no data.
    """
    info = open_ms(vis)
    tab = as_caltable(table)
    if spw is None:
        sci = info.spws_with_role("science")
        if not sci:
            raise SelectionError(f"{info.path}: no science spw for the phase-rms assessment")
        spw = sci[0]
    if spw not in set(int(s) for s in tab.spw_ids):
        raise SelectionError(
            f"WVR table has no solutions for spw {spw}; it has {sorted(int(s) for s in tab.spw_ids)}"
        )
    if method not in ("auto", "gaincal", "direct"):
        raise ParameterError(f"method={method!r} is invalid; valid: 'auto', 'gaincal', 'direct'")
    if method == "auto":
        try:
            import fastcal.solve  # noqa: F401

            method = "gaincal"
        except ImportError:
            method = "direct"
    per_intent = {}
    for name in intents:
        if name not in _QA_INTENTS:
            raise ParameterError(
                f"intents={list(intents)!r}: {name!r} is not one of {list(_QA_INTENTS)}"
            )
        scans = info.scans_with_intent(_QA_INTENTS[name])
        if not scans:
            continue
        if method == "gaincal":
            per_intent[name] = (scans, *_phase_rms_views_solve(info, spw, _QA_INTENTS[name], tab))
        else:
            per_intent[name] = (scans, *_phase_rms_views(info, spw, scans, tab))
    if not per_intent:
        raise SelectionError(
            f"{info.path}: no scans with intents {[_QA_INTENTS[i] for i in intents]}"
        )
    scores, noisy = {}, False
    for name, (_scans, wo, wi) in per_intent.items():
        with np.errstate(all="ignore"):
            ratio = wi / wo
        ok = np.isfinite(ratio) & (wo > 0)
        scores[name] = 1.0 / float(np.median(ratio[ok])) if ok.any() else float("nan")
        if name == "PHASE" and ok.any() and np.percentile(wi[ok], 80) > PHASE_NOISY_DEG:
            noisy = True
    if noisy and "BANDPASS" in scores:
        score = scores["BANDPASS"]
    else:
        score = float(np.median([v for v in scores.values() if np.isfinite(v)] or [np.nan]))
    name0 = next(iter(per_intent))
    scans0, wo, wi = per_intent[name0]
    with _quiet_nan():
        rw, rwi = np.nanmedian(wo, axis=1), np.nanmedian(wi, axis=1)
    with np.errstate(all="ignore"):
        ratio = rwi / rw
    logger.info("WVR phase-rms improvement: %s -> score %.3f", scores, score)
    return Improvement(
        antenna_names=info.antenna_names,
        rms_without_deg=rw,
        rms_with_deg=rwi,
        ratio=ratio,
        score=score,
        refant=-1,
        method=(
            "fastcal.solve.solve_gains solint='int' calmode='p'"
            if method == "gaincal"
            else "per-integration StEFCal on channel-averaged calibrator data (direct)"
        ),
        scans=tuple(scans0),
        spw=int(spw),
    )


def _linear_score(x: float, x1: float, x2: float, y1: float, y2: float) -> float:
    """Clip x to [x1, x2] and map it linearly onto [y1, y2]."""
    x = min(max(x, min(x1, x2)), max(x1, x2))
    return y1 + (x - x1) * (y2 - y1) / (x2 - x1)


def wvr_qa_score(
    improvement: float,
    stats: WVRStats,
    *,
    bp_noisy: bool = False,
    ph_noisy: bool = False,
    bp_good: bool = False,
    ph_good: bool = False,
) -> tuple[float, str]:
    """ALMA pipeline score of a WVR table (``score_wvrgcal``, reference section 6.5).

    * improvement > 1: 1.0; with flagged antennas, antennas with Disc or RMS > 500 um, or a
      noisy phase calibrator, at most 0.9 minus 0.1 per such antenna (each count), mapped
      linearly from [0, 0.9] onto [0.67, 0.9]; a noisy bandpass calibrator instead gives
      0.66 minus those reductions mapped from [0, 0.66] onto [0.34, 0.66].
    * improvement < 1 ("No WVR improvement"): 0.33 (mapped onto [0, 0.33]) when the median
      Disc or RMS exceeds 500 um, else 0.66 minus 0.1 per bad antenna, raised to the blue
      range [0.67, 0.9] when there is no Disc/RMS problem and the bandpass phases are
      good (80th-percentile rms < 57.1 deg without WVR), else mapped onto [0.34, 0.66].

    Returns
    -------
    (float, str)
        Score in [0, 1] and the message.
    """
    flagged = int(np.sum(stats.flagged))
    disc = np.nan_to_num(stats.disc_um, nan=0.0)
    rms = np.nan_to_num(stats.rms_um, nan=0.0)
    n_disc = int(np.sum(disc > QA_DISC_LIMIT_UM))
    n_rms = int(np.sum(rms > QA_RMS_LIMIT_UM))
    msgs = []
    if ph_noisy:
        msgs.append("Only Bandpass used for WVR improvement assessment")
    score = float(improvement)
    reduce = 0.1 * (flagged + n_disc + n_rms)
    if improvement > 1.0:
        score = 1.0
        if flagged or n_disc or n_rms or ph_noisy:
            score = 0.9 - reduce
            msgs += [
                m
                for m, n in (
                    ("Flagged antenna(s)", flagged),
                    ("Elevated disc value(s)", n_disc),
                    ("Elevated rms value(s)", n_rms),
                )
                if n
            ]
            if bp_noisy:
                msgs.append("Atmospheric phases appear unstable")
                score = _linear_score(0.66 - reduce, 0.0, 0.66, 0.34, 0.66)
            else:
                score = _linear_score(score, 0.0, 0.9, 0.67, 0.9)
    elif improvement < 1.0:
        msgs.append("No WVR improvement")
        med_disc = float(np.median(disc)) if disc.size else 0.0
        med_rms = float(np.median(rms)) if rms.size else 0.0
        if med_disc > QA_DISC_LIMIT_UM or med_rms > QA_RMS_LIMIT_UM:
            msgs.append("Elevated disc/rms value(s) - Check atmospheric phase stability")
            score = 0.33 - (0.1 * n_disc if flagged else 0.0)
            score = _linear_score(score, 0.0, 0.33, 0.0, 0.33)
        else:
            score = 0.66 - reduce
            if n_disc == 0 and n_rms == 0 and bp_good:
                msgs.append(
                    "Bandpass "
                    + ("and Phase " if ph_good else "")
                    + "calibrator atmospheric phase stability appears to be good"
                )
                score = _linear_score(0.9 - reduce, 0.0, 0.9, 0.67, 0.9)
            else:
                msgs.append("Check atmospheric phase stability")
                score = _linear_score(score, 0.0, 0.66, 0.34, 0.66)
    text = f"phase RMS improvement was {improvement:.2f}"
    if msgs:
        text += " - " + " - ".join(msgs)
    return float(score), text


# ----------------------------------------------------------------------------- CLI
def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``fastcal wvrgcal`` (names as CASA's wvrgcal)."""
    parser.add_argument("vis", help="Measurement Set with WVR data")
    parser.add_argument("caltable", help="output T Jones table")
    parser.add_argument("--toffset", type=float, default=0.0, help="seconds added to WVR times")
    parser.add_argument(
        "--no-segsource",
        dest="segsource",
        action="store_false",
        help="one retrieval for the whole observation",
    )
    parser.add_argument(
        "--tie",
        action="append",
        default=[],
        help="comma-separated sources sharing a retrieval (repeatable)",
    )
    parser.add_argument("--smooth", default="", help="boxcar smoothing time, e.g. 3s")
    parser.add_argument("--wvrflag", default="", help="comma-separated antennas to interpolate")
    parser.add_argument("--maxdistm", type=float, default=500.0)
    parser.add_argument("--minnumants", type=int, default=2)
    parser.add_argument("--mingoodfrac", type=float, default=0.8)
    parser.add_argument("--statsource", default="")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--spw", default="", help="comma-separated output spws (default all)")
    parser.add_argument("--wvrspw", default="", help="comma-separated WVR spws (default auto)")
    parser.add_argument("--reversespw", default="")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument(
        "--qa",
        action="store_true",
        help="also compute the calibrator phase-rms improvement and QA score",
    )


def run_from_args(args: argparse.Namespace) -> int:
    """Run ``fastcal wvrgcal``; print the statistics; return the exit status."""
    wvrspw = [int(x) for x in args.wvrspw.split(",") if x] or None
    res = solve_wvr(
        args.vis,
        args.caltable,
        wvrspw=wvrspw,
        spw=args.spw or None,
        toffset=args.toffset,
        segsource=args.segsource,
        tie=args.tie,
        smooth=args.smooth,
        wvrflag=[x for x in args.wvrflag.split(",") if x],
        maxdistm=args.maxdistm,
        minnumants=args.minnumants,
        mingoodfrac=args.mingoodfrac,
        statsource=args.statsource,
        scale=args.scale,
        reversespw=args.reversespw,
        overwrite=args.overwrite,
    )
    print(res.stats.report())  # noqa: T201 - CLI output
    print(f"wrote {res.caltable}")  # noqa: T201
    if args.qa:
        imp = res.improvement(args.vis)
        score, msg = wvr_qa_score(imp.score, res.stats)
        print(f"improvement {imp.score:.3f}; QA score {score:.2f}: {msg}")  # noqa: T201
    return 0
