"""The reaper: a remote cluster is stopped when its owner dies, and only then.

The protocol is tested with a harmless order (touch a file) and real processes; the
gateway case with a real kernel and a real dask-gateway-server is in test_gateway_faults.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipejupyter.processes import pid_alive
from tests.support.common import ROOT, wait_until

pytestmark = pytest.mark.usefixtures("isolated")

OWNER = textwrap.dedent(
    """
    import functools, json, sys, time
    from pathlib import Path
    from pipejupyter.backends.reaper import Order, Reaper

    marker, record, release = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "release"
    Path(record).write_text("{}")
    reaper = Reaper.start(Order("test", functools.partial(Path.touch, marker), record))
    print(json.dumps({"reaper": reaper.pid, "ready": reaper.confirm()}), flush=True)
    if release:
        reaper.release()
        print("released", flush=True)
    time.sleep(600)
    """
)


def _owner(tmp_path: Path, release: bool) -> tuple[subprocess.Popen, dict, Path, Path]:
    marker, record = tmp_path / "stopped", tmp_path / "cluster-x.json"
    proc = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(marker), str(record), "release" if release else "keep"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        start_new_session=True,  # its own process group, as a kernel has
    )
    info = json.loads(proc.stdout.readline())
    assert info["ready"]
    assert pid_alive(info["reaper"])
    return proc, info, marker, record


@pytest.mark.parametrize(
    "how", ["SIGKILL of the owner", "SIGKILL of its process group (kernel restart)"]
)
def test_owner_killed_runs_the_order_and_removes_the_record(tmp_path, how):
    proc, info, marker, record = _owner(tmp_path, release=False)
    assert os.getsid(info["reaper"]) != os.getsid(proc.pid)  # outside the owner's session
    assert not marker.exists()
    if "group" in how:
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        proc.kill()
    proc.wait()
    assert wait_until(marker.exists, timeout=10), "the order was not carried out"
    assert wait_until(lambda: not record.exists(), timeout=5)
    assert wait_until(lambda: not pid_alive(info["reaper"]), timeout=10), (
        "the reaper outlived its work"
    )


def test_release_means_nothing_is_done_even_when_the_owner_dies_later(tmp_path):
    proc, info, marker, record = _owner(tmp_path, release=True)
    assert proc.stdout.readline().strip() == "released"
    assert wait_until(lambda: not pid_alive(info["reaper"]), timeout=10)
    proc.kill()
    proc.wait()
    assert not marker.exists()
    assert record.exists()  # the owner removes its own record when it stops normally
