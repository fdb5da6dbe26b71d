"""Local backend: Dask worker processes on this machine (distributed.LocalCluster)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

from pipejupyter.backends.base import ClusterClassBackend
from pipejupyter.backends.form_fields import RESOURCES, field_for, sizing_fields
from pipejupyter.environment.mpi import mpi_sanitized
from pipejupyter.environment.tls import make_security
from pipejupyter.errors import ClusterError, ConfigError
from pipejupyter.models import ClusterSpec, OptionField

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
    def validate_kwargs(cls, spec: ClusterSpec) -> None:
        super().validate_kwargs(spec)
        _check_local_sizes(spec)

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

    @classmethod
    def option_fields(cls, spec: ClusterSpec) -> list[OptionField]:
        cpus = os.cpu_count() or 1
        return [
            *sizing_fields(spec, spec.max_workers),
            field_for(spec, "cluster_kwargs.threads_per_worker", "Threads per worker", "int",
                      minimum=1, maximum=4 * cpus, group=RESOURCES,
                      help=f"this machine has {cpus} CPUs"),
            field_for(spec, "cluster_kwargs.memory_limit", "Memory per worker", "memory",
                      group=RESOURCES, nullable=True,
                      help="e.g. 2GiB; 'auto' shares this machine's memory; 0: no limit"),
            field_for(spec, "cluster_kwargs.processes", "Processes", "bool", group=RESOURCES,
                      help="workers as processes (off: threads in this process)"),
        ]  # fmt: skip

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


def _check_local_sizes(spec: ClusterSpec) -> None:
    """Threads, memory and processes of local workers have the right types before anything
    starts: LocalCluster takes any value and its worker processes fail on a wrong one."""
    kwargs = spec.cluster_kwargs

    def refuse(key: str, value: Any, accepted: str) -> ConfigError:
        return ConfigError(
            f"{key} must be {accepted}, got {value!r}",
            key=f"profiles.{spec.profile}.cluster_kwargs.{key}",
            source=spec.origin_of(f"cluster_kwargs.{key}"),
            accepted=accepted,
        )

    threads = kwargs.get("threads_per_worker")
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
    ):
        raise refuse("threads_per_worker", threads, "an integer >= 1")
    processes = kwargs.get("processes")
    if processes is not None and not isinstance(processes, bool):
        raise refuse("processes", processes, "true (worker processes) or false (threads)")
    memory = kwargs.get("memory_limit")
    if memory is not None and memory != "auto" and not isinstance(memory, bool):
        from dask.utils import parse_bytes

        try:
            size = memory if isinstance(memory, (int, float)) else parse_bytes(memory)
        except (ValueError, TypeError, KeyError):
            size = None
        if size is None or size < 0:
            raise refuse(
                "memory_limit",
                memory,
                "a size such as 2GiB or 500MB, a number of bytes, 0 (no limit) or auto",
            )


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
