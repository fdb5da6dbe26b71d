"""pipejupyter: Dask clusters for data-processing pipelines in Jupyter.

The public API is imported lazily so ``import pipejupyter`` and ``%load_ext pipejupyter``
stay fast and never import an optional backend library.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "start": "pipejupyter.manager",
    "connect": "pipejupyter.manager",
    "clusters": "pipejupyter.manager",
    "list_clusters": "pipejupyter.manager",
    "stop_all": "pipejupyter.manager",
    "dry_run": "pipejupyter.manager",
    "get": "pipejupyter.manager",
    "use": "pipejupyter.manager",
    "ClusterHandle": "pipejupyter.manager",
    "load_config": "pipejupyter.config",
    "ClusterSpec": "pipejupyter.models",
    "ClusterStatus": "pipejupyter.models",
    "ConfigError": "pipejupyter.errors",
    "ClusterError": "pipejupyter.errors",
    "MissingDependency": "pipejupyter.errors",
    "PipejupyterError": "pipejupyter.errors",
    "run_stage": "pipejupyter.stages",
    "casa": "pipejupyter.casa_tasks",
    "mpirun": "pipejupyter.nested_mpi",
    "command": "pipejupyter.stages",
    "glob": "pipejupyter.inputs",
    "mapfile": "pipejupyter.inputs",
    "StageResult": "pipejupyter.results",
    "StageFailed": "pipejupyter.results",
}

__all__ = [*_LAZY, "__version__", "load_ipython_extension", "unload_ipython_extension"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        if name == "context":
            return importlib.import_module("pipejupyter.context")
        raise AttributeError(f"module 'pipejupyter' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


def load_ipython_extension(ipython) -> None:
    """``%load_ext pipejupyter``: register %pipecluster and %%pipestage."""
    from .magics import load

    load(ipython)


def unload_ipython_extension(ipython) -> None:
    from .magics import unload

    unload(ipython)


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "pipejupyter.server"}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "pipejupyter"}]
