"""What the REST API does, without tornado: request checking, error codes, cluster lists.

The Jupyter server extension (pipejupyter/server) only decodes HTTP, calls these
functions off the event loop and writes what they return. Every call here may block
(starting a cluster takes seconds). Errors are ServiceError with the HTTP status and
the JSON body of docs/wire-format.md.
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, wait
from typing import Any

from pipejupyter.config.cache import load_config_cached
from pipejupyter.config.loader import OVERRIDE
from pipejupyter.environment.dashboard_links import ServerProxy, browser_model
from pipejupyter.errors import (
    ClusterError,
    ConfigError,
    LimitError,
    MissingDependency,
    NotOwned,
    PipejupyterError,
    UnknownCluster,
    did_you_mean,
)
from pipejupyter.lifecycle.discovery import is_cluster_id
from pipejupyter.lifecycle.handle import ClusterHandle
from pipejupyter.lifecycle.manager import ClusterManager
from pipejupyter.lifecycle.options import describe_options
from pipejupyter.models import ClusterStatus
from pipejupyter.server.watcher import PROBE_DEADLINE, DiscoveredClusters, Probes, record_model

START_KEYS = ("profile", "workers", "adapt", "overrides")
SCALE_KEYS = ("workers", "adapt")
ADAPT_KEYS = ("minimum", "maximum")

#: the largest request body the API reads, in bytes; a larger one is answered 413 unread
MAX_BODY_BYTES = 1 << 20
#: how deeply a request body's JSON may nest (arrays and objects)
MAX_JSON_DEPTH = 32
#: how many keys "overrides" may hold in one request
#: the configuration key that bounds worker counts (never settable by a request)
LIMIT_KEY = "max_workers"
MAX_OVERRIDES = 1000
#: configuration warnings listed one by one per profile (and for the whole config); the
#: rest are counted in ``warnings_more``, so a hostile file cannot bloat the profile list
MAX_WARNINGS = 20
#: characters kept of one warning (a repeated key's path may be as long as the file allows)
MAX_WARNING_CHARS = 500
#: warning texts in one profile list as a whole: file-level warnings apply to every profile,
#: so without this a file with thousands of profiles would repeat them thousands of times
MAX_WARNINGS_TOTAL = 200


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
    if isinstance(exc, LimitError):  # a count above max_workers: the request is wrong
        return ServiceError(400, str(exc), key=exc.key, source=exc.source)
    if isinstance(exc, ConfigError) and exc.source == OVERRIDE:
        # A value the request itself sent (an override, an options form's choice): 400.
        return ServiceError(400, str(exc), key=exc.key, source=exc.source)
    if isinstance(exc, ConfigError):  # what the configuration files say: 422
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
    """The JSON object of a request body, or a 400 (a 413 when over MAX_BODY_BYTES).

    Bounded: at most MAX_BODY_BYTES are parsed, nested at most MAX_JSON_DEPTH levels (a
    deeper body is a 400, never a RecursionError here or later in the config code).
    """
    if isinstance(body, Mapping):
        data: Any = dict(body)
    else:
        if body is not None and len(body) > MAX_BODY_BYTES:
            raise body_too_large(len(body))
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else (body or "")
        if not text.strip():
            raise ServiceError(400, "the request body is empty; send a JSON object")
        try:
            data = json.loads(text)
        except RecursionError:  # the parser gave up before MAX_JSON_DEPTH could be checked
            raise _too_deep() from None
        except ValueError as exc:
            raise ServiceError(400, f"the request body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ServiceError(
            400, f"the request body must be a JSON object, not {type(data).__name__}"
        )
    if _nested_deeper_than(data, MAX_JSON_DEPTH):
        raise _too_deep()
    return data


def body_too_large(size: int | None = None) -> ServiceError:
    """The 413 for a request body over MAX_BODY_BYTES; ``size`` is its length when known."""
    what = f"{size} bytes" if size is not None else f"over {MAX_BODY_BYTES} bytes"
    return ServiceError(
        413,
        f"the request body is {what}; the pipejupyter API reads at most {MAX_BODY_BYTES} bytes "
        "(MAX_BODY_BYTES in pipejupyter/server/service.py)",
    )


def _too_deep() -> ServiceError:
    return ServiceError(
        400,
        f"the request body is nested more than {MAX_JSON_DEPTH} levels deep "
        "(arrays and objects; MAX_JSON_DEPTH in pipejupyter/server/service.py)",
    )


def _nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether arrays and objects in ``value`` nest more than ``limit`` levels (level by
    level, without recursion: linear in the size of ``value``)."""
    level = [value] if isinstance(value, (dict, list)) else []
    for _ in range(limit):
        if not level:
            return False
        level = [
            child
            for container in level
            for child in (container.values() if isinstance(container, dict) else container)
            if isinstance(child, (dict, list))
        ]
    return bool(level)


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
    overrides = _overrides(data.get("overrides"))
    return {"profile": profile, **_sizing(data, required=False), "overrides": overrides or None}


def _overrides(value: Any) -> dict[str, Any]:
    """The "overrides" of a start request: null or an object of at most MAX_OVERRIDES
    non-empty "key.path" keys. Any other type is a 400, also the falsy ones ([], 0, "")."""
    if value is None:
        return {}
    shape = 'overrides must be an object {"key.path": value}'
    if not isinstance(value, dict):
        raise ServiceError(400, f"{shape}, got {_shown(value)}", key="overrides")
    if len(value) > MAX_OVERRIDES:
        raise ServiceError(
            400,
            f"overrides has {len(value)} keys; at most {MAX_OVERRIDES} are accepted in one "
            "request (MAX_OVERRIDES in pipejupyter/server/service.py); put the settings "
            "in a profile instead",
            key="overrides",
        )
    for key, setting in value.items():
        if not isinstance(key, str) or not key.strip():
            raise ServiceError(
                400, f"{shape} with non-empty keys, got key {_shown(key)}", key="overrides"
            )
        if key.strip().split(".")[-1] == LIMIT_KEY or _mentions(setting, LIMIT_KEY):
            # The limit protects this server: a request may not raise it for itself.
            raise ServiceError(
                400,
                f"overrides may not set {LIMIT_KEY} (got it in {key!r}); the limit on worker "
                "counts belongs to the server's configuration files",
                key=f"overrides.{key}",
            )
    return value


def _mentions(value: Any, name: str) -> bool:
    """True when a nested mapping in ``value`` has the key ``name`` (no recursion)."""
    pending = [value]
    while pending:
        current = pending.pop()
        if isinstance(current, dict):
            if name in current:
                return True
            pending.extend(current.values())
        elif isinstance(current, list):
            pending.extend(current)
    return False


def _shown(value: Any, limit: int = 60) -> str:
    """``value`` as JSON for an error message, cut to ``limit`` characters."""
    text = json.dumps(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def parse_scale(body: bytes | str | Mapping | None) -> dict[str, Any]:
    """Check a PATCH /clusters/{id} body -> {"workers": n} or {"adapt": {...}}."""
    data = decode_body(body)
    _check_keys(data, SCALE_KEYS, "the request body")
    return _sizing(data, required=True)


# -- profiles ------------------------------------------------------------------------


def profile_list(config: Any = None) -> dict[str, Any]:
    """GET /profiles: every configured profile, resolved, with where its values came from."""

    try:
        # The sidebar polls: read and validate the chain again only when a file changed.
        cfg = load_config_cached(config)
    except PipejupyterError as exc:
        raise http_error(exc) from None
    listing = {
        "default": cfg.default_profile,
        **bounded_warnings(cfg.warnings),
        "profiles": [profile_model(cfg, name) for name in cfg.profile_names],
    }
    _within_total(listing, MAX_WARNINGS_TOTAL)
    return listing


def _within_total(listing: dict[str, Any], total: int) -> None:
    """Keep at most ``total`` warning texts in the whole listing (the config's own first, then
    the profiles' in order); the texts dropped from a model are added to its
    ``warnings_more``, so every count stays true."""
    budget = total
    for model in (listing, *listing["profiles"]):
        shown = model.get("warnings") or []
        if len(shown) > budget:
            model["warnings_more"] = model.get("warnings_more", 0) + len(shown) - budget
            model["warnings"] = shown[:budget]
        budget -= len(model.get("warnings") or [])


def bounded_warnings(warnings: list[str]) -> dict[str, Any]:
    """``{"warnings": [...], "warnings_more": n}``: at most MAX_WARNINGS texts (each cut to
    MAX_WARNING_CHARS), in order, and how many were left out."""
    shown = [
        text if len(text) <= MAX_WARNING_CHARS else text[: MAX_WARNING_CHARS - 3] + "..."
        for text in map(str, warnings[:MAX_WARNINGS])
    ]
    return {"warnings": shown, "warnings_more": max(len(warnings) - MAX_WARNINGS, 0)}


def profile_options(name: str, config: Any = None) -> dict[str, Any]:
    """GET /profiles/{name}/options: the options form of one profile (lifecycle/options.py)."""
    try:
        cfg = load_config_cached(config)
        if name not in cfg.profiles:
            raise ServiceError(
                404,
                f"no profile {name!r}",
                key="profile",
                source=did_you_mean(name, cfg.profile_names),
            )
        return describe_options(cfg, name)
    except PipejupyterError as exc:
        raise http_error(exc) from None


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
            **bounded_warnings(cfg.warnings),
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
        # What starting it would raise as ConfigWarning: the profile's own first (e.g. a
        # network interface this machine lacks), so many file-level ones cannot hide them.
        **bounded_warnings(_own_first(spec.warnings, cfg.warnings)),
    }


def _own_first(warnings: list[str], config_wide: list[str]) -> list[str]:
    shared = set(config_wide)
    return [w for w in warnings if w not in shared] + [w for w in warnings if w in shared]


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

    #: threads asking this server's own schedulers for their models (see list())
    OWN_PROBE_THREADS = 4

    def __init__(
        self,
        manager: ClusterManager | None = None,
        owner_label: Callable[[Mapping[str, Any]], str | None] | None = None,
        proxy: ServerProxy | None = None,
    ) -> None:
        self.manager = manager or ClusterManager("server")
        #: the server's jupyter-server-proxy: dashboard links in models go through it
        self.proxy = proxy
        self.discovered = DiscoveredClusters(self.manager)
        self._owner_label = owner_label
        # Models of our own clusters ask their schedulers too: threads of their own, so
        # discovered schedulers that hang cannot crowd them out.
        self._own_probes = Probes(threads=self.OWN_PROBE_THREADS)

    # -- reading --------------------------------------------------------------------
    def own(self) -> list[ClusterHandle]:
        """Clusters this process started (also while they are starting); the watching
        connections to discovered clusters are not owned and so never counted."""
        return [h for h in self.manager.clusters() if h.owned]

    def list(self, timeout: float = 2.0, deadline: float = PROBE_DEADLINE) -> dict[str, Any]:
        """GET /clusters: this server's clusters, then the discovered ones (live).

        Answers within about ``deadline`` seconds (plus reading the discovery files): every
        scheduler is asked at once, and one that has not answered by then is listed as
        unreachable. ``timeout``: what one scheduler call may take, in the background.
        """
        started = time.monotonic()
        own = self.own()
        asked = self._own_probes.run(
            {h.id: functools.partial(h.model, timeout=timeout) for h in own}, 0
        )
        skip = {h.id for h in own} | {h.scheduler_address for h in own if h.scheduler_address}
        others = self.discovered.models(
            self.discovered.records(skip), timeout=timeout, deadline=deadline
        )
        wait(asked.values(), timeout=max(0.0, deadline - (time.monotonic() - started)))
        models = [self._own_model(h, asked[h.id], deadline) for h in own] + others
        return {"clusters": [self._shown(m) for m in models]}

    def get(self, cluster_id: str, deadline: float = PROBE_DEADLINE) -> dict[str, Any]:
        """GET /clusters/{id}."""
        handle = self._own_handle(cluster_id)
        if handle is not None:
            asked = self._own_probes.run({handle.id: handle.model}, deadline)
            return self._shown(self._own_model(handle, asked[handle.id], deadline))
        return self._shown(self.discovered.model(self._record(cluster_id), deadline=deadline))

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
        return self._shown(handle.model())

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
        return self._shown(handle.model())

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
    def _shown(self, model: dict[str, Any]) -> dict[str, Any]:
        """``model`` with the dashboard link a browser of this server opens."""
        return browser_model(model, self.proxy)

    def _own_handle(self, cluster_id: str) -> ClusterHandle | None:
        return next((h for h in self.own() if h.id == cluster_id), None)

    def _record(self, cluster_id: str) -> dict[str, Any]:
        if is_cluster_id(cluster_id):  # anything else names no discovery file
            for record in self.discovered.records({h.id for h in self.own()}):
                if record["id"] == cluster_id:
                    return record
        raise ServiceError(404, f"no cluster {cluster_id!r}; GET /pipejupyter/clusters lists them")

    @staticmethod
    def _own_model(handle: ClusterHandle, asked: Future, deadline: float) -> dict[str, Any]:
        """The model of one of our clusters, or (its scheduler did not answer in time) the
        model its discovery record gives: "unreachable", or "starting" while it starts."""
        if asked.done() and not asked.cancelled() and asked.exception() is None:
            return asked.result()
        error = (
            f"reading its model failed: {asked.exception()}"
            if asked.done() and not asked.cancelled()
            else f"the scheduler did not answer within {deadline:g} s"
        )
        return record_model(handle.record(), None, handle.safe(error))

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
