"""Nested submission: what an enclosing SLURM job must not pass on to a new ``sbatch``.

A lab or script running inside an allocation carries ``SLURM_*`` variables that break or
leak into the jobs it submits (``SLURM_MEM_PER_NODE`` next to the child's own
``SLURM_MEM_PER_CPU`` is fatal to its ``srun``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from pipejupyter.environment.mpi import mpi_variables
from pipejupyter.environment.variables import matches_any

# Variables of an enclosing SLURM job that break or leak into a nested sbatch.
SLURM_NESTED_PATTERNS: tuple[str, ...] = (
    "SLURM_MEM_PER_CPU",
    "SLURM_MEM_PER_GPU",
    "SLURM_MEM_PER_NODE",
    "SLURM_JOB_*",
    "SLURM_JOBID",
    "SLURM_STEP_*",
    "SLURM_STEPID",
    "SLURM_ARRAY_*",
    "SLURM_NTASKS",
    "SLURM_NPROCS",
    "SLURM_NNODES",
    "SLURM_NODELIST",
    "SLURM_TASKS_PER_NODE",
    "SLURM_CPUS_ON_NODE",
    "SLURM_CPUS_PER_TASK",
    "SLURM_DISTRIBUTION",
    "SLURM_EXPORT_ENV",
    "SLURM_GET_USER_ENV",
    "SLURM_OPEN_MODE",
    "SLURM_PROCID",
    "SLURM_LOCALID",
    "SLURM_NODEID",
    "SLURM_TASK_PID",
    "SLURM_PRIO_PROCESS",
    "SLURM_SUBMIT_DIR",
    "SLURM_SUBMIT_HOST",
    "SLURM_TOPOLOGY_ADDR*",
    "SLURM_GTIDS",
    "SLURM_CLUSTER_NAME",
    "SLURM_WORKING_CLUSTER",
    "SBATCH_*",
    "SALLOC_*",
    "SRUN_*",
)


def slurm_nested_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """Variables of an enclosing SLURM job that a nested submission must not inherit."""
    environ = os.environ if environ is None else environ
    if "SLURM_JOB_ID" not in environ and "SLURM_JOBID" not in environ:
        return []
    return sorted(name for name in environ if matches_any(name, SLURM_NESTED_PATTERNS))


def submission_environ(
    policy: str = "auto", extra: Iterable[str] = (), environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """A copy of the environment fit for ``sbatch``/``qsub``: no MPI, no enclosing job."""
    environ = dict(os.environ if environ is None else environ)
    for name in (*mpi_variables(environ, policy, extra), *slurm_nested_variables(environ)):
        environ.pop(name, None)
    return environ
