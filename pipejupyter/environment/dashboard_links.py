"""Dashboard links a user's browser can open.

A scheduler's dashboard listens where the scheduler runs: on the lab's own host (a
LocalCluster, or the scheduler of a SLURM cluster, which lives in the kernel) or on
another host. Behind a JupyterHub the browser reaches only the hub's public port, so
``http://127.0.0.1:8787/status`` opens nothing there. The Jupyter server can pass the
dashboard on through jupyter-server-proxy:

- a dashboard on the lab's own host: ``<base_url>proxy/<port>/status``;
- a dashboard on another host: ``<base_url>proxy/<host>:<port>/status``, only when the
  server's ``c.ServerProxy.host_allowlist`` allows that host (otherwise the link stays
  direct and :attr:`DashboardLink.problem` names the setting);
- a gateway's dashboard: its own public address, never proxied.

The Jupyter server extension knows its ``base_url`` and whether jupyter-server-proxy is
enabled; it describes them in environment variables (:func:`export`), which the kernels
it starts inherit (:func:`proxy_from_environ`). Outside Jupyter (a script, the command
line) there is no proxy and every link stays direct.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

#: set by the server extension for its kernels: the server's base_url (jupyter-server-proxy on)
BASE_URL_VARIABLE = "PIPEJUPYTER_PROXY_BASE_URL"
#: comma-separated hosts c.ServerProxy.host_allowlist allows, or "*" for a function
HOSTS_VARIABLE = "PIPEJUPYTER_PROXY_HOSTS"
#: Dask's own setting for the dashboard links of its Client and Cluster reprs
DASK_LINK_VARIABLE = "DASK_DISTRIBUTED__DASHBOARD__LINK"
#: Dask's default for ``distributed.dashboard.link``: a user who changed it keeps theirs
DASK_DEFAULT_LINK = "{scheme}://{host}:{port}/status"
#: the setting that decides which other hosts the server's proxy passes on to
ALLOWLIST_SETTING = "c.ServerProxy.host_allowlist"
#: backends whose dashboards have a public address of their own (never proxied)
OWN_PUBLIC_DASHBOARD = frozenset({"gateway"})
#: a dashboard on the server's own host, reached through ``proxy/<port>``
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "0.0.0.0", "::", ""})
#: jupyter-server-proxy's own default allow-list
DEFAULT_ALLOWED = ("localhost", "127.0.0.1")
#: a proxied link: <base>proxy/<port>/... (what Dask's link template gives in a kernel)
_PROXIED_PORT = re.compile(r"proxy/(\d{1,5})(/.*)?$")
#: longer links are not links (as the widget's safe_link)
MAX_LINK = 8192


@dataclass(frozen=True)
class ServerProxy:
    """The Jupyter server's proxy as a browser sees it.

    ``base_url``: the server's base URL path, ending in "/" (``/user/alice/`` behind a hub).
    ``allowed_hosts``: the hosts ``proxy/<host>:<port>`` may reach; None when the
    allow-list is a function (the proxy decides per request).
    """

    base_url: str = "/"
    allowed_hosts: tuple[str, ...] | None = DEFAULT_ALLOWED

    def allows(self, host: str) -> bool:
        return self.allowed_hosts is None or host in self.allowed_hosts

    @property
    def dask_link(self) -> str:
        """Dask's ``distributed.dashboard.link`` for clusters started next to this server."""
        return f"{self.base_url}proxy/{{port}}/status"


@dataclass(frozen=True)
class DashboardLink:
    """What to show for one dashboard: ``url`` (open this), the ``direct`` address of the
    dashboard, and ``problem``: why ``url`` may not open in the user's browser, or None."""

    url: str | None
    direct: str | None
    problem: str | None = None


def normalize_base_url(base_url: str) -> str:
    """``base_url`` as a path that starts and ends with "/"."""
    path = "/" + (base_url or "").strip("/")
    return path if path.endswith("/") else path + "/"


def proxy_for_server(base_url: str, allowlist: Any) -> ServerProxy:
    """The proxy of a Jupyter server with jupyter-server-proxy enabled.

    ``allowlist``: the server's ``ServerProxy.host_allowlist`` (a list of hosts, or a
    function, or None for jupyter-server-proxy's default)."""
    if allowlist is None:
        hosts: tuple[str, ...] | None = DEFAULT_ALLOWED
    elif callable(allowlist):
        hosts = None
    else:
        hosts = tuple(str(h) for h in allowlist)
    return ServerProxy(normalize_base_url(base_url), hosts)


def export(proxy: ServerProxy | None, environ: MutableMapping[str, str]) -> None:
    """Describe ``proxy`` in ``environ`` for the kernels a server starts, and point Dask's
    own dashboard links (``distributed.dashboard.link``) through it, unless the user set
    their own. ``proxy`` None: the server has no proxy; nothing is set."""
    if proxy is None:
        return
    environ[BASE_URL_VARIABLE] = proxy.base_url
    environ[HOSTS_VARIABLE] = "*" if proxy.allowed_hosts is None else ",".join(proxy.allowed_hosts)
    if DASK_LINK_VARIABLE not in environ and _dask_link_is_default():
        environ[DASK_LINK_VARIABLE] = proxy.dask_link


def _dask_link_is_default() -> bool:
    import dask.config

    return dask.config.get("distributed.dashboard.link", DASK_DEFAULT_LINK) == DASK_DEFAULT_LINK


def proxy_from_environ(environ: Mapping[str, str] | None = None) -> ServerProxy | None:
    """The proxy of the Jupyter server this process (a kernel) runs under, or None outside
    Jupyter or when that server has no jupyter-server-proxy."""
    environ = os.environ if environ is None else environ
    base = environ.get(BASE_URL_VARIABLE)
    if base is None:
        return None
    hosts = environ.get(HOSTS_VARIABLE)
    if hosts is None:
        allowed: tuple[str, ...] | None = DEFAULT_ALLOWED
    elif hosts.strip() == "*":
        allowed = None
    else:
        allowed = tuple(h.strip() for h in hosts.split(",") if h.strip())
    return ServerProxy(normalize_base_url(base), allowed)


def browser_link(
    link: str | None,
    proxy: ServerProxy | None,
    *,
    backend: str | None = None,
    scheduler_address: str | None = None,
) -> DashboardLink:
    """The link to show for dashboard ``link`` (as the cluster reports it).

    ``scheduler_address`` tells where the scheduler runs when ``link`` is already a proxied
    path from Dask's link template (``<base>proxy/<port>/status`` names no host)."""
    if not isinstance(link, str) or not link or len(link) > MAX_LINK:
        return DashboardLink(link if isinstance(link, str) else None, None)
    if proxy is None or backend in OWN_PUBLIC_DASHBOARD:
        return DashboardLink(link, link)
    if link.startswith("/"):
        return _proxied_path(link, proxy, scheduler_address)
    try:
        parts = urlsplit(link)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:  # a port that is no number
        return DashboardLink(link, link)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return DashboardLink(link, link)
    host = parts.hostname.lower()
    rest = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _through_proxy(host, port, rest, link, proxy)


def _through_proxy(
    host: str, port: int, rest: str, direct: str, proxy: ServerProxy
) -> DashboardLink:
    if host in LOCAL_HOSTS:
        return DashboardLink(f"{proxy.base_url}proxy/{port}{rest}", direct)
    if proxy.allows(host):
        return DashboardLink(f"{proxy.base_url}proxy/{_netloc(host)}:{port}{rest}", direct)
    return DashboardLink(direct, direct, not_allowed_message(host, proxy))


def _proxied_path(link: str, proxy: ServerProxy, scheduler_address: str | None) -> DashboardLink:
    """A link Dask's template already sent through the proxy. ``proxy/<port>`` reaches
    only this host: for a scheduler elsewhere, go to its host instead."""
    found = _PROXIED_PORT.search(link)
    host = _host_of(scheduler_address)
    if found is None or host is None or host in LOCAL_HOSTS:
        return DashboardLink(link, None)
    port, rest = int(found.group(1)), found.group(2) or "/"
    direct = f"http://{_netloc(host)}:{port}{rest}"
    return _through_proxy(host, port, rest, direct, proxy)


def _host_of(address: str | None) -> str | None:
    if not address or "://" not in address:
        return None
    try:
        return (urlsplit(address).hostname or "").lower() or None
    except ValueError:
        return None


def _netloc(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def not_allowed_message(host: str, proxy: ServerProxy) -> str:
    allowed = ", ".join(proxy.allowed_hosts or ()) or "none"
    return (
        f"the dashboard is on host {host}, which the Jupyter server's proxy does not pass on "
        f"to (jupyter-server-proxy allows: {allowed}); the administrator can add it to "
        f"{ALLOWLIST_SETTING} in jupyter_server_config.py (docs/jupyterhub.md), or open the "
        "direct link from a browser that reaches that host"
    )


def browser_model(model: Mapping[str, Any], proxy: ServerProxy | None) -> dict[str, Any]:
    """A cluster model (models.cluster_model) with the dashboard link the browser opens:
    ``dashboard_link`` replaced, ``dashboard_direct`` and ``dashboard_problem`` added."""
    shown = browser_link(
        model.get("dashboard_link"),
        proxy,
        backend=model.get("backend"),
        scheduler_address=model.get("scheduler_address"),
    )
    return {
        **model,
        "dashboard_link": shown.url,
        "dashboard_direct": shown.direct,
        "dashboard_problem": shown.problem,
    }


def browser_models(
    models: Iterable[Mapping[str, Any]], proxy: ServerProxy | None
) -> list[dict[str, Any]]:
    return [browser_model(m, proxy) for m in models]
