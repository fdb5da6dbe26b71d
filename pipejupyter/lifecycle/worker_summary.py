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
"""

from __future__ import annotations

from typing import Any

#: the scheduler RPC :func:`install` adds
HANDLER = "pipejupyter_worker_summary"


def install(dask_scheduler: Any = None) -> str:
    """Add the ``HANDLER`` RPC to the scheduler (run there by ``run_on_scheduler``)."""

    def handler(rows: int = 100) -> dict[str, Any]:
        return summarize(dask_scheduler, rows)

    dask_scheduler.handlers[HANDLER] = handler
    return HANDLER


def summarize(dask_scheduler: Any = None, rows: int = 100) -> dict[str, Any]:
    """Totals over all workers and the first ``rows`` of them in natural name order.

    Returns ``{"workers", "threads", "memory", "memory_used", "tasks", "names",
    "rows": [(address, name, host, nthreads, memory_used, memory_limit, processing,
    status)], "services", "address"}``.
    """
    import re

    digits = re.compile(r"^\d+$")

    def natural(name: str) -> tuple:
        return (0, int(name), "") if digits.match(name) else (1, 0, name)

    threads = memory = used = tasks = 0
    names = []
    records = []
    for address, ws in dask_scheduler.workers.items():
        metrics = ws.metrics or {}
        counts = metrics.get("task_counts") or {}
        busy = sum(counts.get(k, 0) for k in ("executing", "ready", "constrained"))
        name = str(ws.name if ws.name is not None else address)
        threads += ws.nthreads or 0
        memory += ws.memory_limit or 0
        used += metrics.get("memory", 0) or 0
        tasks += busy
        names.append(name)
        records.append(
            (
                natural(name),
                (
                    address,
                    name,
                    ws.host,
                    ws.nthreads,
                    metrics.get("memory", 0),
                    ws.memory_limit,
                    busy,
                    getattr(ws.status, "name", str(ws.status)),
                ),
            )
        )
    if rows >= 0 and len(records) > rows:
        import heapq

        shown = heapq.nsmallest(rows, records, key=lambda r: r[0])
    else:
        shown = sorted(records, key=lambda r: r[0])
    return {
        "workers": len(records),
        "threads": threads,
        "memory": memory,
        "memory_used": used,
        "tasks": tasks,
        "names": names,
        "rows": [r[1] for r in shown],
        "services": {key: s.port for key, s in dask_scheduler.services.items()},
        "address": dask_scheduler.address,
    }
