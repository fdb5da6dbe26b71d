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

from pipejupyter.server.service import ClusterService, ServiceError, profile_list

SERVICE = "pipejupyter_service"
EXECUTOR = "pipejupyter_executor"
#: optional libraries that must first be imported on the main thread (see below)
MAIN_THREAD_MODULES = ("dask_jobqueue",)
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


class _Handler(APIHandler):
    @property
    def service(self) -> ClusterService:
        return self.settings[SERVICE]

    async def respond(self, status: int, call: Callable[..., Any], *args: Any) -> None:
        """Run a blocking service call in the extension's threads and answer with its result."""
        loop = asyncio.get_running_loop()
        import_on_main_thread()
        try:
            result = await loop.run_in_executor(
                self.settings[EXECUTOR], functools.partial(call, *args)
            )
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


class ProfilesHandler(_Handler):
    @tornado.web.authenticated
    async def get(self) -> None:
        await self.respond(200, profile_list)


class ClustersHandler(_Handler):
    @tornado.web.authenticated
    async def get(self) -> None:
        await self.respond(200, self.service.list)

    @tornado.web.authenticated
    async def post(self) -> None:
        await self.respond(201, self.service.start, self.request.body)


class ClusterHandler(_Handler):
    @tornado.web.authenticated
    async def get(self, cluster_id: str) -> None:
        await self.respond(200, self.service.get, cluster_id)

    @tornado.web.authenticated
    async def patch(self, cluster_id: str) -> None:
        await self.respond(200, self.service.scale, cluster_id, self.request.body)

    @tornado.web.authenticated
    async def delete(self, cluster_id: str) -> None:
        await self.respond(204, self.service.stop, cluster_id)


def setup_handlers(
    web_app: tornado.web.Application, service: ClusterService, executor: Executor
) -> None:
    base = url_path_join(web_app.settings["base_url"], "pipejupyter")
    web_app.settings[SERVICE] = service
    web_app.settings[EXECUTOR] = executor
    web_app.add_handlers(
        ".*$",
        [
            (url_path_join(base, "profiles"), ProfilesHandler),
            (url_path_join(base, "clusters"), ClustersHandler),
            (url_path_join(base, "clusters", r"(?P<cluster_id>[^/]+)"), ClusterHandler),
        ],
    )
