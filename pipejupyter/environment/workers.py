"""What the workers of one cluster receive: passthrough, explicit values, sanitization.

A profile's ``env`` (pass / set / redact) is resolved against this process's environment,
with MPI launch variables never passed on by pattern.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipejupyter.environment.mpi import MPI_PATTERNS, mpi_variables
from pipejupyter.environment.redaction import redact_mapping
from pipejupyter.environment.slurm import slurm_nested_variables
from pipejupyter.environment.variables import matches_any
from pipejupyter.models import ClusterSpec


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
            parts.append(
                f"removed {len(self.removed_mpi)} MPI launch variables "
                f"({_sample(self.removed_mpi)})"
            )
        if self.removed_slurm:
            parts.append(
                f"removed {len(self.removed_slurm)} variables of the enclosing SLURM job "
                "from submissions "
                f"({_sample(self.removed_slurm)})"
            )
        return "; ".join(parts)


def _sample(names: list[str], n: int = 3) -> str:
    shown = ", ".join(names[:n])
    return shown + (f", +{len(names) - n} more" if len(names) > n else "")


def worker_environment(
    env: Mapping[str, Any] | None,
    mpi: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> WorkerEnvironment:
    """Resolve a profile's ``env`` (pass / set / redact) against this process's environment."""
    environ = os.environ if environ is None else environ
    env = env or {}
    mpi = mpi or {}
    removed = mpi_variables(environ, mpi.get("sanitize", "auto"), mpi.get("extra") or ())
    blocked = set(removed) if mpi.get("sanitize", "auto") != "never" else set()
    # Even without a launch, never pass a rank's identity on to workers by pattern.
    if mpi.get("sanitize", "auto") != "never":
        blocked |= {n for n in environ if matches_any(n, MPI_PATTERNS)}
    patterns = list(env.get("pass") or [])
    variables: dict[str, str] = {}
    passed: list[str] = []
    for name in sorted(environ):
        if name in blocked:
            continue
        if matches_any(name, patterns):
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


def environment_for(spec: ClusterSpec) -> WorkerEnvironment:
    """The worker environment of a resolved profile, CASA settings included."""
    env = worker_environment(spec.env, spec.mpi)
    if spec.casaconfig:
        # CASA settings ride along as one variable that the workers' CASA set-up reads.
        env.variables["PIPEJUPYTER_CASACONFIG"] = json.dumps(spec.casaconfig, sort_keys=True)
        env.explicit.append("PIPEJUPYTER_CASACONFIG")
    return env
