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
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlparse

from . import discovery
from .config import Config, load_config
from .environment import WorkerEnvironment, mpi_rank, redact_text, secret_values, worker_environment
from .errors import ClusterError, NotOwned, PipejupyterError, UnknownCluster
from .models import ClusterSpec, ClusterStatus, cluster_model, worker_row

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


def _owner() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "kind": OWNER_KIND}


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


def _processing(metrics: Mapping[str, Any]) -> int:
    counts = metrics.get("task_counts") or {}
    return int(sum(counts.get(k, 0) for k in ("executing", "ready", "constrained")))


class ClusterHandle:
    """One cluster started or connected by this process."""

    def __init__(self, spec: ClusterSpec, backend, name: str, *, owned: bool = True, label: str | None = None):
        self.id = uuid.uuid4().hex[:12]
        self.spec = spec
        self.backend = backend
        self.name = name
        self.owned = owned
        self.backend_label = label or spec.backend
        self.status = ClusterStatus.STARTING
        self.error: str | None = None
        self.client = None
        self.started = time.time()
        self.adapt_range: dict[str, int] | None = None
        self.owner = _owner()
        self._dashboard: str | None = None
        self._secrets = secret_values(backend.env.variables, backend.env.redact) if backend.env else []
        self._secrets += backend.secret_values()

    # -- reading ------------------------------------------------------------------
    def __repr__(self) -> str:
        return f"<ClusterHandle {self.name!r} id={self.id} backend={self.backend_label} status={self.status}>"

    @property
    def scheduler_address(self) -> str | None:
        return self.backend.scheduler_address

    @property
    def dashboard_link(self) -> str | None:
        return self._dashboard or self.backend.dashboard_link

    def _identity(self, timeout: float) -> dict[str, Any]:
        return self.client.sync(self.client.scheduler.identity, callback_timeout=timeout)

    def model(self, timeout: float = 2.0) -> dict[str, Any]:
        """The JSON model (docs/wire-format.md). A scheduler that does not answer is 'lost'."""
        rows: list[dict[str, Any]] = []
        if self.client is not None and self.status in (ClusterStatus.RUNNING, ClusterStatus.LOST, ClusterStatus.STARTING):
            try:
                identity = self._identity(timeout)
            except Exception as exc:  # any failure to reach the scheduler means lost, not a crash
                # Only a running cluster becomes lost (a concurrent stop() must stay stopped).
                if self.status in (ClusterStatus.RUNNING, ClusterStatus.LOST):
                    self.status = ClusterStatus.LOST
                    self.error = self._safe(f"scheduler not reachable: {type(exc).__name__}: {exc}")
            else:
                if self.status is ClusterStatus.LOST:
                    self.status, self.error = ClusterStatus.RUNNING, None
                rows = [
                    worker_row(
                        name=str(info.get("name", address)),
                        address=address,
                        host=info.get("host"),
                        threads=info.get("nthreads", 0),
                        memory_used=(info.get("metrics") or {}).get("memory", 0),
                        memory_limit=info.get("memory_limit", 0),
                        processing=_processing(info.get("metrics") or {}),
                        status=str(info.get("status", "running")).replace("Status.", ""),
                    )
                    for address, info in (identity.get("workers") or {}).items()
                ]
                rows.sort(key=_natural)
                if self._dashboard is None and self.backend.dashboard_link is None:
                    self._dashboard = _dashboard_from_identity(identity, self.scheduler_address)
        if self.status in (ClusterStatus.RUNNING, ClusterStatus.STARTING) and self.owned:
            try:
                rows += self.backend.pending_workers({r["name"]: r for r in rows})
            except Exception as exc:  # pending rows are a nicety; never fail the model
                logger.debug("pending_workers failed: %s", exc)
        return cluster_model(
            id=self.id,
            name=self.name,
            backend=self.backend_label,
            profile=self.spec.profile,
            status=self.status,
            scheduler_address=self.scheduler_address,
            dashboard_link=self.dashboard_link,
            worker_info=rows,
            adapt=self.adapt_range,
            owner=self.owner,
            started=self.started,
            error=self.error,
        )

    def record(self) -> dict[str, Any]:
        """What the discovery file holds: the model without live worker rows."""
        return {
            "id": self.id,
            "name": self.name,
            "backend": self.backend_label,
            "profile": self.spec.profile,
            "status": str(self.status),
            "scheduler_address": self.scheduler_address,
            "dashboard_link": self.dashboard_link,
            "adapt": self.adapt_range,
            "workers_requested": self.spec.workers,
            "owner": self.owner,
            "started": self.started,
            "backend_info": self.backend.discovery_info(),
        }

    def _safe(self, text: str) -> str:
        return redact_text(text, self._secrets)

    # -- driving ------------------------------------------------------------------
    def _require_owned(self, action: str) -> None:
        if not self.owned:
            raise NotOwned(f"cannot {action} {self.name!r}: it was connected, not started, by this process")
        if self.status in (ClusterStatus.STOPPED, ClusterStatus.STOPPING, ClusterStatus.FAILED):
            raise ClusterError(f"cannot {action} {self.name!r}: it is {self.status}")

    def scale(self, n: int) -> None:
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ClusterError(f"scale needs an integer >= 0, got {n!r}")
        self._require_owned("scale")
        self.backend.scale(n)
        self.adapt_range = None
        self.spec.workers = n
        self._publish()

    def adapt(self, minimum: int, maximum: int, **kwargs: Any) -> None:
        for label, value in (("minimum", minimum), ("maximum", maximum)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ClusterError(f"adapt {label} must be an integer >= 0, got {value!r}")
        if minimum > maximum:
            raise ClusterError(f"adapt minimum {minimum} is above maximum {maximum}")
        self._require_owned("adapt")
        self.backend.adapt(minimum, maximum, **kwargs)
        self.adapt_range = {"minimum": minimum, "maximum": maximum}
        self._publish()

    def wait_for_workers(self, n: int, timeout: float | None = None) -> None:
        if n <= 0:
            return
        try:
            self.client.wait_for_workers(n, timeout=timeout)
        except TimeoutError:
            model = self.model()
            pending = [w for w in model["worker_info"] if w["status"] == "pending"]
            detail = ""
            if pending:
                states = ", ".join(f"{w['name']}: {w.get('job_state') or 'pending'}" for w in pending[:5])
                detail = f"; still waiting for {states}"
            raise ClusterError(
                f"only {model['workers']} of {n} workers connected within {timeout:g} s{detail}"
            ) from None

    def logs(self, worker: str | None = None, *, scheduler: bool = False, lines: int | None = 50) -> dict[str, list[str]]:
        """Recent log lines by source (``scheduler``, worker name, job output files)."""
        if self.client is None:
            raise ClusterError(f"{self.name!r} has no client (status {self.status})")
        n = lines or 10_000
        out: dict[str, list[str]] = {}
        if scheduler:
            out["scheduler"] = [f"{lvl} {msg}" for lvl, msg in self.client.get_scheduler_logs(n=n)]
        if not scheduler or worker:
            model = self.model()
            addresses = {w["address"]: w["name"] for w in model["worker_info"] if w["address"]}
            wanted = [a for a, nm in addresses.items() if worker in (None, a, nm)]
            if worker and not wanted and not any(w["name"] == worker for w in model["worker_info"]):
                raise UnknownCluster(f"no worker {worker!r}; workers: {', '.join(addresses.values()) or 'none'}")
            if wanted:
                got = self.client.get_worker_logs(n=n, workers=wanted)
                for address, entries in got.items():
                    out[f"worker {addresses.get(address, address)}"] = [f"{lvl} {msg}" for lvl, msg in entries]
            if self.owned:
                for source, text in self.backend.logs(self.client, lines).items():
                    if worker in (None, source) or (worker and worker in source):
                        out[source] = text
        return {k: [self._safe(line) for line in v] for k, v in out.items()}

    def stop(self, timeout: float = 20) -> None:
        """Stop the cluster (or, when only connected, disconnect). Idempotent."""
        if self.status in (ClusterStatus.STOPPED,):
            return
        self.status = ClusterStatus.STOPPING
        errors = self._teardown(timeout)
        self.status = ClusterStatus.STOPPED
        if errors:
            self.error = self._safe("; ".join(errors))
            logger.warning("while stopping %s: %s", self.name, self.error)

    def _teardown(self, timeout: float) -> list[str]:
        errors = []
        if self.client is not None:
            try:
                self.client.close(timeout=min(timeout, 10))
            except Exception as exc:
                errors.append(f"client: {exc}")
        if self.owned:
            try:
                self.backend.close(timeout=timeout)
            except Exception as exc:
                errors.append(f"cluster: {exc}")
            discovery.remove(self.id)
        else:
            try:
                self.backend.disconnect()
            except Exception as exc:
                errors.append(f"disconnect: {exc}")
        with _lock:
            _registry.pop(self.id, None)
        return errors

    def _publish(self) -> None:
        if self.owned:
            try:
                discovery.write(self.record())
            except OSError as exc:  # discovery is best-effort; the cluster still works
                logger.warning("cannot write discovery file: %s", exc)


def _natural(row: Mapping[str, Any]) -> tuple:
    name = row["name"]
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


def _dashboard_from_identity(identity: Mapping[str, Any], address: str | None) -> str | None:
    port = (identity.get("services") or {}).get("dashboard")
    if not port or not address:
        return None
    host = urlparse(address).hostname or "127.0.0.1"
    return f"http://{host}:{port}/status"


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
        raise ClusterError(f"cannot shut down {record['name']!r} at {record['scheduler_address']}: {exc}") from exc
    discovery.remove(record["id"])
    return record


@atexit.register
def _stop_at_exit() -> None:
    if _registry:
        stop_all(timeout=5)
