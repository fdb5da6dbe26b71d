"""A real LocalCluster through the core: lifecycle, model, discovery, cleanup, environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

import pipejupyter
from pipejupyter.errors import ClusterError, ConfigError, NotOwned, UnknownCluster
from pipejupyter.lifecycle import discovery, manager
from tests.support.common import ROOT, children_of, live_children, wait_until

pytestmark = pytest.mark.usefixtures("isolated", "no_leaks")


def _inc(x):
    return x + 1


def _getenv(name):
    return os.environ.get(name)


def _mpi_vars():
    return sorted(k for k in os.environ if k.startswith(("OMPI_", "PMIX_")))


def test_start_run_scale_model_stop():
    handle = pipejupyter.start(workers=2, timeout=60)
    try:
        assert handle.status == "running"
        assert handle.client.submit(_inc, 1).result() == 2
        assert handle.client.gather(handle.client.map(_inc, range(20))) == list(range(1, 21))
        model = handle.model()
        assert model["workers"] == 2
        assert model["pending"] == 0
        assert model["backend"] == "local"
        assert model["profile"] == "local"
        assert model["scheduler_address"].startswith("tcp://127.0.0.1:")
        assert model["dashboard_link"].startswith("http://127.0.0.1:")
        assert model["cores"] == 2  # one thread per worker by default
        assert [w["name"] for w in model["worker_info"]] == ["0", "1"]
        row = model["worker_info"][0]
        assert row["threads"] == 1
        assert row["memory_limit"] > 0
        assert row["memory_used"] > 0
        assert row["status"] == "running"
        assert row["host"] == "127.0.0.1"
        assert model["memory"] == sum(w["memory_limit"] for w in model["worker_info"])
        json.dumps(model)  # the wire model is plain JSON

        handle.scale(3)
        handle.wait_for_workers(3, timeout=60)
        assert handle.model()["workers"] == 3
        handle.scale(1)
        assert wait_until(lambda: handle.model()["workers"] == 1, timeout=30)

        handle.adapt(1, 2)
        assert handle.model()["adapt"] == {"minimum": 1, "maximum": 2}
        logs = handle.logs(lines=5)
        assert logs
        assert all(isinstance(v, list) for v in logs.values())
        assert "scheduler" in handle.logs(scheduler=True, lines=5)
    finally:
        handle.stop()
    assert handle.status == "stopped"
    assert handle.model()["status"] == "stopped"
    assert handle not in pipejupyter.clusters()


def test_discovery_file_written_and_removed(isolated):
    handle = pipejupyter.start(workers=1, name="disc", timeout=60)
    path = isolated / "runtime" / f"cluster-{handle.id}.json"
    record = json.loads(path.read_text())
    assert record["name"] == "disc"
    assert record["scheduler_address"] == handle.scheduler_address
    assert record["owner"]["pid"] == os.getpid()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    handle.stop()
    assert not path.exists()


def test_other_process_lists_and_connects(isolated):
    handle = pipejupyter.start(workers=1, name="shared", timeout=60)
    code = textwrap.dedent(
        f"""
        import json, pipejupyter
        from pipejupyter.lifecycle import manager
        records = manager.list_clusters()
        h = pipejupyter.connect({handle.id!r})
        print(json.dumps({{"names": [r["name"] for r in records], "workers": h.model()["workers"],
                          "backend": h.backend_label, "owned": h.owned,
                          "result": h.client.submit(sum, [1, 2]).result()}}))
        h.stop()  # only disconnects: the cluster belongs to the test process
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout.strip().splitlines()[-1])
    assert data == {
        "names": ["shared"],
        "workers": 1,
        "backend": "local",
        "owned": False,
        "result": 3,
    }
    assert handle.model()["workers"] == 1  # still running after the other process left
    handle.stop()


def test_connect_by_address_cannot_scale():
    owner = pipejupyter.start(workers=1, timeout=60)
    other = pipejupyter.connect(owner.scheduler_address, set_default=False)
    assert other.model()["workers"] == 1
    assert other.model()["dashboard_link"].startswith("http://127.0.0.1:")
    with pytest.raises(NotOwned):
        other.scale(3)
    other.stop()
    assert owner.model()["workers"] == 1
    owner.stop()


def test_connect_to_unknown_target_is_clear():
    with pytest.raises(UnknownCluster, match="no running cluster 'nosuch'"):
        pipejupyter.connect("nosuch")
    with pytest.raises(ClusterError, match="cannot connect"):
        pipejupyter.connect("tcp://127.0.0.1:9", timeout=2)


def test_stale_discovery_files_are_pruned(isolated):
    discovery.write(
        {
            "id": "deadbeef0001",
            "name": "ghost",
            "scheduler_address": "tcp://127.0.0.1:9",
            "owner": {"pid": 999999, "host": os.uname().nodename},
        }
    )
    assert [r["id"] for r in discovery.read_all()] == []
    assert not (isolated / "runtime" / "cluster-deadbeef0001.json").exists()


def test_bad_config_starts_nothing(isolated):
    before = live_children(os.getpid())
    with pytest.raises(ConfigError):
        pipejupyter.start(overrides=["cluster_kwargs.thread_per_worker=2"])
    assert pipejupyter.clusters() == []
    assert live_children(os.getpid()) - before == set()
    assert list((isolated / "runtime").iterdir()) == []


def test_failed_start_leaves_nothing(isolated):
    # A worker preload that raises makes the workers fail to start: the start must undo itself.
    preload = isolated / "work" / "broken_preload.py"
    preload.write_text("raise RuntimeError('this worker cannot start')\n")
    with pytest.raises(ClusterError):
        pipejupyter.start(workers=1, overrides=[f"cluster_kwargs.preload=[{preload}]"], timeout=20)
    assert pipejupyter.clusters() == []
    assert list((isolated / "runtime").iterdir()) == []
    # An impossible memory limit is refused before anything starts.
    with pytest.raises(ConfigError, match="memory_limit must be a size"):
        pipejupyter.start(workers=1, overrides=["cluster_kwargs.memory_limit=-5"], timeout=20)
    assert pipejupyter.clusters() == []


def test_waiting_for_more_workers_than_asked_for_times_out_clearly():
    handle = pipejupyter.start(workers=1, timeout=60)
    with pytest.raises(ClusterError, match="only 1 of 3 workers connected within 0.5 s"):
        handle.wait_for_workers(3, timeout=0.5)
    handle.stop()


def test_start_guard_refuses_mpi_rank_other_than_zero(monkeypatch):
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "1")
    with pytest.raises(ClusterError, match="MPI rank 1"):
        pipejupyter.start(workers=1)


def _start_inside_worker():
    import pipejupyter

    try:
        pipejupyter.start(workers=1)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return "started"


def test_start_guard_refuses_inside_a_dask_worker():
    handle = pipejupyter.start(workers=1, timeout=60)
    message = handle.client.submit(_start_inside_worker).result()
    assert message.startswith("ClusterError: refusing to start a cluster from inside Dask worker")
    handle.stop()


def test_env_passthrough_reaches_workers_and_mpi_never_does(monkeypatch):
    monkeypatch.setenv("CASA_TEST_PASS", "value with spaces $HOME 'q'")
    monkeypatch.setenv("NOT_PASSED_VAR", "x")
    # Pretend this process was started by mpirun (auto sanitization applies).
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "1")
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "0")
    monkeypatch.setenv("PMIX_RANK", "0")
    handle = pipejupyter.start(workers=1, overrides=["env.set.PIPELINE_FLAG=on"], timeout=60)
    assert os.environ["OMPI_COMM_WORLD_SIZE"] == "1"  # the parent's environment is restored
    run = handle.client.run
    assert list(run(_getenv, "CASA_TEST_PASS").values()) == ["value with spaces $HOME 'q'"]
    assert list(run(_getenv, "PIPELINE_FLAG").values()) == ["on"]
    assert list(run(_mpi_vars).values()) == [[]]
    # a restarted worker (a new spawn) is sanitized too
    handle.client.restart(wait_for_workers=True)
    assert list(run(_mpi_vars).values()) == [[]]
    handle.stop()


def test_sanitize_never_keeps_mpi_variables(monkeypatch):
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "1")
    handle = pipejupyter.start(workers=1, overrides=["mpi.sanitize=never"], timeout=60)
    assert list(handle.client.run(_getenv, "OMPI_COMM_WORLD_SIZE").values()) == ["1"]
    handle.stop()


def test_secrets_are_redacted_in_displayed_output(monkeypatch, capsys):
    monkeypatch.setenv("CASA_API_TOKEN", "s3cr3t-value-123")
    spec, backend = manager.prepare(overrides=["env.set.DB_PASSWORD=hunter2hunter2"])
    shown = backend.env.redacted()
    assert shown["CASA_API_TOKEN"] == "********"
    assert shown["DB_PASSWORD"] == "********"
    text = backend.dry_run()
    assert "s3cr3t-value-123" not in text
    assert "hunter2hunter2" not in text
    # but the workers do get the real values
    assert backend.env.variables["DB_PASSWORD"] == "hunter2hunter2"


def test_stop_all_and_atexit_cleanup_in_a_script(isolated):
    code = textwrap.dedent(
        """
        import os, pipejupyter
        h = pipejupyter.start(workers=2, timeout=60)
        print(os.getpid(), flush=True)
        # no stop(): interpreter exit must stop the cluster
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr
    pid = int(proc.stdout.split()[0])
    assert wait_until(lambda: not children_of(pid), timeout=10)
    assert list((isolated / "runtime").iterdir()) == []


def test_thread_workers_profile_starts_on_loopback():
    handle = pipejupyter.start(workers=1, overrides=["cluster_kwargs.processes=false"], timeout=60)
    assert handle.scheduler_address.startswith("tcp://127.0.0.1:")
    assert handle.client.submit(_inc, 4).result() == 5
    handle.stop()
