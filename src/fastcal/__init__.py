"""fastcal: fast, CASA-compatible calibration of ALMA-like Measurement Sets.

The public API is re-exported here. Submodules are imported on first use, so
``import fastcal`` stays fast (the Numba kernels compile, or load from cache, only when a
solver is first called).

Data flow: :func:`open_ms` / :func:`read_chunks` (``fastcal.ms``) → kernels
(``fastcal.kernels``) → :class:`CalTable` (``fastcal.caltable``) → applycal.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from fastcal.errors import (
    ApplyError,
    CalTableError,
    FastcalError,
    MissingColumnError,
    MSError,
    MSNotFoundError,
    NotAnMSError,
    ParameterError,
    SelectionError,
    SolveError,
    UnsupportedError,
)

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    # Measurement Set access
    "open_ms": "fastcal.ms",
    "MSInfo": "fastcal.ms",
    "parse_selection": "fastcal.ms",
    "read_chunks": "fastcal.ms",
    "iter_blocks": "fastcal.ms",
    "read_block": "fastcal.ms",
    "Chunk": "fastcal.ms",
    "ChunkWriter": "fastcal.ms",
    "write_column": "fastcal.ms",
    "ensure_column": "fastcal.ms",
    "require_parallel_hands": "fastcal.ms",
    # calibration tables
    "CalTable": "fastcal.caltable",
    "read_caltable": "fastcal.caltable",
    "as_caltable": "fastcal.caltable",
    # solvers and applycal
    "solve_gains": "fastcal.solve",
    "solve_bandpass": "fastcal.solve",
    "solve_delays": "fastcal.solve",
    "load_calibrator": "fastcal.solve",
    "VisCache": "fastcal.solve",
    "rank_refants": "fastcal.refant",
    "applycal": "fastcal.apply",
    "ApplyReport": "fastcal.apply",
    "prepare_gaintables": "fastcal.interp",
    "chunk_jones": "fastcal.interp",
    "apply_calapply": "fastcal.calapply",
    "read_calapply": "fastcal.calapply",
    "write_calapply": "fastcal.calapply",
    "save_flags": "fastcal.flagversions",
    "restore_flags": "fastcal.flagversions",
    "list_flag_versions": "fastcal.flagversions",
    # prior calibrations
    "tsys_table": "fastcal.tsys",
    "tsys_spwmap": "fastcal.tsys",
    "fix_syscal_times": "fastcal.tsys",
    "flag_tsys": "fastcal.tsys",
    "antpos_table": "fastcal.antpos",
    # WVR
    "solve_wvr": "fastcal.wvr",
    "read_wvr_data": "fastcal.wvr",
    "wvr_improvement": "fastcal.wvr",
    "wvr_qa_score": "fastcal.wvr",
    "WVRResult": "fastcal.wvr",
    # flux models and bootstrapping
    "setjy": "fastcal.flux",
    "virtual_model": "fastcal.flux",
    "clear_models": "fastcal.flux",
    "FluxModel": "fastcal.flux",
    "read_flux_csv": "fastcal.flux",
    "write_flux_csv": "fastcal.flux",
    "setjy_from_csv": "fastcal.flux",
    "FluxscaleResult": "fastcal.fluxscale",
    # report
    "render_weblog": "fastcal.report",
    # simulator
    "SimConfig": "fastcal.simulate",
    "load_truth": "fastcal.simulate",
}

# Functions named like their own module. Importing a submodule makes Python set the package
# attribute of that name to the module, which would shadow the function; the package class
# below binds the function instead, so these stay lazy too (``import fastcal`` stays cheap).
_SHADOWED = {"fluxscale": "fastcal.fluxscale", "simulate": "fastcal.simulate"}
_LAZY.update(_SHADOWED)


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _SHADOWED.get(name) == value.__name__:
            value = getattr(value, name)  # the function, not its module
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__all__ = [
    "__version__",
    "FastcalError",
    "MSError",
    "MSNotFoundError",
    "NotAnMSError",
    "MissingColumnError",
    "UnsupportedError",
    "SelectionError",
    "ParameterError",
    "CalTableError",
    "SolveError",
    "ApplyError",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fastcal' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
