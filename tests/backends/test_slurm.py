"""The slurm backend on the real single-node SLURM of ci/slurm.sh (partition with 2 CPUs,
MaxTime 1:00:00, EnforcePartLimits=ALL). Every test checks that none of its jobs stays
queued (fixture ``slurm_clean``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import cloudpickle
import pytest
from distributed import wait

import pipejupyter
from pipejupyter.errors import ClusterError, ConfigError
from pipejupyter.lifecycle import discovery, manager
from tests.support.common import ROOT, live_children, wait_until
from tests.support.slurm import (  # noqa: F401 (fixture)
    half_node,
    jobs_under,
    node_cpus,
    slurm_clean,
    wait_no_jobs,
)

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_clean", "no_leaks")]
SMALL = ["cluster_kwargs.memory=1GiB", "cluster_kwargs.walltime=00:20:00"]
# Worker jobs cannot import this test module: ship its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _inc(x):
    return x + 1


def _slow(x):
    time.sleep(0.5)
    return x


def _env(names):
    return {n: os.environ.get(n) for n in names}


def _rows(handle):
    return {w["name"]: w for w in handle.model()["worker_info"]}


def test_lifecycle_jobs_in_squeue_scale_adapt_logs_stop(isolated):
    handle = pipejupyter.start("slurm", workers=2, overrides=[*SMALL, *half_node()], timeout=120)
    assert handle.status == "running"
    futures = handle.client.map(_inc, range(10))
    wait(futures, timeout=60)
    assert handle.client.gather(futures) == list(range(1, 11))
    jobs = jobs_under(isolated)
    assert sorted(jobs.values()) == ["RUNNING", "RUNNING"]
    model = handle.model()
    assert model["backend"] == "slurm"
    assert model["workers"] == 2
    assert model["pending"] == 0
    assert model["scheduler_address"].startswith("tcp://127.0.0.1:")
    assert {w["job_id"] for w in model["worker_info"]} == set(jobs)
    assert {w["job_state"] for w in model["worker_info"]} == {"running"}
    json.dumps(model)

    # Three jobs of half the node each: the third waits, and the model says so.
    handle.scale(3)
    assert len(jobs_under(isolated)) == 3
    assert wait_until(lambda: handle.model()["pending"] == 1, timeout=10)
    pending = [w for w in handle.model()["worker_info"] if w["status"] == "pending"]
    assert pending[0]["job_state"] == "pending"
    assert pending[0]["job_id"] in jobs_under(isolated)
    assert jobs_under(isolated)[pending[0]["job_id"]] == "PENDING"

    handle.scale(2)  # the job not yet started is the one cancelled
    assert wait_until(lambda: len(jobs_under(isolated)) == 2, timeout=30)
    assert handle.model()["workers"] == 2
    assert handle.model()["pending"] == 0

    handle.adapt(1, 2)
    assert handle.model()["adapt"] == {"minimum": 1, "maximum": 2}
    assert wait_until(
        lambda: len(jobs_under(isolated)) == 1 and handle.model()["workers"] == 1, timeout=60
    )
    futures = handle.client.map(_slow, range(40))  # load: adaptivity asks for the second job
    assert wait_until(lambda: handle.model()["workers"] == 2, timeout=90)
    wait(futures, timeout=120)
    assert handle.client.gather(futures) == list(range(40))

    logs = handle.logs(lines=200)
    job_logs = {k: v for k, v in logs.items() if k.startswith("job ")}
    assert job_logs, f"no job output files among {list(logs)}"
    assert any("Start worker at" in line for lines in job_logs.values() for line in lines)
    one = handle.model()["worker_info"][0]["name"]
    mine = [k for k in handle.logs(worker=one) if k.startswith("job ")]
    assert mine, mine
    assert all(f"({one})" in k for k in mine), mine

    handle.stop()
    seconds = wait_no_jobs(isolated, timeout=30)
    assert seconds is not None, f"jobs left after stop: {jobs_under(isolated)}"
    print(f"queue empty {seconds:.1f} s after stop()")


def test_eight_small_one_core_jobs_all_connect(isolated):
    """Many jobs starting at once on one node: every worker connects (none is ended by its
    nanny's death_timeout, which bounds the worker's whole start, two Python imports; 50 of
    these jobs on 2 real cores took over 60 s, dask-jobqueue's default, under load)."""
    from pipejupyter.backends.jobqueue.base import DEFAULT_DEATH_TIMEOUT

    handle = pipejupyter.start(
        "slurm",
        workers=8,
        overrides=["cluster_kwargs.memory=256MiB", "cluster_kwargs.walltime=00:10:00"],
        timeout=240,
    )
    assert handle.model()["workers"] == 8
    assert len(jobs_under(isolated)) == 8
    job_logs = {k: v for k, v in handle.logs(lines=400).items() if k.startswith("job ")}
    text = "\n".join(line for lines in job_logs.values() for line in lines)
    assert text.count("Registered to:") == 8, sorted(job_logs)
    assert "Timed out connecting Nanny" not in text
    script = pipejupyter.dry_run("slurm", overrides=["cluster_kwargs.memory=256MiB"])
    assert f"--death-timeout {DEFAULT_DEATH_TIMEOUT}" in script
    assert "--memory-limit 256.00MiB" in script
    handle.stop()
    assert wait_no_jobs(isolated, timeout=30) is not None, jobs_under(isolated)


def test_stop_cancels_pending_jobs_too(isolated):
    handle = pipejupyter.start(
        "slurm", workers=3, wait=False, overrides=[*SMALL, *half_node()], timeout=120
    )
    handle.wait_for_workers(2, timeout=120)
    assert len(jobs_under(isolated)) == 3
    handle.stop()
    seconds = wait_no_jobs(isolated, timeout=30)
    assert seconds is not None, jobs_under(isolated)
    assert seconds < 10, jobs_under(isolated)


def test_environment_reaches_the_job_exactly(isolated, monkeypatch):
    monkeypatch.setenv("PJ_TRICKY", "spaces  and 'single' \"double\" $HOME `x` \\ back")
    cfg = isolated / "env.yaml"
    cfg.write_text(
        textwrap.dedent("""\
        pipecluster:
          env:
            pass: [PJ_TRICKY]
            set:
              PJ_NODE_HOME: "$HOME/on-node"
              PJ_QUOTED: 'a "b" c'
          profiles:
            slurm:
              cluster_kwargs:
                local_directory: $PJ_LOCAL
                job_script_prologue: ["export PJ_LOCAL=$(mktemp -d)"]
        """)
    )
    handle = pipejupyter.start("slurm", workers=1, config=cfg, overrides=SMALL, timeout=120)
    seen = handle.client.submit(
        _env, ["PJ_TRICKY", "PJ_NODE_HOME", "PJ_QUOTED", "HOME", "PJ_LOCAL", "SLURM_JOB_ID"]
    ).result(timeout=60)
    assert seen["SLURM_JOB_ID"] in jobs_under(isolated), "the task ran inside a SLURM job"
    assert seen["PJ_TRICKY"] == os.environ["PJ_TRICKY"]
    assert seen["PJ_NODE_HOME"] == f"{seen['HOME']}/on-node"
    assert seen["PJ_QUOTED"] == 'a "b" c'
    worker_dir = handle.client.run(lambda dask_worker: dask_worker.local_directory)
    assert next(iter(worker_dir.values())).startswith(
        seen["PJ_LOCAL"]
    )  # $PJ_LOCAL expanded on the node
    handle.stop()


NESTED = """
import json, os, subprocess, sys
mode = sys.argv[1]
OUTER = ("SLURM_JOB_ID", "SLURM_MEM_PER_CPU", "SLURM_JOB_PARTITION", "SLURM_JOB_NAME")

def inside_worker():
    import os, subprocess
    srun = subprocess.run(
        ["srun", "--overlap", "-n1", "true"], capture_output=True, text=True, timeout=60
    )
    names = ("SLURM_JOB_ID", "SLURM_MEM_PER_CPU", "SLURM_MEM_PER_NODE", "SLURM_JOB_NAME")
    return {
        **{n: os.environ.get(n) for n in names},
        "srun_rc": srun.returncode,
        "srun_err": srun.stderr[-300:],
    }

report = {"outer": {n: os.environ.get(n) for n in OUTER}}
if mode == "ours":
    import pipejupyter
    handle = pipejupyter.start(
        "slurm", workers=1, timeout=300,
        overrides=["cluster_kwargs.memory=500MiB", "cluster_kwargs.walltime=00:10:00"],
    )
    report["inner"] = handle.client.submit(inside_worker).result(timeout=120)
    handle.stop()
else:  # raw dask-jobqueue: sbatch inherits the enclosing job's variables
    from dask_jobqueue import SLURMCluster
    from distributed import Client
    cluster = SLURMCluster(
        cores=1, processes=1, memory="500MiB", walltime="00:10:00",
        scheduler_options={"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"},
    )
    client = Client(cluster)
    cluster.scale(1)
    client.wait_for_workers(1, timeout=300)
    report["inner"] = client.submit(inside_worker).result(timeout=120)
    client.close()
    cluster.close()
print("REPORT " + json.dumps(report))
"""


def _run_nested(isolated, mode: str) -> dict:
    script = isolated / "work" / "nested.py"
    script.write_text(NESTED)
    out = isolated / "work" / f"outer-{mode}.out"
    # The enclosing job sets SLURM_MEM_PER_CPU (--mem-per-cpu); a nested sbatch that
    # inherits it gives the new job both SLURM_MEM_PER_CPU and SLURM_MEM_PER_NODE.
    done = subprocess.run(
        [
            "sbatch",
            "--wait",
            "-J",
            f"outer {mode}",
            "--mem-per-cpu=300",
            "-c",
            "1",
            "-t",
            "00:15:00",
            "-o",
            str(out),
            "--wrap",
            f"{sys.executable} {script} {mode}",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    text = out.read_text() if out.exists() else ""
    assert done.returncode == 0, f"outer job failed: {done.stderr}\n{text[-3000:]}"
    line = next((ln for ln in text.splitlines() if ln.startswith("REPORT ")), None)
    assert line, f"no report from the outer job:\n{text[-3000:]}"
    return json.loads(line[len("REPORT ") :])


def test_nested_submission_from_inside_an_sbatch_job(isolated):
    ours = _run_nested(isolated, "ours")
    outer, inner = ours["outer"], ours["inner"]
    assert outer["SLURM_MEM_PER_CPU"] == "300"
    assert inner["SLURM_JOB_ID"] != outer["SLURM_JOB_ID"]
    assert inner["SLURM_MEM_PER_CPU"] is None
    assert inner["SLURM_MEM_PER_NODE"] == "500"
    assert inner["srun_rc"] == 0, inner["srun_err"]
    assert inner["SLURM_JOB_NAME"] == "outer-ours-dask"  # job name derived from the enclosing job

    # The same with raw dask-jobqueue proves the check can fail: the variable leaks and
    # srun inside the worker job refuses to run.
    raw = _run_nested(isolated, "raw")["inner"]
    assert raw["SLURM_MEM_PER_CPU"] == "300"
    assert raw["srun_rc"] != 0
    assert "mutually exclusive" in raw["srun_err"]


UNDER_MPIRUN = """
import json, os, sys

def mpi_names():
    import os
    return sorted(n for n in os.environ if n.startswith(("OMPI_", "PMIX_", "PRTE_")))

report = {"launcher": len(mpi_names())}
if sys.argv[1] == "ours":
    import pipejupyter
    handle = pipejupyter.start(
        "slurm", workers=1, timeout=300,
        overrides=["cluster_kwargs.memory=500MiB", "cluster_kwargs.walltime=00:10:00"],
    )
    report["job"] = handle.client.submit(mpi_names).result(timeout=120)
    handle.stop()
else:
    from dask_jobqueue import SLURMCluster
    from distributed import Client
    cluster = SLURMCluster(
        cores=1, processes=1, memory="500MiB", walltime="00:10:00",
        scheduler_options={"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"},
    )
    client = Client(cluster)
    cluster.scale(1)
    client.wait_for_workers(1, timeout=300)
    report["job"] = client.submit(mpi_names).result(timeout=120)
    client.close()
    cluster.close()
print("REPORT " + json.dumps(report))
"""


@pytest.mark.mpi
def test_mpi_launch_variables_never_reach_the_job(isolated):
    """A notebook or script under mpirun: sbatch (which exports its whole environment)
    must not hand the rank's OMPI_*/PMIX_* identity to the worker jobs."""
    import shutil

    from tests.support.common import require

    require(shutil.which("mpirun") is not None, "OpenMPI's mpirun (ci/mpi.sh)")
    script = isolated / "work" / "under_mpirun.py"
    script.write_text(UNDER_MPIRUN)
    mpirun = ["mpirun", "-n", "1", *(["--allow-run-as-root"] if os.geteuid() == 0 else [])]
    reports = {}
    for mode in ("ours", "raw"):
        done = subprocess.run(
            [*mpirun, sys.executable, str(script), mode],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            cwd=isolated / "work",
        )
        line = next((ln for ln in done.stdout.splitlines() if ln.startswith("REPORT ")), None)
        assert line, f"{mode}: {done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        reports[mode] = json.loads(line[len("REPORT ") :])
    assert reports["ours"]["launcher"] > 10  # really under mpirun
    assert reports["ours"]["job"] == []
    assert len(reports["raw"]["job"]) > 10  # without sanitization they do arrive


# Each worker job asks for half the node's CPUs, so two run and the third waits in the queue.
KERNEL_CELL = """
import pipejupyter
h = pipejupyter.start(
    "slurm", workers=3, wait=False,
    overrides=["cluster_kwargs.memory=1GiB", "cluster_kwargs.walltime=00:20:00",
               "cluster_kwargs.cores={half}", "cluster_kwargs.processes=1"],
)
h.wait_for_workers(2, timeout=120)
"""


def test_sigkill_of_the_owning_kernel_empties_the_queue(isolated):
    from jupyter_client.manager import start_new_kernel

    work = isolated / "work"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(work), env=env)
    try:
        cell = KERNEL_CELL.format(half=node_cpus() // 2)
        reply = kc.execute_interactive(cell, timeout=180, output_hook=lambda msg: None)
        assert reply["content"]["status"] == "ok", reply["content"].get("evalue")
        states = sorted(jobs_under(work).values())
        # Two running, one waiting in the queue for CPUs.
        assert len(states) == 3, states
        assert states.count("RUNNING") >= 2, states
        os.kill(km.provisioner.process.pid, 9)
        seconds = wait_no_jobs(work, timeout=60)
        assert seconds is not None, f"jobs still queued 60 s after SIGKILL: {jobs_under(work)}"
        # Without the scheduler probe the pending job waits ~30 s for the nanny's
        # connect timeout once it starts (measured in benchmarks/slurm_start.py).
        assert seconds < 20, seconds
        print(f"queue empty {seconds:.1f} s after SIGKILL of the kernel")
    finally:
        kc.stop_channels()
        km.cleanup_resources()


# -- bad input: one clear error, nothing queued, nothing running -------------------------


def _nothing_left(isolated, before_children):
    assert not jobs_under(isolated)
    assert not pipejupyter.clusters()
    assert not discovery.read_all()
    assert wait_until(lambda: not (live_children(os.getpid()) - before_children), timeout=10)


@pytest.mark.parametrize(
    "override,ours,sbatch_says",
    [
        (
            "cluster_kwargs.queue=nosuch",
            "partition 'nosuch' does not exist",
            "invalid partition specified: nosuch",
        ),
        (
            "cluster_kwargs.walltime=02:00:00",
            "walltime '02:00:00' is longer than partition 'debug' allows",
            "Requested time limit is invalid",
        ),
        (
            "cluster_kwargs.memory=100GiB",
            "memory asks for 102400 MB per job",
            "Requested node configuration is not available",
        ),
        (
            "cluster_kwargs.cores=512",
            "cores=512 CPUs per job",
            "More processors requested than permitted",
        ),
    ],
)
def test_profile_the_partition_cannot_run_is_refused_before_submitting(
    isolated, override, ours, sbatch_says
):
    before = live_children(os.getpid())
    overrides = (
        [*SMALL, override]
        if "memory" not in override
        else ["cluster_kwargs.walltime=00:20:00", override]
    )
    with pytest.raises(ConfigError) as err:
        pipejupyter.start("slurm", workers=2, overrides=overrides, timeout=60)
    text = str(err.value)
    assert ours in text
    assert sbatch_says in text
    assert "--set" in text or "override" in text  # where the value came from
    _nothing_left(isolated, before)
    # dry-run reports the same problem without raising, and submits nothing
    shown = pipejupyter.dry_run("slurm", overrides=overrides)
    assert "# problem: " in shown
    assert "REJECTED" in shown
    assert not jobs_under(isolated)


def test_memory_string_sbatch_rejects(isolated):
    before = live_children(os.getpid())
    with pytest.raises(ClusterError) as err:
        pipejupyter.start(
            "slurm", workers=1, overrides=[*SMALL, "cluster_kwargs.job_mem=lots"], timeout=60
        )
    assert "sbatch rejects the worker job" in str(err.value)
    assert "Invalid --mem specification" in str(err.value)
    assert "--mem=lots" in str(err.value)
    _nothing_left(isolated, before)


def test_memory_string_dask_rejects(isolated):
    with pytest.raises(ConfigError, match="'lots' is not a memory size"):
        pipejupyter.start("slurm", workers=1, overrides=["cluster_kwargs.memory=lots"], timeout=60)
    assert not jobs_under(isolated)


def test_sbatch_missing(isolated, monkeypatch):
    before = live_children(os.getpid())
    monkeypatch.setenv(
        "PATH",
        os.pathsep.join(
            p
            for p in os.environ["PATH"].split(os.pathsep)
            if not os.path.exists(os.path.join(p, "sbatch"))
        ),
    )
    with pytest.raises(ClusterError, match="sbatch not found on PATH"):
        pipejupyter.start("slurm", workers=1, overrides=SMALL, timeout=60)
    _nothing_left(isolated, before)


def test_submission_failure_after_start_is_raised_by_scale(isolated, monkeypatch):
    """Jobs are submitted in the background by dask-jobqueue; scale() waits for them and
    raises sbatch's error, and the cluster keeps the workers it had."""
    handle = pipejupyter.start("slurm", workers=1, overrides=SMALL, timeout=120)
    fake = isolated / "fakebin"
    fake.mkdir()
    (fake / "sbatch").write_text(
        "#!/bin/sh\necho 'sbatch: error: Batch job submission failed: "
        "Invalid account or account/partition combination specified' >&2\nexit 1\n"
    )
    (fake / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(ClusterError, match="Invalid account or account/partition combination"):
        handle.scale(2)
    assert handle.model()["workers"] == 1
    assert handle.model()["pending"] == 0
    assert len(jobs_under(isolated)) == 1
    monkeypatch.undo()
    handle.scale(2)  # and it recovers once sbatch works again
    handle.wait_for_workers(2, timeout=120)
    handle.stop()


def test_second_job_refused_at_start_leaves_nothing_queued(isolated, monkeypatch):
    """sbatch --test-only agrees, the first real submission works, the second fails: start
    raises sbatch's message and the job that was queued is cancelled again."""
    before = live_children(os.getpid())
    real = subprocess.run(
        ["which", "sbatch"], capture_output=True, text=True, check=True
    ).stdout.strip()
    fake = isolated / "fakebin"
    fake.mkdir()
    counter = isolated / "submissions"
    (fake / "sbatch").write_text(
        textwrap.dedent(f"""\
        #!/bin/sh
        [ "$1" = --test-only ] && exec {real} "$@"
        echo x >> {counter}
        # The jobs are submitted concurrently: exactly one gets through (mkdir is atomic).
        mkdir {isolated / "first"} 2>/dev/null && exec {real} "$@"
        echo 'sbatch: error: Batch job submission failed: Job violates accounting/QOS policy' >&2
        exit 1
        """)
    )
    (fake / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(ClusterError) as err:
        pipejupyter.start("slurm", workers=2, overrides=SMALL, timeout=60)
    assert "submitting a worker job failed: sbatch failed (exit 1)" in str(err.value)
    assert "Job violates accounting/QOS policy" in str(err.value)
    assert counter.read_text().count("x") == 2  # one job was really queued...
    assert wait_no_jobs(isolated, timeout=30) is not None  # ...and cancelled again
    _nothing_left(isolated, before)


def test_dry_run_submits_nothing_and_shows_the_exact_script(isolated):
    text = manager.dry_run("slurm", workers=2, overrides=SMALL)
    assert "#SBATCH -J pipejupyter-slurm" in text
    assert "#SBATCH -p" not in text
    assert "#SBATCH --mem=1G" in text
    assert "#SBATCH -t 00:20:00" in text
    assert "sbatch --test-only: accepted" in text
    assert not jobs_under(isolated)
    assert not (isolated / "work" / "pipejupyter-logs").exists()
