"""ALMA-like Measurement Set simulator with known corruptions and a truth file.

``simulate(path, **params)`` writes, with python-casacore alone, a Measurement Set that looks
like a real ALMA execution (WVR, Tsys and science spws, ALMA intents, SYSCAL, POINTING...) and
saves the exact injected corruptions beside it (``<ms>.truth.npz`` / ``<ms>.truth.json``).
See docs/simulate.md for the data model and the measurement equation.

Examples
--------
>>> from fastcal.simulate import SimConfig, simulate, load_truth
>>> truth = simulate("tiny.ms", config=SimConfig.tiny(), overwrite=True)   # doctest: +SKIP
>>> truth.gains.shape                                                       # doctest: +SKIP
(12, 5, 2, 2)
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path
from typing import Any

from fastcal.errors import FastcalError, ParameterError
from fastcal.simulate.config import SimConfig
from fastcal.simulate.truth import Truth, load_truth, truth_paths

__all__ = [
    "simulate",
    "SimConfig",
    "Truth",
    "load_truth",
    "truth_paths",
    "add_cli_arguments",
    "run_from_args",
]

logger = logging.getLogger(__name__)


def simulate(
    path: str | Path,
    config: SimConfig | None = None,
    *,
    overwrite: bool = False,
    **params: Any,
) -> Truth:
    """Write a simulated ALMA-like Measurement Set and its truth files.

    Parameters
    ----------
    path : str or Path
        Measurement Set to create. The truth goes to ``<path>.truth.npz`` and
        ``<path>.truth.json``.
    config : SimConfig, optional
        Base parameters (default ``SimConfig()``); ``params`` override single fields.
    overwrite : bool
        Replace an existing ``path`` (and its truth files). Default: refuse.
    **params
        Any :class:`SimConfig` field, e.g. ``n_ant=8, n_spw=2, n_chan=64, band=6,
        corr="XX,XY,YX,YY", n_cycles=2, seed=0, noise=False, bad_antennas=["DA41:dead"]``.

    Returns
    -------
    Truth
        The injected corruptions (also saved beside the MS).

    Raises
    ------
    ParameterError
        A parameter is unknown or out of range, or ``path`` exists and ``overwrite`` is False.
    """
    from fastcal.simulate.writer import write_ms

    cfg = (config or SimConfig()).replace(**params) if params else (config or SimConfig())
    path = Path(path)
    npz_path, json_path = truth_paths(path)
    if path.exists():
        if not overwrite:
            raise ParameterError(
                f"{path} already exists; pass overwrite=True (--overwrite) to replace it, or "
                f"choose a new path"
            )
        if not path.is_dir():
            raise FastcalError(f"{path} exists and is not a directory; refusing to remove it")
        shutil.rmtree(path)
    for p in (npz_path, json_path):
        if p.exists() and overwrite:
            p.unlink()
    if not path.parent.exists():
        raise ParameterError(f"parent directory of {path} does not exist; valid: an existing directory")
    try:
        truth = write_ms(path, cfg)
        truth.save(path)
    except BaseException:
        # never leave a half-written MS behind
        shutil.rmtree(path, ignore_errors=True)
        for p in (npz_path, json_path):
            p.unlink(missing_ok=True)
        raise
    return truth


# ---------------------------------------------------------------------------- CLI
_SWITCHES = ("gains", "bandpass", "delays", "tsys", "wvr", "dry_residual", "noise")


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``fastcal simulate`` arguments (positional PATH and options) to ``parser``."""
    parser.add_argument("path", help="Measurement Set to write")
    parser.add_argument("--preset", choices=("default", "tiny", "demo"), default="default",
                        help="start from a preset (default: %(default)s)")
    parser.add_argument("--size-gb", type=float, default=None,
                        help="scale cycles/channels to about this MS size in GB (benchmarks)")
    parser.add_argument("--n-ant", type=int, help="number of antennas, 4..64 (default 8)")
    parser.add_argument("--n-spw", type=int, help="science spws, 1..16 (default 2)")
    parser.add_argument("--n-chan", type=int, help="channels per science spw (default 64)")
    parser.add_argument("--chan-width-hz", type=float, help="science channel width in Hz")
    parser.add_argument("--tsys-nchan", type=int, help="channels per Tsys spw (default 128)")
    parser.add_argument("--band", type=int, choices=(3, 6, 7), help="ALMA band (default 6)")
    parser.add_argument("--cycles", dest="n_cycles", type=int,
                        help="phase-cal/target cycles (default 2)")
    parser.add_argument("--int-time", dest="int_time_s", type=float,
                        help="integration time in s (default 6.048)")
    parser.add_argument("--full-pol", action="store_true", help="write XX,XY,YX,YY")
    parser.add_argument("--seed", type=int, help="random seed (default 0)")
    parser.add_argument("--pwv", dest="pwv_mm", type=float, help="mean PWV in mm")
    parser.add_argument("--noise-scale", type=float, help="multiply the thermal noise")
    for name in _SWITCHES:
        parser.add_argument(f"--no-{name.replace('_', '-')}", dest=f"no_{name}",
                            action="store_true", help=f"switch off the {name} corruption")
    parser.add_argument("--bad-antennas", default=None,
                        help="comma-separated antennas with optional mode, e.g. 'DA41:dead,3:zeros'")
    parser.add_argument("--rfi", action="store_true", default=None, help="add RFI spikes")
    parser.add_argument("--edge-channels", action="store_true", default=None,
                        help="bandpass roll-off at spw edges")
    parser.add_argument("--no-autocorr", action="store_true", help="omit autocorrelation rows")
    parser.add_argument("--model-data", action="store_true", default=None,
                        help="write MODEL_DATA with the true sky model")
    parser.add_argument("--weight-spectrum", action="store_true", default=None,
                        help="write WEIGHT_SPECTRUM and SIGMA_SPECTRUM")
    parser.add_argument("--antpos-error-m", type=float,
                        help="rms antenna position error in m (visibilities use true positions)")
    parser.add_argument("--syscal-time-offset", dest="syscal_time_offset_s", type=float,
                        help="offset (s) added to SYSCAL TIME")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing PATH")


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """Build the :class:`SimConfig` described by parsed ``fastcal simulate`` arguments."""
    params: dict[str, Any] = {}
    for name in ("n_ant", "n_spw", "n_chan", "chan_width_hz", "tsys_nchan", "band", "n_cycles",
                 "int_time_s", "seed", "pwv_mm", "noise_scale", "rfi", "edge_channels",
                 "model_data", "weight_spectrum", "antpos_error_m", "syscal_time_offset_s"):
        value = getattr(args, name, None)
        if value is not None:
            params[name] = value
    if getattr(args, "full_pol", False):
        params["corr"] = "XX,XY,YX,YY"
    if getattr(args, "no_autocorr", False):
        params["autocorr"] = False
    for name in _SWITCHES:
        if getattr(args, f"no_{name}", False):
            params[name] = False
    if getattr(args, "bad_antennas", None):
        params["bad_antennas"] = args.bad_antennas
    preset = getattr(args, "preset", "default")
    if getattr(args, "size_gb", None) is not None:
        return SimConfig.large(args.size_gb, **params)
    if preset == "tiny":
        return SimConfig.tiny(**params)
    if preset == "demo":
        return SimConfig.demo(**params)
    return SimConfig().replace(**params)


def run_from_args(args: argparse.Namespace) -> Truth:
    """Run ``fastcal simulate`` from parsed arguments (see :func:`add_cli_arguments`)."""
    cfg = config_from_args(args)
    return simulate(args.path, config=cfg, overwrite=bool(getattr(args, "overwrite", False)))
