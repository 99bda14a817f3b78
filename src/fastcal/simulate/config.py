"""Parameters of a simulated ALMA-like observation: :class:`SimConfig` and its presets.

Every parameter is validated when the config is built; a bad value raises
:class:`~fastcal.errors.ParameterError` naming the parameter, the value and the valid range.
Configs are frozen: derive variants with :meth:`SimConfig.replace`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fastcal.errors import ParameterError
from fastcal.simulate.corruptions import BAD_ANTENNA_KINDS

__all__ = [
    "SimConfig",
    "BAND_SETUPS",
    "BandSetup",
    "CORR_SETUPS",
    "BAD_ANTENNA_MODES",
    "SCAN_ROLES",
    "BASEBAND_WIDTH_HZ",
]

logger = logging.getLogger(__name__)

#: Width of one ALMA baseband (Hz): the Tsys spws span it.
BASEBAND_WIDTH_HZ: float = 2.0e9

#: Correlation setups accepted by ``corr`` -> casacore Stokes codes (XX=9, XY=10, YX=11, YY=12).
CORR_SETUPS: dict[str, tuple[int, ...]] = {
    "XX,YY": (9, 12),
    "XX,XY,YX,YY": (9, 10, 11, 12),
}

#: How a bad antenna misbehaves (see docs/simulate.md): the gain kinds of
#: :func:`fastcal.simulate.corruptions.bad_antenna_gain_factor` plus ``zeros`` (the correlator
#: writes zeros for every row with that antenna, WVR included) and ``bad_wvr`` (the antenna's
#: WVR outputs garbage, its interferometric data are fine).
BAD_ANTENNA_MODES: tuple[str, ...] = BAD_ANTENNA_KINDS + ("zeros", "bad_wvr")

#: Keys of ``scan_lengths``.
SCAN_ROLES: tuple[str, ...] = ("bandpass", "phase", "target", "atmosphere")

_DEFAULT_SCAN_LENGTHS: dict[str, float] = {
    "bandpass": 20 * 6.048,
    "phase": 5 * 6.048,
    "target": 20 * 6.048,
    "atmosphere": 2 * 6.048,
}


@dataclass(frozen=True)
class BandSetup:
    """Frequency layout of one ALMA band.

    Attributes
    ----------
    lo_hz : float
        First local-oscillator frequency (Hz); also the default flux reference frequency.
    bb_offsets_hz : tuple of float
        Centre of basebands BB_1..BB_4 relative to ``lo_hz`` (Hz); negative = lower sideband.
    pwv_mm : float
        Default precipitable water vapour for this band (mm).
    """

    lo_hz: float
    bb_offsets_hz: tuple[float, float, float, float]
    pwv_mm: float


#: Supported bands: typical continuum setups (LSB: BB_1, BB_2; USB: BB_3, BB_4).
BAND_SETUPS: dict[int, BandSetup] = {
    3: BandSetup(97.5e9, (-7.0e9, -5.0e9, 5.0e9, 7.0e9), 2.5),
    6: BandSetup(233.0e9, (-9.0e9, -7.0e9, 7.0e9, 9.0e9), 1.5),
    7: BandSetup(343.5e9, (-7.0e9, -5.0e9, 5.0e9, 7.0e9), 0.8),
}


def _check_int(name: str, value: Any, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ParameterError(f"{name}={value!r} is invalid; valid: an integer {lo}..{hi}")


def _check_float(name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > lo if lo_open else value >= lo) and value <= hi
    if not ok:
        left = "(" if lo_open else "["
        raise ParameterError(f"{name}={value!r} is invalid; valid: a number in {left}{lo:g}, {hi:g}]")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ParameterError(f"{name}={value!r} is invalid; valid: True or False")


def _normalise_bad_antennas(value: Any) -> tuple[tuple[int | str, str], ...]:
    """Accept ``3``, ``"DA41"``, ``"DA41:dead"``, ``(3, "dead")`` items -> ((ant, mode), ...)."""
    if value is None:
        return ()
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        value = [v for v in str(value).split(",") if v.strip()] if isinstance(value, str) else [value]
    out: list[tuple[int | str, str]] = []
    for item in value:
        mode = "dead"
        if isinstance(item, (tuple, list)) and len(item) == 2:
            ant, mode = item
        elif isinstance(item, str) and ":" in item:
            ant, mode = item.split(":", 1)
        else:
            ant = item
        if isinstance(ant, str):
            ant = ant.strip()
            ant = int(ant) if ant.lstrip("-").isdigit() else ant
        mode = str(mode).strip()
        if isinstance(ant, bool) or not isinstance(ant, (int, str)) or ant == "":
            raise ParameterError(
                f"bad_antennas item {item!r} is invalid; valid: an antenna index or name, "
                f"optionally with a mode ('DA41:dead' or (3, 'dead'))"
            )
        if mode not in BAD_ANTENNA_MODES:
            raise ParameterError(
                f"bad_antennas mode {mode!r} (item {item!r}) is invalid; valid: "
                f"{', '.join(BAD_ANTENNA_MODES)}"
            )
        out.append((ant, mode))
    return tuple(out)


@dataclass(frozen=True)
class SimConfig:
    """Everything that defines a simulated observation (see docs/simulate.md).

    Sizes
    -----
    n_ant : int
        Number of 12-m antennas, 4..64.
    n_spw : int
        Number of science spectral windows, 1..16; they cycle over basebands BB_1..BB_4.
    n_chan : int
        Channels per science spw, 1..16384 except 4 (4-channel spws look like WVR data).
    chan_width_hz : float or None
        Science channel width (Hz). None: the baseband's 2 GHz split evenly over the spws that
        share it (``2 GHz / (n_chan * spws_per_baseband)``; 128 ch -> 15.625 MHz, TDM-like).
    tsys_nchan : int
        Channels of each Tsys spw (2 GHz wide, one per used baseband), 2..8192, not 4.
    band : int
        ALMA band, one of 3, 6, 7.
    corr : str
        ``"XX,YY"`` or ``"XX,XY,YX,YY"``.
    int_time_s : float
        Correlator integration time (s) of science and Tsys-spw data.
    wvr_int_time_s : float
        WVR sampling interval (s), ALMA: 1.152.
    n_cycles : int
        Phase-calibrator/target cycles, 1..2000.
    scan_lengths : mapping
        Scan durations (s) by role ``bandpass``, ``phase``, ``target``, ``atmosphere``;
        rounded to whole integrations (at least one). Missing keys take the defaults.
    tsys_every_n_cycles : int
        An atmosphere scan on the target precedes the target scan of cycles 0, n, 2n, ...
    scan_gap_s : float
        Slew/setup gap between scans (s).
    date_mjd : float
        Observing day (MJD, integer part used).
    start_hour_angle_h : float or None
        Hour angle of the target at the start (h); None centres the track on transit.
    max_baseline_m : float
        Longest baseline of the generated compact configuration (m).

    Sky model (point sources at the phase centres, S = I0 (nu/nu0)**alpha)
    ----------------------------------------------------------------------
    bandpass_flux_jy, bandpass_spix, phase_flux_jy, phase_spix, target_flux_jy, target_spix
        I0 (Jy) and alpha of the bandpass/flux, phase and target fields.
    flux_ref_freq_hz : float or None
        nu0 (Hz); None = the band's LO frequency.

    Corruption switches (True = on)
    -------------------------------
    gains, bandpass, delays, tsys, wvr, dry_residual, noise : bool
        Complex gains, bandpass shape, per-antenna delays, Tsys/correlation-unit scaling,
        wet phase screen seen by the WVRs, residual path the WVRs do not see, thermal noise.

    Corruption parameters
    ---------------------
    gain_amp_rms, gain_phase_rms_deg, gain_timescale_s
        Slowly varying gains: fractional amplitude rms, phase rms (deg), correlation time (s).
    bandpass_ripple_amp, bandpass_ripple_phase_deg
        Bandpass ripple amplitude (fraction) and phase (deg).
    delay_rms_ns : float
        Rms of the per-antenna, per-polarisation delays (ns).
    pwv_mm : float or None
        Mean precipitable water vapour (mm); None = band default.
    wet_path_rms_m : float
        Rms of the wet excess path screen (m).
    wind_speed_m_s, wind_dir_deg : float
        Frozen-screen wind speed (m/s) and direction (deg).
    dry_fraction : float
        Rms of the residual (non-WVR) path relative to the wet rms (0.4: ALMA's WVR correction
        typically lowers the phase rms by 2-3x; sources in docs/simulate.md).
    trx_scatter : float
        Fractional rms scatter of receiver temperature between antennas/polarisations.
    aperture_efficiency : float
        eta_A in the Jy/K factor J = 2 k_B / (eta_A pi (D/2)^2).
    noise_scale : float
        Multiplies the radiometer-equation noise (>= 0).
    wvr_noise_k : float
        Rms of the WVR brightness-temperature noise per channel and 1.152 s sample (K; 0.1 K
        is ~7 um of path, a third of ALMA's 1 s path-accuracy specification at 1.5 mm PWV).

    Faults
    ------
    bad_antennas : sequence
        Antennas (index or name) with a mode from :data:`BAD_ANTENNA_MODES`: ``dead`` (gain 0:
        noise only), ``low_amp`` (gain amplitude 0.2..0.4), ``phase_jumps``, ``noisy_phase``,
        ``dead_pol`` (YY gain 0), ``zeros`` (all its rows, WVR included, are exactly 0),
        ``bad_wvr`` (its WVR outputs garbage, interferometric data fine). Items: ``3``,
        ``"DA41"``, ``"DA41:zeros"``, ``(3, "low_amp")``; default mode ``dead``.
    rfi, rfi_n_spikes, rfi_strength
        Add strong narrow spikes in ``rfi_n_spikes`` channels per science spw, with amplitude
        ``rfi_strength`` times the noise rms.
    edge_channels : bool
        Strong bandpass roll-off (to 0.02) over the outer ``round(n_chan/16)`` channels of
        each side of every spw (on top of the mild baseband roll-off of the bandpass shape).
    antpos_error_m : float
        Rms (m, per ITRF axis) of random antenna position errors: the ANTENNA table holds the
        nominal positions, the visibilities use the true ones. 0 = off.
    syscal_time_offset_s : float
        Offset added to SYSCAL TIME (as in older ALMA data). 0 = off.

    Output
    ------
    autocorr, model_data, weight_spectrum : bool
        Write autocorrelation rows; a MODEL_DATA column with the true sky model; WEIGHT_SPECTRUM
        and SIGMA_SPECTRUM columns.
    seed : int
        Seed of every random draw; equal configs write identical MSs.
    block_mb : float
        Target size (MB) of one generated DATA block; bounds the memory used.
    """

    n_ant: int = 8
    n_spw: int = 2
    n_chan: int = 64
    chan_width_hz: float | None = None
    tsys_nchan: int = 128
    band: int = 6
    corr: str = "XX,YY"
    int_time_s: float = 6.048
    wvr_int_time_s: float = 1.152
    n_cycles: int = 2
    scan_lengths: Mapping[str, float] = field(default_factory=lambda: dict(_DEFAULT_SCAN_LENGTHS))
    tsys_every_n_cycles: int = 3
    scan_gap_s: float = 4.0
    date_mjd: float = 60476.0
    start_hour_angle_h: float | None = None
    max_baseline_m: float = 300.0
    # sky model
    bandpass_flux_jy: float = 3.0
    bandpass_spix: float = -0.6
    phase_flux_jy: float = 0.8
    phase_spix: float = -0.7
    target_flux_jy: float = 0.1
    target_spix: float = 2.0
    flux_ref_freq_hz: float | None = None
    # corruption switches
    gains: bool = True
    bandpass: bool = True
    delays: bool = True
    tsys: bool = True
    wvr: bool = True
    dry_residual: bool = True
    noise: bool = True
    # corruption parameters
    gain_amp_rms: float = 0.05
    gain_phase_rms_deg: float = 30.0
    gain_timescale_s: float = 1800.0
    bandpass_ripple_amp: float = 0.05
    bandpass_ripple_phase_deg: float = 5.0
    delay_rms_ns: float = 0.2
    pwv_mm: float | None = None
    wet_path_rms_m: float = 1.0e-4
    wind_speed_m_s: float = 10.0
    wind_dir_deg: float = 0.0
    dry_fraction: float = 0.4
    trx_scatter: float = 0.1
    aperture_efficiency: float = 0.7
    noise_scale: float = 1.0
    wvr_noise_k: float = 0.1
    # faults
    bad_antennas: tuple = ()
    rfi: bool = False
    rfi_n_spikes: int = 3
    rfi_strength: float = 50.0
    edge_channels: bool = False
    antpos_error_m: float = 0.0
    syscal_time_offset_s: float = 0.0
    # output
    autocorr: bool = True
    model_data: bool = False
    weight_spectrum: bool = False
    seed: int = 0
    block_mb: float = 16.0

    def __post_init__(self) -> None:
        lengths = dict(_DEFAULT_SCAN_LENGTHS)
        if not isinstance(self.scan_lengths, Mapping):
            raise ParameterError(
                f"scan_lengths={self.scan_lengths!r} is invalid; valid: a mapping with keys "
                f"{', '.join(SCAN_ROLES)} (seconds)"
            )
        for key, val in self.scan_lengths.items():
            if key not in SCAN_ROLES:
                raise ParameterError(
                    f"scan_lengths key {key!r} is invalid; valid keys: {', '.join(SCAN_ROLES)}"
                )
            _check_float(f"scan_lengths[{key!r}]", val, 0.0, 86400.0, lo_open=True)
            lengths[key] = float(val)
        object.__setattr__(self, "scan_lengths", lengths)
        object.__setattr__(self, "bad_antennas", _normalise_bad_antennas(self.bad_antennas))
        if isinstance(self.corr, str):
            object.__setattr__(self, "corr", self.corr.replace(" ", "").upper())
        self._validate()

    # ------------------------------------------------------------------ validation
    def _validate(self) -> None:
        _check_int("n_ant", self.n_ant, 4, 64)
        _check_int("n_spw", self.n_spw, 1, 16)
        _check_int("n_chan", self.n_chan, 1, 16384)
        if self.n_chan == 4:
            raise ParameterError(
                "n_chan=4 is invalid: 4-channel spws are taken for WVR data; valid: 1..16384 except 4"
            )
        _check_int("tsys_nchan", self.tsys_nchan, 2, 8192)
        if self.tsys_nchan == 4:
            raise ParameterError("tsys_nchan=4 is invalid (looks like WVR data); valid: 2..8192 except 4")
        if self.band not in BAND_SETUPS or isinstance(self.band, bool):
            raise ParameterError(
                f"band={self.band!r} is invalid; valid: {', '.join(map(str, BAND_SETUPS))}"
            )
        if self.corr not in CORR_SETUPS:
            raise ParameterError(f"corr={self.corr!r} is invalid; valid: {' or '.join(CORR_SETUPS)}")
        _check_float("int_time_s", self.int_time_s, 0.0, 3600.0, lo_open=True)
        _check_float("wvr_int_time_s", self.wvr_int_time_s, 0.0, 600.0, lo_open=True)
        _check_int("n_cycles", self.n_cycles, 1, 2000)
        _check_int("tsys_every_n_cycles", self.tsys_every_n_cycles, 1, 2000)
        _check_float("scan_gap_s", self.scan_gap_s, 0.0, 3600.0)
        _check_float("date_mjd", self.date_mjd, 40000.0, 80000.0)
        if self.start_hour_angle_h is not None:
            _check_float("start_hour_angle_h", self.start_hour_angle_h, -12.0, 12.0)
        _check_float("max_baseline_m", self.max_baseline_m, 62.0, 20000.0)
        for role in ("bandpass", "phase", "target"):
            _check_float(f"{role}_flux_jy", getattr(self, f"{role}_flux_jy"), 0.0, 1.0e4)
            _check_float(f"{role}_spix", getattr(self, f"{role}_spix"), -10.0, 10.0)
        if self.flux_ref_freq_hz is not None:
            _check_float("flux_ref_freq_hz", self.flux_ref_freq_hz, 1.0e9, 2.0e12)
        for name in ("gains", "bandpass", "delays", "tsys", "wvr", "dry_residual", "noise",
                     "rfi", "edge_channels", "autocorr", "model_data", "weight_spectrum"):
            _check_bool(name, getattr(self, name))
        _check_float("gain_amp_rms", self.gain_amp_rms, 0.0, 1.0)
        _check_float("gain_phase_rms_deg", self.gain_phase_rms_deg, 0.0, 360.0)
        _check_float("gain_timescale_s", self.gain_timescale_s, 0.0, 1.0e6, lo_open=True)
        _check_float("bandpass_ripple_amp", self.bandpass_ripple_amp, 0.0, 0.9)
        _check_float("bandpass_ripple_phase_deg", self.bandpass_ripple_phase_deg, 0.0, 180.0)
        _check_float("delay_rms_ns", self.delay_rms_ns, 0.0, 100.0)
        if self.pwv_mm is not None:
            _check_float("pwv_mm", self.pwv_mm, 0.05, 10.0)
        _check_float("wet_path_rms_m", self.wet_path_rms_m, 0.0, 0.01)
        _check_float("wind_speed_m_s", self.wind_speed_m_s, 0.0, 50.0, lo_open=True)
        _check_float("wind_dir_deg", self.wind_dir_deg, -360.0, 360.0)
        _check_float("dry_fraction", self.dry_fraction, 0.0, 10.0)
        _check_float("trx_scatter", self.trx_scatter, 0.0, 0.5)
        _check_float("aperture_efficiency", self.aperture_efficiency, 0.0, 1.0, lo_open=True)
        _check_float("noise_scale", self.noise_scale, 0.0, 1.0e6)
        _check_float("wvr_noise_k", self.wvr_noise_k, 0.0, 100.0)
        _check_int("rfi_n_spikes", self.rfi_n_spikes, 1, self.n_chan if self.rfi else 16384)
        _check_float("rfi_strength", self.rfi_strength, 0.0, 1.0e6)
        _check_float("antpos_error_m", self.antpos_error_m, 0.0, 1.0)
        _check_float("syscal_time_offset_s", self.syscal_time_offset_s, -3600.0, 3600.0)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ParameterError(f"seed={self.seed!r} is invalid; valid: an integer >= 0")
        _check_float("block_mb", self.block_mb, 0.01, 4096.0)
        for ant, _mode in self.bad_antennas:
            if isinstance(ant, int) and not 0 <= ant < self.n_ant:
                raise ParameterError(
                    f"bad_antennas index {ant} is out of range; valid: 0..{self.n_ant - 1} "
                    f"or an antenna name"
                )
        if self.chan_width_hz is not None:
            _check_float("chan_width_hz", self.chan_width_hz, 0.0, BASEBAND_WIDTH_HZ, lo_open=True)
            used = self.n_chan * self.chan_width_hz * self.spws_per_baseband
            if used > BASEBAND_WIDTH_HZ * (1 + 1e-9):
                raise ParameterError(
                    f"chan_width_hz={self.chan_width_hz!r} with n_chan={self.n_chan} and "
                    f"{self.spws_per_baseband} spw(s) per baseband needs {used / 1e9:.3f} GHz; "
                    f"valid: at most {BASEBAND_WIDTH_HZ / 1e9:g} GHz per baseband, i.e. "
                    f"chan_width_hz <= {BASEBAND_WIDTH_HZ / (self.n_chan * self.spws_per_baseband):.6g}"
                )

    # ------------------------------------------------------------------ derived values
    @property
    def n_basebands(self) -> int:
        """Number of basebands in use (1..4); one Tsys spw each."""
        return min(self.n_spw, 4)

    @property
    def spws_per_baseband(self) -> int:
        """Largest number of science spws sharing one baseband."""
        return -(-self.n_spw // 4)

    @property
    def science_chan_width_hz(self) -> float:
        """Science channel width actually used (Hz)."""
        if self.chan_width_hz is not None:
            return float(self.chan_width_hz)
        return BASEBAND_WIDTH_HZ / (self.n_chan * self.spws_per_baseband)

    @property
    def corr_types(self) -> tuple[int, ...]:
        """casacore Stokes codes of the science correlations."""
        return CORR_SETUPS[self.corr]

    @property
    def n_corr(self) -> int:
        """Number of science correlations (2 or 4)."""
        return len(self.corr_types)

    @property
    def band_setup(self) -> BandSetup:
        """Frequency layout of ``band``."""
        return BAND_SETUPS[self.band]

    @property
    def pwv(self) -> float:
        """Mean PWV used (mm)."""
        return float(self.pwv_mm if self.pwv_mm is not None else self.band_setup.pwv_mm)

    @property
    def flux_ref_freq(self) -> float:
        """Flux reference frequency nu0 used (Hz)."""
        return float(self.flux_ref_freq_hz or self.band_setup.lo_hz)

    # ------------------------------------------------------------------ helpers
    def replace(self, **changes: Any) -> SimConfig:
        """Return a validated copy with some parameters changed (unknown names rejected)."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ParameterError(
                f"unknown simulator parameter(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}"
            )
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict of all parameters."""
        out = dataclasses.asdict(self)
        out["scan_lengths"] = dict(self.scan_lengths)
        out["bad_antennas"] = [list(item) for item in self.bad_antennas]
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SimConfig:
        """Inverse of :meth:`to_dict`."""
        values = dict(values)
        if "bad_antennas" in values and values["bad_antennas"] is not None:
            values["bad_antennas"] = tuple(tuple(v) if isinstance(v, list) else v
                                           for v in values["bad_antennas"])
        return cls().replace(**values)

    # ------------------------------------------------------------------ presets
    @classmethod
    def tiny(cls, **overrides: Any) -> SimConfig:
        """A few-second-old toy dataset: 5 antennas, 2 spws x 16 channels, 12 integrations.

        Writes in well under a second; meant for unit tests.
        """
        base = dict(
            n_ant=5, n_spw=2, n_chan=16, tsys_nchan=32, n_cycles=1,
            scan_lengths={"bandpass": 3 * 6.048, "phase": 2 * 6.048, "target": 2 * 6.048,
                          "atmosphere": 6.048},
        )
        base.update(overrides)
        return cls().replace(**base)

    @classmethod
    def demo(cls, **overrides: Any) -> SimConfig:
        """A small but complete dataset (10 antennas, 4 spws x 64 channels, 4 cycles, ~40 MB)."""
        base = dict(n_ant=10, n_spw=4, n_chan=64, n_cycles=4)
        base.update(overrides)
        return cls().replace(**base)

    @classmethod
    def large(cls, target_gb: float, **overrides: Any) -> SimConfig:
        """A config whose MS is about ``target_gb`` GB (for benchmarks).

        Starts from 43 antennas, 4 spws x 128 channels (or the given overrides), drops
        antennas (down to 8) while a single cycle is already too big, then adds cycles until
        the size is reached; when the track would exceed 6 h the channel count is doubled
        instead.
        """
        _check_float("target_gb", target_gb, 0.0, 1.0e4, lo_open=True)
        from fastcal.simulate.schedule import estimate_size_bytes, track_duration_s

        base = dict(n_ant=43, n_spw=4, n_chan=128)
        base.update(overrides)
        base.pop("n_cycles", None)
        cfg = cls().replace(**base, n_cycles=1)
        target = target_gb * 1e9
        while "n_ant" not in overrides and cfg.n_ant > 8 and estimate_size_bytes(cfg) > target:
            cfg = cfg.replace(n_ant=cfg.n_ant - 1)  # one cycle already too big: fewer antennas
        while True:
            one = estimate_size_bytes(cfg.replace(n_cycles=1))
            two = estimate_size_bytes(cfg.replace(n_cycles=2))
            per_cycle = max(two - one, 1.0)
            cycles = max(1, int(round((target - one) / per_cycle)) + 1)
            trial = cfg.replace(n_cycles=min(cycles, 2000))
            fixed_chan = "n_chan" in overrides or "chan_width_hz" in overrides
            if track_duration_s(trial) <= 6 * 3600.0 or fixed_chan or cfg.n_chan >= 8192:
                logger.info("large(%g GB): n_ant=%d n_spw=%d n_chan=%d n_cycles=%d (~%.2f GB)",
                            target_gb, trial.n_ant, trial.n_spw, trial.n_chan, trial.n_cycles,
                            estimate_size_bytes(trial) / 1e9)
                return trial
            cfg = cfg.replace(n_chan=cfg.n_chan * 2)
