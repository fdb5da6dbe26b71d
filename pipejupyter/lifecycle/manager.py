"""ClusterManager: the clusters of one process - start, connect, find, list, stop.

The only place that creates cluster handles and their Clients. A process has one default
manager (``default_manager``, behind ``pipejupyter.start``, ``connect``, ...); the Jupyter
server holds its own, so its clusters are told apart from a kernel's. Faces (magics,
widgets, REST handlers, CLI) call a manager and show what it returns.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import warnings
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

from pipejupyter.backend_registry import backend_class_for_profile, get_backend
from pipejupyter.backends.address import AddressBackend
from pipejupyter.backends.base import Backend
from pipejupyter.config.loader import Config, load_config
from pipejupyter.environment.mpi import mpi_rank
from pipejupyter.environment.workers import environment_for
from pipejupyter.errors import ClusterError, ConfigWarning, PipejupyterError, UnknownCluster
from pipejupyter.lifecycle import discovery
from pipejupyter.lifecycle.client import make_default_client, release_failed_client
from pipejupyter.lifecycle.handle import ClusterHandle, owner_identity
from pipejupyter.lifecycle.options import describe_options, option_overrides
from pipejupyter.models import ClusterSpec, ClusterStatus

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 120.0
DIRECT_SCHEMES = ("tcp", "tls", "ws", "wss", "inproc", "ucx")
#: who owns the clusters a manager starts
OWNER_KINDS = ("kernel", "server", "cli", "script")

ConfigSource = Config | str | os.PathLike | Iterable | None
Overrides = Iterable[str] | Mapping[str, Any] | None


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


def resolve_config(config: ConfigSource, overrides: Overrides, profile: str | None) -> Config:
    """A validated Config from files (or a Config already loaded) plus overrides."""
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
    config: ConfigSource = None,
    overrides: Overrides = None,
    options: Any = None,
) -> tuple[ClusterSpec, Backend]:
    """Resolve and validate everything a start needs; starts nothing.

    ``options``: values chosen in an options form (or a mapping of option keys to values),
    applied as overrides after ``overrides``. Returns ``(spec, backend)`` where backend is
    an unstarted backend instance.
    """
    cfg = resolve_config(config, overrides, profile)
    chosen = option_overrides(options)
    if chosen:
        for key, value in chosen.items():
            cfg.set_value(key, value, profile)
        cfg.validate()
    spec = cfg.resolve(profile, workers=workers, adapt=adapt)
    backend_cls = get_backend(spec.backend)
    return spec, backend_cls(spec, environment_for(spec))


def profile_options(
    profile: str | None = None, *, config: ConfigSource = None, overrides: Overrides = None
) -> dict[str, Any]:
    """The options form of a profile (see lifecycle/options.py), prefilled from it."""
    return describe_options(resolve_config(config, overrides, profile), profile)


def dry_run(profile: str | None = None, **kwargs: Any) -> str:
    """The resolved spec (and, for batch backends, the job script) as text; starts nothing."""
    _, backend = prepare(profile, **kwargs)
    return backend.dry_run()


def remote_records(timeout: float) -> list[dict[str, Any]]:
    """Clusters that configured services (Dask Gateway) run for this user, each asked briefly."""
    try:
        cfg = load_config()
    except PipejupyterError as exc:
        logger.debug("no remote clusters listed: %s", exc)
        return []
    records: list[dict[str, Any]] = []
    for name, body in cfg.profiles.items():
        backend_cls = backend_class_for_profile(body, strict=False)
        if backend_cls is None or not backend_cls.remote_clusters:
            continue
        try:
            records += backend_cls.list_remote(cfg.resolve(name), timeout=timeout)
        except Exception as exc:  # an unreachable service must not break listing
            logger.debug("cannot list clusters of profile %s: %s", name, exc)
    return records


def find_record(key: str) -> dict[str, Any] | None:
    """The discovery record (or remote listing) of cluster ``key`` (id or name)."""
    return discovery.find(key) or next(
        (r for r in remote_records(2.0) if key in (r["id"], r["name"])), None
    )


def stop_discovered(key: str) -> dict[str, Any]:
    """Shut down a cluster owned by another process (CLI ``stop ID``) via its scheduler."""
    record = find_record(key)
    if record is None:
        raise UnknownCluster(f"no running cluster {key!r}")
    backend_cls: type[Backend] | None = None
    with contextlib.suppress(PipejupyterError):
        backend_cls = get_backend(record.get("backend") or "address")
    if backend_cls is not None and record.get("backend_info") and backend_cls.stop_record(record):
        discovery.remove(record["id"])
        return record
    from distributed import Client

    try:
        with Client(record["scheduler_address"], timeout=10, set_as_default=False) as client:
            client.shutdown()
    except Exception as exc:
        release_failed_client(exc)
        raise ClusterError(
            f"cannot shut down {record['name']!r} at {record['scheduler_address']}: {exc}"
        ) from exc
    discovery.remove(record["id"])
    return record


def _looks_like_host_port(target: str) -> bool:
    host, _, port = target.rpartition(":")
    return bool(host) and port.isdigit()


class ClusterManager:
    """The clusters one owner (a kernel, the Jupyter server, the CLI, a script) started or
    connected, newest last; the last live one is the current one.

    ``owner_kind`` is written into every discovery record, so other processes can tell
    whose cluster it is.
    """

    def __init__(self, owner_kind: str = "script") -> None:
        if owner_kind not in OWNER_KINDS:
            raise ValueError(
                f"owner_kind must be one of {', '.join(OWNER_KINDS)}, got {owner_kind!r}"
            )
        self.owner_kind = owner_kind
        self._handles: dict[str, ClusterHandle] = {}
        self._lock = threading.RLock()
        _MANAGERS.add(self)

    def __repr__(self) -> str:
        return f"<ClusterManager {self.owner_kind} clusters={len(self._handles)}>"

    # -- starting -----------------------------------------------------------------------
    def start(
        self,
        profile: str | None = None,
        *,
        workers: int | None = None,
        adapt: tuple[int, int] | Mapping[str, int] | None = None,
        config: ConfigSource = None,
        overrides: Overrides = None,
        name: str | None = None,
        wait: bool = True,
        timeout: float | None = None,
        set_default: bool = True,
        options: Any = None,
    ) -> ClusterHandle:
        """Start a cluster from a profile and return its handle (with ``.client``).

        ``options``: an options form (``pipejupyter.options(profile)``) or a mapping of
        option keys to values (``{"cluster_kwargs.cores": 4}``), applied as overrides.
        Everything is validated before anything starts; if any step fails, whatever was
        started is stopped again before the error is raised.
        """
        import dask

        spec, backend = prepare(
            profile,
            workers=workers,
            adapt=adapt,
            config=config,
            overrides=overrides,
            options=options,
        )
        for text in spec.warnings:
            warnings.warn(text, ConfigWarning, stacklevel=3)
        backend.check_dependencies()
        guard()
        with self._lock:
            if name and any(h.name == name for h in self._handles.values()):
                raise ClusterError(f"a cluster named {name!r} is already running in this process")
            handle = self._new_handle(spec, backend, name or self._unique_name(spec.profile))
            self._handles[handle.id] = handle
            backend.record_path = str(discovery.record_path(handle.id))
        timeout = timeout if timeout is not None else (spec.wait_timeout or DEFAULT_TIMEOUT)
        try:
            with dask.config.set(spec.dask_config or {}):
                backend.start()
                handle.client = backend.make_client(
                    set_as_default=set_default, timeout=min(timeout, 60)
                )
                if backend.owns_cluster:
                    if spec.adapt_kwargs:
                        adapt_kwargs = dict(spec.adapt_kwargs)
                        minimum = int(adapt_kwargs.pop("minimum", 0) or 0)
                        maximum = int(adapt_kwargs.pop("maximum", minimum) or minimum)
                        backend.adapt(minimum, maximum, **adapt_kwargs)
                        handle.adapt_range = {"minimum": minimum, "maximum": maximum}
                    elif spec.workers is not None:
                        backend.scale(spec.workers)
            handle.publish()
            if wait:
                target = (
                    handle.adapt_range["minimum"] if handle.adapt_range else (spec.workers or 0)
                )
                handle.wait_for_workers(target if backend.owns_cluster else 0, timeout)
            handle.status = ClusterStatus.RUNNING
            handle.publish()
            return handle
        except BaseException as exc:
            handle.status = ClusterStatus.FAILED
            handle.teardown(timeout=10)
            release_failed_client(exc)
            if isinstance(exc, PipejupyterError) or not isinstance(exc, Exception):
                raise
            raise ClusterError(
                handle.safe(
                    f"starting {spec.profile!r} ({spec.backend}) failed: "
                    f"{type(exc).__name__}: {exc}"
                )
            ) from exc

    # -- connecting ---------------------------------------------------------------------
    def connect(
        self, target: str, *, name: str | None = None, set_default: bool = True, timeout: float = 10
    ) -> ClusterHandle:
        """Attach to a running cluster: a scheduler address, ``backend://name``, or a
        discovered id/name."""
        with self._lock:
            for handle in self._handles.values():
                if target in (handle.id, handle.name):
                    if set_default and handle.client is not None:
                        handle.client.as_current()
                        make_default_client(handle.client)
                    return handle
        scheme = target.split("://", 1)[0] if "://" in target else None
        if scheme is not None and scheme not in DIRECT_SCHEMES:
            backend_cls = get_backend(scheme)
            env = environment_for(ClusterSpec(profile="", backend=backend_cls.name))
            backend = backend_cls.attach(target, env)
            label = backend.spec.profile or backend_cls.name
            handle = self._new_handle(
                backend.spec,
                backend,
                name or self._unique_name(label),
                owned=False,
                label=backend_cls.name,
            )
            return self._finish_connect(handle, set_default, timeout)
        if scheme is None and not _looks_like_host_port(target):
            return self._connect_record(target, name, set_default, timeout)
        return self._connect_address(
            target, name or "connected", "address", None, set_default, timeout
        )

    def _connect_record(
        self, key: str, name: str | None, set_default: bool, timeout: float
    ) -> ClusterHandle:
        record = find_record(key)
        if record is None:
            known = [f"{r['name']} ({r['id']})" for r in discovery.read_all()]
            raise UnknownCluster(
                f"no running cluster {key!r}; give a scheduler address (tcp://host:port) "
                f"or one of: {', '.join(known) or 'none discovered'}"
            )
        backend_name = record.get("backend") or "address"
        backend_cls: type[Backend] | None = None
        with contextlib.suppress(PipejupyterError):
            backend_cls = get_backend(backend_name)
        if backend_cls is not None and record.get("backend_info"):
            # Errors propagate: a gateway address is no plain scheduler address to fall back on.
            backend = backend_cls.attach_record(record)
            if backend is not None:
                handle = self._new_handle(
                    backend.spec,
                    backend,
                    name or self._unique_name(record["name"]),
                    owned=False,
                    label=backend_name,
                )
                return self._finish_connect(handle, set_default, timeout)
        return self._connect_address(
            record["scheduler_address"],
            name or record["name"],
            backend_name,
            record.get("profile"),
            set_default,
            timeout,
        )

    def _connect_address(
        self,
        address: str,
        name: str,
        label: str,
        profile: str | None,
        set_default: bool,
        timeout: float,
    ) -> ClusterHandle:
        spec = ClusterSpec(profile=profile or "", backend="address", options={"address": address})
        backend = AddressBackend(spec, environment_for(spec))
        handle = self._new_handle(spec, backend, self._unique_name(name), owned=False, label=label)
        return self._finish_connect(handle, set_default, timeout)

    def _finish_connect(
        self, handle: ClusterHandle, set_default: bool, timeout: float
    ) -> ClusterHandle:
        try:
            handle.backend.start()
            handle.client = handle.backend.make_client(set_as_default=set_default, timeout=timeout)
        except BaseException as exc:
            handle.teardown(timeout=5)
            release_failed_client(exc)
            if isinstance(exc, PipejupyterError) or not isinstance(exc, Exception):
                raise
            raise ClusterError(
                f"cannot connect to {handle.scheduler_address or handle.name}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        handle.status = ClusterStatus.RUNNING
        with self._lock:
            self._handles[handle.id] = handle
        return handle

    # -- finding ------------------------------------------------------------------------
    def get(self, key: str | None = None) -> ClusterHandle:
        """A handle of this manager by id or name; without a key, the current one."""
        with self._lock:
            handles = list(self._handles.values())
        if key is None:
            live = [h for h in handles if h.status is not ClusterStatus.STOPPED]
            if not live:
                raise UnknownCluster(
                    "no cluster in this process; start one with pipejupyter.start() "
                    "or %pipecluster start"
                )
            return live[-1]
        for handle in handles:
            if key in (handle.id, handle.name):
                return handle
        names = ", ".join(h.name for h in handles) or "none"
        raise UnknownCluster(f"no cluster {key!r} in this process; clusters: {names}")

    def use(self, key: str) -> ClusterHandle:
        """Make cluster ``key`` the current one: its Client becomes Dask's default, and
        calls without a key (``get()``, ``%pipecluster scale N``) act on it."""
        handle = self.get(key)
        unusable = (ClusterStatus.STOPPED, ClusterStatus.STOPPING, ClusterStatus.FAILED)
        if handle.client is None or handle.status in unusable:
            raise ClusterError(f"cannot use {handle.name!r}: it is {handle.status}")
        with self._lock:  # the registry is ordered: the last live handle is the current one
            self._handles[handle.id] = self._handles.pop(handle.id)
        make_default_client(handle.client)
        return handle

    def clusters(self) -> list[ClusterHandle]:
        """Handles started or connected by this manager, oldest first."""
        with self._lock:
            return list(self._handles.values())

    def list_clusters(
        self, *, discovered: bool = True, timeout: float = 2.0
    ) -> list[dict[str, Any]]:
        """Models of this manager's clusters, then records of clusters other processes own."""
        own = [h.model(timeout=timeout) for h in self.clusters()]
        if not discovered:
            return own
        seen = {m["id"] for m in own} | {
            m["scheduler_address"] for m in own if m["scheduler_address"]
        }
        others = []
        for record in [*discovery.read_all(), *remote_records(timeout)]:
            if record["id"] in seen or record.get("scheduler_address") in seen:
                continue
            seen |= {record["id"], record.get("scheduler_address")}
            others.append(record)
        return own + others

    # -- stopping -----------------------------------------------------------------------
    def stop(self, key: str | None = None) -> ClusterHandle:
        """Stop cluster ``key`` (default: the current one) and return its handle."""
        handle = self.get(key)
        handle.stop()
        return handle

    def stop_all(self, timeout: float = 20) -> list[str]:
        """Stop every cluster of this manager; returns their names."""
        names = []
        for handle in reversed(self.clusters()):
            with contextlib.suppress(Exception):
                handle.stop(timeout=timeout)
            names.append(handle.name)
        return names

    def forget(self, cluster_id: str) -> None:
        """Drop a handle (the handle calls this once it is torn down)."""
        with self._lock:
            self._handles.pop(cluster_id, None)

    # -- internals ----------------------------------------------------------------------
    def _new_handle(
        self,
        spec: ClusterSpec,
        backend: Backend,
        name: str,
        *,
        owned: bool = True,
        label: str | None = None,
    ) -> ClusterHandle:
        return ClusterHandle(
            spec,
            backend,
            name,
            owned=owned and backend.owns_cluster,
            label=label,
            owner=owner_identity(self.owner_kind),
            on_teardown=self.forget,
        )

    def _unique_name(self, base: str) -> str:
        with self._lock:
            taken = {h.name for h in self._handles.values()}
        if base not in taken:
            return base
        n = 2
        while f"{base}-{n}" in taken:
            n += 1
        return f"{base}-{n}"


_MANAGERS: weakref.WeakSet[ClusterManager] = weakref.WeakSet()

#: the manager behind the module-level functions (``pipejupyter.start`` and friends)
default_manager = ClusterManager()


def start(profile: str | None = None, **kwargs: Any) -> ClusterHandle:
    """Start a cluster with the default manager; see :meth:`ClusterManager.start`."""
    return default_manager.start(profile, **kwargs)


def connect(target: str, **kwargs: Any) -> ClusterHandle:
    """Attach to a running cluster with the default manager; see :meth:`ClusterManager.connect`."""
    return default_manager.connect(target, **kwargs)


def get(key: str | None = None) -> ClusterHandle:
    """A cluster of the default manager by id or name; without a key, the current one."""
    return default_manager.get(key)


def use(key: str) -> ClusterHandle:
    """Make a cluster of the default manager the current one."""
    return default_manager.use(key)


def clusters() -> list[ClusterHandle]:
    """Handles of the default manager, oldest first."""
    return default_manager.clusters()


def list_clusters(*, discovered: bool = True, timeout: float = 2.0) -> list[dict[str, Any]]:
    """Models of the default manager's clusters, then those other processes own."""
    return default_manager.list_clusters(discovered=discovered, timeout=timeout)


def stop(key: str | None = None) -> ClusterHandle:
    """Stop a cluster of the default manager."""
    return default_manager.stop(key)


def stop_all(timeout: float = 20) -> list[str]:
    """Stop every cluster of the default manager; returns their names."""
    return default_manager.stop_all(timeout=timeout)


@atexit.register
def _stop_at_exit() -> None:
    for manager in list(_MANAGERS):
        if manager.clusters():
            manager.stop_all(timeout=5)
