"""PipejupyterTaskRunner: prefect-dask's ``DaskTaskRunner`` on a cluster pipejupyter starts
or already runs.

Imported only once Prefect is known to be installed (``task_runner`` imports it). Prefect
copies a flow's runner for every flow run (``duplicate()``) and enters the copy; the first
task the run submits makes the copy lease its cluster from its plan (a profile started
through the lifecycle core, or a running cluster), and leaving the copy closes its Client
and ends the lease, which stops a started cluster and leaves a running one running.

prefect-dask's own ``client`` property would use the process's default Dask client, when
there is one (a notebook's ``%pipecluster start`` makes one), in place of the cluster it
was configured with; this runner always uses its plan's cluster.
"""

from __future__ import annotations

import threading
from typing import Any

import distributed
from prefect.context import FlowRunContext
from prefect_dask import DaskTaskRunner
from prefect_dask.client import PrefectDaskClient

from pipejupyter.lifecycle.handle import ClusterHandle
from pipejupyter.lifecycle.manager import ClusterManager, default_manager
from pipejupyter.prefect.cluster_plan import (
    AttachPlan,
    ClusterPlan,
    DetachedPlan,
    StartPlan,
    is_address,
)


class PipejupyterTaskRunner(DaskTaskRunner):
    """A ``DaskTaskRunner`` whose cluster comes from a :class:`ClusterPlan`.

    Made by :func:`pipejupyter.prefect.task_runner`. ``cluster_class``, ``cluster_kwargs``
    and ``adapt_kwargs`` show the resolved profile (what prefect-dask's runner would be
    given for the same file); ``address`` the scheduler address of an attached cluster.
    During a flow run, ``handle`` is the run's :class:`ClusterHandle`.
    """

    def __init__(
        self,
        plan: ClusterPlan,
        *,
        manager: ClusterManager | None = None,
        client_kwargs: dict[str, Any] | None = None,
        performance_report_path: str | None = None,
    ) -> None:
        super().__init__(
            client_kwargs=client_kwargs, performance_report_path=performance_report_path
        )
        self.plan = plan
        self.manager = manager or default_manager
        self.handle: ClusterHandle | None = None
        self._lease_lock = threading.Lock()
        if isinstance(plan, StartPlan) and plan.spec is not None:
            self.cluster_class = plan.spec.cluster_class
            self.cluster_kwargs = dict(plan.spec.cluster_kwargs)
            self.adapt_kwargs = dict(plan.spec.adapt_kwargs or {})
        elif isinstance(plan, AttachPlan) and isinstance(plan.target, str):
            if is_address(plan.target):
                self.address = plan.target

    def __repr__(self) -> str:
        return f"<PipejupyterTaskRunner {self.plan.describe()}>"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, PipejupyterTaskRunner)
            and self.plan == other.plan
            and self.client_kwargs == other.client_kwargs
        )

    __hash__ = None  # equal runners share settings, not identity (as DaskTaskRunner)

    def __reduce__(self) -> tuple:
        # Prefect pickles the flow, and with it this runner, into every task it submits; on
        # the worker the runner is never used, so only its description travels (not the
        # manager, its clusters and locks, nor the whole configuration, once per task).
        return (_detached_runner, (self.plan.describe(),))

    def duplicate(self) -> PipejupyterTaskRunner:
        """A runner with the same plan, for one more flow run."""
        return type(self)(
            self.plan,
            manager=self.manager,
            client_kwargs=dict(self.client_kwargs),
            performance_report_path=self.performance_report_path,
        )

    @property
    def client(self) -> PrefectDaskClient:
        """The flow run's Client; its cluster is leased on first use."""
        with self._lease_lock:
            if self._client is None:
                self._open()
        return self._client

    def _open(self) -> None:
        verb = "Starting" if isinstance(self.plan, StartPlan) else "Using"
        self.logger.info(f"{verb} pipejupyter {self.plan.describe()} for this flow run")
        handle = self._exit_stack.enter_context(self.plan.lease(self.manager, _flow_run_name()))
        self.handle = handle
        cluster = handle.backend.cluster
        if cluster is not None:
            # As prefect-dask and the backends connect: through the cluster object, whose
            # event loop (and in-process scheduler) the Client then shares.
            target, kwargs = cluster, dict(self.client_kwargs)
        else:  # a scheduler address (address and gateway backends): as the handle connected
            connected = handle.client
            target = connected.scheduler.address
            kwargs = {"security": connected.security, **self.client_kwargs}
        self._client = self._exit_stack.enter_context(PrefectDaskClient(target, **kwargs))
        if self.performance_report_path:
            self._exit_stack.enter_context(distributed.Client.as_current(self._client))
            self._exit_stack.enter_context(
                distributed.performance_report(self.performance_report_path)
            )
        owner = "started for this flow run" if isinstance(self.plan, StartPlan) else "running"
        shown = f"pipejupyter cluster {handle.name!r} (id {handle.id}, {handle.backend_label})"
        self.logger.info(
            f"{shown}, {owner}: {handle.scheduler_address}, dashboard "
            f"{handle.dashboard_link or 'none'}; %pipecluster list shows it"
        )

    def __exit__(self, *args: Any) -> None:
        try:
            super().__exit__(*args)
        finally:
            # The lease is over: a later use of this runner leases anew.
            self._client = None
            self.handle = None


def _detached_runner(description: str) -> PipejupyterTaskRunner:
    return PipejupyterTaskRunner(DetachedPlan(description))


def _flow_run_name() -> str | None:
    context = FlowRunContext.get()
    run = context.flow_run if context is not None else None
    return run.name if run is not None else None
