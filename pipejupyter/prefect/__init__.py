"""Prefect flows on pipejupyter clusters: ``task_runner(...)`` gives a Prefect
``DaskTaskRunner`` whose cluster comes from a pipejupyter profile or is one already running.

``task_runner("slurm", workers=4)`` starts the profile's cluster through the lifecycle core
when a flow run submits its first task and stops it when the run ends, so the run gets
everything a ``%pipecluster start`` gets (environment passthrough, MPI and SLURM
sanitization, partition checks, cleanup when the owning process dies, the cluster in
``%pipecluster list``, the widget and the sidebar). ``task_runner(handle)``,
``task_runner("tcp://host:port")`` or ``task_runner(name_or_id)`` use a running cluster
and leave it running.

A face of the core, like the notebook, server and cli packages: it may import lifecycle
and the layers below it, never another face. Prefect and prefect-dask are an optional extra
(``pip install 'pipejupyter[prefect]'``): they are imported only when ``task_runner`` is
called, so ``import pipejupyter.prefect`` stays as light as ``import pipejupyter``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from pipejupyter.errors import MissingDependency
from pipejupyter.lifecycle.handle import ClusterHandle
from pipejupyter.lifecycle.manager import ClusterManager, ConfigSource, default_manager
from pipejupyter.prefect.cluster_plan import plan_for

if TYPE_CHECKING:
    from pipejupyter.prefect.runner import PipejupyterTaskRunner

__all__ = ["task_runner"]


def task_runner(
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
    client_kwargs: Mapping[str, Any] | None = None,
    performance_report_path: str | None = None,
    manager: ClusterManager | None = None,
) -> PipejupyterTaskRunner:
    """A Prefect ``DaskTaskRunner`` on a pipejupyter cluster.

    Parameters
    ----------
    target
        What to run on. A profile name starts that profile's cluster for each flow run
        (``None``: the default profile). A ``ClusterHandle``, a scheduler address
        (``tcp://host:port``, ``gateway://NAME``) or the name or id of a running cluster
        (this process's, or one ``%pipecluster list`` shows) uses that cluster and leaves it
        running. A name that is both a profile and a running cluster is refused: say
        ``profile=`` or ``cluster=`` instead.
    profile, cluster
        The same, without guessing: ``profile="local"`` always starts a new cluster,
        ``cluster="local"`` always uses the running one.
    workers, adapt, config, overrides
        As for ``pipejupyter.start``: worker count or adaptive range, config files (a
        single-cluster file with ``cluster_class``/``cluster_kwargs``/``adapt_kwargs`` gives
        the runner that file describes), and ``key.path=value`` overrides. The files are read
        and the whole request is validated here, before any flow runs.
    name
        Name of the started cluster (default ``prefect-<flow run name>``).
    wait, timeout
        Wait (up to ``timeout`` seconds, default the profile's ``wait_timeout`` or 120) for
        the workers before the first task is submitted.
    client_kwargs, performance_report_path
        As for ``prefect_dask.DaskTaskRunner``.
    manager
        The ClusterManager that owns started clusters (default: the process's).

    Raises
    ------
    MissingDependency
        prefect or prefect-dask is not installed.
    ConfigError, UnknownCluster, ClusterError
        A bad profile, override or target; nothing is started.
    """
    runner_class = _runner_class()
    plan = plan_for(
        target,
        profile=profile,
        cluster=cluster,
        workers=workers,
        adapt=adapt,
        config=config,
        overrides=overrides,
        name=name,
        wait=wait,
        timeout=timeout,
        manager=manager or default_manager,
    )
    return runner_class(
        plan,
        manager=manager or default_manager,
        client_kwargs=dict(client_kwargs or {}),
        performance_report_path=performance_report_path,
    )


def _runner_class() -> type[PipejupyterTaskRunner]:
    for module in ("prefect", "prefect_dask"):
        try:
            __import__(module)
        except ImportError as exc:
            if exc.name not in (None, module) and not str(exc.name).startswith(module):
                raise  # installed, but broken: show the real error
            package = module.replace("_", "-")
            raise MissingDependency(package, "prefect", "pipejupyter.prefect.task_runner") from None
    # runner.py subclasses prefect_dask's runner at import: imported here, once Prefect is known
    # to be there, so importing this package never imports Prefect.
    from pipejupyter.prefect.runner import PipejupyterTaskRunner

    return PipejupyterTaskRunner
