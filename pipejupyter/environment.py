"""Worker environment: passthrough, MPI sanitization, SLURM nesting, and redaction.

One module on purpose: every backend asks it what workers receive, and every face asks
it how to display that without leaking secrets.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

# Variables an MPI launcher (OpenMPI, PMIx, Intel MPI/Hydra, MPICH, MVAPICH) gives a rank.
# Inherited by a spawned Dask worker they make it call MPI_Init as that rank.
MPI_PATTERNS: tuple[str, ...] = (
    "OMPI_*",
    "PMIX_*",
    "PRTE_*",
    "PMI",
    "PMI_*",
    "I_MPI_*",
    "HYDRA_*",
    "MPICH_*",
    "MPIR_*",
    "MV2_*",
    "ORTE_*",
    "MPI_LOCALRANKID",
    "MPI_LOCALNRANKS",
    "HFI_NO_BACKTRACE",
    "IPATH_NO_BACKTRACE",
)
# Any one of these means "this process was started by an MPI launcher".
MPI_LAUNCH_MARKERS: tuple[str, ...] = (
    "OMPI_COMM_WORLD_SIZE",
    "OMPI_COMM_WORLD_RANK",
    "PMIX_RANK",
    "PMI_RANK",
    "PMI_SIZE",
    "PMI_FD",
    "HYDRA_CONTROL_FD",
    "MPI_LOCALRANKID",
)
RANK_VARIABLES: tuple[str, ...] = ("OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK")

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

SECRET_WORDS: tuple[str, ...] = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "KEY", "CREDENTIAL", "PRIVATE")
REDACTED = "********"


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def mpi_launch_detected(environ: Mapping[str, str] | None = None) -> bool:
    environ = os.environ if environ is None else environ
    return any(name in environ for name in MPI_LAUNCH_MARKERS)


def mpi_rank(environ: Mapping[str, str] | None = None) -> int | None:
    environ = os.environ if environ is None else environ
    for name in RANK_VARIABLES:
        value = environ.get(name)
        if value is not None and value.strip().isdigit():
            return int(value)
    return None


def mpi_variables(
    environ: Mapping[str, str] | None = None, policy: str = "auto", extra: Iterable[str] = ()
) -> list[str]:
    """Names that sanitization removes under ``policy`` (auto | always | never)."""
    environ = os.environ if environ is None else environ
    if policy == "never":
        return []
    if policy == "auto" and not mpi_launch_detected(environ):
        return []
    patterns = (*MPI_PATTERNS, *extra)
    return sorted(name for name in environ if _matches(name, patterns))


def slurm_nested_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """Variables of an enclosing SLURM job that a nested submission must not inherit."""
    environ = os.environ if environ is None else environ
    if "SLURM_JOB_ID" not in environ and "SLURM_JOBID" not in environ:
        return []
    return sorted(name for name in environ if _matches(name, SLURM_NESTED_PATTERNS))


def submission_environ(
    policy: str = "auto", extra: Iterable[str] = (), environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """A copy of the environment fit for ``sbatch``/``qsub``: no MPI, no enclosing job."""
    environ = dict(os.environ if environ is None else environ)
    for name in (*mpi_variables(environ, policy, extra), *slurm_nested_variables(environ)):
        environ.pop(name, None)
    return environ


# -- sanitizing this process's environment around spawns ------------------------------

_lock = threading.RLock()
_depth = 0
_saved: dict[str, str] = {}


@contextlib.contextmanager
def mpi_sanitized(mpi: Mapping[str, Any] | None = None) -> Iterator[list[str]]:
    """Remove MPI launch variables from ``os.environ`` for the duration, then restore them.

    Child processes (spawned workers, sbatch) inherit ``os.environ`` at creation time, so
    this wraps every cluster construction and worker spawn. Nested and concurrent uses
    share one removal; the variables come back when the last one exits.
    """
    global _depth
    mpi = mpi or {}
    policy = mpi.get("sanitize", "auto")
    extra = tuple(mpi.get("extra") or ())
    with _lock:
        removed = mpi_variables(os.environ, policy, extra)
        for name in removed:
            _saved.setdefault(name, os.environ.pop(name))
        _depth += 1
    try:
        yield removed
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                for name, value in _saved.items():
                    os.environ.setdefault(name, value)
                _saved.clear()


# -- passthrough --------------------------------------------------------------------


@dataclass
class WorkerEnvironment:
    """What the workers of one cluster receive."""

    variables: dict[str, str] = field(default_factory=dict)
    passed: list[str] = field(default_factory=list)  # names copied from this process
    explicit: list[str] = field(default_factory=list)  # names set by configuration
    removed_mpi: list[str] = field(default_factory=list)
    removed_slurm: list[str] = field(default_factory=list)
    redact: tuple[str, ...] = ()

    def redacted(self) -> dict[str, str]:
        return redact_mapping(self.variables, self.redact)

    def summary(self) -> str:
        """One line saying what sanitization did, for the magic and the CLI."""
        parts = []
        if self.removed_mpi:
            parts.append(f"removed {len(self.removed_mpi)} MPI launch variables ({_sample(self.removed_mpi)})")
        if self.removed_slurm:
            parts.append(
                f"removed {len(self.removed_slurm)} variables of the enclosing SLURM job from submissions "
                f"({_sample(self.removed_slurm)})"
            )
        return "; ".join(parts)


def _sample(names: list[str], n: int = 3) -> str:
    shown = ", ".join(names[:n])
    return shown + (f", +{len(names) - n} more" if len(names) > n else "")


def worker_environment(
    env: Mapping[str, Any] | None, mpi: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> WorkerEnvironment:
    """Resolve a profile's ``env`` (pass / set / redact) against this process's environment."""
    environ = os.environ if environ is None else environ
    env = env or {}
    mpi = mpi or {}
    removed = mpi_variables(environ, mpi.get("sanitize", "auto"), mpi.get("extra") or ())
    blocked = set(removed) if mpi.get("sanitize", "auto") != "never" else set()
    # Even without a launch, never pass a rank's identity on to workers by pattern.
    if mpi.get("sanitize", "auto") != "never":
        blocked |= {n for n in environ if _matches(n, MPI_PATTERNS)}
    patterns = list(env.get("pass") or [])
    variables: dict[str, str] = {}
    passed: list[str] = []
    for name in sorted(environ):
        if name in blocked:
            continue
        if _matches(name, patterns):
            variables[name] = environ[name]
            passed.append(name)
    explicit = []
    for name, value in (env.get("set") or {}).items():
        variables[str(name)] = "" if value is None else str(value)
        explicit.append(str(name))
    return WorkerEnvironment(
        variables=variables,
        passed=passed,
        explicit=explicit,
        removed_mpi=removed,
        removed_slurm=slurm_nested_variables(environ),
        redact=tuple(env.get("redact") or ()),
    )


# -- redaction ----------------------------------------------------------------------


def is_secret(name: str, extra: Iterable[str] = ()) -> bool:
    upper = name.upper()
    return any(word in upper for word in SECRET_WORDS) or _matches(name, extra)


def redact_mapping(values: Mapping[str, Any], extra: Iterable[str] = ()) -> dict[str, Any]:
    extra = tuple(extra)
    return {k: (REDACTED if is_secret(str(k), extra) and v not in (None, "") else v) for k, v in values.items()}


def redact_tree(value: Any, extra: Iterable[str] = ()) -> Any:
    """A copy of nested settings with secret-named values redacted at any depth.

    ``*_env`` keys (e.g. ``password_env``) name a variable, not a secret, and stay shown.
    """
    extra = tuple(extra)
    if isinstance(value, Mapping):
        return {
            k: REDACTED
            if is_secret(str(k), extra) and not str(k).lower().endswith("_env") and v not in (None, "") and not isinstance(v, Mapping)
            else redact_tree(v, extra)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact_tree(v, extra) for v in value]
    return value


def secret_values(values: Mapping[str, Any], extra: Iterable[str] = ()) -> list[str]:
    """The values that must never be shown (at least 4 characters, to avoid noise)."""
    extra = tuple(extra)
    return [str(v) for k, v in values.items() if is_secret(str(k), extra) and v and len(str(v)) >= 4]


def redact_text(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of a secret value inside ``text``."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


_ASSIGNMENT = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>\S+)")


def redact_assignments(text: str, extra: Iterable[str] = ()) -> str:
    """Redact ``NAME=value`` pairs in free text (job scripts, command lines) by name."""
    extra = tuple(extra)

    def repl(m: re.Match) -> str:
        return f"{m['name']}={REDACTED}" if is_secret(m["name"], extra) else m.group(0)

    return _ASSIGNMENT.sub(repl, text)
