"""CASA task requests: ``casa(task, ...)``.

``casa("listobs", vis="x.ms")`` describes a call (like the CASA pipeline's JobRequest);
a stage executes it on a worker: casatasks is imported there, the call's CASA log lines
are captured (warnings and errors also stream under the cell) and returned in a
CasaResult, and the equivalent CASA command is appended to ``casa_commands.log`` in the
notebook's working directory.

``casa(task, ..., mpi=N)`` runs the task in a nested casampi session of its own on the worker:
``mpirun -n N+1``, the task on the MPI client rank and N casampi servers doing the parallel
work, e.g. ``tclean(..., parallel=True)`` (casampi_session.py).
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

from pipejupyter.errors import MissingDependency, PipejupyterError, did_you_mean
from pipejupyter.work import capture
from pipejupyter.work.casa_log import CasaLogTail
from pipejupyter.work.casampi_session import MAX_SERVERS, run_casampi_task
from pipejupyter.work.fingerprint import digest
from pipejupyter.work.kinds import Request, WorkError

COMMANDS_LOG = "casa_commands.log"
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
            not isinstance(self.mpi, int)
            or isinstance(self.mpi, bool)
            or not 1 <= self.mpi <= MAX_SERVERS
        ):
            raise WorkError(
                f"mpi is the number of casampi servers (1..{MAX_SERVERS}), got {self.mpi!r}"
            )

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
            return run_parallel_casa_task(self.task, self.kwargs, self.mpi)
        return run_casa_task(self.task, self.kwargs)

    def cpus(self) -> int:
        """The client rank and the servers of a casampi session each keep a CPU busy."""
        return self.mpi + 1 if self.mpi else 1

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
    """A CASA task request, e.g. ``casa("listobs", vis="x.ms")``; ``mpi=N`` runs it in a
    nested casampi session with N servers (``mpirun -n N+1``), as ``tclean(parallel=True)``
    needs."""
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
        tasks = [n for n in dir(casatasks) if callable(getattr(casatasks, n, None))]
        _no_such_task(task, [n for n in tasks if not n.startswith("_")])
    casalog = casatasks.casalog
    command = casa_command(task, kwargs)
    with _casa_lock:
        previous = casalog.logfile()
        fd, path = tempfile.mkstemp(prefix=f"casa-{task}-", suffix=".log")
        os.close(fd)
        tail = CasaLogTail(path, capture.current())
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


def _no_such_task(task: str, names: list[str]) -> None:
    hint = did_you_mean(task, names)
    raise CasaTaskError(
        f"casatasks has no task {task!r}" + (f" (did you mean {hint!r}?)" if hint else "")
    )


def _casatasks_has(task: str) -> None:
    """Check a task name without importing casatasks here (its task descriptions are files):
    a typo must not cost a whole MPI session."""
    from importlib.util import find_spec

    spec = find_spec("casatasks")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependency("casatasks", "casa", "running CASA tasks")
    folder = Path(next(iter(spec.submodule_search_locations))) / "__xml__"
    names = sorted(p.stem for p in folder.glob("*.xml"))
    if names and task not in names:
        _no_such_task(task, names)


def run_parallel_casa_task(task: str, kwargs: Mapping[str, Any], servers: int) -> CasaResult:
    """Run one CASA task in a nested casampi session with ``servers`` servers."""
    command = casa_command(task, kwargs)
    _casatasks_has(task)
    session = run_casampi_task(task, kwargs, servers)
    return CasaResult(
        task,
        dict(kwargs),
        session.value,
        session.log,
        command,
        session.timings.get("total", 0.0),
        mpi={"servers": servers, "nprocs": servers + 1, **session.timings},
    )


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
