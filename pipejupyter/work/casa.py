"""CASA task requests: ``casa(task, ...)``.

``casa("listobs", vis="x.ms")`` describes a call (like the CASA pipeline's JobRequest);
a stage executes it on a worker: casatasks is imported there, the call's CASA log lines
are captured (warnings and errors also stream under the cell) and returned in a
CasaResult, and the equivalent CASA command is appended to ``casa_commands.log`` in the
notebook's working directory.

``casa(task, ..., mpi=N)`` runs the task on rank 0 of ``mpirun -n N`` (nested_mpi.py).
"""

from __future__ import annotations

import functools
import os
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pipejupyter.environment.mpi import mpi_rank
from pipejupyter.errors import MissingDependency, PipejupyterError, did_you_mean
from pipejupyter.work import capture
from pipejupyter.work.fingerprint import digest
from pipejupyter.work.kinds import Request, WorkError
from pipejupyter.work.nested_mpi import MpiCall

COMMANDS_LOG = "casa_commands.log"
LIVE_PRIORITIES = ("WARN", "SEVERE")  # CASA log lines also shown under the cell while running
_casa_lock = threading.Lock()  # CASA tools are not thread-safe: one call at a time per process


class CasaTaskError(PipejupyterError, RuntimeError):
    """A CASA task could not be found or run."""


# -- CASA -------------------------------------------------------------------------------


@dataclass
class CasaResult:
    task: str
    kwargs: dict[str, Any]
    value: Any
    log: list[str]
    command: str
    duration: float
    mpi: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return (
            f"<CasaResult {self.command} -> {type(self.value).__name__}, {len(self.log)} log lines>"
        )


def casa_command(task: str, kwargs: Mapping[str, Any]) -> str:
    """The CASA command line equivalent to a call: ``listobs(vis='x.ms', listfile='o.txt')``."""
    return f"{task}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"


@dataclass
class CasaTask(Request):
    """A CASA task call; with items, an item binds to ``item_arg`` (``vis``) or, when it is
    a dict, supplies keyword arguments."""

    task: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    mpi: int | None = None
    item_arg: str = "vis"
    kind = "casa"

    def __post_init__(self) -> None:
        if not isinstance(self.task, str) or not self.task.isidentifier():
            raise WorkError(f"a CASA task name is an identifier like 'listobs', got {self.task!r}")
        if self.mpi is not None and (
            not isinstance(self.mpi, int) or isinstance(self.mpi, bool) or self.mpi < 1
        ):
            raise WorkError(f"mpi must be a number of processes >= 1, got {self.mpi!r}")

    def bind(self, value: Any, key: str) -> CasaTask:
        if isinstance(value, Mapping):
            return replace(self, kwargs={**self.kwargs, **value})
        value = os.fspath(value) if isinstance(value, os.PathLike) else value
        return replace(
            self,
            kwargs={
                self.item_arg: value,
                **{k: v for k, v in self.kwargs.items() if k != self.item_arg},
            },
        )

    @property
    def command(self) -> str:
        return casa_command(self.task, self.kwargs)

    def execute(self) -> CasaResult:
        item = capture.current()
        if item is not None:  # logged before it runs: a failed call is part of the record too
            item.commands.append(self.command)
        if self.mpi:
            ranks = MpiCall(_casa_on_rank, (self.task, self.kwargs), {}, nprocs=self.mpi).execute()
            result = ranks[0]
            result.mpi = {
                "nprocs": self.mpi,
                "ranks": [r if isinstance(r, dict) else r.mpi for r in ranks],
            }
            for line in result.log:  # the rank ran in another process: replay its warnings here
                if any(p in line for p in LIVE_PRIORITIES) and item is not None:
                    item.write(line + "\n", "casa")
        else:
            result = run_casa_task(self.task, self.kwargs)
        return result

    def run(self) -> CasaResult:
        """Execute in this process; outside a stage, log the command here too."""
        if capture.current() is not None:
            return self.execute()
        try:
            result = self.execute()
        except BaseException:
            log_commands(os.getcwd(), None, None, None, [self.command], ok=False)
            raise
        log_commands(os.getcwd(), None, None, None, [result.command], ok=True)
        return result

    def describe(self) -> str:
        return f"casa: {self.command}" + (f" (mpi={self.mpi})" if self.mpi else "")

    def fingerprint(self) -> str:
        return digest("casa", self.task, self.kwargs, self.mpi, self.item_arg)


def casa(task: str, *, mpi: int | None = None, item_arg: str = "vis", **kwargs: Any) -> CasaTask:
    """A CASA task request, e.g. ``casa("listobs", vis="x.ms")``; ``mpi=N`` runs it under
    ``mpirun -n N``."""
    return CasaTask(task, kwargs, mpi, item_arg)


@functools.lru_cache(maxsize=1)
def _casatasks() -> Any:
    try:
        import casatasks
    except ImportError as exc:
        if exc.name not in (None, "casatasks") and not str(exc.name or "").startswith("casa"):
            raise CasaTaskError(
                f"importing casatasks failed: {exc} (missing dependency {exc.name!r})"
            ) from exc
        raise MissingDependency("casatasks", "casa", "running CASA tasks") from None
    return casatasks


def run_casa_task(task: str, kwargs: Mapping[str, Any]) -> CasaResult:
    """Run one CASA task here, with its log lines captured to a file of its own."""
    casatasks = _casatasks()
    function = getattr(casatasks, task, None)
    if not callable(function):
        names = [
            n
            for n in dir(casatasks)
            if not n.startswith("_") and callable(getattr(casatasks, n, None))
        ]
        hint = did_you_mean(task, names)
        raise CasaTaskError(
            f"casatasks has no task {task!r}" + (f" (did you mean {hint!r}?)" if hint else "")
        )
    casalog = casatasks.casalog
    command = casa_command(task, kwargs)
    with _casa_lock:
        previous = casalog.logfile()
        fd, path = tempfile.mkstemp(prefix=f"casa-{task}-", suffix=".log")
        os.close(fd)
        tail = _LogTail(path, capture.current())
        started = time.monotonic()
        casalog.setlogfile(path)
        tail.start()
        try:
            value = function(**kwargs)
        finally:
            casalog.setlogfile(previous)
            tail.stop()
            lines = tail.lines
            os.unlink(path)
    return CasaResult(task, dict(kwargs), value, lines, command, time.monotonic() - started)


class _LogTail(threading.Thread):
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
        if self.item is not None and any(
            f"\t{p}" in line or f" {p} " in line for p in LIVE_PRIORITIES
        ):
            self.item.write(line + "\n", "casa")


def _casa_on_rank(task: str, kwargs: Mapping[str, Any]) -> Any:

    rank = mpi_rank() or 0
    size = int(os.environ.get("OMPI_COMM_WORLD_SIZE") or os.environ.get("PMI_SIZE") or 1)
    if rank != 0:
        return {"rank": rank, "size": size, "pid": os.getpid()}
    result = run_casa_task(task, kwargs)
    result.mpi = {"rank": rank, "size": size, "pid": os.getpid()}
    return result


def log_commands(
    workdir: str | os.PathLike,
    stage: str | None,
    key: str | None,
    worker: str | None,
    commands: Any,
    *,
    ok: bool,
) -> None:
    """Append executed CASA commands to ``casa_commands.log`` (as the CASA pipeline does)."""
    when = time.strftime("%Y-%m-%d %H:%M:%S")
    where = " ".join(
        p
        for p in (
            f"stage {stage!r}" if stage else "",
            f"item {key!r}" if key else "",
            f"on {worker}" if worker else "",
        )
        if p
    )
    note = "" if ok else " FAILED"
    lines = "".join(
        f"# {when} {where}{note}\n{c}\n" if where else f"# {when}{note}\n{c}\n" for c in commands
    )
    with open(Path(workdir) / COMMANDS_LOG, "a", encoding="utf-8") as fh:
        fh.write(lines)
