"""StageProgress: the ipywidget view of a running stage (plain text is stages.reporting).

Both are reporters (stages.reporting.StageReporter): the stage calls them from the thread that
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

from pipejupyter.stages.reporting import StageReporter, TextProgress, offer_view, progress_text
from pipejupyter.stages.results import StageResult

WIDGET_INTERVAL = 0.2


class StageProgress(TextProgress):
    """The ipywidget: a progress bar and a line of counts, updated while the stage runs.

    Output and tracebacks are printed (as in text mode) so they stay in the saved notebook.
    """

    def __init__(self) -> None:
        super().__init__(interval=WIDGET_INTERVAL)
        import ipywidgets as w

        self.bar = w.IntProgress(
            value=0, min=0, max=1, bar_style="info", layout=w.Layout(width="40%")
        )
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
        self.counts = {
            **self.counts,
            **result.stats,
            "running": 0,
            "eta": None,
            "total": len(result),
        }
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


# The stage core shows this widget for progress="widget", and for "auto" inside a kernel.
offer_view("widget", StageProgress, when=_in_kernel)
