"""Dask Gateway backend: clusters created, attached to, listed and stopped through a gateway.

Profile keys (besides the common ones)::

    backend: gateway
    address: https://gateway.example.org          # or dask config gateway.address
    proxy_address: gateway://gateway.example.org:8786   # when the proxy has its own port
    public_address: https://gateway.example.org   # root of browser links (dashboard)
    auth: {type: basic, username: me, password_env: GATEWAY_PASSWORD}
    # or as dask-gateway's own configuration writes it (gateway.auth):
    # auth: {type: basic, kwargs: {username: me, password: $GATEWAY_PASSWORD}}
    options: {worker_cores: 2, worker_memory: 4}  # checked against the server's own spec
    request_timeout: 10                            # seconds per request to the gateway

Secrets come from environment variables (``password_env``, ``api_token_env``, ``$VAR`` in
``auth.kwargs``) or from the file; they are never shown (dry-run, errors, discovery).
"""

from __future__ import annotations

import logging
import re
import warnings
from typing import Any

import yaml

from pipejupyter.backends.base import Backend, closing_comments
from pipejupyter.backends.gateway.attach import find_cluster, remote_record, spec_for_record
from pipejupyter.backends.gateway.options import describe_field, fill_options
from pipejupyter.backends.gateway.session import (
    ACTIVE_STATES,
    GatewaySession,
    auth_description,
    auth_secrets,
    check_auth_kwargs,
    open_session,
    start_reaper,
)
from pipejupyter.config.schema import Field
from pipejupyter.environment.redaction import redact_mapping, redact_text
from pipejupyter.environment.remote import remote_environment
from pipejupyter.environment.workers import environment_for
from pipejupyter.errors import ClusterError, ConfigError, NotOwned
from pipejupyter.models import ClusterSpec, OptionField, worker_row

logger = logging.getLogger(__name__)

DEFAULT_START_TIMEOUT = 120.0
# GatewayCluster keyword arguments that are connection settings, not cluster options.
CONNECTION_KWARGS = ("address", "proxy_address", "public_address", "auth")
IGNORED_KWARGS = ("shutdown_on_close", "asynchronous", "loop")


class GatewayEnvironmentWarning(UserWarning):
    """Worker environment variables that a gateway cannot pass on."""


class GatewayLimitWarning(UserWarning):
    """The gateway granted fewer workers than asked for."""


AUTH = Field(
    "record",
    "how to log in to the gateway",
    children={
        "type": Field("str", "basic | kerberos | jupyterhub | a dotted GatewayAuth class"),
        "username": Field("str", "basic: user name (default: this user)", nullable=True),
        "password": Field("str", "basic: password (prefer password_env)", nullable=True),
        "password_env": Field(
            "str", "basic: environment variable holding the password", nullable=True
        ),
        "api_token_env": Field(
            "str",
            "jupyterhub: variable holding the API token (default JUPYTERHUB_API_TOKEN)",
            nullable=True,
        ),
        "kwargs": Field(
            "map",
            "keyword arguments of a dotted auth class; $VAR is read from the environment",
            nullable=True,
        ),
    },
)


class GatewayBackend(Backend):
    name = "gateway"
    extra = "gateway"
    security_note = (
        "a gateway secures its clusters itself (TLS with the gateway's certificates); "
        "remove security"
    )
    requires = ("dask_gateway",)
    remote_clusters = True
    cluster_classes = ("dask_gateway.GatewayCluster", "dask_gateway.client.GatewayCluster")
    profile_keys = {
        "address": Field(
            "str", "gateway server address, e.g. https://gateway.example.org", nullable=True
        ),
        "proxy_address": Field(
            "any", "scheduler proxy address or port (default: from address)", nullable=True
        ),
        "public_address": Field("str", "address browsers use, for dashboard links", nullable=True),
        "auth": AUTH,
        "options": Field(
            "map", "cluster options, checked against the server's option spec", nullable=True
        ),
        "request_timeout": Field(
            "number", "seconds each request to the gateway may take", minimum=0, nullable=True
        ),
    }

    # -- resolve time -------------------------------------------------------------------
    @classmethod
    def translate(cls, spec: ClusterSpec) -> None:
        # cluster_class: dask_gateway.GatewayCluster files put everything in cluster_kwargs.
        kwargs = spec.cluster_kwargs
        for key in CONNECTION_KWARGS:
            if key in kwargs:
                value = kwargs.pop(key)
                if key == "auth" and isinstance(value, str):
                    value = {"type": value}
                spec.options.setdefault(key, value)
                spec.notes.append(f"cluster_kwargs.{key} is the gateway profile key {key}")
        for key in IGNORED_KWARGS:
            if key in kwargs:
                kwargs.pop(key)
                spec.notes.append(f"cluster_kwargs.{key} is decided by pipejupyter (ignored)")
        if kwargs:
            options = dict(spec.options.get("options") or {})
            options.update(kwargs.pop("cluster_options", None) or {})
            for key in list(kwargs):
                options.setdefault(key, kwargs.pop(key))
            spec.options["options"] = options
            spec.notes.append(
                "cluster_kwargs of GatewayCluster are gateway cluster options (options)"
            )

    @classmethod
    def validate_kwargs(cls, spec: ClusterSpec) -> None:
        import dask

        cls.check_dependencies()
        opts = spec.options
        where = f"profiles.{spec.profile}"
        if not opts.get("address") and not dask.config.get("gateway.address", None):
            raise ConfigError(
                "a gateway profile needs an address (or the Dask config key gateway.address)",
                key=f"{where}.address",
                source=spec.origin_of("backend") or spec.origin_of("cluster_class"),
            )
        proxy = opts.get("proxy_address")
        if proxy is not None and (isinstance(proxy, bool) or not isinstance(proxy, (str, int))):
            raise ConfigError(
                f"expected an address or a port number, got {proxy!r}",
                key=f"{where}.proxy_address",
                source=spec.origin_of("proxy_address"),
            )
        auth = opts.get("auth")
        if isinstance(auth, str):
            opts["auth"] = auth = {"type": auth}
        if auth:
            kind = auth.get("type") or "basic"
            if (
                kind not in ("basic", "kerberos", "jupyterhub")
                and "." not in kind
                and ":" not in kind
            ):
                raise ConfigError(
                    f"unknown auth type {kind!r}",
                    key=f"{where}.auth.type",
                    source=spec.origin_of("auth.type"),
                    accepted="basic, kerberos, jupyterhub, a dotted GatewayAuth class",
                )
            if auth.get("password") and auth.get("password_env"):
                raise ConfigError(
                    "give either password or password_env, not both",
                    key=f"{where}.auth",
                    source=spec.origin_of("auth"),
                )
            check_auth_kwargs(auth, key=f"{where}.auth", source=spec.origin_of("auth.kwargs"))

    @classmethod
    def option_fields(cls, spec: ClusterSpec) -> list[OptionField]:
        """Workers/adapt plus the server's own cluster options, as dask-gateway's form shows
        them: its option spec (integer, float, select, bool, string fields with bounds),
        prefilled with the profile's ``options`` or the server's defaults."""
        fields = super().option_fields(spec)
        session = open_session(spec)
        try:
            server_options = session.cluster_options()
        finally:
            session.close()
        wanted = spec.options.get("options") or {}
        for name, field in server_options._fields.items():
            kind = {"integer": "int", "float": "number", "string": "str", "bool": "bool",
                    "select": "select"}.get(type(field).__name__.lower())  # fmt: skip
            if kind is None:
                continue  # a mapping (the environment) is filled from env passthrough
            key = f"options.{name}"
            fields.append(
                OptionField(
                    key=key,
                    label=getattr(field, "label", None) or name,
                    kind=kind,
                    value=wanted.get(name, field.value),
                    origin=spec.origin_of(key) if name in wanted else "the gateway's default",
                    help=describe_field(field, field.value),
                    minimum=getattr(field, "min", None),
                    maximum=getattr(field, "max", None),
                    choices=list(field.options) if kind == "select" else None,
                    group="gateway options",
                )
            )
        return fields

    # -- showing ------------------------------------------------------------------------
    def shown_options(self) -> dict[str, Any]:
        shown = dict(self.spec.options)
        if "auth" in shown:
            shown["auth"] = auth_description(shown["auth"])
        return shown

    def dry_run(self) -> str:
        send, notes = self._environment()
        shown = self.spec.to_json()
        shown["options"] = self.shown_options()
        shown["env"] = {
            "pass": shown["env"].get("pass", []),
            "workers_receive": redact_mapping(send, self.env.redact),
        }
        shown.pop("notes", None)
        shown.pop("warnings", None)
        text = yaml.safe_dump(shown, sort_keys=False, default_flow_style=False)
        text += (
            "# gateway: options are checked against the server's option spec "
            "when the cluster starts\n"
        )
        text += (
            "# gateway: sent through the server's environment option: "
            f"{', '.join(sorted(send)) or 'nothing'}\n"
        )
        text += closing_comments(self.spec, notes)
        return self.safe(text)

    def secret_values(self) -> list[str]:
        return auth_secrets(self.spec.options.get("auth"))

    def safe(self, text: str) -> str:
        return redact_text(text, self.secret_values())

    def __repr__(self) -> str:
        return f"<GatewayBackend {self.spec.options.get('address')} cluster={self._name}>"

    # -- live ---------------------------------------------------------------------------
    def __init__(self, spec: ClusterSpec, env) -> None:
        super().__init__(spec, env)
        self._session: GatewaySession | None = None
        self._name: str | None = None  # the gateway's cluster name
        self._report: Any = None
        self._attached = False  # True: someone else's cluster, never shut down from here
        self._requested = 0
        self._adaptive = False
        self._reaper: Any = None  # stops the cluster if this process dies (see backends/reaper.py)

    def _environment(self) -> tuple[dict[str, str], list[str]]:
        return remote_environment(self.env, self.spec.env.get("pass") or (), "gateway")

    def _open_session(self) -> GatewaySession:
        return open_session(self.spec)

    def start(self) -> None:
        if self._attached:
            return self._connect_existing()
        self._session = session = self._session or self._open_session()
        try:
            server_options = session.cluster_options()
            send, notes = self._environment()
            for note in notes:
                logger.info("%s", note)
            submit, problems = _fill(server_options, self.spec, send, session.address)
            for problem in problems:
                warnings.warn(problem, GatewayEnvironmentWarning, stacklevel=2)
                logger.warning("%s", problem)
            self._name = session.submit(submit)
            self._reaper = start_reaper(session, self._name, self.record_path)
            timeout = float(self.spec.wait_timeout or DEFAULT_START_TIMEOUT)
            self._report = session.wait_running(self._name, timeout)
            if self._reaper is not None and not self._reaper.confirm():
                logger.warning(
                    "gateway cluster %s: its reaper did not start; a killed kernel would leave it",
                    self._name,
                )
        except BaseException:
            try:
                self.close(timeout=20)  # nothing half-started: the cluster, if submitted, goes
            except Exception as exc:  # the first error is the one to report
                logger.warning("cleaning up after a failed start: %s", exc)
            # No gc.collect() here: a full collection costs 50-100 ms in a kernel with Dask
            # loaded, and the one object it used to defuse, the session's Gateway (whose
            # __del__ would sync with its loop from the loop's thread), is disarmed by
            # session.close(). We never build GatewayCluster objects (see session.py).
            raise

    def _connect_existing(self) -> None:
        self._session = session = self._session or self._open_session()
        report = session.report(self._name)
        if report.status.name != "RUNNING":
            raise ClusterError(
                f"gateway cluster {self._name} is {report.status.name.lower()}, not running"
            )
        self._report = report

    def make_client(self, **kwargs: Any):
        from distributed import Client

        if self._report is None:
            raise ClusterError("the gateway cluster is not running")
        # The gateway comm (gateway://) is registered by importing dask_gateway.
        return Client(self._report.scheduler_address, security=self._report.security, **kwargs)

    @property
    def cluster_name(self) -> str | None:
        return self._name

    @property
    def scheduler_address(self) -> str | None:
        return self._report.scheduler_address if self._report is not None else None

    @property
    def dashboard_link(self) -> str | None:
        # Through the gateway's proxy: {public_address}/clusters/<name>/status
        return self._report.dashboard_link if self._report is not None else None

    def _require_session(self) -> GatewaySession:
        if self._session is None or self._name is None:
            raise ClusterError("the gateway cluster is not running")
        if self._attached:
            raise NotOwned(
                f"gateway cluster {self._name} was connected, not started, by this process"
            )
        return self._session

    def scale(self, n: int) -> None:
        remark = self._require_session().scale(self._name, n)
        self._requested, self._adaptive = n, False
        self._remark(remark)

    def adapt(self, minimum: int, maximum: int, **kwargs: Any) -> None:
        if kwargs:
            logger.info(
                "the gateway decides adaptive timing itself; ignoring %s", ", ".join(sorted(kwargs))
            )
        remark = self._require_session().adapt(self._name, minimum, maximum)
        self._requested, self._adaptive = minimum, True
        self._remark(remark)

    def _remark(self, remark: str | None) -> None:
        """The gateway granted less than asked (its per-cluster limits): say so where the user
        is."""
        if remark:
            match = re.search(r"[Ss]caling to (\d+)", remark)
            if match and not self._adaptive:
                self._requested = int(match.group(1))  # no pending rows for workers that never come
            warnings.warn(
                f"gateway cluster {self._name}: {remark}", GatewayLimitWarning, stacklevel=3
            )
            logger.warning("gateway cluster %s: %s", self._name, remark)

    def pending_workers(self, connected: dict[str, dict]) -> list[dict]:
        if self._adaptive or self._report is None:
            return []
        missing = max(self._requested - len(connected), 0)
        return [worker_row(name=f"pending-{i}", status="pending") for i in range(missing)]

    def close(self, timeout: float = 20) -> None:
        """Shut the gateway cluster down (if ours) and wait until the gateway says it is gone."""
        session, self._session = self._session, None
        name, self._name = self._name, None
        self._report = None
        if session is None:
            return
        try:
            if name is not None and not self._attached:
                session.stop(name, timeout=timeout)
            self._release_reaper()  # not when stopping failed: it tries again when we die
        finally:
            session.close()

    def _release_reaper(self) -> None:
        reaper, self._reaper = self._reaper, None
        if reaper is not None:
            reaper.release()

    def disconnect(self) -> None:
        """Forget an attached cluster without stopping it."""
        session, self._session = self._session, None
        self._report = None
        if session is not None:
            session.close()

    def discovery_info(self) -> dict[str, Any]:
        opts = self.spec.options
        session = self._session
        return {
            "cluster_name": self._name,
            "address": session.address if session else opts.get("address"),
            "proxy_address": session.gateway.proxy_address
            if session and session.gateway
            else opts.get("proxy_address"),
            "public_address": opts.get("public_address"),
            "auth": auth_description(opts.get("auth")),
        }

    # -- other processes' clusters ------------------------------------------------------
    @classmethod
    def attach(cls, target: str, env=None) -> GatewayBackend:
        """``gateway://NAME``, ``gateway://PROFILE/NAME`` or ``gateway://HOST:PORT/NAME``."""
        spec, name, session = find_cluster(target)
        return cls._attached_backend(spec, name, session)

    @classmethod
    def attach_record(cls, record: dict[str, Any]) -> GatewayBackend:
        spec = spec_for_record(record)
        return cls._attached_backend(spec, record["backend_info"]["cluster_name"], None)

    @classmethod
    def _attached_backend(
        cls, spec: ClusterSpec, name: str, session: GatewaySession | None
    ) -> GatewayBackend:
        backend = cls(spec, environment_for(spec))
        backend._attached, backend._name, backend._session = True, name, session
        return backend

    @classmethod
    def list_remote(cls, spec: ClusterSpec, timeout: float = 2.0) -> list[dict[str, Any]]:
        """Records of the clusters this profile's user has on its gateway (running or starting)."""
        backend = cls(spec, None)  # type: ignore[arg-type]
        with backend._open_session() as session:
            session.timeout = min(session.timeout, timeout)
            reports = session.clusters(ACTIVE_STATES)
            info = {
                **backend.discovery_info(),
                "address": session.address,
                "proxy_address": session.gateway.proxy_address,
            }
            return [remote_record(spec, session, info, report) for report in reports]

    @classmethod
    def stop_record(cls, record: dict[str, Any], timeout: float = 30) -> bool:
        """Shut down a gateway cluster found in a discovery or remote record."""
        spec = spec_for_record(record)
        backend = cls(spec, None)  # type: ignore[arg-type]
        with backend._open_session() as session:
            session.stop(record["backend_info"]["cluster_name"], timeout=timeout)
        return True


def _fill(server_options: Any, spec: ClusterSpec, send: dict[str, str], address: str):
    return fill_options(
        server_options,
        spec.options.get("options") or {},
        send,
        address=address,
        key=f"profiles.{spec.profile}.options",
        source_of=lambda name: spec.origin_of(f"options.{name}"),
    )
