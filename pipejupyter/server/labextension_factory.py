"""A cluster factory for dask-labextension's **NEW** button.

dask-labextension builds a cluster from its documented ``labextension.factory`` setting
(a Dask config file such as ``~/.config/dask/labextension.yaml``)::

    labextension:
      factory:
        module: pipejupyter.server.labextension_factory
        class: PipejupyterCluster
        kwargs:
          profile: slurm

It calls ``await PipejupyterCluster(**kwargs, asynchronous=True)``, then ``scale``,
``adapt`` and ``close``, and reads ``scheduler_address``, ``dashboard_link`` and
``scheduler_info``. Here every one of those goes through the Jupyter server's own
ClusterManager (the one behind the pipejupyter sidebar, when its server extension is
loaded): the profile's backend, environment passthrough, MPI and SLURM sanitization,
discovery records and cleanup at server shutdown are pipejupyter's, and the cluster is
listed in the sidebar too. Only public hooks of dask-labextension are used.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from dataclasses import dataclass
from typing import Any

from pipejupyter.environment.dashboard_links import browser_link, proxy_from_environ
from pipejupyter.lifecycle.handle import ClusterHandle
from pipejupyter.lifecycle.manager import ClusterManager

#: seconds a scheduler_info answer is reused (dask-labextension reads it on every poll)
INFO_MAX_AGE = 1.0
#: seconds one background question to the scheduler may take
INFO_TIMEOUT = 2.0

_fallback_lock = threading.Lock()
_fallback_manager: ClusterManager | None = None


def server_manager() -> ClusterManager:
    """The ClusterManager of this Jupyter server's pipejupyter extension, or (extension not
    loaded) one manager of this process that owns the clusters as the server would."""
    global _fallback_manager
    try:
        from jupyter_server.serverapp import ServerApp

        if ServerApp.initialized():
            service = ServerApp.instance().web_app.settings.get("pipejupyter_service")
            if service is not None:
                return service.manager
    except (ImportError, AttributeError):
        pass
    with _fallback_lock:
        if _fallback_manager is None:
            _fallback_manager = ClusterManager("server")
        return _fallback_manager


@dataclass
class Adaptive:
    """What dask-labextension reads of an adaptive range."""

    minimum: int
    maximum: int


class PipejupyterCluster:
    """A pipejupyter cluster in the shape dask-labextension's cluster manager expects.

    ``profile``: the pipejupyter profile to start (default: the configured default);
    ``overrides``: dotted configuration keys, as ``%pipecluster start --set``.
    """

    def __init__(
        self,
        profile: str | None = None,
        *,
        overrides: dict[str, Any] | None = None,
        asynchronous: bool = True,
        manager: ClusterManager | None = None,
    ) -> None:
        self.profile = profile
        self.overrides = dict(overrides or {})
        self.asynchronous = asynchronous
        self._manager = manager
        self.handle: ClusterHandle | None = None
        self._info: dict[str, Any] = {"workers": {}}
        self._info_time = 0.0
        self._refreshing = threading.Lock()

    # -- dask-labextension's calls ------------------------------------------------------
    def __await__(self):
        return self._start().__await__()

    async def _start(self) -> PipejupyterCluster:
        manager = self._manager or server_manager()
        self.handle = await _in_thread(
            functools.partial(
                manager.start,
                self.profile,
                overrides=self.overrides or None,
                set_default=False,
            )
        )
        self._refresh()
        return self

    def scale(self, n: int) -> Any:
        return _in_thread(self._live().scale, int(n))

    def adapt(self, minimum: int = 0, maximum: int = 1, **_: Any) -> Adaptive:
        # dask-labextension calls adapt() without awaiting: run it in the background.
        asyncio.ensure_future(_in_thread(self._live().adapt, int(minimum), int(maximum)))
        return Adaptive(int(minimum), int(maximum))

    async def close(self) -> None:
        if self.handle is not None:
            await _in_thread(self.handle.stop)

    @property
    def scheduler_address(self) -> str | None:
        return self.handle.scheduler_address if self.handle else None

    @property
    def dashboard_link(self) -> str | None:
        """The link a browser of this server opens (through jupyter-server-proxy)."""
        if self.handle is None:
            return None
        backend = self.handle.spec.backend
        shown = browser_link(
            self.handle.dashboard_link,
            proxy_from_environ(),
            backend=backend,
            scheduler_address=self.handle.scheduler_address,
        )
        return shown.url

    @property
    def scheduler_info(self) -> dict[str, Any]:
        """``{"workers": {address: {"nthreads", "memory_limit"}}}``, at most
        INFO_MAX_AGE old: dask-labextension reads it on the server's event loop, so the
        scheduler is asked in a thread and this never waits for it."""
        if time.monotonic() - self._info_time > INFO_MAX_AGE:
            threading.Thread(target=self._refresh, daemon=True).start()
        return self._info

    def __repr__(self) -> str:
        return f"<PipejupyterCluster profile={self.profile!r} handle={self.handle!r}>"

    # -- internals -----------------------------------------------------------------------
    def _live(self) -> ClusterHandle:
        if self.handle is None:
            raise RuntimeError("the cluster has not been started (await it first)")
        return self.handle

    def _refresh(self) -> None:
        if self.handle is None or not self._refreshing.acquire(blocking=False):
            return
        try:
            model = self.handle.model(timeout=INFO_TIMEOUT)
            self._info = {
                "workers": {
                    w["address"]: {"nthreads": w["threads"], "memory_limit": w["memory_limit"]}
                    for w in model.get("worker_info") or []
                    if w.get("address") and w.get("status") not in ("pending", "starting")
                }
            }
            self._info_time = time.monotonic()
        finally:
            self._refreshing.release()


async def _in_thread(fn: Any, *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)
