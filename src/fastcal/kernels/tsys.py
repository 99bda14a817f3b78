"""Array kernels of the Tsys flagging metrics (ALMA pipeline ``hifa_tsysflag`` views/rules).

Plain NumPy: the arrays are small (Tsys spectra of a few hundred channels, tens of antennas,
tens of measurements), so vectorised NumPy is faster to write and run than Numba here.
Array in, array out; no I/O, logging or exceptions for data conditions. The metric
definitions are documented in docs/tsys.md; fastcal.tsys drives them.

Shapes: spectra stacks are (..., nchan) or (n_time, n_ant, nchan, npol) float64; flags bool of
the same shape (True = flagged).
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = [
    "masked_median",
    "normalise",
    "derivative_metric",
    "shape_reference",
    "shape_metric",
    "sharps",
    "edge_index",
]

#: Channel step (normalised units) above which the fieldshape reference marks a line.
LINE_STEP = 0.05


def masked_median(x: np.ndarray, flag: np.ndarray, axis) -> tuple[np.ndarray, np.ndarray]:
    """Median over `axis` of the unflagged values.

    Returns
    -------
    (median, none)
        float64 median (0 where every value is flagged) and bool ``none`` (every value
        flagged), both with `axis` removed.
    """
    xm = np.where(flag, np.nan, np.asarray(x, np.float64))
    none = np.all(flag, axis=axis)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices
        med = np.nanmedian(xm, axis=axis)
    return np.where(none, 0.0, med), none


def normalise(data: np.ndarray, flag: np.ndarray, chan_axis: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Spectra divided by the median of their unflagged channels when that median is > 0
    (the pipeline's ``SpectrumResult(normalise=True)``).

    Returns
    -------
    (median, normalised)
        median with `chan_axis` removed (K), normalised data of `data`'s shape.
    """
    med, _ = masked_median(data, flag, axis=chan_axis)
    scale = np.expand_dims(np.where(med > 0, med, 1.0), chan_axis)
    return med, data / scale


def derivative_metric(norm: np.ndarray, flag: np.ndarray, chan_axis: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """100 x median absolute deviation of the channel-to-channel difference of normalised
    spectra (pairs with a flagged channel excluded).

    Returns
    -------
    (metric, none)
        metric with `chan_axis` removed; ``none``: no valid channel pair.
    """
    n = norm.shape[chan_axis]
    hi = np.take(norm, np.arange(1, n), axis=chan_axis)
    lo = np.take(norm, np.arange(0, n - 1), axis=chan_axis)
    d = hi - lo
    df = np.take(flag, np.arange(1, n), axis=chan_axis) | np.take(flag, np.arange(0, n - 1),
                                                                     axis=chan_axis)
    med, none = masked_median(d, df, axis=chan_axis)
    mad, _ = masked_median(np.abs(d - np.expand_dims(med, chan_axis)), df, axis=chan_axis)
    return 100.0 * mad, none


def shape_reference(norm: np.ndarray, flag: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference shape per antenna for the fieldshape metric.

    Parameters
    ----------
    norm, flag : (n_time, n_ant, nchan, npol)
        Normalised spectra of the reference-intent fields.

    Returns
    -------
    (ref, refbad) : (n_ant, nchan, npol)
        Channel-wise median over time; ``refbad`` flags channels without data and both
        channels of every step > :data:`LINE_STEP` (atmospheric lines).
    """
    ref, bad = masked_median(norm, flag, axis=0)
    step = np.abs(ref[:, 1:, :] - ref[:, :-1, :])
    line = (step > LINE_STEP) & ~(bad[:, 1:, :] | bad[:, :-1, :])
    lines = np.zeros_like(bad)
    lines[:, :-1, :] |= line
    lines[:, 1:, :] |= line
    return ref, bad | lines


def shape_metric(norm: np.ndarray, flag: np.ndarray, ref: np.ndarray,
                 refbad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """100 x mean |normalised - reference| over channels valid in both.

    Parameters
    ----------
    norm, flag : (n_time, n_ant, nchan, npol)
    ref, refbad : (n_ant, nchan, npol)

    Returns
    -------
    (metric, count) : (n_time, n_ant, npol)
        metric and the number of channels it used (0: not evaluated).
    """
    valid = ~(flag | refbad[None])
    cnt = valid.sum(axis=2)
    total = np.where(valid, np.abs(norm - ref[None]), 0.0).sum(axis=2)
    return 100.0 * total / np.maximum(cnt, 1), cnt


def sharps(data: np.ndarray, flag: np.ndarray, limit: float) -> np.ndarray:
    """The pipeline VectorFlagger 'sharps' rule on one spectrum (nchan,).

    Steps |d[i+1] - d[i]| > `limit` (between unflagged channels) are sharp; each block of
    consecutive steps > 2 x the median of the other steps that contains a sharp step is
    flagged from its start up to (excluding) its last step, as the pipeline's loop does (a
    block reaching the last step is not broadened); both channels of every flagged step are
    returned flagged.

    Returns
    -------
    bool (nchan,)
    """
    diff = np.abs(data[1:] - data[:-1])
    diff_flag = flag[1:] | flag[:-1]
    newflag = (diff > limit) & ~diff_flag
    rest = ~(diff_flag | newflag)
    if rest.any():
        median_flag = (diff > 2 * np.median(diff[rest])) & ~diff_flag
    else:
        median_flag = newflag.copy()
    start = end = None
    for i in range(median_flag.size):
        if median_flag[i]:
            end = i
            if start is None:
                start = i
        elif start is not None:
            if np.any(newflag[start:end]):
                newflag[start:end] = True
            start = None
    chan = np.zeros(data.size, bool)
    chan[:-1] = newflag
    chan[1:] |= newflag
    return chan


def edge_index(data: np.ndarray, flag: np.ndarray, limit: float) -> int:
    """The pipeline's edge finder on one spectrum (nchan,): within the first quarter, the
    first unflagged channel whose step to the next unflagged channel is < `limit` x the
    median of those steps. Channels before it are edge channels; 1 if none is found."""
    q = data.size // 4
    good = ~flag[:q]
    gd = data[:q][good]
    gi = np.arange(q)[good]
    if gd.size < 2:
        return 1
    steps = np.abs(gd[1:] - gd[:-1])
    hit = np.flatnonzero(steps < limit * np.median(steps))
    return int(gi[hit[0]]) if hit.size else 1
