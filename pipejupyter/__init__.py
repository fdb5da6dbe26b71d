"""pipejupyter: Dask clusters for data-processing pipelines in Jupyter.

The public API is imported lazily so ``import pipejupyter`` and ``%load_ext pipejupyter``
stay fast and never import an optional backend library.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "start": "pipejupyter.lifecycle.manager",
    "connect": "pipejupyter.lifecycle.manager",
    "clusters": "pipejupyter.lifecycle.manager",
    "list_clusters": "pipejupyter.lifecycle.manager",
    "stop_all": "pipejupyter.lifecycle.manager",
    "dry_run": "pipejupyter.lifecycle.manager",
    "options": "pipejupyter.notebook.options_form",
    "get": "pipejupyter.lifecycle.manager",
    "use": "pipejupyter.lifecycle.manager",
    "ClusterHandle": "pipejupyter.lifecycle.handle",
    "ClusterManager": "pipejupyter.lifecycle.manager",
    "load_config": "pipejupyter.config.loader",
    "ClusterSpec": "pipejupyter.models",
    "ClusterStatus": "pipejupyter.models",
    "ConfigError": "pipejupyter.errors",
    "ClusterError": "pipejupyter.errors",
    "MissingDependency": "pipejupyter.errors",
    "PipejupyterError": "pipejupyter.errors",
    "run_stage": "pipejupyter.stages.run",
    "casa": "pipejupyter.work.casa",
    "mpirun": "pipejupyter.work.nested_mpi",
    "command": "pipejupyter.work.kinds",
    "glob": "pipejupyter.stages.inputs",
    "mapfile": "pipejupyter.stages.inputs",
    "write_mapfile": "pipejupyter.stages.inputs",
    "StageResult": "pipejupyter.stages.results",
    "StageFailed": "pipejupyter.stages.results",
}

__all__ = [*_LAZY, "__version__", "load_ipython_extension", "unload_ipython_extension"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        if name == "context":
            return importlib.import_module("pipejupyter.stages.context")
        raise AttributeError(f"module 'pipejupyter' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    if module == "pipejupyter.stages.run" and "IPython" in sys.modules:
        # The composition root wires the faces: in IPython, run_stage may show the widget.
        importlib.import_module("pipejupyter.notebook.stage_progress")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


def load_ipython_extension(ipython) -> None:
    """``%load_ext pipejupyter``: register %pipecluster and %%pipestage."""
    from pipejupyter.notebook.magics import load

    load(ipython)


def unload_ipython_extension(ipython) -> None:
    from pipejupyter.notebook.magics import unload

    unload(ipython)


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "pipejupyter.server"}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "pipejupyter"}]
