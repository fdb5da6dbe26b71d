"""What a cluster view needs from the scheduler, computed on the scheduler: totals over every
worker and the records of the first ``rows`` workers only.

``Client.scheduler_info()`` sends every worker's full record (metrics, resources, services,
directories...): ~2 KiB and a few hundred microseconds of scheduler CPU per worker, 9 ms per
refresh of a 1,000-worker cluster before the notebook has decoded a byte. A view shows a
screenful of rows and the totals, so :func:`summarize` runs on the scheduler
(``Client.run_on_scheduler``) and sends back only those: a few bytes per worker (its name,
so backends can tell queued jobs from connected workers) plus ``rows`` short records.

The function travels by value (``cloudpickle.register_pickle_by_value``): a scheduler on
another host (a gateway's) need not have pipejupyter installed. So it imports nothing from
pipejupyter and uses only what this module defines.

Shipping a function with every refresh costs the scheduler unpickling it and the notebook
~15 ms at 1,000 workers; so :func:`install` is shipped once and makes :func:`summarize` a
handler of the scheduler (``HANDLER``), which every later refresh calls like any other
scheduler RPC (``client.scheduler.pipejupyter_worker_summary(rows=100)``).

Dask's own lighter call, ``Scheduler.identity(n_workers=N)`` (``Client.scheduler_info``'s
``n_workers``), gives the worker count, threads and memory limits in total and the first N
records in the scheduler's insertion order: not the memory in use or the tasks in total, not
the natural name order a view lists, not the names. So the summary stays ours, and takes
the totals the scheduler keeps (``total_nthreads``, ``total_memory``) as identity does. At
1,000 workers one summary costs the scheduler ~1.5 ms of CPU (docs/benchmarks.md).
"""

from __future__ import annotations

from typing import Any

#: the scheduler RPC :func:`install` adds
HANDLER = "pipejupyter_worker_summary"


def install(dask_scheduler: Any = None) -> str:
    """Add the ``HANDLER`` RPC to the scheduler (run there by ``run_on_scheduler``)."""
    order: dict[str, Any] = {}  # this scheduler's workers in natural name order (see summarize)

    def handler(rows: int = 100, names: bool = True) -> dict[str, Any]:
        return summarize(dask_scheduler, rows, names=names, order=order)

    dask_scheduler.handlers[HANDLER] = handler
    return HANDLER


def summarize(
    dask_scheduler: Any = None,
    rows: int = 100,
    *,
    names: bool = True,
    order: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Totals over all workers and the first ``rows`` of them (all when < 0) in natural name
    order; every worker's name when ``names`` (only an owner's backend needs them).

    Returns ``{"workers", "threads", "memory", "memory_used", "tasks", "names",
    "rows": [(address, name, host, nthreads, memory_used, memory_limit, processing,
    status)], "services", "address"}``.

    ``order`` keeps the natural order between calls: workers join and leave far less often
    than a view refreshes, and sorting 1,000 names was most of a refresh's scheduler CPU.
    It is keyed by the scheduler's worker addresses in their order (a worker that leaves
    and one that joins change it), so a cached order is always the current one.
    """
    workers = dask_scheduler.workers
    addresses = tuple(workers)
    if order is None or order.get("key") != addresses:
        import re

        digits = re.compile(r"^\d+$")

        def natural(address: str) -> tuple:
            name = _name(workers[address])
            return (0, int(name), "") if digits.match(name) else (1, 0, name)

        ordered = sorted(addresses, key=natural)
        if order is not None:
            order.update(key=addresses, addresses=ordered)
    else:
        ordered = order["addresses"]

    used = tasks = 0
    for ws in workers.values():  # what the scheduler does not total itself
        metrics = ws.metrics
        if metrics:
            used += metrics.get("memory", 0) or 0
            tasks += _busy(metrics)
    shown = ordered if rows < 0 else ordered[:rows]
    listed = []
    for address in shown:
        ws = workers[address]
        metrics = ws.metrics or {}
        listed.append(
            (
                address,
                _name(ws),
                ws.host,
                ws.nthreads,
                metrics.get("memory", 0),
                ws.memory_limit,
                _busy(metrics),
                getattr(ws.status, "name", str(ws.status)),
            )
        )
    threads = getattr(dask_scheduler, "total_nthreads", None)
    memory = getattr(dask_scheduler, "total_memory", None)
    if threads is None or memory is None:  # a scheduler that does not keep the totals
        threads = sum(ws.nthreads or 0 for ws in workers.values())
        memory = sum(ws.memory_limit or 0 for ws in workers.values())
    return {
        "workers": len(addresses),
        "threads": threads,
        "memory": memory,
        "memory_used": used,
        "tasks": tasks,
        "names": [_name(ws) for ws in workers.values()] if names else None,
        "rows": listed,
        "services": {key: s.port for key, s in dask_scheduler.services.items()},
        "address": dask_scheduler.address,
    }


def _name(ws: Any) -> str:
    return str(ws.name if ws.name is not None else ws.address)


def _busy(metrics: dict[str, Any]) -> int:
    """Tasks a worker is working on or about to: executing, ready, waiting for resources."""
    counts = metrics.get("task_counts") or {}
    return counts.get("executing", 0) + counts.get("ready", 0) + counts.get("constrained", 0)
