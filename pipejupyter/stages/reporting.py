"""What a stage tells its face while it runs: the StageReporter contract and plain text.

The stage calls its reporter from the thread that runs it (the notebook cell), so what a
reporter prints lands under that cell. A face may offer a richer view for
``progress="auto"`` / ``"widget"`` (the notebook face offers its ipywidget) through
:func:`offer_view`; without one, progress is text.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from pipejupyter.errors import StageError
from pipejupyter.stages.results import StageResult

TEXT_INTERVAL = 5.0  # seconds between progress lines in text mode


class StageReporter:
    """What a stage tells its face. Every method may be left as is (no-op)."""

    def start(self, stage: str, total: int, skipped: int, batch: str) -> None: ...

    def update(self, counts: Mapping[str, Any]) -> None:
        """counts: done, failed, running, skipped, total, retried, elapsed, eta (seconds or
        None)."""

    def output(self, key: str, text: str, stream: str) -> None: ...

    def failure(self, key: str, error: str, attempt: int, final: bool) -> None: ...

    def note(self, text: str) -> None: ...

    def finish(self, result: StageResult) -> None: ...


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
    if counts.get("eta") is not None and counts.get("done", 0) + counts.get(
        "failed", 0
    ) < total - counts.get("skipped", 0):
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


#: richer views offered by faces, by progress mode ("widget"); see offer_view
_VIEWS: dict[str, Callable[[], StageReporter]] = {}


def offer_view(
    mode: str, factory: Callable[[], StageReporter], *, when: Callable[[], bool]
) -> None:
    """A face offers ``factory`` for ``progress=mode``, and for ``"auto"`` whenever ``when()``."""
    _VIEWS[mode] = factory
    _VIEWS["auto"] = lambda: factory() if when() else TextProgress()


def reporter_for(progress: StageReporter | str | None) -> StageReporter:
    """The reporter for run_stage's ``progress`` argument."""
    if isinstance(progress, StageReporter):
        return progress
    if progress in (None, False, "none", "off"):
        return StageReporter()
    if progress == "text":
        return TextProgress()
    if progress in ("auto", "widget"):
        view = _VIEWS.get(progress)
        if view is not None:
            return view()
        if progress == "widget":
            raise StageError(
                "progress='widget' needs the notebook face: run it in a Jupyter kernel with "
                "ipywidgets (pip install 'pipejupyter[lab]') after %load_ext pipejupyter"
            )
        return TextProgress()
    raise StageError(
        f"progress must be 'auto', 'text', 'widget', None or a StageReporter; got {progress!r}"
    )
