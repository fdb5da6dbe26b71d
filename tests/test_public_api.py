"""The public surface stays as it was when modules move: lazy names, entry points, CLI."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest

import pipejupyter
from pipejupyter.backend_registry import BUILTIN, get_backend

# The names `import pipejupyter` offered before the package was split by concept.
PUBLIC_NAMES = [
    "start",
    "connect",
    "clusters",
    "list_clusters",
    "stop_all",
    "dry_run",
    "get",
    "use",
    "ClusterHandle",
    "load_config",
    "ClusterSpec",
    "ClusterStatus",
    "ConfigError",
    "ClusterError",
    "MissingDependency",
    "PipejupyterError",
    "run_stage",
    "casa",
    "mpirun",
    "command",
    "glob",
    "mapfile",
    "StageResult",
    "StageFailed",
    "context",
    "load_ipython_extension",
    "unload_ipython_extension",
    "__version__",
]


@pytest.mark.parametrize("name", PUBLIC_NAMES)
def test_every_public_name_resolves(name):
    assert getattr(pipejupyter, name) is not None


def test_clusters_stays_a_function_after_the_lifecycle_package_is_imported():
    import pipejupyter.lifecycle.manager  # noqa: F401 - a subpackage must not shadow the API

    assert callable(pipejupyter.clusters)
    assert pipejupyter.clusters() == []


def test_command_builds_a_command_request():
    request = pipejupyter.command(["echo", "hi"])
    assert type(request).__name__ == "Command"


def test_importing_pipejupyter_and_its_magics_imports_no_heavy_library():
    code = (
        "import sys, pipejupyter, pipejupyter.notebook.magics, pipejupyter.prefect;"
        "print([m for m in ('distributed', 'ipywidgets', 'dask_jobqueue', 'dask_gateway',"
        " 'tornado', 'prefect', 'prefect_dask') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_installed_entry_points_load_the_same_backends_as_the_builtin_table():
    points = {
        ep.name: ep.value for ep in importlib.metadata.entry_points(group="pipejupyter.backends")
    }
    assert points, "pipejupyter is not installed (pip install -e .): no entry points"
    for name, target in points.items():
        assert BUILTIN[name] == target, name
        assert get_backend(name).name == name


def test_console_script_and_module_run_the_same_cli():
    script = subprocess.run(
        [sys.executable, "-m", "pipejupyter", "--help"], capture_output=True, text=True
    )
    assert script.returncode == 0
    assert "profiles" in script.stdout
