"""Worker jobs that end before their worker connects, on the real SLURM of ci/slurm.sh: the
start fails as soon as SLURM says so, naming the job, its state and exit code and the end
of its output, instead of waiting out its timeout; nothing stays queued or running."""

from __future__ import annotations

import os
import re
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

import pipejupyter
from pipejupyter.backends.jobqueue import base as jobqueue_base
from pipejupyter.backends.jobqueue.schedulers import STATE_CACHE
from pipejupyter.errors import ClusterError
from pipejupyter.lifecycle import discovery
from tests.support.common import live_children, wait_until
from tests.support.slurm import jobs_under, slurm_clean, wait_no_jobs  # noqa: F401 (fixture)

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_clean", "no_leaks")]
SMALL = ["cluster_kwargs.memory=256MiB", "cluster_kwargs.walltime=00:10:00"]


def _processes_in(directory: Path) -> list[tuple[int, str]]:
    """Processes (any parent: SLURM's job steps are not our children) working in
    ``directory``, where the test's worker jobs run."""
    root = str(directory.resolve())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if cmdline and (cwd == root or cwd.startswith(root + os.sep)):
            found.append((int(entry.name), cmdline[:120]))
    return found


def test_broken_prologue_fails_fast_with_the_jobs_output(isolated):
    before = live_children(os.getpid())
    cfg = isolated / "broken.yaml"
    cfg.write_text(
        textwrap.dedent("""\
        pipecluster:
          profiles:
            slurm:
              cluster_kwargs:
                job_script_prologue: ["echo broken-prologue-marker >&2", "exit 3"]
        """)
    )
    started = time.monotonic()
    with pytest.raises(ClusterError) as err:
        pipejupyter.start("slurm", workers=2, config=cfg, overrides=SMALL, timeout=120)
    elapsed = time.monotonic() - started
    text = str(err.value)
    print(f"failed after {elapsed:.1f} s:\n{text}")
    assert elapsed < 60, f"waited {elapsed:.0f} s of the 120 s timeout: {text}"
    job = re.search(r"worker job (\d+) \(", text)
    assert job, text
    assert "ended before its worker connected" in text
    assert "FAILED, exit code 3" in text  # scontrol's JobState and ExitCode
    assert "broken-prologue-marker" in text
    assert re.search(rf"\S*-{job[1]}\.err", text), "the output file is named"
    assert "only 0 of 2 workers" not in text
    assert wait_no_jobs(isolated, timeout=30) is not None, jobs_under(isolated)
    assert wait_until(lambda: not _processes_in(isolated), timeout=10), _processes_in(isolated)
    assert not pipejupyter.clusters()
    assert not discovery.read_all()
    assert wait_until(lambda: not (live_children(os.getpid()) - before), timeout=10)


def test_a_job_whose_worker_connected_then_ended_is_no_failed_start(isolated, monkeypatch):
    """Both ways a connected worker is known: seen connected at an earlier look, or its
    output file says it registered (connected and gone between two looks)."""
    handle = pipejupyter.start("slurm", workers=1, overrides=SMALL, timeout=120)
    (job_id,) = jobs_under(isolated)
    names = {w["name"] for w in handle.model()["worker_info"]}
    assert handle.backend.ended_workers(names) == []  # running: nothing ended
    # The job ends under the cluster (as a walltime would): its worker had connected.
    subprocess.run(["scancel", job_id], check=True, timeout=10)
    assert wait_no_jobs(isolated, timeout=30) is not None
    time.sleep(STATE_CACHE + 0.2)  # past the squeue answer cached while it ran
    with monkeypatch.context() as patch:
        patch.setattr(jobqueue_base, "REGISTERED", "a line no worker writes")
        assert handle.backend.ended_workers(set()) == []  # seen connected before
        handle.backend._ever_connected.clear()
        (ended,) = handle.backend.ended_workers(set())  # neither: a failed start
        assert (ended["job_id"], ended["state"]) == (job_id, "CANCELLED")
    handle.backend._ever_connected.clear()
    assert handle.backend.ended_workers(set()) == []  # its output says it registered
    handle.stop()
