"""Nested MPI: ``mpirun(fn, nprocs=N)`` runs ``fn`` on every rank of an ``mpirun -n N``
started by the worker that executes the request - the one place MPI launch variables are
wanted. The child environment is cleaned of any MPI identity the worker may carry (a
kernel started under mpirun, a worker job inside an MPI allocation), so mpirun hands each
rank a fresh one. Ranks run ``python -m pipejupyter.work.mpi_child``; results come back pickled.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pipejupyter.environment.slurm import submission_environ
from pipejupyter.errors import PipejupyterError
from pipejupyter.work.fingerprint import digest
from pipejupyter.work.kinds import Request, WorkError, run_streaming


class MpiError(PipejupyterError, RuntimeError):
    """mpirun is missing, or a rank failed."""


@dataclass
class MpiCall(Request):
    """``fn(*args, **kwargs)`` on every rank of ``mpirun -n nprocs``; the result is the list
    of the ranks' return values, rank 0 first. With items, the item is the first argument."""

    fn: Callable[..., Any]
    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    nprocs: int = 2
    timeout: float | None = None
    mpirun: str | None = None
    extra_args: tuple[str, ...] = ()
    kind = "mpi"

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise WorkError(f"mpirun needs a callable, got {type(self.fn).__name__}")
        if not isinstance(self.nprocs, int) or isinstance(self.nprocs, bool) or self.nprocs < 1:
            raise WorkError(f"nprocs must be an integer >= 1, got {self.nprocs!r}")

    def bind(self, value: Any, key: str) -> MpiCall:
        return replace(self, args=(value, *self.args))

    def execute(self) -> list[Any]:
        import cloudpickle

        launcher = self.mpirun or shutil.which("mpirun") or shutil.which("mpiexec")
        if not launcher:
            raise MpiError(
                f"mpirun is not installed on {os.uname().nodename}; "
                "install OpenMPI (e.g. ci/mpi.sh install)"
            )
        folder = Path(tempfile.mkdtemp(prefix="pipejupyter-mpi-"))
        try:
            (folder / "payload.pkl").write_bytes(
                cloudpickle.dumps((self.fn, tuple(self.args), dict(self.kwargs)))
            )
            argv = [
                launcher,
                "-n",
                str(self.nprocs),
                *launcher_flags(launcher),
                *self.extra_args,
                sys.executable,
                "-m",
                "pipejupyter.work.mpi_child",
                str(folder),
            ]
            rc, out, err = run_streaming(
                argv, env=mpi_child_environ(), cwd=os.getcwd(), timeout=self.timeout
            )
            return _collect_ranks(folder, self.nprocs, rc, err or out)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def cpus(self) -> int:
        return self.nprocs

    def describe(self) -> str:
        return f"mpirun -n {self.nprocs} {getattr(self.fn, '__qualname__', self.fn)!s}"

    def fingerprint(self) -> str:
        return digest("mpi", self.fn, self.args, self.kwargs, self.nprocs, self.extra_args)


def mpirun(
    fn: Callable[..., Any], *args: Any, nprocs: int, timeout: float | None = None, **kwargs: Any
) -> MpiCall:
    """A request to run ``fn(*args, **kwargs)`` on ``nprocs`` MPI ranks; returns their results."""
    return MpiCall(fn, args, kwargs, nprocs, timeout)


def mpi_child_environ() -> dict[str, str]:
    """This process's environment minus any MPI identity, plus what the children need."""

    env = submission_environ(policy="always")
    package_root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # OpenMPI refuses to run as root without these (workers in containers often are root).
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    return env


@functools.lru_cache(maxsize=4)
def launcher_flags(launcher: str) -> tuple[str, ...]:
    try:
        version = subprocess.run(
            [launcher, "--version"], capture_output=True, text=True, timeout=20
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ()
    # Open MPI counts slots by cores and refuses more ranks than that without this flag.
    return ("--oversubscribe",) if "Open MPI" in version or "OpenRTE" in version else ()


def _collect_ranks(folder: Path, nprocs: int, rc: int, output: str) -> list[Any]:
    import cloudpickle

    results = []
    for rank in range(nprocs):
        path = folder / f"rank-{rank}.pkl"
        if not path.exists():
            tail = "\n  ".join(output.strip().splitlines()[-8:])
            raise MpiError(
                f"MPI rank {rank} of {nprocs} returned nothing (mpirun exit status {rc}); "
                f"output:\n  {tail}"
            )
        ok, value, error = cloudpickle.loads(path.read_bytes())
        if not ok:
            raise MpiError(f"MPI rank {rank} of {nprocs} failed:\n{error}")
        results.append(value)
    return results
