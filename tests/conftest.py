"""Shared fixtures: small simulated Measurement Sets made by fastcal's own simulator.

Session-scoped MSs are read-only by convention: a test that writes copies one first with
``copy_ms`` (a fresh copy under ``tmp_path``).
"""

from __future__ import annotations

import gc
import shutil
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _collect_tables():
    """Drop casacore table objects left by a test (cheap guard against held locks)."""
    yield
    gc.collect()


@pytest.fixture(scope="session")
def tiny_ms(tmp_path_factory):
    """(path, truth) of a tiny simulated ALMA-like MS (5 antennas, 2 spws x 16 channels)."""
    from fastcal.simulate import SimConfig, simulate

    path = tmp_path_factory.mktemp("tiny") / "tiny.ms"
    truth = simulate(path, config=SimConfig.tiny(seed=42))
    return path, truth


@pytest.fixture
def copy_ms(tmp_path):
    """Return a function copying an MS (and its truth files) into this test's tmp_path."""

    def _copy(src: str | Path, name: str | None = None) -> Path:
        src = Path(src)
        dst = tmp_path / (name or src.name)
        shutil.copytree(src, dst)
        for suffix in (".truth.npz", ".truth.json"):
            side = Path(str(src) + suffix)
            if side.exists():
                shutil.copy2(side, str(dst) + suffix)
        return dst

    return _copy
