"""The scheduler-side worker summary (lifecycle/worker_summary.py) on a real scheduler: the
natural order it keeps between refreshes follows workers that leave and join, and the totals
it takes from the scheduler match the workers' own records."""

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


def _names(model) -> list[str]:
    return [w["name"] for w in model["worker_info"]]


def test_the_kept_order_follows_workers_that_leave_and_join(cluster):
    manager = ClusterManager("script")
    handle = manager.connect(cluster.scheduler_address, set_default=False)
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

    manager = ClusterManager("script")
    handle = manager.connect(cluster.scheduler_address, set_default=False)
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
