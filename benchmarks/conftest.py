"""Benchmarks run in one process: pytest-benchmark switches itself off under xdist, which the
project's default ``addopts`` (``-n auto``) would otherwise start."""

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    if getattr(config.option, "numprocesses", None):
        config.option.numprocesses = 0
        config.option.dist = "no"
