"""pipejupyter.prefect.task_runner on local clusters, against Prefect's temporary API
(conftest.py): a flow run's own cluster, a running cluster by handle, address, name and id,
a failing task's remote traceback, single-cluster files, and what is refused up front."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import traceback

import pytest
import yaml

import pipejupyter
from pipejupyter.errors import ClusterError, ConfigError, UnknownCluster
from pipejupyter.lifecycle import discovery
from pipejupyter.prefect import task_runner
from tests.prefect.conftest import require_prefect
from tests.support.common import PYTHON, write

pytestmark = [pytest.mark.prefect, pytest.mark.usefixtures("isolated", "no_leaks")]
ITEMS = 200


@pytest.fixture
def flows(prefect_api):
    from tests.prefect import flows

    return flows


def _check_squares(result: dict, n: int) -> None:
    assert [r["x"] for r in result["results"]] == [x * x for x in range(n)]


def test_a_flow_run_starts_its_own_cluster_and_stops_it_after(flows):
    # A notebook's current cluster (the default Dask client) must not capture the flow.
    notebook = pipejupyter.start(workers=1, name="notebook")
    runner = task_runner(profile="local", workers=2)
    assert runner.cluster_class == "distributed.LocalCluster"
    assert not pipejupyter.clusters()[1:]  # made, validated, nothing started yet

    out = flows.map_flow.with_options(task_runner=runner)(ITEMS)

    _check_squares(out, ITEMS)
    [(name, status, backend)] = [c for c in out["clusters"] if c[0] != "notebook"]
    assert name.startswith("prefect-")  # named after the flow run
    assert (status, backend) == ("running", "local")
    assert name in out["discovered"]  # %pipecluster list, the widget and the sidebar see it
    schedulers = {r["scheduler"] for r in out["results"]}
    assert len(schedulers) == 1
    assert schedulers != {notebook.scheduler_address}
    assert len({r["worker"] for r in out["results"]}) == 2
    # Gone after the run; the notebook's cluster is still the current one.
    assert pipejupyter.clusters() == [notebook]
    assert [r["name"] for r in discovery.read_all()] == ["notebook"]
    assert pipejupyter.get() is notebook


def test_flows_use_a_running_cluster_by_handle_address_name_and_id_and_failures_show(flows):
    shared = pipejupyter.start(workers=2, name="shared")
    out = flows.map_flow.with_options(task_runner=task_runner(shared))(ITEMS)
    _check_squares(out, ITEMS)
    assert {r["scheduler"] for r in out["results"]} == {shared.scheduler_address}
    assert out["clusters"] == [("shared", "running", "local")]

    for target in (shared.scheduler_address, "shared", shared.id):
        runner = task_runner(target)
        out = flows.map_flow.with_options(task_runner=runner)(3)
        _check_squares(out, 3)
        assert {r["scheduler"] for r in out["results"]} == {shared.scheduler_address}
        assert shared.status == "running", target  # used, not stopped
        assert pipejupyter.clusters() == [shared], target
    assert task_runner(shared.scheduler_address).address == shared.scheduler_address
    assert shared.client.submit(sum, [1, 2]).result(timeout=30) == 3

    # A task that raises: Prefect's Failed state, the exception with the worker's frames.
    state = flows.failing_flow.with_options(task_runner=task_runner(shared))(return_state=True)

    assert state.is_failed()
    good, failed = state.result(raise_on_failure=False)
    assert good.is_completed()
    assert failed.is_failed()
    assert "ValueError: item 3 is bad" in failed.message
    with pytest.raises(ValueError, match="item 3 is bad") as err:
        failed.result()
    text = "".join(traceback.format_exception(err.value))
    # The frames are the worker's: the task, the helper it called, in a worker process.
    assert "in bad" in text
    assert "in _explode" in text
    assert "run_task_sync" in text
    worker_pid = int(str(err.value).rsplit("pid ", 1)[1].rstrip(")"))
    assert worker_pid in set(shared.client.run(os.getpid).values())
    assert worker_pid != os.getpid()
    assert shared.status == "running"


OTHER_PROCESS = """
import json, time, pipejupyter
h = pipejupyter.start(workers=1, name="elsewhere", timeout=120)
print(json.dumps({"id": h.id, "address": h.scheduler_address}), flush=True)
time.sleep(600)
"""


def test_a_flow_uses_a_cluster_another_process_started_by_its_name(flows):
    owner = subprocess.Popen([PYTHON, "-c", OTHER_PROCESS], stdout=subprocess.PIPE, text=True)
    try:
        info = json.loads(owner.stdout.readline())
        runner = task_runner("elsewhere")  # found in the discovery records
        assert runner.plan.target == info["id"]
        out = flows.map_flow.with_options(task_runner=runner)(3)
        _check_squares(out, 3)
        assert {r["scheduler"] for r in out["results"]} == {info["address"]}
        assert [c[0] for c in out["clusters"]] == ["elsewhere"]  # connected for the run
        assert pipejupyter.clusters() == []  # and disconnected after it
        [record] = discovery.read_all()
        assert (record["id"], record["status"]) == (info["id"], "running")  # still running
    finally:
        owner.kill()
        owner.wait(timeout=30)


def test_what_is_refused_before_anything_starts(prefect_api):
    running = pipejupyter.start(workers=0)  # named after its profile: "local"
    assert running.name == "local"
    with pytest.raises(ClusterError, match="both a profile and a running cluster") as err:
        task_runner("local")
    assert "task_runner(profile='local')" in str(err.value)
    assert "task_runner(cluster='local')" in str(err.value)
    assert task_runner(cluster="local").plan.target is running
    assert task_runner(profile="local").plan.profile == "local"
    assert task_runner("local", workers=1).plan.profile == "local"  # sizing: a new cluster

    with pytest.raises(UnknownCluster, match="no profile or running cluster 'nosuch'") as err:
        task_runner("nosuch")
    assert "slurm" in str(err.value) and f"local ({running.id})" in str(err.value)
    with pytest.raises(UnknownCluster, match="no running cluster 'nosuch'"):
        task_runner(cluster="nosuch")
    with pytest.raises(ClusterError, match="workers describe a cluster the flow run starts"):
        task_runner(running, workers=2)
    with pytest.raises(ClusterError, match="one of a target, profile= or cluster="):
        task_runner("local", profile="local")
    with pytest.raises(ConfigError) as err:
        task_runner(profile="local", overrides=["cluster_kwargs.threads_per_workr=2"])
    assert "threads_per_worker" in str(err.value)  # did you mean
    with pytest.raises(ConfigError, match="unknown profile 'nosuch'"):
        task_runner(profile="nosuch")
    assert pipejupyter.clusters() == [running]  # nothing else started


def test_a_single_cluster_file_gives_the_runner_arrakis_would_plus_ours(isolated, prefect_api):
    from prefect_dask import DaskTaskRunner

    path = write(
        isolated / "work" / "petrichor.yaml",
        """
        # Arrakis' shape: one file per flow, read by create_dask_runner
        cluster_class: "dask_jobqueue.SLURMCluster"
        cluster_kwargs:
            cores: 1
            processes: 1
            name: 'spice-worker'
            memory: "1GiB"
            walltime: '00:20:00'
            job_extra_directives: ['--comment=arrakis']
            log_directory: 'spice_logs'
            local_directory: $LOCALDIR
        adapt_kwargs:
            minimum_jobs: 1
            maximum_jobs: 2
            wait_count: 20
            interval: "30s"
        """,
    )
    # What Arrakis' create_dask_runner builds from the file.
    raw = yaml.safe_load(path.read_text())
    theirs = DaskTaskRunner(
        cluster_class=raw["cluster_class"],
        cluster_kwargs=raw["cluster_kwargs"],
        adapt_kwargs=raw["adapt_kwargs"],
    )
    ours = task_runner(config=path)
    assert isinstance(ours, DaskTaskRunner)
    assert ours.plan.profile == "petrichor"  # the file's profile
    assert ours.cluster_class == theirs.cluster_class
    for key, value in theirs.cluster_kwargs.items():
        assert ours.cluster_kwargs[key] == value, key  # $LOCALDIR too: the node expands it
    assert ours.cluster_kwargs["job_name"] == "pipejupyter-petrichor"  # ours on top
    # adapt in jobs becomes adapt in workers (one per job here); the rest is passed on.
    assert ours.adapt_kwargs == {"minimum": 1, "maximum": 2, "wait_count": 20, "interval": "30s"}
    wider = task_runner(config=path, adapt=(2, 4))
    assert (wider.adapt_kwargs["minimum"], wider.adapt_kwargs["maximum"]) == (2, 4)
    with pytest.raises(ConfigError) as err:
        task_runner(config=path, overrides=["cluster_kwargs.walltme=1:00:00"])
    assert "walltime" in str(err.value)  # did you mean


def test_a_runner_pickled_into_a_task_carries_only_its_description(prefect_api):
    runner = task_runner(profile="local", workers=2)
    data = pickle.dumps(runner)
    assert len(data) < 2000  # Prefect ships it with every task: not the config, not clusters
    copy = pickle.loads(data)
    assert "profile 'local'" in repr(copy)
    with pytest.raises(ClusterError, match="only in the process that made it"):
        with copy.plan.lease(copy.manager):
            pass
    assert runner.duplicate() == runner


def test_without_prefect_the_error_names_the_extra():
    require_prefect()  # the message names the package that is missing: check both exist
    for missing in ("prefect", "prefect_dask"):
        code = (
            f"import sys; sys.modules[{missing!r}] = None\n"
            "from pipejupyter.prefect import task_runner\n"
            "try:\n    task_runner('local')\n"
            "except ImportError as exc:\n    print(exc)\n"
        )
        done = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert f"'{missing.replace('_', '-')}', which is not installed" in done.stdout
        assert "pip install 'pipejupyter[prefect]'" in done.stdout
