"""Run CASA (casatools/casatasks) in a separate interpreter for parity tests.

CASA and python-casacore bundle conflicting casacore libraries, so CASA never runs in the
test process. A CASA interpreter is found from the environment variable
``FASTCAL_CASA_PYTHON``, else ``/work/casa-venv/bin/python`` if it exists; without one the
CASA tests are skipped.

A script given to :func:`run_casa` runs with its working directory set to a fresh temporary
directory (CASA writes ``casa-*.log`` files there) and reports back by calling
``emit(obj)``, which writes ``obj`` as JSON. numpy arrays are converted to lists; complex
values become ``{"re": [...], "im": [...]}`` (see :func:`from_json`).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

DEFAULT_CASA_PYTHON = "/work/casa-venv/bin/python"

_PROLOGUE = '''
import json as _json, os as _os
import numpy as _np

def _plain(x):
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, _np.ndarray) and _np.iscomplexobj(x):
        return {"re": x.real.tolist(), "im": x.imag.tolist()}
    if isinstance(x, complex):
        return {"re": x.real, "im": x.imag}
    if isinstance(x, _np.ndarray):
        return x.tolist()
    if isinstance(x, _np.generic):
        return x.item()
    return x

def emit(obj):
    with open(_os.environ["FASTCAL_CASA_RESULT"], "w") as _f:
        _json.dump(_plain(obj), _f)
'''


def casa_python() -> str | None:
    """Path of a CASA-capable Python interpreter, or None if none is configured."""
    candidate = os.environ.get("FASTCAL_CASA_PYTHON") or DEFAULT_CASA_PYTHON
    if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
        return candidate
    return None


@functools.lru_cache(maxsize=1)
def casa_available() -> bool:
    """True if :func:`casa_python` exists and can import casatasks."""
    python = casa_python()
    if python is None:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([python, "-c", "import casatasks"], cwd=tmp,
                              capture_output=True, timeout=300)
    return proc.returncode == 0


def skip_without_casa() -> None:
    """pytest.skip the calling test when no working CASA interpreter is configured."""
    if not casa_available():
        pytest.skip("no CASA interpreter (set FASTCAL_CASA_PYTHON or create /work/casa-venv)")


def run_casa(script: str, cwd: str | os.PathLike | None = None, timeout: float = 900) -> dict:
    """Run `script` with the CASA interpreter and return what it passed to ``emit``.

    Parameters
    ----------
    script : str
        Python source; ``emit(obj)`` is predefined.
    cwd : path, optional
        Working directory; default a temporary directory removed afterwards.
    timeout : float
        Seconds before the subprocess is killed.

    Raises
    ------
    RuntimeError
        If no CASA interpreter is configured, the script fails, or it emits nothing.
    """
    python = casa_python()
    if python is None:
        raise RuntimeError("no CASA interpreter configured (FASTCAL_CASA_PYTHON)")
    with tempfile.TemporaryDirectory(prefix="fastcal-casa-") as tmp:
        workdir = Path(cwd) if cwd is not None else Path(tmp)
        script_path = Path(tmp) / "script.py"
        result_path = Path(tmp) / "result.json"
        script_path.write_text(_PROLOGUE + "\n" + textwrap.dedent(script))
        env = dict(os.environ, FASTCAL_CASA_RESULT=str(result_path))
        env.pop("PYTHONPATH", None)
        proc = subprocess.run([python, str(script_path)], cwd=workdir, env=env,
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(
                f"CASA script failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
            )
        if not result_path.exists():
            raise RuntimeError(f"CASA script emitted nothing; stdout:\n{proc.stdout[-2000:]}")
        return json.loads(result_path.read_text())


def from_json(value):
    """Undo the conversion of ``emit``: lists -> arrays, {"re","im"} -> complex arrays."""
    if isinstance(value, dict) and set(value) == {"re", "im"}:
        return np.asarray(value["re"]) + 1j * np.asarray(value["im"])
    if isinstance(value, dict):
        return {k: from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return np.asarray(value)
    return value
