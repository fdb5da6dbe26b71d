"""What the REST API does, without tornado: request checking, error codes, cluster lists.

The Jupyter server extension (pipejupyter/server) only decodes HTTP, calls these
functions off the event loop and writes what they return. Every call here may block
(starting a cluster takes seconds). Errors are ServiceError with the HTTP status and
the JSON body of docs/wire-format.md.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping
from typing import Any

from pipejupyter.config.loader import load_config
from pipejupyter.errors import (
    ClusterError,
    ConfigError,
    MissingDependency,
    NotOwned,
    PipejupyterError,
    UnknownCluster,
    did_you_mean,
)
from pipejupyter.lifecycle.handle import ClusterHandle
from pipejupyter.lifecycle.manager import ClusterManager
from pipejupyter.models import ClusterStatus
from pipejupyter.server.watcher import DiscoveredClusters

START_KEYS = ("profile", "workers", "adapt", "overrides")
SCALE_KEYS = ("workers", "adapt")
ADAPT_KEYS = ("minimum", "maximum")


class ServiceError(PipejupyterError):
    """An error with its HTTP status; ``to_json()`` is the response body."""

    def __init__(
        self, status: int, message: str, *, key: str | None = None, source: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.key = key
        self.source = source

    def to_json(self) -> dict[str, Any]:
        return {"message": str(self), "key": self.key, "source": self.source}


def http_error(exc: PipejupyterError, *, starting: bool = False) -> ServiceError:
    """Map a core error to its HTTP status (a bug is not a PipejupyterError: that is a 500)."""
    if isinstance(exc, ServiceError):
        return exc
    if isinstance(exc, ConfigError):
        return ServiceError(422, str(exc), key=exc.key, source=exc.source)
    if isinstance(exc, MissingDependency):
        return ServiceError(422, str(exc))
    if isinstance(exc, UnknownCluster):
        return ServiceError(404, str(exc))
    if isinstance(exc, ClusterError) and starting and not isinstance(exc, NotOwned):
        return ServiceError(502, str(exc))  # the backend failed to bring the cluster up
    return ServiceError(409, str(exc))


# -- request bodies ------------------------------------------------------------------


def decode_body(body: bytes | str | Mapping | None) -> dict[str, Any]:
    """The JSON object of a request body, or a 400."""
    if isinstance(body, Mapping):
        return dict(body)
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else (body or "")
    if not text.strip():
        raise ServiceError(400, "the request body is empty; send a JSON object")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ServiceError(400, f"the request body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ServiceError(
            400, f"the request body must be a JSON object, not {type(data).__name__}"
        )
    return data


def _check_keys(data: Mapping[str, Any], accepted: tuple[str, ...], where: str) -> None:
    for key in data:
        if key not in accepted:
            hint = did_you_mean(key, accepted)
            raise ServiceError(
                400,
                f"unknown key {key!r} in {where}{f' (did you mean {hint!r}?)' if hint else ''}; "
                f"accepted: {', '.join(accepted)}",
                key=str(key),
            )


def _count(value: Any, key: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ServiceError(400, f"{key} must be an integer >= 0, got {json.dumps(value)}", key=key)
    return value


def _adapt(value: Any) -> dict[str, int]:
    if not isinstance(value, dict):
        raise ServiceError(400, 'adapt must be an object {"minimum": N, "maximum": M}', key="adapt")
    _check_keys(value, ADAPT_KEYS, "adapt")
    for key in ADAPT_KEYS:
        if key not in value:
            raise ServiceError(400, f"adapt needs {key}", key=f"adapt.{key}")
    minimum = _count(value["minimum"], "adapt.minimum")
    maximum = _count(value["maximum"], "adapt.maximum")
    if minimum > maximum:
        raise ServiceError(400, f"adapt minimum {minimum} is above maximum {maximum}", key="adapt")
    return {"minimum": minimum, "maximum": maximum}


def _sizing(data: Mapping[str, Any], *, required: bool) -> dict[str, Any]:
    if "workers" in data and "adapt" in data:
        raise ServiceError(400, "give either workers or adapt, not both", key="workers")
    if "workers" in data:
        return {"workers": _count(data["workers"], "workers")}
    if "adapt" in data:
        return {"adapt": _adapt(data["adapt"])}
    if required:
        raise ServiceError(400, 'give "workers": N or "adapt": {"minimum": N, "maximum": M}')
    return {}


def parse_start(body: bytes | str | Mapping | None) -> dict[str, Any]:
    """Check a POST /clusters body -> keyword arguments of ClusterManager.start()."""
    data = decode_body(body)
    _check_keys(data, START_KEYS, "the request body")
    profile = data.get("profile")
    if profile is not None and (not isinstance(profile, str) or not profile.strip()):
        raise ServiceError(
            400, f"profile must be a non-empty string, got {json.dumps(profile)}", key="profile"
        )
    overrides = data.get("overrides") or {}
    if not isinstance(overrides, dict) or not all(
        isinstance(k, str) and k.strip() for k in overrides
    ):
        raise ServiceError(400, 'overrides must be an object {"key.path": value}', key="overrides")
    return {"profile": profile, **_sizing(data, required=False), "overrides": overrides or None}


def parse_scale(body: bytes | str | Mapping | None) -> dict[str, Any]:
    """Check a PATCH /clusters/{id} body -> {"workers": n} or {"adapt": {...}}."""
    data = decode_body(body)
    _check_keys(data, SCALE_KEYS, "the request body")
    return _sizing(data, required=True)


# -- profiles ------------------------------------------------------------------------


def profile_list(config: Any = None) -> dict[str, Any]:
    """GET /profiles: every configured profile, resolved, with where its values came from."""

    try:
        cfg = load_config(config)
    except PipejupyterError as exc:
        raise http_error(exc) from None
    return {
        "default": cfg.default_profile,
        "profiles": [profile_model(cfg, name) for name in cfg.profile_names],
    }


#: cluster_kwargs keys that hold cores and memory per worker, by how backends spell them
_CORES_KEYS = ("threads_per_worker", "cores", "worker_cores", "nthreads")
_MEMORY_KEYS = ("memory_limit", "memory", "worker_memory")


def profile_model(cfg: Any, name: str) -> dict[str, Any]:
    """One ProfileModel; a profile that does not resolve is listed with its error."""
    try:
        spec = cfg.resolve(name)
    except PipejupyterError as exc:
        body = cfg.profiles[name] or {}
        kwargs = body.get("cluster_kwargs") or {}
        return {
            "name": name,
            "backend": body.get("backend") or body.get("cluster_class") or "",
            "cluster_class": body.get("cluster_class"),
            "workers": body.get("workers"),
            "adapt": body.get("adapt_kwargs"),
            "cores": _first(kwargs, _CORES_KEYS)[1],
            "memory": _first(kwargs, _MEMORY_KEYS)[1],
            "description": body.get("description") or "",
            "origin": {"profile": cfg.where(("profiles", name))},
            "error": str(exc),
        }
    cores_key, cores = _first(spec.cluster_kwargs, _CORES_KEYS)
    memory_key, memory = _first(spec.cluster_kwargs, _MEMORY_KEYS)
    adapt = spec.adapt_kwargs
    shown = {
        "profile": "",
        "backend": "backend",
        "cluster_class": "cluster_class",
        "workers": "workers",
        "adapt": "adapt_kwargs",
        "cores": f"cluster_kwargs.{cores_key}",
        "memory": f"cluster_kwargs.{memory_key}",
        "description": "description",
    }
    origin = {
        field: spec.origin_of(key) if key else cfg.where(("profiles", name))
        for field, key in shown.items()
    }
    return {
        "name": name,
        "backend": spec.backend,
        "cluster_class": spec.cluster_class,
        "workers": spec.workers,
        "adapt": {"minimum": adapt.get("minimum", 0), "maximum": adapt.get("maximum", 0)}
        if adapt
        else None,
        "cores": cores,
        "memory": memory,
        "description": spec.description,
        "origin": {k: v for k, v in origin.items() if v},
    }


def _first(kwargs: Mapping[str, Any], keys: tuple[str, ...]) -> tuple[str, Any]:
    for key in keys:
        if kwargs.get(key) is not None:
            return key, kwargs[key]
    return keys[0], None


# -- clusters ------------------------------------------------------------------------


class ClusterService:
    """Clusters of this server process plus live views of discovered ones.

    ``owner_label(owner) -> str | None`` lets the face name a kernel it knows
    (e.g. "kernel 5f2c... of this server") in the 409 answer for a cluster it does
    not own.
    """

    def __init__(
        self,
        manager: ClusterManager | None = None,
        owner_label: Callable[[Mapping[str, Any]], str | None] | None = None,
    ) -> None:
        self.manager = manager or ClusterManager("server")
        self.discovered = DiscoveredClusters(self.manager)
        self._owner_label = owner_label

    # -- reading --------------------------------------------------------------------
    def own(self) -> list[ClusterHandle]:
        """Clusters this process started (also while they are starting); the watching
        connections to discovered clusters are not owned and so never counted."""
        return [h for h in self.manager.clusters() if h.owned]

    def list(self, timeout: float = 2.0) -> dict[str, Any]:
        """GET /clusters: this server's clusters, then the discovered ones (live)."""
        own = self.own()
        models = [h.model(timeout=timeout) for h in own]
        skip = {h.id for h in own} | {h.scheduler_address for h in own if h.scheduler_address}
        models += self.discovered.models(self.discovered.records(skip), timeout=timeout)
        return {"clusters": models}

    def get(self, cluster_id: str) -> dict[str, Any]:
        """GET /clusters/{id}."""
        handle = self._own_handle(cluster_id)
        if handle is not None:
            return handle.model()
        return self.discovered.model(self._record(cluster_id))

    # -- driving --------------------------------------------------------------------
    def start(self, body: bytes | str | Mapping | None) -> dict[str, Any]:
        """POST /clusters: start a cluster owned by this server; its model once workers are up."""
        request = parse_start(body)
        try:
            handle = self.manager.start(
                request["profile"],
                workers=request.get("workers"),
                adapt=request.get("adapt"),
                overrides=request["overrides"],
                set_default=False,
            )
        except PipejupyterError as exc:
            raise http_error(exc, starting=True) from None
        return handle.model()

    def scale(self, cluster_id: str, body: bytes | str | Mapping | None) -> dict[str, Any]:
        """PATCH /clusters/{id}: {"workers": n} or {"adapt": {...}}."""
        sizing = parse_scale(body)
        handle = self._changeable(cluster_id, "scale")
        try:
            if "workers" in sizing:
                handle.scale(sizing["workers"])
            else:
                handle.adapt(sizing["adapt"]["minimum"], sizing["adapt"]["maximum"])
        except PipejupyterError as exc:
            raise http_error(exc) from None
        return handle.model()

    def stop(self, cluster_id: str) -> None:
        """DELETE /clusters/{id}."""
        handle = self._changeable(cluster_id, "stop")
        handle.stop()

    def shutdown(self, timeout: float = 10) -> list[str]:
        """Stop every cluster this server started and close the watching connections."""
        names = []
        for handle in reversed(self.own()):
            with contextlib.suppress(Exception):  # stop the others even if one fails
                handle.stop(timeout=timeout)
            names.append(handle.name)
        self.discovered.close()
        return names

    # -- internals ------------------------------------------------------------------
    def _own_handle(self, cluster_id: str) -> ClusterHandle | None:
        return next((h for h in self.own() if h.id == cluster_id), None)

    def _record(self, cluster_id: str) -> dict[str, Any]:
        for record in self.discovered.records({h.id for h in self.own()}):
            if record["id"] == cluster_id:
                return record
        raise ServiceError(404, f"no cluster {cluster_id!r}; GET /pipejupyter/clusters lists them")

    def _changeable(self, cluster_id: str, action: str) -> ClusterHandle:
        handle = self._own_handle(cluster_id)
        if handle is not None:
            if handle.status is ClusterStatus.STARTING:
                raise ServiceError(
                    409, f"cannot {action} {handle.name!r} yet: it is still starting"
                )
            return handle
        record = self._record(cluster_id)
        owner = record.get("owner") or {}
        who = (
            f"{owner.get('kind') or 'another process'} "
            f"(pid {owner.get('pid')} on {owner.get('host')})"
        )
        label = self._owner_label(owner) if self._owner_label else None
        if label:
            who += f", {label}"
        raise ServiceError(
            409,
            f"cannot {action} {record.get('name')!r}: it belongs to {who}, not to this server; "
            f"{action} it from there",
        )
