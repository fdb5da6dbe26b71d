"""A SLURM profile checked against the partition before anything is submitted.

sbatch refuses a job that asks for more than its partition has with a terse message
("Requested time limit is invalid (missing or exceeds some limit)"); we name the key,
the file and line it came from, and the limit it exceeded.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from pipejupyter.backends.jobqueue.slurm_tools import Partition, format_time, parse_time, partitions
from pipejupyter.errors import ConfigError, did_you_mean
from pipejupyter.models import ClusterSpec

_SLURM_MEM = re.compile(r"^(\d+)([KMGT]?)B?$", re.IGNORECASE)
_MB = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024, "": 1}


def _jobqueue_setting(spec: ClusterSpec, key: str, config_key: str):
    import dask

    value = spec.cluster_kwargs.get(key)
    if value is None:
        value = dask.config.get(f"jobqueue.slurm.{config_key}", None)
    return value


def _where(spec: ClusterSpec, key: str) -> tuple[str | None, str]:
    return spec.origin_of(f"cluster_kwargs.{key}"), f"profiles.{spec.profile}.cluster_kwargs.{key}"


def validate_walltime(spec: ClusterSpec) -> None:
    value = spec.cluster_kwargs.get("walltime")
    if value is None:
        return
    try:
        parse_time(str(value))
    except ValueError:
        source, key = _where(spec, "walltime")
        raise ConfigError(
            f"{value!r} is not a SLURM time",
            source=source,
            key=key,
            accepted=(
                'MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS (quote it in YAML: "01:00:00")'
            ),
        ) from None


def requested_memory_mb(spec: ClusterSpec) -> tuple[int | None, str]:
    """The job's --mem in MB (as dask-jobqueue writes it) and the key it came from."""
    from dask.utils import parse_bytes

    job_mem = spec.cluster_kwargs.get("job_mem")
    if job_mem is not None:
        m = _SLURM_MEM.match(str(job_mem).strip())
        return (math.ceil(int(m[1]) * _MB[m[2].upper()]) if m else None), "job_mem"
    memory = _jobqueue_setting(spec, "memory", "memory")
    if memory is None:
        return None, "memory"
    try:
        return math.ceil(parse_bytes(memory) / 2**20), "memory"
    except (ValueError, TypeError):
        return None, "memory"


def check_partition(spec: ClusterSpec, environ: Mapping[str, str] | None = None) -> None:
    """Raise ConfigError when the profile cannot run in its partition(s); silent if unknown."""
    info = partitions(environ)
    if not info:
        return
    queue = _jobqueue_setting(spec, "queue", "queue")
    if queue:
        names = [n.strip() for n in str(queue).split(",") if n.strip()]
        for name in names:
            if name not in info:
                source, key = _where(spec, "queue")
                raise ConfigError(
                    f"partition {name!r} does not exist on this SLURM cluster",
                    source=source,
                    key=key,
                    accepted=sorted(info),
                    suggestion=did_you_mean(name, info),
                )
        candidates = [info[n] for n in names]
    else:
        candidates = [p for p in info.values() if p.default]
    if not candidates:
        return
    # SLURM runs a multi-partition job in whichever partition fits: one fit is enough.
    problems = [_misfit(spec, p) for p in candidates]
    if all(problems):
        raise problems[0]


def _over(spec: ClusterSpec, name: str, message: str, accepted: str) -> ConfigError:
    """The error for cluster_kwargs.<name> asking more than the partition gives."""
    source, key = _where(spec, name)
    return ConfigError(message, source=source, key=key, accepted=accepted)


def _misfit(spec: ClusterSpec, part: Partition) -> ConfigError | None:
    walltime = _jobqueue_setting(spec, "walltime", "walltime")
    if walltime is not None and part.max_time is not None:
        try:
            seconds = parse_time(str(walltime))
        except ValueError:
            seconds = None
        if seconds is not None and seconds > part.max_time:
            return _over(
                spec,
                "walltime",
                f"walltime {walltime!r} is longer than partition {part.name!r} allows",
                f"at most {format_time(part.max_time)} (the partition's MaxTime)",
            )
    cpus = spec.cluster_kwargs.get("job_cpu") or _jobqueue_setting(spec, "cores", "cores")
    limit = min((c for c in (part.node_cpus, part.max_cpus_per_node) if c), default=None)
    if isinstance(cpus, int) and limit and cpus > limit:
        name = "job_cpu" if spec.cluster_kwargs.get("job_cpu") else "cores"
        return _over(
            spec,
            name,
            f"{name}={cpus} CPUs per job, "
            f"but the nodes of partition {part.name!r} have at most {limit}",
            f"at most {limit}",
        )
    mem, name = requested_memory_mb(spec)
    limit = min((m for m in (part.node_memory, part.max_mem_per_node) if m), default=None)
    if mem and limit and mem > limit:
        return _over(
            spec,
            name,
            f"{name} asks for {mem} MB per job, "
            f"but the nodes of partition {part.name!r} have at most {limit} MB",
            f"at most {limit}MB ({limit / 1024:.1f} GiB)",
        )
    return None
