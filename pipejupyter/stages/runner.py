"""The notebook side of one stage run: submit batches, follow events, record every item.

Imported only when a stage runs (it needs distributed). The loop runs in the calling thread.
Dask's callbacks (a batch finished, a worker event) only put messages on a queue; this thread
handles them, so the reporter (and anything it prints) runs where the notebook cell runs, and
the context store has a single writer.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pickle
import queue
import time
import uuid
from array import array
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipejupyter.errors import StageError
from pipejupyter.stages.batch_planning import BatchPlanner
from pipejupyter.stages.bulk import IndexQueue, paused_gc
from pipejupyter.stages.context import ContextStore
from pipejupyter.stages.inputs import Item, item_fingerprinter
from pipejupyter.stages.placement import (
    SlotsPlugin,
    check_resources,
    cpu_resources,
    host_restrictions,
)
from pipejupyter.stages.reporting import StageReporter
from pipejupyter.stages.results import MISSING, ItemFailure, StageResult
from pipejupyter.work.casa import log_commands
from pipejupyter.work.executor import BatchMeta, Entries, PackedWork, run_batch
from pipejupyter.work.kinds import Work

SLOTS_REFRESH = 2.0
INLINE_WORK = 1 << 20  # bytes: smaller work travels with each batch, larger as one shared task


@dataclass
class _Batch:
    """One Dask task in flight: the item indices it runs and where it started (and restarted)."""

    id: int
    entries: list[int]
    group: tuple[str, ...] | None
    future: Any
    starts: list[tuple[str, float]] = field(default_factory=list)  # (worker, time) per start


def _load_work(blob: bytes) -> Work:
    """Unpickle the stage's work on a worker (the shared task used when the work is large)."""
    import cloudpickle

    return cloudpickle.loads(blob)


class StageRunner:
    """The notebook side of one stage run: it submits batches of items to the cluster,
    follows their events in the calling thread and records every item in the context store.

    Dask's callbacks only put messages on ``queue``; :meth:`run` handles them in the thread
    that called it, so the reporter prints where the cell runs and the store has one writer.
    Use one runner for one run: ``StageRunner(...).run()`` (as ``run_stage`` does).

    Parameters
    ----------
    name : str
        The stage name: results and history are kept under it.
    work : Work
        What runs for each item (``run_batch`` calls it on the workers).
    items : list of Item
        The items, in input order (results come back in the same order).
    has_item : bool
        Whether items were given: the work is called with each item (False: the stage runs
        the work once, without an argument).
    retries : int
        Extra attempts for an item whose work raised.
    resources : dict
        Dask resources each task needs.
    per_worker : int or None
        At most this many tasks at once per worker (through a worker resource).
    rerun : bool
        Recompute items that already succeeded with the same fingerprint.
    batch : str, int or bool
        Items per task: ``"auto"``, an int, or False/"off" (see ``BatchPlanner``).
    client : distributed.Client
        The client of the cluster the stage runs on.
    persist : bool
        Record runs, items and attempts in the context store of ``workdir``.
    workdir : path or None
        Where the context store and CASA command logs go (default: the current directory).
    reporter : StageReporter
        Shows progress, output and failures.
    target : float
        Seconds a batched task should take (see ``BatchPlanner``).
    """

    def __init__(
        self,
        *,
        name: str,
        work: Work,
        items: list[Item],
        has_item: bool,
        retries: int,
        resources: dict[str, float],
        per_worker: int | None,
        rerun: bool,
        batch: Any,
        client: Any,
        persist: bool,
        workdir: Any,
        reporter: StageReporter,
        target: float,
    ) -> None:
        self.name = name
        self.work = work
        self.items = items
        self.has_item = has_item
        self.retries = retries
        self.resources = dict(resources)
        self.per_worker = per_worker
        self.rerun = rerun
        self.client = client
        self.persist = persist
        self.reporter = reporter
        self.workdir = os.fspath(workdir) if workdir is not None else os.getcwd()
        self.planner = BatchPlanner(batch, target=target)
        n = len(items)
        self.keys = [it.key for it in items]
        self.values: list[Any] = [MISSING] * n
        # Per item state is kept in flat arrays, not lists of objects: a million items cost
        # a few MB here, beyond what the result itself holds (its values and keys).
        self.attempts = array("l", bytes(n * array("l").itemsize))
        self.shown = array("q", bytes(n * array("q").itemsize))
        self.failed: dict[str, ItemFailure] = {}
        self.counts = {
            "done": 0,
            "failed": 0,
            "skipped": 0,
            "retried": 0,
            "running": 0,
            "total": n,
            "tasks": 0,
        }
        self.queue: queue.Queue = queue.Queue()
        self.inflight: dict[int, _Batch] = {}
        self.batch_ids = itertools.count()
        self.token = uuid.uuid4().hex[:8]
        self.topic = f"pipestage-{self.token}"
        self.store: ContextStore | None = None
        self.run_id: int | None = None
        # Set by run() and the steps it calls:
        # item value -> its fingerprint (work and value), computed when needed, not kept
        self.fingerprint: Callable[[Any], str] = str
        self.work_blob: bytes = b""  # the pickled work
        # item index -> allowed workers, for items placed on a host (the others: anywhere)
        self.group_of: dict[int, tuple[str, ...]] = {}
        self._slots_at: float = 0.0  # time.monotonic() of the last slot count
        self.pending: dict[tuple[str, ...] | None, IndexQueue] = {}  # items waiting, per group
        self.order: deque[tuple[str, ...] | None] = deque()  # groups, served in turn
        self.work_arg: Any = None  # what each batch gets: PackedWork or work_future
        self.work_future: Any = None  # the shared task holding large work, if any

    # -- the run ---------------------------------------------------------------------------
    def run(self) -> StageResult:
        started = time.monotonic()
        self.fingerprint = item_fingerprinter(self.work.fingerprint())
        if self.persist:
            self.store = ContextStore(self.workdir)
        try:
            todo = self._skip_done()
            groups = self._prepare(todo)  # every check before anything is submitted
            has_todo = bool(todo)
            del todo  # the groups hold what runs: one list of it is enough
            if self.store is not None:
                self.run_id = self.store.begin_run(
                    self.name, self.work.describe(), self.keys, self._cluster_name()
                )
            self.reporter.start(
                self.name, len(self.items), self.counts["skipped"], str(self.planner.mode)
            )
            status = "failed"
            try:
                if has_todo:
                    self._loop(groups, started)
                status = "failed" if self.failed else "done"
            except BaseException:
                status = "interrupted"
                self._cancel()
                raise
            finally:
                if self.store is not None and self.run_id is not None:
                    self.store.finish_run(self.run_id, status, self.counts)
                self._cleanup()
        finally:
            if self.store is not None:
                self.store.close()
        result = StageResult(
            self.values,
            self.keys,
            stage=self.name,
            failed=self.failed,
            run_id=self.run_id,
            stats={
                **{k: v for k, v in self.counts.items() if k != "running"},
                "elapsed": time.monotonic() - started,
            },
        )
        self.reporter.finish(result)
        return result

    def _skip_done(self) -> Sequence[int]:
        """Take the stored result of every item whose fingerprint matches a stored success;
        the indices of the others (what runs). One pass over the stored rows as SQLite
        streams them: only items that have a stored success are fingerprinted, and nothing
        per row stays in memory but its result."""
        if self.store is not None and not self.rerun:
            with paused_gc():
                position: dict[str, int] | None = None  # key -> index, once a row is stored
                fingerprint, items, values, load = (
                    self.fingerprint,
                    self.items,
                    self.values,
                    self.store.load,
                )
                loads = pickle.loads
                skipped = 0
                for key, stored, blob, result_file in self.store.succeeded(self.name):
                    if position is None:
                        position = dict(zip(self.keys, range(len(self.keys)), strict=True))
                    i = position.get(key)
                    if i is None or stored != fingerprint(items[i].value):
                        continue
                    try:
                        values[i] = (
                            loads(blob)
                            if blob is not None and not result_file
                            else load(blob, result_file)
                        )
                    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
                        continue  # a lost result file: compute the item again
                    skipped += 1
                del position
                self.counts["skipped"] += skipped
        if not self.counts["skipped"]:
            return range(len(self.values))  # no int object per item: the first run of 10^6
        if self.counts["skipped"] == len(self.values):
            return []
        return [i for i, v in enumerate(self.values) if v is MISSING]

    def _prepare(self, todo: Sequence[int]) -> dict[tuple[str, ...] | None, IndexQueue]:
        import cloudpickle

        if not todo:
            return {}
        try:
            self.work_blob = cloudpickle.dumps(self.work)
        except Exception as exc:
            raise StageError(
                f"stage {self.name!r}: the work ({self.work.describe()}) "
                "cannot be sent to the workers: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        info = self.client.scheduler_info(n_workers=-1).get("workers", {})

        check_resources(self.resources, info)
        hosts = sorted({self.items[i].host for i in todo if self.items[i].host})
        restrictions = host_restrictions(hosts, info) if hosts else {}
        groups: dict[tuple[str, ...] | None, IndexQueue] = {}
        if not hosts:  # the usual case: one group, filled in one C loop
            groups[None] = IndexQueue(todo)
        for i in todo if hosts else ():
            host = self.items[i].host
            groups.setdefault(restrictions[host] if host else None, IndexQueue()).append(i)
        self.group_of = (
            {i: restrictions[self.items[i].host] for i in todo if self.items[i].host}
            if hosts
            else {}
        )
        self.resources = {**cpu_resources(self.client, self.work.cpus()), **self.resources}
        if self.per_worker is not None:
            resource = f"pipejupyter-per-worker-{self.per_worker}"
            self.client.register_plugin(SlotsPlugin(resource, self.per_worker), name=resource)
            self.resources[resource] = 1
        self._set_slots(info)
        return groups

    def _set_slots(self, info: dict[str, Any]) -> None:
        threads = [int(w.get("nthreads", 1) or 1) for w in info.values()]
        if self.per_worker is not None:
            threads = [min(t, self.per_worker) for t in threads]
        self.planner.set_slots(sum(threads) or 1)
        self._slots_at = time.monotonic()

    def _cluster_name(self) -> str | None:
        with contextlib.suppress(Exception):
            return self.client.scheduler.address
        return None

    # -- the loop --------------------------------------------------------------------------
    def _loop(self, groups: dict[tuple[str, ...] | None, IndexQueue], started: float) -> None:
        self.pending = groups
        self.order = deque(groups)
        self.client.subscribe_topic(self.topic, lambda event: self.queue.put(("event", event[1])))
        if len(self.work_blob) <= INLINE_WORK:
            self.work_arg = PackedWork(self.token, self.work_blob)
        else:
            self.work_arg = self.work_future = self.client.submit(
                _load_work,
                self.work_blob,
                key=f"pipestage-work-{self.name}-{self.token}",
                pure=False,
            )
        loop_start = time.monotonic()
        while self._remaining() or self.inflight:
            self._submit_more()
            try:
                messages = [self.queue.get(timeout=0.25)]
            except queue.Empty:
                messages = []
            with contextlib.suppress(queue.Empty):
                while len(messages) < 10_000:
                    messages.append(self.queue.get_nowait())
            done = []
            for kind, payload in messages:
                if kind == "done":
                    done.append(payload)
                else:
                    self._event(payload)
            if done:
                self._collect(done)
            self._progress(loop_start)
            if time.monotonic() - self._slots_at > SLOTS_REFRESH:
                with contextlib.suppress(Exception):
                    self._set_slots(self.client.scheduler_info(n_workers=-1).get("workers", {}))

    def _remaining(self) -> int:
        return sum(len(q) for q in self.pending.values())

    def _submit_more(self) -> None:
        while len(self.inflight) < self.planner.max_in_flight():
            remaining = self._remaining()
            if not remaining:
                return
            while not self.pending[self.order[0]]:
                self.order.rotate(-1)
            group = self.order[0]
            self.order.rotate(-1)
            waiting = self.pending[group]
            size = min(self.planner.next_size(remaining), len(waiting))
            entries = waiting.take(size)
            for i in entries:
                self.attempts[i] += 1
            batch_id = next(self.batch_ids)
            self.counts["tasks"] += 1
            payload = [(i, self.keys[i], self.items[i].value) for i in entries]
            kwargs: dict[str, Any] = {
                "key": f"pipestage-{self.name}-{self.token}-{batch_id}",
                "pure": False,
            }
            if group:
                kwargs.update(workers=list(group), allow_other_workers=False)
            if self.resources:
                kwargs["resources"] = self.resources
            future = self.client.submit(
                run_batch,
                self.work_arg,
                Entries(payload),
                BatchMeta(self.topic, batch_id, self.has_item),
                **kwargs,
            )
            self.inflight[batch_id] = _Batch(batch_id, entries, group, future)
            future.add_done_callback(lambda f, b=batch_id: self.queue.put(("done", b)))

    def _event(self, msg: Any) -> None:
        if not isinstance(msg, dict):
            return
        batch = self.inflight.get(msg.get("batch", -1))
        if batch is None:
            return  # late news of a batch already collected: its outcome said everything
        if msg.get("kind") == "start":
            now = time.time()
            if batch.starts:
                self._lost(batch, batch.starts[-1], msg.get("worker"), now)
            else:
                self.counts["running"] += len(batch.entries)
            batch.starts.append((msg.get("worker"), now))
        elif msg.get("kind") == "output":
            i = msg.get("index")
            if isinstance(i, int) and 0 <= i < len(self.keys):
                text = str(msg.get("text", ""))
                self.shown[i] += len(text)
                self.reporter.output(self.keys[i], text, str(msg.get("stream", "stdout")))

    def _lost(
        self, batch: _Batch, previous: tuple[str, float], worker: str | None, now: float
    ) -> None:
        """The batch started again: the worker running it died and Dask moved it."""
        lost_worker, since = previous
        for i in batch.entries:
            if self.store is not None:
                self.store.record_attempt(
                    self.run_id,
                    self.name,
                    self.keys[i],
                    self.attempts[i],
                    lost_worker,
                    since,
                    now,
                    "lost",
                    f"worker {lost_worker} was lost while running this item",
                )
            self.attempts[i] += 1
            self.shown[i] = 0
        self.counts["retried"] += len(batch.entries)
        keys = ", ".join(self.keys[i] for i in batch.entries[:3]) + (
            " ..." if len(batch.entries) > 3 else ""
        )
        self.reporter.note(
            f"worker {lost_worker} was lost; "
            f"{len(batch.entries)} item(s) restarted on {worker}: {keys}"
        )

    def _collect(self, batch_ids: list[int]) -> None:
        batches = [self.inflight.pop(b) for b in batch_ids if b in self.inflight]
        finished = [b for b in batches if b.future.status == "finished"]
        outcomes: dict[int, Any] = {}
        if finished:
            try:
                gathered = self.client.gather([b.future for b in finished])
                outcomes = {b.id: g for b, g in zip(finished, gathered, strict=True)}
            except Exception:
                for b in finished:  # find the one(s) that cannot be fetched
                    with contextlib.suppress(Exception):
                        outcomes[b.id] = b.future.result()
        for b in batches:
            if b.starts:
                self.counts["running"] -= len(b.entries)
            got = outcomes.get(b.id)
            if got is None:
                self._batch_failed(b)
                continue
            worker, _pid, results = got
            self.planner.observe(len(results), sum(o.finished - o.started for o in results))
            for o in results:
                self._outcome(o, worker)
            b.future.release()

    def _batch_failed(self, batch: _Batch) -> None:
        try:
            exc = batch.future.exception(timeout=5)
            text = f"{type(exc).__name__}: {exc}"
        except Exception as err:  # cancelled, or the result could not be fetched
            exc, text = None, f"{type(err).__name__}: {err}"
        worker = batch.starts[-1][0] if batch.starts else None
        since = batch.starts[-1][1] if batch.starts else None
        for i in batch.entries:
            self._item_failed(
                i,
                f"the task running this item failed: {text}\n",
                exc,
                worker,
                since,
                time.time(),
                "",
            )
        batch.future.release()

    def _outcome(self, o: Any, worker: str) -> None:
        i = o.index
        key = self.keys[i]
        if len(o.log) > self.shown[i]:
            self.reporter.output(key, o.log[self.shown[i] :], "stdout")
        self.shown[i] = 0
        if o.commands:
            log_commands(self.workdir, self.name, key, worker, o.commands, ok=o.ok)
        if o.ok:
            try:
                value = pickle.loads(o.payload)
            except Exception as exc:
                self._item_failed(
                    i,
                    "the result cannot be unpickled in the notebook: "
                    f"{type(exc).__name__}: {exc}\n",
                    None,
                    worker,
                    o.started,
                    o.finished,
                    o.log,
                )
                return
            self.values[i] = value
            self.counts["done"] += 1
            if self.store is not None:
                if self.attempts[i] > 1:  # attempts are recorded when there is a history to tell
                    self.store.record_attempt(
                        self.run_id,
                        self.name,
                        key,
                        self.attempts[i],
                        worker,
                        o.started,
                        o.finished,
                        "done",
                    )
                self.store.record_item(
                    self.run_id,
                    self.name,
                    key,
                    self.fingerprint(self.items[i].value),
                    "done",
                    self.attempts[i],
                    worker,
                    o.started,
                    o.finished,
                    o.payload,
                    None,
                    o.log,
                )
            return
        exc = None
        if o.payload is not None:
            with contextlib.suppress(Exception):
                exc = pickle.loads(o.payload)
        self._item_failed(i, o.error or "failed", exc, worker, o.started, o.finished, o.log)

    def _item_failed(
        self,
        i: int,
        error: str,
        exc: Any,
        worker: str | None,
        started: float | None,
        finished: float | None,
        log: str,
    ) -> None:
        key = self.keys[i]
        final = self.attempts[i] > self.retries
        if self.store is not None:
            self.store.record_attempt(
                self.run_id,
                self.name,
                key,
                self.attempts[i],
                worker,
                started,
                finished,
                "failed",
                error,
            )
        self.reporter.failure(key, error, self.attempts[i], final)
        if not final:
            self.counts["retried"] += 1
            self.pending[self.group_of.get(i)].append(i)
            return
        failure = ItemFailure(key, error, exc, self.attempts[i])
        self.values[i] = failure
        self.failed[key] = failure
        self.counts["failed"] += 1
        if self.store is not None:
            self.store.record_item(
                self.run_id,
                self.name,
                key,
                self.fingerprint(self.items[i].value),
                "failed",
                self.attempts[i],
                worker,
                started,
                finished,
                None,
                error,
                log,
            )

    def _progress(self, loop_start: float) -> None:
        elapsed = time.monotonic() - loop_start
        c = self.counts
        processed = c["done"] + c["failed"]
        left = c["total"] - c["skipped"] - processed
        eta = elapsed / processed * left if processed else None
        self.reporter.update({**c, "elapsed": elapsed, "eta": eta})
        if self.store is not None:
            self.store.set_progress(self.run_id, c)
            self.store.maybe_flush()

    # -- ending --------------------------------------------------------------------------
    def _cancel(self) -> None:
        futures = [b.future for b in self.inflight.values()]
        if futures:
            with contextlib.suppress(Exception):
                self.client.cancel(futures)

    def _cleanup(self) -> None:
        with contextlib.suppress(Exception):
            self.client.unsubscribe_topic(self.topic)
        if self.work_future is not None:
            with contextlib.suppress(Exception):
                self.work_future.release()
