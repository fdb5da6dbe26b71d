"""A real `jupyter server` that owns clusters, killed with SIGKILL (as the OOM killer would).

No shutdown hook and no atexit handler runs then. What must still hold: every worker
process ends, the scheduler and dashboard ports close, the cluster's discovery file is
pruned, and (SLURM) the queue empties. Only the server's own pid is killed.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from pipejupyter.lifecycle import discovery
from pipejupyter.processes import pid_alive as _alive
from tests.support.common import children_of, wait_until
from tests.support.lab import LabServer
from tests.support.slurm import (  # noqa: F401 (slurm_clean: fixture)
    half_node,
    jobs_under,
    slurm_clean,
    wait_no_jobs,
)

pytestmark = pytest.mark.usefixtures("isolated", "no_leaks")

#: how long everything may take to disappear after the SIGKILL
GONE_WITHIN = 30.0
SLURM_SMALL = {"cluster_kwargs.memory": "1GiB", "cluster_kwargs.walltime": "00:20:00"}


def _listening(address: str | None) -> bool:
    if not address:
        return False
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    try:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
def server(isolated):
    """`jupyter server` with the isolated HOME, working dir and pipejupyter runtime dir."""
    lab = LabServer(isolated, app="server")
    lab.runtime = Path(os.environ["PIPEJUPYTER_RUNTIME_DIR"])
    lab.env["PIPEJUPYTER_RUNTIME_DIR"] = str(lab.runtime)
    lab.start()
    try:
        yield lab
    finally:
        if lab.proc is not None and lab.proc.poll() is None:
            lab.proc.kill()
            lab.proc.wait()


def _start(server: LabServer, body: dict[str, Any]) -> dict[str, Any]:
    status, model = server.request("POST", "pipejupyter/clusters", body, timeout=180)
    assert status != 404, f"pipejupyter server extension not loaded: {server.log_tail()}"
    assert status == 201, (status, model, server.log_tail())
    assert model["owner"]["pid"] == server.proc.pid, model["owner"]
    assert model["owner"]["kind"] == "server", model["owner"]
    return model


def _worker_pids(address: str) -> list[int]:
    from distributed import Client

    with Client(address, set_as_default=False, timeout=30) as client:
        return sorted(client.run(os.getpid).values())


def _kill(server: LabServer) -> float:
    """SIGKILL the server pid alone; the monotonic time of the kill."""
    killed_at = time.monotonic()
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait(timeout=10)
    return killed_at


def _ports(model: dict[str, Any]) -> list[str]:
    # The REST model links through the server's proxy; the port is in the direct address.
    dashboard = model.get("dashboard_direct") or model.get("dashboard_link")
    if dashboard:
        parsed = urlparse(dashboard)
        dashboard = f"tcp://{parsed.hostname}:{parsed.port}"
    return [a for a in (model["scheduler_address"], dashboard) if a]


def test_sigkill_of_the_server_leaves_no_local_worker_port_or_file(server, isolated):
    model = _start(server, {"profile": "local", "workers": 2})
    assert wait_until(
        lambda: server.request("GET", f"pipejupyter/clusters/{model['id']}")[1]["workers"] == 2, 60
    )
    workers = _worker_pids(model["scheduler_address"])
    descendants = children_of(server.proc.pid)
    ports = _ports(model)
    # The test can fail: before the kill, all of this is there to find.
    assert len(workers) == 2, workers
    assert all(_alive(p) for p in workers), workers
    assert set(workers) <= set(descendants), (workers, descendants)
    assert len(ports) == 2, ports
    assert all(_listening(a) for a in ports), ports
    assert [r["id"] for r in discovery.read_all()] == [model["id"]]

    killed_at = _kill(server)

    def everything_gone() -> bool:
        return (
            not any(_alive(p) for p in descendants)
            and not any(_listening(a) for a in ports)
            and discovery.read_all() == []
        )

    gone = wait_until(everything_gone, timeout=GONE_WITHIN)
    seconds = time.monotonic() - killed_at
    assert gone, {
        "alive": [
            (p, Path(f"/proc/{p}/cmdline").read_bytes()[:80]) for p in descendants if _alive(p)
        ],
        "listening": [a for a in ports if _listening(a)],
        "records": discovery.read_all(prune=False),
    }
    assert list((isolated / "runtime").glob("cluster-*.json")) == []
    print(
        f"local: {len(descendants)} processes, ports and discovery file gone "
        f"{seconds:.1f} s after SIGKILL"
    )


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_clean")  # set up before `server`: it finds SLURM_CONF
def test_sigkill_of_the_server_empties_the_slurm_queue(server, isolated):
    work = isolated / "work"  # the server's working dir: its jobs are found by it in squeue
    # Three jobs of half the node each: two run, one waits in the queue and starts only
    # after the kill (the harder case: a worker whose scheduler is gone).
    # POST answers once every asked-for worker is up: ask for two, then scale to three.
    half = dict(item.split("=", 1) for item in half_node())
    overrides = {**SLURM_SMALL, **{k: int(v) for k, v in half.items()}}
    model = _start(server, {"profile": "slurm", "workers": 2, "overrides": overrides})
    status, scaled = server.request("PATCH", f"pipejupyter/clusters/{model['id']}", {"workers": 3})
    assert status == 200, (status, scaled)

    def two_up_one_queued() -> bool:
        now = server.request("GET", f"pipejupyter/clusters/{model['id']}")[1]
        return now["workers"] == 2 and now["pending"] == 1

    assert wait_until(two_up_one_queued, timeout=120)
    jobs = jobs_under(work)
    ports = _ports(model)
    assert sorted(jobs.values()) == ["PENDING", "RUNNING", "RUNNING"], jobs
    assert all(_listening(a) for a in ports), ports
    assert [r["id"] for r in discovery.read_all()] == [model["id"]]

    killed_at = _kill(server)
    seconds = wait_no_jobs(work, timeout=GONE_WITHIN)
    assert seconds is not None, (
        f"jobs still queued {GONE_WITHIN:.0f} s after SIGKILL: {jobs_under(work)}"
    )
    # Without the scheduler probe in the job script the queued job, once it starts, waits
    # ~30 s for the nanny's connect timeout.
    assert seconds < 20, seconds
    assert wait_until(
        lambda: not any(_listening(a) for a in ports) and discovery.read_all() == [], timeout=5
    )
    assert list((isolated / "runtime").glob("cluster-*.json")) == []
    print(
        f"slurm: queue empty {seconds:.1f} s after SIGKILL "
        f"(all checks {time.monotonic() - killed_at:.1f} s)"
    )
