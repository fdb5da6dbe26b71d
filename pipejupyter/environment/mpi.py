"""MPI launch variables: detecting a launch, a process's rank, and sanitizing spawns.

A Dask worker that inherits an MPI rank's variables calls MPI_Init as that rank and fails
or hangs; every cluster construction and worker spawn runs inside :func:`mpi_sanitized`.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from pipejupyter.environment.variables import matches_any

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
    return sorted(name for name in environ if matches_any(name, patterns))


def hidden_mpi_variables(policy: str = "auto", extra: Iterable[str] = ()) -> dict[str, str]:
    """MPI variables in this process's C-level environment that ``os.environ`` does not show.

    An MPI library may call ``setenv()`` itself once initialised (Open MPI's PMIx sets
    ``PMIX_MCA_psec`` and ``PMIX_MCA_pmix`` in rank 0 of a casampi session): children inherit
    those, but ``os.environ`` (a copy made at start-up) never lists them.
    """
    if policy == "never" or (policy == "auto" and not mpi_launch_detected()):
        return {}
    patterns = (*MPI_PATTERNS, *extra)
    return {
        name: value
        for name, value in _c_environ().items()
        if name not in os.environ and matches_any(name, patterns)
    }


def _c_environ() -> dict[str, str]:
    try:
        import ctypes

        entries = ctypes.POINTER(ctypes.c_char_p).in_dll(ctypes.CDLL(None), "environ")
    except (OSError, ValueError, AttributeError):  # no C library environ here: nothing hidden
        return {}
    out: dict[str, str] = {}
    index = 0
    while entries[index]:
        name, _, value = entries[index].decode(errors="surrogateescape").partition("=")
        out.setdefault(name, value)
        index += 1
    return out


_lock = threading.RLock()
_depth = 0
_saved: dict[str, str] = {}
_saved_hidden: dict[str, str] = {}


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
        hidden = hidden_mpi_variables(policy, extra)  # before the launch markers go
        for name in removed:
            _saved.setdefault(name, os.environ.pop(name))
        for name, value in hidden.items():
            _saved_hidden.setdefault(name, value)
            os.unsetenv(name)
            removed.append(name)
        _depth += 1
    try:
        yield removed
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                for name, value in _saved.items():
                    os.environ.setdefault(name, value)
                for name, value in _saved_hidden.items():
                    os.putenv(name, value)  # back where the MPI library put it, unseen as before
                _saved.clear()
                _saved_hidden.clear()
