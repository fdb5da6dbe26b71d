"""Live models of clusters owned by other processes (kernels, scripts, other servers).

A discovery file only says where a cluster's scheduler is and how many workers its
owner asked for. To show *live* worker counts, the watcher keeps one read-only
connection per discovered scheduler (``ClusterManager.connect(address, set_default=False)``)
and answers the model of that connection under the discovered id, name and owner.
Connections are reused across polls and closed when their discovery file goes away.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

from pipejupyter.errors import PipejupyterError
from pipejupyter.lifecycle import discovery
from pipejupyter.lifecycle.handle import ClusterHandle
from pipejupyter.lifecycle.manager import ClusterManager
from pipejupyter.models import ClusterStatus, cluster_model, worker_row

logger = logging.getLogger(__name__)

#: seconds between connection attempts to a scheduler that did not answer
RETRY_AFTER = 5.0
#: seconds one connection attempt may take (a poll must stay fast)
CONNECT_TIMEOUT = 3.0


class _Watch:
    def __init__(self, address: str) -> None:
        self.address = address
        self.handle: ClusterHandle | None = None
        self.error: str | None = None
        self.next_try = 0.0


class DiscoveredClusters:
    """Models of discovered clusters with live worker rows; thread-safe."""

    def __init__(self, manager: ClusterManager) -> None:
        self._manager = manager  # holds the watching connections (never owned)
        self._watches: dict[str, _Watch] = {}  # discovered id -> connection
        self._lock = threading.Lock()

    def records(self, skip: set[str]) -> list[dict[str, Any]]:
        """Discovery records of other processes; ``skip`` holds ids/addresses of our own."""
        return [
            r
            for r in discovery.read_all()
            if r["id"] not in skip and r.get("scheduler_address") not in skip
        ]

    def models(self, records: list[dict[str, Any]], timeout: float = 2.0) -> list[dict[str, Any]]:
        """One live model per record, in the records' order; closes watches of gone records."""
        with self._lock:
            wanted = {r["id"] for r in records}
            for gone in [key for key in self._watches if key not in wanted]:
                self._close(self._watches.pop(gone))
            return [self._model(record, timeout) for record in records]

    def model(self, record: dict[str, Any], timeout: float = 2.0) -> dict[str, Any]:
        with self._lock:
            return self._model(record, timeout)

    def close(self) -> None:
        with self._lock:
            for watch in self._watches.values():
                self._close(watch)
            self._watches.clear()

    # -- internals (caller holds the lock) ------------------------------------------
    def _model(self, record: dict[str, Any], timeout: float) -> dict[str, Any]:
        address = record.get("scheduler_address")
        watch = self._watches.get(record["id"])
        if watch is not None and watch.address != address:  # same id, new scheduler
            self._close(watch)
            watch = None
        if watch is None:
            watch = self._watches[record["id"]] = _Watch(address)
        if watch.handle is None and address and time.monotonic() >= watch.next_try:
            self._connect(watch)
        live = None
        if watch.handle is not None:
            live = watch.handle.model(timeout=timeout)
            watch.error = live["error"]
            if live["status"] == ClusterStatus.LOST:
                # Each further call on a dead connection waits its whole timeout: drop it
                # and come back through the cheap reachability check.
                self._close(watch)
                watch.next_try = time.monotonic() + RETRY_AFTER
                live = None
        return record_model(record, live, watch.error)

    def _connect(self, watch: _Watch) -> None:
        # A refused TCP connect answers at once; a Dask connect would retry until its timeout
        # while every poll waits on this lock.
        if not discovery.scheduler_reachable(watch.address, timeout=0.5):
            watch.error = f"scheduler not reachable at {watch.address}"
            watch.next_try = time.monotonic() + RETRY_AFTER
            return
        try:
            watch.handle = self._manager.connect(
                watch.address, set_default=False, timeout=CONNECT_TIMEOUT
            )
            watch.error = None
        except PipejupyterError as exc:  # scheduler gone or not up yet: show it, retry later
            watch.error = str(exc)
            watch.next_try = time.monotonic() + RETRY_AFTER

    @staticmethod
    def _close(watch: _Watch) -> None:
        if watch.handle is not None:
            with contextlib.suppress(Exception):  # closing a read-only connection
                watch.handle.stop(timeout=5)
            watch.handle = None


def record_model(
    record: dict[str, Any], live: dict[str, Any] | None, error: str | None
) -> dict[str, Any]:
    """The cluster model of a discovered cluster: identity from its record, numbers from
    the live connection (when there is one)."""
    recorded = str(record.get("status") or ClusterStatus.RUNNING)
    rows = list(live["worker_info"]) if live else []
    if live is None:
        status = recorded if recorded == ClusterStatus.STARTING else ClusterStatus.LOST
    elif recorded in (ClusterStatus.STARTING, ClusterStatus.STOPPING):
        status = recorded  # the owner knows better than a watcher
    else:
        status = live["status"]
    requested = record.get("workers_requested")
    if record.get("adapt") is None and isinstance(requested, int) and status != ClusterStatus.LOST:
        # Workers the owner asked for that have not connected yet (queued jobs...).
        connected = sum(1 for r in rows if r["status"] != "pending")
        rows += [
            worker_row(name=f"pending-{i}", status="pending")
            for i in range(max(0, requested - connected))
        ]
    return cluster_model(
        id=record["id"],
        name=record.get("name") or record["id"],
        backend=record.get("backend") or "address",
        profile=record.get("profile"),
        status=status,
        scheduler_address=record.get("scheduler_address"),
        dashboard_link=record.get("dashboard_link") or (live or {}).get("dashboard_link"),
        worker_info=rows,
        adapt=record.get("adapt"),
        owner=record.get("owner") or {},
        started=record.get("started") or 0.0,
        error=error if status == ClusterStatus.LOST else None,
    )
