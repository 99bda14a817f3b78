"""What is observed when, and how: fields, spectral windows, intents and scans.

This module is pure bookkeeping (no random numbers, no I/O): from a :class:`SimConfig` it
derives the spectral setup (:func:`spectral_setup`), the fields (:data:`FIELDS`), the STATE
rows (:data:`STATE_MODES`) and the scan list (:func:`build_schedule`), and estimates the MS
size (:func:`estimate_size_bytes`).

Scan sequence (SCAN_NUMBER from 1)::

    ATM(bandpass)  BANDPASS+FLUX  ATM(phase)
    { PHASE  [ATM(target)]  TARGET } x n_cycles    (ATM(target) in cycles 0, n, 2n, ...)
    PHASE

Atmosphere (ATM) scans carry Tsys-spw and WVR data only; all other scans carry science-spw
and WVR data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from fastcal.simulate.config import BASEBAND_WIDTH_HZ, SimConfig

__all__ = [
    "FieldInfo",
    "FIELDS",
    "FIELD_ROLES",
    "STATE_MODES",
    "SpwInfo",
    "SpectralSetup",
    "spectral_setup",
    "Scan",
    "Schedule",
    "build_schedule",
    "track_duration_s",
    "estimate_size_bytes",
    "WVR_SPW_NAME",
]

logger = logging.getLogger(__name__)

_SIDEREAL_DAY_S = 86164.0905
WVR_SPW_NAME = "WVR#NOMINAL"
#: SDM NetSideband enumeration as written by importasdm (NOSB=0, LSB=1, USB=2, DSB=3).
SIDEBAND_LSB, SIDEBAND_USB, SIDEBAND_DSB = 1, 2, 3


def _hms(h: float, m: float, s: float) -> float:
    return float(np.deg2rad(15.0 * (h + m / 60.0 + s / 3600.0)))


def _dms(d: float, m: float, s: float) -> float:
    sign = -1.0 if d < 0 else 1.0
    return float(np.deg2rad(sign * (abs(d) + m / 60.0 + s / 3600.0)))


@dataclass(frozen=True)
class FieldInfo:
    """One observed field (= one SOURCE).

    Attributes
    ----------
    field_id : int
        FIELD row (= SOURCE_ID).
    role : str
        ``bandpass`` (bandpass and flux calibrator), ``phase`` or ``target``.
    name : str
        FIELD NAME.
    ra_rad, dec_rad : float
        J2000 direction (rad).
    """

    field_id: int
    role: str
    name: str
    ra_rad: float
    dec_rad: float


#: FIELD roles in FIELD_ID order.
FIELD_ROLES: tuple[str, ...] = ("bandpass", "phase", "target")

#: The three fields: a J1924-2914-like bandpass/flux calibrator, a J1832-2039-like phase
#: calibrator and a target 4.6 deg from it (positions of the real objects).
FIELDS: tuple[FieldInfo, ...] = (
    FieldInfo(0, "bandpass", "J1924-2914", _hms(19, 24, 51.0560), _dms(-29, 14, 30.121)),
    FieldInfo(1, "phase", "J1832-2039", _hms(18, 32, 11.0465), _dms(-20, 39, 48.205)),
    FieldInfo(2, "target", "G11.92-0.61", _hms(18, 13, 58.110), _dms(-18, 54, 17.00)),
)

#: STATE rows: key -> OBS_MODE. STATE_ID = position in this dict.
STATE_MODES: dict[str, str] = {
    "atmosphere": "CALIBRATE_ATMOSPHERE#OFF_SOURCE,CALIBRATE_WVR#OFF_SOURCE",
    "bandpass": "CALIBRATE_BANDPASS#ON_SOURCE,CALIBRATE_FLUX#ON_SOURCE,CALIBRATE_WVR#ON_SOURCE",
    "phase": "CALIBRATE_PHASE#ON_SOURCE,CALIBRATE_WVR#ON_SOURCE",
    "target": "OBSERVE_TARGET#ON_SOURCE",
}


# ---------------------------------------------------------------------------- spectral setup
@dataclass(frozen=True)
class SpwInfo:
    """One SPECTRAL_WINDOW row.

    Attributes
    ----------
    spw_id : int
        SPECTRAL_WINDOW row; also the DATA_DESC_ID (one DDID per spw).
    role : str
        ``wvr``, ``tsys`` or ``science``.
    name : str
        ALMA-style NAME.
    chan_freq : numpy.ndarray
        float64 (nchan,) channel centres (Hz), increasing.
    chan_width : numpy.ndarray
        float64 (nchan,) channel widths (Hz), positive.
    bbc_no : int
        Baseband 1..4 (0 for the WVR).
    net_sideband : int
        SDM enumeration: 1 LSB, 2 USB, 3 DSB (WVR).
    pol_id : int
        POLARIZATION row (0: XX for the WVR, 1: science correlations).
    science_index : int
        Index among science spws (0..n_spw-1), -1 otherwise.
    tsys_spw_id : int
        The Tsys spw of the same baseband (its own id for Tsys spws, -1 for the WVR).
    """

    spw_id: int
    role: str
    name: str
    chan_freq: np.ndarray
    chan_width: np.ndarray
    bbc_no: int
    net_sideband: int
    pol_id: int
    science_index: int = -1
    tsys_spw_id: int = -1

    @property
    def nchan(self) -> int:
        """Number of channels."""
        return int(self.chan_freq.size)

    @property
    def total_bandwidth(self) -> float:
        """Sum of channel widths (Hz)."""
        return float(np.sum(self.chan_width))

    @property
    def centre_freq(self) -> float:
        """Centre of the covered band (Hz), nu_c of the delay term."""
        lo = self.chan_freq[0] - 0.5 * self.chan_width[0]
        hi = self.chan_freq[-1] + 0.5 * self.chan_width[-1]
        return float(0.5 * (lo + hi))


@dataclass(frozen=True)
class SpectralSetup:
    """All spectral windows: WVR first, then one Tsys spw per baseband, then science spws."""

    spws: tuple[SpwInfo, ...]

    @property
    def wvr(self) -> SpwInfo:
        """The 4-channel WVR spw (id 0)."""
        return self.spws[0]

    @property
    def tsys(self) -> tuple[SpwInfo, ...]:
        """Tsys spws, one per used baseband."""
        return tuple(s for s in self.spws if s.role == "tsys")

    @property
    def science(self) -> tuple[SpwInfo, ...]:
        """Science spws in science-index order."""
        return tuple(s for s in self.spws if s.role == "science")


def spectral_setup(cfg: SimConfig) -> SpectralSetup:
    """Build the spectral windows of ``cfg``.

    Science spw ``k`` (0-based) lies in baseband ``BB_(k % 4 + 1)``; the spws sharing a
    baseband sit side by side, centred in it, so each lies inside its baseband's Tsys spw
    (2 GHz, ``tsys_nchan`` channels, centred on the baseband).
    """
    from fastcal.simulate import atmosphere

    band = cfg.band_setup
    rb = f"ALMA_RB_{cfg.band:02d}"
    wvr_freq = atmosphere.WVR_LINE_HZ + np.asarray(atmosphere.WVR_CHANNEL_OFFSETS_HZ, float)
    spws: list[SpwInfo] = [
        SpwInfo(0, "wvr", WVR_SPW_NAME, wvr_freq,
                np.asarray(atmosphere.WVR_CHANNEL_BANDWIDTHS_HZ, float), 0, SIDEBAND_DSB, 0),
    ]
    n_bb = cfg.n_basebands
    for b in range(n_bb):
        centre = band.lo_hz + band.bb_offsets_hz[b]
        width = BASEBAND_WIDTH_HZ / cfg.tsys_nchan
        freq = centre - 0.5 * BASEBAND_WIDTH_HZ + (np.arange(cfg.tsys_nchan) + 0.5) * width
        sb = SIDEBAND_LSB if band.bb_offsets_hz[b] < 0 else SIDEBAND_USB
        spws.append(SpwInfo(1 + b, "tsys", f"X100000001#{rb}#BB_{b + 1}#SW-01#FULL_RES",
                            freq, np.full(cfg.tsys_nchan, width), b + 1, sb, 1, -1, 1 + b))
    width = cfg.science_chan_width_hz
    spw_bw = cfg.n_chan * width
    for k in range(cfg.n_spw):
        b = k % 4
        n_here = len(range(b, cfg.n_spw, 4))
        slot = k // 4
        centre = band.lo_hz + band.bb_offsets_hz[b]
        start = centre - 0.5 * n_here * spw_bw + slot * spw_bw
        freq = start + (np.arange(cfg.n_chan) + 0.5) * width
        sb = SIDEBAND_LSB if band.bb_offsets_hz[b] < 0 else SIDEBAND_USB
        spw_id = 1 + n_bb + k
        spws.append(SpwInfo(spw_id, "science", f"X100000002#{rb}#BB_{b + 1}#SW-{slot + 1:02d}#FULL_RES",
                            freq, np.full(cfg.n_chan, width), b + 1, sb, 1, k, 1 + b))
    return SpectralSetup(tuple(spws))


# ---------------------------------------------------------------------------- scans
@dataclass(frozen=True)
class Scan:
    """One scan.

    Attributes
    ----------
    number : int
        SCAN_NUMBER (1-based).
    kind : str
        ``atmosphere``, ``bandpass``, ``phase`` or ``target`` (also the STATE key).
    field_id : int
        FIELD row observed.
    state_id : int
        STATE row.
    start : float
        Scan start (MJD s).
    n_int : int
        Number of correlator integrations.
    int_time : float
        Integration time (s).
    wvr_int_time : float
        WVR sampling interval (s).
    """

    number: int
    kind: str
    field_id: int
    state_id: int
    start: float
    n_int: int
    int_time: float
    wvr_int_time: float

    @property
    def duration(self) -> float:
        """Scan length (s)."""
        return self.n_int * self.int_time

    @property
    def end(self) -> float:
        """Scan end (MJD s)."""
        return self.start + self.duration

    @property
    def times(self) -> np.ndarray:
        """Integration centres (MJD s), (n_int,)."""
        return self.start + (np.arange(self.n_int) + 0.5) * self.int_time

    @property
    def n_wvr(self) -> int:
        """Number of WVR samples in the scan."""
        return max(1, int(np.floor(self.duration / self.wvr_int_time + 1e-9)))

    @property
    def wvr_times(self) -> np.ndarray:
        """WVR sample centres (MJD s), (n_wvr,)."""
        return self.start + (np.arange(self.n_wvr) + 0.5) * self.wvr_int_time

    @property
    def is_atmosphere(self) -> bool:
        """True for Tsys (atmosphere) scans."""
        return self.kind == "atmosphere"


@dataclass(frozen=True)
class Schedule:
    """The scan list and the objects it refers to."""

    scans: tuple[Scan, ...]
    fields: tuple[FieldInfo, ...]
    setup: SpectralSetup

    @property
    def start(self) -> float:
        """Start of the first scan (MJD s)."""
        return self.scans[0].start

    @property
    def end(self) -> float:
        """End of the last scan (MJD s)."""
        return self.scans[-1].end

    def data_times(self) -> np.ndarray:
        """All correlator integration centres of all scans, sorted (MJD s)."""
        return np.concatenate([s.times for s in self.scans])

    def wvr_times(self) -> np.ndarray:
        """All WVR sample centres, sorted (MJD s)."""
        return np.concatenate([s.wvr_times for s in self.scans])


def _n_int(length_s: float, int_time: float) -> int:
    return max(1, int(round(length_s / int_time)))


def _scan_sequence(cfg: SimConfig) -> list[tuple[str, str]]:
    """[(kind, field role), ...] in observing order."""
    seq = [("atmosphere", "bandpass"), ("bandpass", "bandpass"), ("atmosphere", "phase")]
    for cycle in range(cfg.n_cycles):
        seq.append(("phase", "phase"))
        if cycle % cfg.tsys_every_n_cycles == 0:
            seq.append(("atmosphere", "target"))
        seq.append(("target", "target"))
    seq.append(("phase", "phase"))
    return seq


def _relative_scans(cfg: SimConfig) -> list[tuple[str, int, float, int]]:
    """[(kind, field_id, start offset s, n_int)] with the first scan at offset 0."""
    roles = {f.role: f.field_id for f in FIELDS}
    out = []
    t = 0.0
    for kind, role in _scan_sequence(cfg):
        n = _n_int(cfg.scan_lengths[kind], cfg.int_time_s)
        out.append((kind, roles[role], t, n))
        t += n * cfg.int_time_s + cfg.scan_gap_s
    return out


def track_duration_s(cfg: SimConfig) -> float:
    """Length of the whole observation (s), first scan start to last scan end."""
    rel = _relative_scans(cfg)
    kind, _f, t0, n = rel[-1]
    return t0 + n * cfg.int_time_s


def _start_time(cfg: SimConfig, duration: float) -> float:
    """Start (MJD s) on ``date_mjd`` so the target is at the requested hour angle.

    Default: the track is centred on the target's transit, which keeps all three fields
    (declinations -19..-29 deg, site latitude -23 deg) far above 30 deg elevation for any
    track shorter than ~7 h.
    """
    from fastcal.simulate import array

    target = FIELDS[2]
    day0 = float(np.floor(cfg.date_mjd)) * 86400.0
    if cfg.start_hour_angle_h is None:
        ha0 = -0.5 * duration / _SIDEREAL_DAY_S * 2 * np.pi
    else:
        ha0 = np.deg2rad(15.0 * cfg.start_hour_angle_h)
    ha_day0 = float(array.lst_rad(day0)) - target.ra_rad
    dha = np.mod(ha0 - ha_day0, 2 * np.pi)
    start = day0 + dha / (2 * np.pi) * _SIDEREAL_DAY_S
    return float(np.round(start, 3))


def build_schedule(cfg: SimConfig) -> Schedule:
    """Scan list of ``cfg`` (see the module docstring), with absolute times."""
    duration = track_duration_s(cfg)
    start = _start_time(cfg, duration)
    state_ids = {k: i for i, k in enumerate(STATE_MODES)}
    scans = tuple(
        Scan(number=i + 1, kind=kind, field_id=fid, state_id=state_ids[kind], start=start + t0,
             n_int=n, int_time=cfg.int_time_s, wvr_int_time=cfg.wvr_int_time_s)
        for i, (kind, fid, t0, n) in enumerate(_relative_scans(cfg))
    )
    sched = Schedule(scans=scans, fields=FIELDS, setup=spectral_setup(cfg))
    _check_elevation(sched)
    return sched


def _check_elevation(sched: Schedule) -> None:
    from fastcal.simulate import array

    lowest = 90.0
    for scan in sched.scans:
        f = sched.fields[scan.field_id]
        _az, el = array.azel(np.array([scan.start, scan.end]), f.ra_rad, f.dec_rad)
        lowest = min(lowest, float(np.degrees(el.min())))
    if lowest < 30.0:
        logger.warning("a field goes down to %.1f deg elevation (< 30 deg) during the track",
                       lowest)


# ---------------------------------------------------------------------------- size
def estimate_size_bytes(cfg: SimConfig) -> float:
    """Approximate on-disk size of the MS written for ``cfg`` (bytes).

    Counts DATA (8 B per visibility), FLAG (1 bit), optional MODEL_DATA / WEIGHT_SPECTRUM /
    SIGMA_SPECTRUM, WEIGHT+SIGMA and ~100 B of scalar columns per row; subtables are ignored.
    """
    n_bl = cfg.n_ant * (cfg.n_ant + (1 if cfg.autocorr else -1)) // 2
    per_vis = 8.0 + 0.125 + (8.0 if cfg.model_data else 0.0) + (8.0 if cfg.weight_spectrum else 0.0)
    total = 0.0
    for kind, _fid, _t0, n in _relative_scans(cfg):
        if kind == "atmosphere":
            n_vis = cfg.n_basebands * cfg.tsys_nchan * cfg.n_corr
            rows = n * n_bl * cfg.n_basebands
        else:
            n_vis = cfg.n_spw * cfg.n_chan * cfg.n_corr
            rows = n * n_bl * cfg.n_spw
        total += n * n_bl * n_vis * per_vis + rows * (100.0 + 8.0 * cfg.n_corr)
        n_wvr = max(1, int(n * cfg.int_time_s / cfg.wvr_int_time_s))
        total += n_wvr * cfg.n_ant * (4 * per_vis + 108.0)
    return total
