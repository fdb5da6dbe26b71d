"""Cluster lifecycle: start, connect, scale, adapt, stop, describe; discovery; cleanup.

The only place that creates Clients and owns cluster handles. Faces (magics, widgets,
REST handlers, CLI) call these functions and show what they return.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from . import discovery
from .config import Config, load_config
from .environment import WorkerEnvironment, mpi_rank, worker_environment
from .errors import ClusterError, PipejupyterError, UnknownCluster
from .failed_client import release_failed_client
from .handle import ClusterHandle
from .models import ClusterSpec, ClusterStatus

logger = logging.getLogger(__name__)

#: who owns clusters started by this process: kernel | server | cli | script
OWNER_KIND = "script"
DEFAULT_TIMEOUT = 120.0
DIRECT_SCHEMES = ("tcp", "tls", "ws", "wss", "inproc", "ucx")
_registry: dict[str, ClusterHandle] = {}
_lock = threading.RLock()


def set_owner_kind(kind: str) -> None:
    global OWNER_KIND
    OWNER_KIND = kind


def guard() -> None:
    """Refuse to start clusters where it would multiply them (like the CASA pipeline)."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        worker = None
    if worker is not None:
        raise ClusterError(
            f"refusing to start a cluster from inside Dask worker {worker.name!r}: "
            "start clusters from the notebook or script, not from a task"
        )
    rank = mpi_rank()
    if rank not in (None, 0):
        raise ClusterError(
            f"refusing to start a cluster from MPI rank {rank}: only rank 0 starts clusters "
            "(every rank would start its own otherwise)"
        )


def forget(cluster_id: str) -> None:
    """Drop a handle from the registry (called by the handle once torn down)."""
    with _lock:
        _registry.pop(cluster_id, None)


# -- resolving ------------------------------------------------------------------------


def _config(config: Config | str | os.PathLike | Iterable | None, overrides, profile: str | None) -> Config:
    if isinstance(config, Config):
        if overrides:
            items = overrides.items() if isinstance(overrides, Mapping) else None
            for item in items or overrides:
                if isinstance(item, tuple):
                    config.set_value(item[0], item[1], profile)
                else:
                    config.override(item, profile)
            config.validate()
        return config
    return load_config(config, overrides, profile=profile)


def prepare(
    profile: str | None = None,
    *,
    workers: int | None = None,
    adapt: tuple[int, int] | Mapping[str, int] | None = None,
    config: Config | str | os.PathLike | Iterable | None = None,
    overrides: Iterable[str] | Mapping[str, Any] | None = None,
):
    """Resolve and validate everything a start needs; starts nothing.

    Returns ``(spec, backend)`` where backend is an unstarted backend instance.
    """
    from .backends import get_backend

    cfg = _config(config, overrides, profile)
    spec = cfg.resolve(profile, workers=workers, adapt=adapt)
    backend_cls = get_backend(spec.backend)
    env = environment_for(spec)
    return spec, backend_cls(spec, env)


def environment_for(spec: ClusterSpec) -> WorkerEnvironment:
    env = worker_environment(spec.env, spec.mpi)
    if spec.casaconfig:
        # CASA settings ride along as one variable that the workers' CASA set-up reads.
        env.variables["PIPEJUPYTER_CASACONFIG"] = json.dumps(spec.casaconfig, sort_keys=True)
        env.explicit.append("PIPEJUPYTER_CASACONFIG")
    return env


def dry_run(profile: str | None = None, **kwargs: Any) -> str:
    """The resolved spec (and, for batch backends, the job script) as text; starts nothing."""
    spec, backend = prepare(profile, **kwargs)
    return backend.dry_run()


def _unique_name(base: str) -> str:
    with _lock:
        taken = {h.name for h in _registry.values()}
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


def start(
    profile: str | None = None,
    *,
    workers: int | None = None,
    adapt: tuple[int, int] | Mapping[str, int] | None = None,
    config: Config | str | os.PathLike | Iterable | None = None,
    overrides: Iterable[str] | Mapping[str, Any] | None = None,
    name: str | None = None,
    wait: bool = True,
    timeout: float | None = None,
    set_default: bool = True,
) -> ClusterHandle:
    """Start a cluster from a profile and return its handle (with ``.client``).

    Everything is validated before anything starts; if any step fails, whatever was
    started is stopped again before the error is raised.
    """
    import dask

    spec, backend = prepare(profile, workers=workers, adapt=adapt, config=config, overrides=overrides)
    backend.check_dependencies()
    guard()
    with _lock:
        if name and any(h.name == name for h in _registry.values()):
            raise ClusterError(f"a cluster named {name!r} is already running in this process")
        handle = ClusterHandle(spec, backend, name or _unique_name(spec.profile), owned=backend.owns_cluster)
        _registry[handle.id] = handle
        backend.record_id = handle.id
    timeout = timeout if timeout is not None else (spec.wait_timeout or DEFAULT_TIMEOUT)
    try:
        with dask.config.set(spec.dask_config or {}):
            backend.start()
            handle.client = backend.make_client(set_as_default=set_default, timeout=min(timeout, 60))
            if backend.owns_cluster:
                if spec.adapt_kwargs:
                    adapt_kwargs = dict(spec.adapt_kwargs)
                    minimum = int(adapt_kwargs.pop("minimum", adapt_kwargs.pop("minimum_jobs", 0)) or 0)
                    maximum = int(adapt_kwargs.pop("maximum", adapt_kwargs.pop("maximum_jobs", minimum)) or minimum)
                    backend.adapt(minimum, maximum, **adapt_kwargs)
                    handle.adapt_range = {"minimum": minimum, "maximum": maximum}
                elif spec.workers is not None:
                    backend.scale(spec.workers)
        handle._publish()
        if wait:
            target = handle.adapt_range["minimum"] if handle.adapt_range else (spec.workers or 0)
            handle.wait_for_workers(target if backend.owns_cluster else 0, timeout)
        handle.status = ClusterStatus.RUNNING
        handle._publish()
        return handle
    except BaseException as exc:
        handle.status = ClusterStatus.FAILED
        handle._teardown(timeout=10)
        release_failed_client(exc)
        if isinstance(exc, PipejupyterError) or not isinstance(exc, Exception):
            raise
        raise ClusterError(handle._safe(f"starting {spec.profile!r} ({spec.backend}) failed: {type(exc).__name__}: {exc}")) from exc


def connect(target: str, *, name: str | None = None, set_default: bool = True, timeout: float = 10) -> ClusterHandle:
    """Attach to a running cluster: a scheduler address, ``backend://name``, or a discovered id/name."""
    from .backends import get_backend
    from .backends.address import AddressBackend

    with _lock:
        for handle in _registry.values():
            if target in (handle.id, handle.name):
                if set_default and handle.client is not None:
                    handle.client.as_current()
                    _set_default_client(handle.client)
                return handle
    label = "address"
    profile = None
    address = target
    if "://" in target and target.split("://", 1)[0] not in DIRECT_SCHEMES:
        backend_cls = get_backend(target.split("://", 1)[0])
        backend = backend_cls.attach(target, environment_for(ClusterSpec(profile="", backend=backend_cls.name)))
        handle = ClusterHandle(backend.spec, backend, name or _unique_name(backend.spec.profile or backend_cls.name), owned=False, label=backend_cls.name)
        address = None
    else:
        if "://" not in target and not _looks_like_host_port(target):
            record = discovery.find(target) or _find_remote(target)
            if record is None:
                known = [f"{r['name']} ({r['id']})" for r in discovery.read_all()]
                raise UnknownCluster(
                    f"no running cluster {target!r}; give a scheduler address (tcp://host:port) "
                    f"or one of: {', '.join(known) or 'none discovered'}"
                )
            backend_name = record.get("backend") or "address"
            backend_cls = None
            with contextlib.suppress(PipejupyterError):
                backend_cls = get_backend(backend_name)
            if hasattr(backend_cls, "attach_record") and record.get("backend_info"):
                # Errors propagate: a gateway address is no plain scheduler address to fall back on.
                backend = backend_cls.attach_record(record)
                handle = ClusterHandle(backend.spec, backend, name or _unique_name(record["name"]), owned=False, label=backend_name)
                return _finish_connect(handle, set_default, timeout)
            address = record["scheduler_address"]
            label = backend_name
            profile = record.get("profile")
            name = name or record["name"]
        spec = ClusterSpec(profile=profile or "", backend="address", options={"address": address})
        backend = AddressBackend(spec, environment_for(spec))
        handle = ClusterHandle(spec, backend, _unique_name(name or "connected"), owned=False, label=label)
    return _finish_connect(handle, set_default, timeout)


def _finish_connect(handle: ClusterHandle, set_default: bool, timeout: float) -> ClusterHandle:
    try:
        handle.backend.start()
        handle.client = handle.backend.make_client(set_as_default=set_default, timeout=timeout)
    except BaseException as exc:
        handle._teardown(timeout=5)
        release_failed_client(exc)
        if isinstance(exc, PipejupyterError) or not isinstance(exc, Exception):
            raise
        raise ClusterError(f"cannot connect to {handle.scheduler_address or handle.name}: {type(exc).__name__}: {exc}") from exc
    handle.status = ClusterStatus.RUNNING
    with _lock:
        _registry[handle.id] = handle
    return handle


def _set_default_client(client) -> None:
    with contextlib.suppress(Exception):
        from distributed.client import _set_global_client

        _set_global_client(client)


def _looks_like_host_port(target: str) -> bool:
    host, _, port = target.rpartition(":")
    return bool(host) and port.isdigit()


def get(key: str | None = None) -> ClusterHandle:
    """A handle of this process by id or name; without a key, the most recent one."""
    with _lock:
        handles = list(_registry.values())
    if key is None:
        live = [h for h in handles if h.status is not ClusterStatus.STOPPED]
        if not live:
            raise UnknownCluster("no cluster in this process; start one with pipejupyter.start() or %pipecluster start")
        return live[-1]
    for handle in handles:
        if key in (handle.id, handle.name):
            return handle
    names = ", ".join(h.name for h in handles) or "none"
    raise UnknownCluster(f"no cluster {key!r} in this process; clusters: {names}")


def use(key: str) -> ClusterHandle:
    """Make cluster ``key`` of this process the current one: its Client becomes Dask's
    default, and calls without a key (``get()``, ``%pipecluster scale N``) act on it."""
    handle = get(key)
    if handle.client is None or handle.status in (ClusterStatus.STOPPED, ClusterStatus.STOPPING, ClusterStatus.FAILED):
        raise ClusterError(f"cannot use {handle.name!r}: it is {handle.status}")
    with _lock:  # the registry is ordered: the last live handle is the current one
        _registry[handle.id] = _registry.pop(handle.id)
    _set_default_client(handle.client)
    return handle


def clusters() -> list[ClusterHandle]:
    """Handles started or connected by this process, oldest first."""
    with _lock:
        return list(_registry.values())


def list_clusters(*, discovered: bool = True, timeout: float = 2.0) -> list[dict[str, Any]]:
    """Models of this process's clusters, then records of clusters owned by other processes."""
    own = [h.model(timeout=timeout) for h in clusters()]
    if not discovered:
        return own
    seen = {m["id"] for m in own} | {m["scheduler_address"] for m in own if m["scheduler_address"]}
    others = []
    for record in [*discovery.read_all(), *_remote_records(timeout)]:
        if record["id"] in seen or record.get("scheduler_address") in seen:
            continue
        seen |= {record["id"], record.get("scheduler_address")}
        others.append(record)
    return own + others


def _remote_records(timeout: float) -> list[dict[str, Any]]:
    """Clusters that configured services (Dask Gateway) run for this user, each asked briefly.

    Backends with such services have a ``list_remote(spec, timeout)`` classmethod.
    """
    from .backends import backend_class_for_profile

    try:
        cfg = load_config()
    except PipejupyterError as exc:
        logger.debug("no remote clusters listed: %s", exc)
        return []
    records: list[dict[str, Any]] = []
    for name, body in cfg.profiles.items():
        backend_cls = backend_class_for_profile(body, strict=False)
        if backend_cls is None or not hasattr(backend_cls, "list_remote"):
            continue
        try:
            records += backend_cls.list_remote(cfg.resolve(name), timeout=timeout)
        except Exception as exc:  # an unreachable service must not break listing
            logger.debug("cannot list clusters of profile %s: %s", name, exc)
    return records


def _find_remote(key: str) -> dict[str, Any] | None:
    return next((r for r in _remote_records(2.0) if key in (r["id"], r["name"])), None)


def stop(key: str | None = None) -> ClusterHandle:
    handle = get(key)
    handle.stop()
    return handle


def stop_all(timeout: float = 20) -> list[str]:
    """Stop every cluster of this process; returns their names."""
    names = []
    for handle in reversed(clusters()):
        with contextlib.suppress(Exception):
            handle.stop(timeout=timeout)
        names.append(handle.name)
    return names


def stop_discovered(key: str) -> dict[str, Any]:
    """Shut down a cluster owned by another process (CLI ``stop ID``) via its scheduler."""
    from .backends import get_backend

    record = discovery.find(key) or _find_remote(key)
    if record is None:
        raise UnknownCluster(f"no running cluster {key!r}")
    backend_cls = None
    with contextlib.suppress(PipejupyterError):
        backend_cls = get_backend(record.get("backend") or "address")
    if hasattr(backend_cls, "stop_record") and record.get("backend_info"):
        backend_cls.stop_record(record)
        discovery.remove(record["id"])
        return record
    from distributed import Client

    try:
        with Client(record["scheduler_address"], timeout=10, set_as_default=False) as client:
            client.shutdown()
    except Exception as exc:
        release_failed_client(exc)
        raise ClusterError(f"cannot shut down {record['name']!r} at {record['scheduler_address']}: {exc}") from exc
    discovery.remove(record["id"])
    return record


@atexit.register
def _stop_at_exit() -> None:
    if _registry:
        stop_all(timeout=5)
