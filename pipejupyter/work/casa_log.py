"""Following a CASA log file while a task runs: every line kept, warnings streamed.

A CASA call (serial, or a casampi session whose ranks all write one file) logs to a file of
its own; a :class:`CasaLogTail` follows it from a thread, keeps every line for the result,
and passes warnings and errors to the item's capture so they show under the cell as they
happen. Lines CASA logs as SEVERE although nothing is wrong are kept but not streamed.
"""

from __future__ import annotations

import threading

from pipejupyter.work import capture

LIVE_PRIORITIES = ("WARN", "SEVERE")  # CASA log lines also shown under the cell while running
# SEVERE or WARN by CASA's wording, harmless in fact: kept in the log, not streamed.
QUIET_ORIGINS = (
    "virtual_frame_buffer",  # casampi servers try to start Xvfb; plotting tasks only need it
    "MeasTable::dUTC",  # leap second table out-of-date: expected with frozen measures data
)


def is_live(line: str) -> bool:
    """A warning or error worth showing under the cell while the task runs."""
    return any(f"\t{p}" in line or f" {p} " in line for p in LIVE_PRIORITIES) and not any(
        origin in line for origin in QUIET_ORIGINS
    )


class CasaLogTail(threading.Thread):
    """Follows a CASA log file while a task runs; passes warnings and errors to the item."""

    def __init__(self, path: str, item: capture.ItemCapture | None) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.item = item
        self.lines: list[str] = []
        self._done = threading.Event()
        self._offset = 0
        self._partial = ""

    def run(self) -> None:
        while not self._done.wait(0.3):
            self._read()

    def stop(self) -> None:
        self._done.set()
        if self.is_alive():
            self.join(5)
        self._read()
        if self._partial:
            self._take(self._partial)
            self._partial = ""

    def _read(self) -> None:
        try:
            with open(self.path, encoding="utf-8", errors="replace") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
                self._offset = fh.tell()
        except OSError:
            return
        text = self._partial + chunk
        *complete, self._partial = text.split("\n")
        for line in complete:
            self._take(line)

    def _take(self, line: str) -> None:
        if not line.strip():
            return
        self.lines.append(line)
        if self.item is not None and is_live(line):
            self.item.write(line + "\n", "casa")


def log_tail(lines: list[str], count: int = 12) -> str:
    """The end of a CASA log for an error message: its last errors, then its last lines."""
    said = [line for line in lines if line.rsplit("\t", 1)[-1].strip()]  # not blank messages
    severe = [line for line in said if "\tSEVERE\t" in line and is_live(line)][-count // 2 :]
    last = [line for line in said[-count:] if line not in severe]
    shown = [*severe, *last] or ["(the CASA log is empty)"]
    return "\n  ".join(line[:400] for line in shown)
