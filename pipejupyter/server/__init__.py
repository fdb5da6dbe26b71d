"""The jupyter_server extension: REST routes under /pipejupyter/ over the core's manager.

Enabled on install by jupyter-config/server-config/pipejupyter.json. Clusters started
through these routes belong to the server ("server" owner) and stop when it stops.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.machinery
import importlib.util
import logging
import os
import sys
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pipejupyter.environment.dashboard_links import ServerProxy, export, proxy_for_server
from pipejupyter.lifecycle.manager import ClusterManager
from pipejupyter.server.handlers import setup_handlers
from pipejupyter.server.service import ClusterService

logger = logging.getLogger(__name__)

#: threads for starts, scaling and stops (blocking manager calls of up to minutes)
THREADS = 8
#: threads for reads (GET routes): separate, so that starts filling THREADS never hold up
#: the sidebar's polls; a read waits on schedulers at most watcher.PROBE_DEADLINE seconds
READ_THREADS = 4


def _load_jupyter_server_extension(serverapp: Any) -> None:
    _skip_main_reimport()
    executor = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="pipejupyter")
    reads = ThreadPoolExecutor(max_workers=READ_THREADS, thread_name_prefix="pipejupyter-read")
    proxy = _server_proxy(serverapp)
    # Kernels this server starts inherit its environment: they learn the proxy from it,
    # and Dask's own reprs there link through it (distributed.dashboard.link).
    export(proxy, os.environ)
    service = ClusterService(
        ClusterManager("server"),
        owner_label=functools.partial(_kernel_label, serverapp),
        proxy=proxy,
    )
    serverapp.web_app.settings["pipejupyter_service"] = service
    setup_handlers(serverapp.web_app, service, executor, reads)
    _on_shutdown(serverapp, functools.partial(_shutdown, serverapp, service, executor, reads))
    serverapp.log.info("pipejupyter: REST API at %spipejupyter/", serverapp.base_url)


def _server_proxy(serverapp: Any) -> ServerProxy | None:
    """This server's jupyter-server-proxy (base_url and host allow-list), or None when it
    is not installed and enabled: dashboard links then stay direct."""
    enabled = getattr(serverapp, "jpserver_extensions", None) or {}
    if not enabled.get("jupyter_server_proxy"):
        return None
    if importlib.util.find_spec("jupyter_server_proxy") is None:
        return None
    settings = serverapp.config.get("ServerProxy", {})
    allowlist = settings.get("host_allowlist", settings.get("host_whitelist"))
    return proxy_for_server(serverapp.base_url, allowlist)


def _skip_main_reimport() -> None:
    """Keep local worker processes from re-running the server's console script.

    Dask starts local workers with multiprocessing's "spawn", and a spawned child first
    re-imports the parent's ``__main__`` by path. Here that is the ``jupyter-server`` /
    ``jupyter-lab`` script, which imports all of jupyter_server (about 4 s per worker on
    a 2-core machine: a 2-worker start took 10 s instead of 3.5 s). Naming the main
    module "__main__" makes multiprocessing skip that step; the script defines nothing
    a worker could need.
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None) or ""
    if (
        main is not None
        and getattr(main, "__spec__", None) is None
        and os.path.basename(path).startswith("jupyter")
    ):
        main.__spec__ = importlib.machinery.ModuleSpec("__main__", None)


async def _shutdown(
    serverapp: Any,
    service: ClusterService,
    executor: ThreadPoolExecutor,
    reads: ThreadPoolExecutor,
) -> None:
    names = await asyncio.get_running_loop().run_in_executor(executor, service.shutdown)
    if names:
        serverapp.log.info("pipejupyter: stopped %s", ", ".join(names))
    executor.shutdown(wait=False)
    reads.shutdown(wait=False)


def _on_shutdown(serverapp: Any, hook: Any) -> None:
    """Run ``hook`` when the server cleans up its extensions.

    jupyter_server calls shutdown hooks only of ExtensionApp extensions, not of
    module-style ones like this, so chain onto this server's cleanup_extensions.
    (The manager's atexit handler is the backstop for a server that dies otherwise.)
    """
    original = serverapp.cleanup_extensions

    async def cleanup_extensions() -> None:
        try:
            await hook()
        except Exception:  # never keep the server from shutting down
            logger.exception("pipejupyter: stopping clusters at shutdown failed")
        await original()

    serverapp.cleanup_extensions = cleanup_extensions


def _kernel_label(serverapp: Any, owner: Mapping[str, Any]) -> str | None:
    """Name the kernel of this server whose process is ``owner``, if there is one."""
    kernels = getattr(serverapp, "kernel_manager", None)
    pid = owner.get("pid")
    if kernels is None or not pid:
        return None
    for kernel_id in list(kernels.list_kernel_ids()):
        try:
            provisioner = kernels.get_kernel(kernel_id).provisioner
        except (KeyError, AttributeError):
            continue
        if (
            getattr(provisioner, "pid", None) == pid
            or getattr(getattr(provisioner, "process", None), "pid", None) == pid
        ):
            return f"kernel {kernel_id} of this server"
    return None
