"""A gateway cluster must not outlive the kernel that started it (REAL dask-gateway-server).

The test server has no idle timeout, on purpose: without pipejupyter's reaper a cluster
of a SIGKILLed kernel would run until the server stops.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import pipejupyter
from pipejupyter.lifecycle import discovery
from pipejupyter.processes import pid_alive
from tests.support.common import ROOT, live_children, wait_until
from tests.support.gateway import cluster_processes, gw  # noqa: F401  (gw is a fixture)

pytestmark = pytest.mark.gateway


def reapers() -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if b"pipejupyter.backends.reaper" in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return [p for p in found if pid_alive(p)]


KERNEL_CELL = """
import pipejupyter
h = pipejupyter.start("gw", workers=1, timeout=120)
print("CLUSTER", h.backend.cluster_name, h.id)
"""


def test_sigkill_of_the_owning_kernel_stops_its_gateway_cluster(gw, isolated):
    from jupyter_client.manager import start_new_kernel

    work = isolated / "work"
    reapers_before = set(reapers())
    km, kc = start_new_kernel(
        kernel_name="python3", cwd=str(work), env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    out: list[str] = []
    try:
        reply = kc.execute_interactive(
            KERNEL_CELL,
            timeout=180,
            output_hook=lambda msg: (
                out.append(msg["content"].get("text", "")) if msg["msg_type"] == "stream" else None
            ),
        )
        assert reply["content"]["status"] == "ok", reply["content"].get("evalue")
        name, record_id = next(
            line.split()[1:] for line in "".join(out).splitlines() if line.startswith("CLUSTER")
        )
        assert gw.active() == [name]
        assert cluster_processes(name), "the gateway runs no process for the cluster"
        assert [r["id"] for r in discovery.read_all(prune=False)] == [record_id]
        guard = set(reapers()) - reapers_before
        assert len(guard) == 1, guard

        killed = time.monotonic()
        os.kill(km.provisioner.process.pid, 9)
        assert wait_until(lambda: not gw.active(), timeout=60), (
            f"still on the gateway: {gw.active()}"
        )
        seconds = time.monotonic() - killed
        assert wait_until(lambda: not cluster_processes(name), timeout=30)
        assert wait_until(lambda: not discovery.read_all(prune=False), timeout=10)
        assert wait_until(lambda: not guard & set(reapers()), timeout=10), (
            "the reaper is still running"
        )
        print(f"gateway cluster gone {seconds:.1f} s after SIGKILL of the kernel")
    finally:
        kc.stop_channels()
        km.cleanup_resources()


def test_stop_releases_the_reaper_and_the_cluster_goes(gw):
    before = set(reapers())
    children = live_children(os.getpid())
    handle = pipejupyter.start("gw", workers=1, timeout=120, set_default=False)
    name = handle.backend.cluster_name
    guard = set(reapers()) - before
    assert len(guard) == 1
    assert guard <= live_children(os.getpid())
    handle.stop(timeout=30)
    assert not gw.active()
    assert not cluster_processes(name)
    assert not guard & set(reapers())
    assert wait_until(lambda: not (live_children(os.getpid()) - children), timeout=20)
