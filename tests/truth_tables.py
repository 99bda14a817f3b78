"""Calibration tables holding the simulator's true corruptions (test-only helpers)."""

from __future__ import annotations

from fastcal.caltable import CalTable


def true_gains(truth, path, flag=None) -> CalTable:
    """``G Jones`` of the true per-integration gains on every science spw (`flag` optional:
    spw -> bool (n_time, n_ant, 1, 2))."""
    sci = [int(s) for s in truth.science_spw_ids]
    return CalTable.from_solutions(
        "G Jones", {s: truth.gains[:, :, i, :][:, :, None, :] for i, s in enumerate(sci)},
        times=truth.time, ms=path, flag=flag,
    )  # fmt: skip


def true_bandpass(truth, path, flag=None) -> CalTable:
    """``B Jones`` of the true bandpass on every science spw, one solution time."""
    sci = [int(s) for s in truth.science_spw_ids]
    return CalTable.from_solutions(
        "B Jones", {s: truth.bandpass[i][None] for i, s in enumerate(sci)},
        times=truth.time[:1], ms=path, flag=flag,
    )  # fmt: skip
