"""CPUs a worker may keep busy, and a per-process guard for work that runs several processes.

A nested MPI session (``casa(..., mpi=N)``, ``mpirun(fn, nprocs=N)``) keeps N+1 or N CPUs
busy from one Dask thread. Stages ask the scheduler for that many units of the
``pipejupyter-cpus`` resource (stages/placement.py gives every worker its budget); work that
only turns out to be MPI when it runs (a cell returning a request) is held here instead, so two
sessions in threads of one worker never use more CPUs together than the worker has.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Mapping

CPU_RESOURCE = "pipejupyter-cpus"


def worker_cpus(environ: Mapping[str, str] | None = None) -> int:
    """CPUs this process may use: its SLURM job's CPUs on this node, else its CPU affinity."""
    environ = os.environ if environ is None else environ
    for name in ("SLURM_CPUS_ON_NODE", "SLURM_CPUS_PER_TASK"):
        value = environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class CpuSlots:
    """A counting guard over this process's CPU budget; a request larger than the whole
    budget still runs, alone (oversubscribed, as mpirun --oversubscribe does)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self.used = 0
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def hold(self, cpus: int) -> Iterator[int]:
        need = max(1, min(cpus, self.capacity))
        with self._cond:
            self._cond.wait_for(lambda: self.used + need <= self.capacity)
            self.used += need
        try:
            yield need
        finally:
            with self._cond:
                self.used -= need
                self._cond.notify_all()


_slots: CpuSlots | None = None
_slots_lock = threading.Lock()


def process_slots() -> CpuSlots:
    """This process's guard, sized once from :func:`worker_cpus`."""
    global _slots
    with _slots_lock:
        if _slots is None:
            _slots = CpuSlots(worker_cpus())
        return _slots
