"""%pipecluster with real clusters: every subcommand end to end, MPI and SLURM launches,
clusters of other processes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

from pipejupyter.lifecycle import discovery, manager
from tests.support.common import PYTHON, ROOT, wait_until
from tests.support.magics import (  # noqa: F401 (shell is a fixture)
    WIDGET_MIME,
    _mpi_names,
    _worker_env,
    ipython_shell,
    out,
    run,
    shell,
)

pytestmark = pytest.mark.filterwarnings("ignore:`Completer.complete` is pending deprecation")


# -- real clusters -----------------------------------------------------------------------


@pytest.mark.usefixtures("no_leaks")
def test_lifecycle_through_every_subcommand(shell):
    import distributed

    handle, cap = run(shell, "start -n 1 --name first")
    assert handle is manager.get("first")
    assert handle.status == "running"
    assert distributed.default_client() is handle.client
    assert cap.stdout.startswith(
        f"started first (local, id {handle.id}): 1 worker at {handle.scheduler_address}"
    )
    assert "its Client is the default Dask client" in cap.stdout
    assert handle.client.submit(sum, [1, 2, 3]).result() == 6

    # status and a bare %pipecluster display the widget, with static fallbacks
    for line in ("status", "", "status first"):
        result, cap = run(shell, line)
        assert result is None
        (shown,) = cap.outputs
        assert {WIDGET_MIME, "text/html", "text/plain"} <= set(shown.data)
        assert "Cluster first (local" in shown.data["text/plain"]

    assert out(shell, "scale 2") == "first: asked for 2 workers\n"
    handle.wait_for_workers(2, timeout=60)
    assert handle.model()["workers"] == 2
    assert out(shell, "adapt 1 2 first") == "first: adaptive between 1 and 2 workers\n"
    assert handle.model()["adapt"] == {"minimum": 1, "maximum": 2}

    listing = out(shell, "list")
    assert f"*{handle.id}  first" in listing
    assert "this kernel" in listing

    logs = out(shell, "logs --scheduler -n 3")
    assert logs.startswith("== scheduler ==\n")
    assert len(logs.strip().splitlines()) == 4
    assert "== worker 0 ==" in out(shell, "logs 0 -n 2")
    with pytest.raises(UsageError, match="no worker 'nine'"):
        shell.run_line_magic("pipecluster", "logs nine")

    (link,) = run(shell, "dashboard")[1].outputs
    assert link.data["text/plain"] == f"first dashboard: {handle.dashboard_link}"
    assert f'href="{handle.dashboard_link}"' in link.data["text/html"]

    second = shell.run_line_magic("pipecluster", "start -n 1 --name second --no-wait")
    assert distributed.default_client() is second.client
    assert out(shell, "use first").startswith("the default Dask client is now first's")
    assert distributed.default_client() is handle.client
    assert manager.get() is handle  # commands without NAME now act on it
    (link,) = run(shell, "dashboard")[1].outputs
    assert link.data["text/plain"].startswith("first dashboard:")
    assert set(shell.Completer.complete(line_buffer="%pipecluster stop ", cursor_pos=18)[1]) == {
        "first",
        "second",
    }

    assert out(shell, "stop second") == "stopped second\n"
    assert second.status == "stopped"
    assert out(shell, "stop") == "stopped first\n"
    assert handle.status == "stopped"
    assert not manager.clusters()
    assert out(shell, "stop") == "no clusters in this kernel\n"
    assert out(shell, "list") == "no running clusters (this kernel's or discovered)\n"


@pytest.mark.usefixtures("no_leaks")
def test_assignment_and_display_of_the_returned_handle(shell):
    with capture_output() as cap:
        result = shell.run_cell("c = %pipecluster start -n 1")
    assert result.success, cap.stderr
    handle = shell.user_ns["c"]
    assert handle is manager.get()
    assert "started local" in cap.stdout
    assert not cap.outputs  # an assignment displays nothing
    with capture_output() as cap:
        shell.run_cell("c")  # the terminal displayhook prints the text/plain part
    assert cap.stdout.startswith("Out[")
    assert f"Cluster local (local, id {handle.id}): running" in cap.stdout
    data, _ = shell.display_formatter.format(handle)  # what a kernel's displayhook sends
    assert {WIDGET_MIME, "text/html", "text/plain"} <= set(data)
    assert "1 worker, 1 thread," in data["text/html"]
    with capture_output() as cap:
        shell.run_cell("%pipecluster stop --all")
    assert cap.stdout == "stopped local\n"


@pytest.mark.usefixtures("no_leaks")
def test_start_in_an_mpi_launch_inside_a_slurm_allocation_says_what_it_sanitized(
    shell, monkeypatch
):
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "0")
    monkeypatch.setenv("OMPI_MCA_ess", "pmi")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_NTASKS", "1")
    handle, cap = run(shell, "start")  # nothing to say: the local default is SLURM_NTASKS workers
    lines = cap.stdout.splitlines()
    assert len(lines) == 2
    assert ": 1 worker at " in lines[0]
    assert lines[1] == (
        "environment: removed 3 MPI launch variables "
        "(OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE, OMPI_MCA_ess); "
        "removed 2 variables of the enclosing SLURM job from submissions "
        "(SLURM_JOB_ID, SLURM_NTASKS)"
    )
    assert handle.client.run(_mpi_names) == {
        w: [] for w in handle.client.scheduler_info()["workers"]
    }
    assert os.environ["OMPI_COMM_WORLD_SIZE"] == "2"  # the kernel's own environment is intact
    run(shell, "stop")


def test_start_refused_on_mpi_rank_above_zero(shell, monkeypatch):
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "1")
    with pytest.raises(UsageError, match="refusing to start a cluster from MPI rank 1"):
        shell.run_line_magic("pipecluster", "start -n 1")
    assert not manager.clusters()


OWNER_SCRIPT = """
import sys
import pipejupyter
if __name__ == "__main__":
    handle = pipejupyter.start(workers=1, name="elsewhere", timeout=60)
    print(handle.id, handle.scheduler_address, flush=True)
    sys.stdin.read()  # run until the test closes stdin
    handle.stop()
"""


@pytest.mark.usefixtures("no_leaks")
def test_list_and_connect_clusters_of_another_process(shell, isolated):
    script = isolated / "owner.py"
    script.write_text(OWNER_SCRIPT)
    owner = subprocess.Popen(
        [PYTHON, str(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        cluster_id, address = owner.stdout.readline().split()
        listing = out(shell, "list")
        assert f" {cluster_id}  elsewhere" in listing
        assert f"script pid {owner.pid}" in listing
        assert (
            cluster_id
            in shell.Completer.complete(line_buffer="%pipecluster connect ", cursor_pos=21)[1]
        )

        handle, cap = run(shell, f"connect {cluster_id}")
        assert handle.owned is False
        assert handle.scheduler_address == address
        assert cap.stdout.startswith("connected to elsewhere (local, id ")
        import distributed

        assert distributed.default_client() is handle.client
        assert handle.client.submit(sum, [2, 3]).result() == 5
        with pytest.raises(
            UsageError, match="cannot scale 'elsewhere': it was connected, not started"
        ):
            shell.run_line_magic("pipecluster", "scale 3")
        assert out(shell, "stop") == "disconnected from elsewhere\n"
        assert discovery.scheduler_reachable(address)  # disconnecting leaves it running

        by_address = shell.run_line_magic("pipecluster", f"connect {address} --name byaddr")
        assert by_address.name == "byaddr"
        assert by_address.model()["workers"] == 1
        assert out(shell, "stop byaddr") == "disconnected from byaddr\n"
    finally:
        owner.stdin.close()
        owner.wait(timeout=60)
    assert wait_until(lambda: not discovery.read_all(), timeout=10)
    assert sys.modules["pipejupyter.lifecycle.manager"].default_manager.owner_kind == "kernel"
