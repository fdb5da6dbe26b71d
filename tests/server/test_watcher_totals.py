"""A discovered cluster's model keeps the totals of every worker when its live model lists
only the first ones (handle.WORKER_ROWS)."""

from __future__ import annotations

from pipejupyter.models import cluster_model, worker_row
from pipejupyter.server.watcher import record_model


def _live(total: int, listed: int) -> dict:
    rows = [
        worker_row(name=str(i), threads=2, memory_limit=1000, memory_used=10, processing=1)
        for i in range(listed)
    ]
    model = cluster_model(
        id="a" * 12,
        name="big",
        backend="slurm",
        profile=None,
        status="running",
        scheduler_address="tcp://127.0.0.1:1",
        dashboard_link=None,
        worker_info=rows,
        adapt=None,
        owner={},
        started=0.0,
    )
    # what handle.model() sets from the scheduler's totals
    model.update(workers=total, cores=2 * total, memory=1000 * total, memory_used=10 * total)
    model.update(tasks=total)
    return model


def _record(requested: int) -> dict:
    return {
        "id": "a" * 12,
        "name": "big",
        "backend": "slurm",
        "status": "running",
        "scheduler_address": "tcp://127.0.0.1:1",
        "workers_requested": requested,
        "owner": {"pid": 1, "host": "h", "kind": "kernel"},
    }


def test_totals_count_every_worker_not_the_listed_rows():
    model = record_model(_record(500), _live(500, 100), None)
    assert len(model["worker_info"]) == 100
    assert (model["workers"], model["pending"]) == (500, 0)
    assert (model["cores"], model["memory"], model["tasks"]) == (1000, 500_000, 500)


def test_pending_is_what_was_asked_beyond_every_connected_worker():
    model = record_model(_record(520), _live(500, 100), None)
    assert model["workers"] == 500
    assert model["pending"] == 20
    assert sum(1 for r in model["worker_info"] if r["status"] == "pending") == 20
