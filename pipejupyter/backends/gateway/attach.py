"""Gateway clusters that another process (or another day) started: find, describe, attach.

Credentials never travel with a cluster's name or discovery record, so attaching means
finding a configured gateway profile that can see the cluster: by profile name, by the
gateway's host:port (the form of a gateway scheduler address), or by asking every
gateway profile in turn.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlparse

from pipejupyter.backend_registry import backend_name_for_profile, get_backend
from pipejupyter.backends.gateway.session import GatewaySession, open_session
from pipejupyter.config.loader import load_config
from pipejupyter.errors import ClusterError, PipejupyterError, UnknownCluster
from pipejupyter.models import ClusterSpec

logger = logging.getLogger(__name__)

#: the cluster class every gateway backend (ours or a subclass) serves
GATEWAY_CLASS = "dask_gateway.GatewayCluster"


def gateway_profiles(cfg) -> list[ClusterSpec]:
    """Resolved specs of every profile served by the gateway backend, the default first."""
    names = sorted(cfg.profile_names, key=lambda n: n != cfg.default_profile)
    specs = []
    for name in names:
        try:
            backend = get_backend(backend_name_for_profile(cfg.profiles[name]))
            if backend.remote_clusters and GATEWAY_CLASS in backend.cluster_classes:
                specs.append(cfg.resolve(name))
        except PipejupyterError as exc:  # a broken profile must not hide the others
            logger.debug("skipping profile %s: %s", name, exc)
    return specs


def _netlocs(spec: ClusterSpec) -> set[str]:
    opts = spec.options
    address = urlparse(opts.get("address") or "")
    found = {address.netloc} if address.netloc else set()
    proxy = opts.get("proxy_address")
    if isinstance(proxy, int) and address.hostname:
        found.add(f"{address.hostname}:{proxy}")
    elif isinstance(proxy, str):
        found.add(urlparse(proxy).netloc or proxy)
    return found


def _adhoc(
    address: str | None, profile: str = "", auth: dict | None = None, **more: Any
) -> ClusterSpec:
    options = {"address": address, **{k: v for k, v in more.items() if v is not None}}
    if auth:
        options["auth"] = auth
    return ClusterSpec(profile=profile, backend="gateway", options=options, workers=0)


def find_cluster(target: str):
    """``(spec, cluster name, open session)`` for a ``gateway://...`` target."""
    import dask

    rest = target.split("://", 1)[1].strip("/")
    head, _, name = rest.rpartition("/")
    if not name:
        raise UnknownCluster(
            f"{target!r} names no cluster; use gateway://NAME or gateway://PROFILE/NAME"
        )
    cfg = load_config()
    if head and head in cfg.profiles:
        candidates = [cfg.resolve(head)]
        if candidates[0].backend != "gateway":
            raise ClusterError(
                f"profile {head!r} is not a gateway profile (backend {candidates[0].backend})"
            )
    elif head:
        candidates = [s for s in gateway_profiles(cfg) if head in _netlocs(s)] or [
            _adhoc(f"http://{head}")
        ]
    else:
        candidates = gateway_profiles(cfg)
        if not candidates and dask.config.get("gateway.address", None):
            candidates = [_adhoc(None)]
    asked: list[str] = []
    seen: list[str] = []
    errors: list[str] = []
    for spec in candidates:
        session = open_session(spec)
        asked.append(session.address)
        try:
            session.report(name)
        except UnknownCluster:
            try:
                seen += [r.name for r in session.clusters()]
            except ClusterError:
                pass
            session.close()
            continue
        except ClusterError as exc:
            session.close()
            if len(candidates) == 1:
                raise
            errors.append(str(exc))
            continue
        return spec, name, session
    error = unknown_cluster(name, asked, seen)
    if errors:
        error = UnknownCluster(f"{error}; could not ask: {'; '.join(errors)}")
    raise error


def spec_for_record(record: dict[str, Any]) -> ClusterSpec:
    """The configured profile that owns a record's gateway, else one built from the record."""
    info = record.get("backend_info") or {}
    address = (info.get("address") or "").rstrip("/")
    profile = record.get("profile") or ""
    try:
        cfg = load_config()
    except PipejupyterError:
        cfg = None
    if cfg is not None:
        specs = gateway_profiles(cfg)
        same = [s for s in specs if (s.options.get("address") or "").rstrip("/") == address]
        same.sort(key=lambda s: s.profile != profile)
        if same:
            return same[0]
    # Only names of variables travel in records; a literal password cannot be rebuilt.
    auth = {
        k: v
        for k, v in (info.get("auth") or {}).items()
        if k in ("type", "username", "password_env", "api_token_env")
    }
    return _adhoc(
        address or None,
        profile,
        auth or None,
        proxy_address=info.get("proxy_address"),
        public_address=info.get("public_address"),
    )


def remote_record(
    spec: ClusterSpec, session: GatewaySession, info: dict[str, Any], report: Any
) -> dict[str, Any]:
    """A gateway cluster report as a listing record (the shape of a discovery record)."""
    status = {"PENDING": "starting", "RUNNING": "running", "STOPPING": "stopping"}.get(
        report.status.name, "stopped"
    )
    return {
        "id": report.name,
        "name": report.name,
        "backend": "gateway",
        "profile": spec.profile,
        "status": status,
        "scheduler_address": report.scheduler_address
        or f"{session.gateway.proxy_address}/{report.name}",
        "dashboard_link": report.dashboard_link,
        "adapt": None,
        "workers_requested": None,
        "owner": {
            "kind": "gateway",
            "host": urlparse(session.address).hostname,
            "pid": None,
            "user": session.username,
        },
        "owner_alive": True,
        "started": report.start_time.timestamp() if report.start_time else None,
        "backend_info": {**info, "cluster_name": report.name},
    }


def unknown_cluster(name: str, asked: list[str], seen: list[str]) -> UnknownCluster:
    where = ", ".join(asked) or "no gateway (configure a profile with backend: gateway)"
    running = ", ".join(seen) or "none"
    return UnknownCluster(f"no gateway cluster {name!r} at {where}; running there: {running}")
