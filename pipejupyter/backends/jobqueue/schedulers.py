"""Batch-scheduler backends through dask-jobqueue: SLURM, PBS, SGE, LSF, HTCondor, OAR, Moab.

One thin module, as dask-jobqueue is thin per scheduler: JobQueueBackend (base.py) does
the work, each scheduler class sets a few attributes. SLURM, the one we can run in CI,
adds partition checks, ``sbatch --test-only``, job states from squeue and a final scancel.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time

from pipejupyter.backends.jobqueue.base import JobQueueBackend, _default_job_name
from pipejupyter.backends.jobqueue.job_script import header_lines
from pipejupyter.backends.jobqueue.slurm_limits import check_partition, validate_walltime
from pipejupyter.backends.jobqueue.slurm_tools import (
    Partition,
    cancel,
    format_time,
    job_end,
    job_states,
    partitions,
    test_only,
)
from pipejupyter.environment.slurm import submission_environ
from pipejupyter.errors import ClusterError, ConfigError
from pipejupyter.models import ClusterSpec, OptionField

logger = logging.getLogger(__name__)

STATE_CACHE = 1.0


def _partition_summary(part: Partition) -> str:
    limits = [f"max time {format_time(part.max_time)}" if part.max_time else "no time limit"]
    if part.node_cpus:
        limits.append(f"{part.node_cpus} CPUs")
    if part.node_memory:
        limits.append(f"{part.node_memory} MB")
    return ", ".join(limits) + (" (default)" if part.default else "")


def _slurm_name(text: str) -> str:
    return "-".join(text.split())  # "#SBATCH -J" takes one word


class SLURMBackend(JobQueueBackend):
    name = "slurm"
    config_name = "slurm"
    submit_command = "sbatch"
    cluster_classes = ("dask_jobqueue.SLURMCluster", "dask_jobqueue.slurm.SLURMCluster")

    @classmethod
    def job_defaults(cls, spec: ClusterSpec) -> None:
        kwargs = spec.cluster_kwargs
        partition = os.environ.get("SLURM_JOB_PARTITION")
        if partition and not kwargs.get("queue"):
            kwargs["queue"] = partition
            spec.origin["cluster_kwargs.queue"] = "environment (SLURM_JOB_PARTITION)"
            spec.notes.append(f"queue={partition!r}: the partition of the enclosing SLURM job")
        outer = os.environ.get("SLURM_JOB_NAME")
        _default_job_name(
            spec,
            cls.config_name,
            _slurm_name(f"{outer}-dask") if outer else f"pipejupyter-{spec.profile}",
        )

    @classmethod
    def validate_kwargs(cls, spec: ClusterSpec) -> None:

        super().validate_kwargs(spec)
        validate_walltime(spec)

    @classmethod
    def option_fields(cls, spec: ClusterSpec) -> list[OptionField]:
        """The job fields, with partitions as choices and the chosen one's limits as bounds
        (what scontrol says; without an answer the fields are unbounded)."""
        fields = super().option_fields(spec)
        found = partitions(submission_environ("auto", ()))
        if not found:
            return fields
        chosen = spec.cluster_kwargs.get("queue") or next(
            (p.name for p in found.values() if p.default), None
        )
        part = found.get(chosen) if chosen else None
        by_key = {f.key: f for f in fields}
        queue = by_key["cluster_kwargs.queue"]
        queue.kind = "select"
        queue.choices = list(found)
        queue.choice_help = [_partition_summary(p) for p in found.values()]
        queue.help = "partition (default: the cluster's default partition)"
        if part is None:
            return fields
        cpus = part.max_cpus_per_node or part.node_cpus
        if cpus:
            by_key["cluster_kwargs.cores"].maximum = cpus
        memory = part.max_mem_per_node or part.node_memory
        if memory:
            by_key["cluster_kwargs.memory"].maximum = memory * 2**20
            by_key["cluster_kwargs.memory"].unit = "bytes"
        if part.max_time:
            walltime = by_key["cluster_kwargs.walltime"]
            walltime.maximum = part.max_time
            walltime.unit = "seconds"
            walltime.help += f"; partition {part.name!r} allows {format_time(part.max_time)}"
        return fields

    def preflight(self) -> None:
        """Our partition check (names the key and file) and sbatch's own verdict, before
        the scheduler starts and before any job is queued."""

        environ = self.submission_environ()
        try:
            check_partition(self.spec, environ)
            problem = None
        except ConfigError as exc:
            problem = exc
        script = self.job_script(scheduler="tcp://127.0.0.1:1", name="check")
        accepted, message = test_only(script, environ)
        said = (
            f"; sbatch says: {' / '.join(message.splitlines())}" if message and not accepted else ""
        )
        if problem is not None:
            raise ConfigError(
                problem.problem + said,
                source=problem.source,
                key=problem.key,
                accepted=problem.accepted,
                suggestion=problem.suggestion,
            )
        if not accepted:
            header = "; ".join(
                line.removeprefix("#SBATCH ") for line in header_lines(script, ("#SBATCH",))
            )
            raise ClusterError(
                self.redact(
                    f"sbatch rejects the worker job ({header}): {' / '.join(message.splitlines())}"
                )
            )

    def preflight_notes(self, script: str) -> list[str]:

        environ = self.submission_environ()
        notes = []
        try:
            check_partition(self.spec, environ)
        except ConfigError as exc:
            notes.append(f"problem: {exc}")
        if shutil.which("sbatch", path=environ.get("PATH")):
            accepted, message = test_only(script, environ)
            if accepted:
                # "sbatch: Job 12 to start at ..." names no real job: keep the forecast only.
                forecast = re.search(r"to start at .*", message)
                notes.append(
                    "sbatch --test-only: accepted"
                    + (f" (would start {forecast[0][len('to start ') :]})" if forecast else "")
                )
            else:
                notes.append(f"sbatch --test-only: REJECTED: {' / '.join(message.splitlines())}")
        return notes

    def job_states(self, job_ids: list[str]) -> dict[str, str]:
        # Widgets and the lab panel poll the model every second or two: one squeue per
        # STATE_CACHE seconds for the same set of jobs is enough.

        key = tuple(sorted(job_ids))
        cached = getattr(self, "_states_cache", None)
        if cached and cached[0] == key and time.monotonic() - cached[1] < STATE_CACHE:
            return cached[2]
        states = job_states(job_ids, self.submission_environ())
        self._states_cache = (key, time.monotonic(), states)
        return states

    def job_end(self, job_id: str, listed_state: str | None) -> dict[str, str] | None:
        # squeue -j lists no finished job (and nothing when it fails): scontrol decides.
        return job_end(job_id, self.submission_environ())

    def cancel_leftovers(self) -> None:

        environ = self.submission_environ()
        left = list(job_states(self.ledger.job_ids, environ))
        if left:
            logger.info("cancelling %d leftover jobs: %s", len(left), " ".join(left))
            cancel(left, environ)


class PBSBackend(JobQueueBackend):
    name = "pbs"
    config_name = "pbs"
    submit_command = "qsub"
    cluster_classes = ("dask_jobqueue.PBSCluster", "dask_jobqueue.pbs.PBSCluster")


class SGEBackend(JobQueueBackend):
    name = "sge"
    config_name = "sge"
    submit_command = "qsub"
    cluster_classes = ("dask_jobqueue.SGECluster", "dask_jobqueue.sge.SGECluster")


class LSFBackend(JobQueueBackend):
    name = "lsf"
    config_name = "lsf"
    submit_command = "bsub"
    cluster_classes = ("dask_jobqueue.LSFCluster", "dask_jobqueue.lsf.LSFCluster")


class HTCondorBackend(JobQueueBackend):
    name = "htcondor"
    config_name = "htcondor"
    submit_command = "condor_submit"
    cluster_classes = ("dask_jobqueue.HTCondorCluster", "dask_jobqueue.htcondor.HTCondorCluster")


class OARBackend(JobQueueBackend):
    name = "oar"
    config_name = "oar"
    submit_command = "oarsub"
    cluster_classes = ("dask_jobqueue.OARCluster", "dask_jobqueue.oar.OARCluster")


class MoabBackend(JobQueueBackend):
    name = "moab"
    config_name = "moab"
    submit_command = "msub"
    cluster_classes = ("dask_jobqueue.MoabCluster", "dask_jobqueue.moab.MoabCluster")
