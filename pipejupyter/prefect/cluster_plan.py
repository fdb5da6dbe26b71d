"""Which cluster a Prefect flow run uses, and for how long.

A ``StartPlan`` starts a profile's cluster for each flow run and stops it when the run ends;
an ``AttachPlan`` uses a cluster that is already running and leaves it running. Plans are
made when the task runner is made: files are read, the request is validated and a bare
name is resolved then, so a mistake shows before any flow runs. Each flow run then holds
its cluster through the plan's ``lease``. Nothing here imports Prefect.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipejupyter.config.loader import Config
from pipejupyter.errors import ClusterError, UnknownCluster
from pipejupyter.lifecycle import discovery
from pipejupyter.lifecycle.handle import ClusterHandle
from pipejupyter.lifecycle.manager import (
    ClusterManager,
    ConfigSource,
    prepare,
    resolve_config,
)
from pipejupyter.models import ClusterSpec, ClusterStatus

#: seconds a flow run's own cluster may take to stop when the run ends
STOP_TIMEOUT = 30.0
#: statuses of a running cluster a flow run can use
USABLE = (ClusterStatus.RUNNING, ClusterStatus.STARTING)


@dataclass
class StartPlan:
    """Start ``profile`` (already resolved and validated as ``spec``) for each flow run."""

    profile: str
    config: Config = field(compare=False, repr=False)
    workers: int | None = None
    adapt: tuple[int, int] | Mapping[str, int] | None = None
    name: str | None = None
    wait: bool = True
    timeout: float | None = None
    spec: ClusterSpec | None = field(default=None, compare=False, repr=False)

    def describe(self) -> str:
        backend = self.spec.backend if self.spec is not None else "?"
        return f"profile {self.profile!r} ({backend} backend)"

    def cluster_name(self, manager: ClusterManager, run_name: str | None) -> str | None:
        """The started cluster's name: the plan's, else after the flow run (made unique
        among the manager's clusters: two runs may share a name)."""
        if self.name or not run_name:
            return self.name
        taken = {h.name for h in manager.clusters()}
        name, n = f"prefect-{run_name}", 2
        while name in taken:
            name, n = f"prefect-{run_name}-{n}", n + 1
        return name

    @contextlib.contextmanager
    def lease(
        self, manager: ClusterManager, run_name: str | None = None
    ) -> Iterator[ClusterHandle]:
        """A cluster of this profile, started now and stopped when the block ends."""
        handle = manager.start(
            self.profile,
            workers=self.workers,
            adapt=self.adapt,
            config=self.config,
            name=self.cluster_name(manager, run_name),
            wait=self.wait,
            timeout=self.timeout,
            # The flow's Client is its own: a notebook's current cluster stays current.
            set_default=False,
        )
        try:
            yield handle
        finally:
            handle.stop(timeout=STOP_TIMEOUT)


@dataclass
class AttachPlan:
    """Use a running cluster: a handle, a scheduler address, or a cluster's id or name."""

    target: ClusterHandle | str

    def describe(self) -> str:
        if isinstance(self.target, ClusterHandle):
            return f"cluster {self.target.name!r} (id {self.target.id})"
        return f"cluster {self.target!r}"

    @contextlib.contextmanager
    def lease(
        self, manager: ClusterManager, run_name: str | None = None
    ) -> Iterator[ClusterHandle]:
        """The running cluster; a connection made for this run is closed after it, the
        cluster itself is never stopped."""
        handle = self.target if isinstance(self.target, ClusterHandle) else None
        if handle is None:
            handle = own_handle(manager, self.target)
        if handle is not None:
            yield usable(handle)
            return
        handle = manager.connect(self.target, set_default=False)
        try:
            yield usable(handle)
        finally:
            handle.stop(timeout=10)  # a connected handle only disconnects


@dataclass
class DetachedPlan:
    """What a runner becomes when pickled: Prefect ships each task's flow, runner included,
    to the worker, where the runner must never start or attach a cluster."""

    description: str

    def describe(self) -> str:
        return f"{self.description}, copied to another process"

    @contextlib.contextmanager
    def lease(
        self, manager: ClusterManager, run_name: str | None = None
    ) -> Iterator[ClusterHandle]:
        raise ClusterError(
            f"this task runner ({self.describe()}) runs flows only in the process that made "
            "it; make a task_runner() here for a flow that runs here"
        )
        yield  # a generator, like the other plans' leases


ClusterPlan = StartPlan | AttachPlan | DetachedPlan


def usable(handle: ClusterHandle) -> ClusterHandle:
    """``handle`` if a flow run can submit to it, else ClusterError saying why not."""
    if handle.client is None or handle.status not in USABLE:
        raise ClusterError(
            f"cannot run a flow on cluster {handle.name!r} (id {handle.id}): it is {handle.status}"
        )
    return handle


def own_handle(manager: ClusterManager, key: str) -> ClusterHandle | None:
    """The live cluster of ``manager`` whose id, name or scheduler address is ``key``."""
    for handle in reversed(manager.clusters()):
        if handle.status is ClusterStatus.STOPPED:
            continue
        if key in (handle.id, handle.name, handle.scheduler_address):
            return handle
    return None


def is_address(text: str) -> bool:
    """A scheduler address (``tcp://host:port``, ``gateway://NAME``...) or ``host:port``."""
    if "://" in text:
        return True
    host, _, port = text.rpartition(":")
    return bool(host) and port.isdigit()


def plan_for(
    target: str | ClusterHandle | None = None,
    *,
    profile: str | None = None,
    cluster: str | ClusterHandle | None = None,
    workers: int | None = None,
    adapt: tuple[int, int] | Mapping[str, int] | None = None,
    config: ConfigSource = None,
    overrides: Iterable[str] | Mapping[str, Any] | None = None,
    name: str | None = None,
    wait: bool = True,
    timeout: float | None = None,
    manager: ClusterManager,
) -> ClusterPlan:
    """The plan for ``task_runner(...)``'s arguments (see there); starts nothing.

    Raises ConfigError for a bad profile or override, UnknownCluster for a name that is
    neither a profile nor a running cluster, ClusterError for arguments that contradict
    each other.
    """
    arguments = (("target", target), ("profile", profile), ("cluster", cluster))
    given = [label for label, value in arguments if value is not None]
    if len(given) > 1:
        raise ClusterError(
            f"task_runner takes one of a target, profile= or cluster=, got {' and '.join(given)}"
        )
    for label, value in (("target", target), ("cluster", cluster)):
        if value is not None and not isinstance(value, (str, ClusterHandle)):
            raise ClusterError(
                f"{label} must be a profile name, a cluster name or id, a scheduler address or "
                f"a ClusterHandle, got {type(value).__name__}"
            )
    if profile is not None and not isinstance(profile, str):
        raise ClusterError(f"profile must be a profile name, got {type(profile).__name__}")
    sizing = [
        label
        for label, value in (
            ("workers", workers),
            ("adapt", adapt),
            ("config", config),
            ("overrides", overrides),
            ("name", name),
        )
        if value is not None
    ]
    running = cluster if cluster is not None else target
    if running is not None and (
        cluster is not None or isinstance(running, ClusterHandle) or is_address(running)
    ):
        if sizing:
            raise ClusterError(
                f"{', '.join(sizing)} describe a cluster the flow run starts; a running cluster "
                "is used as it is (scale it with its handle or %pipecluster scale)"
            )
        if isinstance(running, str) and not is_address(running):
            running = _running_cluster(running, manager)
            if running is None:
                raise UnknownCluster(
                    f"no running cluster {cluster!r}; running: {_running_names(manager)}"
                )
        return AttachPlan(running)
    if target is not None and not sizing:
        # A bare name: a profile to start, or a running cluster to use.
        cfg = resolve_config(None, None, None)
        found = _running_cluster(target, manager)
        if found is not None and target in cfg.profile_names:
            raise ClusterError(
                f"{target!r} is both a profile and a running cluster: say "
                f"task_runner(profile={target!r}) to start a new cluster for each flow run, "
                f"or task_runner(cluster={target!r}) to use the running one"
            )
        if found is not None:
            return AttachPlan(found)
        if target not in cfg.profile_names:
            raise UnknownCluster(
                f"no profile or running cluster {target!r}; profiles: "
                f"{', '.join(cfg.profile_names) or 'none'}; running: {_running_names(manager)}"
            )
        return _start_plan(target, cfg, workers, adapt, name, wait, timeout)
    cfg = resolve_config(config, overrides, profile or target)
    return _start_plan(profile or target, cfg, workers, adapt, name, wait, timeout)


def _start_plan(
    profile: str | None,
    cfg: Config,
    workers: int | None,
    adapt: Any,
    name: str | None,
    wait: bool,
    timeout: float | None,
) -> StartPlan:
    spec, backend = prepare(profile, workers=workers, adapt=adapt, config=cfg)
    backend.check_dependencies()
    return StartPlan(
        profile=spec.profile,
        config=cfg,
        workers=workers,
        adapt=adapt,
        name=name,
        wait=wait,
        timeout=timeout,
        spec=spec,
    )


def _running_cluster(key: str, manager: ClusterManager) -> ClusterHandle | str | None:
    """This process's live cluster ``key`` (its handle), or the id of a discovered one."""
    handle = own_handle(manager, key)
    if handle is not None:
        return handle
    record = discovery.find(key)
    return record["id"] if record is not None else None


def _running_names(manager: ClusterManager) -> str:
    names = [f"{h.name} ({h.id})" for h in manager.clusters()]
    names += [f"{r['name']} ({r['id']})" for r in discovery.read_all()]
    return ", ".join(dict.fromkeys(names)) or "none"
