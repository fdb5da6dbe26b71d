"""Faults with real processes: a scheduler that dies, an owner killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

import pipejupyter
from pipejupyter.lifecycle import discovery
from pipejupyter.processes import pid_alive as _alive
from tests.support.common import ROOT, wait_until

pytestmark = pytest.mark.usefixtures("isolated", "no_leaks")


def test_scheduler_killed_shows_lost_and_a_new_start_works(tmp_path):
    sched = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "distributed.cli.dask_scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--dashboard-address",
            "127.0.0.1:0",
            "--scheduler-file",
            str(tmp_path / "s.json"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_until(lambda: (tmp_path / "s.json").exists(), timeout=30)
        address = json.loads((tmp_path / "s.json").read_text())["address"]
        handle = pipejupyter.connect(address, set_default=False)
        assert handle.model()["status"] == "running"
        sched.kill()
        sched.wait()
        model = handle.model(timeout=2)
        assert model["status"] == "lost"
        assert "scheduler not reachable" in model["error"]
        assert model["workers"] == 0
        handle.stop()  # stopping a lost cluster is clean, not an exception
        assert handle.status == "stopped"
    finally:
        sched.kill()
    fresh = pipejupyter.start(workers=1, timeout=60)
    assert fresh.client.submit(sum, [2, 3]).result() == 5
    fresh.stop()


def test_sigkill_of_the_owner_leaves_no_worker_and_its_file_is_pruned(isolated):
    code = textwrap.dedent(
        """
        import json, os, sys, time, pipejupyter
        h = pipejupyter.start(workers=2, timeout=60)
        pids = list(h.client.run(os.getpid).values())
        print(json.dumps({"id": h.id, "workers": pids}), flush=True)
        time.sleep(600)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT, env=os.environ
    )
    info = json.loads(proc.stdout.readline())
    assert all(_alive(p) for p in info["workers"])
    assert [r["id"] for r in discovery.read_all()] == [info["id"]]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # Worker processes watch their parent and exit with it.
    assert wait_until(lambda: not any(_alive(p) for p in info["workers"]), timeout=30)
    assert discovery.read_all() == []
    assert list((isolated / "runtime").glob("cluster-*.json")) == []
