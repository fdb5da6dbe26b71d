"""SLURM through pipejupyter next to raw dask-jobqueue, on the real SLURM of ci/slurm.sh.

    . .ci-state/slurm/env.sh && PYTHONPATH=. .venv/bin/python benchmarks/slurm_start.py

1. start: ``pipejupyter.start("slurm", workers=2)`` (which checks the partition, asks
   ``sbatch --test-only``, submits synchronously and waits) against ``SLURMCluster(...)``
   + ``Client`` + ``scale(2)`` + ``wait_for_workers(2)``, interleaved.
2. SIGKILL: a Jupyter kernel that owns 3 workers, each job booking half the node's CPUs
   (2 jobs running, 1 pending), is killed with SIGKILL; seconds until ``squeue`` shows
   none of its jobs.
   Baseline: the same with raw dask-jobqueue in the kernel (no scheduler probe).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEMORY = "1GiB"


def slurm_up() -> bool:
    if not shutil.which("sbatch") or not os.environ.get("SLURM_CONF"):
        return False
    done = subprocess.run(["sinfo", "-h", "-o", "%a"], capture_output=True, text=True, timeout=10)
    return done.returncode == 0 and "up" in done.stdout


def partition() -> str:
    out = subprocess.run(
        ["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=10
    ).stdout.split()
    default = [p for p in out if p.endswith("*")]
    return (default or out)[0].rstrip("*")


def jobs_in(directory: str) -> list[str]:
    """Job ids whose working directory is ``directory`` (ours only, whoever else uses SLURM)."""
    out = subprocess.run(
        ["squeue", "-h", "-o", "%i %Z"], capture_output=True, text=True, timeout=10
    ).stdout
    return [line.split()[0] for line in out.splitlines() if line.split()[1:] == [directory]]


def wait_empty(directory: str, timeout: float = 120) -> float:
    t = time.perf_counter()
    while jobs_in(directory):
        if time.perf_counter() - t > timeout:
            raise TimeoutError(f"jobs of {directory} still queued after {timeout} s")
        time.sleep(0.1)
    return time.perf_counter() - t


def start_ours(n: int) -> float:
    import pipejupyter

    t = time.perf_counter()
    handle = pipejupyter.start(
        "slurm", workers=n, overrides=[f"cluster_kwargs.memory={MEMORY}"], set_default=False
    )
    elapsed = time.perf_counter() - t
    handle.stop()
    return elapsed


def start_raw(n: int) -> float:
    from dask_jobqueue import SLURMCluster
    from timing import time_to_workers

    return time_to_workers(
        lambda: SLURMCluster(
            cores=1,
            processes=1,
            memory=MEMORY,
            queue=partition(),
            walltime="01:00:00",
            scheduler_options={"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"},
        ),
        n,
        scale=True,
    )


def bench_start(n: int = 2, repeat: int = 3) -> dict:
    ours, base = [], []
    cwd = os.getcwd()
    for _ in range(repeat):
        wait_empty(cwd)
        base.append(start_raw(n))
        wait_empty(cwd)
        ours.append(start_ours(n))
    o, b = statistics.median(ours), statistics.median(base)
    return {
        "name": f"slurm start to {n} workers vs SLURMCluster+scale+wait",
        "ours": o,
        "baseline": b,
        "ratio": o / b,
        "unit": "s",
    }


# Each job books half the node's CPUs (job_cpu; the worker keeps one thread), so two run
# and the third waits in the queue however many CPUs ci/slurm.sh declares. Without it all
# three run, and the third is often caught starting when the kernel dies: it then waits
# out its death_timeout (60 s) on either side, and the row measures that race.
OURS_CELL = f"""
import pipejupyter
h = pipejupyter.start("slurm", workers=3, wait=False,
                      overrides=["cluster_kwargs.memory={MEMORY}",
                                 "cluster_kwargs.job_cpu={{half}}"])
h.wait_for_workers(2, timeout=120)
"""
RAW_CELL = f"""
from dask_jobqueue import SLURMCluster
from distributed import Client
c = SLURMCluster(cores=1, processes=1, memory="{MEMORY}", queue="{{partition}}",
                 walltime="01:00:00", job_cpu={{half}},
                 scheduler_options={{{{"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"}}}})
cl = Client(c)
c.scale(3)
cl.wait_for_workers(2, timeout=120)
"""


def kill_kernel_owning_cluster(cell: str, directory: str) -> float:
    """Run ``cell`` in a fresh kernel (cwd ``directory``), SIGKILL it, time the empty queue."""
    from jupyter_client.manager import start_new_kernel

    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    km, kc = start_new_kernel(kernel_name="python3", cwd=directory, env=env)
    try:
        reply = kc.execute_interactive(cell, timeout=180, output_hook=lambda msg: None)
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"cell failed: {reply['content'].get('evalue')}")
        if len(jobs_in(directory)) < 3:
            raise RuntimeError(f"expected 3 jobs, squeue shows {jobs_in(directory)}")
        os.kill(km.provisioner.process.pid, 9)
        t = time.perf_counter()
        wait_empty(directory, timeout=180)
        return time.perf_counter() - t
    finally:
        kc.stop_channels()
        km.cleanup_resources()


def node_cpus() -> int:
    out = subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True, timeout=10)
    return int(out.stdout.split()[0])


def bench_sigkill(repeat: int = 1) -> dict:
    ours, base = [], []
    half = max(1, node_cpus() // 2)
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as directory:
            ours.append(kill_kernel_owning_cluster(OURS_CELL.format(half=half), directory))
        with tempfile.TemporaryDirectory() as directory:
            raw = RAW_CELL.format(partition=partition(), half=half)
            base.append(kill_kernel_owning_cluster(raw, directory))
    o, b = statistics.median(ours), statistics.median(base)
    return {
        "name": "kernel SIGKILL (2 running + 1 pending job) to empty queue vs raw",
        "ours": o,
        "baseline": b,
        "ratio": o / b,
        "unit": "s",
    }


def bench() -> list[dict]:
    if not slurm_up():
        return [
            {
                "name": "slurm_start",
                "skipped": "SLURM not running (ci/slurm.sh start; . .ci-state/slurm/env.sh)",
            }
        ]
    with tempfile.TemporaryDirectory() as directory:
        here = os.getcwd()
        os.chdir(directory)  # log directories and job working directories stay in here
        try:
            rows = [bench_start()]
        finally:
            os.chdir(here)
    rows.append(bench_sigkill())
    return rows


if __name__ == "__main__":
    for row in bench():
        if "skipped" in row:
            print(f"{row['name']}: skipped: {row['skipped']}")
        else:
            print(
                f"{row['name']}: ours {row['ours']:.2f} s, "
                f"baseline {row['baseline']:.2f} s, ratio {row['ratio']:.2f}"
            )
    sys.exit(0)
