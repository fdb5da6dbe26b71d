"""Per-item output capture on workers: print, logging and subprocess output.

A Dask worker runs several items at once in threads that share one ``sys.stdout``.
``install()`` replaces stdout/stderr with routers that send each write to the capture of
the item running in the writing thread (or, outside items, to the original stream), and
adds one logging handler that does the same. Each capture keeps the item's full text (its
"captured log") and emits complete lines as they happen through ``emit``, so the notebook
can show them under the cell while the stage runs.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

MAX_CAPTURE = 1_000_000  # characters kept per item; the rest is counted, not stored
_state = threading.local()
_install_lock = threading.Lock()

Emit = Callable[[str, str], None]  # (text, stream)


class ItemCapture:
    """What one item printed and logged, plus the CASA commands it ran."""

    __slots__ = ("_parts", "_size", "_dropped", "_emit", "_pending", "_lock", "commands")

    def __init__(self, emit: Emit | None = None) -> None:
        self._parts: list[str] = []
        self._size = 0
        self._dropped = 0
        self._emit = emit
        self._pending: dict[str, str] = {}
        self._lock = threading.Lock()
        self.commands: list[str] = []

    def write(self, text: str, stream: str = "stdout") -> None:
        if not text:
            return
        with self._lock:
            room = MAX_CAPTURE - self._size
            if room > 0:
                kept = text[:room]
                self._parts.append(kept)
                self._size += len(kept)
            self._dropped += max(0, len(text) - max(room, 0))
            if self._emit is None or room <= 0:  # past the cap, stop streaming too
                return
            pending = self._pending.get(stream, "") + text
            cut = pending.rfind("\n") + 1
            self._pending[stream] = pending[cut:]
            ready = pending[:cut]
        if ready:
            self._send(ready, stream)

    def _send(self, text: str, stream: str) -> None:
        try:
            self._emit(text, stream)
        except Exception:  # streaming is a nicety: the full text still comes back
            self._emit = None

    def close(self) -> None:
        """Emit what is left of unterminated lines."""
        if not self._pending:
            return
        with self._lock:
            pending, self._pending = self._pending, {}
        if self._emit is not None:
            for stream, text in pending.items():
                if text:
                    self._send(text + "\n", stream)

    def text(self) -> str:
        if not self._parts:
            return ""
        with self._lock:
            out = "".join(self._parts)
            if self._dropped:
                out += f"\n[pipejupyter: {self._dropped} more characters of output were not kept]\n"
            return out


def current() -> ItemCapture | None:
    """The capture of the item running in this thread, if any."""
    return getattr(_state, "capture", None)


def enter(capture: ItemCapture) -> ItemCapture | None:
    """Make ``capture`` this thread's; returns the previous one for ``leave``."""
    previous = getattr(_state, "capture", None)
    _state.capture = capture
    return previous


def leave(previous: ItemCapture | None, capture: ItemCapture) -> None:
    _state.capture = previous
    capture.close()


def write(text: str, stream: str = "stdout") -> None:
    """Send text to the current item's capture, or to this process's stream."""
    capture = current()
    if capture is not None:
        capture.write(text, stream)
    else:
        target = sys.stderr if stream == "stderr" else sys.stdout
        target.write(text)
        target.flush()


class _StreamRouter(io.TextIOBase):
    def __init__(self, original: Any, stream: str) -> None:
        self.original = original
        self.stream = stream

    def write(self, text: str) -> int:
        capture = current()
        if capture is None:
            return self.original.write(text)
        capture.write(text, self.stream)
        return len(text)

    def flush(self) -> None:
        with contextlib.suppress(Exception):
            self.original.flush()

    def fileno(self) -> int:
        return self.original.fileno()

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:
        return getattr(self.original, "encoding", "utf-8")

    def writable(self) -> bool:
        return True


class _LogRouter(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        capture = current()
        if capture is None:
            return
        try:
            capture.write(self.format(record) + "\n", "log")
        except Exception:
            self.handleError(record)


def install() -> None:
    """Route this process's stdout/stderr/logging per thread (once per process)."""
    with _install_lock:
        if not isinstance(sys.stdout, _StreamRouter):
            sys.stdout = _StreamRouter(sys.stdout, "stdout")
        if not isinstance(sys.stderr, _StreamRouter):
            sys.stderr = _StreamRouter(sys.stderr, "stderr")
        root = logging.getLogger()
        if not any(isinstance(h, _LogRouter) for h in root.handlers):
            handler = _LogRouter()
            handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
            # Levels stay as configured (WARNING by default): a cell that wants INFO says so
            # with logging.getLogger().setLevel(...), and libraries' chatter stays out.
            root.addHandler(handler)
