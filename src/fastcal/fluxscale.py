"""Flux-density bootstrapping: :func:`fluxscale` (CASA ``fluxscale``).

Algorithm (CASA 6 ``SolvableVisJones::fluxscale``, read in the source; see docs/flux.md):

1. Amplitudes ``|g|`` of every unflagged G/T solution. With ``gainthreshold >= 0`` an
   amplitude is used only inside ``[lo, (1 + t)] * median`` where the median is taken over
   every unflagged amplitude of that field and spw (all times, antennas, pols) and
   ``lo = 1 - t`` for ``0 < t < 1``, 0 for ``t >= 1``, 1 for ``t == 0``.
2. Per field, spw, antenna and pol: the plain mean of the used amplitudes.
3. Reference fields: their means are averaged (only unflagged ones count).
4. Per transfer field and spw: ratios ``r = mean_T(spw) / mean_ref(refspwmap[spw])`` per
   antenna and pol where both exist; ``R = median(r)`` (casacore's median: mean of the two
   middle values when the count is even and the antenna x pol array has <= 100 cells, else
   the lower middle value); ``sigma = std(r, ddof=1)``.
5. ``fluxd = R**2`` (times the transfer field's own model flux when the MS has a setjy
   model for it; 1 Jy otherwise, as CASA assumes), ``fluxdErr = 2 sigma / sqrt(N - 1)``
   (0 when N = 1), ``numSol = N``.
6. Spectral fit over the spws with a result: weighted least squares of ``log10 S`` against
   ``log10 nu - mean(log10 nu)`` (sigma = fluxdErr / fluxd), polynomial of order
   ``fitorder``; ``fitFluxd = 10**c0``, ``fitRefFreq = 10**mean(log10 nu)``, ``spidx = c``.
7. Output table: the input with every transfer-field solution divided by R (so that applying
   it puts that field on the reference's flux scale: |g_T| = |G| sqrt(S_T) / R = |G|); with
   ``incremental=True`` a new G table holding one antenna-independent factor 1/R per field
   and spw instead.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from fastcal.caltable import CalTable, as_caltable
from fastcal.errors import CalTableError, ParameterError, SelectionError

__all__ = [
    "FieldFlux",
    "FluxscaleResult",
    "SpwFlux",
    "add_cli_arguments",
    "casa_median",
    "fluxscale",
    "run_from_args",
]

logger = logging.getLogger(__name__)

_GAIN_TYPES = ("G Jones", "T Jones")


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class SpwFlux:
    """Derived flux density of one field in one spw.

    Attributes
    ----------
    spw_id : int
    freq_hz : float
        Frequency the flux refers to: the caltable's centre channel ``CHAN_FREQ[nchan // 2]``.
    fluxd : (4,) float
        [I, Q, U, V] in Jy (Q = U = V = 0: fluxscale measures total intensity).
    fluxd_err : (4,) float
    num_sol : int
        Antenna x pol ratios used (CASA's ``numSol``).
    ratio : float
        R, the median gain-amplitude ratio (transfer / reference).
    ratio_rms : float
        Standard deviation of the ratios (ddof=1).
    ref_spw : int
        Reference spw used (``refspwmap``).
    """

    spw_id: int
    freq_hz: float
    fluxd: tuple[float, float, float, float]
    fluxd_err: tuple[float, float, float, float]
    num_sol: int
    ratio: float
    ratio_rms: float
    ref_spw: int

    @property
    def flux_i(self) -> float:
        return self.fluxd[0]

    @property
    def snr(self) -> float:
        e = self.fluxd_err[0]
        return self.fluxd[0] / e if e > 0 else math.inf


@dataclass(frozen=True)
class FieldFlux:
    """fluxscale result of one transfer field.

    Attributes
    ----------
    field_id : int
    field_name : str
    spws : dict spw_id -> SpwFlux
        Spws with a result (spws with no usable ratio are absent; CASA reports -1 there).
    fit_fluxd, fit_fluxd_err : float
        Fitted flux density (Jy) at `fit_ref_freq_hz` and its error.
    fit_ref_freq_hz : float
    spidx, spidx_err : (fitorder + 1,) float
        Polynomial coefficients of log10 S vs log10(nu / fit_ref_freq): [log10 S0, alpha,
        beta, ...] (CASA's ``spidx``). With a single spw the index terms are NaN (CASA: 0).
    covar : (n, n) float
        Covariance matrix of the fit (empty with a single spw).
    fit_order : int
        Order actually fitted (-1: no fit).
    """

    field_id: int
    field_name: str
    spws: dict[int, SpwFlux]
    fit_fluxd: float
    fit_fluxd_err: float
    fit_ref_freq_hz: float
    spidx: np.ndarray
    spidx_err: np.ndarray
    covar: np.ndarray
    fit_order: int

    @property
    def alpha(self) -> float:
        """Spectral index (NaN without a fit)."""
        return float(self.spidx[1]) if self.spidx.size > 1 else math.nan

    def flux_at(self, freq_hz: Any) -> np.ndarray:
        """Fitted Stokes I (Jy) at `freq_hz` (NaN terms count as 0)."""
        x = np.log10(np.asarray(freq_hz, dtype=np.float64) / self.fit_ref_freq_hz)
        c = np.nan_to_num(self.spidx, nan=0.0)
        logs = np.log10(self.fit_fluxd) + sum(c[k] * x**k for k in range(1, c.size))
        return 10.0**logs


@dataclass
class FluxscaleResult:
    """What :func:`fluxscale` returns.

    Attributes
    ----------
    table : CalTable
        The rescaled table (transfer-field gains divided by R), or the incremental table.
    fluxes : dict field_id -> FieldFlux
        Transfer fields with at least one spw result.
    reference : tuple of int
        Reference field ids used.
    transfer : tuple of int
        Transfer field ids asked for (those with solutions).
    freq_hz : dict spw_id -> float
        Frequency of each spw's result (caltable centre channel).
    spw_names : dict spw_id -> str
    scale : dict (field_id, spw_id) -> float
        R per transfer field and spw (what the table was divided by).
    """

    table: CalTable
    fluxes: dict[int, FieldFlux]
    reference: tuple[int, ...]
    transfer: tuple[int, ...]
    freq_hz: dict[int, float]
    spw_names: dict[int, str]
    scale: dict[tuple[int, int], float] = field(default_factory=dict)

    def as_casa_dict(self) -> dict[str, Any]:
        """The result in the layout of the dictionary ``casatasks.fluxscale`` returns.

        ``{'<field id>': {'<spw>': {'fluxd': [I,Q,U,V], 'fluxdErr': [...], 'numSol': [n,n,n,n]},
        'fieldName', 'fitFluxd', 'fitFluxdErr', 'fitRefFreq', 'spidx', 'spidxerr',
        'covarMat'}, 'freq': [...], 'spwName': [...], 'spwID': [...]}``; spws without a
        result get fluxd -1 and numSol -1, as in CASA.
        """
        spws = sorted(self.freq_hz)
        n_spw = (max(spws) + 1) if spws else 0
        out: dict[str, Any] = {}
        for fid, ff in sorted(self.fluxes.items()):
            rec: dict[str, Any] = {"fieldName": ff.field_name}
            for s in range(n_spw):
                sf = ff.spws.get(s)
                if sf is None:
                    rec[str(s)] = {"fluxd": np.array([-1.0, -1.0, -1.0, -1.0]),
                                   "fluxdErr": np.array([-1.0, -1.0, -1.0, -1.0]),
                                   "numSol": np.array([-1, -1, -1, -1])}  # fmt: skip
                else:
                    rec[str(s)] = {"fluxd": np.array(sf.fluxd), "fluxdErr": np.array(sf.fluxd_err),
                                   "numSol": np.array([sf.num_sol, 0, 0, 0])}  # fmt: skip
            rec["fitFluxd"] = ff.fit_fluxd
            rec["fitFluxdErr"] = ff.fit_fluxd_err
            rec["fitRefFreq"] = ff.fit_ref_freq_hz
            rec["spidx"] = np.array(ff.spidx)
            rec["spidxerr"] = np.array(ff.spidx_err)
            rec["covarMat"] = np.array(ff.covar)
            out[str(fid)] = rec
        out["freq"] = np.array([self.freq_hz.get(s, -1.0) for s in range(n_spw)])
        out["spwName"] = np.array([self.spw_names.get(s, "") for s in range(n_spw)])
        out["spwID"] = np.arange(n_spw, dtype=np.int32)
        return out

    def summary(self) -> str:
        """CASA-log-like lines: flux per field and spw, and the fit."""
        lines = []
        for _fid, ff in sorted(self.fluxes.items()):
            for s, sf in sorted(ff.spws.items()):
                lines.append(
                    f"Flux density for {ff.field_name} in SpW={s} (freq={sf.freq_hz:.6g} Hz) is: "
                    f"{sf.fluxd[0]:.6g} +/- {sf.fluxd_err[0]:.6g} (SNR = {sf.snr:.4g}, N = {sf.num_sol})"
                )
            if ff.fit_order >= 1:
                terms = " ".join(f"a_{k}={ff.spidx[k]:.6g} +/- {ff.spidx_err[k]:.6g}"
                                 for k in range(1, ff.spidx.size))  # fmt: skip
                lines.append(
                    f"Fitted spectrum for {ff.field_name} with fitorder={ff.fit_order}: Flux density = "
                    f"{ff.fit_fluxd:.6g} +/- {ff.fit_fluxd_err:.6g} "
                    f"(freq={ff.fit_ref_freq_hz / 1e9:.6g} GHz) spidx: {terms}"
                )
        return "\n".join(lines)


# --------------------------------------------------------------------------- helpers


def casa_median(values: np.ndarray, n_total: int) -> float:
    """casacore's ``median(MaskedArray)``: the mean of the two middle values when the count
    is even and the whole array (masked cells included) has ``n_total <= 100`` cells;
    otherwise the lower middle value."""
    v = np.sort(np.asarray(values, dtype=np.float64).ravel())
    n = v.size
    if n == 0:
        return math.nan
    k = (n - 1) // 2
    if n % 2 == 0 and n_total <= 100:
        return 0.5 * (v[k] + v[k + 1])
    return float(v[k])


def _subtable_names(tab: CalTable, subtable: str) -> list[str] | None:
    """NAME column of `subtable` (e.g. ``"FIELD"``): the table's in-memory copy, else its
    MS's; None if neither has one."""
    if tab.subtables and subtable in tab.subtables:
        names = tab.subtables[subtable].columns.get("NAME")
        if names is not None:
            return [str(x) for x in names]
    if tab.ms_path and os.path.isdir(os.path.join(tab.ms_path, subtable)):
        import casacore.tables as ct

        with ct.table(os.path.join(tab.ms_path, subtable), ack=False) as t:
            return [str(x) for x in t.getcol("NAME")] if t.nrows() else []
    return None


def _field_names(tab: CalTable, vis: Any) -> list[str]:
    if vis is not None:
        from fastcal.ms import open_ms

        return list(open_ms(vis).field_names)
    names = _subtable_names(tab, "FIELD")
    if names is not None:
        return names
    n = int(tab.field_id.max()) + 1 if tab.nrow else 0
    return [f"field{i}" for i in range(n)]


def _antenna_names(tab: CalTable) -> list[str]:
    names = _subtable_names(tab, "ANTENNA")
    return names if names is not None else [str(i) for i in range(tab.n_ant)]


def _spw_names(tab: CalTable) -> dict[int, str]:
    return dict(enumerate(_subtable_names(tab, "SPECTRAL_WINDOW") or []))


def _items(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (int, np.integer)):
        return [str(int(value))]
    if isinstance(value, str):
        return [s.strip() for s in value.split(",") if s.strip()]
    out: list[str] = []
    for v in value:
        out.extend(_items(v))
    return out


def _resolve_fields(value: Any, names: Sequence[str], param: str, where: str) -> list[int]:
    """Field ids from names, ids, ``a~b`` ranges or globs (exact name first, then id, then glob)."""
    ids: list[int] = []
    valid = ", ".join(f"{i} ({n})" for i, n in enumerate(names))
    for item in _items(value):
        hit = [i for i, n in enumerate(names) if n == item]
        if not hit and item.lstrip("-").isdigit():
            hit = [int(item)] if 0 <= int(item) < len(names) else []
            if not hit:
                raise SelectionError(f"{param}={value!r}: no field id {item} in {where}; valid: {valid}")
        if not hit and "~" in item:
            a, _, b = item.partition("~")
            if a.strip().isdigit() and b.strip().isdigit():
                hit = [i for i in range(int(a), int(b) + 1) if i < len(names)]
        if not hit and any(c in item for c in "*?["):
            hit = [i for i, n in enumerate(names) if fnmatch.fnmatchcase(n, item)]
        if not hit:
            raise SelectionError(f"{param}={value!r}: no field {item!r} in {where}; valid: {valid}")
        ids.extend(h for h in hit if h not in ids)
    return ids


def _antenna_mask(antenna: Any, tab: CalTable) -> np.ndarray:
    """Rows of `tab` kept by an antenna selection: ids, names, ``a~b``, globs, ``!`` excludes."""
    items = _items(antenna)
    if not items:
        return np.ones(tab.nrow, dtype=bool)
    names = _antenna_names(tab)
    include: set[int] = set()
    exclude: set[int] = set()
    for raw in items:
        neg = raw.startswith("!")
        item = raw[1:].strip() if neg else raw
        hit = {i for i, n in enumerate(names) if n == item}
        if not hit and item.isdigit():
            hit = {int(item)}
        if not hit and "~" in item:
            a, _, b = item.partition("~")
            if a.strip().isdigit() and b.strip().isdigit():
                hit = set(range(int(a), int(b) + 1))
        if not hit and any(c in item for c in "*?["):
            hit = {i for i, n in enumerate(names) if fnmatch.fnmatchcase(n, item)}
        if not hit or max(hit) >= max(len(names), tab.n_ant):
            raise SelectionError(
                f"antenna={antenna!r}: no antenna {item!r}; valid: ids 0..{len(names) - 1} or "
                f"names {', '.join(names)}"
            )
        (exclude if neg else include).update(hit)
    keep = include if include else set(range(max(len(names), tab.n_ant)))
    keep -= exclude
    return np.isin(tab.antenna1, sorted(keep))


def _refspw_map(refspwmap: Any, n_spw: int) -> np.ndarray:
    out = np.arange(n_spw)
    if refspwmap is None:
        return out
    vals = [int(v) for v in np.atleast_1d(refspwmap)]
    if not vals or vals[0] < 0:
        if any(v > -1 for v in vals):
            logger.warning("refspwmap=%s starts with -1: CASA then ignores the whole map and so does "
                           "fastcal; give the first spw's own id instead (e.g. [0, 1, 2, 3, 4, 4, 4])",
                           vals)  # fmt: skip
        return out
    if any(v >= n_spw for v in vals):
        raise ParameterError(f"refspwmap={list(vals)} names a spw >= {n_spw} (spws in the table: 0..{n_spw - 1})")
    if len(vals) == 1:
        out[:] = vals[0]
        return out
    for i, v in enumerate(vals[:n_spw]):
        if v > -1:
            out[i] = v
    return out


def _sol_freq(tab: CalTable, spw: int, vis: Any) -> float:
    f = tab.chan_freq.get(int(spw))
    if f is not None and len(f):
        return float(np.asarray(f)[len(f) // 2])
    if vis is not None:
        from fastcal.ms import open_ms

        cf = open_ms(vis).spws[int(spw)].chan_freq
        return float(cf[len(cf) // 2]) if len(cf) else math.nan
    return math.nan


# --------------------------------------------------------------------------- main


def fluxscale(
    caltable: CalTable | str | os.PathLike,
    *,
    reference: Any,
    transfer: Any = None,
    refspwmap: Any = None,
    gainthreshold: float = -1.0,
    antenna: Any = "",
    incremental: bool = False,
    fitorder: int = 1,
    vis: Any = None,
    fluxtable: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> FluxscaleResult:
    """Bootstrap the flux density of transfer calibrators from reference calibrators.

    Parameters
    ----------
    caltable : CalTable or path
        Amplitude (G or T Jones) solutions of the reference fields solved against their true
        model and of the transfer fields solved against 1 Jy (or their setjy model).
    reference : str, int or sequence
        Reference (flux calibrator) fields: names, ids, ``a~b`` or globs.
    transfer : str, int or sequence, optional
        Transfer fields; default every other field with solutions.
    refspwmap : sequence of int, optional
        Reference spw for each spw (CASA semantics: ``[-1]`` none, ``[k]`` every spw to k,
        ``[0, 0, 2, 2]`` per spw, -1 entries keep their own spw).
    gainthreshold : float
        Fractional deviation from the field/spw median amplitude beyond which solutions are
        ignored; < 0 disables (default).
    antenna : str or sequence
        Antennas to use: ids, names, ``a~b``, globs; ``!name`` excludes.
    incremental : bool
        Return an incremental table (one factor 1/R per field and spw) instead of the
        rescaled copy.
    fitorder : int
        Order of the log S - log nu polynomial (1 = spectral index, 2 = with curvature).
    vis : str or MSInfo, optional
        The MS: field names, spw frequencies if the table lacks them, and setjy models of
        transfer fields (their flux then multiplies R**2).
    fluxtable : path, optional
        Also write the output table there.
    overwrite : bool
        Passed to :meth:`CalTable.write`.

    Returns
    -------
    FluxscaleResult

    Raises
    ------
    CalTableError
        Not a G/T table, multi-channel cells, no reference field with solutions, no transfer
        field with solutions, or no scale factor at all (e.g. every transfer solution flagged).
    SelectionError
        A reference/transfer field or antenna that does not exist.
    ParameterError
        Bad refspwmap, fitorder.
    """
    tab = as_caltable(caltable)
    where = tab.path or "the calibration table"
    if vis is not None:
        from fastcal.ms import open_ms

        vis = open_ms(vis)  # once: names, frequencies and models below reuse it
    if tab.vis_cal not in _GAIN_TYPES:
        raise CalTableError(f"{where}: fluxscale needs a G or T Jones table, got {tab.vis_cal!r}")
    if tab.params.shape[1] != 1:
        raise CalTableError(
            f"{where}: fluxscale needs one channel per solution, cells have {tab.params.shape[1]} "
            f"(a bandpass-like table?)"
        )
    if not isinstance(fitorder, (int, np.integer)) or fitorder > 2:
        raise ParameterError(f"fitorder={fitorder!r} is invalid; valid: 0, 1 or 2 (< 0 means 1, as CASA)")
    if fitorder < 0:
        logger.warning("fitorder=%d not supported; using fitorder=1 (as CASA)", fitorder)
        fitorder = 1
    gainthreshold = float(gainthreshold)
    names = _field_names(tab, vis)
    n_fld = int(tab.field_id.max()) + 1 if tab.nrow else 0
    names = names + [f"field{i}" for i in range(len(names), n_fld)]  # ids beyond the FIELD copy
    ref_ids = _resolve_fields(reference, names, "reference", where)
    if not ref_ids:
        raise ParameterError("reference is empty; give the flux calibrator field(s)")
    tran_req = [f for f in _resolve_fields(transfer, names, "transfer", where) if f not in ref_ids]
    in_table = sorted(int(f) for f in np.unique(tab.field_id))
    refs = [f for f in ref_ids if f in in_table]
    if not refs:
        raise CalTableError(
            f"{where}: no solutions for the reference field(s) "
            f"{', '.join(f'{names[f]} (id {f})' for f in ref_ids)}; fields with solutions: "
            f"{', '.join(f'{names[f]} (id {f})' for f in in_table)}"
        )
    missing = [f for f in ref_ids if f not in in_table]
    if missing:
        logger.warning("reference field(s) without solutions ignored: %s", ", ".join(names[f] for f in missing))
    implicit = [f for f in in_table if f not in refs]
    if not tran_req:
        trans = implicit
    else:
        absent = [f for f in tran_req if f not in in_table]
        if absent:
            logger.warning("transfer field(s) without solutions in %s: %s", where,
                           ", ".join(names[f] for f in absent))  # fmt: skip
        trans = [f for f in tran_req if f in in_table]
    if not trans:
        raise CalTableError(f"{where}: no solutions for any transfer field (fields with solutions: {in_table}; "
                            f"reference: {refs})")  # fmt: skip

    n_spw = int(tab.spw_id.max()) + 1
    spw_map = _refspw_map(refspwmap, n_spw)
    n_ant = max(tab.n_ant, int(tab.antenna1.max()) + 1)
    n_par = tab.n_par

    amp = np.abs(tab.params[:, 0, :]).astype(np.float64)  # (nrow, npar)
    ok = ~tab.flag[:, 0, :]
    sel = _antenna_mask(antenna, tab)
    ok &= sel[:, None]
    fields_used = set(refs) | set(trans)

    # 1. gain threshold around the field/spw median
    if gainthreshold >= 0:
        ok = _apply_threshold(tab, amp, ok, sel, gainthreshold, fields_used)

    # 2. per field, spw, antenna, pol mean amplitude
    mg: dict[int, np.ndarray] = {}
    mgok: dict[int, np.ndarray] = {}
    for f in fields_used:
        rows = tab.field_id == f
        s_sum = np.zeros((n_spw, n_ant, n_par))
        s_n = np.zeros((n_spw, n_ant, n_par))
        r_ok = ok[rows]
        np.add.at(s_sum, (tab.spw_id[rows], tab.antenna1[rows]), np.where(r_ok, amp[rows], 0.0))
        np.add.at(s_n, (tab.spw_id[rows], tab.antenna1[rows]), r_ok.astype(np.float64))
        with np.errstate(invalid="ignore", divide="ignore"):
            mg[f] = np.where(s_n > 0, s_sum / np.maximum(s_n, 1), 0.0)
        mgok[f] = s_n > 0

    # 3. reference average
    ref_sum = np.zeros((n_spw, n_ant, n_par))
    ref_n = np.zeros((n_spw, n_ant, n_par))
    for f in refs:
        ref_sum += np.where(mgok[f], mg[f], 0.0)
        ref_n += mgok[f]
    mgref = np.where(ref_n > 0, ref_sum / np.maximum(ref_n, 1), 0.0)
    mgrefok = ref_n > 0

    # 4-5. ratios, median, errors
    models = _transfer_models(vis, trans)
    spw_names = _spw_names(tab)
    freq = {int(s): _sol_freq(tab, int(s), vis) for s in np.unique(tab.spw_id)}
    results: dict[int, FieldFlux] = {}
    scale: dict[tuple[int, int], float] = {}
    for f in trans:
        spws: dict[int, SpwFlux] = {}
        for s in sorted(freq):
            rs = int(spw_map[s])
            good = mgok[f][s] & mgrefok[rs] & (mgref[rs] > 0)
            n = int(good.sum())
            if n == 0:
                if ((tab.field_id == f) & (tab.spw_id == s)).any():
                    logger.warning("Flux density for %s in SpW=%d (ref SpW=%d): INSUFFICIENT DATA",
                                   names[f], s, rs)  # fmt: skip
                continue
            ratio = mg[f][s][good] / mgref[rs][good]
            r_med = casa_median(ratio, n_ant * n_par)
            rms = float(np.std(ratio, ddof=1)) if n > 1 else 0.0
            fd_err = 2.0 * rms / math.sqrt(n - 1) if n > 1 else 0.0
            model_i = _model_flux(models.get(f), freq[s])
            fd = r_med**2 * model_i
            fd_err *= model_i
            scale[(f, s)] = r_med
            spws[s] = SpwFlux(
                spw_id=s, freq_hz=freq[s], fluxd=(fd, 0.0, 0.0, 0.0), fluxd_err=(fd_err, 0.0, 0.0, 0.0),
                num_sol=n, ratio=r_med, ratio_rms=rms, ref_spw=rs,
            )  # fmt: skip
        if not spws:
            logger.warning("no flux density could be derived for transfer field %s (id %d): every "
                           "solution flagged or without a reference counterpart", names[f], f)  # fmt: skip
            continue
        results[f] = _fit(f, names[f], spws, fitorder)
    if not results:
        raise CalTableError(
            f"{where}: no scale factors determined for transfer field(s) "
            f"{', '.join(f'{names[f]} (id {f})' for f in trans)}: every solution flagged, or no "
            f"antenna/pol/spw in common with the reference field(s)"
        )
    for ff in results.values():
        for s, sf in ff.spws.items():
            logger.info("Flux density for %s in SpW=%d is: %.6g +/- %.6g (SNR = %.4g, N = %d)",
                        ff.field_name, s, sf.fluxd[0], sf.fluxd_err[0], sf.snr, sf.num_sol)  # fmt: skip

    out = (_incremental_table(tab, scale, fields_used, sel, n_ant, vis) if incremental
           else _scaled_table(tab, scale))
    if fluxtable is not None:
        out.write(fluxtable, overwrite=overwrite)
    return FluxscaleResult(
        table=out, fluxes=results, reference=tuple(refs), transfer=tuple(trans),
        freq_hz=freq, spw_names=spw_names, scale=scale,
    )  # fmt: skip


def _apply_threshold(tab: CalTable, amp: np.ndarray, ok: np.ndarray, sel: np.ndarray, t: float,
                     fields: set[int]) -> np.ndarray:
    lo_fac = (1.0 - t) if 0 < t < 1 else (1.0 if t == 0 else 0.0)
    hi_fac = 1.0 + t
    out = ok.copy()
    for f in fields:
        for s in np.unique(tab.spw_id):
            rows = (tab.field_id == f) & (tab.spw_id == s) & sel
            if not rows.any():
                continue
            vals = amp[rows][ok[rows]]
            if vals.size == 0:
                continue
            med = casa_median(vals, int(rows.sum()) * amp.shape[1])
            keep = (amp >= lo_fac * med) & (amp <= hi_fac * med)
            rej = rows[:, None] & ok & ~keep
            if rej.any():
                logger.info("gainthreshold=%g: field %d spw %d: %d of %d solutions excluded (median %.4g)",
                            t, f, s, int(rej.sum()), int(vals.size), med)  # fmt: skip
            out &= ~rej
    return out


def _transfer_models(vis: Any, fields: Sequence[int]) -> dict[int, Any]:
    if vis is None:
        return {}
    from fastcal.flux import virtual_model

    out = {}
    for f in fields:
        m = virtual_model(vis, f)
        if m is not None:
            logger.info("transfer field %d has a setjy model; its derived flux is R^2 x that model", f)
            out[f] = m
    return out


def _model_flux(model: Any, freq_hz: float) -> float:
    if model is None or not math.isfinite(freq_hz):
        return 1.0
    m = model.pick(freq_hz) if hasattr(model, "pick") else model
    return float(m.flux(np.array([freq_hz]))[0, 0])


def _fit(fid: int, name: str, spws: Mapping[int, SpwFlux], fitorder: int) -> FieldFlux:
    keys = sorted(spws)
    fds = np.array([spws[s].fluxd[0] for s in keys])
    errs = np.array([spws[s].fluxd_err[0] for s in keys])
    freqs = np.array([spws[s].freq_hz for s in keys])
    n = len(keys)
    if n == 1 or not np.all(np.isfinite(freqs)) or np.unique(freqs).size == 1:
        if fitorder >= 1:
            logger.warning("field %s: %d spw(s) with a flux density at %d distinct frequency: no spectral "
                           "fit; spidx set to NaN", name, n, np.unique(freqs).size)  # fmt: skip
        order = max(fitorder, 0)
        spidx = np.full(order + 1, np.nan)
        spidx_err = np.full(order + 1, np.nan)
        w = 1.0 / errs**2 if np.all(errs > 0) else np.ones(n)
        fit = float(np.sum(w * fds) / np.sum(w))
        spidx[0] = math.log10(fit) if fit > 0 else np.nan
        return FieldFlux(fid, name, dict(spws), fit, float(errs[0]) if n == 1 else math.nan,
                         float(freqs[0]) if n == 1 else float(10 ** np.mean(np.log10(freqs))),
                         spidx, spidx_err, np.zeros((0, 0)), -1)  # fmt: skip
    order = fitorder
    if order > n - 1:
        logger.warning("field %s: %d spws cannot constrain fitorder=%d; using fitorder=%d",
                       name, n, fitorder, n - 1)  # fmt: skip
        order = n - 1
    mean_log = float(np.mean(np.log10(freqs)))
    x = np.log10(freqs) - mean_log
    y = np.log10(fds)
    sigma = errs / fds
    if np.any(sigma <= 0) or not np.all(np.isfinite(sigma)):
        logger.warning("field %s: some spw flux errors are 0 (one antenna ratio); unweighted fit", name)
        sigma = np.ones(n)
    a = np.vander(x, order + 1, increasing=True)
    w = 1.0 / sigma**2
    normal = a.T @ (a * w[:, None])
    covar = np.linalg.inv(normal)
    coef = covar @ (a.T @ (w * y))
    resid = y - a @ coef
    dof = n - (order + 1)
    chi2 = float(np.sum(w * resid**2))
    # casacore LinearFit::errors(): sqrt(diag(C)) scaled by the rms per unit weight
    mu = math.sqrt(chi2 / dof) if dof > 0 else 0.0
    coef_err = np.sqrt(np.diag(covar)) * mu
    fit = 10.0 ** coef[0]
    fit_err = math.log(10.0) * fit * coef_err[0] if coef_err[0] > 0 else 0.0
    return FieldFlux(fid, name, dict(spws), float(fit), float(fit_err), float(10.0**mean_log),
                     coef.astype(np.float64), coef_err.astype(np.float64), covar, order)  # fmt: skip


def _scaled_table(tab: CalTable, scale: Mapping[tuple[int, int], float]) -> CalTable:
    params = tab.params.copy()
    for (f, s), r in scale.items():
        rows = (tab.field_id == f) & (tab.spw_id == s)
        params[rows] = params[rows] / np.float32(r)
    return replace(tab, params=params, path=None)


def _incremental_time(tab: CalTable, fields: set[int], sel: np.ndarray) -> float:
    """The TIME CASA 6.7 gives every row of an incremental table.

    CASA iterates the selected solutions by (spw, time, field, antenna) and, each time the
    field id increases, assigns that time to the reference time of *every* field (a vector
    assignment), so all fields share the time of the last such step.
    """
    rows = np.isin(tab.field_id, sorted(fields)) & sel
    order = np.lexsort((tab.antenna1[rows], tab.field_id[rows], tab.time[rows], tab.spw_id[rows]))
    fld = tab.field_id[rows][order]
    tim = tab.time[rows][order]
    prev = np.concatenate(([-1], fld[:-1]))
    steps = np.nonzero(fld > prev)[0]
    return float(tim[steps[-1]]) if steps.size else float(tab.time.min())


def _n_spw_total(tab: CalTable, vis: Any) -> int:
    n = int(tab.spw_id.max()) + 1
    if tab.subtables and "SPECTRAL_WINDOW" in tab.subtables:
        n = max(n, tab.subtables["SPECTRAL_WINDOW"].nrow)
    elif vis is not None:
        from fastcal.ms import open_ms

        n = max(n, len(open_ms(vis).spws))
    return n


def _subtable_spw_axes(tab: CalTable, vis: Any) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Channel frequencies and widths of every spw, from the table's SPECTRAL_WINDOW copy or the MS."""
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    if tab.subtables and "SPECTRAL_WINDOW" in tab.subtables:
        sub = tab.subtables["SPECTRAL_WINDOW"]
        for i, (f, w) in enumerate(zip(sub.cells("CHAN_FREQ"), sub.cells("CHAN_WIDTH"), strict=True)):
            if f is not None and w is not None:
                out[i] = (np.atleast_1d(np.asarray(f, float)), np.atleast_1d(np.asarray(w, float)))
    elif vis is not None:
        from fastcal.ms import open_ms

        for sp in open_ms(vis).spws:
            out[sp.id] = (np.asarray(sp.chan_freq), np.asarray(sp.chan_width))
    return out


def _incremental_table(tab: CalTable, scale: Mapping[tuple[int, int], float], fields: set[int],
                       sel: np.ndarray, n_ant: int, vis: Any) -> CalTable:
    """CASA's incremental table: a G Jones row per (spw, field, antenna) with 1/R (1 where no
    scale), every MS spw, one shared TIME (see :func:`_incremental_time`), PARAMERR 0, SNR 0,
    ANTENNA2 and SCAN_NUMBER -1."""
    all_fields = sorted(int(f) for f in np.unique(tab.field_id))
    spws = list(range(_n_spw_total(tab, vis)))
    t0 = _incremental_time(tab, fields, sel)
    f_idx, s_idx, a_idx, vals = [], [], [], []
    for s in spws:
        for f in all_fields:
            r = scale.get((f, s))
            for a in range(n_ant):
                s_idx.append(s)
                f_idx.append(f)
                a_idx.append(a)
                vals.append(abs(1.0 / r) if r else 1.0)
    n = len(vals)
    n_par = tab.n_par
    params = np.repeat(np.asarray(vals, np.complex64)[:, None, None], n_par, axis=2)
    zeros = np.zeros(params.shape, np.float32)
    freqs = {s: tab.chan_freq[s] for s in spws if s in tab.chan_freq}
    widths = {s: tab.chan_width[s] for s in spws if s in tab.chan_width}
    for s, (f, w) in _subtable_spw_axes(tab, vis).items():
        if s in spws and s not in freqs and len(f):
            freqs[s] = np.array([np.mean(f)])
            widths[s] = np.array([np.sum(np.abs(w))])
    return CalTable(
        vis_cal="G Jones", time=np.full(n, t0), interval=np.zeros(n), field_id=np.asarray(f_idx, np.int32),
        spw_id=np.asarray(s_idx, np.int32), antenna1=np.asarray(a_idx, np.int32),
        antenna2=np.full(n, -1, np.int32), scan=np.full(n, -1, np.int32), obs_id=np.zeros(n, np.int32),
        params=params, paramerr=zeros, snr=zeros.copy(), flag=np.zeros(params.shape, bool),
        chan_freq=freqs, chan_width=widths, ms_name=tab.ms_name, ms_path=tab.ms_path,
        subtables=tab.subtables,
    )  # fmt: skip


# --------------------------------------------------------------------------- CLI


def add_cli_arguments(parser: Any) -> None:
    """Arguments of ``fastcal fluxscale`` (see :func:`run_from_args`)."""
    parser.add_argument("caltable", help="input G/T amplitude calibration table")
    parser.add_argument("--vis", default=None, help="the Measurement Set (field names, setjy models)")
    parser.add_argument("--fluxtable", default=None, help="write the rescaled (or incremental) table here")
    parser.add_argument("--reference", required=True, help="reference (flux calibrator) field(s)")
    parser.add_argument("--transfer", default=None, help="transfer field(s) (default: all others)")
    parser.add_argument("--refspwmap", type=int, nargs="+", default=None, help="reference spw per spw")
    parser.add_argument("--gainthreshold", type=float, default=-1.0,
                        help="fractional deviation from the median amplitude to accept (default off)")
    parser.add_argument("--antenna", default="", help="antennas to use (ids, names, globs, !excluded)")
    parser.add_argument("--incremental", action="store_true", help="write an incremental table")
    parser.add_argument("--fitorder", type=int, default=1, help="spectral fit order (default 1)")
    parser.add_argument("--csv", default=None, metavar="FLUX_CSV", help="also write the fluxes as flux.csv")
    parser.add_argument("--json", default=None, help="also write CASA's result dictionary as JSON")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")


def run_from_args(args: Any) -> int:
    """Run ``fastcal fluxscale``: prints CASA-like flux lines and the fit per field."""
    import json

    res = fluxscale(args.caltable, reference=args.reference, transfer=args.transfer,
                    refspwmap=args.refspwmap, gainthreshold=args.gainthreshold, antenna=args.antenna,
                    incremental=args.incremental, fitorder=args.fitorder, vis=args.vis,
                    fluxtable=args.fluxtable, overwrite=args.overwrite)  # fmt: skip
    print(res.summary())
    if args.csv:
        from fastcal.flux import write_flux_csv

        write_flux_csv(args.csv, res, vis=args.vis, overwrite=args.overwrite)
    if args.json:
        if os.path.exists(args.json) and not args.overwrite:
            raise ParameterError(f"{args.json} exists; pass --overwrite to replace it")

        def plain(x: Any) -> Any:
            if isinstance(x, dict):
                return {k: plain(v) for k, v in x.items()}
            if isinstance(x, np.ndarray):
                return [plain(v) for v in x.tolist()] if x.ndim else plain(x.item())
            if isinstance(x, float) and not math.isfinite(x):
                return None
            return x.item() if isinstance(x, np.generic) else x

        with open(args.json, "w") as fh:
            json.dump(plain(res.as_casa_dict()), fh, indent=1)
    return 0
