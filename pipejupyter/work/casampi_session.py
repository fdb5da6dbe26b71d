"""A nested casampi session for one CASA task: ``casa(task, ..., mpi=N)`` on a worker.

The worker runs ``mpirun -n N+1 python -m pipejupyter.work.casampi_child FOLDER``: rank 0 is
casampi's MPI client and runs the task (``tclean(parallel=True)`` hands its major cycles to
the servers), ranks 1..N are casampi servers. Per call:

- a folder of its own (the call, the result, ``casa.log`` written by every rank, mpirun's
  output); it is removed after a success and kept, named in the error, after a failure;
- a clean environment: no MPI identity of an enclosing launch and no SLURM step variables
  (a nested mpirun that inherits them fails at once), ``OMP_NUM_THREADS=1`` unless the
  worker's environment sets it (servers that each spin several OpenMP threads run 5-10x
  slower), CASA's site configuration as the worker has it;
- the ranks run in the worker's working directory, so relative paths mean what they mean
  in a serial call;
- the mpirun and every rank run in a session of their own, and whatever is left of it when
  the call ends, fails or is interrupted is killed: a call leaves no MPI process behind.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipejupyter.errors import MissingDependency, PipejupyterError
from pipejupyter.work import capture
from pipejupyter.work.casa_log import CasaLogTail, log_tail
from pipejupyter.work.cpu_slots import process_slots
from pipejupyter.work.nested_mpi import MpiError, launcher_flags, mpi_child_environ

CHILD_MODULE = "pipejupyter.work.casampi_child"
MAX_SERVERS = 1024  # bounds mpirun -n from outside; a machine with more would say so
KILL_GRACE = 5.0  # seconds between SIGTERM and SIGKILL for what is left of a session
_CASA_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\t")


class CasampiError(PipejupyterError, RuntimeError):
    """A casampi session failed: the task raised on the client rank, or a rank died."""


@dataclass
class SessionOutcome:
    """What one session gave back: the task's value, every CASA log line, timings."""

    value: Any
    log: list[str]
    timings: dict[str, float] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)


def casampi_environ(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The ranks' environment: this process's, minus MPI and SLURM step identity, plus
    ``OMP_NUM_THREADS=1`` unless it is set."""
    env = mpi_child_environ() if base is None else dict(base)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def session_argv(folder: str | os.PathLike, servers: int, launcher: str) -> list[str]:
    """``mpirun -n servers+1 ... python -m pipejupyter.work.casampi_child FOLDER``."""
    return [
        launcher,
        "-n",
        str(servers + 1),
        *launcher_flags(launcher),
        sys.executable,
        "-m",
        CHILD_MODULE,
        os.fspath(folder),
    ]


def check_servers(servers: Any) -> int:
    if not isinstance(servers, int) or isinstance(servers, bool) or not 1 <= servers <= MAX_SERVERS:
        raise CasampiError(
            f"mpi= is the number of casampi servers, 1..{MAX_SERVERS}, got {servers!r}"
        )
    return servers


def run_casampi_task(
    task: str,
    kwargs: Mapping[str, Any],
    servers: int,
    *,
    timeout: float | None = None,
    mpirun: str | None = None,
) -> SessionOutcome:
    """Run ``casatasks.<task>(**kwargs)`` on the client rank of a fresh casampi session with
    ``servers`` servers; return its value and log, or raise with the log's tail."""
    check_servers(servers)
    _require_casampi()
    launcher = mpirun or shutil.which("mpirun") or shutil.which("mpiexec")
    if not launcher:
        raise MpiError(
            f"mpirun is not installed on {os.uname().nodename}; casa(..., mpi=N) needs "
            "OpenMPI (e.g. ci/mpi.sh install)"
        )
    folder = Path(tempfile.mkdtemp(prefix=f"pipejupyter-casampi-{task}-"))
    command = f"{task}(...) with {servers} casampi servers"
    try:
        (folder / "call.pkl").write_bytes(pickle.dumps((task, dict(kwargs)), protocol=5))
    except Exception as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise CasampiError(
            f"the arguments of {task} cannot be sent to the MPI ranks: {exc}"
        ) from None
    argv = session_argv(folder, servers, launcher)
    log = folder / "casa.log"
    log.touch()
    tail = CasaLogTail(str(log), capture.current())
    failed = True
    with process_slots().hold(servers + 1):
        started = time.monotonic()
        tail.start()
        try:
            rc = _run_session(argv, folder, timeout)
            outcome = _read_result(folder)
            tail.stop()
            total = time.monotonic() - started
            if outcome is None:
                raise CasampiError(
                    f"{command}: the MPI client rank returned nothing (mpirun exit status {rc})"
                    + _evidence(tail.lines, folder)
                )
            ok, value, error, timings = outcome
            if not ok:
                raise CasampiError(
                    f"{command} failed on the MPI client rank:\n{error.rstrip()}"
                    + _evidence(tail.lines, folder)
                )
            if rc != 0:
                raise CasampiError(
                    f"{command}: the task returned, but mpirun exited with status {rc} "
                    "(a server failed)" + _evidence(tail.lines, folder)
                )
            timings = {**timings, "total": total}
            timings["shutdown"] = max(0.0, total - timings["setup"] - timings["task"])
            failed = False
            return SessionOutcome(value, tail.lines, timings, argv)
        finally:
            tail.stop()
            if not failed:
                shutil.rmtree(folder, ignore_errors=True)


def _require_casampi() -> None:
    from importlib.util import find_spec

    for name in ("casatasks", "casampi"):
        if find_spec(name) is None:
            raise MissingDependency(name, "casa", "casa(..., mpi=N): CASA tasks under casampi")


def _run_session(argv: list[str], folder: Path, timeout: float | None) -> int:
    """Run mpirun in a session of its own; whatever of that session outlives it is killed."""
    with open(folder / "mpirun.out", "wb") as out:
        proc = subprocess.Popen(
            argv,
            env=casampi_environ(),
            cwd=os.getcwd(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise CasampiError(
            f"the casampi session did not finish within {timeout:g} s and was killed"
            + _evidence(_lines(folder / "casa.log"), folder)
        ) from None
    finally:
        kill_session(proc.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=KILL_GRACE)


def session_members(sid: int) -> list[int]:
    """Live processes of session ``sid`` (the mpirun and the ranks it started)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp session ...: comm may hold spaces, so split after ')'
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 3 and fields[0] != "Z" and int(fields[3]) == sid:
            members.append(int(entry.name))
    return members


def kill_session(sid: int, grace: float = KILL_GRACE) -> list[int]:
    """SIGTERM every live process of session ``sid``, SIGKILL what remains after ``grace``."""
    found = session_members(sid)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in found:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while (found := session_members(sid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not found:
            break
    return found


def _read_result(folder: Path) -> tuple | None:
    path = folder / "result.pkl"
    if not path.exists():
        return None
    try:
        return pickle.loads(path.read_bytes())
    except Exception as exc:  # a value pickled by the rank but not loadable here
        return (False, None, f"the result could not be read: {type(exc).__name__}: {exc}", {})


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()
    except OSError:
        return []


def _evidence(log: list[str], folder: Path) -> str:
    output = [line for line in _lines(folder / "mpirun.out") if line.strip()]
    # mpirun's own complaints: not CASA log lines (a time stamp, a tab, a priority) nor rules
    own = [line for line in output if not _CASA_LINE.match(line) and set(line.strip()) != {"-"}]
    own = own[-8:]
    text = f"\nCASA log (last lines):\n  {log_tail(log)}"
    if own:
        text += "\nmpirun output (last lines):\n  " + "\n  ".join(line[:400] for line in own)
    return text + f"\n(the session's files are kept in {folder})"
