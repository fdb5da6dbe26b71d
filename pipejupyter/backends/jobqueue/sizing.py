"""Sizing for batch backends: local-style keys translated to per-job ones, sizes validated.

A profile written for LocalCluster (threads_per_worker, memory_limit, n_workers) means
the same on a batch backend: ``cores`` and ``memory`` are per job, a job runs
``processes`` workers, and the worker count is ``workers``.
"""

from __future__ import annotations

import math
from typing import Any

from pipejupyter.errors import ConfigError
from pipejupyter.models import ClusterSpec

SIZE_HELP = "a size such as 4GiB, 4000MB or 4 GB"
# LocalCluster's scheduler keywords; JobQueueCluster wants them in scheduler_options.
SCHEDULER_RENAMES = {
    "host": "host",
    "dashboard_address": "dashboard_address",
    "scheduler_port": "port",
}


def _key(spec: ClusterSpec, name: str) -> str:
    return f"profiles.{spec.profile}.cluster_kwargs.{name}"


def _origin(spec: ClusterSpec, name: str) -> str | None:
    return spec.origin_of(f"cluster_kwargs.{name}")


def parse_size(spec: ClusterSpec, name: str, value: Any) -> int:
    from dask.utils import parse_bytes

    try:
        size = parse_bytes(value)
    except (ValueError, TypeError, KeyError):
        size = None
    if not isinstance(size, int) or isinstance(value, bool) or size <= 0:
        raise ConfigError(
            f"{value!r} is not a memory size",
            source=_origin(spec, name),
            key=_key(spec, name),
            accepted=SIZE_HELP,
        )
    return size


def default_processes(cores: int) -> int:
    """dask-jobqueue's rule when ``processes`` is not given (distributed's nprocesses_nthreads)."""
    if cores <= 4:
        return cores
    return min(f for f in range(1, cores + 1) if cores % f == 0 and f >= math.sqrt(cores))


def translate_for_batch(spec: ClusterSpec) -> None:
    kwargs = spec.cluster_kwargs
    notes = spec.notes
    processes = kwargs.get("processes")
    if isinstance(processes, bool):
        kwargs["processes"] = processes = 1
        notes.append(
            "processes=true/false (LocalCluster) means one worker process per job (processes=1)"
        )
    for old in ("threads_per_worker", "nthreads"):
        if old not in kwargs:
            continue
        value = kwargs.pop(old)
        if "cores" in kwargs:
            notes.append(f"{old}={value!r} ignored: cores={kwargs['cores']!r} is set")
            continue
        per_job = processes or 1
        kwargs["cores"] = value * per_job if isinstance(value, int) else value
        kwargs.setdefault("processes", per_job)
        _move_origin(spec, old, "cores")
        notes.append(
            f"{old}={value!r} means cores={kwargs['cores']!r} per job "
            f"({per_job} worker process(es) per job)"
        )
    if "memory_limit" in kwargs:
        value = kwargs.pop("memory_limit")
        if "memory" in kwargs:
            notes.append(f"memory_limit={value!r} ignored: memory={kwargs['memory']!r} is set")
        else:
            per_job = kwargs.get("processes") or 1
            size = parse_size(spec, "memory_limit", value)
            kwargs["memory"] = value if per_job == 1 else f"{size * per_job}B"
            _move_origin(spec, "memory_limit", "memory")
            notes.append(
                f"memory_limit={value!r} per worker means memory={kwargs['memory']!r} per job"
            )
    if "n_workers" in kwargs:
        value = kwargs.pop("n_workers")
        if spec.origin.get("workers") != "argument":
            spec.workers = value
        notes.append(f"cluster_kwargs.n_workers={value!r} is the worker count (workers)")
    for old, new in SCHEDULER_RENAMES.items():
        if old in kwargs:
            value = kwargs.pop(old)
            spec.scheduler.setdefault(new, value)
            notes.append(f"{old}={value!r} is a scheduler setting (scheduler.{new})")
    if "env" in kwargs:  # LocalCluster's env: the workers' environment
        value = kwargs.pop("env") or {}
        spec.env.setdefault("set", {}).update({str(k): str(v) for k, v in value.items()})
        notes.append("cluster_kwargs.env is the workers' environment (env.set)")


def workers_per_job(spec: ClusterSpec) -> int:
    """Dask worker processes one job starts: ``processes``, else the rule for ``cores``."""
    kwargs = spec.cluster_kwargs
    processes = kwargs.get("processes")
    if isinstance(processes, int) and not isinstance(processes, bool) and processes >= 1:
        return processes
    cores = kwargs.get("cores")
    if isinstance(cores, int) and not isinstance(cores, bool) and cores > 0:
        return default_processes(cores)
    return 1


def validate_sizes(spec: ClusterSpec) -> None:
    kwargs = spec.cluster_kwargs
    cores = kwargs.get("cores")
    if cores is not None and (not isinstance(cores, int) or isinstance(cores, bool) or cores < 1):
        raise ConfigError(
            f"cores must be a whole number >= 1, got {cores!r}",
            source=_origin(spec, "cores"),
            key=_key(spec, "cores"),
        )
    processes = kwargs.get("processes")
    if processes is not None:
        if not isinstance(processes, int) or isinstance(processes, bool) or processes < 1:
            raise ConfigError(
                "processes (worker processes per job) must be a whole number >= 1, "
                f"got {processes!r}",
                source=_origin(spec, "processes"),
                key=_key(spec, "processes"),
            )
        if isinstance(cores, int) and processes > cores:
            raise ConfigError(
                f"processes={processes} is more than cores={cores}: "
                "each worker process needs a core",
                source=_origin(spec, "processes"),
                key=_key(spec, "processes"),
            )
    if kwargs.get("memory") is not None:
        parse_size(spec, "memory", kwargs["memory"])


def _move_origin(spec: ClusterSpec, old: str, new: str) -> None:
    key_old, key_new = f"cluster_kwargs.{old}", f"cluster_kwargs.{new}"
    if key_old in spec.origin:
        spec.origin.setdefault(key_new, spec.origin.pop(key_old))
