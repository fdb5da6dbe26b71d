"""The `pipejupyter` command: config in every format, errors with exit status 2."""

from __future__ import annotations

import json
import textwrap

import pytest

from tests.support.common import run_cli

pytestmark = pytest.mark.usefixtures("isolated")


def test_config_json_native(isolated):
    path = isolated / "native.yaml"
    path.write_text(
        "pipecluster:\n  profiles:\n    big:\n      backend: local\n      workers: 3\n"
        "      env:\n        set: {MY_TOKEN: abcdefgh}\n"
    )
    out = run_cli("config", "--profile", "big", "-f", str(path), "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert set(data) >= {
        "profile",
        "backend",
        "cluster_class",
        "cluster_kwargs",
        "adapt_kwargs",
        "workers",
        "env",
        "mpi",
    }
    assert data["profile"] == "big"
    assert data["backend"] == "local"
    assert data["workers"] == 3
    assert data["cluster_class"] == "distributed.LocalCluster"
    assert data["env"]["set"]["MY_TOKEN"] == "********"  # secrets never printed
    assert "abcdefgh" not in out.stdout


def test_config_json_casa_pipeline_with_origin(isolated):
    path = isolated / "home" / ".casa" / "config.yaml"
    path.parent.mkdir()
    path.write_text(
        textwrap.dedent("""\
        pipeconfig:
          dask:
            clustertype: local
            n_workers: 2
            dashboard_address: "127.0.0.1:0"
        casaconfig:
          measures_auto_update: false
        """)
    )
    out = run_cli("config", "--json", "--origin")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["profile"] == "local"
    assert data["workers"] == 2
    assert data["casaconfig"] == {"measures_auto_update": False}
    assert data["origin"]["workers"] == f"{path}:4"
    assert data["files"][1] == {"path": str(path), "role": "casa", "formats": ["casa-pipeline"]}


def test_config_json_single_cluster_file(isolated):
    path = isolated / "runner.yaml"
    path.write_text(
        "cluster_class: distributed.LocalCluster\n"
        "cluster_kwargs:\n  n_workers: 2\n  memory_limit: 1GiB\n"
    )
    out = run_cli("config", "-f", str(path), "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["profile"] == "runner"
    assert data["workers"] == 2
    assert data["cluster_kwargs"]["memory_limit"] == "1GiB"


def test_bad_config_exits_2_with_error_on_stderr(isolated):
    path = isolated / "bad.yaml"
    path.write_text("pipecluster:\n  profiles:\n    local:\n      wrokers: 2\n")
    out = run_cli("config", "-f", str(path))
    assert out.returncode == 2
    assert out.stdout == ""
    assert f"{path}:4" in out.stderr
    assert "did you mean 'workers'" in out.stderr
    assert "Traceback" not in out.stderr


def test_profiles_env_and_dry_run(isolated):
    out = run_cli("profiles")
    assert out.returncode == 0
    assert "* local" in out.stdout
    assert "slurm" in out.stdout
    out = run_cli(
        "env",
        "--json",
        env={
            "CASA_SECRET_KEY": "topsecret99",
            "OMPI_COMM_WORLD_RANK": "0",
            "OMPI_COMM_WORLD_SIZE": "1",
        },
    )
    data = json.loads(out.stdout)
    assert data["variables"]["CASA_SECRET_KEY"] == "********"
    assert "OMPI_COMM_WORLD_SIZE" in data["removed_mpi"]
    assert "topsecret99" not in out.stdout
    out = run_cli("dry-run", "-n", "2")
    assert out.returncode == 0
    assert "workers: 2" in out.stdout


def test_list_and_stop_a_cluster_owned_by_another_process(isolated):
    import pipejupyter

    handle = pipejupyter.start(workers=1, name="cli-visible", timeout=60)
    try:
        out = run_cli("list", "--json")
        records = json.loads(out.stdout)
        assert [r["name"] for r in records] == ["cli-visible"]
        out = run_cli("stop", handle.id[:6])
        assert out.returncode == 0, out.stderr
        assert "stopped cli-visible" in out.stdout
        from tests.support.common import wait_until

        assert wait_until(lambda: handle.model(timeout=1)["status"] == "lost", timeout=20)
    finally:
        handle.stop()
    out = run_cli("stop", "nosuch")
    assert out.returncode == 2
    assert "no running cluster 'nosuch'" in out.stderr
