"""The model of a cluster with more workers than a view lists: the scheduler sends totals of
every worker and the first rows only (lifecycle/worker_summary.py). On a real scheduler: the
natural order it keeps between refreshes follows workers that leave and join, the totals it
takes from the scheduler match the workers' own records, and every worker's name comes only
when asked for."""

from __future__ import annotations

import pytest

from pipejupyter.lifecycle.manager import ClusterManager
from tests.support.common import wait_until

pytestmark = pytest.mark.usefixtures("isolated", "no_leaks")

WORKERS = 12


@pytest.fixture
def cluster():
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=WORKERS,
        threads_per_worker=1,
        processes=False,
        protocol="tcp",
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        silence_logs=40,
    ) as cluster:
        yield cluster


def _connected(cluster):
    manager = ClusterManager("script")
    handle = manager.connect(cluster.scheduler_address, set_default=False)
    return manager, handle


def test_a_model_lists_the_first_workers_and_counts_them_all(cluster):
    manager, handle = _connected(cluster)
    try:
        info = handle.client.scheduler_info(n_workers=-1)["workers"].values()
        model = handle.model(worker_rows=5)
        # natural name order: 10 and 11 come after 9, so they are not among the first five
        assert [w["name"] for w in model["worker_info"]] == ["0", "1", "2", "3", "4"]
        assert model["workers"] == WORKERS
        assert model["pending"] == 0
        assert model["cores"] == WORKERS
        assert model["memory"] == sum(w["memory_limit"] for w in info)
        row = model["worker_info"][0]
        assert row["address"].startswith("tcp://127.0.0.1:")
        assert row["threads"] == 1 and row["memory_limit"] > 0 and row["status"] == "running"
        everyone = handle.model(worker_rows=None)
        assert [w["name"] for w in everyone["worker_info"]] == [str(i) for i in range(WORKERS)]
        assert {k: everyone[k] for k in ("workers", "cores", "memory")} == {
            k: model[k] for k in ("workers", "cores", "memory")
        }
        # logs find any worker by name, also one past the listed rows
        assert "worker 11" in handle.logs("11", lines=5)
    finally:
        manager.stop_all()


def _old_scheduler(dask_scheduler=None):
    # What a scheduler of another distributed version, without these attributes, raises.
    raise AttributeError("'Scheduler' object has no attribute 'handlers'")


def test_a_scheduler_that_cannot_summarize_gives_the_same_model(cluster, monkeypatch):
    from pipejupyter.lifecycle import worker_summary

    manager, handle = _connected(cluster)
    try:
        wanted = handle.model(worker_rows=3)
        assert handle._summary_works and handle._summary_installed
        monkeypatch.setattr(worker_summary, "install", _old_scheduler)
        other = manager.connect(cluster.scheduler_address, set_default=False)
        refused = other.model(worker_rows=3)
        assert other._summary_works is False  # it fell back to the full identity
        for key in ("workers", "cores", "memory", "status"):
            assert refused[key] == wanted[key]
        assert [w["name"] for w in refused["worker_info"]] == ["0", "1", "2"]
        assert [w["name"] for w in other.model(worker_rows=None)["worker_info"]] == [
            str(i) for i in range(WORKERS)
        ]
    finally:
        manager.stop_all()


def _names(model) -> list[str]:
    return [w["name"] for w in model["worker_info"]]


def test_the_kept_order_follows_workers_that_leave_and_join(cluster):
    manager, handle = _connected(cluster)
    try:
        assert _names(handle.model(worker_rows=3)) == ["0", "1", "2"]  # the order is kept now
        client = handle.client
        client.retire_workers(names=["0"])
        assert wait_until(lambda: handle.model()["workers"] == WORKERS - 1, timeout=30)
        assert _names(handle.model(worker_rows=3)) == ["1", "2", "3"]
        cluster.scale(WORKERS + 1)  # one more in its spec: a new worker, named "12"
        assert wait_until(lambda: handle.model()["workers"] == WORKERS, timeout=30)
        model = handle.model(worker_rows=None)
        assert _names(model) == [str(i) for i in range(1, WORKERS + 1)]
        info = client.scheduler_info(n_workers=-1)["workers"].values()
        assert model["cores"] == sum(w["nthreads"] for w in info) == WORKERS
        assert model["memory"] == sum(w["memory_limit"] for w in info)
    finally:
        manager.stop_all()


def test_names_of_every_worker_only_when_asked(cluster):
    from pipejupyter.lifecycle import worker_summary

    manager, handle = _connected(cluster)
    try:
        handle.model()  # installs the RPC
        call = getattr(handle.client.scheduler, worker_summary.HANDLER)
        everyone = handle.client.sync(call, rows=2, names=True)
        assert sorted(everyone["names"], key=int) == [str(i) for i in range(WORKERS)]
        assert [r[1] for r in everyone["rows"]] == ["0", "1"]
        watcher = handle.client.sync(call, rows=2, names=False)
        assert watcher["names"] is None  # a watcher's refresh does not carry 1,000 names
        assert watcher["workers"] == WORKERS and watcher["rows"] == everyone["rows"]
    finally:
        manager.stop_all()
