"""Batch backends without a scheduler: job-script text from every config format, the
environment export rule checked in a real shell, sizing translation and config errors.

HTCondor, PBS, SGE and LSF cannot run here; their job scripts are plain text
(dask-jobqueue's ``job_script()``), shown by ``--dry-run`` and checked line by line.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

import pipejupyter
from pipejupyter.backends.jobqueue.job_script import export_lines, scheduler_probe
from pipejupyter.config.loader import load_config
from pipejupyter.environment.workers import worker_environment
from pipejupyter.errors import ConfigError
from pipejupyter.lifecycle import manager
from tests.support.common import line_of, write

pytestmark = pytest.mark.usefixtures("isolated")
pytest.importorskip("dask_jobqueue")

HEADERS = {
    "pbs": "#PBS",
    "sge": "#$",
    "lsf": "#BSUB",
    "htcondor": "RequestCpus",
    "oar": "#OAR",
    "moab": "#PBS",
}
CLASSES = {
    "pbs": "PBSCluster",
    "sge": "SGECluster",
    "lsf": "LSFCluster",
    "htcondor": "HTCondorCluster",
    "oar": "OARCluster",
    "moab": "MoabCluster",
    "slurm": "SLURMCluster",
}


# -- the export rule, in a real shell ---------------------------------------------------

TRICKY = {
    "P_SPACES": "two  spaces and\ttab",
    "P_SINGLE": "it's",
    "P_DOUBLE": 'say "hi"',
    "P_DOLLAR": "$HOME and ${USER} stay literal",
    "P_BACKSLASH": "back\\slash\\n",
    "P_BACKTICK": "`echo no`",
    "P_NEWLINE": "line1\nline2",
    "P_EMPTY": "",
}


def test_exported_values_arrive_exactly_and_set_values_expand_on_the_node():
    environ = {
        **TRICKY,
        "NODE_BASE": "/this-process-value",
        "OMPI_COMM_WORLD_RANK": "0",
        "PMIX_RANK": "0",
    }
    env = worker_environment(
        {
            "pass": ["P_*", "OMPI_*", "PMIX_*"],
            "set": {
                "S_NODE": "$NODE_BASE/sub dir",
                "S_BRACES": "${NODE_BASE}x",
                "S_QUOTES": "a \"quoted\" 'word'",
                "S_BACKTICK": "`echo no`",
                "S_BACKSLASH": "c:\\path",
            },
        },
        environ=environ,
    )
    lines = export_lines(env)
    assert not [line for line in lines if "OMPI_" in line or "PMIX_" in line], (
        "MPI variables must never reach a job"
    )
    script = (
        "\n".join(lines)
        + "\nexec python3 -c 'import json, os; print(json.dumps(dict(os.environ)))'\n"
    )
    # The node's own NODE_BASE differs from this process's: set values must use the node's.
    done = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], "NODE_BASE": "/node"},
        check=True,
    )
    seen = json.loads(done.stdout)
    for name, value in TRICKY.items():
        assert seen[name] == value, name
    assert seen["S_NODE"] == "/node/sub dir"
    assert seen["S_BRACES"] == "/nodex"
    assert seen["S_QUOTES"] == "a \"quoted\" 'word'"
    assert seen["S_BACKTICK"] == "`echo no`"
    assert seen["S_BACKSLASH"] == "c:\\path"


def test_enclosing_slurm_job_variables_are_not_copied_into_job_scripts():
    environ = {"SLURM_JOB_ID": "7", "SLURM_MEM_PER_CPU": "300", "SLURM_CONF": "/etc/slurm.conf"}
    env = worker_environment({"pass": ["SLURM_*"]}, environ=environ)
    text = "\n".join(export_lines(env))
    assert "SLURM_CONF=/etc/slurm.conf" in text
    assert "SLURM_MEM_PER_CPU" not in text
    assert "SLURM_JOB_ID" not in text


# -- the scheduler probe, against a real socket ------------------------------------------


def test_scheduler_probe_ends_the_job_fast_when_the_scheduler_is_gone():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        line = scheduler_probe(sys.executable, f"tcp://127.0.0.1:{port}")
        script = f"{line}\necho WORKER-STARTED\n"
        up = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
    assert "WORKER-STARTED" in up.stdout
    t = time.monotonic()
    gone = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
    assert time.monotonic() - t < 5
    assert gone.returncode == 0
    assert "WORKER-STARTED" not in gone.stdout
    assert "not reachable" in gone.stderr
    assert "cluster that submitted this job is gone" in gone.stderr
    assert scheduler_probe(sys.executable, "inproc://x") is None


# -- job scripts from the three config formats -------------------------------------------


@pytest.mark.parametrize("backend", ["pbs", "sge", "lsf", "htcondor"])
def test_native_profile_job_script(isolated, backend):
    cfg = write(
        isolated / "native.yaml",
        f"""
        pipecluster:
          default: batch
          env:
            pass: [PJ_FROM_HERE]
            set: {{SCRATCH_DIR: "$TMPDIR/scratch", SPACED: "a b"}}
          profiles:
            batch:
              backend: {backend}
              workers: 2
              cluster_kwargs:
                cores: 2
                processes: 1
                memory: 3GiB
                {"disk: 1GiB" if backend == "htcondor" else "queue: bigq"}
                {"" if backend == "htcondor" else 'walltime: "02:00:00"'}
                local_directory: $LOCALDIR
                job_script_prologue: ["module load casa"]
        """,
    )
    os.environ["PJ_FROM_HERE"] = "it's here"
    try:
        text = manager.dry_run(config=cfg)
    finally:
        del os.environ["PJ_FROM_HERE"]
    assert f"backend: {backend}" in text
    assert HEADERS[backend] in text
    assert "--local-directory $LOCALDIR" in text  # for the node's shell, unexpanded
    assert "--death-timeout 60" in text
    assert "--nthreads 2" in text
    assert "--memory-limit 3.00GiB" in text
    if backend == "htcondor":
        # HTCondor puts the prologue into `sh -c '...'`, with its own doubling of quotes.
        assert 'export SCRATCH_DIR=""$TMPDIR/scratch""' in text
        assert "module load casa; " in text
    else:
        assert 'export SCRATCH_DIR="$TMPDIR/scratch"' in text
        assert "export PJ_FROM_HERE='it'\"'\"'s here'" in text
        assert "bigq" in text
        # Exports come first, then the user's prologue, then the worker command.
        script = text.split("# job script", 1)[1]
        assert (
            script.index("export SCRATCH_DIR")
            < script.index("module load casa")
            < script.index("distributed.cli.dask_worker")
        )
    assert not (isolated / "work" / "pipejupyter-logs").exists(), (
        "a dry run must leave no directory behind"
    )


@pytest.mark.parametrize("backend", ["pbs", "sge", "lsf", "htcondor", "slurm"])
def test_single_cluster_file_with_cluster_class(isolated, backend):
    cfg = write(
        isolated / "runner.yaml",
        f"""
        cluster_class: dask_jobqueue.{CLASSES[backend]}
        cluster_kwargs:
          cores: 4
          processes: 2
          memory: 8GiB
          {"disk: 2GiB" if backend == "htcondor" else "walltime: '00:20:00'"}
          local_directory: $LOCALDIR
        adapt_kwargs:
          minimum_jobs: 1
          maximum_jobs: 3
        """,
    )
    spec, backend_obj = manager.prepare(config=cfg)
    assert spec.backend == backend
    assert spec.profile == "runner"
    assert spec.cluster_class == f"dask_jobqueue.{CLASSES[backend]}"
    # Jobs are translated to workers: 2 worker processes per job.
    assert spec.adapt_kwargs == {"minimum": 2, "maximum": 6}
    assert any("minimum_jobs=1 means minimum=2" in n for n in spec.notes)
    script = backend_obj.job_script()
    assert "--nworkers 2" in script
    assert "--nthreads 2" in script
    assert "--memory-limit 4.00GiB" in script
    assert "--local-directory $LOCALDIR" in script


def test_casa_pipeline_htcondor_job_script(isolated):
    cfg = write(
        isolated / "home" / ".casa" / "config.yaml",
        """
        pipeconfig:
          dask:
            clustertype: htcondor
            n_workers: 3
            jobqueue:
              htcondor:
                cores: 1
                memory: 2GiB
                disk: 4GiB
                local_directory: $_CONDOR_SCRATCH_DIR
                job_extra_directives: {"+WantFlocking": "true"}
        casaconfig:
          measures_auto_update: false
        """,
    )
    spec, backend = manager.prepare()
    assert spec.backend == "htcondor"
    assert spec.workers == 3
    assert spec.origin["workers"] == f"{cfg}:{line_of(cfg, 'n_workers')}"
    text = backend.dry_run()
    assert "RequestDisk" in text
    assert "MY.DaskWorkerDisk = 4294967296" in text
    assert "+WantFlocking = true" in text
    assert "--local-directory $_CONDOR_SCRATCH_DIR" in text
    assert "PIPEJUPYTER_CASACONFIG" in text  # casaconfig rides along to the workers


# -- sizing translation and defaults -----------------------------------------------------


def test_local_style_keys_become_per_job_sizes(isolated):
    cfg = write(
        isolated / "c.yaml",
        """
        pipecluster:
          profiles:
            big:
              backend: slurm
              cluster_kwargs:
                threads_per_worker: 2
                processes: 2
                memory_limit: 2GiB
                n_workers: 6
                dashboard_address: "127.0.0.1:0"
        """,
    )
    spec = load_config(cfg).resolve("big")
    kwargs = spec.cluster_kwargs
    assert kwargs["cores"] == 4
    assert kwargs["processes"] == 2
    from dask.utils import parse_bytes

    assert parse_bytes(kwargs["memory"]) == 4 * 2**30
    assert spec.workers == 6
    assert "threads_per_worker" not in kwargs
    assert "memory_limit" not in kwargs
    assert "n_workers" not in kwargs
    assert spec.scheduler["dashboard_address"] == "127.0.0.1:0"
    assert any("threads_per_worker=2 means cores=4" in n for n in spec.notes)
    assert any("memory_limit='2GiB' per worker" in n for n in spec.notes)


def test_death_timeout_from_the_profile_or_dask_config_is_kept(isolated):
    import dask

    spec = load_config(overrides=["profiles.slurm.cluster_kwargs.death_timeout=45"]).resolve(
        "slurm"
    )
    assert spec.cluster_kwargs["death_timeout"] == 45
    # A user's own jobqueue config (not dask-jobqueue's shipped 60) is what raw
    # SLURMCluster would use: keep it, and say where it came from.
    with dask.config.set({"jobqueue.slurm.death-timeout": 900}):
        spec = load_config().resolve("slurm")
        text = manager.dry_run("slurm")
    assert spec.cluster_kwargs["death_timeout"] == 900
    assert spec.origin["cluster_kwargs.death_timeout"] == "dask config jobqueue.slurm.death-timeout"
    assert "--death-timeout 900" in text
    spec = load_config(
        overrides=["profiles.slurm.dask_config.jobqueue.slurm.death-timeout=120"]
    ).resolve("slurm")
    assert spec.cluster_kwargs["death_timeout"] == 120


def test_batch_defaults_loopback_one_worker_death_timeout(isolated, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_PARTITION", raising=False)
    monkeypatch.delenv("SLURM_JOB_NAME", raising=False)
    spec = load_config().resolve("slurm")
    assert spec.workers == 1
    assert spec.scheduler == {"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"}
    assert spec.cluster_kwargs["death_timeout"] == 60
    assert spec.origin["cluster_kwargs.death_timeout"] == "default"
    assert spec.cluster_kwargs["job_name"] == "pipejupyter-slurm"
    assert "queue" not in spec.cluster_kwargs
    # An interface means "bind there": no loopback default then, and the dashboard follows
    # the scheduler to that interface (never every interface).
    spec = load_config(overrides=["profiles.slurm.cluster_kwargs.interface=lo"]).resolve("slurm")
    assert "host" not in spec.scheduler
    assert spec.scheduler["dashboard_address"] == "127.0.0.1:0"
    # A missing interface is a fact of this machine: a warning when resolving (the file may
    # be meant for another machine), the error at start.
    spec = load_config(overrides=["profiles.slurm.cluster_kwargs.interface=nosuch0"]).resolve(
        "slurm"
    )
    assert "dashboard_address" not in spec.scheduler
    (text,) = spec.warnings
    assert "starting here fails" in text
    with pytest.raises(ConfigError) as err:
        pipejupyter.start("slurm", overrides=["cluster_kwargs.interface=nosuch0"], wait=False)
    assert pipejupyter.clusters() == []
    text = str(err.value)
    assert "interface 'nosuch0' has no IPv4 address" in text
    assert "profiles.slurm.cluster_kwargs.interface" in text
    assert "accepted: " in text
    assert "lo" in text


def test_inside_a_slurm_job_queue_and_job_name_follow_it(isolated, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_PARTITION", "gpuq")
    monkeypatch.setenv("SLURM_JOB_NAME", "my notebook")
    spec = load_config().resolve("slurm")
    assert spec.cluster_kwargs["queue"] == "gpuq"
    assert spec.origin["cluster_kwargs.queue"] == "environment (SLURM_JOB_PARTITION)"
    assert spec.cluster_kwargs["job_name"] == "my-notebook-dask"
    configured = load_config(
        overrides=[
            "profiles.slurm.cluster_kwargs.queue=cpuq",
            "profiles.slurm.cluster_kwargs.job_name=mine",
        ]
    ).resolve("slurm")
    assert configured.cluster_kwargs["queue"] == "cpuq"
    assert configured.cluster_kwargs["job_name"] == "mine"


# -- config errors, before anything starts -----------------------------------------------


def test_memory_that_is_not_a_size_names_file_line_and_key(isolated):
    cfg = write(
        isolated / "c.yaml",
        """
        pipecluster:
          profiles:
            s:
              backend: slurm
              cluster_kwargs:
                cores: 1
                memory: lots
        """,
    )
    with pytest.raises(ConfigError) as err:
        load_config(cfg).resolve("s")
    text = str(err.value)
    assert f"{cfg}:{line_of(cfg, 'memory: lots')}" in text
    assert "profiles.s.cluster_kwargs.memory" in text
    assert "'lots' is not a memory size" in text
    assert "4GiB" in text


@pytest.mark.parametrize(
    "key,value,expect",
    [
        ("walltime", "'1 hour'", "is not a SLURM time"),
        ("cores", "0", "cores must be a whole number >= 1"),
        ("processes", "3", "processes=3 is more than cores=1"),
        ("queu", "debug", "did you mean 'queue'"),
    ],
)
def test_bad_slurm_settings(isolated, key, value, expect):
    settings = {"cores": "1", "memory": "1GiB", key: value}
    text = "pipecluster:\n  profiles:\n    s:\n      backend: slurm\n      cluster_kwargs:\n"
    text += "".join(f"        {k}: {v}\n" for k, v in settings.items())
    cfg = isolated / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=expect) as err:
        load_config(cfg).resolve("s")
    assert f"{cfg}:{line_of(cfg, key + ':')}" in str(err.value)


def test_sbatch_runs_without_mpi_or_enclosing_job_variables(isolated, monkeypatch):
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "0")
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "1")
    monkeypatch.setenv("PMIX_RANK", "0")
    monkeypatch.setenv("SLURM_JOB_ID", "99")
    monkeypatch.setenv("SLURM_MEM_PER_CPU", "300")
    monkeypatch.setenv("SLURM_CONF", os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf"))
    _, backend = manager.prepare("slurm")
    environ = backend.submission_environ()
    assert not [k for k in environ if k.startswith(("OMPI_", "PMIX_"))]
    assert "SLURM_JOB_ID" not in environ
    assert "SLURM_MEM_PER_CPU" not in environ
    assert "SLURM_CONF" in environ
    assert "PATH" in environ
