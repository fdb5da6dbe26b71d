"""The distributed Clients of our clusters: making one Dask's default, closing a half-made one."""

from __future__ import annotations

import contextlib
from typing import Any


def release_failed_client(exc: BaseException) -> None:
    """Close a Client that failed in its __init__, here and now.

    distributed leaves such a Client with its loop thread running; a later garbage
    collection then runs its close() inside the next Client's start, while distributed's
    LoopRunner lock is held, and stalls that start for 10 s into a bare AssertionError
    (seen after a refused TLS connection). The half-made Client is the ``self`` of frames
    in the exception's traceback (or of an exception chained to it).
    """
    import gc
    import traceback

    from distributed import Client

    seen: set[int] = set()
    found = False
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        tb = current.__traceback__
        while tb is not None:
            candidate = tb.tb_frame.f_locals.get("self")
            if isinstance(candidate, Client) and id(candidate) not in seen:
                seen.add(id(candidate))
                found = True
                with contextlib.suppress(Exception):
                    candidate.close(timeout=2)
                with contextlib.suppress(
                    Exception
                ):  # close() gives up before this when it times out
                    candidate._loop_runner.stop()
            tb = tb.tb_next
        traceback.clear_frames(current.__traceback__)
        pending += [current.__cause__, current.__context__]
    # Only when a half-made Client was found: a full collection costs 50-100 ms in a
    # kernel with Dask loaded, which every other failed start (a gateway's 401) would pay.
    if found:
        gc.collect()


def make_default_client(client: Any) -> None:
    """Make ``client`` the one plain Dask code uses (``dask.compute``, ``Client.current()``)."""
    with contextlib.suppress(Exception):
        from distributed.client import _set_global_client

        _set_global_client(client)
