"""The exact corruptions injected by the simulator, saved beside the Measurement Set.

``Truth.save()`` writes ``<ms>.truth.npz`` (arrays) and ``<ms>.truth.json`` (config, names,
scalars and a description of every array); :func:`load_truth` reads them back. Every field is
documented in docs/simulate.md (shapes, units, conventions).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fastcal.errors import FastcalError, ParameterError
from fastcal.simulate.config import SimConfig

__all__ = ["Truth", "load_truth", "truth_paths", "TRUTH_FORMAT_VERSION", "ARRAY_DOCS"]

logger = logging.getLogger(__name__)

TRUTH_FORMAT_VERSION = 1

#: name -> (shape, units, meaning) of every array in the npz.
ARRAY_DOCS: dict[str, tuple[str, str, str]] = {
    "antenna_positions": ("(n_ant, 3)", "m", "ITRF positions written to ANTENNA.POSITION (nominal)"),
    "antpos_offsets": ("(n_ant, 3)", "m", "true minus nominal ITRF position (antenna position errors)"),
    "science_spw_ids": ("(n_spw,)", "", "SPECTRAL_WINDOW ids of the science spws"),
    "tsys_spw_ids": ("(n_bb,)", "", "SPECTRAL_WINDOW ids of the Tsys spws (BB_1..)"),
    "science_tsys_spw": ("(n_spw,)", "", "Tsys spw id of the same baseband as each science spw"),
    "science_chan_freq": ("(n_spw, n_chan)", "Hz", "science channel frequencies"),
    "tsys_chan_freq": ("(n_bb, tsys_nchan)", "Hz", "Tsys-spw channel frequencies"),
    "field_flux_jy": ("(n_field,)", "Jy", "I0 of S = I0 (nu/nu0)**alpha per FIELD_ID"),
    "field_spix": ("(n_field,)", "", "alpha per FIELD_ID"),
    "time": ("(n_time,)", "MJD s", "every correlator integration centre (science and ATM scans)"),
    "time_scan": ("(n_time,)", "", "SCAN_NUMBER of each time"),
    "time_field": ("(n_time,)", "", "FIELD_ID of each time"),
    "time_is_atm": ("(n_time,)", "", "True for times of atmosphere (Tsys) scans"),
    "elevation": ("(n_time,)", "rad", "elevation of the observed field"),
    "azimuth": ("(n_time,)", "rad", "azimuth (N through E) of the observed field"),
    "gains": ("(n_time, n_ant, n_spw, 2)", "", "complex gain G per science spw and pol X,Y "
              "(bad-antenna factors included; Tsys-spw data use the gain of science spw "
              "bbc_no-1)"),
    "bandpass": ("(n_spw, n_ant, n_chan, 2)", "", "complex bandpass B per science spw"),
    "tsys_bandpass": ("(n_bb, n_ant, tsys_nchan, 2)", "", "complex bandpass B of the Tsys spws"),
    "delays_ns": ("(n_ant, 2)", "ns", "per-antenna delay tau: K = exp(-2j pi tau (nu - nu_c))"),
    "trx_k": ("(n_ant, 2)", "K", "receiver temperature per antenna and pol (flat in frequency)"),
    "tsys_science_mean": ("(n_time, n_ant, n_spw, 2)", "K", "channel-mean true Tsys of each "
                          "science spw at each time (Tsys of the observed field)"),
    "syscal_time": ("(n_syscal,)", "MJD s", "true centre of each Tsys measurement (ATM scan)"),
    "syscal_interval": ("(n_syscal,)", "s", "length of each Tsys measurement"),
    "syscal_scan": ("(n_syscal,)", "", "SCAN_NUMBER of each Tsys measurement"),
    "syscal_field": ("(n_syscal,)", "", "FIELD_ID of each Tsys measurement"),
    "syscal_tsys": ("(n_syscal, n_bb, n_ant, tsys_nchan, 2)", "K",
                    "TSYS_SPECTRUM written to SYSCAL (row order: time, spw, antenna)"),
    "wvr_time": ("(n_wvr,)", "MJD s", "WVR sample centres"),
    "wvr_path": ("(n_wvr, n_ant)", "m", "wet excess path seen by the WVRs at wvr_time"),
    "wet_path": ("(n_time, n_ant)", "m", "wet excess path at the correlator times"),
    "dry_path": ("(n_time, n_ant)", "m", "residual path the WVRs do not see, at the correlator times"),
    "rfi_channels": ("(n_spw, n_rfi)", "", "RFI channel indices per science spw (-1 padding)"),
    "edge_channels": ("(n_spw, n_chan)", "", "True for the edge channels given a strong roll-off "
                      "(edge_channels=True): round(n_chan/16) (>= 1) on each side"),
}


def truth_paths(ms_path: str | Path) -> tuple[Path, Path]:
    """(``<ms>.truth.npz``, ``<ms>.truth.json``) for a Measurement Set path."""
    p = Path(ms_path)
    return p.with_name(p.name + ".truth.npz"), p.with_name(p.name + ".truth.json")


@dataclass
class Truth:
    """Everything needed to check a calibration of a simulated MS (see docs/simulate.md).

    Arrays are described in :data:`ARRAY_DOCS`; pol axes are (X, Y); the science spw axis is
    in science order (SPECTRAL_WINDOW ids in ``science_spw_ids``).

    Attributes
    ----------
    config : SimConfig
        The parameters used.
    ms_path : str
        Measurement Set written.
    antenna_names, stations : list of str
        ANTENNA NAME and STATION per antenna index.
    field_names, field_roles : list of str
        FIELD NAME and role (``bandpass``, ``phase``, ``target``) per FIELD_ID.
    flux_ref_freq_hz : float
        nu0 of the sky model.
    wvr_spw_id : int
        The WVR spw (0).
    jy_per_k : float
        J, the Jy/K factor 2 k_B / (eta_A pi (D/2)^2).
    pwv_mm : float
        Mean PWV (mm).
    tsys_ref_k : float
        Tsys used for the noise level when the Tsys corruption is off (K).
    noise_sigma : dict
        spw id (str) -> noise rms of the real (and of the imaginary) part of one
        cross-correlation visibility in DATA units (0 if noise off).
    bad_antennas : dict
        antenna index -> mode.
    arrays : dict
        name -> numpy array, see :data:`ARRAY_DOCS`; also reachable as attributes.
    """

    config: SimConfig
    ms_path: str
    antenna_names: list[str]
    stations: list[str]
    field_names: list[str]
    field_roles: list[str]
    flux_ref_freq_hz: float
    wvr_spw_id: int
    jy_per_k: float
    pwv_mm: float
    tsys_ref_k: float
    noise_sigma: dict[str, float]
    bad_antennas: dict[int, str]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        arrays = self.__dict__.get("arrays", {})
        if name in arrays:
            return arrays[name]
        raise AttributeError(f"Truth has no attribute {name!r}")

    # ------------------------------------------------------------------ convenience
    @property
    def n_ant(self) -> int:
        """Number of antennas."""
        return len(self.antenna_names)

    def field_id(self, role: str) -> int:
        """FIELD_ID of a role (``bandpass``, ``phase``, ``target``)."""
        if role not in self.field_roles:
            raise ParameterError(f"field role {role!r} is unknown; valid: {', '.join(self.field_roles)}")
        return self.field_roles.index(role)

    def model_flux(self, field_id: int, freq_hz: np.ndarray) -> np.ndarray:
        """True Stokes I (Jy) of a field at the given frequencies: I0 (nu/nu0)**alpha."""
        f = np.asarray(freq_hz, dtype=np.float64)
        i0 = self.arrays["field_flux_jy"][field_id]
        alpha = self.arrays["field_spix"][field_id]
        return i0 * (f / self.flux_ref_freq_hz) ** alpha

    def science_index(self, spw_id: int) -> int:
        """Position of a science spw id on the truth spw axis."""
        ids = list(self.arrays["science_spw_ids"])
        if spw_id not in ids:
            raise ParameterError(f"spw {spw_id} is not a science spw; valid: {ids}")
        return ids.index(spw_id)

    def time_index(self, time_mjd_s: float | np.ndarray) -> int | np.ndarray:
        """Index into ``time`` of correlator integration times (exact match within 1 ms).

        A scalar time gives an int, an array an int array of the same length.
        """
        t = np.atleast_1d(np.asarray(time_mjd_s, dtype=np.float64))
        idx = np.clip(np.searchsorted(self.arrays["time"], t), 0, self.arrays["time"].size - 1)
        prev = np.clip(idx - 1, 0, None)
        better = np.abs(self.arrays["time"][prev] - t) < np.abs(self.arrays["time"][idx] - t)
        idx = np.where(better, prev, idx)
        if np.any(np.abs(self.arrays["time"][idx] - t) > 1e-3):
            raise ParameterError("time_mjd_s contains times that are not integration centres")
        return int(idx[0]) if np.ndim(time_mjd_s) == 0 else idx

    def true_tsys(self, freq_hz: np.ndarray, elevation_rad: np.ndarray) -> np.ndarray:
        """Recompute the true Tsys (K) as the simulator does.

        Parameters
        ----------
        freq_hz : numpy.ndarray
            (nchan,) frequencies (Hz).
        elevation_rad : numpy.ndarray
            Elevations (rad), shape E (e.g. ``elevation[time_index]``).

        Returns
        -------
        numpy.ndarray
            float64, shape E + (n_ant, nchan, 2): Tsys per antenna, channel and pol X, Y.
        """
        from fastcal.simulate import atmosphere

        f = np.asarray(freq_hz, dtype=np.float64)
        el = np.asarray(elevation_rad, dtype=np.float64)
        t0 = atmosphere.tsys_spectrum(f, el, self.pwv_mm, trx_k=0.0)
        t1 = atmosphere.tsys_spectrum(f, el, self.pwv_mm, trx_k=1.0)
        trx = self.arrays["trx_k"]  # (n_ant, 2)
        return t0[..., None, :, None] + (t1 - t0)[..., None, :, None] * trx[:, None, :]

    # ------------------------------------------------------------------ I/O
    def to_json_dict(self) -> dict[str, Any]:
        """The JSON part: config, names, scalars and array descriptions."""
        return {
            "format": "fastcal simulator truth",
            "format_version": TRUTH_FORMAT_VERSION,
            "ms_path": self.ms_path,
            "config": self.config.to_dict(),
            "antenna_names": self.antenna_names,
            "stations": self.stations,
            "field_names": self.field_names,
            "field_roles": self.field_roles,
            "flux_ref_freq_hz": self.flux_ref_freq_hz,
            "wvr_spw_id": self.wvr_spw_id,
            "jy_per_k": self.jy_per_k,
            "pwv_mm": self.pwv_mm,
            "tsys_ref_k": self.tsys_ref_k,
            "noise_sigma": self.noise_sigma,
            "bad_antennas": {str(k): v for k, v in self.bad_antennas.items()},
            "rfi_channels": {str(int(s)): [int(c) for c in row if c >= 0] for s, row in
                             zip(self.arrays["science_spw_ids"], self.arrays["rfi_channels"], strict=True)},
            "arrays": {k: {"shape": list(v.shape), "dtype": str(v.dtype),
                           "units": ARRAY_DOCS.get(k, ("", "", ""))[1],
                           "doc": ARRAY_DOCS.get(k, ("", "", ""))[2]}
                       for k, v in self.arrays.items()},
        }

    def save(self, ms_path: str | Path | None = None) -> tuple[Path, Path]:
        """Write ``<ms>.truth.npz`` and ``<ms>.truth.json``; returns their paths."""
        npz_path, json_path = truth_paths(ms_path or self.ms_path)
        with open(npz_path, "wb") as fh:
            np.savez(fh, **self.arrays)
        json_path.write_text(json.dumps(self.to_json_dict(), indent=1, sort_keys=False))
        logger.debug("truth written to %s and %s", npz_path, json_path)
        return npz_path, json_path


def load_truth(ms_path: str | Path) -> Truth:
    """Read the truth saved beside a simulated Measurement Set.

    Raises
    ------
    FastcalError
        If ``<ms>.truth.npz`` or ``<ms>.truth.json`` is missing or not a fastcal truth file.
    """
    npz_path, json_path = truth_paths(ms_path)
    for p in (npz_path, json_path):
        if not p.exists():
            raise FastcalError(f"truth file {p} does not exist; valid: a MS written by "
                               "fastcal.simulate.simulate()")
    meta = json.loads(json_path.read_text())
    if meta.get("format") != "fastcal simulator truth":
        raise FastcalError(f"{json_path} is not a fastcal simulator truth file")
    with np.load(npz_path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    names = {f.name for f in dataclasses.fields(Truth)}
    kwargs = {k: v for k, v in meta.items() if k in names and k not in ("config", "arrays")}
    kwargs["bad_antennas"] = {int(k): v for k, v in meta["bad_antennas"].items()}
    return Truth(config=SimConfig.from_dict(meta["config"]), arrays=arrays, **kwargs)
