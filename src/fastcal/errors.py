"""fastcal's exception hierarchy.

Every error fastcal raises on bad input is a :class:`FastcalError`. The subclasses also
derive from the matching built-in exception (``ValueError``, ``FileNotFoundError``...) so
callers that catch those keep working. Messages name the file, column, field, spw or
parameter at fault and what would have been accepted.
"""

from __future__ import annotations

__all__ = [
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
]


class FastcalError(Exception):
    """Base class of every error fastcal raises on purpose."""


class MSError(FastcalError):
    """Something is wrong with a Measurement Set on disk."""


class MSNotFoundError(MSError, FileNotFoundError):
    """The path does not exist."""


class NotAnMSError(MSError, ValueError):
    """The path exists but is not a casacore table, or not a Measurement Set."""


class MissingColumnError(MSError, ValueError):
    """A column (or subtable) fastcal needs is absent."""


class UnsupportedError(FastcalError, ValueError):
    """Valid input that fastcal does not handle (e.g. circular or single-hand correlations
    where a feature needs linear dual-pol)."""


class SelectionError(FastcalError, ValueError):
    """A selection (field, spw, scan, intent, antenna, timerange) is malformed or empty."""


class ParameterError(FastcalError, ValueError):
    """A parameter value is malformed or out of range (solint, combine, refant...)."""


class CalTableError(FastcalError, ValueError):
    """A calibration table is missing, malformed, of the wrong type, or cannot be mapped."""


class SolveError(FastcalError, RuntimeError):
    """A solve could not produce any usable solution."""


class ApplyError(FastcalError, RuntimeError):
    """applycal could not apply the requested calibration."""
