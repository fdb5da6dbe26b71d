"""Timing a raw Dask cluster from construction until N workers are connected."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def time_to_workers(make_cluster: Callable[[], Any], n: int, *, scale: bool = False) -> float:
    """Seconds from ``make_cluster()`` until ``n`` workers are connected (then closed, untimed)."""
    from distributed import Client

    t = time.perf_counter()
    cluster = make_cluster()
    client = Client(cluster, set_as_default=False)
    if scale:
        cluster.scale(n)
    client.wait_for_workers(n)
    elapsed = time.perf_counter() - t
    client.close()
    cluster.close()
    return elapsed
