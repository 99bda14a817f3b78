"""Write a simulated ALMA-like Measurement Set with python-casacore, block by block.

:func:`build_model` draws every random corruption once (small arrays: per antenna, per time,
per channel); :func:`write_ms` then creates the MS schema and subtables and streams the main
table scan by scan, DDID by DDID, in row blocks of about ``cfg.block_mb`` MB, so memory stays
bounded whatever the MS size.  The measurement equation is documented in docs/simulate.md.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import casacore.tables as ct
import numpy as np

from fastcal.progress import chunk_progress
from fastcal.simulate import array, atmosphere, corruptions
from fastcal.simulate.config import SimConfig
from fastcal.simulate.schedule import Scan, Schedule, SpwInfo, build_schedule
from fastcal.simulate.truth import Truth

__all__ = ["SimModel", "build_model", "write_ms", "edge_taper", "C_LIGHT", "K_BOLTZMANN"]

logger = logging.getLogger(__name__)

C_LIGHT = 299792458.0
K_BOLTZMANN = 1.380649e-23
_TILE_BYTES = 1 << 20
_RADIOMETER_PROCESSOR = 1
#: Tsys below this is treated as a zero (guards the square root).
_TSYS_FLOOR_K = 1.0


# ============================================================================ model
@dataclass
class SimModel:
    """Every drawn corruption and derived quantity the writer needs (see :class:`Truth`).

    Time-indexed arrays use the axis of ``times`` (all correlator integration centres).
    """

    cfg: SimConfig
    layout: array.AntennaLayout
    sched: Schedule
    times: np.ndarray
    time_scan: np.ndarray
    time_field: np.ndarray
    az: np.ndarray
    el: np.ndarray
    scan_first: dict[int, int]
    gains: np.ndarray
    bandpass: dict[int, np.ndarray]
    delays_ns: np.ndarray
    trx: np.ndarray
    wet: np.ndarray
    dry: np.ndarray
    wvr_time: np.ndarray
    wvr_path: np.ndarray
    wvr_first: dict[int, int]
    antpos_offsets: np.ndarray
    bad: dict[int, str]
    rfi: dict[int, tuple[np.ndarray, np.ndarray]]
    jy_per_k: float
    tsys_ref_k: float
    sigma_nominal: dict[int, float] = field(default_factory=dict)
    wvr_garbage: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def n_ant(self) -> int:
        return self.layout.n_ant

    def sigma(self, spw: SpwInfo) -> tuple[float, float]:
        """(noise rms actually added, SIGMA written) for a cross-correlation of ``spw``."""
        nominal = self.sigma_nominal[spw.spw_id]
        cfg = self.cfg
        scale = cfg.noise_scale if cfg.noise else 0.0
        return nominal * scale, nominal * (scale if scale > 0 else 1.0)


def _rngs(seed: int) -> dict[str, np.random.Generator]:
    names = ["layout", "gains", "bandpass", "delays", "wet", "dry", "trx", "antpos", "bad",
             "rfi", "wvr"]
    children = np.random.SeedSequence(seed).spawn(len(names))
    return {n: np.random.default_rng(c) for n, c in zip(names, children, strict=True)}


def _resolve_bad(cfg: SimConfig, names: list[str]) -> dict[int, str]:
    from fastcal.errors import ParameterError

    out: dict[int, str] = {}
    for ant, mode in cfg.bad_antennas:
        if isinstance(ant, str):
            if ant not in names:
                raise ParameterError(
                    f"bad_antennas name {ant!r} is not in the array; valid: {', '.join(names)} "
                    f"or indices 0..{len(names) - 1}"
                )
            ant = names.index(ant)
        out[int(ant)] = mode
    return out


def _time_axis(sched: Schedule) -> tuple[np.ndarray, ...]:
    times, scans, fields, az, el = [], [], [], [], []
    for scan in sched.scans:
        t = scan.times
        f = sched.fields[scan.field_id]
        a, e = array.azel(t, f.ra_rad, f.dec_rad)
        times.append(t)
        scans.append(np.full(t.size, scan.number))
        fields.append(np.full(t.size, scan.field_id))
        az.append(a)
        el.append(e)
    return tuple(np.concatenate(x) for x in (times, scans, fields, az, el))


def _subsample_offsets(cfg: SimConfig) -> np.ndarray:
    """Offsets (s) from an integration centre of the sub-samples the correlator averages.

    ``n_sub = max(1, round(int_time / wvr_int_time))`` equally spaced sub-sample centres,
    so the path is sampled at about the WVR cadence inside each integration.
    """
    n_sub = max(1, int(round(cfg.int_time_s / cfg.wvr_int_time_s)))
    return ((np.arange(n_sub) + 0.5) / n_sub - 0.5) * cfg.int_time_s


def _paths(cfg: SimConfig, layout: array.AntennaLayout, times: np.ndarray,
           wvr_times: np.ndarray, rngs: dict[str, np.random.Generator]) -> tuple[np.ndarray, ...]:
    """Wet and dry line-of-sight excess path (m) for the correlator and the WVRs.

    One frozen screen each (wet, dry) is sampled at the WVR sample centres and at
    sub-samples inside every correlator integration (:func:`_subsample_offsets`).  The
    correlator integrates the fringe over its integration: the returned correlator paths are
    the per-antenna means over the sub-samples (the phase of the time-averaged visibility to
    first order; the small amplitude decorrelation of the average is not modelled).  The WVR
    path is the wet path at the WVR sample centres.

    Returns
    -------
    tuple of numpy.ndarray
        wet (n_time, n_ant), dry (n_time, n_ant), wet at the WVR times (n_wvr, n_ant).
    """
    offs = _subsample_offsets(cfg)
    sub_t = (times[:, None] + offs[None, :]).ravel()
    all_t = np.union1d(sub_t, wvr_times)
    t0 = all_t[0]
    kw = dict(wind_speed_m_s=cfg.wind_speed_m_s, wind_dir_rad=float(np.deg2rad(cfg.wind_dir_deg)))
    n = (all_t.size, layout.n_ant)
    wet = (atmosphere.phase_screen(layout.enu, all_t - t0, rngs["wet"], cfg.wet_path_rms_m, **kw)
           if cfg.wvr and cfg.wet_path_rms_m > 0 else np.zeros(n))
    dry_rms = cfg.dry_fraction * cfg.wet_path_rms_m
    dry = (atmosphere.phase_screen(layout.enu, all_t - t0, rngs["dry"], dry_rms, **kw)
           if cfg.dry_residual and dry_rms > 0 else np.zeros(n))
    i_sub = np.searchsorted(all_t, sub_t)
    i_wvr = np.searchsorted(all_t, wvr_times)
    shape = (times.size, offs.size, layout.n_ant)
    return (wet[i_sub].reshape(shape).mean(axis=1), dry[i_sub].reshape(shape).mean(axis=1),
            wet[i_wvr])


def edge_taper(nchan: int) -> tuple[np.ndarray, np.ndarray]:
    """Strong roll-off of the outer ``max(1, round(nchan / 16))`` channels on each side.

    Returns the amplitude factor (nchan,), 0.02 at the outermost channel rising as sin^2 to
    ~1, and the boolean mask of the affected (edge) channels.
    """
    n_edge = max(1, int(round(nchan / 16)))
    if 2 * n_edge >= nchan:
        return np.ones(nchan), np.zeros(nchan, bool)
    ramp = 0.02 + 0.98 * np.sin(0.5 * np.pi * np.arange(n_edge) / n_edge) ** 2
    taper = np.ones(nchan)
    taper[:n_edge] = ramp
    taper[nchan - n_edge:] = ramp[::-1]
    mask = np.zeros(nchan, bool)
    mask[:n_edge] = mask[nchan - n_edge:] = True
    return taper, mask


def _bandpasses(cfg: SimConfig, sched: Schedule, n_ant: int,
                rng: np.random.Generator) -> dict[int, np.ndarray]:
    out = {}
    for spw in sched.setup.tsys + sched.setup.science:
        if cfg.bandpass:
            bp = corruptions.bandpass_shape(spw.chan_freq, n_ant, 2, rng, cfg.bandpass_ripple_amp,
                                            cfg.bandpass_ripple_phase_deg, edge_rolloff=True)
        else:
            bp = np.ones((n_ant, spw.nchan, 2), dtype=np.complex128)
        if cfg.edge_channels:
            bp = bp * edge_taper(spw.nchan)[0][None, :, None]
        out[spw.spw_id] = bp
    return out


def _tsys_parts(spw: SpwInfo, el: np.ndarray, pwv: float) -> tuple[np.ndarray, np.ndarray]:
    """Tsys = T0 + Trx * E (linear in Trx); returns T0, E with shape el.shape + (nchan,)."""
    t0 = atmosphere.tsys_spectrum(spw.chan_freq, el, pwv, trx_k=0.0)
    t1 = atmosphere.tsys_spectrum(spw.chan_freq, el, pwv, trx_k=1.0)
    return t0, t1 - t0


def build_model(cfg: SimConfig) -> SimModel:
    """Draw every corruption of ``cfg`` (deterministic in ``cfg.seed``)."""
    rngs = _rngs(cfg.seed)
    layout = array.alma_layout(cfg.n_ant, rngs["layout"], cfg.max_baseline_m)
    sched = build_schedule(cfg)
    n_ant = cfg.n_ant
    times, time_scan, time_field, az, el = _time_axis(sched)
    scan_first = {}
    wvr_first = {}
    pos = wpos = 0
    for scan in sched.scans:
        scan_first[scan.number] = pos
        wvr_first[scan.number] = wpos
        pos += scan.n_int
        wpos += scan.n_wvr
    wvr_time = sched.wvr_times()
    if cfg.gains:
        gains = corruptions.smooth_gains(times - times[0], n_ant, cfg.n_spw, 2, rngs["gains"],
                                         cfg.gain_amp_rms, cfg.gain_phase_rms_deg,
                                         cfg.gain_timescale_s)
    else:
        gains = np.ones((times.size, n_ant, cfg.n_spw, 2), dtype=np.complex128)
    bad = _resolve_bad(cfg, layout.names)
    for ant, mode in sorted(bad.items()):
        if mode in corruptions.BAD_ANTENNA_KINDS:
            factor = corruptions.bad_antenna_gain_factor(mode, times.size, 2, rngs["bad"])
            gains[:, ant, :, :] *= factor[:, None, :]
    delays = (corruptions.antenna_delays(n_ant, 2, rngs["delays"], cfg.delay_rms_ns)
              if cfg.delays else np.zeros((n_ant, 2)))
    trx_nominal = atmosphere.DEFAULT_TRX_K[cfg.band]
    trx = trx_nominal * np.clip(1.0 + cfg.trx_scatter * rngs["trx"].standard_normal((n_ant, 2)),
                                0.3, None)
    wet, dry, wvr_path = _paths(cfg, layout, times, wvr_time, rngs)
    antpos = (rngs["antpos"].normal(0.0, cfg.antpos_error_m, (n_ant, 3))
              if cfg.antpos_error_m > 0 else np.zeros((n_ant, 3)))
    rfi = {}
    if cfg.rfi:
        for spw in sched.setup.science:
            rfi[spw.spw_id] = corruptions.rfi_spectrum(spw.nchan, rngs["rfi"], cfg.rfi_n_spikes,
                                                       cfg.rfi_strength)
    diameter = float(layout.dish_diameter[0])
    jy_per_k = 2 * K_BOLTZMANN / (cfg.aperture_efficiency * np.pi * (diameter / 2) ** 2) * 1e26
    first_sci = sched.setup.science[0]
    i_ref = scan_first[next(s.number for s in sched.scans if not s.is_atmosphere)]
    t0_ref, e_ref = _tsys_parts(first_sci, el[i_ref], cfg.pwv)
    tsys_ref = float(np.median(t0_ref + trx_nominal * e_ref))
    model = SimModel(
        cfg=cfg, layout=layout, sched=sched, times=times, time_scan=time_scan,
        time_field=time_field, az=az, el=el, scan_first=scan_first, gains=gains,
        bandpass=_bandpasses(cfg, sched, n_ant, rngs["bandpass"]), delays_ns=delays, trx=trx,
        wet=wet, dry=dry, wvr_time=wvr_time, wvr_path=wvr_path, wvr_first=wvr_first,
        antpos_offsets=antpos, bad=bad, rfi=rfi, jy_per_k=float(jy_per_k), tsys_ref_k=tsys_ref,
    )
    for spw in sched.setup.tsys + sched.setup.science:
        sig = 1.0 / np.sqrt(2.0 * float(spw.chan_width[0]) * cfg.int_time_s)
        model.sigma_nominal[spw.spw_id] = sig if cfg.tsys else sig * jy_per_k * tsys_ref
    for ant, mode in bad.items():
        if mode == "bad_wvr":
            model.wvr_garbage[ant] = rngs["wvr"].uniform(5.0, 60.0, 4)
    return model


# ============================================================================ schema
def _tiled_col(name: str, value, valuetype: str, ndim: int, comment: str) -> dict:
    return ct.makearrcoldesc(name, value, ndim=ndim, comment=comment, valuetype=valuetype,
                             datamanagertype="TiledShapeStMan", datamanagergroup=f"Tiled{name}")


def _tile_shape(n_corr: int, n_chan: int, itemsize: int) -> np.ndarray:
    rows = int(np.clip(_TILE_BYTES // max(1, n_corr * n_chan * itemsize), 8, 8192))
    return np.array([n_corr, n_chan, rows], dtype=np.int32)


def _main_desc(cfg: SimConfig, max_chan: int) -> tuple[dict, dict]:
    """Table description and dminfo of the data-sized main-table columns (TiledShapeStMan)."""
    ncorr = cfg.n_corr
    cols = [
        ("DATA", 0j, "complex", 2, "The data column", 8),
        ("FLAG", False, "boolean", 2, "The data flags, array of bools with same shape as data", 1),
        ("WEIGHT", 0.0, "float", 1, "Weight for each polarization spectrum", 4),
        ("SIGMA", 0.0, "float", 1, "Estimated rms noise for channel with unity bandpass response", 4),
    ]
    if cfg.model_data:
        cols.append(("MODEL_DATA", 0j, "complex", 2, "model data", 8))
    if cfg.weight_spectrum:
        cols.append(("WEIGHT_SPECTRUM", 0.0, "float", 2, "Weight for each data point", 4))
        cols.append(("SIGMA_SPECTRUM", 0.0, "float", 2, "Sigma for each data point", 4))
    descs, dminfo = [], {}
    for i, (name, value, vtype, ndim, comment, size) in enumerate(cols):
        descs.append(_tiled_col(name, value, vtype, ndim, comment))
        if ndim == 2:
            tile = _tile_shape(ncorr, max_chan, size)
        else:
            tile = np.array([ncorr, _TILE_BYTES // 4 // (ncorr * size)], dtype=np.int32)
        dminfo[f"*{i + 1}"] = {"TYPE": "TiledShapeStMan", "NAME": f"Tiled{name}",
                               "SPEC": {"DEFAULTTILESHAPE": tile}, "COLUMNS": [name]}
    return ct.maketabdesc(descs), dminfo


def _add_subtable(ms: ct.table, path: Path, name: str, extra_cols: list[str]) -> ct.table:
    full = ct.complete_ms_desc(name)
    desc = {k: v for k, v in full.items() if k in extra_cols}
    sub = ct.default_ms_subtable(name, str(path / name), desc)
    ms.putkeyword(name, f"Table: {path / name}")
    return sub


def _add_columns(tab: ct.table, subtable: str, names: list[str]) -> None:
    full = ct.complete_ms_desc(subtable)
    for name in names:
        if name not in tab.colnames():
            tab.addcols(ct.makecoldesc(name, full[name]))


# ============================================================================ subtables
def _fill_antenna(ms_path: Path, m: SimModel) -> None:
    lay = m.layout
    with ct.table(str(ms_path / "ANTENNA"), readonly=False, ack=False) as t:
        t.addrows(lay.n_ant)
        t.putcol("NAME", list(lay.names))
        t.putcol("STATION", list(lay.stations))
        t.putcol("TYPE", ["GROUND-BASED"] * lay.n_ant)
        t.putcol("MOUNT", ["ALT-AZ"] * lay.n_ant)
        t.putcol("POSITION", lay.positions)
        t.putcol("OFFSET", np.zeros((lay.n_ant, 3)))
        t.putcol("DISH_DIAMETER", lay.dish_diameter)
        t.putcol("FLAG_ROW", np.zeros(lay.n_ant, bool))


def _fill_spectral(ms_path: Path, m: SimModel) -> None:
    spws = m.sched.setup.spws
    with ct.table(str(ms_path / "SPECTRAL_WINDOW"), readonly=False, ack=False) as t:
        _add_columns(t, "SPECTRAL_WINDOW", ["BBC_NO"])
        t.addrows(len(spws))
        for s in spws:
            r = s.spw_id
            t.putcell("NUM_CHAN", r, s.nchan)
            t.putcell("NAME", r, s.name)
            t.putcell("CHAN_FREQ", r, s.chan_freq)
            t.putcell("CHAN_WIDTH", r, s.chan_width)
            t.putcell("EFFECTIVE_BW", r, s.chan_width)
            t.putcell("RESOLUTION", r, s.chan_width)
            t.putcell("REF_FREQUENCY", r, s.centre_freq if s.role != "wvr" else atmosphere.WVR_LINE_HZ)
            t.putcell("TOTAL_BANDWIDTH", r, s.total_bandwidth)
            t.putcell("MEAS_FREQ_REF", r, 5)
            t.putcell("NET_SIDEBAND", r, s.net_sideband)
            t.putcell("BBC_NO", r, s.bbc_no)
            t.putcell("IF_CONV_CHAIN", r, 0)
            t.putcell("FREQ_GROUP", r, 0)
            t.putcell("FREQ_GROUP_NAME", r, "")
            t.putcell("FLAG_ROW", r, False)
    with ct.table(str(ms_path / "POLARIZATION"), readonly=False, ack=False) as t:
        t.addrows(2)
        for row, types in enumerate(((9,), m.cfg.corr_types)):
            prod = {9: (0, 0), 10: (0, 1), 11: (1, 0), 12: (1, 1)}
            t.putcell("NUM_CORR", row, len(types))
            t.putcell("CORR_TYPE", row, np.array(types, dtype=np.int32))
            t.putcell("CORR_PRODUCT", row, np.array([prod[c] for c in types], dtype=np.int32))
            t.putcell("FLAG_ROW", row, False)
    with ct.table(str(ms_path / "DATA_DESCRIPTION"), readonly=False, ack=False) as t:
        t.addrows(len(spws))
        t.putcol("SPECTRAL_WINDOW_ID", np.array([s.spw_id for s in spws], dtype=np.int32))
        t.putcol("POLARIZATION_ID", np.array([s.pol_id for s in spws], dtype=np.int32))
        t.putcol("FLAG_ROW", np.zeros(len(spws), bool))


def _fill_fields(ms_path: Path, m: SimModel, source: ct.table) -> None:
    fields = m.sched.fields
    start, end = m.sched.start, m.sched.end
    with ct.table(str(ms_path / "FIELD"), readonly=False, ack=False) as t:
        t.addrows(len(fields))
        dirs = np.array([[[f.ra_rad, f.dec_rad]] for f in fields])
        t.putcol("NAME", [f.name for f in fields])
        t.putcol("CODE", ["none"] * len(fields))
        t.putcol("TIME", np.full(len(fields), start))
        t.putcol("NUM_POLY", np.zeros(len(fields), np.int32))
        for col in ("DELAY_DIR", "PHASE_DIR", "REFERENCE_DIR"):
            t.putcol(col, dirs)
        t.putcol("SOURCE_ID", np.array([f.field_id for f in fields], dtype=np.int32))
        t.putcol("FLAG_ROW", np.zeros(len(fields), bool))
    spws = m.sched.setup.spws
    n = len(fields) * len(spws)
    source.addrows(n)
    source.putcol("SOURCE_ID", np.repeat([f.field_id for f in fields], len(spws)).astype(np.int32))
    source.putcol("SPECTRAL_WINDOW_ID", np.tile([s.spw_id for s in spws], len(fields)).astype(np.int32))
    source.putcol("NAME", [f.name for f in fields for _ in spws])
    source.putcol("DIRECTION", np.repeat([[f.ra_rad, f.dec_rad] for f in fields], len(spws), axis=0))
    source.putcol("PROPER_MOTION", np.zeros((n, 2)))
    source.putcol("CALIBRATION_GROUP", np.zeros(n, np.int32))
    source.putcol("CODE", ["none"] * n)
    source.putcol("TIME", np.full(n, 0.5 * (start + end)))
    source.putcol("INTERVAL", np.full(n, end - start))
    source.putcol("NUM_LINES", np.zeros(n, np.int32))


def _fill_misc(ms_path: Path, m: SimModel) -> None:
    from fastcal.simulate.schedule import STATE_MODES

    start, end = m.sched.start, m.sched.end
    with ct.table(str(ms_path / "STATE"), readonly=False, ack=False) as t:
        t.addrows(len(STATE_MODES))
        t.putcol("OBS_MODE", list(STATE_MODES.values()))
        t.putcol("SIG", np.ones(len(STATE_MODES), bool))
        t.putcol("REF", np.zeros(len(STATE_MODES), bool))
        t.putcol("CAL", np.zeros(len(STATE_MODES)))
        t.putcol("LOAD", np.zeros(len(STATE_MODES)))
        t.putcol("SUB_SCAN", np.ones(len(STATE_MODES), np.int32))
        t.putcol("FLAG_ROW", np.zeros(len(STATE_MODES), bool))
    with ct.table(str(ms_path / "OBSERVATION"), readonly=False, ack=False) as t:
        t.addrows(1)
        t.putcell("TELESCOPE_NAME", 0, "ALMA")
        t.putcell("TIME_RANGE", 0, np.array([start, end]))
        t.putcell("OBSERVER", 0, "fastcal")
        t.putcell("PROJECT", 0, "uid://A001/X1fa5/X1")
        t.putcell("SCHEDULE_TYPE", 0, "ALMA")
        t.putcell("SCHEDULE", 0, ["SchedulingBlock uid://A001/X1fa5/X2",
                                  "ExecBlock uid://A002/X1fa5/X3"])
        t.putcell("LOG", 0, ["simulated by fastcal.simulate"])
        t.putcell("RELEASE_DATE", 0, 0.0)
        t.putcell("FLAG_ROW", 0, False)
    with ct.table(str(ms_path / "PROCESSOR"), readonly=False, ack=False) as t:
        t.addrows(2)
        t.putcol("TYPE", ["CORRELATOR", "RADIOMETER"])
        t.putcol("SUB_TYPE", ["ALMA_CORRELATOR_MODE", "ALMA_RADIOMETER"])
        t.putcol("TYPE_ID", np.array([0, 1], np.int32))
        t.putcol("MODE_ID", np.zeros(2, np.int32))
        t.putcol("FLAG_ROW", np.zeros(2, bool))
    n = m.n_ant
    with ct.table(str(ms_path / "FEED"), readonly=False, ack=False) as t:
        t.addrows(n)
        t.putcol("ANTENNA_ID", np.arange(n, dtype=np.int32))
        t.putcol("FEED_ID", np.zeros(n, np.int32))
        t.putcol("SPECTRAL_WINDOW_ID", np.full(n, -1, np.int32))
        t.putcol("TIME", np.full(n, 0.5 * (start + end)))
        t.putcol("INTERVAL", np.full(n, end - start))
        t.putcol("NUM_RECEPTORS", np.full(n, 2, np.int32))
        t.putcol("BEAM_ID", np.full(n, -1, np.int32))
        t.putcol("BEAM_OFFSET", np.zeros((n, 2, 2)))
        t.putcol("POLARIZATION_TYPE", np.array([["X", "Y"]] * n))
        t.putcol("POL_RESPONSE", np.tile(np.eye(2, dtype=np.complex64), (n, 1, 1)))
        t.putcol("POSITION", np.zeros((n, 3)))
        t.putcol("RECEPTOR_ANGLE", np.tile([-0.25 * np.pi, 0.25 * np.pi], (n, 1)))
    with ct.table(str(ms_path / "HISTORY"), readonly=False, ack=False) as t:
        t.addrows(1)
        t.putcell("TIME", 0, start)
        t.putcell("OBSERVATION_ID", 0, 0)
        t.putcell("MESSAGE", 0, f"simulated by fastcal.simulate (seed {m.cfg.seed})")
        t.putcell("PRIORITY", 0, "NORMAL")
        t.putcell("ORIGIN", 0, "fastcal.simulate.writer")
        t.putcell("OBJECT_ID", 0, 0)
        t.putcell("APPLICATION", 0, "fastcal")
        t.putcell("CLI_COMMAND", 0, ["fastcal.simulate.simulate"])
        t.putcell("APP_PARAMS", 0, [f"{k}={v}" for k, v in m.cfg.to_dict().items()])


def _create_ms(path: Path, m: SimModel) -> None:
    max_chan = max(s.nchan for s in m.sched.setup.spws)
    desc, dminfo = _main_desc(m.cfg, max_chan)
    with ct.default_ms(str(path), desc, dminfo) as ms:
        ms.putcolkeyword("UVW", "MEASINFO", {"type": "uvw", "Ref": "J2000"})
        source = _add_subtable(ms, path, "SOURCE", [])
        source.close()
        syscal = _add_subtable(ms, path, "SYSCAL", ["TSYS", "TSYS_SPECTRUM", "TRX_SPECTRUM",
                                                    "TSKY_SPECTRUM", "TSYS_FLAG"])
        syscal.close()
    with ct.table(str(path / "POINTING"), readonly=False, ack=False) as t:
        for col in ("DIRECTION", "TARGET"):
            t.putcolkeyword(col, "MEASINFO", {"type": "direction", "Ref": "AZELGEO"})
    _fill_antenna(path, m)
    _fill_spectral(path, m)
    with ct.table(str(path / "SOURCE"), readonly=False, ack=False) as source:
        _fill_fields(path, m, source)
    _fill_misc(path, m)


# ============================================================================ visibilities
def _baselines(n_ant: int, autocorr: bool) -> tuple[np.ndarray, np.ndarray]:
    a1, a2 = np.triu_indices(n_ant, 0 if autocorr else 1)
    return a1.astype(np.int32), a2.astype(np.int32)


@dataclass
class _ScanGeometry:
    """Per-scan quantities shared by the DDIDs of a scan."""

    ti: np.ndarray  # (n_int,) indices into model.times
    times: np.ndarray  # (n_int,)
    uvw: np.ndarray  # (n_int, n_ant, 3) from nominal positions
    path: np.ndarray  # (n_int, n_ant) wet + dry - antenna-position w error (m)


def _scan_geometry(m: SimModel, scan: Scan) -> _ScanGeometry:
    f = m.sched.fields[scan.field_id]
    i0 = m.scan_first[scan.number]
    ti = np.arange(i0, i0 + scan.n_int)
    t = m.times[ti]
    uvw = array.antenna_uvw(m.layout.positions, t, f.ra_rad, f.dec_rad)
    path = m.wet[ti] + m.dry[ti]
    if np.any(m.antpos_offsets):
        # CASA's KAntPos convention (precession, nutation, UT1), frame at antenna 0
        path = path - array.antpos_w_error(m.antpos_offsets, t, f.ra_rad, f.dec_rad,
                                           m.layout.positions[0])
    return _ScanGeometry(ti, t, uvw, path)


def _antenna_factor(m: SimModel, spw: SpwInfo, geo: _ScanGeometry, it: np.ndarray,
                    tsys_parts: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Per-antenna voltage factor F (n_t, n_ant, nchan, 2) complex64 at scan integrations it.

    F = G B K exp(-2 pi i nu L / c) [/ sqrt(Tsys)], so V_pq = F_p conj(F_q) S / J.
    """
    g_idx = spw.science_index if spw.role == "science" else spw.bbc_no - 1
    gains = m.gains[geo.ti[it], :, g_idx, :]  # (n_t, n_ant, 2)
    nu = spw.chan_freq
    kdel = corruptions.delay_phasor(m.delays_ns, nu, spw.centre_freq)
    static = m.bandpass[spw.spw_id] * kdel  # (n_ant, nchan, 2)
    phase = np.exp((-2j * np.pi / C_LIGHT) * geo.path[it][:, :, None] * nu[None, None, :])
    f = gains[:, :, None, :] * static[None] * phase[..., None]
    if m.cfg.tsys:
        t0, e = tsys_parts
        tsys = t0[it][:, None, :, None] + e[it][:, None, :, None] * m.trx[None, :, None, :]
        f /= np.sqrt(np.maximum(tsys, _TSYS_FLOOR_K))
    return f.astype(np.complex64)


def _vis_block(m: SimModel, scan: Scan, spw: SpwInfo, geo: _ScanGeometry, rows: np.ndarray,
               bl: tuple[np.ndarray, np.ndarray], tsys_parts, rng: np.random.Generator) -> dict:
    """DATA (and MODEL_DATA) of a block of rows of one (scan, spw)."""
    cfg = m.cfg
    n_bl = bl[0].size
    it_row = rows // n_bl
    a1, a2 = bl[0][rows % n_bl], bl[1][rows % n_bl]
    it0 = it_row[0]
    it = np.arange(it0, it_row[-1] + 1)
    tl = it_row - it0
    f = _antenna_factor(m, spw, geo, it, tsys_parts)
    s_nu = _flux(m, scan.field_id, spw.chan_freq)
    scale = (s_nu / m.jy_per_k if cfg.tsys else s_nu).astype(np.float32)
    vis = f[tl, a1]  # (n_rows, nchan, 2); in-place products keep temporaries few
    other = f[tl, a2]
    np.conjugate(other, out=other)
    vis *= other
    del other
    vis *= scale[None, :, None]
    sigma_add, _sigma = m.sigma(spw)
    ncorr = cfg.n_corr
    par = [0, 3] if ncorr == 4 else [0, 1]
    if sigma_add > 0:
        out = rng.standard_normal((rows.size, spw.nchan, ncorr, 2), dtype=np.float32)
        out = out.view(np.complex64)[..., 0]
        out *= np.float32(sigma_add)
    else:
        out = np.zeros((rows.size, spw.nchan, ncorr), dtype=np.complex64)
    if ncorr == 4:
        out[..., 0] += vis[..., 0]
        out[..., 3] += vis[..., 1]
    else:
        out += vis
    auto = np.nonzero(a1 == a2)[0]
    if auto.size:
        _fill_autos(m, spw, geo, it0, tl[auto], a1[auto], out, auto, par, rng, sigma_add)
    if spw.spw_id in m.rfi:
        chans, values = m.rfi[spw.spw_id]
        sig_nom = m.sigma_nominal[spw.spw_id]
        fringe = np.exp(2j * np.pi * rng.random(rows.size)).astype(np.complex64)
        out[:, chans, :] += (fringe[:, None, None] * values[None, :, None] * sig_nom).astype(np.complex64)
        if auto.size:
            out[auto[:, None], chans[None, :], :] = np.abs(out[auto[:, None], chans[None, :], :])
    zeros = [a for a, mode in m.bad.items() if mode == "zeros"]
    if zeros:
        out[np.isin(a1, zeros) | np.isin(a2, zeros)] = 0
    result = {"DATA": out}
    if cfg.model_data:
        model = np.zeros((rows.size, spw.nchan, ncorr), dtype=np.complex64)
        model[..., par] = s_nu.astype(np.complex64)[None, :, None]
        result["MODEL_DATA"] = model
    return result


def _fill_autos(m: SimModel, spw: SpwInfo, geo: _ScanGeometry, it0: int, tl: np.ndarray,
                ant: np.ndarray, out: np.ndarray, rows: np.ndarray, par: list[int],
                rng: np.random.Generator, sigma_add: float) -> None:
    """Autocorrelations: |G B|^2 (normalised power; x J Tsys_ref when Tsys is off)."""
    g_idx = spw.science_index if spw.role == "science" else spw.bbc_no - 1
    g = m.gains[geo.ti[it0 + tl], ant, g_idx, :]  # (n_auto, 2)
    power = np.abs(g[:, None, :]) ** 2 * np.abs(m.bandpass[spw.spw_id][ant]) ** 2
    if not m.cfg.tsys:
        power = power * (m.jy_per_k * m.tsys_ref_k)
    rel = sigma_add / m.sigma_nominal[spw.spw_id] if m.sigma_nominal[spw.spw_id] else 0.0
    if rel > 0:
        rel_noise = np.sqrt(2.0) * rel / np.sqrt(2.0 * float(spw.chan_width[0]) * m.cfg.int_time_s)
        power = power * (1.0 + rel_noise * rng.standard_normal(power.shape))
    sub = out[rows]
    sub[..., par] = power
    out[rows] = sub


def _flux(m: SimModel, field_id: int, nu: np.ndarray) -> np.ndarray:
    cfg = m.cfg
    role = m.sched.fields[field_id].role
    i0 = getattr(cfg, f"{role}_flux_jy")
    alpha = getattr(cfg, f"{role}_spix")
    return i0 * (nu / cfg.flux_ref_freq) ** alpha


def _wvr_block(m: SimModel, scan: Scan, rng: np.random.Generator) -> dict:
    """WVR autocorrelation rows of a scan: (n_wvr * n_ant) rows, DATA (rows, 4, 1)."""
    cfg = m.cfg
    f = m.sched.fields[scan.field_id]
    w0 = m.wvr_first[scan.number]
    t = m.wvr_time[w0:w0 + scan.n_wvr]
    _az, el = array.azel(t, f.ra_rad, f.dec_rad)
    path = m.wvr_path[w0:w0 + scan.n_wvr]  # (n_w, n_ant) line-of-sight wet path (m)
    # The WVR sees the slant water column: pwv / sin(el) from the mean atmosphere plus
    # L / PATH_PER_PWV along the line of sight.  wvr_brightness multiplies a zenith column by
    # the airmass, so pass the zenith-equivalent column pwv + sin(el) L / PATH_PER_PWV.
    sin_el = np.sin(el)[:, None]
    pwv = np.maximum(cfg.pwv + sin_el * path * 1e3 / atmosphere.PATH_PER_PWV, 0.0)
    tb = atmosphere.wvr_brightness(pwv, el[:, None])  # (n_w, n_ant, 4)
    noise = cfg.wvr_noise_k * (cfg.noise_scale if cfg.noise else 0.0)
    if noise > 0:
        tb = tb + noise * rng.standard_normal(tb.shape)
    for ant, mode in m.bad.items():
        if mode == "bad_wvr":
            tb[:, ant, :] = m.wvr_garbage[ant][None, :] + 3.0 * rng.standard_normal((t.size, 4))
        elif mode == "zeros":
            tb[:, ant, :] = 0.0
    data = tb.reshape(-1, 4, 1).astype(np.complex64)
    return {"DATA": data, "times": t}


class _MainWriter:
    """Appends row blocks to the main table and POINTING."""

    def __init__(self, ms: ct.table, m: SimModel):
        self.ms = ms
        self.m = m
        self.cfg = m.cfg
        self.bytes = 0

    def put(self, cols: dict, nrow: int) -> None:
        start = self.ms.nrows()
        self.ms.addrows(nrow)
        for name, value in cols.items():
            self.ms.putcol(name, value, startrow=start, nrow=nrow)
        self.bytes += cols["DATA"].nbytes

    def scalar_cols(self, scan: Scan, ddid: int, times: np.ndarray, interval: float,
                    a1: np.ndarray, a2: np.ndarray, uvw: np.ndarray, sigma: float, ncorr: int,
                    nchan: int, processor: int) -> dict:
        n = a1.size
        sig = np.full((n, ncorr), sigma, dtype=np.float32)
        cols = {
            "TIME": times, "TIME_CENTROID": times,
            "INTERVAL": np.full(n, interval), "EXPOSURE": np.full(n, interval),
            "ANTENNA1": a1, "ANTENNA2": a2,
            "FEED1": np.zeros(n, np.int32), "FEED2": np.zeros(n, np.int32),
            "DATA_DESC_ID": np.full(n, ddid, np.int32),
            "PROCESSOR_ID": np.full(n, processor, np.int32),
            "FIELD_ID": np.full(n, scan.field_id, np.int32),
            "SCAN_NUMBER": np.full(n, scan.number, np.int32),
            "ARRAY_ID": np.zeros(n, np.int32), "OBSERVATION_ID": np.zeros(n, np.int32),
            "STATE_ID": np.full(n, scan.state_id, np.int32),
            "UVW": uvw, "FLAG_ROW": np.zeros(n, bool),
            "FLAG": np.zeros((n, nchan, ncorr), bool),
            "SIGMA": sig, "WEIGHT": (1.0 / sig**2).astype(np.float32),
        }
        if self.cfg.weight_spectrum:
            cols["SIGMA_SPECTRUM"] = np.broadcast_to(sig[:, None, :], (n, nchan, ncorr)).copy()
            cols["WEIGHT_SPECTRUM"] = (1.0 / cols["SIGMA_SPECTRUM"] ** 2).astype(np.float32)
        return cols

    def write_wvr(self, scan: Scan) -> None:
        m = self.m
        rng = np.random.default_rng([m.cfg.seed, scan.number, 0, 0])
        block = _wvr_block(m, scan, rng)
        n_ant = m.n_ant
        times = np.repeat(block["times"], n_ant)
        ants = np.tile(np.arange(n_ant, dtype=np.int32), block["times"].size)
        scale = m.cfg.noise_scale if m.cfg.noise else 0.0
        sigma = max(m.cfg.wvr_noise_k * (scale if scale > 0 else 1.0), 1e-3)
        cols = self.scalar_cols(scan, 0, times, m.cfg.wvr_int_time_s, ants, ants,
                                np.zeros((ants.size, 3)), sigma, 1, 4, _RADIOMETER_PROCESSOR)
        cols["DATA"] = block["DATA"]
        if m.cfg.model_data:
            cols["MODEL_DATA"] = np.ones_like(block["DATA"])
        self.put(cols, ants.size)

    def write_spw(self, scan: Scan, spw: SpwInfo, geo: _ScanGeometry,
                  bl: tuple[np.ndarray, np.ndarray]) -> None:
        m, cfg = self.m, self.cfg
        n_bl = bl[0].size
        n_rows = scan.n_int * n_bl
        ncorr = cfg.n_corr
        per_row = spw.nchan * ncorr * 8
        block_rows = max(1, int(cfg.block_mb * 1e6 // per_row))
        el = m.el[geo.ti]
        tsys_parts = _tsys_parts(spw, el, cfg.pwv) if cfg.tsys else None
        _sig_add, sigma = m.sigma(spw)
        for k, r0 in enumerate(range(0, n_rows, block_rows)):
            rows = np.arange(r0, min(n_rows, r0 + block_rows))
            rng = np.random.default_rng([cfg.seed, scan.number, spw.spw_id, k])
            it = rows // n_bl
            a1, a2 = bl[0][rows % n_bl], bl[1][rows % n_bl]
            uvw = geo.uvw[it, a2] - geo.uvw[it, a1]
            cols = self.scalar_cols(scan, spw.spw_id, geo.times[it], scan.int_time, a1, a2, uvw,
                                    sigma, ncorr, spw.nchan, 0)
            cols.update(_vis_block(m, scan, spw, geo, rows, bl, tsys_parts, rng))
            self.put(cols, rows.size)


def _write_pointing(ms_path: Path, m: SimModel) -> None:
    n_ant = m.n_ant
    with ct.table(str(ms_path / "POINTING"), readonly=False, ack=False) as t:
        for scan in m.sched.scans:
            i0 = m.scan_first[scan.number]
            sl = slice(i0, i0 + scan.n_int)
            n = scan.n_int * n_ant
            direction = np.stack([np.repeat(m.az[sl], n_ant), np.repeat(m.el[sl], n_ant)], -1)
            direction = direction[:, None, :]
            start = t.nrows()
            t.addrows(n)
            t.putcol("ANTENNA_ID", np.tile(np.arange(n_ant, dtype=np.int32), scan.n_int), start, n)
            t.putcol("TIME", np.repeat(m.times[sl], n_ant), start, n)
            t.putcol("INTERVAL", np.full(n, scan.int_time), start, n)
            t.putcol("NAME", [m.sched.fields[scan.field_id].name] * n, start, n)
            t.putcol("NUM_POLY", np.zeros(n, np.int32), start, n)
            t.putcol("TIME_ORIGIN", np.repeat(m.times[sl], n_ant), start, n)
            t.putcol("DIRECTION", direction, start, n)
            t.putcol("TARGET", direction, start, n)
            t.putcol("TRACKING", np.ones(n, bool), start, n)


def _syscal_values(m: SimModel) -> dict[str, np.ndarray]:
    """True Tsys of every atmosphere scan: times, intervals and (n_sys, n_bb, n_ant, nchan, 2)."""
    atm = [s for s in m.sched.scans if s.is_atmosphere]
    tsys_spws = m.sched.setup.tsys
    n_ch = tsys_spws[0].nchan
    out = np.empty((len(atm), len(tsys_spws), m.n_ant, n_ch, 2))
    tsky = np.empty_like(out)
    for i, scan in enumerate(atm):
        f = m.sched.fields[scan.field_id]
        _az, el = array.azel(np.array([scan.start + 0.5 * scan.duration]), f.ra_rad, f.dec_rad)
        for j, spw in enumerate(tsys_spws):
            t0, e = _tsys_parts(spw, el[0], m.cfg.pwv)
            out[i, j] = t0[None, :, None] + e[None, :, None] * m.trx[:, None, :]
            tsky[i, j] = (t0 / e)[None, :, None]
    return {
        "time": np.array([s.start + 0.5 * s.duration for s in atm]),
        "interval": np.array([s.duration for s in atm]),
        "scan": np.array([s.number for s in atm], dtype=np.int32),
        "field": np.array([s.field_id for s in atm], dtype=np.int32),
        "tsys": out, "tsky": tsky,
    }


def _write_syscal(ms_path: Path, m: SimModel, sc: dict[str, np.ndarray]) -> None:
    n_sys, n_bb, n_ant, n_ch, _ = sc["tsys"].shape
    n = n_sys * n_bb * n_ant
    spw_ids = np.array([s.spw_id for s in m.sched.setup.tsys], dtype=np.int32)
    tsys = sc["tsys"].reshape(n, n_ch, 2).astype(np.float32)
    with ct.table(str(ms_path / "SYSCAL"), readonly=False, ack=False) as t:
        t.addrows(n)
        t.putcol("ANTENNA_ID", np.tile(np.arange(n_ant, dtype=np.int32), n_sys * n_bb))
        t.putcol("FEED_ID", np.zeros(n, np.int32))
        t.putcol("SPECTRAL_WINDOW_ID", np.tile(np.repeat(spw_ids, n_ant), n_sys))
        t.putcol("TIME", np.repeat(sc["time"], n_bb * n_ant) + m.cfg.syscal_time_offset_s)
        t.putcol("INTERVAL", np.repeat(sc["interval"], n_bb * n_ant))
        t.putcol("TSYS_SPECTRUM", tsys)
        t.putcol("TSYS", tsys.mean(axis=1))
        t.putcol("TRX_SPECTRUM", np.broadcast_to(
            np.tile(m.trx[:, None, :], (n_sys * n_bb, n_ch, 1)), (n, n_ch, 2)).astype(np.float32))
        t.putcol("TSKY_SPECTRUM", sc["tsky"].reshape(n, n_ch, 2).astype(np.float32))
        t.putcol("TSYS_FLAG", np.zeros(n, bool))


# ============================================================================ truth
def _make_truth(m: SimModel, path: Path, sc: dict[str, np.ndarray]) -> Truth:
    cfg, setup = m.cfg, m.sched.setup
    sci, tsys_spws = setup.science, setup.tsys
    n_rfi = max((len(v[0]) for v in m.rfi.values()), default=0)
    rfi = np.full((len(sci), n_rfi), -1, dtype=np.int64)
    for k, spw in enumerate(sci):
        if spw.spw_id in m.rfi:
            ch = m.rfi[spw.spw_id][0]
            rfi[k, :ch.size] = ch
    tsys_mean = np.empty((m.times.size, m.n_ant, len(sci), 2))
    for k, spw in enumerate(sci):
        for i0 in range(0, m.times.size, 256):  # chunks keep (n_time, nchan) arrays small
            t0, e = _tsys_parts(spw, m.el[i0:i0 + 256], cfg.pwv)
            tsys_mean[i0:i0 + 256, :, k, :] = (t0.mean(-1)[:, None, None]
                                               + e.mean(-1)[:, None, None] * m.trx[None])
    is_atm = np.isin(m.time_scan, [s.number for s in m.sched.scans if s.is_atmosphere])
    arrays = {
        "antenna_positions": m.layout.positions,
        "antpos_offsets": m.antpos_offsets,
        "science_spw_ids": np.array([s.spw_id for s in sci], dtype=np.int64),
        "tsys_spw_ids": np.array([s.spw_id for s in tsys_spws], dtype=np.int64),
        "science_tsys_spw": np.array([s.tsys_spw_id for s in sci], dtype=np.int64),
        "science_chan_freq": np.stack([s.chan_freq for s in sci]),
        "tsys_chan_freq": np.stack([s.chan_freq for s in tsys_spws]),
        "field_flux_jy": np.array([getattr(cfg, f"{f.role}_flux_jy") for f in m.sched.fields]),
        "field_spix": np.array([getattr(cfg, f"{f.role}_spix") for f in m.sched.fields]),
        "time": m.times, "time_scan": m.time_scan.astype(np.int64),
        "time_field": m.time_field.astype(np.int64), "time_is_atm": is_atm,
        "elevation": m.el, "azimuth": m.az,
        "gains": m.gains,
        "bandpass": np.stack([m.bandpass[s.spw_id] for s in sci]),
        "tsys_bandpass": np.stack([m.bandpass[s.spw_id] for s in tsys_spws]),
        "delays_ns": m.delays_ns, "trx_k": m.trx, "tsys_science_mean": tsys_mean,
        "syscal_time": sc["time"], "syscal_interval": sc["interval"],
        "syscal_scan": sc["scan"].astype(np.int64), "syscal_field": sc["field"].astype(np.int64),
        "syscal_tsys": sc["tsys"],
        "wvr_time": m.wvr_time, "wvr_path": m.wvr_path,
        "wet_path": m.wet, "dry_path": m.dry,
        "rfi_channels": rfi,
        "edge_channels": np.stack([edge_taper(s.nchan)[1] & cfg.edge_channels for s in sci]),
    }
    noise_sigma = {str(s.spw_id): float(m.sigma(s)[0]) for s in tsys_spws + sci}
    noise_sigma[str(setup.wvr.spw_id)] = float(cfg.wvr_noise_k * (cfg.noise_scale if cfg.noise else 0.0))
    return Truth(
        config=cfg, ms_path=str(path), antenna_names=list(m.layout.names),
        stations=list(m.layout.stations), field_names=[f.name for f in m.sched.fields],
        field_roles=[f.role for f in m.sched.fields], flux_ref_freq_hz=cfg.flux_ref_freq,
        wvr_spw_id=setup.wvr.spw_id, jy_per_k=m.jy_per_k, pwv_mm=cfg.pwv,
        tsys_ref_k=m.tsys_ref_k, noise_sigma=noise_sigma, bad_antennas=dict(m.bad),
        arrays=arrays,
    )


# ============================================================================ driver
def write_ms(path: str | Path, cfg: SimConfig) -> Truth:
    """Write the Measurement Set of ``cfg`` at ``path`` (must not exist) and return the truth.

    The truth is not saved here; :func:`fastcal.simulate.simulate` saves it beside the MS.
    """
    t_start = time.perf_counter()
    path = Path(path).absolute()
    m = build_model(cfg)
    _create_ms(path, m)
    bl = _baselines(m.n_ant, cfg.autocorr)
    setup = m.sched.setup
    with ct.table(str(path), readonly=False, ack=False) as ms:
        writer = _MainWriter(ms, m)
        with chunk_progress("simulate", len(m.sched.scans)) as bar:
            for scan in m.sched.scans:
                geo = _scan_geometry(m, scan)
                writer.write_wvr(scan)
                for spw in (setup.tsys if scan.is_atmosphere else setup.science):
                    writer.write_spw(scan, spw, geo, bl)
                bar.advance()
        n_rows = ms.nrows()
    _write_pointing(path, m)
    sc = _syscal_values(m)
    _write_syscal(path, m, sc)
    elapsed = time.perf_counter() - t_start
    logger.info("wrote %s: %d rows, %.1f MB of DATA in %.2f s (%.0f MB/s)", path, n_rows,
                writer.bytes / 1e6, elapsed, writer.bytes / 1e6 / max(elapsed, 1e-9))
    return _make_truth(m, path, sc)
