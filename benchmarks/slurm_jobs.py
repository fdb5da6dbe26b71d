"""Fifty SLURM worker jobs through pipejupyter next to raw dask-jobqueue (real SLURM, ci/slurm.sh).

    . .ci-state/slurm/env.sh && PYTHONPATH=. .venv/bin/python benchmarks/slurm_jobs.py [-n 50]

The single node of ci/slurm.sh declares 64 CPUs (more than the machine has) so that 50
one-core jobs run at once; each asks 256 MiB and a 10-minute walltime.

Both starts run with death_timeout=300 (DEATH_TIMEOUT): the nanny's death_timeout bounds a
worker's whole start (two Python processes importing distributed), and 50 such starts on
2 real cores take 40-60 s, more under load. With dask-jobqueue's default 60 s (ours too)
the nannies of the slower jobs end them (exit 1), nothing resubmits them, and
wait_for_workers waits to its timeout: that, on either side, was the "12 of 50 workers in
600 s" of an earlier loaded run. The SIGKILL rows keep the defaults.

1. start: ``pipejupyter.start("slurm", workers=50)`` against ``SLURMCluster(...)`` +
   ``Client`` + ``scale(50)`` + ``wait_for_workers(50)``, one after the other.
2. SIGKILL: a Jupyter kernel that owns 50 jobs is killed with SIGKILL; seconds until
   ``squeue`` shows none of its jobs. Baseline: raw dask-jobqueue in the kernel.

Only jobs whose working directory is this benchmark's temporary directory are looked at.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from slurm_start import ROOT, jobs_in, partition, slurm_up, wait_empty  # noqa: E402

JOBS = 50
MEMORY = "256MiB"
WALLTIME = "00:10:00"
TIMEOUT = 600  # seconds either side may take to reach its workers
DEATH_TIMEOUT = 300  # both starts: 50 worker starts on 2 real cores (see above)


def start_ours(n: int) -> float:
    import pipejupyter

    t = time.perf_counter()
    handle = pipejupyter.start(
        "slurm",
        workers=n,
        overrides=[
            f"cluster_kwargs.memory={MEMORY}",
            f"cluster_kwargs.walltime={WALLTIME}",
            f"cluster_kwargs.death_timeout={DEATH_TIMEOUT}",
        ],
        set_default=False,
        timeout=TIMEOUT,
    )
    elapsed = time.perf_counter() - t
    handle.stop()
    return elapsed


def start_raw(n: int) -> float:
    from dask_jobqueue import SLURMCluster
    from distributed import Client

    t = time.perf_counter()
    cluster = SLURMCluster(
        cores=1,
        processes=1,
        memory=MEMORY,
        queue=partition(),
        walltime=WALLTIME,
        death_timeout=DEATH_TIMEOUT,
        scheduler_options={"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"},
    )
    try:
        with Client(cluster, set_as_default=False) as client:
            cluster.scale(n)
            client.wait_for_workers(n, timeout=TIMEOUT)
            return time.perf_counter() - t
    finally:
        cluster.close()


OURS_CELL = """
import pipejupyter
h = pipejupyter.start("slurm", workers={n}, wait=False,
                      overrides=["cluster_kwargs.memory={memory}",
                                 "cluster_kwargs.walltime={walltime}"])
"""
RAW_CELL = """
from dask_jobqueue import SLURMCluster
from distributed import Client
c = SLURMCluster(cores=1, processes=1, memory="{memory}", queue="{partition}",
                 walltime="{walltime}",
                 scheduler_options={{"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"}})
cl = Client(c)
c.scale({n})
"""


def kill_kernel_with_jobs(cell: str, directory: str, n: int) -> float:
    """Run ``cell`` in a fresh kernel (cwd ``directory``), wait until its ``n`` jobs are
    queued, SIGKILL the kernel, time until the queue holds none of them."""
    from jupyter_client.manager import start_new_kernel

    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    km, kc = start_new_kernel(kernel_name="python3", cwd=directory, env=env)
    try:
        reply = kc.execute_interactive(cell, timeout=300, output_hook=lambda msg: None)
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"cell failed: {reply['content'].get('evalue')}")
        deadline = time.monotonic() + 300
        while len(jobs_in(directory)) < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"expected {n} jobs, squeue shows {len(jobs_in(directory))}")
            time.sleep(0.2)
        os.kill(km.provisioner.process.pid, 9)
        t = time.perf_counter()
        wait_empty(directory, timeout=300)
        return time.perf_counter() - t
    finally:
        kc.stop_channels()
        km.cleanup_resources()
        leftover = jobs_in(directory)  # ours only: their working directory is ours
        if leftover:
            subprocess.run(["scancel", *leftover], timeout=30, check=False)


def bench(n: int = JOBS) -> list[dict]:
    if not slurm_up():
        return [
            {
                "name": "slurm_jobs",
                "skipped": "SLURM not running (ci/slurm.sh start; . .ci-state/slurm/env.sh)",
            }
        ]
    rows = []
    here = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="pj-slurm-jobs-") as directory:
        os.chdir(directory)  # log directories and job working directories stay in here
        try:
            wait_empty(directory)
            base = start_raw(n)
            wait_empty(directory, timeout=300)
            ours = start_ours(n)
            wait_empty(directory, timeout=300)
        finally:
            os.chdir(here)
    rows.append(
        {
            "name": f"slurm start to {n} workers vs SLURMCluster+scale({n})+wait",
            "ours": ours,
            "baseline": base,
        }
    )
    values = {"memory": MEMORY, "walltime": WALLTIME, "n": n, "partition": partition()}
    with tempfile.TemporaryDirectory(prefix="pj-slurm-kill-") as directory:
        ours = kill_kernel_with_jobs(OURS_CELL.format(**values), directory, n)
    with tempfile.TemporaryDirectory(prefix="pj-slurm-kill-") as directory:
        base = kill_kernel_with_jobs(RAW_CELL.format(**values), directory, n)
    rows.append(
        {
            "name": f"kernel SIGKILL with {n} jobs to empty queue vs raw dask-jobqueue",
            "ours": ours,
            "baseline": base,
        }
    )
    return [{**r, "ratio": r["ours"] / r["baseline"], "unit": "s"} for r in rows]


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=JOBS)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    for row in bench(args.n):
        if args.json:
            print(json.dumps(row))
        elif "skipped" in row:
            print(f"{row['name']}: skipped: {row['skipped']}")
        else:
            print(
                f"{row['name']}: ours {row['ours']:.2f} s, "
                f"baseline {row['baseline']:.2f} s, ratio {row['ratio']:.2f}"
            )
