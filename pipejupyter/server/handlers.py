"""REST handlers under /pipejupyter/: decode the request, call the service off the event
loop, write JSON. Every route is authenticated; the server's XSRF rules apply to writes."""

from __future__ import annotations

import asyncio
import functools
import importlib
import importlib.util
import json
import logging
import signal
import sys
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import tornado.web
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join

from pipejupyter.server.service import (
    MAX_BODY_BYTES,
    ClusterService,
    ServiceError,
    body_too_large,
    profile_list,
    profile_options,
)

SERVICE = "pipejupyter_service"
#: threads for starts, scaling and stops (minutes each, at worst)
EXECUTOR = "pipejupyter_executor"
#: threads for GET routes: a list must never wait behind starts
READ_EXECUTOR = "pipejupyter_read_executor"
#: optional libraries that must first be imported on the main thread (see below)
MAIN_THREAD_MODULES = ("dask_jobqueue",)
#: modules a start would import on its worker thread: imported once, before any start runs
START_MODULES = ("distributed.dashboard.scheduler",)
#: the settings key of that one-time import (see import_before_starts)
START_IMPORTS = "pipejupyter_start_imports"
_imported_on_main_thread = False


def import_on_main_thread() -> None:
    """Import MAIN_THREAD_MODULES once, here on the event loop's (main) thread.

    dask-jobqueue 0.9 installs a SIGINT handler when imported (dask_jobqueue/runner.py);
    Python allows that only on the main thread, and our service calls run in worker
    threads, where the import fails with ValueError. Importing it here costs one short
    pause of the loop, once; the server's own Ctrl-C handler is put back afterwards.
    """
    global _imported_on_main_thread
    if _imported_on_main_thread:
        return
    _imported_on_main_thread = True
    for name in MAIN_THREAD_MODULES:
        if name in sys.modules or importlib.util.find_spec(name) is None:
            continue
        handler = signal.getsignal(signal.SIGINT)
        try:
            importlib.import_module(name)
        except Exception as exc:  # a broken optional install is reported when a profile needs it
            logging.getLogger(__name__).warning("pipejupyter: importing %s failed: %s", name, exc)
        finally:
            signal.signal(signal.SIGINT, handler)


def import_before_starts(
    names: tuple[str, ...] = START_MODULES, log: logging.Logger | None = None
) -> None:
    """Import ``names`` once, before any start, and make a failed import fail alike later.

    Every distributed Scheduler runs ``import distributed.dashboard.scheduler`` in its
    __init__ and takes an ImportError for "bokeh is not installed: no dashboard". Python
    forgets a failed import, so each start tried again, and a start that met another
    thread's import half-way took the half-run module for a success and failed with
    "module 'distributed.dashboard' has no attribute 'scheduler'" (8 to 20 of 50
    concurrent starts on a fresh server). Here the import runs once; a failure leaves
    None in sys.modules, the import system's own mark for "cannot be imported", so every
    later import raises ImportError at once, in any thread, with nothing to share. (A
    bokeh installed while the server runs is used after a restart.)
    """
    log = log or logging.getLogger(__name__)
    for name in names:
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)
        except ImportError as exc:
            sys.modules[name] = None  # type: ignore[assignment]
            log.info("pipejupyter: no %s (%s): clusters have no dashboard", name, exc)
        except Exception as exc:  # a broken install: the same for every start, not a race
            sys.modules[name] = None  # type: ignore[assignment]
            log.warning("pipejupyter: importing %s failed: %s: %s", name, type(exc).__name__, exc)


@tornado.web.stream_request_body
class _Handler(APIHandler):
    """Reads at most MAX_BODY_BYTES of a request body, on every route and method.

    The body is streamed (tornado would otherwise buffer up to the server's 512 MB
    max_body_size before any handler code runs): a Content-Length over the limit is
    answered 413 right after authentication, before a byte of the body is read; a body
    without one (chunked) is counted as it arrives and answered 413 at the limit. Either
    way tornado then closes the connection instead of reading the rest.
    """

    def initialize(self) -> None:
        self._body = bytearray()

    @property
    def service(self) -> ClusterService:
        return self.settings[SERVICE]

    async def prepare(self) -> None:
        await super().prepare()  # authentication, XSRF and origin checks come first
        length = self.request.headers.get("Content-Length", "")
        if length.strip().isdigit() and int(length) > MAX_BODY_BYTES:
            self._refuse(body_too_large(int(length)))

    def data_received(self, chunk: bytes) -> None:
        if self._finished:
            return
        if len(self._body) + len(chunk) > MAX_BODY_BYTES:
            self._body = bytearray()
            self._refuse(body_too_large())
            return
        self._body += chunk

    @property
    def body(self) -> bytes:
        return bytes(self._body)

    def _refuse(self, error: ServiceError) -> None:
        self.set_status(error.status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(error.to_json()))

    async def respond(self, status: int, call: Callable[..., Any], *args: Any) -> None:
        """Run a blocking service call in the extension's threads and answer with its result
        (reads and writes have threads of their own: a GET never queues behind starts)."""
        if self._finished:  # refused while the body arrived
            return
        loop = asyncio.get_running_loop()
        import_on_main_thread()
        executor = self.settings[READ_EXECUTOR if self.request.method == "GET" else EXECUTOR]
        try:
            result = await loop.run_in_executor(executor, functools.partial(call, *args))
        except ServiceError as exc:
            self.set_status(exc.status)
            self.finish(json.dumps(exc.to_json()))
            return
        except Exception as exc:  # a bug: log it with its traceback, answer 500 with a message
            self.log.exception("pipejupyter: %s %s failed", self.request.method, self.request.path)
            self.set_status(500)
            self.finish(
                json.dumps(
                    {
                        "message": (
                            f"internal error: {type(exc).__name__}: {exc} (see the server log)"
                        ),
                        "key": None,
                        "source": None,
                    }
                )
            )
            return
        self.set_status(status)
        self.finish(None if status == 204 else json.dumps(result))

    async def imports_done(self) -> None:
        """Wait for import_before_starts, run once per server in the extension's threads
        (the event loop keeps serving meanwhile); every start awaits it first."""
        future = self.settings.get(START_IMPORTS)
        if future is None:
            future = self.settings[EXECUTOR].submit(import_before_starts, START_MODULES, self.log)
            self.settings[START_IMPORTS] = future
        await asyncio.wrap_future(future)


class ProfilesHandler(_Handler):
    @tornado.web.authenticated
    async def get(self) -> None:
        await self.respond(200, profile_list)


class ProfileOptionsHandler(_Handler):
    @tornado.web.authenticated
    async def get(self, name: str) -> None:
        await self.respond(200, profile_options, name)


class ClustersHandler(_Handler):
    @tornado.web.authenticated
    async def get(self) -> None:
        await self.respond(200, self.service.list)

    @tornado.web.authenticated
    async def post(self) -> None:
        import_on_main_thread()
        await self.imports_done()
        await self.respond(201, self.service.start, self.body)


class ClusterHandler(_Handler):
    @tornado.web.authenticated
    async def get(self, cluster_id: str) -> None:
        await self.respond(200, self.service.get, cluster_id)

    @tornado.web.authenticated
    async def patch(self, cluster_id: str) -> None:
        await self.respond(200, self.service.scale, cluster_id, self.body)

    @tornado.web.authenticated
    async def delete(self, cluster_id: str) -> None:
        await self.respond(204, self.service.stop, cluster_id)


def setup_handlers(
    web_app: tornado.web.Application,
    service: ClusterService,
    executor: Executor,
    read_executor: Executor | None = None,
) -> None:
    """Add the routes; ``executor`` runs writes, ``read_executor`` (default: the same) GETs."""
    base = url_path_join(web_app.settings["base_url"], "pipejupyter")
    web_app.settings[SERVICE] = service
    web_app.settings[EXECUTOR] = executor
    web_app.settings[READ_EXECUTOR] = read_executor or executor
    web_app.add_handlers(
        ".*$",
        [
            (url_path_join(base, "profiles"), ProfilesHandler),
            (url_path_join(base, "profiles", r"(?P<name>[^/]+)", "options"), ProfileOptionsHandler),
            (url_path_join(base, "clusters"), ClustersHandler),
            (url_path_join(base, "clusters", r"(?P<cluster_id>[^/]+)"), ClusterHandler),
        ],
    )
