"""Per-chunk progress reporting from library code, drawn only when a front end asks for it.

Library functions that loop over chunks (applycal, the solvers' reduction passes, the
simulator) announce their work here; by default nothing is drawn and the cost is one function
call per chunk. A front end (the CLI, ``fastcal demo``, ``fastcal pipeline`` on a terminal)
installs a callback with :func:`progress_callback`:

>>> from fastcal.progress import chunk_progress, progress_callback
>>> seen = []
>>> with progress_callback(lambda desc, done, total: seen.append((desc, done, total))):
...     with chunk_progress("applycal", total=2) as bar:
...         bar.advance()
...         bar.advance()
>>> seen
[('applycal', 0, 2), ('applycal', 1, 2), ('applycal', 2, 2)]

The callback receives ``(description, done, total)``; it is called once when the loop starts
(``done=0``) and after every :meth:`ChunkProgress.advance`. It runs in the thread that calls
``advance`` and must be cheap; exceptions it raises are logged and swallowed (progress never
breaks a calibration).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Callable, Iterator

__all__ = ["ChunkProgress", "chunk_progress", "progress_callback", "terminal_bar"]

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[str, int, int], None]

_lock = threading.Lock()
_callback: ProgressCallback | None = None


class ChunkProgress:
    """Counter for one loop over ``total`` units (chunks, blocks, intervals)."""

    def __init__(self, desc: str, total: int, callback: ProgressCallback | None) -> None:
        self.desc = desc
        self.total = int(total)
        self.done = 0
        self._callback = callback
        self._emit()

    def _emit(self) -> None:
        if self._callback is None:
            return
        try:
            self._callback(self.desc, self.done, self.total)
        except Exception:  # progress must never break the calibration
            logger.debug("progress callback failed", exc_info=True)
            self._callback = None

    def advance(self, n: int = 1) -> None:
        """Mark `n` more units done."""
        self.done += int(n)
        self._emit()

    def __enter__(self) -> ChunkProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def chunk_progress(desc: str, total: int) -> ChunkProgress:
    """Start reporting a loop of `total` units named `desc` (e.g. ``"applycal"``)."""
    with _lock:
        callback = _callback
    return ChunkProgress(desc, total, callback)


@contextlib.contextmanager
def progress_callback(callback: ProgressCallback | None) -> Iterator[None]:
    """Install `callback` for every :func:`chunk_progress` started inside the block."""
    global _callback
    with _lock:
        previous, _callback = _callback, callback
    try:
        yield
    finally:
        with _lock:
            _callback = previous


def terminal_bar(stream=None, width: int = 30) -> ProgressCallback:
    """A callback drawing ``desc [#####.....] done/total`` in place on `stream` (stderr)."""
    out = stream if stream is not None else sys.stderr

    def draw(desc: str, done: int, total: int) -> None:
        frac = 1.0 if total <= 0 else min(1.0, done / total)
        filled = int(round(frac * width))
        out.write(f"\r  {desc} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}\033[K")
        if total > 0 and done >= total:
            out.write("\r\033[K")
        out.flush()

    return draw
