"""Numba kernels: pure array-in/array-out functions, no I/O, dask, casacore or logging.

Algorithms, conventions and error definitions are documented in docs/kernels.md.

- :mod:`.average`: pre-apply Jones terms, divide by the model and sum per solution
  interval, baseline, channel bin and parallel hand (one pass over the data).
- :mod:`.gains`: StEFCal gain solver (G, T, B) with CASA's gates, PARAMERR and SNR, and
  reference-antenna rotation.
- :mod:`.delay`: K (delay) solver: FFT peak as CASA, then Gauss-Newton refinement.
"""

from fastcal.kernels.average import (
    average_model,
    average_point_model,
    baseline_index,
    dense_baselines,
    n_ant_from_n_bl,
)
from fastcal.kernels.delay import fft_delay, solve_delays
from fastcal.kernels.gains import (
    CALMODE_A,
    CALMODE_AP,
    CALMODE_P,
    STATUS_MINBLPERANT,
    STATUS_MINSNR,
    STATUS_NO_DATA,
    STATUS_NO_HESSIAN,
    STATUS_OK,
    apply_refant,
    calmode_code,
    solve_gains,
    vis_ratio,
)

__all__ = [
    "average_model",
    "average_point_model",
    "baseline_index",
    "dense_baselines",
    "n_ant_from_n_bl",
    "solve_gains",
    "apply_refant",
    "vis_ratio",
    "calmode_code",
    "CALMODE_AP",
    "CALMODE_P",
    "CALMODE_A",
    "STATUS_OK",
    "STATUS_NO_DATA",
    "STATUS_MINBLPERANT",
    "STATUS_NO_HESSIAN",
    "STATUS_MINSNR",
    "solve_delays",
    "fft_delay",
]
