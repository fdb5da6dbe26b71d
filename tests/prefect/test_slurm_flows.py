"""Prefect flows whose task runner starts worker jobs on the real SLURM of ci/slurm.sh: the
jobs run the tasks while the flow runs and leave the queue when it ends; a kernel killed
in the middle of a flow leaves no job and no worker; CASA tasks run as Prefect tasks in
the jobs, from an Arrakis-style single-cluster file. Every test checks that none of its
jobs stays queued (fixture ``slurm_clean``)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import threading

import pytest

import pipejupyter
from pipejupyter.lifecycle import discovery
from pipejupyter.prefect import task_runner
from tests.support.common import PYTHON, ROOT, processes_with_env, require, wait_until, write
from tests.support.slurm import jobs_under, slurm_clean, wait_no_jobs  # noqa: F401 (fixture)

pytestmark = [
    pytest.mark.prefect,
    pytest.mark.slurm,
    pytest.mark.usefixtures("slurm_clean", "no_leaks"),
]
ITEMS = 200
SMALL = ["cluster_kwargs.memory=1GiB", "cluster_kwargs.walltime=00:20:00"]
CASA_SITE_CONFIG = ROOT / ".ci-state" / "casa" / "config.py"


@pytest.fixture
def flows(prefect_api):
    from tests.prefect import flows

    return flows


class QueueWatch:
    """Every job (and state) of ``directory`` seen in squeue while the block runs."""

    def __init__(self, directory) -> None:
        self.directory = directory
        self.seen: dict[str, set[str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(0.25):
            for job, state in jobs_under(self.directory).items():
                self.seen.setdefault(job, set()).add(state)

    def __enter__(self) -> QueueWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def test_a_flow_on_the_slurm_profile_runs_in_worker_jobs_and_empties_the_queue(isolated, flows):
    runner = task_runner("slurm", workers=2, overrides=SMALL, timeout=180)
    assert runner.cluster_class == "dask_jobqueue.SLURMCluster"
    assert not jobs_under(isolated)  # making the runner queues nothing

    with QueueWatch(isolated) as watch:
        out = flows.map_flow.with_options(task_runner=runner)(ITEMS)

    assert [r["x"] for r in out["results"]] == [x * x for x in range(ITEMS)]
    ran_in = {r["job"] for r in out["results"]}
    assert len(ran_in) == 2  # both worker jobs ran tasks
    assert ran_in <= set(watch.seen)
    assert all("RUNNING" in watch.seen[job] for job in ran_in)
    [(name, status, backend)] = out["clusters"]
    assert name.startswith("prefect-")
    assert (status, backend) == ("running", "slurm")
    assert out["discovered"] == [name]
    seconds = wait_no_jobs(isolated, timeout=30)
    assert seconds is not None, f"jobs still queued after the flow: {jobs_under(isolated)}"
    assert not pipejupyter.clusters()
    assert not discovery.read_all()


KERNEL_CELL = """
import os, time
from prefect import flow, task
from pipejupyter.prefect import task_runner

@task
def slow(x):
    open(f"started-{{x}}", "w").close()
    time.sleep(1)
    return x

@flow(task_runner=task_runner("slurm", workers=2, overrides={small!r}, timeout=180))
def long_flow():
    return slow.map(range(200)).result()

long_flow()
"""


def test_a_kernel_killed_in_the_middle_of_a_flow_leaves_no_job_and_no_worker(
    isolated, kernel_prefect_env
):
    from jupyter_client.manager import start_new_kernel

    work = isolated / "work"
    runtime = str(isolated / "runtime")  # every process of this test has it in its environment
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(work), env=env)
    try:
        kc.execute(KERNEL_CELL.format(small=SMALL))  # the flow runs; the cell never returns
        started = wait_until(lambda: list(work.glob("started-*")), timeout=240, interval=0.5)
        assert started, f"no task started in 240 s; queue: {jobs_under(work)}"
        states = sorted(jobs_under(work).values())
        assert states == ["RUNNING", "RUNNING"], states
        assert discovery.read_all()[0]["name"].startswith("prefect-")

        os.kill(km.provisioner.process.pid, 9)
        seconds = wait_no_jobs(work, timeout=60)
        assert seconds is not None, f"jobs still queued 60 s after SIGKILL: {jobs_under(work)}"
        assert seconds < 30, seconds
        assert wait_until(lambda: not processes_with_env("PIPEJUPYTER_RUNTIME_DIR", runtime)), (
            processes_with_env("PIPEJUPYTER_RUNTIME_DIR", runtime)
        )
        assert not discovery.read_all()  # the dead kernel's record is pruned
        assert len(list(work.glob("started-*"))) < ITEMS  # it was killed mid-flow
    finally:
        kc.stop_channels()
        km.cleanup_resources()


@pytest.fixture
def casa_env(monkeypatch):
    require(importlib.util.find_spec("casatasks") is not None, "casatasks (ci/casa.sh install)")
    config = os.environ.get("CASASITECONFIG") or (
        str(CASA_SITE_CONFIG) if CASA_SITE_CONFIG.is_file() else ""
    )
    require(
        bool(config) and os.path.isfile(config),
        "the offline CASA site config (ci/casa.sh install writes it)",
    )
    monkeypatch.setenv("CASASITECONFIG", config)  # the worker jobs inherit it (env.pass CASA*)
    return config


@pytest.mark.casa
def test_casa_tasks_run_as_prefect_tasks_in_slurm_jobs(isolated, flows, casa_env):
    work = isolated / "work"
    mses = [str(work / name) for name in ("field-a.ms", "field-b.ms")]
    for ms in mses:
        done = subprocess.run(
            [PYTHON, str(ROOT / "ci" / "make_ms.py"), ms],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-2000:]
    # The imaging half of an Arrakis-style pipeline: its own single-cluster file.
    path = write(
        work / "imaging.yaml",
        """
        cluster_class: dask_jobqueue.SLURMCluster
        cluster_kwargs: {cores: 1, processes: 1, memory: 2GiB, walltime: "00:20:00"}
        adapt_kwargs: {minimum_jobs: 2, maximum_jobs: 2}
        """,
    )
    runner = task_runner(config=path, timeout=180)
    assert runner.plan.profile == "imaging"

    out = flows.listobs_flow.with_options(task_runner=runner)(mses)

    for ms, result in zip(mses, out["results"], strict=True):
        assert result["value"]["nfields"] == 1
        assert result["value"]["numrecords"] > 0
        assert result["command"] == f"listobs(vis={ms!r}, listfile='')"
        assert result["job"]  # inside a SLURM job
    [(name, status, backend)] = out["clusters"]
    assert (status, backend) == ("running", "slurm")
    log = (work / "casa_commands.log").read_text()  # written by the jobs, in their cwd
    assert all(f"listobs(vis={ms!r}" in log for ms in mses)
    assert wait_no_jobs(isolated, timeout=30) is not None
    assert not pipejupyter.clusters()
