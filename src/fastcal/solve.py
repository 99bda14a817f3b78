"""Gain, bandpass and delay solvers: CASA ``gaincal`` / ``bandpass`` semantics, fast.

Flow of every solve (docs/solve.md)::

    validate parameters (ParameterError / SelectionError / CalTableError, before any read)
      -> read_chunks (DATA, FLAG, WEIGHT [, MODEL_DATA | UVW])        fastcal.ms
      -> assign solution intervals (solint / combine)                 fastcal.solint
      -> per read block, in threads: pre-apply + divide by model + sum
         per (interval, baseline, channel bin, pol)                   kernels.average
      -> add the partial sums per interval; an interval whose blocks are all in is solved
         at once (while the next blocks are read):
         StEFCal (G, T, B) or FFT + Gauss-Newton (K)                  kernels.gains/.delay
      -> flex refant with phase continuity                            fastcal.refant
      -> solnorm, fillgaps, flags  -> CalTable (written atomically)   fastcal.caltable

:func:`load_calibrator` performs the read and the model division once and keeps the
per-integration, per-channel sums in memory (:class:`VisCache`); ``solve_gains`` and
``solve_bandpass`` accept that cache in place of ``vis`` and pre-apply their ``gaintable`` s
to the cached sums (exact, :mod:`fastcal.kernels.reapply`), so a phase-up, a bandpass and an
amplitude solve on one calibrator read the MS once.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastcal import kernels
from fastcal.caltable import CalTable, as_caltable
from fastcal.errors import (
    CalTableError,
    ParameterError,
    SelectionError,
    SolveError,
    UnsupportedError,
)
from fastcal.kernels.average import (
    average_model,
    average_point_model,
    count_unflagged,
    dense_baselines,
)
from fastcal.kernels.reapply import reduce_cached
from fastcal.ms import MSInfo, open_ms, parse_selection, read_block, read_chunks
from fastcal.ms.info import require_parallel_hands
from fastcal.ms.read import Chunk
from fastcal.progress import chunk_progress
from fastcal.refant import RefantPlan, apply_flex_refant, parse_refant
from fastcal.solint import (
    Interval,
    Solint,
    SpanMember,
    assign_intervals,
    chan_bins,
    parse_combine,
    parse_solint,
)

__all__ = [
    "VisCache",
    "load_calibrator",
    "solve_gains",
    "solve_bandpass",
    "solve_delays",
    "add_cli_arguments",
    "run_from_args",
]

logger = logging.getLogger(__name__)

_EMPTY_J = np.zeros((0, 1, 1, 1), np.complex64)
_EMPTY_JF = np.zeros((0, 1, 1, 1), np.bool_)
_MAX_ITER = 100
_TOL = 1e-8
# Read blocks of the solvers: small enough that reading (which holds the GIL in
# python-casacore) overlaps the reduction and the early solves of the other thread from the
# first block on, large enough that the per-block cost (~1 ms) stays negligible.
_SOLVE_CHUNK_BYTES = 16 * 2**20

ModelArg = Any  # float | (I, spix, reffreq_hz) | FluxModel-like | Mapping[field, those]


# =========================================================================== data groups


@dataclass
class _Group:
    """One (ddid, field, scan, obs) group of data: an MS chunk or a cached chunk."""

    spw: int
    field: int
    scan: int
    obs: int
    corr_types: tuple[int, ...]
    corr_index: np.ndarray          # int32[n_pol] parallel hands used
    freq: np.ndarray                # float64[n_chan] selected channels (Hz)
    width: np.ndarray               # float64[n_chan] |width| (Hz)
    utimes: np.ndarray              # float64[n_t] unique times
    chunk: Chunk | None = None      # MS path
    cache: _CachedGroup | None = None

    @property
    def n_pol(self) -> int:
        return int(self.corr_index.size)


@dataclass
class _CachedGroup:
    """Per-integration sums of one group (no pre-calibration applied)."""

    vis: np.ndarray     # complex64[n_t, n_bl, n_chan, n_pol]  sum w conj(M) V
    wt: np.ndarray      # float32[n_t, n_bl, n_chan, n_pol]    sum w |M|^2
    n_good: np.ndarray  # float64[n_t] unflagged samples per integration (time centroid)
    chan: np.ndarray    # int64[n_chan] channel indices in the spw


@dataclass
class VisCache:
    """Reduced calibrator data kept in memory by :func:`load_calibrator`.

    Attributes
    ----------
    info : MSInfo
        The source MS.
    groups : list
        One entry per (spw, field, scan, obs) group: per-integration, per-channel,
        per-baseline, parallel-hand sums ``w conj(M) V`` (complex64) and ``w |M|^2``
        (float32), model-divided, not pre-calibrated.
    model_desc : dict
        Field id -> description of the model used.
    selection : str
        The selection the cache was loaded with.
    """

    info: MSInfo
    groups: list[_Group]
    model_desc: dict[int, str]
    selection: str
    load_seconds: float = 0.0

    @property
    def nbytes(self) -> int:
        """Memory held by the cached sums (bytes)."""
        return int(sum(g.cache.vis.nbytes + g.cache.wt.nbytes for g in self.groups))

    def __repr__(self) -> str:
        spws = sorted({g.spw for g in self.groups})
        fields = sorted({g.field for g in self.groups})
        return (f"VisCache({self.info.path!r}, {self.selection}, spws={spws}, fields={fields}, "
                f"{len(self.groups)} groups, {self.nbytes / 2**20:.1f} MiB)")


# =========================================================================== parameters


def _check_num(name: str, value: Any, lo: float, *, integer: bool = False) -> None:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if ok and integer:
        ok = float(value) == int(value)
    if not ok or not math.isfinite(float(value)) or float(value) < lo:
        kind = "an integer" if integer else "a number"
        raise ParameterError(f"{name}={value!r} is invalid; valid: {kind} >= {lo:g}")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise ParameterError(f"{name}={value!r} is invalid; valid: True or False")


def _check_parallel(value: Any) -> None:
    if not isinstance(value, (bool, np.bool_)) and not _is_client(value):
        raise ParameterError(f"parallel={value!r} is invalid; valid: True (threads), False, or a "
                             f"dask.distributed Client")


def _as_list(name: str, value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike, CalTable)):
        return [value] if (not isinstance(value, str) or value) else []
    try:
        return list(value)
    except TypeError:
        raise ParameterError(f"{name}={value!r} has the wrong type; valid: a list") from None


def _prepare_pre_apply(info: MSInfo, gaintable: Any, gainfield: Any, interp: Any,
                       spwmap: Any, spws: Sequence[int] | None = None) -> list:
    """Validate and prepare the on-the-fly pre-apply tables (fastcal.interp)."""
    tables = _as_list("gaintable", gaintable)
    if not tables:
        return []
    for i, t in enumerate(tables):
        if not isinstance(t, (str, os.PathLike, CalTable)):
            raise ParameterError(f"gaintable[{i}]={t!r} has the wrong type; valid: a path or "
                                 f"a CalTable")
        if isinstance(t, (str, os.PathLike)) and not os.path.exists(os.fspath(t)):
            raise CalTableError(f"gaintable[{i}]={os.fspath(t)!r} does not exist")
    try:
        interp_mod = importlib.import_module("fastcal.interp")
    except ImportError:
        raise UnsupportedError("gaintable needs fastcal.interp (on-the-fly calibration), which "
                               "is not installed in this build") from None
    return interp_mod.prepare_gaintables(info, [as_caltable(t) for t in tables],
                                         gainfield=_as_list("gainfield", gainfield),
                                         interp=_as_list("interp", interp),
                                         spwmap=_as_list("spwmap", spwmap), calwt=True,
                                         spws=spws)


def _flux_module():
    try:
        return importlib.import_module("fastcal.flux")
    except ImportError:
        return None


@dataclass(frozen=True)
class _Model:
    """Model source of one field: kind 'point' (spectrum callable), 'resolved' or 'column'."""

    kind: str
    spectrum: Callable[[np.ndarray, tuple[int, ...]], np.ndarray] | None = None
    obj: Any = None
    desc: str = ""


def _point_from_value(value: Any, where: str) -> _Model:
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        s = float(value)
        if not math.isfinite(s) or s == 0:
            raise ParameterError(f"{where}={value!r}: flux density must be finite and non-zero (Jy)")
        return _Model("point", lambda f, c, s=s: np.full((f.size, 1), s), desc=f"{s:g} Jy point")
    if isinstance(value, (tuple, list)) and len(value) in (2, 3):
        flux = float(value[0])
        alpha = float(value[1])
        nu0 = float(value[2]) if len(value) == 3 else None
        if not math.isfinite(flux) or flux == 0 or (nu0 is not None and not nu0 > 0):
            raise ParameterError(f"{where}={value!r}: expected (I Jy != 0, spix, reffreq Hz > 0)")

        def spec(f: np.ndarray, c: tuple[int, ...], flux=flux, alpha=alpha, nu0=nu0) -> np.ndarray:
            ref = nu0 if nu0 is not None else float(np.mean(f))
            return (flux * (f / ref) ** alpha)[:, None]
        return _Model("point", spec, desc=f"{flux:g} Jy, spix {alpha:g}")
    if hasattr(value, "spectrum"):
        if getattr(value, "is_point", True):
            return _Model("point", value.spectrum, desc=str(getattr(value, "describe", lambda: value)()))
        return _Model("resolved", obj=value, desc=str(getattr(value, "describe", lambda: value)()))
    raise ParameterError(f"{where}={value!r} is invalid; valid: a flux density in Jy, "
                         f"(I, spix[, reffreq_hz]), or a fastcal.flux.FluxModel")


def _parse_model_arg(info: MSInfo, model: ModelArg) -> dict[int | None, _Model]:
    """model= -> {field_id: _Model} (key None = every field)."""
    if model is None:
        return {}
    if isinstance(model, Mapping):
        out: dict[int | None, _Model] = {}
        for key, value in model.items():
            if isinstance(key, (int, np.integer)) and 0 <= int(key) < len(info.fields):
                ids: tuple[int, ...] = (int(key),)
            else:
                ids = info.field_ids(str(key)) if str(key) in info.field_names else ()
                if not ids and str(key).isdigit() and int(key) < len(info.fields):
                    ids = (int(key),)
            if not ids:
                raise SelectionError(f"model key {key!r} is not a field of {info.path}; valid: "
                                     f"{', '.join(info.field_names)} or their ids")
            for fid in ids:
                out[fid] = _point_from_value(value, f"model[{key!r}]")
        return out
    return {None: _point_from_value(model, "model")}


def _model_for(info: MSInfo, explicit: dict, field_id: int, spw_id: int,
               has_model_col: bool) -> _Model:
    """Model precedence: explicit > setjy virtual model > MODEL_DATA > 1 Jy point."""
    if field_id in explicit:
        return explicit[field_id]
    if None in explicit:
        return explicit[None]
    flux = _flux_module()
    if flux is not None and hasattr(flux, "virtual_model"):
        try:
            vm = flux.virtual_model(info, field_id, spw_id)
        except TypeError:
            vm = flux.virtual_model(info, field_id)
        if vm is not None:
            m = _point_from_value(vm, f"setjy model of field {field_id}")
            return _Model(m.kind, m.spectrum, m.obj, "setjy: " + m.desc)
    if has_model_col:
        return _Model("column", desc="MODEL_DATA")
    return _Model("point", lambda f, c: np.ones((f.size, 1)), desc="1 Jy point (default)")


def _models_for_groups(info: MSInfo, explicit: dict, groups: Sequence[_Group],
                       has_model_col: bool) -> list[_Model]:
    """:func:`_model_for` of every group, evaluated once per (field, spw)."""
    seen: dict[tuple[int, int], _Model] = {}
    out = []
    for g in groups:
        key = (g.field, g.spw)
        if key not in seen:
            seen[key] = _model_for(info, explicit, g.field, g.spw, has_model_col)
        out.append(seen[key])
    return out


def _model_spec(model: _Model, freq: np.ndarray, corr_types: tuple[int, ...],
                n_pol: int) -> np.ndarray:
    spec = np.asarray(model.spectrum(freq, corr_types), dtype=np.float64)
    spec = spec.reshape(freq.size, -1)
    if spec.shape[1] == 1 and n_pol > 1:
        spec = np.repeat(spec, n_pol, axis=1)
    elif spec.shape[1] > n_pol:
        spec = spec[:, [0, spec.shape[1] - 1][:n_pol]] if n_pol == 2 else spec[:, :n_pol]
    return np.ascontiguousarray(spec)


@dataclass
class _Params:
    """Validated parameters of one solve."""

    kind: str                      # "G", "T", "B", "K"
    solint: Solint
    combine: frozenset[str]
    refant: RefantPlan
    calmode: int
    minblperant: int
    minsnr: float
    solnorm: bool
    fillgaps: int
    specs: list
    parallel: Any  # bool or a dask.distributed Client
    chunk_bytes: int
    apply_args: tuple = ((), (), (), ())


def _validate_common(info: MSInfo, *, kind: str, solint: Any, combine: Any, refant: Any,
                     refantmode: str, minblperant: Any, minsnr: Any, solnorm: Any,
                     calmode: str, fillgaps: Any, chunk_bytes: Any, parallel: Any,
                     caltable: Any, overwrite: Any) -> _Params:
    sol = parse_solint(solint, allow_freq=kind == "B")
    comb = parse_combine(combine)
    if "spw" in comb and kind == "B":
        raise ParameterError("combine='spw' is not supported for a bandpass (CASA overlays the "
                             "channels of different spws); solve each spw separately")
    _check_num("minblperant", minblperant, 0, integer=True)
    _check_num("minsnr", minsnr, 0)
    _check_bool("solnorm", solnorm)
    _check_parallel(parallel)
    _check_bool("overwrite", overwrite)
    _check_num("fillgaps", fillgaps, 0, integer=True)
    if calmode not in ("ap", "p", "a"):
        raise ParameterError(f"calmode={calmode!r} is invalid; valid: 'ap', 'p', 'a'")
    if chunk_bytes is not None:
        _check_num("chunk_bytes", chunk_bytes, 1, integer=True)
    if caltable is not None:
        if not isinstance(caltable, (str, os.PathLike)) or not os.fspath(caltable):
            raise ParameterError(f"caltable={caltable!r} is invalid; valid: a path or None")
        if os.path.exists(os.fspath(caltable)) and not overwrite:
            raise CalTableError(f"caltable={os.fspath(caltable)!r} exists; pass overwrite=True "
                                f"to replace it")
    plan = parse_refant(info, refant, refantmode)
    return _Params(kind, sol, comb, plan, kernels.calmode_code(calmode), int(minblperant),
                   float(minsnr), bool(solnorm), int(fillgaps), [], parallel,
                   int(chunk_bytes or _auto_chunk_bytes(kind, info)))


def _auto_chunk_bytes(kind: str, info: MSInfo) -> int:
    """Default read block of a solve: 16 MiB; for a bandpass large enough that a block's
    per-channel partial sums (n_bl x n_chan x 2 pols x 24 bytes, zeroed, filled and added
    once per block) stay below 1/8 of its data, up to 64 MiB (43 antennas x 128 channels:
    44 MiB; bandpass 0.11-0.12 -> 0.10-0.11 s on the benchmark MS)."""
    if kind != "B" or not info.spws:
        return _SOLVE_CHUNK_BYTES
    n_ant = len(info.antennas)
    n_chan = max(len(s.chan_freq) for s in info.spws)
    partial = n_ant * (n_ant - 1) // 2 * n_chan * 2 * 24
    return int(min(max(_SOLVE_CHUNK_BYTES, 8 * partial), 4 * _SOLVE_CHUNK_BYTES))


# =========================================================================== reduction


@dataclass
class _Acc:
    """Per-interval accumulators of one label spw."""

    vis: np.ndarray      # complex128[n_int, n_bl, n_out, n_pol]
    wt: np.ndarray       # float64
    tsum: np.ndarray     # float64[n_int]  sum of t * samples
    tcnt: np.ndarray     # float64[n_int]
    intervals: list[Interval]
    out_freq: np.ndarray
    out_width: np.ndarray
    chan_bin: dict[int, np.ndarray]  # group index -> int32[n_chan]


def _group_chan_bins(kind: str, g: _Group, sol: Solint) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if kind in ("G", "T"):
        w = np.sum(g.width)
        f = float(np.sum(g.freq * g.width) / w) if w > 0 else float(np.mean(g.freq))
        return np.zeros(g.freq.size, np.int32), np.array([f]), np.array([w])
    if kind == "K":
        return np.arange(g.freq.size, dtype=np.int32), g.freq.copy(), g.width.copy()
    return chan_bins(g.freq, g.width, sol)


def _mbd_channels(groups: list[_Group], members: list[int],
                  label: int) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray]]:
    """Multi-band delay (K with combine='spw'): the selected channels of every combined spw
    side by side (spws in order of their first frequency), one delay fitted across all.

    Returns the frequencies and widths of that channel axis and, per group, the position of
    each of its channels on it."""
    first: dict[int, _Group] = {}
    for m in members:
        g = groups[m]
        ref = first.setdefault(g.spw, g)
        if g.freq.size != ref.freq.size or not np.allclose(g.freq, ref.freq):
            raise UnsupportedError(f"spw {g.spw}: the selected channels differ between "
                                   f"fields/scans combined into the delay solution of spw "
                                   f"{label}")
    order = sorted(first, key=lambda s: float(first[s].freq[0]) if first[s].freq.size else 0.0)
    offset, pos = {}, 0
    for s in order:
        offset[s] = pos
        pos += first[s].freq.size
    out_freq = np.concatenate([first[s].freq for s in order])
    out_width = np.concatenate([first[s].width for s in order])
    cbs = {m: (offset[groups[m].spw] + np.arange(groups[m].freq.size)).astype(np.int32)
           for m in members}
    return out_freq, out_width, cbs


def _build_accs(kind: str, groups: list[_Group], intervals: list[Interval], sol: Solint,
                n_bl: int) -> tuple[dict[int, _Acc], np.ndarray]:
    """Accumulators per label spw, and the local index of every global interval."""
    by_spw: dict[int, list[Interval]] = {}
    for iv in intervals:
        by_spw.setdefault(iv.label_spw, []).append(iv)
    local = np.zeros(len(intervals), np.int64)
    accs = {}
    for spw, ivs in by_spw.items():
        for k, iv in enumerate(ivs):
            local[iv.index] = k
        members = sorted({m for iv in ivs for m in iv.members})
        npols = {groups[m].n_pol for m in members}
        if len(npols) != 1:
            raise UnsupportedError(f"spws {sorted({groups[m].spw for m in members})} combined "
                                   f"into spw {spw} have different numbers of parallel hands")
        n_pol = npols.pop()
        cbs = {}
        if kind in ("G", "T"):
            ws = np.array([np.sum(groups[m].width) for m in members])
            fs = np.array([np.sum(groups[m].freq * groups[m].width) / max(np.sum(groups[m].width), 1e-30)
                           for m in members])
            # bandwidth-weighted centroid of the distinct spws
            seen = {}
            for m, f, w in zip(members, fs, ws, strict=True):
                seen[groups[m].spw] = (f, w)
            fw = np.array(list(seen.values()))
            out_freq = np.array([np.sum(fw[:, 0] * fw[:, 1]) / max(np.sum(fw[:, 1]), 1e-30)])
            out_width = np.array([np.sum(fw[:, 1])])
            for m in members:
                cbs[m] = np.zeros(groups[m].freq.size, np.int32)
        elif kind == "K" and len({groups[m].spw for m in members}) > 1:
            out_freq, out_width, cbs = _mbd_channels(groups, members, spw)
        else:
            ref = None
            for m in members:
                cb, of, ow = _group_chan_bins(kind, groups[m], sol)
                if ref is None:
                    ref = (of, ow)
                elif of.size != ref[0].size or not np.allclose(of, ref[0]):
                    raise UnsupportedError(f"spw {spw}: the selected channels differ between "
                                           f"fields/scans combined into one solution")
                cbs[m] = cb
            out_freq, out_width = ref
        n_out = out_freq.size
        shape = (len(ivs), n_bl, n_out, n_pol)
        accs[spw] = _Acc(np.zeros(shape, np.complex128), np.zeros(shape),
                         np.zeros(len(ivs)), np.zeros(len(ivs)), ivs, out_freq, out_width, cbs)
    return accs, local


def _group_jones(specs: list, info: MSInfo, g: _Group,
                 n_ant: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Pre-apply Jones of a group on its unique times (empty arrays without tables), and
    its weight scale (None: |J|^2 per channel, see :func:`_group_wscale`)."""
    if not specs:
        return _EMPTY_J, _EMPTY_JF, None
    interp_mod = importlib.import_module("fastcal.interp")
    cj = interp_mod.chunk_jones(specs, info, spw_id=g.spw, field_id=g.field, scan=g.scan,
                                observation_id=g.obs, times=g.utimes, chan_freq=g.freq,
                                n_ant=n_ant)
    jones = np.ascontiguousarray(cj.jones, dtype=np.complex64)
    jflag = np.ascontiguousarray(cj.flag, dtype=np.bool_)
    return jones, jflag, _group_wscale(specs, info, g, n_ant, jones.shape[2])


def _group_wscale(specs: list, info: MSInfo, g: _Group, n_ant: int,
                  n_chan: int) -> np.ndarray | None:
    """Weight scale float32 (n_utime, n_ant, n_chan or 1, 2) of the pre-applied tables when a
    bandpass is among them, else None (the kernels then use |J|^2 per channel).

    CASA's solvers (VisEquation::collapse2 -> VisCal::correct2 with spectral weights) scale
    the weights by |J|^2 per antenna/receptor, except for a B Jones table: one factor per
    antenna/receptor, the mean of |B|^2 over its unflagged channels (BJones::calcWtScale,
    VisJones::syncWtScale), with or without WEIGHT_SPECTRUM. Tsys (B TSYS) stays per channel
    (1/Tsys(nu), StandardTsys with channelised weights)."""
    if not any(s.calwt and s.vis_cal == "B Jones" for s in specs):
        return None
    interp_mod = importlib.import_module("fastcal.interp")
    ws = np.ones((g.utimes.size, n_ant, n_chan, 2), np.float64)
    for s in specs:
        if not s.calwt:
            continue
        j, f, mws = interp_mod.table_term(s, info, g.spw, g.field, g.obs, g.utimes, g.freq,
                                          g.scan)
        na = min(n_ant, j.shape[1])
        f = np.asarray(f[:, :na]) | (j[:, :na] == 0)
        if s.vis_cal == "B Jones" and mws is not None:
            term = np.where(f.all(axis=2, keepdims=True), 1.0, mws[:, :na])
        else:
            term = np.where(f, 1.0, np.abs(j[:, :na]) ** 2)
        ws[:, :na] *= term
    return np.ascontiguousarray(ws, np.float32)


@dataclass
class _BlockJob:
    gi: int
    block: int
    slot: np.ndarray        # int64[n_utime] local interval per unique time of the group
    chan_bin: np.ndarray
    n_out: int
    model: _Model
    jones: np.ndarray
    jflag: np.ndarray
    one_time_per_slot: bool = False
    wscale: np.ndarray | None = None  # weight scale in place of |J|^2 (_group_wscale)


def _reduce_block(g: _Group, job: _BlockJob, n_ant: int, n_bl: int,
                  out: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None):
    """Read one dask block of an MS chunk and reduce it; returns partial interval sums.

    With `out` = (vis, wt, n) arrays indexed by the chunk's slots, the block's sums are added
    to ``out[k][s0:s1+1]`` in place (the cache, whose blocks never share a slot) instead of
    to new arrays."""
    chunk = g.chunk
    sl = chunk.block_slice(job.block)
    cols = ["DATA", "FLAG", "WEIGHT"]
    if job.model.kind == "column":
        cols.append("MODEL_DATA")
    elif job.model.kind == "resolved":
        cols.append("UVW")
    arr = read_block(chunk, job.block, cols)
    times = chunk.time[sl]
    tpos = np.searchsorted(g.utimes, times)
    rows_slot = job.slot[tpos]
    s0 = int(rows_slot.min())
    s1 = int(rows_slot.max())
    rel = (rows_slot - s0).astype(np.int32)
    shape = (s1 - s0 + 1, n_bl, job.n_out, g.n_pol)
    if out is None:
        vis, wt = np.zeros(shape, np.complex128), np.zeros(shape)
        # sample counts are only needed for the time centroid of one-timestamp slots
        nn = np.zeros(shape if job.one_time_per_slot else (0, 1, 1, g.n_pol), np.int64)
    else:
        vis, wt, nn = (a[s0:s1 + 1] for a in out)
    a1 = np.ascontiguousarray(chunk.antenna1[sl], np.int32)
    a2 = np.ascontiguousarray(chunk.antenna2[sl], np.int32)
    jt = tpos.astype(np.int32) if job.jones.shape[0] else np.zeros(times.size, np.int32)
    data, flag, weight = arr["DATA"], arr["FLAG"], arr["WEIGHT"]
    if weight.ndim == 3 and weight.shape[1] > 1 and weight.strides[1] == 0:
        weight = weight[:, :1, :]  # WEIGHT broadcast over channels: the kernels' per-row form
    if job.model.kind == "point":
        spec = _model_spec(job.model, g.freq, g.corr_types, g.n_pol)
        average_point_model(data, spec, flag, weight, a1, a2, rel, job.chan_bin, g.corr_index,
                            job.jones, job.jflag, jt, True, vis, wt, nn, job.wscale)
    else:
        if job.model.kind == "column":
            model = arr["MODEL_DATA"]
        else:
            model = np.ascontiguousarray(job.model.obj.visibilities(arr["UVW"], g.freq, g.corr_types),
                                         np.complex64)
        average_model(data, model, flag, weight, a1, a2, rel, job.chan_bin, g.corr_index,
                      job.jones, job.jflag, jt, True, vis, wt, nn, job.wscale)
    return (s0, vis, wt, nn, *_time_weights(g, job, times, tpos, rel, flag, a1, a2, nn, shape[0]))


def _time_weights(g: _Group, job: _BlockJob, times: np.ndarray, tpos: np.ndarray,
                  rel: np.ndarray, flag: np.ndarray, a1: np.ndarray, a2: np.ndarray,
                  nn: np.ndarray, n_slot: int) -> tuple[np.ndarray, np.ndarray]:
    """Per slot: sum of (t - t0) x samples and of samples, for the TIME centroid.

    When every slot of the group holds one timestamp (solint 'int', the cache) the sample
    counts of the kernel suffice; otherwise unflagged cross-correlation samples are counted
    per row."""
    if job.one_time_per_slot:
        tcnt = nn.reshape(n_slot, -1).sum(axis=1).astype(np.float64)
        t_slot = np.zeros(n_slot)
        t_slot[rel] = times - g.utimes[0]
        return tcnt * t_slot, tcnt
    good = count_unflagged(flag, a1, a2)
    tsum = np.bincount(rel, weights=good * (times - g.utimes[0]), minlength=n_slot)
    tcnt = np.bincount(rel, weights=good, minlength=n_slot)
    return tsum, tcnt


def _is_client(parallel: Any) -> bool:
    """True for a dask.distributed Client (anything with submit/gather/nthreads)."""
    return all(hasattr(parallel, a) for a in ("submit", "gather", "nthreads"))


def _run_jobs(fn: Callable, jobs: list, parallel: Any, consume: Callable) -> None:
    """Run fn(job) for every job and consume the results in the calling thread.

    `parallel`: False = serially; True = in a thread pool (the kernels release the GIL);
    a dask.distributed Client = as tasks on its workers. At most 2 x workers jobs are in
    flight (memory ~ 2 x workers x chunk_bytes)."""
    if _is_client(parallel):
        from distributed import as_completed

        window = 2 * max(1, sum(parallel.nthreads().values()))
        ac = as_completed()
        owner = {}
        for j in jobs:
            f = parallel.submit(fn, j, pure=False)
            owner[f.key] = j
            ac.add(f)
            if ac.count() >= window:
                done = next(ac)
                consume(owner.pop(done.key), done.result())
        for done in ac:
            consume(owner.pop(done.key), done.result())
        return
    n_workers = min(len(jobs), os.cpu_count() or 1) if parallel else 1
    if n_workers <= 1:
        for j in jobs:
            consume(j, fn(j))
        return
    with ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="fastcal-solve") as ex:
        _submit_windowed(ex, fn, jobs, consume, 2 * n_workers)


def _submit_windowed(ex, fn, jobs, consume, window: int) -> None:
    """Submit ``fn(job)`` to the executor `ex` keeping at most `window` jobs in flight, and
    ``consume(job, result)`` in submission order (bounded memory, deterministic sums)."""
    pending: list = []
    for j in jobs:
        pending.append((j, ex.submit(fn, j)))
        if len(pending) >= window:
            jj, fut = pending.pop(0)
            consume(jj, fut.result())
    for jj, fut in pending:
        consume(jj, fut.result())


_T_REF = 4.0e9  # MJD seconds offset for centroid sums (keeps float64 precision)


@dataclass
class _RedJob:
    """One reduction task: a block of an MS chunk (`block` set) or a cached group."""

    gi: int
    spw: int                  # label spw of the intervals it adds to
    touched: np.ndarray       # int64, sorted local intervals it adds to (s0 = touched[0])
    block: _BlockJob | None = None
    group: _Group | None = None  # MS path: the group (sent along to distributed workers)


def _unique_times(t: np.ndarray) -> np.ndarray:
    """np.unique of row times, without the sort when they are already in time order (as
    MS rows usually are)."""
    if t.size > 1 and np.all(t[1:] >= t[:-1]):
        return t[np.concatenate(([True], t[1:] != t[:-1]))]
    return np.unique(t)


def _ms_jobs(info: MSInfo, p: _Params, groups: list[_Group], slots: list[np.ndarray],
             accs: dict[int, _Acc], local: np.ndarray, intervals: list[Interval],
             models: list[_Model]) -> list[_RedJob]:
    """One job per dask block of every group, in the order of the chunks."""
    n_ant = len(info.antennas)
    jobs = []
    for gi, g in enumerate(groups):
        iv_spw = intervals[int(slots[gi][0])].label_spw
        acc = accs[iv_spw]
        jones, jflag, wscale = _group_jones(p.specs, info, g, n_ant)
        slot_local = local[slots[gi]]
        single = bool(np.unique(slot_local).size == slot_local.size)
        model = models[gi]
        if model.kind == "point":  # evaluated once per group, not per block
            spec = _model_spec(model, g.freq, g.corr_types, g.n_pol)
            model = _Model("point", lambda f, c, spec=spec: spec, desc=model.desc)
        for b in range(g.chunk.n_blocks):
            bt = _unique_times(g.chunk.time[g.chunk.block_slice(b)])
            touched = np.unique(slot_local[np.searchsorted(g.utimes, bt)])
            jobs.append(_RedJob(gi, iv_spw, touched,
                                _BlockJob(gi, b, slot_local, acc.chan_bin[gi], acc.out_freq.size,
                                          model, jones, jflag, single, wscale), g))
    return jobs


def _cache_jobs(groups: list[_Group], slots: list[np.ndarray], local: np.ndarray,
                intervals: list[Interval]) -> list[_RedJob]:
    """One job per cached group."""
    return [_RedJob(gi, intervals[int(slots[gi][0])].label_spw, np.unique(local[slots[gi]]))
            for gi in range(len(groups))]


def _run_ms_job(job: _RedJob, n_ant: int) -> tuple:
    """Reduce one MS block: (s0, vis, wt, n, tsum, tcnt), tsum relative to _T_REF."""
    g = job.group
    s0, vis, wt, nn, tsum, tcnt = _reduce_block(g, job.block, n_ant, n_ant * (n_ant - 1) // 2)
    return s0, vis, wt, nn, tsum + tcnt * (g.utimes[0] - _T_REF), tcnt


def _run_cache_job(info: MSInfo, p: _Params, groups: list[_Group], slots: list[np.ndarray],
                   accs: dict[int, _Acc], local: np.ndarray, job: _RedJob, n_ant: int) -> tuple:
    """Pre-apply and reduce one cached group: (s0, vis, wt, n, tsum, tcnt)."""
    g = groups[job.gi]
    acc = accs[job.spw]
    a1, a2 = dense_baselines(n_ant)
    jones, jflag, wscale = _group_jones(p.specs, info, g, n_ant)
    sl = local[slots[job.gi]]
    s0, s1 = int(sl.min()), int(sl.max())
    shape = (s1 - s0 + 1, *acc.vis.shape[1:])
    vis, wt, nn = np.zeros(shape, np.complex128), np.zeros(shape), np.zeros(shape, np.int64)
    reduce_cached(g.cache.vis, g.cache.wt, (sl - s0).astype(np.int64), acc.chan_bin[job.gi],
                  a1, a2, jones, jflag, np.arange(g.utimes.size, dtype=np.int64), True,
                  vis, wt, nn, wscale)
    rel = sl - s0
    tsum = np.bincount(rel, weights=g.cache.n_good * (g.utimes - _T_REF), minlength=shape[0])
    tcnt = np.bincount(rel, weights=g.cache.n_good, minlength=shape[0])
    return s0, vis, wt, nn, tsum, tcnt


def _add_partial(acc: _Acc, touched: np.ndarray, res: tuple) -> None:
    """Add a job's partial sums to the accumulators of the intervals it touched only
    (intervals being solved meanwhile are never written)."""
    s0, vis, wt, nn, tsum, tcnt = res
    s1 = s0 + vis.shape[0]
    if touched.size == s1 - s0:
        acc.vis[s0:s1] += vis
        acc.wt[s0:s1] += wt
        acc.tsum[s0:s1] += tsum
        acc.tcnt[s0:s1] += tcnt
        return
    rel = touched - s0
    acc.vis[touched] += vis[rel]
    acc.wt[touched] += wt[rel]
    acc.tsum[touched] += tsum[rel]
    acc.tcnt[touched] += tcnt[rel]


@dataclass
class _Solved:
    """Kernel output of one label spw, filled piece by piece."""

    gains: np.ndarray        # complex128[n_int, n_ant, n_out, n_par] (K: delays, float64)
    paramerr: np.ndarray
    snr: np.ndarray
    flag: np.ndarray
    status: np.ndarray       # int8 (G/T/B); K: unused
    not_converged: np.ndarray  # bool[n_int, n_out] (K: [n_int, 1])
    used: np.ndarray | None = None  # K: refant per interval
    pending: np.ndarray | None = None    # int64[n_int] reduction jobs still to add
    dispatched: np.ndarray | None = None  # bool[n_int]


def _new_solved(p: _Params, acc: _Acc, n_ant: int, pending: np.ndarray) -> _Solved:
    n_int, _, n_out, n_pol = acc.vis.shape
    n_par = 1 if p.kind == "T" else n_pol
    if p.kind == "K":
        shape = (n_int, n_ant, 1, n_pol)
        return _Solved(np.zeros(shape), np.zeros(shape), np.zeros(shape), np.zeros(shape, bool),
                       np.zeros(shape, np.int8), np.zeros((n_int, 1), bool), None, pending,
                       np.zeros(n_int, bool))
    shape = (n_int, n_ant, n_out, n_par)
    return _Solved(np.ones(shape, np.complex128), np.zeros(shape), np.zeros(shape),
                   np.zeros(shape, bool), np.zeros(shape, np.int8), np.zeros((n_int, n_out), bool),
                   None, pending, np.zeros(n_int, bool))


def _ready_pieces(p: _Params, spw: int, acc: _Acc, st: _Solved, cand: np.ndarray,
                  n_workers: int) -> list[tuple[int, int, int, int, int]]:
    """Intervals among `cand` whose data are complete and not yet solved, as solve pieces
    (spw, i0, i1, c0, c1): contiguous interval runs, split over `n_workers` by interval
    (G/T) or channel (B); K solves a whole spw at once."""
    new = cand[(st.pending[cand] == 0) & ~st.dispatched[cand]]
    if new.size == 0:
        return []
    st.dispatched[new] = True
    n_int, _, n_out, _ = acc.vis.shape
    if p.kind == "K":
        return [(spw, 0, n_int, 0, n_out)] if st.dispatched.all() else []
    cuts = np.flatnonzero(np.diff(new) != 1) + 1
    pieces = []
    for run in np.split(new, cuts):
        i0, i1 = int(run[0]), int(run[-1]) + 1
        if n_out >= 8 * n_workers and n_workers > 1:  # bandpass: split the channels
            edges = np.linspace(0, n_out, n_workers + 1).astype(int)
            pieces += [(spw, i0, i1, int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]
        elif i1 - i0 >= 2 * n_workers and n_workers > 1:
            edges = np.linspace(i0, i1, n_workers + 1).astype(int)
            pieces += [(spw, int(a), int(b), 0, n_out) for a, b in zip(edges[:-1], edges[1:], strict=True)]
        else:
            pieces.append((spw, i0, i1, 0, n_out))
    return pieces


def _solve_piece(p: _Params, acc: _Acc, st: _Solved, n_ant: int, i0: int, i1: int,
                 c0: int, c1: int) -> None:
    """Run the solver kernel on intervals [i0, i1) and solution channels [c0, c1) of one
    spw and store the result in `st` (pieces never overlap, so threads may run several)."""
    a1, a2 = dense_baselines(n_ant)
    vis, wt = acc.vis[i0:i1], acc.wt[i0:i1]
    if c0 != 0 or c1 != vis.shape[2]:
        vis = np.ascontiguousarray(vis[:, :, c0:c1])
        wt = np.ascontiguousarray(wt[:, :, c0:c1])
    x = kernels.vis_ratio(vis, wt)
    if p.kind == "K":
        refants = np.array(p.refant.choices, np.int32)
        ref_freq = float(acc.out_freq[acc.out_freq.size // 2]) if acc.out_freq.size else 0.0
        delay, _phase, perr, flag, used, _ni, conv = kernels.solve_delays(
            x, wt, a1, a2, n_ant, acc.out_freq.astype(np.float64), ref_freq, refants, True, 20, 1e-6)
        st.gains[i0:i1, :, 0, :] = delay
        st.paramerr[i0:i1, :, 0, :] = perr
        st.flag[i0:i1, :, 0, :] = flag
        st.not_converged[i0:i1, 0] = ~conv
        st.used = used
        return
    g, perr, snr, flag, status, _ni, conv = kernels.solve_gains(
        x, wt, a1, a2, n_ant, p.calmode, p.kind == "T", p.minblperant, p.minsnr, _MAX_ITER, _TOL)
    st.gains[i0:i1, :, c0:c1] = g
    st.paramerr[i0:i1, :, c0:c1] = perr
    st.snr[i0:i1, :, c0:c1] = snr
    st.flag[i0:i1, :, c0:c1] = flag
    st.status[i0:i1, :, c0:c1] = status
    st.not_converged[i0:i1, c0:c1] = ~conv


def _reduce_and_solve(p: _Params, accs: dict[int, _Acc], jobs: list[_RedJob],
                      run: Callable[[_RedJob], tuple], n_ant: int) -> dict[int, _Solved]:
    """Reduce every job into `accs` and solve each interval as soon as all its data are in.

    With threads, the solves of completed intervals (split over the workers) run while later
    blocks are read and reduced; a dask.distributed Client reduces on its workers and the
    solves run here afterwards. Progress: one ``chunk_progress("solve", n_jobs)`` unit per job.
    """
    pending = {spw: np.zeros(len(acc.intervals), np.int64) for spw, acc in accs.items()}
    for j in jobs:
        pending[j.spw][j.touched] += 1
    states = {spw: _new_solved(p, acc, n_ant, pending[spw]) for spw, acc in accs.items()}
    client = _is_client(p.parallel)
    n_workers = max(1, os.cpu_count() or 1) if (client or bool(p.parallel)) else 1
    ex = ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="fastcal-solve") \
        if n_workers > 1 else None
    futures: list = []

    def dispatch(pieces: list) -> None:
        for spw, i0, i1, c0, c1 in pieces:
            args = (p, accs[spw], states[spw], n_ant, i0, i1, c0, c1)
            if ex is None:
                _solve_piece(*args)
            else:
                futures.append(ex.submit(_solve_piece, *args))

    try:
        with chunk_progress("solve", len(jobs)) as bar:
            def consume(job: _RedJob, res: tuple) -> None:
                _add_partial(accs[job.spw], job.touched, res)
                bar.advance()
                if not client:
                    st = states[job.spw]
                    st.pending[job.touched] -= 1
                    dispatch(_ready_pieces(p, job.spw, accs[job.spw], st, job.touched, n_workers))

            if ex is None or client:
                _run_jobs(run, jobs, p.parallel if client else False, consume)
            else:
                _submit_windowed(ex, run, jobs, consume, 2 * n_workers)
        for spw, st in states.items():  # everything left (the client path: everything)
            st.pending[:] = 0
            dispatch(_ready_pieces(p, spw, accs[spw], st, np.arange(st.pending.size), n_workers))
        for f in futures:
            f.result()
    finally:
        if ex is not None:
            ex.shutdown(wait=True, cancel_futures=True)
    return states


# =========================================================================== groups


def _selection_kwargs(field, spw, intent, scan, antenna, timerange, observation="") -> dict:
    return dict(field=field or None, spw=spw or None, intent=intent or None, scan=scan or None,
                antenna=antenna or None, timerange=timerange or None,
                observation=observation or None)


def _groups_from_chunks(info: MSInfo, chunks: list[Chunk]) -> list[_Group]:
    out = []
    for c in chunks:
        if not np.any(c.antenna1 != c.antenna2):
            continue  # autocorrelations only (e.g. WVR): nothing to solve on
        pol = info.pols[c.pol_id]
        idx = require_parallel_hands(pol)
        ci = np.array([idx[0], idx[-1]] if len(idx) > 1 else [idx[0]], np.int32)
        spw = info.spws[c.spw_id]
        width = np.abs(np.asarray(spw.chan_width, float)[c.chan]) if len(spw.chan_width) else \
            np.full(c.chan.size, np.nan)
        out.append(_Group(c.spw_id, c.field_id, c.scan, c.observation_id, tuple(c.corr_types),
                          ci, np.asarray(c.freq, float), width, _unique_times(c.time), chunk=c))
    return out


def _extra_columns(models: Sequence[_Model]) -> tuple[str, ...]:
    """Columns beyond DATA, FLAG, WEIGHT that the models need."""
    kinds = {m.kind for m in models}
    return (("MODEL_DATA",) if "column" in kinds else ()) + (("UVW",) if "resolved" in kinds else ())


def _open_groups(vis: Any, sel_kwargs: dict, extra: Sequence[str],
                 chunk_bytes: int) -> tuple[MSInfo, list[_Group]]:
    info = open_ms(vis)
    cols = ["DATA", "FLAG", "WEIGHT", *extra]
    chunks = read_chunks(info, cols, chunk_bytes=chunk_bytes, **sel_kwargs)
    groups = _groups_from_chunks(info, chunks)
    if not groups:
        desc = ", ".join(f"{k}={v!r}" for k, v in sel_kwargs.items() if v) or "all data"
        raise SelectionError(f"selection {desc} of {info.path} has no cross-correlation data "
                             f"(only autocorrelations, e.g. WVR rows)")
    return info, groups


def _filter_cache(cache: VisCache, sel_kwargs: dict) -> list[_Group]:
    """Groups of a cache matching field/spw/scan/intent (channels must be a subset)."""
    for k in ("antenna", "timerange", "observation"):
        if sel_kwargs.get(k):
            raise ParameterError(f"{k}={sel_kwargs[k]!r} cannot be applied to a VisCache; "
                                 f"give it to load_calibrator instead")
    info = cache.info
    sel = parse_selection(info, field=sel_kwargs.get("field"), spw=sel_kwargs.get("spw"),
                          scan=sel_kwargs.get("scan"), intent=sel_kwargs.get("intent"))
    intent_scans = None
    if sel.state_ids is not None:
        st = set(sel.state_ids)
        idx = info.index
        intent_scans = set(np.unique(idx.scan[np.isin(idx.state_id, list(st))]).tolist())
    out = []
    for g in cache.groups:
        if sel.field_ids is not None and g.field not in sel.field_ids:
            continue
        if sel.scans is not None and g.scan not in sel.scans:
            continue
        if intent_scans is not None and g.scan not in intent_scans:
            continue
        if sel.spw_channels is not None:
            if g.spw not in sel.spw_channels:
                continue
            want = sel.channels(g.spw, info.spws[g.spw].num_chan)
            pos = np.searchsorted(g.cache.chan, want)
            if np.any(pos >= g.cache.chan.size) or np.any(g.cache.chan[np.minimum(pos, g.cache.chan.size - 1)] != want):
                raise SelectionError(f"spw={sel_kwargs.get('spw')!r} selects channels of spw {g.spw} "
                                     f"that are not in the cache (cached channels "
                                     f"{int(g.cache.chan[0])}~{int(g.cache.chan[-1])})")
            if want.size != g.cache.chan.size:
                c = _CachedGroup(np.ascontiguousarray(g.cache.vis[:, :, pos]),
                                 np.ascontiguousarray(g.cache.wt[:, :, pos]), g.cache.n_good, want)
                g = _Group(g.spw, g.field, g.scan, g.obs, g.corr_types, g.corr_index, g.freq[pos],
                           g.width[pos], g.utimes, cache=c)
        out.append(g)
    if not out:
        raise SelectionError(f"selection {sel.describe()} matches nothing in the cache "
                             f"({cache.selection}); cached fields "
                             f"{sorted({g.field for g in cache.groups})}, spws "
                             f"{sorted({g.spw for g in cache.groups})}, scans "
                             f"{sorted({g.scan for g in cache.groups})}")
    return out


# =========================================================================== load_calibrator


def load_calibrator(vis: str | os.PathLike | MSInfo, *, field: Any = "", spw: Any = "",
                    intent: Any = "", scan: Any = "", antenna: Any = "", timerange: Any = "",
                    model: ModelArg = None, chunk_bytes: int | None = None,
                    parallel: bool | Any = True) -> VisCache:
    """Read a calibrator once and keep its model-divided sums in memory.

    The cache holds, per (spw, field, scan) group, integration, dense baseline, selected
    channel and parallel hand, ``w conj(M) V`` and ``w |M|^2`` (12 bytes per cell).
    Pass it as ``vis`` to :func:`solve_gains` / :func:`solve_bandpass`: each solve then
    pre-applies its ``gaintable`` to the cached sums (exact) and never reads the MS.

    Parameters
    ----------
    vis : str or MSInfo
    field, spw, intent, scan, antenna, timerange : str
        CASA selection of the calibrator data to cache.
    model : float, tuple, FluxModel or mapping field -> those, optional
        As in :func:`solve_gains`; fixed for the cache's lifetime.
    chunk_bytes : int, optional
        Bytes per read block (default 16 MiB).
    parallel : bool or dask.distributed.Client
        Reduce blocks in threads, serially, or on a dask.distributed cluster.

    Returns
    -------
    VisCache

    Raises
    ------
    SelectionError, ParameterError, MissingColumnError
        Bad selection/model, or a selection without cross-correlations.
    """
    t0 = time.perf_counter()
    info = open_ms(vis)
    _check_parallel(parallel)
    if chunk_bytes is not None:
        _check_num("chunk_bytes", chunk_bytes, 1, integer=True)
    explicit = _parse_model_arg(info, model)
    sel_kwargs = _selection_kwargs(field, spw, intent, scan, antenna, timerange)
    has_col = "MODEL_DATA" in info.columns
    info, groups = _open_groups(info, sel_kwargs, (), int(chunk_bytes or _SOLVE_CHUNK_BYTES))
    models = _models_for_groups(info, explicit, groups, has_col)
    if _extra_columns(models):  # plan again with MODEL_DATA / UVW among the read columns
        info, groups = _open_groups(info, sel_kwargs, _extra_columns(models),
                                    int(chunk_bytes or _SOLVE_CHUNK_BYTES))
        models = _models_for_groups(info, explicit, groups, has_col)
    n_ant = len(info.antennas)
    n_bl = n_ant * (n_ant - 1) // 2
    jobs = []
    for gi, g in enumerate(groups):
        slot = np.arange(g.utimes.size, dtype=np.int64)
        cb = np.arange(g.freq.size, dtype=np.int32)
        for b in range(g.chunk.n_blocks):
            jobs.append((gi, _BlockJob(gi, b, slot, cb, g.freq.size, models[gi], _EMPTY_J,
                                       _EMPTY_JF, True)))
    store = {gi: _CachedGroup(np.zeros((g.utimes.size, n_bl, g.freq.size, g.n_pol), np.complex64),
                              np.zeros((g.utimes.size, n_bl, g.freq.size, g.n_pol), np.float32),
                              np.zeros(g.utimes.size), np.asarray(g.chunk.chan))
             for gi, g in enumerate(groups)}
    counts = {gi: np.zeros(store[gi].wt.shape, np.int8) for gi in store}  # scratch (1 sample)

    in_place = not _is_client(parallel)

    def fn(job):
        gi, bj = job
        if not in_place:  # remote workers return their sums
            return _reduce_block(groups[gi], bj, n_ant, n_bl)
        c = store[gi]
        # blocks hold whole timestamps, so threads never write the same slot
        return _reduce_block(groups[gi], bj, n_ant, n_bl, out=(c.vis, c.wt, counts[gi]))

    def consume(job, res):
        gi, _ = job
        s0, v, w, _n, _tsum, tcnt = res
        c = store[gi]
        s1 = s0 + v.shape[0]
        if not in_place:
            c.vis[s0:s1] += v.astype(np.complex64)
            c.wt[s0:s1] += w.astype(np.float32)
        c.n_good[s0:s1] += tcnt

    with chunk_progress("load_calibrator", len(jobs)) as bar:
        def consume_bar(job, res):
            consume(job, res)
            bar.advance()

        _run_jobs(fn, jobs, parallel, consume_bar)
    counts.clear()
    for gi, g in enumerate(groups):
        g.cache = store[gi]
        g.chunk = None
    desc = ", ".join(f"{k}={v!r}" for k, v in sel_kwargs.items() if v) or "all data"
    cache = VisCache(info, groups, {g.field: m.desc for g, m in zip(groups, models, strict=True)}, desc,
                     time.perf_counter() - t0)
    logger.info("load_calibrator: %r in %.2f s", cache, cache.load_seconds)
    return cache


# =========================================================================== solving


@dataclass
class _SpwResult:
    params: np.ndarray
    paramerr: np.ndarray
    snr: np.ndarray
    flag: np.ndarray
    refant: np.ndarray
    times: np.ndarray
    field: np.ndarray
    scan: np.ndarray
    obs: np.ndarray
    chan_freq: np.ndarray
    chan_width: np.ndarray
    no_data: np.ndarray          # bool[n_int] interval without any data
    not_converged: int = 0
    stats: dict | None = None    # CASA-like solvestats of this spw


def _solvestats(status: np.ndarray, used: np.ndarray) -> dict:
    """CASA's ``solvestats`` for one spw from the kernel status (interval, ant, chan, par):
    counts per antenna and par of solutions expected, with unflagged data, surviving
    minblperant, surviving minsnr, and intervals used as refant; plus totals."""
    n_ant = status.shape[1]
    gates = {
        "expected": np.ones(status.shape, bool),
        "data_unflagged": status != kernels.STATUS_NO_DATA,
        "above_minblperant": (status != kernels.STATUS_NO_DATA) & (status != kernels.STATUS_MINBLPERANT),
        "above_minsnr": status == kernels.STATUS_OK,
    }
    per_ant = {k: v.sum(axis=(0, 2)) for k, v in gates.items()}  # (ant, par)
    refs = np.bincount(used[used >= 0], minlength=n_ant)
    out: dict = {k: v.sum(axis=0).tolist() for k, v in per_ant.items()}
    out["used_as_refant"] = int(refs.sum())
    for a in range(n_ant):
        out[f"ant{a}"] = {k: v[a].tolist() for k, v in per_ant.items()}
        out[f"ant{a}"]["used_as_refant"] = int(refs[a])
    return out


def _solnorm_g(gains: np.ndarray, flag: np.ndarray) -> None:
    """CASA 6.7 G/T solnorm: one factor per spw, sqrt(mean |g|^2) over every unflagged
    solution (all intervals, antennas and pols; measured on casatasks 6.7.0.31 output)."""
    good = ~flag
    if good.any():
        norm = float(np.sqrt(np.mean(np.abs(gains[good]) ** 2)))
        if norm > 0 and np.isfinite(norm):
            gains /= norm


def _solnorm_b(gains: np.ndarray, flag: np.ndarray) -> None:
    """CASA BJones normalisation per (interval, ant, par) over good channels: divide by a
    factor of phase arg(sum B/|B|) and amplitude sqrt(mean |B|^2)."""
    amp = np.abs(gains)
    good = ~flag & (amp > 0)
    ph = np.where(good, gains / np.where(amp > 0, amp, 1), 0).sum(axis=2, keepdims=True)
    n = good.sum(axis=2, keepdims=True)
    a = np.sqrt(np.where(good, amp ** 2, 0).sum(axis=2, keepdims=True) / np.maximum(n, 1))
    pha = np.abs(ph)
    fac = np.where((n > 0) & (pha > 0) & (a > 0), a * ph / np.where(pha > 0, pha, 1), 1.0)
    gains /= fac


def _fillgaps(gains: np.ndarray, flag: np.ndarray, max_gap: int) -> None:
    """Interpolate interior flagged channel runs of length <= max_gap (amp and phase)."""
    n_int, n_ant, n_ch, n_par = gains.shape
    for it in range(n_int):
        for a in range(n_ant):
            for j in range(n_par):
                f = flag[it, a, :, j]
                if not f.any() or f.all():
                    continue
                good = np.flatnonzero(~f)
                c = good[0]
                for nxt in good[1:]:
                    gap = nxt - c - 1
                    if 0 < gap <= max_gap:
                        g0, g1 = gains[it, a, c, j], gains[it, a, nxt, j]
                        dph = np.angle(g1 / g0) if g0 != 0 else 0.0
                        for k in range(1, gap + 1):
                            x = k / (gap + 1)
                            amp = (1 - x) * abs(g0) + x * abs(g1)
                            gains[it, a, c + k, j] = amp * np.exp(1j * (np.angle(g0) + x * dph))
                            flag[it, a, c + k, j] = False
                    c = nxt


def _finalize_spw(p: _Params, acc: _Acc, st: _Solved) -> _SpwResult:
    """Times, refant, statistics, solnorm and fillgaps of one spw's kernel solutions."""
    w = acc.wt
    no_data = ~(w > 0).any(axis=(1, 2, 3))
    n_int = len(acc.intervals)
    times = np.array([(acc.tsum[i] / acc.tcnt[i] + _T_REF) if acc.tcnt[i] > 0 else iv.t_first
                      for i, iv in enumerate(acc.intervals)])
    meta = dict(
        field=np.array([iv.field for iv in acc.intervals], np.int32),
        scan=np.array([iv.scan for iv in acc.intervals], np.int32),
        obs=np.array([iv.obs for iv in acc.intervals], np.int32),
    )
    not_conv = int(st.not_converged.sum())
    if p.kind == "K":
        flag = st.flag
        cf = np.array([float(np.sum(acc.out_freq * acc.out_width) / max(np.sum(acc.out_width), 1e-30))])
        status = np.where(flag, kernels.STATUS_NO_DATA, kernels.STATUS_OK)
        return _SpwResult(st.gains, st.paramerr, np.zeros_like(st.paramerr), flag,
                          np.full(n_int, -1, np.int32), times, **meta,
                          chan_freq=cf, chan_width=np.array([np.sum(acc.out_width)]),
                          no_data=no_data, not_converged=not_conv,
                          stats=_solvestats(status, st.used))
    order = np.argsort(times, kind="stable")
    g, flag = st.gains, st.flag
    used = apply_flex_refant(g, flag, p.refant, order=order)
    stats = _solvestats(st.status, used)
    if not p.refant.user:
        used[:] = -1  # CASA: refant='' writes ANTENNA2 = -1 (phases still relative to ant 0)
    if p.solnorm:
        (_solnorm_b if p.kind == "B" else _solnorm_g)(g, flag)
    if p.kind == "B" and p.fillgaps > 0:
        _fillgaps(g, flag, p.fillgaps)
    return _SpwResult(g, st.paramerr, st.snr, flag, used, times, **meta, chan_freq=acc.out_freq,
                      chan_width=acc.out_width, no_data=no_data, not_converged=not_conv,
                      stats=stats)


def _warn_summary(p: _Params, results: dict[int, _SpwResult], info: MSInfo) -> None:
    """One aggregated warning per kind of soft problem."""
    from fastcal.ms.info import format_mjd_s

    empty = [(spw, r.times[i]) for spw, r in results.items() for i in np.flatnonzero(r.no_data)]
    total = sum(r.times.size for r in results.values())
    if empty and len(empty) < total:
        shown = ", ".join(f"spw {s} at {format_mjd_s(t)}" for s, t in empty[:5])
        warnings.warn(f"{len(empty)} of {total} solution intervals have no unflagged data and are "
                      f"flagged ({shown}{', ...' if len(empty) > 5 else ''})", stacklevel=3)
    if p.kind != "K":
        names = info.antenna_names
        n_tot = n_none = n_alt = 0
        for r in results.values():
            has = ~r.no_data
            n_tot += int(has.sum())
            n_none += int((has & (r.refant < 0)).sum())
            if p.refant.user:
                n_alt += int((has & (r.refant >= 0) & (r.refant != p.refant.user[0])).sum())
        if n_alt:
            alts = sorted({names[a] for r in results.values() for a in r.refant
                           if a >= 0 and a != p.refant.user[0]})
            warnings.warn(f"refant {names[p.refant.user[0]]} has no usable solution in {n_alt} of "
                          f"{n_tot} intervals; {'flagged (strict)' if p.refant.mode == 'strict' else 'used ' + ', '.join(alts)}",
                          stacklevel=3)
        if n_none and p.refant.mode == "flex" and p.refant.user:
            warnings.warn(f"no usable reference antenna in {n_none} of {n_tot} intervals "
                          f"(phases not referenced there)", stacklevel=3)
    nc = sum(r.not_converged for r in results.values())
    if nc:
        warnings.warn(f"the solver did not converge in {nc} (interval, channel) solves", stacklevel=3)


def _run_solve(vis: Any, caltable: Any, p: _Params, sel_kwargs: dict, model: ModelArg,
               overwrite: bool) -> CalTable:
    """Shared driver body after parameter validation."""
    t0 = time.perf_counter()
    if isinstance(vis, VisCache):
        if model is not None:
            raise ParameterError("model= cannot be given with a VisCache (the model was fixed by "
                                 "load_calibrator)")
        info = vis.info
        groups = _filter_cache(vis, sel_kwargs)
        models = None
    else:
        info = open_ms(vis)
        explicit = _parse_model_arg(info, model)
        has_col = "MODEL_DATA" in info.columns
        info, groups = _open_groups(info, sel_kwargs, (), p.chunk_bytes)
        models = _models_for_groups(info, explicit, groups, has_col)
        if _extra_columns(models):  # plan again with MODEL_DATA / UVW among the read columns
            info, groups = _open_groups(info, sel_kwargs, _extra_columns(models), p.chunk_bytes)
            models = _models_for_groups(info, explicit, groups, has_col)
    p.specs = _prepare_pre_apply(info, *p.apply_args, spws=sorted({g.spw for g in groups}))
    if p.specs:
        interp_mod = importlib.import_module("fastcal.interp")
        for g in groups:
            interp_mod.check_coverage(p.specs, info, spw_id=g.spw, field_id=g.field,
                                      observation_id=g.obs, times=g.utimes)
    n_ant = len(info.antennas)
    members = [SpanMember(g.obs, g.scan, g.field, g.spw, g.utimes) for g in groups]
    intervals, slots = assign_intervals(members, p.solint, p.combine)
    accs, local = _build_accs(p.kind, groups, intervals, p.solint, n_ant * (n_ant - 1) // 2)
    t_read = time.perf_counter()
    if models is None:
        jobs = _cache_jobs(groups, slots, local, intervals)

        def run(job: _RedJob) -> tuple:
            return _run_cache_job(info, p, groups, slots, accs, local, job, n_ant)
    else:
        jobs = _ms_jobs(info, p, groups, slots, accs, local, intervals, models)

        def run(job: _RedJob) -> tuple:
            return _run_ms_job(job, n_ant)
    states = _reduce_and_solve(p, accs, jobs, run, n_ant)
    t_red = time.perf_counter()
    results = {spw: _finalize_spw(p, accs[spw], states[spw]) for spw in sorted(accs)}
    if all(r.no_data.all() for r in results.values()):
        raise SolveError(f"no unflagged cross-correlation data in the selection "
                         f"({', '.join(f'{k}={v!r}' for k, v in sel_kwargs.items() if v) or 'all data'}) "
                         f"of {info.path}: every sample is flagged or has zero weight")
    if p.refant.mode == "strict" and all(
            (r.refant < 0)[~r.no_data].all() for r in results.values()):
        raise SolveError(f"refantmode='strict': refant {info.antenna_names[p.refant.user[0]]} "
                         f"has no usable solution in any interval; use refantmode='flex' or "
                         f"another refant")
    _warn_summary(p, results, info)
    tab = _to_caltable(p, results, info)
    if caltable is not None:
        tab.write(os.fspath(caltable), overwrite=overwrite)
    logger.info("solve %s: %d intervals, %d spws; reduce+solve %.2f s, finish %.2f s, total %.2f s",
                p.kind, len(intervals), len(results), t_red - t_read,
                time.perf_counter() - t_red, time.perf_counter() - t0)
    return tab


_VISCAL = {"G": "G Jones", "T": "T Jones", "B": "B Jones", "K": "K Jones"}


def _to_caltable(p: _Params, results: dict[int, _SpwResult], info: MSInfo) -> CalTable:
    params, flags, perrs, snrs = {}, {}, {}, {}
    for spw, r in results.items():
        params[spw] = r.params
        flags[spw] = r.flag
        perrs[spw] = r.paramerr
        snrs[spw] = r.snr if p.kind != "K" else None
    snr_arg = None if p.kind == "K" else snrs
    return CalTable.from_solutions(
        _VISCAL[p.kind], params,
        times={s: r.times for s, r in results.items()},
        ms=info.path,
        chan_freq={s: r.chan_freq for s, r in results.items()},
        chan_width={s: r.chan_width for s, r in results.items()},
        refant={s: r.refant for s, r in results.items()},
        flag=flags, paramerr=perrs, snr=snr_arg, interval=0.0,
        field_id={s: r.field for s, r in results.items()},
        scan={s: r.scan for s, r in results.items()},
        obs_id={s: r.obs for s, r in results.items()},
        extra={"solvestats": {f"spw{s}": r.stats for s, r in results.items()}},
    )


def _validate_and_run(vis: Any, caltable: Any, *, model: ModelArg, apply_args: tuple,
                      sel_kwargs: dict, overwrite: bool, **options: Any) -> CalTable:
    """Open `vis` (MS path, MSInfo or VisCache), check the solve `options` (keywords of
    :func:`_validate_common`) and run the solve: the shared body of the public solvers."""
    info = vis.info if isinstance(vis, VisCache) else open_ms(vis)
    p = _validate_common(info, caltable=caltable, overwrite=overwrite, **options)
    p.apply_args = apply_args
    if not isinstance(vis, VisCache):
        vis = info
    return _run_solve(vis, caltable, p, sel_kwargs, model, overwrite)


# =========================================================================== public API


def solve_gains(
    vis: str | os.PathLike | MSInfo | VisCache,
    caltable: str | os.PathLike | None = None,
    *,
    field: Any = "",
    spw: Any = "",
    intent: Any = "",
    scan: Any = "",
    antenna: Any = "",
    timerange: Any = "",
    solint: str | float = "inf",
    combine: str | Sequence[str] = "",
    refant: Any = "",
    refantmode: str = "flex",
    minblperant: int = 4,
    minsnr: float = 3.0,
    solnorm: bool = False,
    gaintype: str = "G",
    calmode: str = "ap",
    gaintable: Any = (),
    gainfield: Any = (),
    interp: Any = (),
    spwmap: Any = (),
    model: ModelArg = None,
    chunk_bytes: int | None = None,
    parallel: bool | Any = True,
    overwrite: bool = False,
) -> CalTable:
    """Solve antenna gains (G, T) or delays (K), as CASA ``gaincal``.

    Parameters
    ----------
    vis : str, MSInfo or VisCache
        Measurement Set, or a cache from :func:`load_calibrator` (then no MS read).
    caltable : str, optional
        Output table, written atomically (CASA's format). None: only returned.
    field, spw, intent, scan, antenna, timerange : str
        CASA selection (``spw="5:4~59"`` selects channels).
    solint : str or float
        ``"inf"``, ``"int"``, ``"30s"``, ``"1min"``, ``"0.5h"`` or seconds.
    combine : str
        Subset of ``"obs,scan,field,spw"``: boundaries solution intervals may span.
    refant : str
        Priority list of reference antennas (names or ids). ``""``: phases relative to the
        first usable antenna in id order and ANTENNA2 = -1, as CASA writes.
    refantmode : {"flex", "strict"}
        See :mod:`fastcal.refant` (flex: fall back with phase continuity).
    minblperant : int
        Antennas with fewer unflagged baselines are flagged (recursively), per interval.
    minsnr : float
        Solutions with SNR <= minsnr are flagged (SNR = |g| / PARAMERR, CASA's definition).
    solnorm : bool
        Divide every solution of a spw by sqrt(mean |g|^2) over all its unflagged
        solutions (all times, antennas, pols), as CASA 6.7 does.
    gaintype : {"G", "T", "K"}
        G: one complex gain per antenna and pol; T: one per antenna for both pols;
        K: delays in ns (per spw; FFT peak as CASA, then Gauss-Newton refinement; with
        ``combine="spw"`` one multi-band delay across all spws, written under the lowest).
    calmode : {"ap", "p", "a"}
        Amplitude and phase, phase only, amplitude only (ignored for K).
    gaintable, gainfield, interp, spwmap : sequences
        Calibration applied on the fly before solving (:mod:`fastcal.interp`).
    model : float, (I, spix[, reffreq_hz]), FluxModel, or mapping field -> those, optional
        Source model. Precedence: `model` > setjy virtual model > MODEL_DATA > 1 Jy point
        source at the phase centre (CASA's default).
    chunk_bytes : int, optional
        Bytes per read block (default 16 MiB; bandpass: up to 64 MiB, so that the
        per-channel partial sums of a block stay small beside its data); memory ~
        threads x 2 x chunk_bytes.
    parallel : bool or dask.distributed.Client
        True: reduce blocks in threads (Numba kernels release the GIL); False: serially;
        a Client: as tasks on its workers (blocks are read by the workers).
    overwrite : bool
        Replace an existing `caltable` (CASA overwrites silently; fastcal refuses by default).

    Returns
    -------
    CalTable
        ``G Jones`` / ``T Jones`` / ``K Jones``: one row per (spw, interval, antenna);
        TIME = centroid of the unflagged data, INTERVAL 0, ANTENNA2 = refant used (-1 for
        K), SCAN_NUMBER/FIELD_ID of the interval's first data, spw of the lowest combined spw.
        ``table.extra["solvestats"]`` holds CASA's solvestats counts (per ``"spw<i>"``:
        expected, data_unflagged, above_minblperant, above_minsnr per par, used_as_refant;
        and the same per ``"ant<k>"``).

    Raises
    ------
    ParameterError
        Unparseable solint/combine, bad calmode/gaintype/refantmode or numbers.
    SelectionError
        Selection or refant naming nothing in the MS, or no cross-correlation data.
    CalTableError
        `caltable` exists (without overwrite), or a bad `gaintable`.
    SolveError
        Every sample of the selection is flagged; or ``refantmode="strict"`` and the
        refant has no solution anywhere.
    UnsupportedError
        Pre-apply without :mod:`fastcal.interp`; spws combined with different numbers of
        parallel hands.

    Notes
    -----
    Differences from CASA: solutions by StEFCal converged to 1e-8 (CASA: VisCalSolver2;
    same optimum); a solve that does not converge is kept with a warning (CASA drops it);
    K delays get a Gauss-Newton refinement and a PARAMERR (CASA writes 0); soft problems
    (empty intervals, refant fallbacks) are reported as one warning each.
    """
    if gaintype not in ("G", "T", "K"):
        raise ParameterError(f"gaintype={gaintype!r} is invalid; valid: 'G', 'T', 'K' "
                             f"(use solve_bandpass for 'B')")
    return _validate_and_run(
        vis, caltable, model=model, apply_args=(gaintable, gainfield, interp, spwmap),
        sel_kwargs=_selection_kwargs(field, spw, intent, scan, antenna, timerange),
        kind=gaintype, solint=solint, combine=combine, refant=refant, refantmode=refantmode,
        minblperant=minblperant, minsnr=minsnr, solnorm=solnorm, calmode=calmode, fillgaps=0,
        chunk_bytes=chunk_bytes, parallel=parallel, overwrite=overwrite)


def solve_delays(vis: Any, caltable: Any = None, **kwargs: Any) -> CalTable:
    """``solve_gains(..., gaintype="K")``: antenna delays in ns (``K Jones``)."""
    if kwargs.setdefault("gaintype", "K") != "K":
        raise ParameterError(f"solve_delays: gaintype={kwargs['gaintype']!r}; only 'K' is valid")
    return solve_gains(vis, caltable, **kwargs)


def solve_bandpass(
    vis: str | os.PathLike | MSInfo | VisCache,
    caltable: str | os.PathLike | None = None,
    *,
    field: Any = "",
    spw: Any = "",
    intent: Any = "",
    scan: Any = "",
    antenna: Any = "",
    timerange: Any = "",
    solint: str | float = "inf",
    combine: str | Sequence[str] = "scan",
    refant: Any = "",
    refantmode: str = "flex",
    minblperant: int = 4,
    minsnr: float = 3.0,
    solnorm: bool = False,
    bandtype: str = "B",
    fillgaps: int = 0,
    gaintable: Any = (),
    gainfield: Any = (),
    interp: Any = (),
    spwmap: Any = (),
    model: ModelArg = None,
    chunk_bytes: int | None = None,
    parallel: bool | Any = True,
    overwrite: bool = False,
) -> CalTable:
    """Solve a per-channel bandpass (``B Jones``), as CASA ``bandpass`` with bandtype B.

    Parameters
    ----------
    solint : str
        Time part as in :func:`solve_gains`; optional frequency part ``"inf,8ch"`` or
        ``"inf,2MHz"`` (solution channels = averages of that many channels / that width;
        default every channel).
    combine : str
        Default ``"scan"`` (CASA's bandpass default). ``"spw"`` is refused.
    solnorm : bool
        Per antenna, pol and interval, divide by a factor whose phase is that of
        sum(B/|B|) and whose amplitude is sqrt(mean |B|^2) over unflagged channels (CASA).
    bandtype : {"B"}
        Only "B" (BPOLY is not supported).
    fillgaps : int
        Interpolate interior runs of at most this many flagged channels (linear in
        amplitude and phase) and unflag them (CASA).

    Other parameters, return value and errors as :func:`solve_gains` (calmode is "ap").
    The table's SPECTRAL_WINDOW holds the solution channels (their mean frequency and
    summed width).
    """
    if bandtype != "B":
        raise UnsupportedError(f"bandtype={bandtype!r} is not supported; valid: 'B'")
    return _validate_and_run(
        vis, caltable, model=model, apply_args=(gaintable, gainfield, interp, spwmap),
        sel_kwargs=_selection_kwargs(field, spw, intent, scan, antenna, timerange),
        kind="B", solint=solint, combine=combine, refant=refant, refantmode=refantmode,
        minblperant=minblperant, minsnr=minsnr, solnorm=solnorm, calmode="ap",
        fillgaps=fillgaps, chunk_bytes=chunk_bytes, parallel=parallel, overwrite=overwrite)


# =========================================================================== CLI


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("vis", help="Measurement Set")
    parser.add_argument("caltable", help="output calibration table")
    for name in ("field", "spw", "intent", "scan", "antenna", "timerange", "refant"):
        parser.add_argument(f"--{name}", default="", help=f"CASA {name} (default: all)")
    parser.add_argument("--refantmode", default="flex", choices=("flex", "strict"))
    parser.add_argument("--minblperant", type=int, default=4)
    parser.add_argument("--minsnr", type=float, default=3.0)
    parser.add_argument("--solnorm", action="store_true")
    parser.add_argument("--gaintable", nargs="*", default=[], help="tables to pre-apply")
    parser.add_argument("--gainfield", nargs="*", default=[])
    parser.add_argument("--interp", nargs="*", default=[])
    parser.add_argument("--spwmap", nargs="*", default=[], type=lambda s: [int(x) for x in s.split(",") if x])
    parser.add_argument("--overwrite", action="store_true", help="replace an existing caltable")
    parser.add_argument("--serial", action="store_true", help="no threads")


def add_cli_arguments(parser: argparse.ArgumentParser, task: str = "gaincal") -> None:
    """Add the arguments of ``fastcal gaincal`` (task="gaincal") or ``fastcal bandpass``."""
    if task not in ("gaincal", "bandpass"):
        raise ValueError(f"task={task!r}; expected 'gaincal' or 'bandpass'")
    _add_common(parser)
    if task == "gaincal":
        parser.add_argument("--solint", default="inf")
        parser.add_argument("--combine", default="")
        parser.add_argument("--gaintype", default="G", choices=("G", "T", "K"))
        parser.add_argument("--calmode", default="ap", choices=("ap", "p", "a"))
    else:
        parser.add_argument("--solint", default="inf")
        parser.add_argument("--combine", default="scan")
        parser.add_argument("--fillgaps", type=int, default=0)
    parser.set_defaults(solve_task=task)


def run_from_args(args: argparse.Namespace) -> int:
    """Run the solve described by parsed CLI arguments; print a one-line summary."""
    common = dict(field=args.field, spw=args.spw, intent=args.intent, scan=args.scan,
                  antenna=args.antenna, timerange=args.timerange, solint=args.solint,
                  combine=args.combine, refant=args.refant, refantmode=args.refantmode,
                  minblperant=args.minblperant, minsnr=args.minsnr, solnorm=args.solnorm,
                  gaintable=args.gaintable, gainfield=args.gainfield, interp=args.interp,
                  spwmap=args.spwmap, parallel=not args.serial, overwrite=args.overwrite)
    t0 = time.perf_counter()
    if getattr(args, "solve_task", "gaincal") == "bandpass":
        tab = solve_bandpass(args.vis, args.caltable, fillgaps=args.fillgaps, **common)
    else:
        tab = solve_gains(args.vis, args.caltable, gaintype=args.gaintype, calmode=args.calmode,
                          **common)
    n_flag = int(np.count_nonzero(tab.flag))
    print(f"wrote {args.caltable}: {tab.vis_cal}, {tab.nrow} rows, spws {[int(s) for s in tab.spw_ids]}, "
          f"{n_flag}/{tab.flag.size} flagged, {time.perf_counter() - t0:.2f} s")
    return 0
