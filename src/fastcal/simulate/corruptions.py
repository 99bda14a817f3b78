"""Instrumental corruptions for the simulator: gains, bandpasses, delays, RFI, bad antennas.

All functions are vectorised NumPy, deterministic given the ``numpy.random.Generator`` passed
in, and return arrays whose shapes are documented per function.  Complex gains are
complex128; the writer casts to complex64 when it forms visibilities.
"""

from __future__ import annotations

import logging

import numpy as np

from fastcal.errors import ParameterError

__all__ = [
    "BAD_ANTENNA_KINDS",
    "smooth_random_process",
    "smooth_gains",
    "bandpass_shape",
    "antenna_delays",
    "delay_phasor",
    "rfi_spikes",
    "rfi_spectrum",
    "pick_bad_antennas",
    "bad_antenna_gain_factor",
]

logger = logging.getLogger(__name__)

_N_FEATURES = 48
#: Kinds understood by :func:`bad_antenna_gain_factor`.
BAD_ANTENNA_KINDS: tuple[str, ...] = ("dead", "low_amp", "phase_jumps", "noisy_phase", "dead_pol")


def _check_count(name: str, value: int, lo: int, hi: int | None = None) -> int:
    if not isinstance(value, (int, np.integer)) or value < lo or (hi is not None and value > hi):
        valid = f"integers >= {lo}" if hi is None else f"integers {lo}..{hi}"
        raise ParameterError(f"{name}={value!r} is invalid; valid: {valid}")
    return int(value)


def _check_nonneg(name: str, value: float) -> float:
    if not np.isfinite(value) or value < 0:
        raise ParameterError(f"{name}={value!r} is invalid; valid: finite, >= 0")
    return float(value)


def smooth_random_process(
    time_s: np.ndarray, n_series: int, rng: np.random.Generator, timescale_s: float
) -> np.ndarray:
    """Stationary smooth Gaussian processes, unit variance in expectation.

    Random Fourier features: ``f(t) = sum_k a_k cos(w_k t) + b_k sin(w_k t)`` with
    ``w_k ~ N(0, 1/timescale^2)`` and ``a, b ~ N(0, 1/K)``, i.e. approximately a Gaussian
    process with covariance ``exp(-dt^2 / (2 timescale^2))``.

    Parameters
    ----------
    time_s : numpy.ndarray
        (n_time,) times (s; any origin, MJD seconds fine).
    n_series : int
        Number of independent series.
    rng : numpy.random.Generator
    timescale_s : float
        Correlation time (s), > 0.

    Returns
    -------
    numpy.ndarray
        float64 (n_time, n_series).
    """
    if not timescale_s > 0:
        raise ParameterError(f"timescale_s={timescale_s!r} is invalid; valid: > 0 s")
    t = np.asarray(time_s, dtype=np.float64).ravel()
    t = t - (t.min() if t.size else 0.0)
    omega = rng.normal(0.0, 1.0 / timescale_s, _N_FEATURES)
    coef = rng.normal(0.0, np.sqrt(1.0 / _N_FEATURES), (2, _N_FEATURES, n_series))
    arg = t[:, None] * omega[None, :]
    return np.cos(arg) @ coef[0] + np.sin(arg) @ coef[1]


def _normalise(x: np.ndarray, rms: float) -> np.ndarray:
    """Shift to zero mean and scale to the given rms (over all elements)."""
    x = x - x.mean()
    cur = np.sqrt(np.mean(x**2))
    return x * (rms / cur) if cur > 0 else x


def smooth_gains(
    time_s: np.ndarray,
    n_ant: int,
    n_spw: int,
    n_pol: int,
    rng: np.random.Generator,
    amp_rms: float = 0.05,
    phase_rms_deg: float = 30.0,
    timescale_s: float = 1800.0,
) -> np.ndarray:
    """Slowly varying complex antenna gains.

    ``g = (1 + a) exp(i phi)``.  The phase is, per antenna and pol, a constant offset plus a
    smooth random process (shared by all spws, as the spws of a baseband share the LO chain),
    plus a small constant per-spw offset; the amplitude fluctuation ``a`` is a smooth process
    per (antenna, spw, pol).  Both are shifted to zero mean and scaled so that over the whole
    array the rms of ``phi`` is exactly ``phase_rms_deg`` and the rms of ``a`` is exactly
    ``amp_rms`` (amplitudes are floored at 0.05).  Zero rms switches a part off.

    Parameters
    ----------
    time_s : numpy.ndarray
        (n_time,) times (s).
    n_ant, n_spw, n_pol : int
        Array sizes (n_ant >= 1, n_spw >= 1, n_pol 1..4).
    rng : numpy.random.Generator
    amp_rms : float
        Rms fractional amplitude fluctuation, >= 0.
    phase_rms_deg : float
        Rms phase (deg), >= 0.
    timescale_s : float
        Correlation time of the variations (s), > 0.

    Returns
    -------
    numpy.ndarray
        complex128 (n_time, n_ant, n_spw, n_pol).
    """
    n_ant = _check_count("n_ant", n_ant, 1)
    n_spw = _check_count("n_spw", n_spw, 1)
    n_pol = _check_count("n_pol", n_pol, 1, 4)
    amp_rms = _check_nonneg("amp_rms", amp_rms)
    phase_rms_deg = _check_nonneg("phase_rms_deg", phase_rms_deg)
    t = np.asarray(time_s, dtype=np.float64).ravel()
    n_time = t.size
    shape = (n_time, n_ant, n_spw, n_pol)
    # phase: per (ant, pol) offset + drift, shared across spw, plus a small per-spw offset
    drift = smooth_random_process(t, n_ant * n_pol, rng, timescale_s)
    drift = drift.reshape(n_time, n_ant, 1, n_pol)
    offset = rng.normal(0.0, 1.0, (1, n_ant, 1, n_pol))
    spw_off = rng.normal(0.0, 0.15, (1, n_ant, n_spw, n_pol))
    phase = np.broadcast_to(drift + offset + spw_off, shape)
    phase = np.deg2rad(_normalise(phase, phase_rms_deg)) if phase_rms_deg > 0 else np.zeros(shape)
    # amplitude: independent smooth process per (ant, spw, pol)
    amp_proc = smooth_random_process(t, n_ant * n_spw * n_pol, rng, timescale_s).reshape(shape)
    amp = 1.0 + _normalise(amp_proc, amp_rms) if amp_rms > 0 else np.ones(shape)
    amp = np.maximum(amp, 0.05)
    return amp * np.exp(1j * phase)


def bandpass_shape(
    chan_freq_hz: np.ndarray,
    n_ant: int,
    n_pol: int,
    rng: np.random.Generator,
    ripple_amp: float = 0.05,
    ripple_phase_deg: float = 5.0,
    edge_rolloff: bool = True,
) -> np.ndarray:
    """ALMA-like complex bandpass per antenna and polarisation.

    Amplitude: a common baseband-filter roll-off at the spw edges (8th-order Butterworth in
    the fractional band position, ~0.5 at the outermost channel edge; skipped when
    ``edge_rolloff`` is False) times ``1 + ripple``, where the ripple is a per-(antenna, pol)
    sum of a linear tilt and a few random sinusoids in frequency (periods 1/8..1/2 of the
    span) with rms ``ripple_amp``.  Phase: a per-(antenna, pol) random slope plus ripple with
    rms ``ripple_phase_deg``, plus a common phase bend at the edges (filter group delay) when
    ``edge_rolloff``.  The bandpass is smooth: a channel-to-channel change is tiny compared
    with the ripple amplitude for more than ~16 channels.

    Parameters
    ----------
    chan_freq_hz : numpy.ndarray
        (nchan,) channel frequencies (Hz), monotonic (either sense).
    n_ant, n_pol : int
    rng : numpy.random.Generator
    ripple_amp : float
        Rms fractional amplitude ripple, >= 0.
    ripple_phase_deg : float
        Rms phase ripple (deg), >= 0.
    edge_rolloff : bool
        Apply the baseband-edge roll-off.

    Returns
    -------
    numpy.ndarray
        complex128 (n_ant, nchan, n_pol).
    """
    f = np.asarray(chan_freq_hz, dtype=np.float64).ravel()
    n_ant = _check_count("n_ant", n_ant, 1)
    n_pol = _check_count("n_pol", n_pol, 1, 4)
    ripple_amp = _check_nonneg("ripple_amp", ripple_amp)
    ripple_phase_deg = _check_nonneg("ripple_phase_deg", ripple_phase_deg)
    nchan = f.size
    if nchan == 0:
        raise ParameterError("chan_freq_hz is empty; valid: at least one channel")
    if nchan == 1:
        return np.ones((n_ant, 1, n_pol), dtype=np.complex128)
    # fractional position: -1 .. +1 at the outer channel *edges*
    span = abs(f[-1] - f[0]) * nchan / (nchan - 1)
    x = 2.0 * (f - 0.5 * (f[0] + f[-1])) / span
    n_series = n_ant * n_pol
    amp_rip = _normalise(_ripple(x, n_series, rng), ripple_amp) if ripple_amp > 0 else 0.0
    ph_rip = _ripple(x, n_series, rng)
    ph_rip = np.deg2rad(_normalise(ph_rip, ripple_phase_deg)) if ripple_phase_deg > 0 else 0.0
    amp = 1.0 + amp_rip  # (nchan, n_series)
    phase = ph_rip + np.zeros((nchan, n_series))
    if edge_rolloff:
        amp = amp / np.sqrt(1.0 + (x / 1.0) ** 16)[:, None]
        phase = phase + np.deg2rad(10.0) * (x**7)[:, None]
    g = np.maximum(amp, 0.01) * np.exp(1j * phase)
    return g.reshape(nchan, n_ant, n_pol).transpose(1, 0, 2).copy()


def _ripple(x: np.ndarray, n_series: int, rng: np.random.Generator) -> np.ndarray:
    """(nchan, n_series) smooth ripple: tilt + 3 sinusoids with random periods and phases."""
    tilt = rng.normal(0.0, 0.5, n_series)[None, :] * x[:, None]
    periods = rng.uniform(0.25, 1.0, (3, n_series))  # in units of the half-span
    phases = rng.uniform(0.0, 2 * np.pi, (3, n_series))
    weights = rng.normal(0.0, 1.0, (3, n_series))
    sines = weights[None] * np.sin(2 * np.pi * x[:, None, None] / periods[None] + phases[None])
    return tilt + sines.sum(axis=1)


def antenna_delays(
    n_ant: int, n_pol: int, rng: np.random.Generator, rms_ns: float = 0.2
) -> np.ndarray:
    """Residual antenna delays (ns), Gaussian with rms ``rms_ns``; float64 (n_ant, n_pol).

    Each pol of an antenna gets a shared antenna term (80 % of the variance) plus an
    independent pol term, mimicking a common IF path with separate pol chains.
    """
    n_ant = _check_count("n_ant", n_ant, 1)
    n_pol = _check_count("n_pol", n_pol, 1, 4)
    rms_ns = _check_nonneg("rms_ns", rms_ns)
    common = rng.normal(0.0, np.sqrt(0.8) * rms_ns, (n_ant, 1))
    indiv = rng.normal(0.0, np.sqrt(0.2) * rms_ns, (n_ant, n_pol))
    return common + indiv


def delay_phasor(delay_ns: np.ndarray, chan_freq_hz: np.ndarray, ref_freq_hz: float) -> np.ndarray:
    """Delay term ``K = exp(-2j pi tau (nu - nu_ref))``.

    Parameters
    ----------
    delay_ns : numpy.ndarray
        (n_ant, n_pol) delays (ns).
    chan_freq_hz : numpy.ndarray
        (nchan,) frequencies (Hz).
    ref_freq_hz : float
        Reference (spw centre) frequency (Hz).

    Returns
    -------
    numpy.ndarray
        complex128 (n_ant, nchan, n_pol).
    """
    d = np.asarray(delay_ns, dtype=np.float64) * 1e-9
    df = np.asarray(chan_freq_hz, dtype=np.float64).ravel() - ref_freq_hz
    return np.exp(-2j * np.pi * d[:, None, :] * df[None, :, None])


def rfi_spikes(n_chan: int, rng: np.random.Generator, n_spikes: int) -> np.ndarray:
    """Channels hit by narrow-band RFI: ``min(n_spikes, n_chan)`` distinct sorted indices.

    Returns
    -------
    numpy.ndarray
        int64 (n_spikes,) channel indices in [0, n_chan).
    """
    n_chan = _check_count("n_chan", n_chan, 1)
    n_spikes = _check_count("n_spikes", n_spikes, 0)
    k = min(n_spikes, n_chan)
    return np.sort(rng.choice(n_chan, size=k, replace=False)).astype(np.int64)


def rfi_spectrum(
    n_chan: int,
    rng: np.random.Generator,
    n_spikes: int,
    amplitude: float = 50.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Additive RFI spikes: channel indices and complex amplitudes.

    Amplitudes have modulus ``amplitude * U(0.5, 1.5)`` (in the units of the data the writer
    adds them to, e.g. multiples of the per-visibility noise sigma) and random phases.

    Returns
    -------
    channels : numpy.ndarray
        int64 (k,) from :func:`rfi_spikes`.
    values : numpy.ndarray
        complex128 (k,).
    """
    amplitude = _check_nonneg("amplitude", amplitude)
    chans = rfi_spikes(n_chan, rng, n_spikes)
    mod = amplitude * rng.uniform(0.5, 1.5, chans.size)
    return chans, mod * np.exp(2j * np.pi * rng.random(chans.size))


def pick_bad_antennas(
    n_ant: int, n_bad: int, rng: np.random.Generator, exclude: tuple[int, ...] = ()
) -> np.ndarray:
    """Choose ``n_bad`` distinct antenna indices, never one in ``exclude`` (e.g. the refant).

    Returns
    -------
    numpy.ndarray
        int64 (n_bad,) sorted indices.
    """
    n_ant = _check_count("n_ant", n_ant, 1)
    n_bad = _check_count("n_bad", n_bad, 0)
    allowed = np.setdiff1d(np.arange(n_ant), np.asarray(exclude, dtype=np.int64))
    if n_bad > allowed.size:
        raise ParameterError(
            f"n_bad={n_bad} is too large; valid: 0..{allowed.size} for n_ant={n_ant} "
            f"excluding {list(exclude)}"
        )
    return np.sort(rng.choice(allowed, size=n_bad, replace=False)).astype(np.int64)


def bad_antenna_gain_factor(
    kind: str, n_time: int, n_pol: int, rng: np.random.Generator
) -> np.ndarray:
    """Multiplicative gain factor that makes an antenna misbehave.

    Kinds
    -----
    ``dead``         amplitude 0 (baselines to it carry noise only).
    ``low_amp``      amplitude a constant 0.2..0.4 (e.g. a mis-pointed or warm receiver).
    ``phase_jumps``  unit amplitude, phase jumping by 60..180 deg at 2..4 random times.
    ``noisy_phase``  unit amplitude, phase uniform random every integration.
    ``dead_pol``     one polarisation (the last) dead, the other(s) fine.

    Parameters
    ----------
    kind : str
        One of :data:`BAD_ANTENNA_KINDS`.
    n_time, n_pol : int
    rng : numpy.random.Generator

    Returns
    -------
    numpy.ndarray
        complex128 (n_time, n_pol), to multiply the antenna's gains with.
    """
    n_time = _check_count("n_time", n_time, 0)
    n_pol = _check_count("n_pol", n_pol, 1, 4)
    out = np.ones((n_time, n_pol), dtype=np.complex128)
    if kind == "dead":
        out[:] = 0.0
    elif kind == "low_amp":
        out *= rng.uniform(0.2, 0.4)
    elif kind == "phase_jumps":
        n_jumps = int(rng.integers(2, 5))
        where = np.sort(rng.integers(1, max(n_time, 2), n_jumps))
        steps = np.deg2rad(rng.uniform(60.0, 180.0, n_jumps) * rng.choice([-1, 1], n_jumps))
        phase = np.zeros(n_time)
        for w, s in zip(where, steps, strict=True):
            phase[w:] += s
        out *= np.exp(1j * phase)[:, None]
    elif kind == "noisy_phase":
        out *= np.exp(2j * np.pi * rng.random((n_time, n_pol)))
    elif kind == "dead_pol":
        out[:, -1] = 0.0
    else:
        raise ParameterError(
            f"bad antenna kind={kind!r} is unknown; valid: {', '.join(BAD_ANTENNA_KINDS)}"
        )
    return out
