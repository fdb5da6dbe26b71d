"""ClusterWidget: a live ipywidgets view over a cluster handle's model.

The widget shows ``handle.model()`` (docs/wire-format.md) through the pure HTML views of
``html_views`` and adds controls that call the handle (scale, adapt, stop). It refreshes
itself from a task on the kernel's running asyncio loop: the model's RPC runs in a thread
so the kernel never waits on a slow or lost scheduler, and the task ends when the widget
is closed or the cluster stops. Without a running loop (plain terminal IPython) the
widget is static and :meth:`ClusterWidget.refresh` updates it on demand.

ipywidgets is imported only when a widget is built; this module itself imports neither
ipywidgets nor distributed, so ``%load_ext pipejupyter`` stays light.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from html import escape
from typing import Any

from pipejupyter.environment.dashboard_links import browser_model, proxy_from_environ
from pipejupyter.errors import PipejupyterError
from pipejupyter.notebook import html_views

logger = logging.getLogger(__name__)

#: statuses after which nothing changes any more: polling stops
FINAL = frozenset({"stopped", "failed"})
#: no controls while the cluster is in one of these
INACTIVE = frozenset({"stopped", "failed", "stopping"})
#: longest pause between refreshes of a lost scheduler (seconds)
MAX_BACKOFF = 10.0

_cache: dict[str, ClusterWidget] = {}


class ClusterWidget:
    """Header, worker table (one HTML widget however many workers) and controls.

    ``model`` is the latest cluster model shown; ``view`` is the ipywidgets box.
    """

    def __init__(
        self, handle, *, interval: float = 1.5, rpc_timeout: float = 1.0, live: bool = True
    ) -> None:
        import ipywidgets as w

        self.handle = handle
        self.interval = interval
        self.rpc_timeout = rpc_timeout
        self._closed = False
        self._task: asyncio.Task | None = None
        # A fetch runs in a worker thread while the loop handles button clicks: the lock
        # keeps a click (stop!) from changing the cluster under a model read in flight.
        self._busy = threading.Lock()
        # The Jupyter server's proxy (None outside Jupyter): dashboard links go through it.
        self.proxy = proxy_from_environ()
        self.model: dict[str, Any] = self._fetch()
        self.header = w.HTML()
        self.table = w.HTML()
        count = self.model.get("workers", 0) + self.model.get("pending", 0)
        adapt = self.model.get("adapt") or {}
        narrow = w.Layout(width="150px")
        self.workers_input = w.BoundedIntText(
            value=count, min=0, max=100_000, description="workers", layout=narrow
        )
        self.scale_button = w.Button(description="Scale", tooltip="set the number of workers")
        self.minimum_input = w.BoundedIntText(
            value=adapt.get("minimum", 0), min=0, max=100_000, description="min", layout=narrow
        )
        self.maximum_input = w.BoundedIntText(
            value=adapt.get("maximum", max(count, 1)),
            min=0,
            max=100_000,
            description="max",
            layout=narrow,
        )
        self.adapt_button = w.Button(
            description="Adapt", tooltip="let Dask choose between min and max workers"
        )
        self.stop_button = w.Button(
            description="Stop" if handle.owned else "Disconnect",
            button_style="danger" if handle.owned else "",
            tooltip="stop the cluster"
            if handle.owned
            else "close this kernel's client; the cluster keeps running",
        )
        self.message = w.HTML()
        self.scale_button.on_click(lambda _: self.scale(self.workers_input.value))
        self.adapt_button.on_click(
            lambda _: self.adapt(self.minimum_input.value, self.maximum_input.value)
        )
        self.stop_button.on_click(lambda _: self.stop())
        controls = w.HBox(
            [
                self.workers_input,
                self.scale_button,
                self.minimum_input,
                self.maximum_input,
                self.adapt_button,
                self.stop_button,
            ]
        )
        self.view = w.VBox([self.header, self.table, controls, self.message])
        self._show(self.model)
        if not handle.owned:
            self.message.value = (
                "<em>connected to a cluster started elsewhere: "
                "scale, adapt and stop it where it was started</em>"
            )
        if live:
            self._start_polling()

    # -- state ----------------------------------------------------------------------
    @property
    def status(self) -> str:
        return str(self.model.get("status"))

    @property
    def rows(self) -> list[dict[str, Any]]:
        return list(self.model.get("worker_info") or [])

    @property
    def live(self) -> bool:
        """True while the periodic refresh is scheduled."""
        return self._task is not None and not self._task.done()

    @property
    def closed(self) -> bool:
        return self._closed

    def _fetch(self) -> dict[str, Any]:
        try:
            with self._busy:
                model = self.handle.model(timeout=self.rpc_timeout)
            return browser_model(model, self.proxy)
        except Exception as exc:  # model() reports a lost scheduler itself; this is a last resort
            logger.debug("cluster model failed: %s", exc)
            previous = getattr(self, "model", None) or {}
            return {**previous, "status": "lost", "error": f"{type(exc).__name__}: {exc}"}

    def _show(self, model: dict[str, Any]) -> None:
        self.model = model
        header = html_views.header_html(model, launch_button=self.proxy is not None)
        table = html_views.workers_table_html(model)
        # Only changed values cross the comm: a quiet cluster costs nothing to watch.
        if self.header.value != header:
            self.header.value = header
        if self.table.value != table:
            self.table.value = table
        inactive = model.get("status") in INACTIVE
        for control in (
            self.workers_input,
            self.scale_button,
            self.minimum_input,
            self.maximum_input,
            self.adapt_button,
        ):
            control.disabled = inactive or not self.handle.owned
        self.stop_button.disabled = inactive

    def refresh(self) -> dict[str, Any]:
        """Fetch the model now and show it (what the periodic task does)."""
        self._show(self._fetch())
        return self.model

    # -- controls ---------------------------------------------------------------------
    def _act(self, action, done: str) -> bool:
        try:
            with self._busy:  # waits at most one model RPC (rpc_timeout)
                action()
        except Exception as exc:  # a button has no cell to raise into: say it in the widget
            text = str(exc) if isinstance(exc, PipejupyterError) else f"{type(exc).__name__}: {exc}"
            self.message.value = f'<span style="color:#c62828">{escape(text)}</span>'
            return False
        self.message.value = escape(done)
        self.refresh()
        return True

    def scale(self, n: int) -> bool:
        return self._act(lambda: self.handle.scale(int(n)), f"asked for {n} workers")

    def adapt(self, minimum: int, maximum: int) -> bool:
        return self._act(
            lambda: self.handle.adapt(int(minimum), int(maximum)),
            f"adaptive between {minimum} and {maximum} workers",
        )

    def stop(self) -> bool:
        done = self._act(self.handle.stop, "stopped" if self.handle.owned else "disconnected")
        self._stop_polling()
        return done

    # -- live refresh -------------------------------------------------------------------
    def _start_polling(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no running loop (terminal IPython, scripts): refresh() on demand
        if self.status not in FINAL:
            self._task = loop.create_task(self._poll())

    def _gone(self) -> bool:
        # ipywidgets drops the comm when the frontend or Python closes the widget.
        return self._closed or self.view.comm is None

    async def _poll(self) -> None:
        loop = asyncio.get_running_loop()
        delay = self.interval
        while True:
            await asyncio.sleep(delay)
            if self._gone():
                return
            # The model is a synchronous RPC: run it in a thread so the kernel stays free.
            model = await loop.run_in_executor(None, self._fetch)
            if self._gone():
                return
            try:
                self._show(model)
            except Exception as exc:  # a closed comm while showing: nothing left to update
                logger.debug("widget update failed: %s", exc)
                return
            if model.get("status") in FINAL:
                return
            delay = min(delay * 2, MAX_BACKOFF) if model.get("status") == "lost" else self.interval

    def _stop_polling(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def close(self) -> None:
        """Stop refreshing and close the widgets (the cluster keeps running)."""
        self._closed = True
        self._stop_polling()
        if _cache.get(self.handle.id) is self:
            del _cache[self.handle.id]
        for child in self._all_widgets():
            with contextlib.suppress(Exception):
                child.close()

    def _all_widgets(self) -> list[Any]:
        return [
            self.header,
            self.table,
            self.workers_input,
            self.scale_button,
            self.minimum_input,
            self.maximum_input,
            self.adapt_button,
            self.stop_button,
            self.message,
            *self.view.children,
            self.view,
        ]

    # -- display ------------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        """The live widget plus a static text/html and text/plain snapshot for saved notebooks."""
        bundle = dict(self.view._repr_mimebundle_(**kwargs) or {}) if not self._closed else {}
        bundle["text/plain"] = html_views.cluster_text(self.model)
        bundle["text/html"] = html_views.cluster_html(self.model)
        return bundle

    def __repr__(self) -> str:
        return (
            f"<ClusterWidget {self.model.get('name')!r} {self.status}, "
            f"{self.model.get('workers', 0)} workers>"
        )


def widget_for(handle, **kwargs: Any) -> ClusterWidget:
    """The one widget of a handle (shared by every display), rebuilt after it was closed."""
    widget = _cache.get(handle.id)
    if widget is None or widget.closed or widget._gone():
        widget = ClusterWidget(handle, **kwargs)
        _cache[handle.id] = widget
        return widget
    # Fresh state for this display's static copy (the periodic task may not have run yet).
    widget.refresh()
    if not widget.live:
        widget._start_polling()
    return widget


def static_bundle(model: dict[str, Any]) -> dict[str, str]:
    """Text and HTML of ``model``, with the dashboard link a browser of this kernel's
    Jupyter server opens."""
    proxy = proxy_from_environ()
    model = browser_model(model, proxy)
    return {
        "text/plain": html_views.cluster_text(model),
        "text/html": html_views.cluster_html(model, launch_button=proxy is not None),
    }


def handle_mimebundle(handle) -> dict[str, Any]:
    """IPython's mimebundle formatter for ClusterHandle: the widget, or static views without
    ipywidgets."""
    try:
        return widget_for(handle)._repr_mimebundle_()
    except ImportError:
        return static_bundle(handle.model())


def close_all() -> None:
    """Close every cached widget (``%unload_ext pipejupyter``)."""
    for widget in list(_cache.values()):
        widget.close()
