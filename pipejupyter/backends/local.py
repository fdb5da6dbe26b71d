"""Local backend: Dask worker processes on this machine (distributed.LocalCluster)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

from pipejupyter.backends.base import ClusterClassBackend
from pipejupyter.environment.mpi import mpi_sanitized
from pipejupyter.environment.tls import make_security
from pipejupyter.errors import ClusterError
from pipejupyter.models import ClusterSpec

# Batch-job settings that mean nothing for local processes: dropped with a note.
JOB_ONLY_KEYS = frozenset(
    {
        "queue",
        "account",
        "project",
        "walltime",
        "job_name",
        "name",
        "job_extra_directives",
        "job_directives_skip",
        "job_script_prologue",
        "job_cpu",
        "job_mem",
        "log_directory",
        "shebang",
        "python",
        "submit_command_extra",
        "cancel_command_extra",
        "disk",
        "resource_spec",
        "job_extra",
        "env_extra",
        "extra",
        "worker_extra_args",
    }
)


#: local profiles that set no max_workers may start this many workers per CPU
MAX_WORKERS_PER_CPU = 4


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_local_workers(environ: dict[str, str] | None = None) -> int:
    """Like the CASA pipeline: SLURM_NTASKS inside an allocation, else min(CPUs, 4)."""
    environ = os.environ if environ is None else environ
    ntasks = environ.get("SLURM_NTASKS", "")
    if ntasks.isdigit() and int(ntasks) > 0:
        return int(ntasks)
    return max(1, min(cpu_count(), 4))


def _make_sanitized_nanny():
    # Imported lazily: distributed is heavy and not needed to resolve configuration.
    from distributed import Nanny

    class SanitizedNanny(Nanny):
        """A Nanny whose worker processes never inherit MPI launch variables.

        Nanny.instantiate() spawns the worker process, at start and at every restart
        after a crash, and the child copies os.environ at that moment.
        """

        def __init__(self, *args: Any, mpi_policy: dict | None = None, **kwargs: Any) -> None:
            self._mpi_policy = mpi_policy or {}
            super().__init__(*args, **kwargs)

        async def instantiate(self):
            with mpi_sanitized(self._mpi_policy):
                return await super().instantiate()

    return SanitizedNanny


class LocalBackend(ClusterClassBackend):
    name = "local"
    security_forms = ("tls", "files")
    cluster_classes = (
        "distributed.LocalCluster",
        "dask.distributed.LocalCluster",
        "distributed.deploy.local.LocalCluster",
    )

    @classmethod
    def translate(cls, spec: ClusterSpec) -> None:
        kwargs = spec.cluster_kwargs
        renames = {
            "cores": "threads_per_worker",
            "memory": "memory_limit",
            "nthreads": "threads_per_worker",
        }
        for old, new in renames.items():
            if old in kwargs:
                value = kwargs.pop(old)
                kwargs.setdefault(new, value)
                _move_origin(spec, f"cluster_kwargs.{old}", f"cluster_kwargs.{new}")
                spec.notes.append(f"{old}={value!r} means {new}={value!r} for local workers")
        if "n_workers" in kwargs:
            value = kwargs.pop("n_workers")
            if spec.workers is None or spec.origin.get("workers") != "argument":
                spec.workers = value
            spec.notes.append(f"cluster_kwargs.n_workers={value!r} is the worker count (workers)")
        if isinstance(kwargs.get("processes"), int) and not isinstance(kwargs["processes"], bool):
            value = kwargs.pop("processes")
            kwargs["processes"] = True
            spec.notes.append(
                f"processes={value} (processes per job) means one process per local worker"
            )
        for key in sorted(JOB_ONLY_KEYS & set(kwargs)):
            kwargs.pop(key)
            spec.notes.append(f"{key} is a batch-job setting, ignored for local workers")
        spec.scheduler.setdefault("host", "127.0.0.1")
        spec.scheduler.setdefault("dashboard_address", "127.0.0.1:0")

    @classmethod
    def default_workers(cls, spec: ClusterSpec) -> int:
        return default_local_workers()

    @classmethod
    def default_max_workers(cls, spec: ClusterSpec) -> int:
        # Never below the default count (SLURM_NTASKS inside an allocation).
        return max(MAX_WORKERS_PER_CPU * cpu_count(), default_local_workers())

    @classmethod
    def max_workers_rule(cls, spec: ClusterSpec) -> str:
        return (
            f"the local default: {MAX_WORKERS_PER_CPU} per CPU, {cpu_count()} CPUs here, "
            "or SLURM_NTASKS if larger"
        )

    @classmethod
    def accepted_kwargs(cls, klass: type) -> set[str] | None:
        # LocalCluster passes unknown keyword arguments on to each Nanny and Worker.
        from distributed import Nanny, Worker

        names = super().accepted_kwargs(klass) or set()
        for extra in (Nanny, Worker):
            names |= super().accepted_kwargs(extra) or set()
        return names

    def cluster_kwargs(self) -> dict[str, Any]:
        spec = self.spec
        kwargs = dict(spec.cluster_kwargs)
        kwargs.setdefault("threads_per_worker", 1)
        kwargs.setdefault("processes", True)
        sched = spec.scheduler
        if sched.get("host") is not None:
            kwargs.setdefault("host", sched["host"])
        if sched.get("port") is not None:
            kwargs.setdefault("scheduler_port", sched["port"])
        if sched.get("dashboard_address") is not None:
            kwargs.setdefault("dashboard_address", sched["dashboard_address"])
        if spec.security:
            kwargs.setdefault(
                "security", make_security(spec.security, source=spec.origin_of("security"))
            )
            kwargs.setdefault("protocol", "tls://")
        if spec.adapt_kwargs:
            kwargs["n_workers"] = int(spec.adapt_kwargs.get("minimum", 0) or 0)
        else:
            kwargs["n_workers"] = int(spec.workers or 0)
        if not kwargs["processes"]:
            # Thread workers default to the inproc transport, which cannot bind a host.
            kwargs.setdefault("protocol", "tcp://")
        if kwargs["processes"]:
            # No shell runs between us and a local worker: expand $VAR in configured values
            # here (values copied from this environment are passed exactly as they are).
            explicit = set(self.env.explicit)
            env = {
                k: os.path.expandvars(v) if k in explicit else v
                for k, v in self.env.variables.items()
            }
            kwargs["env"] = {**env, **(kwargs.get("env") or {})}
            kwargs.setdefault("worker_class", _make_sanitized_nanny())
            kwargs.setdefault("mpi_policy", dict(spec.mpi))
        kwargs.setdefault("silence_logs", 40)  # keep worker chatter out of notebook cells
        return kwargs

    def start(self) -> None:
        from distributed import LocalCluster

        kwargs = self.cluster_kwargs()
        if kwargs.get("processes", True) and _bootstrapping_a_child():
            # This process is a worker Dask is starting: it ran the user's script again.
            raise ClusterError(MAIN_GUARD_HINT)
        klass = self.cluster_type(self.spec) if self.spec.cluster_class else LocalCluster
        try:
            with mpi_sanitized(self.spec.mpi):
                self.cluster = klass(**kwargs)
        except Exception as exc:
            if kwargs.get("processes", True) and _script_without_main_guard():
                failure = f"{type(exc).__name__}: {exc}"
                raise ClusterError(
                    f"local worker processes failed ({failure}); {MAIN_GUARD_HINT}"
                ) from exc
            raise


#: why local worker processes of a script without the guard fail, and the fix
MAIN_GUARD_HINT = (
    "they could not start because this script starts the cluster when it "
    "is imported: Dask starts each local worker process by running the script's module "
    "again (multiprocessing's 'spawn'), and that run starts a cluster of its own. Put the "
    'code that starts the cluster under `if __name__ == "__main__":` (as raw Dask needs '
    "too), or use threads (--set cluster_kwargs.processes=false)"
)
_MAIN_GUARD = re.compile(r"""__name__\s*==\s*['"]__main__['"]|['"]__main__['"]\s*==\s*__name__""")


def _bootstrapping_a_child() -> bool:
    """Whether multiprocessing is still preparing this process (running ``__main__`` again)."""
    import multiprocessing

    return bool(getattr(multiprocessing.current_process(), "_inheriting", False))


def _script_without_main_guard() -> bool:
    """``__main__`` is a Python file that never tests ``__name__ == "__main__"``."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if not path or not str(path).endswith(".py"):
        return False  # a notebook kernel, the REPL, python -c
    try:
        source = Path(path).read_text(errors="replace")
    except OSError:
        return False
    return _MAIN_GUARD.search(source) is None


def _move_origin(spec: ClusterSpec, old: str, new: str) -> None:
    if old in spec.origin:
        spec.origin.setdefault(new, spec.origin.pop(old))
