"""What runs inside a Dask task: a batch of stage items, one after another.

Each item is timed, its output captured (and streamed), its result pickled here - so the
notebook stores the bytes as they are and an unpicklable result fails only its own item -
and its exception turned into text (the remote traceback) plus, when picklable, the
exception itself. One failing item never stops the others in the batch.
"""

from __future__ import annotations

import os
import pickle
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, NamedTuple

from pipejupyter.work import capture
from pipejupyter.work.kinds import Request, Work, resolve


class Outcome(NamedTuple):
    index: int
    ok: bool
    payload: bytes | None  # pickled result (ok) or pickled exception (failed, when picklable)
    error: str | None  # remote traceback text
    started: float
    finished: float
    log: str
    commands: tuple[str, ...]


class Entries:
    """A batch's (index, key, value) triples, travelling as one pickled blob.

    Dask walks lists and tuples in task arguments looking for futures (~40 us per item), and
    a scheduler unpickles every task it receives and keeps the last messages it sent each
    worker (``distributed.admin.low-level-log-length``): as Python objects, a LocalCluster's
    scheduler in the notebook process would hold ~200 bytes per item of every recent batch.
    As one bytes object it holds the ~20 bytes per item the blob takes; only the worker
    running the batch unpickles it (on first use of ``items``)."""

    __slots__ = ("_items", "_blob")

    def __init__(self, items: list[tuple[int, str, Any]]) -> None:
        self._items: list[tuple[int, str, Any]] | None = items
        self._blob: bytes | None = None

    @property
    def items(self) -> list[tuple[int, str, Any]]:
        if self._items is None:
            self._items = pickle.loads(self._blob)
            self._blob = None
        return self._items

    def __reduce__(self) -> tuple:
        if self._blob is None:
            self._blob = _dumps_entries(self._items)
        return (_entries_from_blob, (self._blob,))


def _dumps_entries(items: list[tuple[int, str, Any]] | None) -> bytes:
    try:
        return pickle.dumps(items, protocol=5)
    except Exception:  # values only cloudpickle can carry (lambdas, notebook classes)
        import cloudpickle

        return cloudpickle.dumps(items, protocol=5)


def _entries_from_blob(blob: bytes) -> Entries:
    entries = Entries.__new__(Entries)
    entries._items, entries._blob = None, blob
    return entries


class BatchMeta(NamedTuple):
    topic: str | None  # event topic for start/output events (None: no events)
    batch: int
    has_item: bool


class PackedWork(NamedTuple):
    """Pickled work sent along with every batch: tasks with no dependency spread over all
    workers, where a shared dependency would pull them to the worker holding it."""

    token: str
    blob: bytes


_unpacked: OrderedDict[str, Work] = OrderedDict()
_unpack_lock = threading.Lock()
UNPACKED_KEPT = 16


def unpack(work: Work | PackedWork) -> Work:
    """The work object, unpickled once per worker process and kept for later batches."""
    if not isinstance(work, PackedWork):
        return work
    with _unpack_lock:
        if work.token in _unpacked:
            _unpacked.move_to_end(work.token)
            return _unpacked[work.token]
    import cloudpickle

    obj = cloudpickle.loads(work.blob)
    with _unpack_lock:
        _unpacked[work.token] = obj
        while len(_unpacked) > UNPACKED_KEPT:
            _unpacked.popitem(last=False)
    return obj


def _worker() -> Any:
    try:
        from distributed import get_worker

        return get_worker()
    except (ImportError, ValueError):
        return None


def run_batch(
    work: Work | PackedWork, entries: Entries | Sequence[tuple[int, str, Any]], meta: BatchMeta
) -> tuple[str, int, list[Outcome]]:
    """Run ``entries`` (index, key, value) with ``work``; returns (worker, pid, outcomes)."""
    work = unpack(work)
    if isinstance(entries, Entries):
        entries = entries.items
    worker = _worker()
    address = worker.address if worker is not None else f"local-{os.getpid()}"
    send = None
    if meta.topic and worker is not None:
        topic = meta.topic

        def send(msg: dict) -> None:
            worker.log_event(topic, msg)

        send({"kind": "start", "batch": meta.batch, "worker": address, "pid": os.getpid()})
    capture.install()
    # Run every item first and pickle afterwards: right after an item wakes up (from I/O or a
    # sleep) caches are cold and every extra step costs several times more, so the loop
    # around the items does as little as it can.
    ran = [
        _run_one(work, index, key, value, meta.has_item, send, meta.batch)
        for index, key, value in entries
    ]
    return address, os.getpid(), [_outcome(*r) for r in ran]


def _run_one(
    work: Work, index: int, key: str, value: Any, has_item: bool, send: Any, batch: int = 0
) -> tuple:
    emit = None
    if send is not None:

        def emit(text: str, stream: str) -> None:
            send({"kind": "output", "batch": batch, "index": index, "text": text, "stream": stream})

    item = capture.ItemCapture(emit)
    started = time.time()
    previous = capture.enter(item)
    try:
        result = work.run_item(value, key, has_item)
        if isinstance(result, Request):
            result = resolve(result)
        ok = True
    except BaseException as exc:  # an item's failure is data, reported to the notebook
        if isinstance(exc, (KeyboardInterrupt, SystemExit)) and send is None:
            raise
        result, ok = exc, False
    finally:
        capture.leave(previous, item)
    return index, ok, result, started, time.time(), item


def _outcome(
    index: int, ok: bool, result: Any, started: float, finished: float, item: capture.ItemCapture
) -> Outcome:
    commands = tuple(item.commands)
    if ok:
        try:
            return Outcome(
                index, True, _dumps(result), None, started, finished, item.text(), commands
            )
        except ResultNotPicklable as exc:
            result = exc
    return Outcome(
        index,
        False,
        _exception_payload(result),
        _format(result),
        started,
        finished,
        item.text(),
        commands,
    )


def _dumps(value: Any) -> bytes:
    try:
        return pickle.dumps(value, protocol=5)
    except Exception:
        import cloudpickle

        try:
            return cloudpickle.dumps(value, protocol=5)
        except Exception as exc:
            raise ResultNotPicklable(
                f"the item's result ({type(value).__name__}) cannot be pickled: "
                f"{type(exc).__name__}: {exc}"
            ) from None


class ResultNotPicklable(TypeError):
    pass


def _exception_payload(exc: BaseException) -> bytes | None:
    try:
        data = pickle.dumps(exc, protocol=5)
        pickle.loads(data)  # some exceptions pickle but cannot be rebuilt
        return data
    except Exception:
        return None


_OWN_FILES = {
    __file__,
    *(os.path.join(os.path.dirname(__file__), f) for f in ("kinds.py", "cell.py")),
}


def _format(exc: BaseException) -> str:
    # Start at the user's first frame: this module's frames mean nothing to them.
    tb = exc.__traceback__
    while (
        tb is not None and tb.tb_next is not None and tb.tb_frame.f_code.co_filename in _OWN_FILES
    ):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))
