"""Prefect flows on pipejupyter's task runner next to prefect-dask's own, side by side.

    PYTHONPATH=. .venv/bin/python benchmarks/prefect_runner.py [TASKS]

One flow run maps a no-op Prefect task over TASKS items (default 1,000). Ours:
``task_runner(profile="local", workers=2)``, whose flow run starts the local profile's
cluster through the lifecycle core and stops it after. Baseline: ``DaskTaskRunner(
cluster_class="distributed.LocalCluster")`` with the same workers (2 processes x 1 thread
on loopback). Each timing is a whole flow run: cluster start, the tasks, cluster stop.
Both report to one temporary Prefect API (prefect_test_harness, SQLite) with Prefect's
default settings; PREFECT_HOME is a temporary folder. Runs are interleaved ours, raw, raw,
ours after one small warm-up run of each, and the medians are compared.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

TASKS = 1000
WORKERS = 2
#: seconds the temporary Prefect API may take to start (migrations, on a busy machine)
HARNESS_TIMEOUT = 240


def _baseline_runner():
    from prefect_dask import DaskTaskRunner

    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": WORKERS,
            "threads_per_worker": 1,
            "processes": True,
            "host": "127.0.0.1",
            "dashboard_address": "127.0.0.1:0",
            "silence_logs": 40,
        },
    )


def _our_runner():
    from pipejupyter.prefect import task_runner

    return task_runner(profile="local", workers=WORKERS)


def _flow_seconds(runner, tasks: int) -> float:
    from prefect import flow, task

    @task
    def noop(x: int) -> int:
        return x

    @flow(name="noop-map")
    def noop_map(n: int) -> int:
        return len(noop.map(range(n)).result())

    started = time.perf_counter()
    assert noop_map.with_options(task_runner=runner)(tasks) == tasks
    return time.perf_counter() - started


def bench(tasks: int = TASKS) -> list[dict]:
    name = f"Prefect: {tasks:,} no-op tasks, {WORKERS} local workers, whole flow run"
    try:
        import cloudpickle
        import prefect  # noqa: F401
        import prefect_dask  # noqa: F401
    except ImportError as exc:
        return [{"name": name, "skipped": f"needs pip install 'pipejupyter[prefect]' ({exc})"}]
    home = tempfile.mkdtemp(prefix="pipejupyter-bench-prefect-")
    os.environ["PREFECT_HOME"] = home  # only for the processes below; never ~/.prefect
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import us
    from prefect.testing.utilities import prefect_test_harness

    ours: list[float] = []
    base: list[float] = []
    workdir = os.getcwd()
    try:
        os.chdir(home)  # worker scratch space and flow results stay in the temporary folder
        with prefect_test_harness(server_startup_timeout=HARNESS_TIMEOUT):
            _flow_seconds(_our_runner(), 10)  # warm-up: the API's first writes, imports
            _flow_seconds(_baseline_runner(), 10)
            for side in ("ours", "raw", "raw", "ours"):
                if side == "ours":
                    ours.append(_flow_seconds(_our_runner(), tasks))
                else:
                    base.append(_flow_seconds(_baseline_runner(), tasks))
    finally:
        os.chdir(workdir)
        shutil.rmtree(home, ignore_errors=True)
    o, b = statistics.median(ours), statistics.median(base)
    return [
        {
            "name": f"{name}: task_runner vs DaskTaskRunner(LocalCluster)",
            "ours": o,
            "baseline": b,
            "ratio": o / b,
            "unit": "s",
            "ours_runs": ours,
            "baseline_runs": base,
        }
    ]


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    for row in bench(int(sys.argv[1]) if len(sys.argv) > 1 else TASKS):
        print(row)
