"""One conversation with a Dask Gateway server: credentials, bounded calls, readable errors.

dask-gateway's client waits without limit (aiohttp's 5-minute default, and ``new_cluster``
polls a pending cluster forever), and a half-made ``GatewayCluster`` can deadlock its loop
thread when it is garbage collected there. So we never build ``GatewayCluster`` objects:
we drive ``Gateway``'s coroutines on its own loop with a deadline per call, and connect
Clients straight to the scheduler address and TLS credentials of the cluster report.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import getpass
import importlib.util
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from pipejupyter.backends.base import import_dotted
from pipejupyter.backends.reaper import Order, Reaper
from pipejupyter.environment.redaction import redact_text
from pipejupyter.errors import ClusterError, ConfigError, UnknownCluster
from pipejupyter.models import ClusterSpec

BUILTIN_AUTH = ("basic", "kerberos", "jupyterhub")
#: gateway cluster states that still hold (or will hold) processes
ACTIVE_STATES = ("PENDING", "RUNNING", "STOPPING")


# -- credentials -------------------------------------------------------------------------


def _from_env(variable: str, what: str, key: str, source: str | None) -> str:
    value = os.environ.get(variable)
    if not value:
        raise ConfigError(
            f"{what} is read from the environment variable {variable!r}, "
            "which is not set in this process",
            key=key,
            source=source,
        )
    return value


def auth_secrets(auth: Mapping[str, Any] | None) -> list[str]:
    """Every credential value an auth block resolves to (for redaction); never raises."""
    auth = auth or {}
    values = [auth.get("password")]
    for key in ("password_env", "api_token_env"):
        if auth.get(key):
            values.append(os.environ.get(str(auth[key])))
    for value in (auth.get("kwargs") or {}).values():
        if isinstance(value, str):
            values.append(os.path.expandvars(value))
    return [str(v) for v in values if v and len(str(v)) >= 4]


def auth_description(auth: Mapping[str, Any] | None) -> dict[str, Any]:
    """What may be shown or written to disk about an auth block: no credential values."""
    auth = dict(auth or {})
    shown: dict[str, Any] = {
        k: auth[k] for k in ("type", "username", "password_env", "api_token_env") if auth.get(k)
    }
    if auth.get("password"):
        shown["password"] = "********"
    if auth.get("kwargs"):
        shown["kwargs"] = {k: "********" for k in auth["kwargs"]}
    return shown


#: keyword arguments of dask-gateway's own auth classes, as its configuration writes them
#: (``gateway.auth.kwargs``; dask-gateway passes them to the class as they are)
BUILTIN_AUTH_KEYWORDS: dict[str, tuple[str, ...]] = {
    "basic": ("username", "password"),
    "jupyterhub": ("api_token",),
    "kerberos": (),
}
#: the profile's own keys that say the same as a keyword argument
_SAME_AS_KEYWORD = {"username": ("username",), "password": ("password", "password_env")}


def check_auth_kwargs(
    auth: Mapping[str, Any] | None, *, key: str = "auth", source: str | None = None
) -> None:
    """``auth.kwargs`` of a built-in type: only its class's keywords, each said once."""
    auth = auth or {}
    kind = auth.get("type") or "basic"
    kwargs = auth.get("kwargs") or {}
    if kind not in BUILTIN_AUTH_KEYWORDS or not kwargs:
        return
    accepted = BUILTIN_AUTH_KEYWORDS[kind]
    for name in kwargs:
        if name not in accepted:
            raise ConfigError(
                f"dask-gateway's {kind} auth takes no keyword {name!r}",
                key=f"{key}.kwargs.{name}",
                source=source,
                accepted=accepted or "no kwargs",
            )
    same = {**_SAME_AS_KEYWORD, "api_token": ("api_token_env",)}
    for name in kwargs:
        twice = [other for other in same.get(name, ()) if auth.get(other)]
        if twice:
            raise ConfigError(
                f"{name} is given twice, as {key}.{twice[0]} and as {key}.kwargs.{name}; keep one",
                key=f"{key}.kwargs.{name}",
                source=source,
            )


def build_auth(auth: Mapping[str, Any] | None, *, key: str = "auth", source: str | None = None):
    """A ``dask_gateway`` auth object from a profile's ``auth:`` block (None: dask config).

    ``kwargs`` are used for every type, as dask-gateway's ``gateway.auth.kwargs`` are:
    ``{type: basic, kwargs: {username: u, password: p}}`` logs in as ``u``. ``$VAR`` in a
    keyword's value is read from the environment.
    """
    from dask_gateway.auth import BasicAuth, GatewayAuth, JupyterHubAuth, KerberosAuth

    if not auth:
        return None  # dask-gateway reads gateway.auth.* from the Dask configuration
    check_auth_kwargs(auth, key=key, source=source)
    kind = auth.get("type") or "basic"
    keywords = {
        k: os.path.expandvars(v) if isinstance(v, str) else v
        for k, v in (auth.get("kwargs") or {}).items()
    }
    if kind == "basic":
        username = auth.get("username") or keywords.get("username") or getpass.getuser()
        if auth.get("password_env"):
            password = _from_env(
                str(auth["password_env"]), "the gateway password", f"{key}.password_env", source
            )
        else:
            password = auth.get("password") or keywords.get("password") or ""
        return BasicAuth(username=str(username), password=str(password))
    if kind == "jupyterhub":
        token = keywords.get("api_token")
        if not token:
            variable = str(auth.get("api_token_env") or "JUPYTERHUB_API_TOKEN")
            token = _from_env(variable, "the JupyterHub API token", f"{key}.api_token_env", source)
        return JupyterHubAuth(api_token=str(token))
    if kind == "kerberos":
        if importlib.util.find_spec("kerberos") is None:
            raise ConfigError(
                "kerberos authentication needs the Python package 'kerberos' "
                "(pip install kerberos)",
                key=f"{key}.type",
                source=source,
            )
        return KerberosAuth()
    if "." not in kind and ":" not in kind:
        raise ConfigError(
            f"unknown auth type {kind!r}",
            key=f"{key}.type",
            source=source,
            accepted=(*BUILTIN_AUTH, "a dotted class path"),
        )
    try:
        klass = import_dotted(kind)
    except ImportError as exc:
        raise ConfigError(
            f"auth class {kind!r} does not import ({exc})", key=f"{key}.type", source=source
        ) from None
    if not (isinstance(klass, type) and issubclass(klass, GatewayAuth)):
        raise ConfigError(
            f"{kind!r} is not a dask_gateway.auth.GatewayAuth subclass",
            key=f"{key}.type",
            source=source,
        )
    try:
        return klass(**keywords)
    except Exception as exc:
        raise ConfigError(
            f"auth class {kind!r} rejected its kwargs ({type(exc).__name__})",
            key=f"{key}.kwargs",
            source=source,
        ) from None


# -- the session -------------------------------------------------------------------------

DEFAULT_REQUEST_TIMEOUT = 10.0


def open_session(spec: ClusterSpec) -> GatewaySession:
    """A session with the gateway of a resolved gateway profile, logged in as it says."""
    opts = spec.options
    auth = build_auth(
        opts.get("auth"), key=f"profiles.{spec.profile}.auth", source=spec.origin_of("auth")
    )
    return GatewaySession(
        opts.get("address"),
        proxy_address=opts.get("proxy_address"),
        public_address=opts.get("public_address"),
        auth=auth,
        timeout=float(opts.get("request_timeout") or DEFAULT_REQUEST_TIMEOUT),
        secrets=auth_secrets(opts.get("auth")),
    )


class GatewaySession:
    """A ``dask_gateway.Gateway`` whose every call has a deadline and a readable error."""

    def __init__(
        self,
        address: str | None,
        *,
        proxy_address: str | int | None = None,
        public_address: str | None = None,
        auth: Any = None,
        timeout: float = 10.0,
        secrets: list[str] | None = None,
        username: str | None = None,
    ) -> None:
        from dask_gateway import Gateway

        self.timeout = timeout
        self.auth = auth  # kept for the reaper, which stops the cluster with the same login
        self._secrets = list(secrets or [])
        self.username = username or getattr(auth, "username", None)
        try:
            self.gateway = Gateway(
                address=address,
                proxy_address=proxy_address,
                public_address=public_address,
                auth=auth,
            )
        except (ValueError, TypeError, ImportError) as exc:
            raise ConfigError(
                self.safe(f"cannot set up a gateway client: {exc}"), key="address"
            ) from None
        self.address = self.gateway.address

    # -- plumbing --------------------------------------------------------------------------
    def safe(self, text: str) -> str:
        return redact_text(text, self._secrets)

    def call(self, make: Callable[[], Any], what: str, timeout: float | None = None) -> Any:
        """Run ``make()`` (a coroutine) on the gateway's loop; ClusterError after ``timeout``."""
        limit = self.timeout if timeout is None else timeout

        async def bounded():
            return await asyncio.wait_for(make(), limit)

        future = asyncio.run_coroutine_threadsafe(bounded(), self.gateway.loop.asyncio_loop)
        try:
            # The outer limit only matters if the loop itself is stuck.
            return future.result(limit + 5)
        except (asyncio.TimeoutError, concurrent.futures.TimeoutError):
            future.cancel()
            raise ClusterError(
                f"{what}: the gateway at {self.address} did not answer within {limit:g} s"
            ) from None
        except Exception as exc:
            raise self._error(exc, what) from None

    def _error(self, exc: BaseException, what: str) -> Exception:
        import aiohttp
        from dask_gateway.client import GatewayClusterError, GatewayServerError

        if isinstance(exc, aiohttp.ClientResponseError):
            if exc.status in (401, 403):
                who = f" of user {self.username!r}" if self.username else ""
                return ClusterError(
                    f"{what}: the gateway at {self.address} rejected the credentials{who} "
                    f"(HTTP {exc.status}); check the profile's auth (username, password_env)"
                )
            return ClusterError(
                self.safe(
                    f"{what}: the gateway at {self.address} "
                    f"answered HTTP {exc.status} {exc.message}"
                )
            )
        if isinstance(exc, (aiohttp.ClientConnectionError, OSError)):
            return ClusterError(
                self.safe(
                    f"{what}: cannot reach the gateway at {self.address} "
                    f"({type(exc).__name__}: {exc})"
                )
            )
        if isinstance(exc, (GatewayClusterError, GatewayServerError)):
            return ClusterError(self.safe(f"{what}: {exc}"))
        if isinstance(exc, ValueError) and "not found" in str(exc):
            return UnknownCluster(self.safe(f"{what}: {exc} on the gateway at {self.address}"))
        return ClusterError(self.safe(f"{what}: {type(exc).__name__}: {exc}"))

    # -- requests --------------------------------------------------------------------------
    def cluster_options(self):
        """The server's option spec as a ``dask_gateway.options.Options`` (server defaults)."""
        return self.call(
            lambda: self.gateway._cluster_options(use_local_defaults=False),
            "reading cluster options",
        )

    def submit(self, options: Mapping[str, Any]) -> str:
        # A plain dict: already validated against the server's spec by the caller.
        return self.call(lambda: self._submit(options), "creating a cluster")

    async def _submit(self, options: Mapping[str, Any]) -> str:
        url = f"{self.address}/api/v1/clusters/"
        resp = await self.gateway._request("POST", url, json={"cluster_options": dict(options)})
        return (await resp.json())["name"]

    def report(self, name: str, *, wait: bool = False, timeout: float | None = None):
        return self.call(
            lambda: self.gateway._cluster_report(name, wait=wait),
            f"asking for cluster {name!r}",
            timeout,
        )

    def clusters(
        self, status: tuple[str, ...] = ACTIVE_STATES, timeout: float | None = None
    ) -> list:
        return self.call(
            lambda: self.gateway._clusters(status=list(status)), "listing clusters", timeout
        )

    def wait_running(self, name: str, timeout: float):
        """Wait for a submitted cluster to run; ClusterError if it fails, stops or takes too
        long."""
        from dask_gateway.client import ClusterStatus

        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ClusterError(
                    f"gateway cluster {name} did not start within {timeout:g} s "
                    "(it is stopped again)"
                )
            # ?wait makes the server hold the answer until the state changes (or its own timeout).
            try:
                report = self.report(name, wait=True, timeout=min(left, 10))
            except ClusterError as exc:
                if "did not answer" not in str(exc):
                    raise
                continue
            if report.status is ClusterStatus.RUNNING:
                return report
            if report.status in (
                ClusterStatus.FAILED,
                ClusterStatus.STOPPED,
                ClusterStatus.STOPPING,
            ):
                raise ClusterError(
                    f"gateway cluster {name} is {report.status.name.lower()} instead of running; "
                    "the gateway server's log says why"
                )
            time.sleep(min(0.2, max(left, 0)))

    def scale(self, name: str, n: int) -> str | None:
        """Ask for ``n`` workers; the server's remark when it grants fewer (its limits)."""
        return self.call(
            lambda: self._post(f"clusters/{name}/scale", {"count": n}), f"scaling cluster {name}"
        )

    def adapt(self, name: str, minimum: int, maximum: int) -> str | None:
        body = {"minimum": minimum, "maximum": maximum, "active": True}
        return self.call(
            lambda: self._post(f"clusters/{name}/adapt", body), f"adapting cluster {name}"
        )

    async def _post(self, path: str, body: dict[str, Any]) -> str | None:
        # Like Gateway._scale_cluster, but the remark comes back to the caller's thread
        # instead of a warning raised on the loop thread, where nobody sees it.
        resp = await self.gateway._request("POST", f"{self.address}/api/v1/{path}", json=body)
        try:
            answer = await resp.json()
        except Exception:
            return None
        return (
            answer.get("msg") if isinstance(answer, dict) and not answer.get("ok", True) else None
        )

    def stop(self, name: str, timeout: float = 20.0) -> None:
        """Shut a cluster down and wait until the gateway says its processes are gone.

        The DELETE returns at once; the gateway reports STOPPED only after it has stopped
        the scheduler and workers (seconds later), so poll for that.
        """
        self.call(lambda: self.gateway._stop_cluster(name), f"stopping cluster {name}")
        deadline = time.monotonic() + timeout
        while True:
            try:
                report = self.report(
                    name, timeout=min(self.timeout, max(deadline - time.monotonic(), 0.5))
                )
            except UnknownCluster:
                return
            if report.status.name not in ACTIVE_STATES:
                return
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"gateway cluster {name} is still {report.status.name.lower()} "
                    f"after {timeout:g} s"
                )
            time.sleep(0.2)

    def close(self) -> None:
        """Close the HTTP session and stop the loop thread. Idempotent."""
        gateway, self.gateway = getattr(self, "gateway", None), None
        if gateway is None:
            return
        try:
            gateway.close()
        except Exception:  # closing must never hide the error being handled
            pass
        # Gateway.__del__ would close again: on the stopped loop that fails, and run on the
        # loop's own thread (a collection there) it would deadlock. It skips objects
        # without a loop runner.
        gateway.__dict__.pop("_loop_runner", None)

    def __enter__(self) -> GatewaySession:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<GatewaySession {self.address}>"


# -- when the owner dies -----------------------------------------------------------------


def stop_detached(
    address: str, proxy_address: str | None, auth: Any, name: str, timeout: float = 60.0
) -> None:
    """Stop gateway cluster ``name`` from another process (the reaper); gone already is fine."""
    with GatewaySession(address, proxy_address=proxy_address, auth=auth, timeout=15.0) as session:
        try:
            session.stop(name, timeout=timeout)
        except UnknownCluster:
            pass


def start_reaper(session: GatewaySession, name: str, record_path: str | None):
    """A reaper that stops cluster ``name`` if this process dies first; None if it cannot start."""
    import functools
    import logging

    stop = functools.partial(
        stop_detached, session.address, session.gateway.proxy_address, session.auth, name
    )
    try:
        return Reaper.start(Order(f"gateway cluster {name}", stop, record_path))
    except Exception as exc:  # the cluster still works; only a killed owner would leak it
        logging.getLogger(__name__).warning(
            "gateway cluster %s: no reaper (%s); if this process is killed, stop the cluster with "
            "`pipejupyter stop`",
            name,
            redact_text(str(exc), session._secrets),
        )
        return None
