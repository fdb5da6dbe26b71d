"""Live models of clusters owned by other processes (kernels, scripts, other servers).

A discovery file only says where a cluster's scheduler is and how many workers its
owner asked for. To show *live* worker counts, the watcher keeps one read-only
connection per discovered scheduler (``ClusterManager.connect(address, set_default=False)``)
and answers the model of that connection under the discovered id, name and owner.
Connections are reused across polls and closed when their discovery file goes away.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future, wait
from typing import Any

from pipejupyter.errors import PipejupyterError
from pipejupyter.lifecycle import discovery
from pipejupyter.lifecycle.handle import ClusterHandle
from pipejupyter.lifecycle.manager import ClusterManager
from pipejupyter.models import ClusterStatus, cluster_model, worker_row

logger = logging.getLogger(__name__)

#: seconds between connection attempts to a scheduler that did not answer
RETRY_AFTER = 5.0
#: seconds one connection attempt may take (in a probe thread: no poll waits that long)
CONNECT_TIMEOUT = 3.0
#: seconds a scheduler may take to greet a new TCP connection before it counts as silent
#: (a Dask connect to a silent one would wait forever: see discovery.scheduler_answer)
GREETING_TIMEOUT = 1.0
#: seconds a listing waits for all its probes together; a cluster whose probe has not
#: answered by then is shown as unreachable, and the probe goes on for the next poll
PROBE_DEADLINE = 1.5
#: probes running at once (each holds a thread while it waits on a scheduler)
PROBE_THREADS = 16
#: pending rows built for one discovered cluster; the model's "pending" count stays exact
MAX_PENDING_ROWS = 100


class Probes:
    """Calls that may wait on a remote scheduler, in a few threads of their own.

    Each key has at most one call in flight: a poll that comes while the previous poll's
    call still waits shares it instead of starting another, so a hung scheduler holds
    one thread, not one per poll. Callers wait for the calls only up to a deadline.
    The threads are daemons: a call that never returns (a Dask handshake has no time
    limit) cannot keep the server from exiting, as a ThreadPoolExecutor's would.
    """

    def __init__(self, threads: int = PROBE_THREADS) -> None:
        self._threads = threads
        self._started = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._running: dict[Hashable, Future] = {}
        self._lock = threading.Lock()
        self._closed = False

    def run(
        self, calls: dict[Hashable, Callable[[], Any]], deadline: float
    ) -> dict[Hashable, Future]:
        """Start ``calls`` (or join the ones in flight) and wait until all are done or
        ``deadline`` seconds passed; the futures, done or not."""
        with self._lock:
            for key in [k for k, f in self._running.items() if f.done()]:
                del self._running[key]
            futures = {}
            for key, call in calls.items():
                if key not in self._running:
                    self._running[key] = self._submit(call)
                futures[key] = self._running[key]
        wait(futures.values(), timeout=deadline)
        return futures

    def after(self, key: Hashable, call: Callable[[], Any]) -> None:
        """Run ``call`` in a probe thread once the call in flight for ``key`` (if any) ended."""
        with self._lock:
            running = self._running.get(key)

        def submit(_: Any = None) -> None:
            with self._lock:
                self._submit(call)

        if running is not None:
            running.add_done_callback(submit)
        else:
            submit()

    def shutdown(self) -> None:
        """Let the threads end once idle; calls not started yet are cancelled."""
        with self._lock:
            self._closed = True
            for _ in range(self._started):
                self._queue.put(None)

    # -- internals (caller holds the lock) ------------------------------------------
    def _submit(self, call: Callable[[], Any]) -> Future:
        future: Future = Future()
        if self._closed:
            future.cancel()
            return future
        self._queue.put((future, call))
        if self._started < self._threads:
            self._started += 1
            threading.Thread(target=self._work, name="pipejupyter-probe", daemon=True).start()
        return future

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            future, call = item
            if self._closed:
                future.cancel()
                continue
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(call())
            except BaseException as exc:  # handed to whoever waits on the future
                future.set_exception(exc)


class _Watch:
    """One discovered scheduler: the watching connection and what the last probe found.
    Only the probe in flight for it (one at a time, see Probes) changes it."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self.handle: ClusterHandle | None = None
        self.error: str | None = None
        self.lost = False  # the scheduler's port is closed: it is gone, not just slow
        self.next_try = 0.0
        self.retired = False


class DiscoveredClusters:
    """Models of discovered clusters with live worker rows; thread-safe.

    A listing never waits longer than ``deadline`` on the schedulers, whatever they do:
    they are probed together in the threads of ``Probes``, and one that has not answered
    in time is listed as unreachable.
    """

    def __init__(self, manager: ClusterManager, probes: Probes | None = None) -> None:
        self._manager = manager  # holds the watching connections (never owned)
        self._watches: dict[tuple[str, str | None], _Watch] = {}  # (id, address) -> watch
        self._lock = threading.Lock()  # guards _watches only; never held while probing
        self.probes = probes or Probes()

    def records(self, skip: set[str]) -> list[dict[str, Any]]:
        """Discovery records of other processes; ``skip`` holds ids/addresses of our own."""
        return [
            r
            for r in discovery.read_all()
            if r["id"] not in skip and r.get("scheduler_address") not in skip
        ]

    def models(
        self,
        records: list[dict[str, Any]],
        timeout: float = 2.0,
        deadline: float = PROBE_DEADLINE,
    ) -> list[dict[str, Any]]:
        """One live model per record, in the records' order, within ``deadline`` seconds;
        closes watches of gone records. ``timeout``: what one probe's scheduler call may take."""
        with self._lock:
            keys = [_key(r) for r in records]
            for gone in [key for key in self._watches if key not in set(keys)]:
                self._retire(gone, self._watches.pop(gone))
            watches = [self._watches.setdefault(key, _Watch(key[1])) for key in keys]
        futures = self.probes.run(
            {
                key: functools.partial(self._probe, watch, timeout)
                for key, watch in zip(keys, watches, strict=True)
            },
            deadline,
        )
        return [
            self._model(record, watch, futures[key], deadline)
            for record, key, watch in zip(records, keys, watches, strict=True)
        ]

    def model(
        self, record: dict[str, Any], timeout: float = 2.0, deadline: float = PROBE_DEADLINE
    ) -> dict[str, Any]:
        key = _key(record)
        with self._lock:
            watch = self._watches.setdefault(key, _Watch(key[1]))
        future = self.probes.run({key: functools.partial(self._probe, watch, timeout)}, deadline)
        return self._model(record, watch, future[key], deadline)

    def close(self) -> None:
        with self._lock:
            watches = list(self._watches.values())
            self._watches.clear()
        self.probes.shutdown()
        for watch in watches:
            watch.retired = True
            self._close(watch)

    # -- internals ------------------------------------------------------------------
    def _model(
        self, record: dict[str, Any], watch: _Watch, future: Future, deadline: float
    ) -> dict[str, Any]:
        if not future.done() or future.cancelled():  # cancelled: the server is stopping
            return record_model(
                record,
                None,
                f"the scheduler at {watch.address} did not answer within {deadline:g} s",
            )
        if future.exception() is not None:  # a bug in the probe: show it, keep listing
            exc = future.exception()
            logger.error("pipejupyter: probing %s failed", watch.address, exc_info=exc)
            return record_model(record, None, f"probing failed: {type(exc).__name__}: {exc}")
        return record_model(record, future.result(), watch.error, lost=watch.lost)

    def _probe(self, watch: _Watch, timeout: float) -> dict[str, Any] | None:
        """The live model of a watched scheduler, or None (``watch.error`` says why).
        Runs in a probe thread, never two at once for one watch."""
        if watch.retired:
            return None
        if watch.handle is None:
            if time.monotonic() < watch.next_try:
                return None  # what the last attempt found still stands
            if not self._connect(watch):
                return None
        live = watch.handle.model(timeout=timeout)
        if live["status"] == ClusterStatus.LOST:
            # Each further call on a dead connection waits its whole timeout: drop it and
            # come back through the cheap reachability check.
            watch.error = live["error"]
            answer = discovery.scheduler_answer(watch.address, GREETING_TIMEOUT)
            watch.lost = answer == discovery.REFUSED
            watch.next_try = time.monotonic() + RETRY_AFTER
            self._close(watch)
            return None
        watch.error, watch.lost = None, False
        return live

    def _connect(self, watch: _Watch) -> bool:
        # A refused TCP connect answers at once, where a Dask connect would retry until its
        # timeout; and a Dask connect to a stopped scheduler would wait for ever.
        answer = discovery.scheduler_answer(watch.address, GREETING_TIMEOUT)
        watch.next_try = time.monotonic() + RETRY_AFTER
        if answer in (discovery.REFUSED, discovery.SILENT):
            watch.lost = answer == discovery.REFUSED
            watch.error = (
                f"scheduler not reachable at {watch.address}"
                if watch.lost
                else f"the scheduler at {watch.address} does not answer"
            )
            return False
        try:
            handle = self._manager.connect(
                watch.address, set_default=False, timeout=CONNECT_TIMEOUT
            )
        except PipejupyterError as exc:  # scheduler gone, hung or not up yet: retry later
            watch.error, watch.lost = str(exc), False
            return False
        watch.handle = handle
        if watch.retired:  # its record went away while we connected
            self._close(watch)
            return False
        return True

    def _retire(self, key: tuple[str, str | None], watch: _Watch) -> None:
        """Close a watch whose record is gone, once its probe in flight (if any) ended."""
        watch.retired = True
        self.probes.after(key, functools.partial(self._close, watch))

    @staticmethod
    def _close(watch: _Watch) -> None:
        handle, watch.handle = watch.handle, None
        if handle is not None:
            with contextlib.suppress(Exception):  # closing a read-only connection
                handle.stop(timeout=5)


def _key(record: dict[str, Any]) -> tuple[str, str | None]:
    return record["id"], record.get("scheduler_address")


def record_model(
    record: dict[str, Any], live: dict[str, Any] | None, error: str | None, *, lost: bool = False
) -> dict[str, Any]:
    """The cluster model of a discovered cluster: identity from its record, numbers from
    the live connection (when there is one).

    Without a live model the cluster is "starting" if its owner says so (its scheduler may
    not be up yet), "lost" when its scheduler's port is closed (``lost``), and else
    "unreachable": it did not answer, which says nothing about whether it is fine.
    """
    recorded = str(record.get("status") or ClusterStatus.RUNNING)
    rows = list(live["worker_info"]) if live else []
    if live is None:
        if recorded == ClusterStatus.STARTING:
            status = ClusterStatus.STARTING
        elif lost and recorded != ClusterStatus.UNREACHABLE:
            status = ClusterStatus.LOST
        else:
            status = ClusterStatus.UNREACHABLE
    elif recorded in (ClusterStatus.STARTING, ClusterStatus.STOPPING):
        status = recorded  # the owner knows better than a watcher
    else:
        status = live["status"]
    requested = record.get("workers_requested")
    pending = 0
    if (
        record.get("adapt") is None
        and isinstance(requested, int)
        and status not in (ClusterStatus.LOST, ClusterStatus.UNREACHABLE)
    ):
        # Workers the owner asked for that have not connected yet (queued jobs...); a
        # record is input, so a huge request builds MAX_PENDING_ROWS rows, not a million.
        connected = (
            live["workers"]  # worker_info lists only the first workers (handle.WORKER_ROWS)
            if live
            else sum(1 for r in rows if r["status"] != "pending")
        )
        pending = max(0, requested - connected)
        rows += [
            worker_row(name=f"pending-{i}", status="pending")
            for i in range(min(pending, MAX_PENDING_ROWS))
        ]
    model = cluster_model(
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
        error=error if status in (ClusterStatus.LOST, ClusterStatus.UNREACHABLE) else None,
    )
    model["pending"] += max(0, pending - MAX_PENDING_ROWS)  # rows not built still count
    if live is not None:  # totals of every worker, also those worker_info does not list
        model.update({k: live[k] for k in ("workers", "cores", "memory", "memory_used", "tasks")})
    return model
