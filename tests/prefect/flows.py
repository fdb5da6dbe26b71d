"""Prefect tasks and flows the tests run. Imported once Prefect is known to be installed;
shipped to workers by value (SLURM jobs cannot import the tests), so they import nothing
from the tests: Prefect sends each flow, with what its function refers to, along with every
task."""

from __future__ import annotations

import os
import sys

import cloudpickle
from distributed import get_worker
from prefect import flow, task

import pipejupyter
from pipejupyter.lifecycle import discovery

cloudpickle.register_pickle_by_value(sys.modules[__name__])


@task
def square(x: int) -> dict:
    worker = get_worker()
    return {
        "x": x * x,
        "worker": worker.address,
        "scheduler": worker.scheduler.address,
        "job": os.environ.get("SLURM_JOB_ID"),
    }


def _explode(x: int) -> None:
    raise ValueError(f"item {x} is bad (worker pid {os.getpid()})")


@task
def bad(x: int) -> int:
    _explode(x)
    return x


@task
def listobs(vis: str) -> dict:
    result = pipejupyter.casa("listobs", vis=vis, listfile="").run()
    return {"value": result.value, "command": result.command, "job": os.environ.get("SLURM_JOB_ID")}


def _running() -> dict:
    """What this process sees while a flow runs: its clusters and the discovery records."""
    return {
        "clusters": [(h.name, h.status.value, h.backend_label) for h in pipejupyter.clusters()],
        "discovered": sorted(r["name"] for r in discovery.read_all()),
    }


@flow
def map_flow(n: int) -> dict:
    """Square ``n`` items on the flow's task runner; report what ran where."""
    futures = square.map(range(n))
    seen = _running()  # the tasks are submitted: the run's cluster is up
    return {"results": futures.result(), **seen}


@flow
def failing_flow() -> list:
    """One good task, one that raises on the worker."""
    return [square.submit(1), bad.submit(3)]


@flow
def listobs_flow(mses: list[str]) -> dict:
    futures = listobs.map(mses)
    seen = _running()
    return {"results": futures.result(), **seen}
