"""StageProgress: a view of a running stage (ipywidget, or plain text without widgets).

Both are reporters (stages.StageReporter): the stage calls them from the thread that
runs the cell, so what they print lands under that cell. Worker output is printed as
it arrives, each line tagged with its item; a failed item's remote traceback goes to
stderr. The widget shows done / failed / running / total, elapsed time and an ETA.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from html import escape
from typing import Any

from .results import StageResult
from .stages import StageReporter

TEXT_INTERVAL = 5.0  # seconds between progress lines in text mode
WIDGET_INTERVAL = 0.2


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def progress_text(stage: str, counts: Mapping[str, Any]) -> str:
    """One line: ``stage 'x': 40/100 done, 2 failed, 4 running, 5 skipped - 3.2 s, ETA 4.1 s``."""
    total = counts.get("total", 0)
    parts = [f"{counts.get('done', 0) + counts.get('skipped', 0)}/{total} done"]
    for label in ("failed", "running", "skipped", "retried"):
        if counts.get(label):
            parts.append(f"{counts[label]} {label}")
    timing = f"elapsed {_duration(counts.get('elapsed'))}"
    if counts.get("eta") is not None and counts.get("done", 0) + counts.get("failed", 0) < total - counts.get("skipped", 0):
        timing += f", ETA {_duration(counts['eta'])}"
    return f"stage {stage!r}: {', '.join(parts)} - {timing}"


def _tagged(key: str, text: str) -> str:
    return "".join(f"[{key}] {line}\n" for line in text.rstrip("\n").split("\n"))


class TextProgress(StageReporter):
    """Progress as occasional lines of text; output and tracebacks printed as they come."""

    def __init__(self, out: Any = None, err: Any = None, interval: float = TEXT_INTERVAL) -> None:
        self.out = out
        self.err = err
        self.interval = interval
        self.stage = ""
        self._last = 0.0
        self.counts: dict[str, Any] = {}

    def _write(self, text: str, error: bool = False) -> None:
        stream = (self.err or sys.stderr) if error else (self.out or sys.stdout)
        stream.write(text)
        stream.flush()

    def start(self, stage: str, total: int, skipped: int, batch: str) -> None:
        self.stage = stage
        self._last = time.monotonic()
        self.counts = {"total": total, "skipped": skipped, "done": 0}
        note = f", {skipped} already done (skipped)" if skipped else ""
        self._write(f"stage {stage!r}: {total} item(s){note}\n")

    def update(self, counts: Mapping[str, Any]) -> None:
        self.counts = dict(counts)
        if time.monotonic() - self._last >= self.interval:
            self._last = time.monotonic()
            self._write(progress_text(self.stage, counts) + "\n")

    def output(self, key: str, text: str, stream: str) -> None:
        self._write(_tagged(key, text), error=stream == "stderr")

    def failure(self, key: str, error: str, attempt: int, final: bool) -> None:
        what = "failed" if final else f"failed (attempt {attempt}), retrying"
        self._write(_tagged(key, f"{what}:\n{error}"), error=True)

    def note(self, text: str) -> None:
        self._write(f"stage {self.stage!r}: {text}\n")

    def finish(self, result: StageResult) -> None:
        self._write(result.summary() + "\n")


class StageProgress(TextProgress):
    """The ipywidget: a progress bar and a line of counts, updated while the stage runs.

    Output and tracebacks are printed (as in text mode) so they stay in the saved notebook.
    """

    def __init__(self) -> None:
        super().__init__(interval=WIDGET_INTERVAL)
        import ipywidgets as w

        self.bar = w.IntProgress(value=0, min=0, max=1, bar_style="info", layout=w.Layout(width="40%"))
        self.label = w.HTML()
        self.view = w.HBox([self.bar, self.label])

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.view)

    def start(self, stage: str, total: int, skipped: int, batch: str) -> None:
        from IPython.display import display

        self.stage = stage
        self.counts = {"total": total, "skipped": skipped, "done": 0, "elapsed": 0.0}
        self.bar.max = max(total, 1)
        self.bar.value = skipped
        self._render()
        display(self.view)
        self._last = time.monotonic()

    def update(self, counts: Mapping[str, Any]) -> None:
        self.counts = dict(counts)
        if time.monotonic() - self._last >= self.interval:
            self._last = time.monotonic()
            self._render()

    def _render(self) -> None:
        c = self.counts
        self.bar.value = c.get("done", 0) + c.get("skipped", 0) + c.get("failed", 0)
        if c.get("failed"):
            self.bar.bar_style = "warning"
        self.label.value = f"<code>{escape(progress_text(self.stage, c))}</code>"

    def finish(self, result: StageResult) -> None:
        self.counts = {**self.counts, **result.stats, "running": 0, "eta": None, "total": len(result)}
        self._render()
        self.bar.bar_style = "danger" if result.failed else "success"


def make_reporter(mode: str = "auto") -> StageReporter:
    """'widget' when running in a Jupyter kernel with ipywidgets (or asked for), else text."""
    if mode == "text":
        return TextProgress()
    if mode == "widget" or _in_kernel():
        try:
            return StageProgress()
        except ImportError:
            if mode == "widget":
                raise
    return TextProgress()


def _in_kernel() -> bool:
    if "IPython" not in sys.modules or "ipykernel" not in sys.modules:
        return False  # never import IPython just to find out
    from IPython import get_ipython

    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None
