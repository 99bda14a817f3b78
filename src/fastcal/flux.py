"""Flux-density models: ``setjy`` virtual models, MODEL_DATA, and ALMA ``flux.csv`` files.

A *virtual model* is a small record stored in the Measurement Set's main-table keyword
``FASTCAL_MODELS`` (see :data:`MODELS_KEYWORD`); it never touches any column. The solvers
ask :func:`virtual_model` for the model of a field (and spw) and evaluate it on the fly:

* point source at the phase centre: :meth:`FluxModel.spectrum` -> the parallel hands per
  channel (``XX = I + Q``, ``YY = I - Q`` for linear feeds, ``RR = I + V``, ``LL = I - V``
  for circular feeds);
* resolved (Gaussian or uniform elliptical disk) and/or offset source:
  :meth:`FluxModel.visibilities` -> every correlation per row and channel
  (kernels in :mod:`fastcal.kernels.model`).

Spectrum (CASA ``setjy(standard='manual')``)::

    S(nu) = S0 * (nu / nu0) ** (spix[0] + spix[1] * log10(nu / nu0) + spix[2] * log10(nu / nu0)**2 ...)

applied to every Stokes component (I, Q, U, V) alike.

Keyword layout (a casacore record)::

    FASTCAL_MODELS = {
        "format": "fastcal-models", "version": 1,
        "models": {"f<field>_all" | "f<field>_s<spw>": {model record}, ...},
    }

with model records holding ``field_id, field_name, spw_id (-1 = every spw), stokes (4,)
Jy, reffreq_hz, spix (n,), shape ('point' | 'gaussian' | 'disk'), major_arcsec,
minor_arcsec, pa_deg, offset_arcsec (2,) (RA*cos(dec), Dec), standard``. A spw-specific
model of a field overrides its every-spw model. :func:`clear_models` removes them
(CASA's ``delmod``).
"""

from __future__ import annotations

import csv
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import casacore.tables as ct
import numpy as np

from fastcal.errors import FastcalError, ParameterError, SelectionError, UnsupportedError
from fastcal.ms.info import MSInfo, ms_lock, open_ms
from fastcal.ms.select import parse_selection

__all__ = [
    "FLUX_CSV_COLUMNS",
    "MODELS_KEYWORD",
    "SUPPORTED_STANDARDS",
    "FluxEntry",
    "FluxModel",
    "SpwModelSet",
    "add_cli_arguments",
    "clear_models",
    "entries_from_fluxscale",
    "list_models",
    "parse_frequency",
    "read_flux_csv",
    "run_from_args",
    "setjy",
    "setjy_from_csv",
    "spectral_factor",
    "virtual_model",
    "write_flux_csv",
]

logger = logging.getLogger(__name__)

#: Main-table keyword holding fastcal's virtual models.
MODELS_KEYWORD = "FASTCAL_MODELS"
#: Values of ``standard`` that fastcal implements.
SUPPORTED_STANDARDS = ("manual", "fluxscale")
#: Model shapes.
SHAPES = ("point", "gaussian", "disk")

_ARCSEC = math.pi / (180.0 * 3600.0)
_LINEAR_PAR = {9: (1.0, 1.0), 12: (1.0, -1.0)}  # XX = I + Q, YY = I - Q  (coefficients of I, Q)
_CIRC_PAR = {5: (1.0, 1.0), 8: (1.0, -1.0)}  # RR = I + V, LL = I - V  (coefficients of I, V)
_PARALLEL = (1, 5, 8, 9, 12, 21, 24)


# --------------------------------------------------------------------------- frequencies

_FREQ_UNITS = {"hz": 1.0, "khz": 1e3, "mhz": 1e6, "ghz": 1e9, "thz": 1e12}


def parse_frequency(value: Any, name: str = "reffreq") -> float:
    """Frequency in Hz from ``"100GHz"``, ``"230.5 GHz"``, ``"1e11Hz"``, ``"1e11"`` or a number (Hz).

    Raises
    ------
    ParameterError
        Not a positive frequency.
    """
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        hz = float(value)
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*([-+0-9.eE]+)\s*([a-zA-Z]*)\s*", value)
        unit = m.group(2).lower() if m else ""
        if not m or unit not in ("", *_FREQ_UNITS):
            raise ParameterError(
                f"{name}={value!r} is not a frequency; valid: a number (Hz) or a string such as "
                f"'100GHz', '230.5MHz', '1e11Hz'"
            )
        try:
            hz = float(m.group(1)) * _FREQ_UNITS.get(unit, 1.0)
        except ValueError:
            raise ParameterError(f"{name}={value!r} is not a frequency; valid: e.g. '100GHz'") from None
    else:
        raise ParameterError(f"{name}={value!r} is not a frequency; valid: a number (Hz) or e.g. '100GHz'")
    if not math.isfinite(hz) or hz <= 0:
        raise ParameterError(f"{name}={value!r} must be a positive frequency")
    return hz


def spectral_factor(freq_hz: Any, reffreq_hz: float, spix: Sequence[float]) -> np.ndarray:
    """``(nu/nu0) ** (spix[0] + spix[1] log10(nu/nu0) + ...)``, float64 of the shape of `freq_hz`.

    The curvature terms use log10, as CASA's setjy (checked: MODEL_DATA written by casatasks
    6.7 setjy with ``spix=[-0.7, 0.5]`` matches this to float32 precision, not the natural-log
    form) and as fluxscale's fit, so fluxscale's ``spidx[1:]`` can be passed as ``spix``.
    """
    f = np.asarray(freq_hz, dtype=np.float64)
    x = np.log10(f / reffreq_hz)
    expo = np.zeros_like(x)
    for k, a in enumerate(spix):
        expo += float(a) * x**k
    return 10.0 ** (expo * x)


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class FluxModel:
    """A field's flux-density model (one spw or every spw).

    Attributes
    ----------
    field_id : int
    field_name : str
    spw_id : int
        -1: valid for every spw.
    stokes : (4,) float64
        I, Q, U, V in Jy at `reffreq_hz`.
    reffreq_hz : float
        Reference frequency nu0 (Hz).
    spix : tuple of float
        Spectral index and curvature terms (CASA ``spix``; curvature in log10(nu/nu0)).
    shape : {"point", "gaussian", "disk"}
    major_arcsec, minor_arcsec : float
        FWHM (Gaussian) or diameter (disk), arcsec; 0 for a point.
    pa_deg : float
        Position angle of the major axis, degrees east of north.
    offset_arcsec : (float, float)
        Source offset from the phase centre (RA * cos(Dec), Dec), arcsec.
    standard : str
        Where the model came from ("manual", "fluxscale", "flux.csv").
    """

    field_id: int
    field_name: str
    spw_id: int = -1
    stokes: tuple[float, float, float, float] = (1.0, 0.0, 0.0, 0.0)
    reffreq_hz: float = 1e9
    spix: tuple[float, ...] = ()
    shape: str = "point"
    major_arcsec: float = 0.0
    minor_arcsec: float = 0.0
    pa_deg: float = 0.0
    offset_arcsec: tuple[float, float] = (0.0, 0.0)
    standard: str = "manual"

    # ---- properties
    @property
    def is_point(self) -> bool:
        """True for an unresolved source at the phase centre (no uvw needed)."""
        return self.shape == "point" and self.offset_arcsec == (0.0, 0.0)

    @property
    def flux_i(self) -> float:
        return float(self.stokes[0])

    def flux(self, freq_hz: Any) -> np.ndarray:
        """Stokes I,Q,U,V (Jy) at `freq_hz`: float64 ``(..., 4)``."""
        fac = spectral_factor(freq_hz, self.reffreq_hz, self.spix)
        return fac[..., None] * np.asarray(self.stokes, dtype=np.float64)

    # ---- evaluation
    def spectrum(self, freq_hz: Any, corr_types: Sequence[int]) -> np.ndarray:
        """Zero-spacing model of the parallel hands.

        Parameters
        ----------
        freq_hz : (n_chan,) float
            Channel frequencies, Hz.
        corr_types : sequence of int
            casacore Stokes codes of the correlation axis (XX=9, XY=10, YX=11, YY=12,
            RR=5, ..., LL=8).

        Returns
        -------
        float64 (n_chan, n_pol)
            One column per parallel hand (XX, YY, RR, LL, or I) in the order they appear in
            `corr_types`: XX = I + Q, YY = I - Q, RR = I + V, LL = I - V (Jy). For a resolved
            model this is its total flux (the visibility at u = v = 0).

        Raises
        ------
        UnsupportedError
            `corr_types` has no parallel hand.
        """
        iquv = self.flux(np.atleast_1d(freq_hz))
        cols = [_parallel_value(iquv, c) for c in corr_types if int(c) in _PARALLEL]
        if not cols:
            raise UnsupportedError(
                f"correlations {tuple(int(c) for c in corr_types)} have no parallel hand; "
                f"valid: at least one of XX(9), YY(12), RR(5), LL(8)"
            )
        return np.stack(cols, axis=-1)

    def visibilities(self, uvw: Any, freq_hz: Any, corr_types: Sequence[int]) -> np.ndarray:
        """Model visibilities of every correlation.

        Parameters
        ----------
        uvw : (n_row, 3) float
            Baseline coordinates in metres (MS UVW column).
        freq_hz : (n_chan,) float
            Channel frequencies, Hz.
        corr_types : sequence of int
            casacore Stokes codes (see :meth:`spectrum`).

        Returns
        -------
        complex64 (n_row, n_chan, n_corr)
            ``XX = I + Q, XY = U + iV, YX = U - iV, YY = I - Q`` (linear),
            ``RR = I + V, RL = Q + iU, LR = Q - iU, LL = I - V`` (circular), times the
            shape's normalised visibility (Gaussian ``exp(-pi^2 (a^2 u'^2 + b^2 v'^2) /
            (4 ln 2))``, disk ``2 J1(x)/x``) and the offset phase
            ``exp(-2 pi i (u l + v m + w (n - 1)))``.
        """
        from fastcal.kernels.model import shape_visibility

        uvw = np.ascontiguousarray(np.asarray(uvw, dtype=np.float64).reshape(-1, 3))
        freq = np.ascontiguousarray(np.atleast_1d(np.asarray(freq_hz, dtype=np.float64)))
        iquv = self.flux(freq)  # (n_chan, 4)
        corr = np.stack([_corr_value(iquv, c) for c in corr_types], axis=-1)  # (n_chan, n_corr)
        kind = SHAPES.index(self.shape)
        l_rad = self.offset_arcsec[0] * _ARCSEC
        m_rad = self.offset_arcsec[1] * _ARCSEC
        shape_vis = shape_visibility(
            uvw, freq, kind, self.major_arcsec * _ARCSEC, self.minor_arcsec * _ARCSEC,
            math.radians(self.pa_deg), l_rad, m_rad,
        )  # fmt: skip  # complex128 (n_row, n_chan)
        return (shape_vis[:, :, None] * corr[None, :, :]).astype(np.complex64)

    # ---- record conversion
    def to_record(self) -> dict[str, Any]:
        return {
            "field_id": int(self.field_id),
            "field_name": str(self.field_name),
            "spw_id": int(self.spw_id),
            "stokes": np.asarray(self.stokes, dtype=np.float64),
            "reffreq_hz": float(self.reffreq_hz),
            # casacore records cannot hold empty arrays reliably: pad with a 0 term
            "spix": np.asarray(tuple(self.spix) or (0.0,), dtype=np.float64),
            "shape": str(self.shape),
            "major_arcsec": float(self.major_arcsec),
            "minor_arcsec": float(self.minor_arcsec),
            "pa_deg": float(self.pa_deg),
            "offset_arcsec": np.asarray(self.offset_arcsec, dtype=np.float64),
            "standard": str(self.standard),
        }

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> FluxModel:
        spix = tuple(float(x) for x in np.atleast_1d(rec.get("spix", ())))
        while spix and spix[-1] == 0.0:
            spix = spix[:-1]
        off = tuple(float(x) for x in np.atleast_1d(rec.get("offset_arcsec", (0.0, 0.0))))
        return cls(
            field_id=int(rec["field_id"]),
            field_name=str(rec.get("field_name", "")),
            spw_id=int(rec.get("spw_id", -1)),
            stokes=tuple(float(x) for x in np.atleast_1d(rec["stokes"])),  # type: ignore[arg-type]
            reffreq_hz=float(rec["reffreq_hz"]),
            spix=spix,
            shape=str(rec.get("shape", "point")),
            major_arcsec=float(rec.get("major_arcsec", 0.0)),
            minor_arcsec=float(rec.get("minor_arcsec", 0.0)),
            pa_deg=float(rec.get("pa_deg", 0.0)),
            offset_arcsec=(off + (0.0, 0.0))[:2],  # type: ignore[arg-type]
            standard=str(rec.get("standard", "manual")),
        )

    def describe(self) -> str:
        i, q, u, v = self.stokes
        where = "all spws" if self.spw_id < 0 else f"spw {self.spw_id}"
        shape = self.shape if self.shape == "point" else (
            f"{self.shape} {self.major_arcsec:g}x{self.minor_arcsec:g}\" pa {self.pa_deg:g} deg"
        )
        return (f"field {self.field_id} ({self.field_name}) {where}: [I,Q,U,V] = [{i:g}, {q:g}, "
                f"{u:g}, {v:g}] Jy at {self.reffreq_hz / 1e9:g} GHz, spix {list(self.spix)}, "
                f"{shape} ({self.standard})")  # fmt: skip


def _parallel_value(iquv: np.ndarray, c: int) -> np.ndarray:
    c = int(c)
    i, q, v = iquv[..., 0], iquv[..., 1], iquv[..., 3]
    if c in _LINEAR_PAR:
        return i + _LINEAR_PAR[c][1] * q
    if c in _CIRC_PAR:
        return i + _CIRC_PAR[c][1] * v
    return i  # Stokes I, PP, QQ: the total intensity


def _corr_value(iquv: np.ndarray, c: int) -> np.ndarray:
    """Complex value of correlation `c` from Stokes (..., 4)."""
    c = int(c)
    i, q, u, v = (iquv[..., k] for k in range(4))
    table = {
        9: i + q, 10: u + 1j * v, 11: u - 1j * v, 12: i - q,
        5: i + v, 6: q + 1j * u, 7: q - 1j * u, 8: i - v,
        1: i + 0j, 2: q + 0j, 3: u + 0j, 4: v + 0j,
    }  # fmt: skip
    if c in table:
        return np.asarray(table[c], dtype=np.complex128)
    if c in (21, 24):
        return np.asarray(i, dtype=np.complex128)
    raise UnsupportedError(f"correlation type {c} is not supported by flux models; valid: 1-12, 21, 24")


# --------------------------------------------------------------------------- keyword I/O


def _read_keyword(path: str) -> dict[str, Any]:
    with ms_lock(path), ct.table(path, ack=False) as t:
        if MODELS_KEYWORD not in t.fieldnames():
            return {}
        rec = t.getkeyword(MODELS_KEYWORD)
    models = rec.get("models", {}) if isinstance(rec, dict) else {}
    return dict(models) if isinstance(models, dict) else {}


def _write_keyword(path: str, models: Mapping[str, Any]) -> None:
    with ms_lock(path):
        try:
            t = ct.table(path, readonly=False, ack=False)
        except RuntimeError as exc:
            raise FastcalError(f"{path}: cannot open the Measurement Set for writing ({exc})") from exc
        try:
            if models:
                t.putkeyword(MODELS_KEYWORD, {"format": "fastcal-models", "version": 1,
                                              "models": dict(models)})  # fmt: skip
            elif MODELS_KEYWORD in t.fieldnames():
                t.removekeyword(MODELS_KEYWORD)
            t.flush()
        finally:
            t.close()
    _CACHE.pop(path, None)


def _model_key(field_id: int, spw_id: int) -> str:
    return f"f{field_id}_all" if spw_id < 0 else f"f{field_id}_s{spw_id}"


_CACHE: dict[str, tuple[tuple, dict[str, FluxModel]]] = {}


def _table_dat_signature(path: str) -> tuple:
    try:
        st = os.stat(os.path.join(path, "table.dat"))
    except OSError:
        return ()
    return (st.st_size, st.st_mtime_ns)


def _ms_path(vis: str | os.PathLike | MSInfo) -> str:
    """Absolute path of an MS without reading its index columns (open_ms only for errors)."""
    if isinstance(vis, MSInfo):
        return vis.path
    path = os.path.abspath(os.fspath(vis))
    if os.path.isfile(os.path.join(path, "table.dat")) and os.path.isdir(os.path.join(path, "ANTENNA")):
        return path
    return open_ms(path).path  # raises MSNotFoundError / NotAnMSError with the right message


def list_models(vis: str | os.PathLike | MSInfo) -> dict[str, FluxModel]:
    """Every virtual model stored in `vis`, keyed ``f<field>_all`` / ``f<field>_s<spw>``."""
    path = _ms_path(vis)
    sig = _table_dat_signature(path)
    hit = _CACHE.get(path)
    if hit is not None and hit[0] == sig:
        return dict(hit[1])
    out = {}
    for key, rec in _read_keyword(path).items():
        try:
            out[key] = FluxModel.from_record(rec)
        except (KeyError, TypeError, ValueError) as exc:
            logger.warning("%s: ignoring malformed %s entry %r (%s)", path, MODELS_KEYWORD, key, exc)
    _CACHE[path] = (sig, out)
    return dict(out)


def virtual_model(info: str | os.PathLike | MSInfo, field_id: int, spw_id: int | None = None):
    """The setjy model of a field, or None when it has none (the solver then falls back to
    MODEL_DATA or a 1 Jy point source).

    Parameters
    ----------
    info : MSInfo or path
    field_id : int
    spw_id : int, optional
        The spw being solved. A spw-specific model overrides the field's every-spw model.
        Without `spw_id`, a field that only has spw-specific models gets a
        :class:`SpwModelSet` that picks the spw's model from the frequencies it is given.

    Returns
    -------
    FluxModel, SpwModelSet or None
    """
    models = list_models(info)
    field_id = int(field_id)
    if spw_id is not None:
        return models.get(_model_key(field_id, int(spw_id))) or models.get(_model_key(field_id, -1))
    per_spw = {m.spw_id: m for m in models.values() if m.field_id == field_id and m.spw_id >= 0}
    base = models.get(_model_key(field_id, -1))
    if not per_spw:
        return base
    msinfo = open_ms(info)
    return SpwModelSet(per_spw, base, {s: (float(np.min(msinfo.spws[s].chan_freq)),
                                           float(np.max(msinfo.spws[s].chan_freq)))
                                       for s in per_spw if s < len(msinfo.spws)})  # fmt: skip


@dataclass(frozen=True)
class SpwModelSet:
    """Per-spw models of one field, chosen by frequency (see :func:`virtual_model`)."""

    models: Mapping[int, FluxModel]
    default: FluxModel | None
    ranges: Mapping[int, tuple[float, float]]

    @property
    def is_point(self) -> bool:
        ms = list(self.models.values()) + ([self.default] if self.default else [])
        return all(m.is_point for m in ms)

    def pick(self, freq_hz: Any) -> FluxModel:
        f = np.atleast_1d(np.asarray(freq_hz, dtype=np.float64))
        mid = float(np.median(f))
        for s, (lo, hi) in self.ranges.items():
            if lo - 1.0 <= mid <= hi + 1.0:
                return self.models[s]
        if self.default is not None:
            return self.default
        raise ParameterError(
            f"no flux model of field {next(iter(self.models.values())).field_id} covers "
            f"{mid / 1e9:.6g} GHz; models exist for spws {sorted(self.models)}; pass spw_id"
        )

    def spectrum(self, freq_hz: Any, corr_types: Sequence[int]) -> np.ndarray:
        return self.pick(freq_hz).spectrum(freq_hz, corr_types)

    def visibilities(self, uvw: Any, freq_hz: Any, corr_types: Sequence[int]) -> np.ndarray:
        return self.pick(freq_hz).visibilities(uvw, freq_hz, corr_types)


def clear_models(vis: str | os.PathLike | MSInfo, field: Any = None, spw: Any = None) -> int:
    """Remove virtual models (CASA ``delmod(otf=True)``); MODEL_DATA is left alone.

    Parameters
    ----------
    vis : path or MSInfo
    field, spw : selection, optional
        Only models of these fields (and these spws' spw-specific models); default all.

    Returns
    -------
    int
        Number of models removed.
    """
    info = open_ms(vis)
    sel = parse_selection(info, field=_none_if_empty(field), spw=_none_if_empty(spw))
    stored = _read_keyword(info.path)
    keep = {}
    for key, rec in stored.items():
        fid, sid = int(rec.get("field_id", -1)), int(rec.get("spw_id", -1))
        hit_f = sel.field_ids is None or fid in sel.field_ids
        hit_s = sel.spw_ids is None or sid in sel.spw_ids
        if not (hit_f and hit_s):
            keep[key] = rec
    removed = len(stored) - len(keep)
    if removed:
        _write_keyword(info.path, keep)
    logger.info("%s: removed %d virtual model(s) from %s", info.path, removed, MODELS_KEYWORD)
    return removed


def _none_if_empty(value: Any) -> Any:
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    if isinstance(value, (list, tuple)) and len(value) == 0:
        return None
    return value


# --------------------------------------------------------------------------- setjy


def _stokes(fluxdensity: Any) -> tuple[float, float, float, float]:
    vals = np.atleast_1d(np.asarray(fluxdensity, dtype=np.float64)).ravel()
    if vals.size < 1 or vals.size > 4 or not np.all(np.isfinite(vals)):
        raise ParameterError(
            f"fluxdensity={fluxdensity!r} is invalid; valid: I or [I, Q, U, V] in Jy (finite)"
        )
    out = np.zeros(4)
    out[: vals.size] = vals
    if out[0] < 0:
        raise ParameterError(
            f"fluxdensity={fluxdensity!r}: Stokes I must be >= 0 (CASA's -1 'use the standard' "
            f"is not supported: fastcal implements standard={'/'.join(SUPPORTED_STANDARDS)})"
        )
    if math.sqrt(out[1] ** 2 + out[2] ** 2 + out[3] ** 2) > out[0] * (1 + 1e-9):
        raise ParameterError(f"fluxdensity={fluxdensity!r}: polarised flux exceeds Stokes I")
    return tuple(float(x) for x in out)  # type: ignore[return-value]


def _spix(spix: Any) -> tuple[float, ...]:
    if spix is None:
        return ()
    vals = np.atleast_1d(np.asarray(spix, dtype=np.float64)).ravel()
    if not np.all(np.isfinite(vals)):
        raise ParameterError(f"spix={spix!r} must be finite numbers [alpha, beta, ...]")
    vals = list(vals)
    while vals and vals[-1] == 0.0:
        vals.pop()
    return tuple(float(x) for x in vals)


def _shape_params(shape: str, major: Any, minor: Any, pa: Any) -> tuple[str, float, float, float]:
    shape = str(shape).lower()
    if shape not in SHAPES:
        raise ParameterError(f"shape={shape!r} is not supported; valid: {', '.join(SHAPES)}")
    if shape == "point":
        return shape, 0.0, 0.0, 0.0
    maj = _angle_arcsec(major, "majoraxis")
    mnr = _angle_arcsec(minor, "minoraxis") if minor not in (None, "") else 0.0
    if mnr == 0.0:  # not given: circular
        mnr = maj
    if maj <= 0 or mnr <= 0:
        raise ParameterError(f"shape={shape!r} needs majoraxis > 0 and minoraxis > 0 (got {major!r}, {minor!r})")
    pa_deg = float(_angle_deg(pa))
    if mnr > maj:  # keep major >= minor: the major axis is then perpendicular to `pa`
        maj, mnr, pa_deg = mnr, maj, pa_deg + 90.0
    return shape, maj, mnr, pa_deg


_ANGLE_UNITS = {"arcsec": 1.0, "arcmin": 60.0, "deg": 3600.0, "rad": 180.0 * 3600.0 / math.pi,
                "mas": 1e-3, "": 1.0}  # fmt: skip


def _angle(value: Any, name: str, bare_unit: str) -> float:
    """Angle in arcsec; numbers and unit-less strings are in `bare_unit`."""
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        number, unit = float(value), bare_unit
    else:
        m = re.fullmatch(r"\s*([-+0-9.eE]+)\s*([a-zA-Z]*)\s*", str(value))
        unit = (m.group(2).lower() or bare_unit) if m else ""
        try:
            number = float(m.group(1)) if m and unit in _ANGLE_UNITS else math.nan
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise ParameterError(f"{name}={value!r} is not an angle; valid: a number ({bare_unit}) or "
                                 f"a string such as '1.5arcsec', '30deg'")  # fmt: skip
    return number * _ANGLE_UNITS[unit]


def _angle_arcsec(value: Any, name: str) -> float:
    return _angle(value, name, "arcsec")


def _angle_deg(value: Any) -> float:
    if value is None or (isinstance(value, str) and not value.strip()):
        return 0.0
    return _angle(value, "positionangle", "deg") / 3600.0


def setjy(
    vis: str | os.PathLike | MSInfo,
    field: Any = "",
    spw: Any = "",
    *,
    fluxdensity: Any = 1.0,
    spix: Any = (),
    reffreq: Any = "1GHz",
    standard: str = "manual",
    usescratch: bool = False,
    shape: str = "point",
    majoraxis: Any = 0.0,
    minoraxis: Any = 0.0,
    positionangle: Any = 0.0,
    offset_arcsec: Sequence[float] = (0.0, 0.0),
    fluxdict: Any = None,
) -> dict[int, list[FluxModel]]:
    """Set the flux-density model of calibrator fields (CASA ``setjy``).

    Parameters
    ----------
    vis : path or MSInfo
    field : str, int or sequence
        Field names, ids or globs (``fastcal.ms.parse_selection`` syntax); "" = every field.
    spw : str, int or sequence
        "" = one model valid for every spw; otherwise one model per selected spw (channel
        selections are ignored: a model covers the whole spw).
    fluxdensity : float or [I, Q, U, V]
        Jy at `reffreq` (``standard='manual'``).
    spix : sequence of float
        ``[alpha, beta, ...]``: ``S = S0 (nu/nu0)^(alpha + beta log10(nu/nu0) + ...)`` (CASA).
    reffreq : str or float
        nu0, e.g. ``"100GHz"`` (CASA default ``"1GHz"``) or Hz.
    standard : {"manual", "fluxscale"}
        "fluxscale" takes I and the fitted spectral index per field from `fluxdict` (the
        result of :func:`fastcal.fluxscale.fluxscale`, or its ``as_casa_dict()``). Flux-density
        standards (Perley-Butler, Butler-JPL-Horizons, ...) are not implemented.
    usescratch : bool
        False (default): store a virtual model in the MS keyword ``FASTCAL_MODELS``.
        True: write the model into MODEL_DATA for the selected rows (created if absent; DATA
        is never written) and remove any virtual model of those fields/spws so that the
        solvers use MODEL_DATA.
    shape : {"point", "gaussian", "disk"}
        Resolved models: ``majoraxis``/``minoraxis`` (FWHM or disk diameter, arcsec or
        strings such as ``"1.2arcsec"``), ``positionangle`` (deg east of north).
    offset_arcsec : (float, float)
        Source offset from the phase centre (RA cos Dec, Dec), arcsec.
    fluxdict : FluxscaleResult or dict, optional
        For ``standard='fluxscale'``.

    Returns
    -------
    dict field_id -> list of FluxModel
        The models set.

    Raises
    ------
    SelectionError
        Unknown field or spw.
    ParameterError
        Bad flux, spix, reffreq, shape or standard.
    """
    info = open_ms(vis)
    std = str(standard).strip()
    if std.lower() not in SUPPORTED_STANDARDS:
        raise ParameterError(
            f"standard={standard!r} is not supported; valid: {', '.join(SUPPORTED_STANDARDS)} "
            f"(flux-density standards such as 'Perley-Butler 2017' and the solar-system models of "
            f"'Butler-JPL-Horizons 2012' are out of scope: give the flux density and shape with "
            f"standard='manual')"
        )
    std = std.lower()
    field_ids, spw_ids = _select(info, field, spw)
    shp = _shape_params(shape, majoraxis, minoraxis, positionangle)
    off = tuple(float(x) for x in offset_arcsec)
    if len(off) != 2 or not all(math.isfinite(x) for x in off):
        raise ParameterError(f"offset_arcsec={offset_arcsec!r}; valid: two finite numbers (arcsec)")
    models: dict[int, list[FluxModel]] = {}
    for fid in field_ids:
        if std == "fluxscale":
            stokes, nu0, alpha = _from_fluxdict(fluxdict, fid, info)
        else:
            stokes, nu0, alpha = _stokes(fluxdensity), parse_frequency(reffreq), _spix(spix)
        for sid in spw_ids:
            models.setdefault(fid, []).append(FluxModel(
                field_id=fid, field_name=info.fields[fid].name, spw_id=sid, stokes=stokes,
                reffreq_hz=nu0, spix=alpha, shape=shp[0], major_arcsec=shp[1],
                minor_arcsec=shp[2], pa_deg=shp[3], offset_arcsec=off,  # type: ignore[arg-type]
                standard=std,
            ))  # fmt: skip
    if usescratch:
        _write_model_data(info, models)
        _remove_models(info, models)
    else:
        _store_models(info.path, models)
    for ms in models.values():
        for m in ms:
            logger.info("setjy %s: %s%s", info.path, m.describe(), " -> MODEL_DATA" if usescratch else "")
    return models


def _select(info: MSInfo, field: Any, spw: Any) -> tuple[list[int], list[int]]:
    sel = parse_selection(info, field=_none_if_empty(field), spw=_none_if_empty(spw))
    field_ids = list(sel.field_ids) if sel.field_ids is not None else [f.id for f in info.fields]
    if not field_ids:
        raise SelectionError(f"field={field!r} selects no field of {info.path}")
    spw_ids = list(sel.spw_ids) if sel.spw_ids is not None else [-1]
    return field_ids, spw_ids


def _store_models(path: str, models: Mapping[int, list[FluxModel]]) -> None:
    stored = _read_keyword(path)
    for ms in models.values():
        for m in ms:
            if m.spw_id < 0:  # an every-spw model replaces the field's spw-specific ones
                stored = {k: r for k, r in stored.items() if int(r.get("field_id", -1)) != m.field_id}
            stored[_model_key(m.field_id, m.spw_id)] = m.to_record()
    _write_keyword(path, stored)


def _remove_models(info: MSInfo, models: Mapping[int, list[FluxModel]]) -> None:
    """Drop the virtual models that MODEL_DATA now replaces (the solvers prefer a virtual
    model). A field's every-spw model hit by spw-specific writes is split into per-spw
    copies for the spws not written, so those keep their model."""
    stored = _read_keyword(info.path)
    keep = dict(stored)
    changed = False
    for fid, ms in models.items():
        written = {m.spw_id for m in ms}
        for k, r in stored.items():
            if int(r.get("field_id", -1)) != fid:
                continue
            sid = int(r.get("spw_id", -1))
            if -1 in written or sid in written:
                keep.pop(k, None)
                changed = True
            elif sid == -1:
                keep.pop(k, None)
                changed = True
                base = FluxModel.from_record(r)
                for spw in info.spws:
                    if spw.id not in written and spw.num_chan and _model_key(fid, spw.id) not in keep:
                        keep[_model_key(fid, spw.id)] = replace(base, spw_id=spw.id).to_record()
    if changed:
        _write_keyword(info.path, keep)


def _write_model_data(info: MSInfo, models: Mapping[int, list[FluxModel]]) -> None:
    from fastcal.ms.read import read_chunks
    from fastcal.ms.write import ChunkWriter, ensure_column

    ensure_column(info, "MODEL_DATA")
    info = open_ms(info.path)
    n = 0
    with ChunkWriter(info) as writer:
        for fid, ms in models.items():
            by_spw = {m.spw_id: m for m in ms}
            spws = None if -1 in by_spw else ",".join(str(s) for s in sorted(by_spw))
            try:
                chunks = read_chunks(info, ("UVW",), field=str(fid), spw=spws)
            except SelectionError as exc:
                logger.warning("%s: no MODEL_DATA written for field %d: %s", info.path, fid, exc)
                continue
            for ch in chunks:
                model = by_spw.get(ch.spw_id, by_spw.get(-1))
                if model is None:
                    continue
                for b in range(ch.n_blocks):
                    sl = ch.block_slice(b)
                    if model.is_point:
                        spec = model.visibilities(np.zeros((1, 3)), ch.freq, ch.corr_types)
                        vals = np.broadcast_to(spec, (ch.rows[sl].size, ch.n_chan, ch.n_corr))
                    else:
                        uvw = np.asarray(ch.arrays["UVW"].blocks[b].compute())
                        vals = model.visibilities(uvw, ch.freq, ch.corr_types)
                    writer.write_chunk(ch, "MODEL_DATA", np.ascontiguousarray(vals), block=b)
                    n += int(ch.rows[sl].size)
    logger.info("%s: wrote MODEL_DATA for %d rows", info.path, n)


def _from_fluxdict(fluxdict: Any, fid: int, info: MSInfo) -> tuple[tuple[float, ...], float, tuple[float, ...]]:
    if fluxdict is None:
        raise ParameterError("standard='fluxscale' needs fluxdict= (the result of fluxscale)")
    d = fluxdict.as_casa_dict() if hasattr(fluxdict, "as_casa_dict") else fluxdict
    rec = d.get(str(fid)) or d.get(fid)
    if not isinstance(rec, Mapping):
        have = sorted(k for k in d if str(k).isdigit())
        raise ParameterError(
            f"fluxdict has no entry for field {fid} ({info.fields[fid].name}); fields in it: {have}"
        )
    fit = np.atleast_1d(rec.get("fitFluxd", np.nan)).astype(float)
    nu0 = float(rec.get("fitRefFreq", np.nan))
    spidx = np.atleast_1d(rec.get("spidx", [])).astype(float)
    if fit.size and np.isfinite(fit[0]) and fit[0] > 0 and np.isfinite(nu0) and nu0 > 0:
        alpha = tuple(float(x) for x in spidx[1:]) if spidx.size > 1 else ()
        alpha = tuple(0.0 if not math.isfinite(a) else a for a in alpha)
        return (float(fit[0]), 0.0, 0.0, 0.0), nu0, _spix(alpha)
    # no fit (one spw): the per-spw flux of the first spw with a result
    freqs = np.atleast_1d(d.get("freq", []))
    for key in sorted((k for k in rec if str(k).isdigit()), key=int):
        sub = rec[key]
        fl = np.atleast_1d(sub.get("fluxd", [np.nan])).astype(float)
        if fl.size and np.isfinite(fl[0]) and fl[0] > 0:
            k = int(key)
            nu = float(freqs[k]) if k < freqs.size and freqs[k] > 0 else float(info.spws[k].centre_freq)
            return (float(fl[0]), 0.0, 0.0, 0.0), nu, ()
    raise ParameterError(f"fluxdict has no valid flux density for field {fid} ({info.fields[fid].name})")


# --------------------------------------------------------------------------- flux.csv

#: Header fastcal writes (ALMA pipeline, current).
FLUX_CSV_COLUMNS = ("ms", "field", "spw", "I", "Q", "U", "V", "spix", "uvmin", "uvmax", "comment")
#: Older pipeline header (no uv limits).
FLUX_CSV_COLUMNS_OLD = ("ms", "field", "spw", "I", "Q", "U", "V", "spix", "comment")
_CSV_ALIASES = {"vis": "ms", "fieldid": "field", "field_id": "field", "spwid": "spw", "spw_id": "spw",
                "pix": "spix", "i": "I", "q": "Q", "u": "U", "v": "V"}  # fmt: skip


@dataclass(frozen=True)
class FluxEntry:
    """One row of an ALMA ``flux.csv`` calibrator catalogue.

    Attributes
    ----------
    ms : str
        MS base name the row belongs to ("" = any).
    field : str
        Field id (as text) or name.
    spw : int
        Spectral window id.
    stokes : (4,) float
        I, Q, U, V in Jy at the spw's centre frequency.
    spix : float
        Spectral index.
    uvmin, uvmax : float
        uv limits of the pipeline (stored and written back, not applied by fastcal).
    comment : str
        Free text (``# field=<name> intents=<...> origin=<...> age=<...> queried_at=<...>``).
    """

    ms: str
    field: str
    spw: int
    stokes: tuple[float, float, float, float]
    spix: float = 0.0
    uvmin: float = 0.0
    uvmax: float = 0.0
    comment: str = ""


def read_flux_csv(path: str | os.PathLike) -> list[FluxEntry]:
    """Read a ``flux.csv`` in any of the pipeline's header forms.

    Accepted headers: ``ms,field,spw,I,Q,U,V,spix,uvmin,uvmax,comment`` (current),
    ``ms,field,spw,I,Q,U,V,spix,comment`` and ``vis,fieldid,spwid,I,Q,U,V,pix,comment`` (older);
    a missing spix/uvmin/uvmax is 0. Blank lines are skipped.

    Raises
    ------
    ParameterError
        Missing file, unrecognised header, or a row with a non-numeric value (the message
        gives the line number and column).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ParameterError(f"flux file {path} does not exist")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise ParameterError(f"{path} is empty; expected the header {','.join(FLUX_CSV_COLUMNS)}") from None
        cols = [_CSV_ALIASES.get(h.strip().lower(), _CSV_ALIASES.get(h.strip(), h.strip())) for h in header]
        cols = [c if c in ("I", "Q", "U", "V") else c.lower() for c in cols]
        need = {"ms", "field", "spw", "I"}
        if not need <= set(cols):
            raise ParameterError(
                f"{path}: header {','.join(header)!r} not recognised; valid: "
                f"{','.join(FLUX_CSV_COLUMNS)} (or the older {','.join(FLUX_CSV_COLUMNS_OLD)})"
            )
        out = []
        for lineno, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) > len(cols):  # an unquoted comma in the comment
                row = row[: len(cols) - 1] + [",".join(row[len(cols) - 1 :])]
            rec = dict(zip(cols, (c.strip() for c in row), strict=False))
            out.append(_entry_from_row(rec, path, lineno))
    logger.info("read %d flux entries from %s", len(out), path)
    return out


def _entry_from_row(rec: Mapping[str, str], path: str, lineno: int) -> FluxEntry:
    def num(key: str, default: float | None = 0.0) -> float:
        text = rec.get(key, "")
        if text in ("", None):
            if default is None:
                raise ParameterError(f"{path} line {lineno}: column {key} is empty")
            return default
        try:
            return float(text)
        except ValueError:
            raise ParameterError(f"{path} line {lineno}: column {key}={text!r} is not a number") from None

    try:
        spw = int(rec.get("spw", ""))
    except ValueError:
        raise ParameterError(f"{path} line {lineno}: spw={rec.get('spw')!r} is not an integer") from None
    field_text = rec.get("field", "")
    if not field_text:
        raise ParameterError(f"{path} line {lineno}: column field is empty")
    stokes = (num("I", None), num("Q"), num("U"), num("V"))
    return FluxEntry(
        ms=rec.get("ms", ""), field=field_text, spw=spw, stokes=stokes,  # type: ignore[arg-type]
        spix=num("spix"), uvmin=num("uvmin"), uvmax=num("uvmax"), comment=rec.get("comment", ""),
    )  # fmt: skip


def write_flux_csv(
    path: str | os.PathLike,
    entries: Any,
    *,
    ms: str | None = None,
    vis: Any = None,
    old_header: bool = False,
    overwrite: bool = False,
) -> int:
    """Write a ``flux.csv`` (ALMA pipeline layout).

    Parameters
    ----------
    path : path
    entries : sequence of FluxEntry, or a FluxscaleResult
        A fluxscale result gives one row per transfer field and spw: I = derived flux
        density, spix = fitted spectral index (0 when there is no fit).
    ms : str, optional
        MS name written in the ``ms`` column for a FluxscaleResult (default: the table's
        ``MSName``).
    vis : path or MSInfo, optional
        For a FluxscaleResult: fills ``intents=`` in the comments.
    old_header : bool
        Use ``ms,field,spw,I,Q,U,V,spix,comment``.
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    int
        Rows written.
    """
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise ParameterError(f"{path} exists; pass overwrite=True to replace it")
    if hasattr(entries, "fluxes") and hasattr(entries, "table"):
        entries = entries_from_fluxscale(entries, ms=ms, vis=vis)
    entries = list(entries)
    cols = FLUX_CSV_COLUMNS_OLD if old_header else FLUX_CSV_COLUMNS
    tmp = f"{path}.fastcal-tmp-{os.getpid()}"
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for e in entries:
            i, q, u, v = (repr(float(x)) for x in e.stokes)
            row = [e.ms, e.field, int(e.spw), i, q, u, v, repr(float(e.spix))]
            if not old_header:
                row += [repr(float(e.uvmin)), repr(float(e.uvmax))]
            w.writerow(row + [e.comment])
    os.replace(tmp, path)
    n = len(entries)
    logger.info("wrote %d flux entries to %s", n, path)
    return n


def entries_from_fluxscale(result: Any, ms: str | None = None, vis: Any = None) -> list[FluxEntry]:
    """flux.csv rows from a :class:`fastcal.fluxscale.FluxscaleResult` (one per field and spw).

    `vis` (optional) fills the comment's ``intents=`` from the scans of each field."""
    name = ms if ms is not None else (result.table.ms_name or "")
    info = open_ms(vis) if vis is not None else None
    out = []
    for fid, ff in sorted(result.fluxes.items()):
        alpha = ff.alpha if math.isfinite(ff.alpha) else 0.0
        intents = "N/A"
        if info is not None:
            found = sorted({re.sub(r"^(CALIBRATE_|OBSERVE_)", "", i.split("#")[0])  # pipeline style
                            for sc in info.scans if fid in sc.field_ids for i in sc.intents})  # fmt: skip
            intents = ",".join(found) or "N/A"
        for s, sf in sorted(ff.spws.items()):
            comment = (f"# field={ff.field_name} intents={intents} origin=fastcal.fluxscale "
                       f"age=N/A queried_at=N/A err={sf.fluxd_err[0]:.6g} nsol={sf.num_sol}")  # fmt: skip
            out.append(FluxEntry(ms=os.path.basename(name), field=str(fid), spw=int(s),
                                 stokes=tuple(float(x) for x in sf.fluxd), spix=float(alpha),  # type: ignore[arg-type]
                                 comment=comment))  # fmt: skip
    return out


def setjy_from_csv(
    vis: str | os.PathLike | MSInfo,
    path: str | os.PathLike,
    *,
    usescratch: bool = False,
    match_ms: bool = True,
) -> dict[int, list[FluxModel]]:
    """Set per-field, per-spw point models from a ``flux.csv`` (ALMA ``hif_setmodels``).

    Each row becomes a model of its field in its spw: ``[I, Q, U, V]`` at the spw's centre
    frequency (mean channel frequency) with spectral index ``spix``.

    Parameters
    ----------
    vis : path or MSInfo
    path : path of the flux.csv
    usescratch : bool
        Write MODEL_DATA instead of virtual models.
    match_ms : bool
        Use only rows whose ``ms`` column is the MS's base name (with or without ``.ms``), or
        empty.

    Raises
    ------
    ParameterError
        No row for this MS, or the file is malformed.
    SelectionError
        A row names a field or spw the MS does not have.
    """
    info = open_ms(vis)
    entries = read_flux_csv(path)
    base = os.path.basename(os.path.normpath(info.path))
    stems = {base, base[:-3] if base.endswith(".ms") else base + ".ms"}
    use = [e for e in entries if not match_ms or not e.ms or os.path.basename(e.ms) in stems]
    if not use:
        have = sorted({e.ms for e in entries})
        raise ParameterError(f"{path}: no row for MS {base}; the file has rows for {have} (match_ms=False to use them)")
    models: dict[int, list[FluxModel]] = {}
    for e in use:
        field_ids, _ = _select(info, e.field, "")
        if not 0 <= e.spw < len(info.spws) or info.spws[e.spw].num_chan == 0:
            raise SelectionError(f"{path}: spw {e.spw} (field {e.field}) is not a spectral window of {info.path}")
        if e.uvmin or e.uvmax:
            logger.warning("%s: uvmin/uvmax of field %s spw %d are not applied by fastcal", path, e.field, e.spw)
        nu0 = float(info.spws[e.spw].centre_freq)
        for fid in field_ids:
            m = FluxModel(field_id=fid, field_name=info.fields[fid].name, spw_id=e.spw,
                          stokes=_stokes(e.stokes), reffreq_hz=nu0, spix=_spix([e.spix]),
                          standard="flux.csv")  # fmt: skip
            models.setdefault(fid, []).append(m)
    if usescratch:
        _write_model_data(info, models)
        _remove_models(info, models)
    else:
        _store_models(info.path, models)
    logger.info("setjy_from_csv %s: %d model(s) from %s", info.path, sum(map(len, models.values())), path)
    return models


# --------------------------------------------------------------------------- CLI


def add_cli_arguments(parser: Any) -> None:
    """Arguments of ``fastcal setjy`` (see :func:`run_from_args`)."""
    parser.add_argument("vis", help="Measurement Set")
    parser.add_argument("--field", default="", help="field names/ids/globs (default: every field)")
    parser.add_argument("--spw", default="", help="spws for per-spw models (default: one model for all)")
    parser.add_argument("--fluxdensity", type=float, nargs="+", metavar="JY", default=None,
                        help="I [Q U V] in Jy at --reffreq")
    parser.add_argument("--spix", type=float, nargs="+", default=[], help="alpha [beta ...]")
    parser.add_argument("--reffreq", default="1GHz", help="reference frequency, e.g. 100GHz (default 1GHz)")
    parser.add_argument("--standard", default="manual", help="manual (default); 'fluxscale' needs the API")
    parser.add_argument("--shape", default="point", choices=SHAPES, help="model shape (default point)")
    parser.add_argument("--majoraxis", default="0", help="FWHM or disk diameter, e.g. 1.2arcsec")
    parser.add_argument("--minoraxis", default="0", help="minor axis (default = major)")
    parser.add_argument("--positionangle", default="0", help="position angle, deg east of north")
    parser.add_argument("--usescratch", action="store_true", help="write MODEL_DATA instead of a virtual model")
    parser.add_argument("--csv", default=None, metavar="FLUX_CSV", help="set models from an ALMA flux.csv")
    parser.add_argument("--clear", action="store_true", help="remove virtual models (of --field/--spw)")
    parser.add_argument("--list", action="store_true", help="list the virtual models stored in the MS")


def run_from_args(args: Any) -> int:
    """Run ``fastcal setjy``: set, clear or list models; prints one line per model."""
    if args.list:
        models = list_models(args.vis)
        for m in models.values():
            print(m.describe())
        if not models:
            print(f"no virtual models in {args.vis}")
        return 0
    if args.clear:
        n = clear_models(args.vis, field=args.field, spw=args.spw)
        print(f"removed {n} virtual model(s) from {args.vis}")
        return 0
    if args.csv:
        out = setjy_from_csv(args.vis, args.csv, usescratch=args.usescratch)
    else:
        if args.fluxdensity is None and args.standard.lower() == "manual":
            raise ParameterError("fastcal setjy needs --fluxdensity (or --csv, --clear, --list)")
        out = setjy(args.vis, field=args.field, spw=args.spw, fluxdensity=args.fluxdensity,
                    spix=args.spix, reffreq=args.reffreq, standard=args.standard,
                    usescratch=args.usescratch, shape=args.shape, majoraxis=args.majoraxis,
                    minoraxis=args.minoraxis, positionangle=args.positionangle)  # fmt: skip
    for ms in out.values():
        for m in ms:
            print(m.describe() + (" -> MODEL_DATA" if args.usescratch else ""))
    return 0
