"""Helpers for tests on the real SLURM of ci/slurm.sh: is it up, whose jobs are queued.

Jobs are attributed to a test by their working directory (squeue %Z): every test runs in
its own temporary directory (the ``isolated`` fixture), so other users of the same SLURM
never confuse the leftover check.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from functools import cache
from pathlib import Path

import pytest

from tests.support.common import ROOT, require

ENV_FILE = ROOT / ".ci-state" / "slurm" / "env.sh"


def _conf_from_env_file() -> str | None:
    if not ENV_FILE.is_file():
        return None
    for line in ENV_FILE.read_text().splitlines():
        if line.startswith("export SLURM_CONF="):
            return line.split("=", 1)[1].strip().strip("'\"")
    return None


@cache
def slurm_up() -> bool:
    """sbatch on PATH and the controller answers (SLURM_CONF from the env or ci/slurm.sh)."""
    if not shutil.which("sbatch"):
        return False
    if not os.environ.get("SLURM_CONF") and not Path("/etc/slurm/slurm.conf").is_file():
        conf = _conf_from_env_file()
        if conf:
            os.environ["SLURM_CONF"] = conf
    try:
        done = subprocess.run(
            ["sinfo", "-h", "-o", "%a"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    if done.returncode != 0 or "up" not in done.stdout:
        return False
    _tool("squeue"), _tool("scancel")
    return True


def require_slurm() -> None:
    require(
        slurm_up(),
        "a running SLURM with sbatch on PATH (ci/slurm.sh start; . .ci-state/slurm/env.sh)",
    )


def node_cpus() -> int:
    """CPUs the test node declares (ci/slurm.sh declares more than the machine has)."""
    done = subprocess.run(
        [_tool("sinfo"), "-h", "-o", "%c"], capture_output=True, text=True, timeout=10
    )
    return int(done.stdout.split()[0])


def half_node() -> list[str]:
    """Overrides that make each worker job book half the node's CPUs (dask-jobqueue's
    ``job_cpu``; the worker keeps one thread), so two jobs run and a third waits in the
    queue (ci/slurm.sh declares many CPUs so other tests fit)."""
    return [f"cluster_kwargs.job_cpu={node_cpus() // 2}"]


@cache
def _tool(name: str) -> str:
    # Found once, so a test that hides sbatch from PATH can still look at the queue.
    return shutil.which(name) or name


def jobs_under(directory: Path | str) -> dict[str, str]:
    """``{job_id: state}`` of queued jobs whose working directory is inside ``directory``."""
    root = str(Path(directory).resolve())
    out = subprocess.run(
        [_tool("squeue"), "-h", "-o", "%i %T %Z"], capture_output=True, text=True, timeout=10
    ).stdout
    jobs = {}
    for line in out.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and (parts[2] == root or parts[2].startswith(root + os.sep)):
            jobs[parts[0]] = parts[1]
    return jobs


def wait_no_jobs(directory: Path | str, timeout: float = 60.0) -> float | None:
    """Seconds until no job of ``directory`` is queued; None if some remain at ``timeout``."""
    start = time.monotonic()
    while jobs_under(directory):
        if time.monotonic() - start > timeout:
            return None
        time.sleep(0.1)
    return time.monotonic() - start


@pytest.fixture
def slurm_clean(isolated):
    """Real SLURM required; after the test no job of it may be queued (leftovers cancelled)."""
    require_slurm()
    yield isolated
    import pipejupyter.lifecycle.manager as manager

    manager.stop_all(timeout=10)
    if wait_no_jobs(isolated, timeout=30) is None:
        left = jobs_under(isolated)
        subprocess.run([_tool("scancel"), *left], capture_output=True, timeout=10)
        pytest.fail(f"SLURM jobs left queued by the test (now cancelled): {left}")
