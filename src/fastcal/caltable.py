"""CASA calibration tables ("NewCalTable" format): the one place for the on-disk format.

A :class:`CalTable` holds one calibration table in memory, row by row in CASA's row order
(spectral window, then time, then antenna). :meth:`CalTable.write` writes it as CASA 6
writes its own tables, and :func:`read_caltable` reads tables written by fastcal or CASA
(gaincal G/T/K, bandpass B, gencal tsys/antpos, wvrgcal).

Axis conventions
----------------
Per-row arrays have shape ``(nrow,)``. Parameter cells are held in python-casacore order
``(nrow, nchan, npar)`` (casacore itself stores ``[npar, nchan]`` per row). When the spectral
windows of one table have different numbers of solution channels, the channel axis is padded
to the largest; padded cells are flagged, hold the placeholder value and are never written.
:meth:`CalTable.solutions` gives the dense ``(n_time, n_ant, n_chan, n_par)`` view of one spw.

See ``docs/caltables.md`` for the format as written and the choices fastcal makes.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import casacore.tables as ct
import numpy as np

from fastcal.errors import CalTableError, ParameterError

__all__ = [
    "SUPPORTED_TYPES",
    "DEFAULT_CASA_VERSION",
    "CalTable",
    "SpwSolutions",
    "Subtable",
    "read_caltable",
    "as_caltable",
]

log = logging.getLogger(__name__)

#: Supported ``VisCal`` / ``subType`` names and their ``ParType``.
SUPPORTED_TYPES: dict[str, str] = {
    "G Jones": "Complex",
    "T Jones": "Complex",
    "B Jones": "Complex",
    "K Jones": "Float",
    "KMBD Jones": "Float",
    "KAntPos Jones": "Float",
    "B TSYS": "Float",
}

#: Subtables copied from the MS into every table, in the order CASA links them.
SUBTABLE_NAMES = ("OBSERVATION", "ANTENNA", "FIELD", "SPECTRAL_WINDOW", "HISTORY")

#: SNR written for an unflagged solution whose PARAMERR is 0 (CASA's convention).
SNR_NO_ERROR = 9999999.0

_TMP_TAG = ".fastcal-tmp-"
_OLD_TAG = ".fastcal-old-"
_EXTRA_KEYWORD = "FASTCAL_EXTRA"
_CELL_COLUMNS = ("params", "paramerr", "snr", "flag", "weight")
_ROW_COLUMNS = (
    ("time", "TIME", np.float64),
    ("field_id", "FIELD_ID", np.int32),
    ("spw_id", "SPECTRAL_WINDOW_ID", np.int32),
    ("antenna1", "ANTENNA1", np.int32),
    ("antenna2", "ANTENNA2", np.int32),
    ("interval", "INTERVAL", np.float64),
    ("scan", "SCAN_NUMBER", np.int32),
    ("obs_id", "OBSERVATION_ID", np.int32),
)


def _placeholder(par_type: str) -> complex | float:
    """Value stored in flagged or missing solutions: 1+0j (Complex) or 0.0 (Float)."""
    return 1.0 + 0.0j if par_type == "Complex" else 0.0


def _param_dtype(par_type: str) -> type:
    return np.complex64 if par_type == "Complex" else np.float32


def _param_column(par_type: str) -> str:
    return "CPARAM" if par_type == "Complex" else "FPARAM"


def _fastcal_version() -> str:
    from fastcal import __version__  # set before any submodule is imported

    return __version__


#: ``CASA_Version`` keyword written into tables fastcal creates. CASA's KJones reads it:
#: when it is absent (or a 5.3.0-100..106 pre-release) CASA applies delays about the spw's
#: REF_FREQUENCY (edge) instead of the centre channel, so it must be present.
DEFAULT_CASA_VERSION = f"fastcal-{_fastcal_version()}"


# --------------------------------------------------------------------------------------
# Subtables
# --------------------------------------------------------------------------------------


@dataclass(eq=False)
class Subtable:
    """In-memory copy of a small casacore table (an MS or caltable subtable).

    Attributes
    ----------
    name : str
        Subtable name, e.g. ``"ANTENNA"``.
    desc : dict
        Table descriptor as returned by python-casacore ``getdesc()`` (column keywords such
        as ``QuantumUnits``/``MEASINFO`` included).
    dminfo : dict
        Data-manager layout as returned by ``getdminfo()``.
    keywords : dict
        Table keywords, without table-valued ones (nested subtables are not copied).
    columns : dict
        Column name -> values. A ``numpy.ndarray`` (or list of str) with one entry per row
        for scalar and uniformly shaped array columns; a list of per-row cells (``None`` for
        an undefined cell) for ragged array columns.
    nrow : int
        Number of rows.
    """

    name: str
    desc: dict
    dminfo: dict
    keywords: dict
    columns: dict[str, Any]
    nrow: int

    @classmethod
    def from_table(cls, path: str, name: str | None = None, rows: bool = True) -> Subtable:
        """Copy table `path` into memory; with ``rows=False`` keep only its layout."""
        with ct.table(path, ack=False) as t:
            desc = t.getdesc()
            desc.pop("_keywords_", None)
            keywords = {}
            for key, value in t.getkeywords().items():
                if isinstance(value, str) and value.startswith("Table: "):
                    log.warning("%s: nested subtable keyword %r not copied", path, key)
                else:
                    keywords[key] = value
            nrow = t.nrows() if rows else 0
            columns = {c: _read_any_column(t, c) for c in t.colnames()} if nrow else {}
            return cls(
                name=name or os.path.basename(os.path.normpath(path)),
                desc=desc,
                dminfo=t.getdminfo(),
                keywords=keywords,
                columns=columns,
                nrow=nrow,
            )

    def copy(self) -> Subtable:
        """Deep copy (values included)."""
        return copy.deepcopy(self)

    def cells(self, column: str) -> list:
        """Column `column` as a list of per-row values (``None`` for undefined cells)."""
        values = self.columns.get(column)
        if values is None:
            return [None] * self.nrow
        return [values[i] for i in range(self.nrow)]

    def write(self, path: str) -> None:
        """Create table `path` with this layout and these rows."""
        with ct.table(path, self.desc, dminfo=self.dminfo, nrow=self.nrow, ack=False) as t:
            if self.keywords:
                t.putkeywords(self.keywords)
            for column, values in self.columns.items():
                if isinstance(values, np.ndarray):
                    t.putcol(column, values)
                elif t.isscalarcol(column):
                    t.putcol(column, list(values))
                else:
                    for row, cell in enumerate(values):
                        if cell is not None:
                            t.putcell(column, row, cell)


def _read_any_column(t: ct.table, column: str) -> Any:
    """Whole column if uniform, else a list of cells with ``None`` for undefined ones.

    String-array columns (``getcol`` gives a flattened dict for them) are read per cell.
    """
    try:
        values = t.getcol(column)
        if not isinstance(values, dict):
            return values
    except RuntimeError:
        pass
    return [
        t.getcell(column, row) if t.iscelldefined(column, row) else None
        for row in range(t.nrows())
    ]


def _ms_subtables(ms_path: str) -> dict[str, Subtable]:
    """Copies of the MS subtables a caltable carries (HISTORY: layout only, no rows)."""
    out = {}
    for name in SUBTABLE_NAMES:
        sub = os.path.join(ms_path, name)
        if ct.tableexists(sub):
            out[name] = Subtable.from_table(sub, name, rows=name != "HISTORY")
        elif name in ("OBSERVATION", "HISTORY"):
            desc = ct.required_ms_desc(name)
            out[name] = Subtable(name, desc, {}, {}, {}, 0)
        else:
            raise CalTableError(
                f"{ms_path}: Measurement Set has no {name} subtable; a calibration table "
                f"needs copies of ANTENNA, FIELD and SPECTRAL_WINDOW"
            )
    return out


def _rewrite_spw(
    spw: Subtable, solved: np.ndarray, chan_freq: Mapping, chan_width: Mapping
) -> Subtable:
    """SPECTRAL_WINDOW rewritten for a caltable: solution channel axis of each solved spw,
    FLAG_ROW=True for spws absent from the main table."""
    out = spw.copy()
    columns = out.columns
    if out.nrow and len(solved) and solved.max() >= out.nrow:
        raise CalTableError(
            f"spectral window {int(solved.max())} has solutions but SPECTRAL_WINDOW has "
            f"only {out.nrow} rows (spw 0..{out.nrow - 1})"
        )
    for name in ("CHAN_FREQ", "CHAN_WIDTH", "RESOLUTION", "EFFECTIVE_BW"):
        columns[name] = out.cells(name)
    for s, freq in chan_freq.items():
        width = np.abs(np.asarray(chan_width[s], np.float64))
        columns["NUM_CHAN"][s] = len(freq)
        columns["CHAN_FREQ"][s] = np.asarray(freq, np.float64)
        columns["CHAN_WIDTH"][s] = width
        columns["RESOLUTION"][s] = width.copy()
        columns["EFFECTIVE_BW"][s] = width.copy()
        columns["TOTAL_BANDWIDTH"][s] = float(width.sum())
    flag_row = np.asarray(columns.get("FLAG_ROW", np.zeros(out.nrow, bool)), bool).copy()
    absent = np.ones(out.nrow, bool)
    absent[solved] = False
    flag_row[absent] = True
    columns["FLAG_ROW"] = flag_row
    return out


# --------------------------------------------------------------------------------------
# The in-memory table
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SpwSolutions:
    """Dense view of one spectral window's solutions (see :meth:`CalTable.solutions`).

    Arrays may share memory with the :class:`CalTable`.

    Attributes
    ----------
    spw : int
    time, interval : float64[n_time]
        Solution times (MJD seconds, UTC) and intervals (s), ascending in time.
    field_id, scan, obs_id : int32[n_time]
        From the first row of each time.
    refant : int32[n_time, n_ant]
        ANTENNA2 of each row (-1 where none, or for antennas without a row).
    params : complex64 or float32[n_time, n_ant, n_chan, n_par]
    paramerr, snr : float32[n_time, n_ant, n_chan, n_par]
    flag : bool[n_time, n_ant, n_chan, n_par]
        True also for (time, antenna) pairs that have no row in the table.
    weight : float32[n_time, n_ant, n_chan, n_par] or None
    chan_freq, chan_width : float64[n_chan] or None
        Solution channel frequencies and widths (Hz), if known.
    """

    spw: int
    time: np.ndarray
    interval: np.ndarray
    field_id: np.ndarray
    scan: np.ndarray
    obs_id: np.ndarray
    refant: np.ndarray
    params: np.ndarray
    paramerr: np.ndarray
    snr: np.ndarray
    flag: np.ndarray
    weight: np.ndarray | None
    chan_freq: np.ndarray | None
    chan_width: np.ndarray | None


@dataclass(eq=False)
class CalTable:
    """One CASA calibration table in memory, rows in CASA order (spw, time, antenna).

    Attributes
    ----------
    vis_cal : str
        Table type (``VisCal`` keyword and ``subType``): one of :data:`SUPPORTED_TYPES`.
    time : float64[nrow]
        Solution time, MJD seconds (UTC).
    interval : float64[nrow]
        Solution interval (s); CASA solvers write 0.
    field_id, spw_id, antenna1 : int32[nrow]
        MS FIELD row, spectral window and antenna of each solution.
    antenna2 : int32[nrow]
        Reference antenna used for the solution, -1 if none.
    scan, obs_id : int32[nrow]
        Scan number (-1 when not scan-specific) and MS OBSERVATION_ID.
    params : complex64[nrow, nchan, npar] (Complex) or float32[nrow, nchan, npar] (Float)
        CPARAM / FPARAM cells (gains; delays in ns; antenna offsets in m; Tsys in K).
    paramerr, snr : float32[nrow, nchan, npar]
    flag : bool[nrow, nchan, npar]
        True = solution invalid.
    weight : float32[nrow, nchan, npar] or None
        WEIGHT cells; ``None`` leaves them undefined on disk, as CASA does.
    chan_freq, chan_width : dict[int, float64[nchan_spw]]
        Solution channel frequencies and widths (Hz) per spw, written into the
        SPECTRAL_WINDOW subtable. Widths are stored positive, as CASA writes them (also for
        spws with decreasing frequency). A spw missing here keeps the MS's row and must have
        the full ``nchan`` of `params`.
    ms_name : str
        Base name of the source MS (``MSName`` keyword).
    ms_path : str or None
        Source MS, whose ANTENNA, FIELD, SPECTRAL_WINDOW, OBSERVATION subtables (and HISTORY
        layout) are copied on :meth:`write` when `subtables` is None.
    subtables : dict[str, Subtable] or None
        Stored subtable copies (set by :func:`read_caltable`); take precedence over `ms_path`.
    par_type : {"Complex", "Float"}
        Defaults to the type's ``ParType``.
    pol_basis : str
        ``PolBasis`` keyword; CASA writes ``"unknown"``.
    casa_version : str or None
        ``CASA_Version`` keyword: :data:`DEFAULT_CASA_VERSION` for new tables, the stored
        value for tables read from disk (None = absent, kept absent on rewrite, so CASA
        keeps treating an old delay table as old).
    extra : dict
        JSON-serialisable metadata, stored in the ``FASTCAL_EXTRA`` keyword.
    path : str or None
        File the table was read from (not compared by :meth:`equals`).
    """

    vis_cal: str
    time: np.ndarray
    interval: np.ndarray
    field_id: np.ndarray
    spw_id: np.ndarray
    antenna1: np.ndarray
    antenna2: np.ndarray
    scan: np.ndarray
    obs_id: np.ndarray
    params: np.ndarray
    paramerr: np.ndarray
    snr: np.ndarray
    flag: np.ndarray
    weight: np.ndarray | None = None
    chan_freq: dict[int, np.ndarray] = field(default_factory=dict)
    chan_width: dict[int, np.ndarray] = field(default_factory=dict)
    ms_name: str = ""
    ms_path: str | None = None
    subtables: dict[str, Subtable] | None = None
    par_type: str | None = None
    pol_basis: str = "unknown"
    casa_version: str | None = DEFAULT_CASA_VERSION
    extra: dict = field(default_factory=dict)
    path: str | None = None

    # ---- validation -----------------------------------------------------------------

    def __post_init__(self) -> None:
        where = self.path or "CalTable"
        if self.vis_cal not in SUPPORTED_TYPES:
            raise CalTableError(
                f"{where}: table type {self.vis_cal!r} is not supported; expected one of "
                f"{', '.join(SUPPORTED_TYPES)}"
            )
        expected = SUPPORTED_TYPES[self.vis_cal]
        if self.par_type is None:
            self.par_type = expected
        if self.par_type != expected:
            raise CalTableError(
                f"{where}: ParType {self.par_type!r} does not match {self.vis_cal!r}, "
                f"which has ParType {expected!r}"
            )
        if self.ms_path is not None:
            self.ms_path = os.path.abspath(os.fspath(self.ms_path))
        self._coerce_rows(where)
        self._coerce_cells(where)
        self._coerce_freqs(where)
        self._sort_rows()

    def _coerce_rows(self, where: str) -> None:
        for attr, _, dtype in _ROW_COLUMNS:
            value = np.asarray(getattr(self, attr), dtype=dtype)
            if value.ndim != 1:
                raise CalTableError(f"{where}: {attr} must be 1-D, got shape {value.shape}")
            setattr(self, attr, value)
        nrow = len(self.time)
        bad = [a for a, _, _ in _ROW_COLUMNS if len(getattr(self, a)) != nrow]
        if bad:
            raise CalTableError(
                f"{where}: row arrays {', '.join(bad)} do not have {nrow} rows like time"
            )

    def _coerce_cells(self, where: str) -> None:
        self.params = np.asarray(self.params, dtype=_param_dtype(self.par_type))
        if self.params.ndim != 3 or len(self.params) != len(self.time):
            raise CalTableError(
                f"{where}: params must have shape (nrow={len(self.time)}, nchan, npar), "
                f"got {self.params.shape}"
            )
        dtypes = {"paramerr": np.float32, "snr": np.float32, "flag": bool, "weight": np.float32}
        for attr, dtype in dtypes.items():
            value = getattr(self, attr)
            if value is None and attr == "weight":
                continue
            value = np.asarray(value, dtype=dtype)
            if value.shape != self.params.shape:
                raise CalTableError(
                    f"{where}: {attr} has shape {value.shape}; expected params' shape "
                    f"{self.params.shape}"
                )
            setattr(self, attr, value)

    def _coerce_freqs(self, where: str) -> None:
        if set(self.chan_freq) != set(self.chan_width):
            raise CalTableError(
                f"{where}: chan_freq has spws {sorted(self.chan_freq)} but chan_width has "
                f"{sorted(self.chan_width)}; give both for the same spws"
            )
        spws = set(self.spw_ids.tolist())
        freq, width = {}, {}
        for s in sorted(self.chan_freq):
            f = np.atleast_1d(np.asarray(self.chan_freq[s], np.float64))
            w = np.abs(np.atleast_1d(np.asarray(self.chan_width[s], np.float64)))
            if f.ndim != 1 or f.shape != w.shape:
                raise CalTableError(
                    f"{where}: spw {s}: chan_freq shape {f.shape} and chan_width shape "
                    f"{w.shape} must be equal and 1-D"
                )
            if s not in spws:
                raise CalTableError(
                    f"{where}: chan_freq given for spw {s}, which has no rows; spws in the "
                    f"table: {sorted(spws)}"
                )
            if len(f) > self.params.shape[1]:
                raise CalTableError(
                    f"{where}: spw {s} has {len(f)} channel frequencies but params have "
                    f"only {self.params.shape[1]} channels"
                )
            freq[int(s)], width[int(s)] = f, w
        self.chan_freq, self.chan_width = freq, width

    def _sort_rows(self) -> None:
        order = np.lexsort((self.antenna1, self.time, self.spw_id))
        if np.array_equal(order, np.arange(len(order))):
            return
        log.debug("reordering %d rows into CASA order (spw, time, antenna)", len(order))
        for attr, _, _ in _ROW_COLUMNS:
            setattr(self, attr, getattr(self, attr)[order])
        for attr in _CELL_COLUMNS:
            if getattr(self, attr) is not None:
                setattr(self, attr, getattr(self, attr)[order])

    # ---- simple views -----------------------------------------------------------------

    @property
    def nrow(self) -> int:
        return len(self.time)

    @property
    def n_par(self) -> int:
        return self.params.shape[2]

    @property
    def spw_ids(self) -> np.ndarray:
        """Spectral windows with rows, ascending (int32)."""
        return np.unique(self.spw_id)

    @property
    def n_ant(self) -> int:
        """Antennas in the ANTENNA subtable (or 1 + the largest antenna id if unknown)."""
        n = int(self.antenna1.max()) + 1 if self.nrow else 0
        if self.subtables and "ANTENNA" in self.subtables:
            return max(n, self.subtables["ANTENNA"].nrow)
        if self.ms_path and ct.tableexists(os.path.join(self.ms_path, "ANTENNA")):
            with ct.table(os.path.join(self.ms_path, "ANTENNA"), ack=False) as t:
                return max(n, t.nrows())
        return n

    def nchan(self, spw: int) -> int:
        """Solution channels of `spw` (its chan_freq length, else the params width)."""
        if spw in self.chan_freq:
            return len(self.chan_freq[spw])
        return self.params.shape[1]

    def times(self, spw: int) -> np.ndarray:
        """Distinct solution times of `spw` (MJD s), ascending."""
        return np.unique(self.time[self._spw_rows(spw)])

    def _spw_rows(self, spw: int) -> slice:
        start, stop = np.searchsorted(self.spw_id, [spw, spw + 1])
        if start == stop:
            raise CalTableError(
                f"{self.path or 'CalTable'}: no solutions for spw {spw}; spws in the table: "
                f"{self.spw_ids.tolist()}"
            )
        return slice(int(start), int(stop))

    def solutions(self, spw: int) -> SpwSolutions:
        """Dense ``(n_time, n_ant, n_chan, n_par)`` view of the solutions of `spw`.

        Raises
        ------
        CalTableError
            If `spw` has no rows, or one antenna has two rows at the same time.
        """
        rows = self._spw_rows(spw)
        n_ant, n_chan = self.n_ant, self.nchan(spw)
        time = self.time[rows]
        utime, t_idx, first = _unique_with_first(time)
        a_idx = self.antenna1[rows]
        n_time = len(utime)
        flat = t_idx * n_ant + a_idx
        if np.bincount(flat, minlength=n_time * n_ant).max(initial=0) > 1:
            raise CalTableError(
                f"{self.path or 'CalTable'}: spw {spw} has several rows for one antenna at "
                f"one time; use the row arrays instead of solutions()"
            )
        shape = (n_time, n_ant, n_chan, self.n_par)
        fill = {
            "params": _placeholder(self.par_type),
            "paramerr": 0.0,
            "snr": 0.0,
            "flag": True,
            "weight": 0.0,
        }
        dense = {}
        for attr in _CELL_COLUMNS:
            cells = getattr(self, attr)
            if cells is None:
                dense[attr] = None
                continue
            out = np.full(shape, fill[attr], dtype=cells.dtype)
            out.reshape(n_time * n_ant, n_chan, self.n_par)[flat] = cells[rows, :n_chan]
            dense[attr] = out
        refant = np.full((n_time, n_ant), -1, np.int32)
        refant.reshape(-1)[flat] = self.antenna2[rows]
        pick = np.arange(rows.start, rows.stop)[first]
        return SpwSolutions(
            spw=int(spw),
            time=utime,
            interval=self.interval[pick],
            field_id=self.field_id[pick],
            scan=self.scan[pick],
            obs_id=self.obs_id[pick],
            refant=refant,
            chan_freq=self.chan_freq.get(spw),
            chan_width=self.chan_width.get(spw),
            **dense,
        )

    # ---- comparison -----------------------------------------------------------------

    def differences(self, other: CalTable, *, rtol: float = 0.0, atol: float = 0.0) -> list[str]:
        """Names of the attributes that differ from `other` (empty list if equal).

        Compares type, metadata keywords, every row and cell array (NaN equals NaN; float
        arrays within `rtol`/`atol`) and the solution channel axes. Subtables, `ms_path` and
        `path` are not compared.
        """
        diffs = []
        for attr in ("vis_cal", "par_type", "ms_name", "pol_basis", "casa_version", "extra"):
            if getattr(self, attr) != getattr(other, attr):
                diffs.append(attr)
        for attr, _, _ in _ROW_COLUMNS:
            if not _arrays_close(getattr(self, attr), getattr(other, attr), rtol, atol):
                diffs.append(attr)
        for attr in _CELL_COLUMNS:
            if not _arrays_close(getattr(self, attr), getattr(other, attr), rtol, atol):
                diffs.append(attr)
        for attr in ("chan_freq", "chan_width"):
            mine, theirs = getattr(self, attr), getattr(other, attr)
            if set(mine) != set(theirs) or not all(
                _arrays_close(mine[s], theirs[s], rtol, atol) for s in mine
            ):
                diffs.append(attr)
        return diffs

    def equals(self, other: CalTable, *, rtol: float = 0.0, atol: float = 0.0) -> bool:
        """True if :meth:`differences` finds nothing."""
        return isinstance(other, CalTable) and not self.differences(other, rtol=rtol, atol=atol)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CalTable) and self.equals(other)

    __hash__ = None  # type: ignore[assignment]

    # ---- construction from solver output ------------------------------------------

    @classmethod
    def from_solutions(
        cls,
        vis_cal: str,
        params: Mapping[int, np.ndarray],
        *,
        times: Mapping[int, np.ndarray] | np.ndarray,
        ms: str | os.PathLike | None = None,
        ms_name: str | None = None,
        subtables: dict[str, Subtable] | None = None,
        chan_freq: Mapping[int, np.ndarray] | None = None,
        chan_width: Mapping[int, np.ndarray] | None = None,
        antennas: np.ndarray | None = None,
        refant: Any = -1,
        flag: Mapping[int, np.ndarray] | None = None,
        paramerr: Mapping[int, np.ndarray] | None = None,
        snr: Mapping[int, np.ndarray] | None = None,
        weight: Mapping[int, np.ndarray] | None = None,
        interval: Any = 0.0,
        field_id: Any = 0,
        scan: Any = -1,
        obs_id: Any = 0,
        extra: dict | None = None,
    ) -> CalTable:
        """Build a table from dense per-spw solution arrays, rows in CASA order.

        Parameters
        ----------
        vis_cal : str
            One of :data:`SUPPORTED_TYPES`.
        params : mapping spw -> array[n_time, n_ant, n_chan, n_par]
            Solutions (complex gains, or delays in ns / offsets in m / Tsys in K).
            Non-finite values are flagged and replaced by the placeholder.
        times : mapping spw -> float64[n_time], or one float64[n_time] for every spw
            Solution times, MJD seconds UTC.
        ms : str, optional
            Source MS: its subtables are copied on write, its antenna count sets the rows
            per time, and its SPECTRAL_WINDOW supplies default channel axes.
        ms_name : str, optional
            ``MSName`` keyword; default ``basename(ms)``.
        subtables : dict, optional
            Subtable copies to use instead of reading `ms`.
        chan_freq, chan_width : mapping spw -> float64[n_chan], optional
            Solution channel axes (Hz). Default from the MS spw: its channels when
            ``n_chan`` equals the spw's, else one channel at the mean frequency with the
            whole bandwidth (as CASA writes G/T tables over all channels). Give them
            explicitly for channel selections or averaged bandpass channels. A missing
            `chan_width` with ``n_chan > 1`` is taken from the frequency spacing.
        antennas : int[n_ant], optional
            Antenna ids of the ``n_ant`` axis; default ``0..n_ant-1``. Antennas of the MS not
            listed get rows with FLAG=True, params 1+0j (Complex) / 0.0 (Float), SNR 0.
        refant : int, int[n_time], int[n_time, n_ant], or mapping spw -> those
            ANTENNA2 (reference antenna used); -1 for none.
        flag : mapping spw -> bool[n_time, n_ant, n_chan, n_par], optional
        paramerr, snr, weight : mapping spw -> float[n_time, n_ant, n_chan, n_par], optional
            Default paramerr 0; default snr ``|param| / paramerr`` (9999999 where paramerr
            is 0) and 0 where flagged; default weight None (cells left undefined).
        interval, field_id, scan, obs_id : scalar, array[n_time], or mapping spw -> those
            Per-time metadata. ``scan=-1`` means not scan-specific.
        extra : dict, optional
            JSON-serialisable metadata.

        Raises
        ------
        ParameterError
            If shapes disagree or an antenna/channel axis cannot be placed.
        """
        if vis_cal not in SUPPORTED_TYPES:
            raise ParameterError(
                f"vis_cal={vis_cal!r} is not supported; expected one of "
                f"{', '.join(SUPPORTED_TYPES)}"
            )
        if not params:
            raise ParameterError("params is empty; give at least one spw's solutions")
        if ms is None and ms_name is None:
            raise ParameterError("give ms (path of the source MS) or ms_name")
        ms = os.fspath(ms) if ms is not None else None
        par_type = SUPPORTED_TYPES[vis_cal]
        spw_source = _SpwSource(ms, subtables)
        n_total = _antenna_count(ms, subtables)
        parts, freqs, widths = [], {}, {}
        for spw in sorted(params):
            block = _SpwBlock.build(
                spw, params[spw], par_type, _pick(times, spw), antennas, n_total,
                _pick(refant, spw), _pick(flag, spw), _pick(paramerr, spw),
                _pick(snr, spw), _pick(weight, spw),
                {k: _pick(v, spw) for k, v in
                 (("interval", interval), ("field_id", field_id), ("scan", scan),
                  ("obs_id", obs_id))},
            )
            parts.append(block)
            freqs[spw], widths[spw] = spw_source.axis(
                spw, block.n_chan, _pick(chan_freq, spw), _pick(chan_width, spw)
            )
        return cls._from_blocks(
            vis_cal, par_type, parts, freqs, widths, weight is not None,
            ms_name=ms_name if ms_name is not None else os.path.basename(os.path.normpath(ms)),
            ms_path=os.path.abspath(ms) if ms is not None else None,
            subtables=subtables, extra=dict(extra or {}),
        )

    @classmethod
    def _from_blocks(cls, vis_cal, par_type, parts, freqs, widths, has_weight, **meta):
        n_chan = max(p.n_chan for p in parts)
        n_par = {p.params.shape[-1] for p in parts}
        if len(n_par) != 1:
            raise ParameterError(f"all spws must have the same n_par; got {sorted(n_par)}")
        rows = {a: np.concatenate([p.rows[a] for p in parts]) for a in parts[0].rows}
        cells = {}
        fill = {"params": _placeholder(par_type), "paramerr": 0, "snr": 0, "flag": True,
                "weight": 0}
        for attr in _CELL_COLUMNS:
            if attr == "weight" and not has_weight:
                cells[attr] = None
                continue
            cells[attr] = np.concatenate([_pad_chan(getattr(p, attr), n_chan, fill[attr])
                                          for p in parts])
        return cls(vis_cal=vis_cal, par_type=par_type, chan_freq=freqs, chan_width=widths,
                   **rows, **cells, **meta)

    # ---- writing --------------------------------------------------------------------

    def write(self, path: str | os.PathLike, overwrite: bool = False) -> str:
        """Write the table as a CASA calibration table at `path`.

        The table is built under ``<path>.fastcal-tmp-<pid>`` and renamed into place
        when complete, so an interrupted write never leaves a partial table at `path`.

        Parameters
        ----------
        path : str or PathLike
        overwrite : bool
            Replace an existing calibration table at `path`. Anything else at `path` (a
            Measurement Set, another file) is never replaced.

        Returns
        -------
        str
            The absolute path written.

        Raises
        ------
        CalTableError
            If `path` exists and `overwrite` is False, or exists and is not a calibration
            table, or no subtables are available (neither `subtables` nor `ms_path`).
        """
        path = os.path.abspath(os.fspath(path))
        if not os.path.isdir(os.path.dirname(path)):
            raise CalTableError(f"{path}: parent directory does not exist")
        _check_target(path, overwrite)
        if self.ms_path and _inside(path, self.ms_path):
            raise CalTableError(f"{path}: refusing to write a caltable inside the MS {self.ms_path}")
        subtables = self._subtables_for_write()
        _remove_stale_temps(path)
        tmp = f"{path}{_TMP_TAG}{os.getpid()}"
        _remove_tree(tmp)
        try:
            self._write_into(tmp, subtables)
            _place(tmp, path, overwrite)
        except BaseException:
            _remove_tree(tmp)
            raise
        log.info("wrote %s (%s, %d rows)", path, self.vis_cal, self.nrow)
        return path

    def _subtables_for_write(self) -> dict[str, Subtable]:
        if self.subtables is not None:
            subs = dict(self.subtables)
        elif self.ms_path:
            if not ct.tableexists(self.ms_path):
                raise CalTableError(
                    f"source MS {self.ms_path} not found; it is needed to copy the ANTENNA, "
                    f"FIELD, SPECTRAL_WINDOW and OBSERVATION subtables"
                )
            subs = _ms_subtables(self.ms_path)
        else:
            raise CalTableError(
                "CalTable has neither subtables nor ms_path; cannot write the ANTENNA, FIELD, "
                "SPECTRAL_WINDOW and OBSERVATION subtables"
            )
        for name in ("ANTENNA", "FIELD", "SPECTRAL_WINDOW"):
            if name not in subs:
                raise CalTableError(f"CalTable subtables lack {name}; cannot write")
        for name in ("OBSERVATION", "HISTORY"):
            if name not in subs:
                subs[name] = Subtable(name, ct.required_ms_desc(name), {}, {}, {}, 0)
        if self.nrow and self.antenna1.max() >= subs["ANTENNA"].nrow:
            raise CalTableError(
                f"antenna {int(self.antenna1.max())} has solutions but the ANTENNA subtable "
                f"has {subs['ANTENNA'].nrow} rows"
            )
        subs["SPECTRAL_WINDOW"] = _rewrite_spw(
            subs["SPECTRAL_WINDOW"], self.spw_ids, self.chan_freq, self.chan_width
        )
        return subs

    def _write_into(self, tmp: str, subtables: dict[str, Subtable]) -> None:
        with ct.table(tmp, _main_desc(self.par_type), nrow=self.nrow, ack=False) as t:
            t.putinfo({"type": "Calibration", "subType": self.vis_cal, "readme": ""})
            keywords = {
                "ParType": self.par_type,
                "MSName": self.ms_name,
                "VisCal": self.vis_cal,
                "PolBasis": self.pol_basis,
            }
            if self.casa_version is not None:
                keywords["CASA_Version"] = self.casa_version
            if self.extra:
                try:
                    keywords[_EXTRA_KEYWORD] = json.dumps(self.extra, sort_keys=True)
                except TypeError as err:
                    raise CalTableError(f"CalTable.extra is not JSON-serialisable: {err}") from None
            t.putkeywords(keywords)
            _fill_main_rows(t, self)
            for name in SUBTABLE_NAMES:
                sub_path = os.path.join(tmp, name)
                subtables[name].write(sub_path)
                t.putkeyword(name, f"Table: {sub_path}")


def _fill_main_rows(t: ct.table, tab: CalTable) -> None:
    """Put every main-table column, one putcol per column and spw block."""
    for attr, column, _ in _ROW_COLUMNS:
        t.putcol(column, getattr(tab, attr))
    pcol = _param_column(tab.par_type)
    names = {"params": pcol, "paramerr": "PARAMERR", "snr": "SNR", "flag": "FLAG",
             "weight": "WEIGHT"}
    for spw in tab.spw_ids:
        rows = tab._spw_rows(int(spw))
        n_chan = tab.nchan(int(spw))
        for attr in _CELL_COLUMNS:
            cells = getattr(tab, attr)
            if cells is not None:
                block = np.ascontiguousarray(cells[rows, :n_chan])
                t.putcol(names[attr], block, startrow=rows.start, nrow=rows.stop - rows.start)


def _main_desc(par_type: str) -> dict:
    """Main-table descriptor as CASA 6.7 writes it (CTDesc): scalar columns with option 5,
    array columns of any dimensionality (ndim -1), empty comments, and every column in one
    StandardStMan group named ``MSMTAB``."""
    epoch = {"QuantumUnits": ["s"], "MEASINFO": {"type": "epoch", "Ref": "UTC"}}
    scalars = [("TIME", 0.0, epoch), ("FIELD_ID", 0, None), ("SPECTRAL_WINDOW_ID", 0, None),
               ("ANTENNA1", 0, None), ("ANTENNA2", 0, None),
               ("INTERVAL", 0.0, {"QuantumUnits": ["s"]}), ("SCAN_NUMBER", 0, None),
               ("OBSERVATION_ID", 0, None)]
    arrays = [(_param_column(par_type), "complex" if par_type == "Complex" else "float"),
              ("PARAMERR", "float"), ("FLAG", "boolean"), ("SNR", "float"),
              ("WEIGHT", "float")]
    group = {"datamanagertype": "StandardStMan", "datamanagergroup": "MSMTAB"}
    cols = [ct.makescacoldesc(name, value, options=5, keywords=kw or {}, **group)
            for name, value, kw in scalars]
    cols += [ct.makearrcoldesc(name, _ARRAY_DEFAULTS[vtype], ndim=-1, valuetype=vtype, **group)
             for name, vtype in arrays]
    return ct.maketabdesc(cols)


_ARRAY_DEFAULTS = {"complex": 0j, "float": 0.0, "boolean": False}


# --------------------------------------------------------------------------------------
# from_solutions helpers
# --------------------------------------------------------------------------------------


def _pick(value: Any, spw: int) -> Any:
    """`value[spw]` if `value` is a mapping (None if spw absent), else `value`."""
    if isinstance(value, Mapping):
        return value.get(spw)
    return value


def _antenna_count(ms: str | None, subtables: dict | None) -> int | None:
    if subtables and "ANTENNA" in subtables:
        return subtables["ANTENNA"].nrow
    if ms is None:
        return None
    ant = os.path.join(ms, "ANTENNA")
    if not ct.tableexists(ant):
        raise ParameterError(f"ms={ms!r}: no ANTENNA subtable there (not a Measurement Set?)")
    with ct.table(ant, ack=False) as t:
        return t.nrows()


class _SpwSource:
    """Default solution channel axes from the MS (or stored) SPECTRAL_WINDOW."""

    def __init__(self, ms: str | None, subtables: dict | None):
        self._cells: dict[str, list] | None = None
        if subtables and "SPECTRAL_WINDOW" in subtables:
            spw = subtables["SPECTRAL_WINDOW"]
            self._cells = {c: spw.cells(c) for c in ("CHAN_FREQ", "CHAN_WIDTH")}
        elif ms is not None and ct.tableexists(os.path.join(ms, "SPECTRAL_WINDOW")):
            spw = Subtable.from_table(os.path.join(ms, "SPECTRAL_WINDOW"))
            self._cells = {c: spw.cells(c) for c in ("CHAN_FREQ", "CHAN_WIDTH")}

    def axis(self, spw: int, n_chan: int, freq: Any, width: Any) -> tuple:
        if freq is None:
            freq, ms_width = self._default(spw, n_chan)
            width = ms_width if width is None else width
        freq = np.atleast_1d(np.asarray(freq, np.float64))
        if len(freq) != n_chan:
            raise ParameterError(
                f"spw {spw}: chan_freq has {len(freq)} channels but params have {n_chan}"
            )
        if width is None:
            width = self._default_width(spw, freq)
        width = np.atleast_1d(np.asarray(width, np.float64))
        if width.shape != freq.shape:
            raise ParameterError(
                f"spw {spw}: chan_width has {len(width)} channels, chan_freq {len(freq)}"
            )
        return freq, width

    def _default_width(self, spw: int, freq: np.ndarray) -> np.ndarray:
        """Channel spacing; for one channel the MS spw's whole bandwidth."""
        if len(freq) > 1:
            return np.gradient(freq)
        if self._cells is not None and spw < len(self._cells["CHAN_WIDTH"]):
            return np.array([np.abs(self._cells["CHAN_WIDTH"][spw]).sum()])
        raise ParameterError(
            f"spw {spw}: give chan_width for a single solution channel (no MS spw to take "
            f"the bandwidth from)"
        )

    def _default(self, spw: int, n_chan: int) -> tuple:
        if self._cells is None or spw >= len(self._cells["CHAN_FREQ"]):
            raise ParameterError(
                f"spw {spw}: chan_freq not given and the MS has no spectral window {spw}"
            )
        freq = np.asarray(self._cells["CHAN_FREQ"][spw], np.float64)
        width = np.asarray(self._cells["CHAN_WIDTH"][spw], np.float64)
        if n_chan == len(freq):
            return freq, width
        if n_chan == 1:
            return np.array([freq.mean()]), np.array([width.sum()])
        raise ParameterError(
            f"spw {spw}: params have {n_chan} channels, the MS spw has {len(freq)}; "
            f"give chan_freq (and chan_width) for the solution channels"
        )


@dataclass
class _SpwBlock:
    """Rows of one spw built from dense solutions (cells flattened to (rows, chan, par))."""

    n_chan: int
    rows: dict
    params: np.ndarray
    paramerr: np.ndarray
    snr: np.ndarray
    flag: np.ndarray
    weight: np.ndarray | None

    @classmethod
    def build(cls, spw, params, par_type, times, antennas, n_total, refant, flag, paramerr,
              snr, weight, meta) -> _SpwBlock:
        params = np.asarray(params)
        times, ants, n_total = _check_axes(spw, params, times, antennas, n_total)
        n_time, n_ax, n_chan, n_par = params.shape
        dense = _Densifier(spw, params.shape, (n_time, n_total, n_chan, n_par), ants)
        place = _placeholder(par_type)
        p = dense(params, place, _param_dtype(par_type), "params")
        fl = dense(flag, False, bool, "flag")
        bad = ~np.isfinite(p) | ~dense.present
        fl |= bad
        p[bad] = place
        err = dense(paramerr, 0.0, np.float32, "paramerr")
        err[~dense.present] = 0.0
        if snr is None:  # CASA: |param| / PARAMERR, 9999999 without an error estimate
            s = np.where(err > 0, np.abs(p) / np.where(err > 0, err, 1), SNR_NO_ERROR)
            s = np.where(fl, 0.0, s).astype(np.float32)
        else:
            s = dense(snr, 0.0, np.float32, "snr")
            s[~dense.present] = 0.0
        w = dense(weight, 0.0, np.float32, "weight") if weight is not None else None
        rows = _row_metadata(spw, times, n_total, meta)
        rows["antenna2"] = _refant_rows(spw, refant, n_time, n_ax, ants, n_total)
        flat = (n_time * n_total, n_chan, n_par)
        return cls(n_chan, rows, p.reshape(flat), err.reshape(flat), s.reshape(flat),
                   fl.reshape(flat), None if w is None else w.reshape(flat))


def _check_axes(spw, params, times, antennas, n_total) -> tuple[np.ndarray, np.ndarray, int]:
    """Validated (times, antenna ids of the n_ant axis, antennas in the table)."""
    if params.ndim != 4:
        raise ParameterError(
            f"spw {spw}: params must have shape (n_time, n_ant, n_chan, n_par), got "
            f"{params.shape}"
        )
    n_time, n_ax = params.shape[:2]
    if times is None:
        raise ParameterError(f"spw {spw}: no times given")
    times = np.asarray(times, np.float64).reshape(-1)
    if len(times) != n_time:
        raise ParameterError(f"spw {spw}: {len(times)} times for params with n_time={n_time}")
    ants = np.arange(n_ax) if antennas is None else np.asarray(antennas, np.int64)
    n_total = n_total if n_total is not None else int(ants.max()) + 1
    if (ants.shape != (n_ax,) or ants.min() < 0 or ants.max() >= n_total
            or len(np.unique(ants)) != n_ax):
        raise ParameterError(
            f"spw {spw}: antennas {ants.tolist()} must be {n_ax} distinct ids in "
            f"0..{n_total - 1} matching params' n_ant axis"
        )
    if antennas is None and n_ax != n_total:
        raise ParameterError(
            f"spw {spw}: params have n_ant={n_ax} but the MS has {n_total} antennas; "
            f"pass antennas= to say which antennas the axis holds"
        )
    return times, ants, n_total


class _Densifier:
    """Places (n_time, n_ant_given, ...) arrays on the full antenna axis of one spw."""

    def __init__(self, spw, given_shape, shape, ants):
        self.spw, self.given_shape, self.shape = spw, given_shape, shape
        self.index = (slice(None), ants)
        self.present = np.zeros(shape, bool)
        self.present[self.index] = True

    def __call__(self, value, fill, dtype, name) -> np.ndarray:
        out = np.full(self.shape, fill, dtype)
        if value is not None:
            value = np.asarray(value)
            if value.shape != self.given_shape:
                raise ParameterError(
                    f"spw {self.spw}: {name} has shape {value.shape}; expected "
                    f"{self.given_shape} like params"
                )
            out[self.index] = value
        return out


def _row_metadata(spw, times, n_total, meta) -> dict[str, np.ndarray]:
    """TIME, ANTENNA1, SPECTRAL_WINDOW_ID and per-time metadata for every row."""
    n_time = len(times)
    rows = {
        "time": np.repeat(times, n_total),
        "antenna1": np.tile(np.arange(n_total, dtype=np.int32), n_time),
        "spw_id": np.full(n_time * n_total, spw, np.int32),
    }
    for key, value in meta.items():
        if value is None:
            raise ParameterError(f"{key} is a mapping without an entry for spw {spw}")
        value = np.asarray(value)
        if value.ndim == 0:
            value = np.full(n_time, value)
        if value.shape != (n_time,):
            raise ParameterError(
                f"spw {spw}: {key} must be a scalar or have shape ({n_time},), got "
                f"{value.shape}"
            )
        rows[key] = np.repeat(value, n_total)
    return rows


def _refant_rows(spw, refant, n_time, n_ax, ants, n_total) -> np.ndarray:
    value = np.asarray(-1 if refant is None else refant, np.int32)
    if value.ndim == 0:
        out = np.full((n_time, n_total), value, np.int32)
    elif value.shape == (n_time,):
        out = np.repeat(value[:, None], n_total, axis=1)
    elif value.shape == (n_time, n_ax):
        out = np.full((n_time, n_total), -1, np.int32)
        out[:, ants] = value
    else:
        raise ParameterError(
            f"spw {spw}: refant must be an int, shape ({n_time},) or ({n_time}, {n_ax}); "
            f"got shape {value.shape}"
        )
    return out.reshape(-1)


def _pad_chan(cells: np.ndarray, n_chan: int, fill: Any) -> np.ndarray:
    if cells.shape[1] == n_chan:
        return cells
    out = np.full((cells.shape[0], n_chan, cells.shape[2]), fill, cells.dtype)
    out[:, : cells.shape[1]] = cells
    return out


def _unique_with_first(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    uniq, first, inverse = np.unique(values, return_index=True, return_inverse=True)
    return uniq, inverse.reshape(-1), first


def _arrays_close(a: Any, b: Any, rtol: float, atol: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    a, b = np.asarray(a), np.asarray(b)
    if a.size == 0 and b.size == 0:  # empty tables: cell shape unknowable from disk
        return len(a) == len(b)
    if a.shape != b.shape:
        return False
    if a.dtype.kind in "fc" and (rtol or atol):
        return bool(np.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True))
    if a.dtype.kind in "fc":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


# --------------------------------------------------------------------------------------
# Atomic placement
# --------------------------------------------------------------------------------------


def _inside(path: str, parent: str) -> bool:
    parent = os.path.abspath(parent)
    return os.path.commonpath([path, parent]) == parent


def _check_target(path: str, overwrite: bool) -> None:
    if not os.path.lexists(path):
        return
    if not overwrite:
        raise CalTableError(f"{path} already exists; pass overwrite=True to replace it")
    if not (ct.tableexists(path) and ct.tableinfo(path).get("type") == "Calibration"):
        raise CalTableError(
            f"{path} exists and is not a calibration table; refusing to overwrite it"
        )


def _remove_tree(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _remove_stale_temps(path: str) -> None:
    """Remove ``<path>.fastcal-tmp-<pid>`` / ``-old-<pid>`` left by dead processes."""
    parent, base = os.path.split(path)
    for name in os.listdir(parent or "."):
        for tag in (_TMP_TAG, _OLD_TAG):
            prefix = base + tag
            if name.startswith(prefix) and name[len(prefix):].isdigit():
                pid = int(name[len(prefix):])
                if pid != os.getpid() and not _pid_alive(pid):
                    log.warning("removing %s left by an interrupted write", name)
                    _remove_tree(os.path.join(parent, name))


def _place(tmp: str, path: str, overwrite: bool) -> None:
    """Rename the finished table `tmp` to `path` (moving an old table aside first)."""
    if not os.path.lexists(path):
        try:
            os.rename(tmp, path)
        except OSError as err:
            raise CalTableError(f"{path} appeared while writing; not replaced ({err})") from None
        return
    if not overwrite:
        raise CalTableError(f"{path} already exists; pass overwrite=True to replace it")
    old = f"{path}{_OLD_TAG}{os.getpid()}"
    _remove_tree(old)
    os.rename(path, old)
    try:
        os.rename(tmp, path)
    except BaseException:
        os.rename(old, path)
        raise
    _remove_tree(old)


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------


def _open_checks(path: str) -> dict:
    """Check `path` is a supported calibration table; return its table info."""
    if not os.path.lexists(path):
        raise CalTableError(f"{path}: no such calibration table (path does not exist)")
    if not ct.tableexists(path):
        raise CalTableError(f"{path} is not a casacore table, so not a calibration table")
    info = ct.tableinfo(path)
    with ct.table(path, ack=False) as t:
        columns = set(t.colnames())
        keywords = t.getkeywords()
    if info.get("type") == "Measurement Set" or "MS_VERSION" in keywords or "DATA" in columns:
        raise CalTableError(
            f"{path} is a Measurement Set containing visibilities, not a calibration table"
        )
    if info.get("type") != "Calibration":
        raise CalTableError(
            f"{path}: table type is {info.get('type')!r}, not 'Calibration'; not a CASA "
            f"calibration table"
        )
    sub = info.get("subType") or keywords.get("VisCal", "")
    if sub not in SUPPORTED_TYPES:
        raise CalTableError(
            f"{path}: subType {sub!r} is not supported; expected one of "
            f"{', '.join(SUPPORTED_TYPES)}"
        )
    return {"subType": sub, "keywords": keywords, "columns": columns}


def read_caltable(path: str | os.PathLike) -> CalTable:
    """Read a CASA calibration table (written by fastcal or CASA).

    Parameters
    ----------
    path : str or PathLike
        Table directory. Supported types: :data:`SUPPORTED_TYPES`.

    Returns
    -------
    CalTable
        Rows in CASA order, subtables copied into memory (so it can be written elsewhere),
        ``chan_freq``/``chan_width`` from the SPECTRAL_WINDOW subtable for every spw whose
        NUM_CHAN matches its cells.

    Raises
    ------
    CalTableError
        If the path is missing, is not a table, is a Measurement Set, has an unsupported
        subType, or lacks required columns (e.g. CPARAM/FPARAM).
    """
    path = os.path.abspath(os.fspath(path))
    meta = _open_checks(path)
    keywords = meta["keywords"]
    par_type = _check_columns(path, meta)
    rows, cells, nchan = _read_main(path, meta["columns"], par_type)
    subtables = {name: Subtable.from_table(os.path.join(path, name), name)
                 for name in SUBTABLE_NAMES if ct.tableexists(os.path.join(path, name))}
    freq, width = _solution_axes(path, subtables.get("SPECTRAL_WINDOW"), nchan,
                                 cells["params"].shape[1])
    return CalTable(
        vis_cal=meta["subType"], par_type=par_type, **rows, **cells,
        chan_freq=freq, chan_width=width, ms_name=str(keywords.get("MSName", "")),
        pol_basis=str(keywords.get("PolBasis", "unknown")),
        casa_version=str(keywords["CASA_Version"]) if "CASA_Version" in keywords else None,
        extra=_read_extra(path, keywords), subtables=subtables, path=path,
    )


def _check_columns(path: str, meta: dict) -> str:
    """ParType of the table; raises if a required main-table column is missing."""
    columns = meta["columns"]
    par_type = meta["keywords"].get("ParType") or ("Complex" if "CPARAM" in columns else "Float")
    pcol = _param_column(par_type) if par_type in ("Complex", "Float") else "CPARAM"
    required = [c for _, c, _ in _ROW_COLUMNS if c != "OBSERVATION_ID"]
    missing = [c for c in [*required, pcol, "FLAG"] if c not in columns]
    if par_type not in ("Complex", "Float") or missing:
        raise CalTableError(
            f"{path}: corrupt calibration table: ParType {par_type!r}, missing columns "
            f"{', '.join(missing) or 'none'} (a {meta['subType']} table needs "
            f"{', '.join(required)}, {pcol}, PARAMERR, FLAG, SNR)"
        )
    return par_type


def _read_main(path: str, columns: set, par_type: str) -> tuple[dict, dict, dict]:
    """Row arrays, cell arrays (nrow, nchan_max, npar) and {spw: nchan} of the main table.

    OBSERVATION_ID (absent from pre-4.x tables) defaults to 0; PARAMERR/SNR to 0.
    """
    with ct.table(path, ack=False) as t:
        rows = {attr: (t.getcol(col) if col in columns else np.zeros(t.nrows(), np.int32))
                for attr, col, _ in _ROW_COLUMNS}
        spw = np.asarray(rows["spw_id"])
        params, nchan = _read_cells(t, _param_column(par_type), spw, _placeholder(par_type), path)
        cells = {"params": params}
        for attr, column, fill, optional in (("paramerr", "PARAMERR", 0.0, True),
                                             ("snr", "SNR", 0.0, True),
                                             ("flag", "FLAG", True, False),
                                             ("weight", "WEIGHT", 0.0, True)):
            got = _read_cells(t, column, spw, fill, path, optional=optional)
            cells[attr] = None if got is None else got[0]
    for attr in ("paramerr", "snr"):
        if cells[attr] is None:
            cells[attr] = np.zeros(params.shape, np.float32)
    return rows, cells, nchan


def _read_extra(path: str, keywords: dict) -> dict:
    extra = {}
    if _EXTRA_KEYWORD in keywords:
        try:
            extra = json.loads(keywords[_EXTRA_KEYWORD])
        except (TypeError, ValueError):
            log.warning("%s: keyword %s is not valid JSON; ignored", path, _EXTRA_KEYWORD)
    return extra


def _runs(spw: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of runs of equal spw id."""
    if len(spw) == 0:
        return []
    edges = np.flatnonzero(np.diff(spw)) + 1
    starts = np.concatenate([[0], edges])
    stops = np.concatenate([edges, [len(spw)]])
    return list(zip(starts.tolist(), stops.tolist(), strict=True))


def _read_cells(t, column, spw, fill, path, optional=False):
    """Cells of `column` as (array[nrow, nchan_max, npar], {spw: nchan}); None if absent.

    One getcol per run of equal spw; getvarcol only for runs with mixed shapes.
    """
    if t.nrows() == 0:
        return None if optional else (np.zeros((0, 0, 0), np.float32), {})
    if column not in t.colnames() or not t.iscelldefined(column, 0):
        if optional:
            return None
        raise CalTableError(f"{path}: corrupt calibration table: column {column} has no data")
    blocks, nchan = [], {}
    for start, stop in _runs(spw):
        try:
            block = t.getcol(column, startrow=start, nrow=stop - start)
        except RuntimeError:
            block = _ragged_block(t, column, start, stop, fill, path, optional)
            if block is None:
                return None
        if block.ndim != 3:
            raise CalTableError(
                f"{path}: corrupt calibration table: {column} cells have {block.ndim - 1} "
                f"dimensions, expected 2 ([npar, nchan])"
            )
        blocks.append(block)
        s = int(spw[start])
        nchan[s] = max(nchan.get(s, 0), block.shape[1])
    if not blocks:
        return np.zeros((0, 0, 0), np.float32), nchan
    n_par = {b.shape[2] for b in blocks}
    if len(n_par) != 1:
        raise CalTableError(f"{path}: {column} cells have differing npar {sorted(n_par)}")
    width = max(b.shape[1] for b in blocks)
    return np.concatenate([_pad_chan(b, width, fill) for b in blocks]), nchan


def _ragged_block(t, column, start, stop, fill, path, optional):
    try:
        cells = list(t.getvarcol(column, startrow=start, nrow=stop - start).values())
    except RuntimeError as err:
        if optional:
            log.debug("%s: column %s partly undefined (%s); ignored", path, column, err)
            return None
        raise CalTableError(f"{path}: corrupt calibration table: {column}: {err}") from None
    width = max(c.shape[0] for c in cells)
    out = np.full((len(cells), width, cells[0].shape[1]), fill, cells[0].dtype)
    for i, c in enumerate(cells):
        out[i, : c.shape[0]] = c
    return out


def _solution_axes(path, spw_table, nchan, width):
    freq, chan_width = {}, {}
    if spw_table is None:
        return freq, chan_width
    f_cells = spw_table.cells("CHAN_FREQ")
    w_cells = spw_table.cells("CHAN_WIDTH")
    for s, n in nchan.items():
        f = f_cells[s] if s < len(f_cells) else None
        if f is not None and len(f) == n:
            freq[s], chan_width[s] = np.asarray(f), np.asarray(w_cells[s])
        elif n != width:
            raise CalTableError(
                f"{path}: spw {s} cells have {n} channels but SPECTRAL_WINDOW row {s} has "
                f"{None if f is None else len(f)}; fastcal cannot represent this table"
            )
        else:
            log.debug("%s: spw %d SPECTRAL_WINDOW row not rewritten to solution channels",
                      path, s)
    return freq, chan_width


def as_caltable(table: CalTable | str | os.PathLike) -> CalTable:
    """`table` itself if it is a :class:`CalTable`, else :func:`read_caltable` of it.

    Raises
    ------
    CalTableError
        If `table` is neither a CalTable nor a path.
    """
    if isinstance(table, CalTable):
        return table
    if isinstance(table, (str, os.PathLike)):
        return read_caltable(table)
    raise CalTableError(
        f"expected a CalTable or the path of a calibration table, got {type(table).__name__}"
    )
