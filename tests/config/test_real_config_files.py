"""Configuration files as other projects publish them load unchanged (tests/data/real_configs).

Each file keeps its project's keys, values, nesting, flow-style lists and repeated keys; the
resolved spec is checked field by field, with every value's own line, and the job script.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import pipejupyter
from pipejupyter.config.loader import load_config
from pipejupyter.errors import ConfigError, ConfigWarning
from tests.support.common import line_of, run_cli

DATA = Path(__file__).resolve().parents[1] / "data" / "real_configs"
CASA = DATA / "casa_pipeline_config.yaml"
PETRICHOR = DATA / "arrakis_petrichor.yaml"
RM_PETRICHOR = DATA / "arrakis_rm_petrichor.yaml"
LABEXTENSION = DATA / "dask_labextension.yaml"
pytestmark = pytest.mark.usefixtures("isolated")


def where(path: Path, needle: str) -> str:
    return f"{path}:{line_of(path, needle)}"


# -- the CASA pipeline's packaged config.yaml ----------------------------------------------


def test_casa_pipeline_config_loads_with_its_repeated_keys_as_warnings():
    cfg = load_config(CASA)
    assert cfg.default_profile == "local"
    assert cfg.tree["casaconfig"]["cachedir"] is None
    assert len(cfg.tree["casaconfig"]) == 18  # 20 lines, two of them repeated
    assert [w.split(": ", 1)[1] for w in cfg.warnings] == [
        "casaconfig.cachedir is written twice (lines 72 and 76); read as PyYAML reads it, "
        "the last one counts (both say the same)",
        "casaconfig.user_site is written twice (lines 69 and 82); read as PyYAML reads it, "
        "the last one counts (both say the same)",
    ]
    assert cfg.warnings[0].startswith(f"{CASA}:76: ")


def test_casa_pipeline_config_resolves_field_by_field_each_on_its_own_line():
    cfg = load_config(CASA)
    local = cfg.resolve("local")
    assert local.scheduler["dashboard_address"] == "localhost:0"
    assert local.dask_config["distributed"] == {
        "worker": {
            "nthreads": 1,
            "memory": {"target": 0.6, "spill": 0.7, "pause": 0.8, "terminate": 0.95},
        },
        "scheduler": {"host": "localhost", "port": 0},
        "client": {"heartbeat_interval": 10000},
    }
    assert cfg.profiles["local"].get("workers") is None  # n_workers: null sets nothing
    assert cfg.tree["pipeline"] == {"tier0futures": True, "autostart": False}
    # Every translated value points at its own line, not at its parent mapping's.
    assert local.origin["casaconfig.measurespath"] == where(CASA, "measurespath:")
    assert local.origin["casaconfig.cachedir"] == f"{CASA}:76"
    assert local.origin["dask_config.distributed.worker.memory.spill"] == where(CASA, "spill:")
    assert local.origin["scheduler.dashboard_address"] == where(CASA, 'dashboard_address: "')
    assert cfg.where(("pipeline", "autostart")) == where(CASA, "autostart:")
    assert cfg.where(("default",)) == where(CASA, "clustertype:")

    slurm = cfg.resolve("slurm")
    kwargs = slurm.cluster_kwargs
    assert (kwargs["queue"], kwargs["cores"], kwargs["processes"], kwargs["memory"]) == (
        "queue",
        1,
        1,
        "10gb",
    )
    # jobqueue.slurm.name is dask-jobqueue's job name there (-J), not the cluster's name.
    assert kwargs["job_name"] == "pipe-dask-worker"
    assert slurm.origin["cluster_kwargs.job_name"] == where(CASA, 'name: "pipe-dask-worker"')
    assert slurm.origin["cluster_kwargs.memory"] == where(CASA, 'memory: "10gb"')

    htcondor = load_config(CASA).profiles["htcondor"]["cluster_kwargs"]
    assert htcondor["job_extra"] == {"getenv": "True", "max_retries": 3}
    assert (htcondor["disk"], htcondor["death_timeout"]) == ("10GB", "60s")
    assert htcondor["log_directory"] == "/tmp/htcondor_logs/"


def test_casa_pipeline_config_job_script_and_origins_in_the_cli():
    shown = pipejupyter.dry_run("slurm", config=CASA)
    assert "#SBATCH -J pipe-dask-worker" in shown
    assert "#SBATCH --cpus-per-task=1" in shown
    assert "#SBATCH --mem=10G" in shown
    assert "#SBATCH -p queue" in shown
    assert "# warning: " in shown and "casaconfig.cachedir is written twice" in shown
    out = run_cli("config", "-f", str(CASA), "--origin", "--json")
    assert out.returncode == 0, out.stderr
    assert "casaconfig.cachedir is written twice" in out.stdout  # in the JSON's warnings
    out = run_cli("profiles", "-f", str(CASA))
    assert out.returncode == 0
    assert "pipejupyter: warning: " in out.stderr and "user_site is written twice" in out.stderr


# -- Arrakis' single-cluster files ----------------------------------------------------------


def test_arrakis_petrichor_resolves_and_its_missing_interface_is_a_warning():
    cfg = load_config(PETRICHOR)
    spec = cfg.resolve("arrakis_petrichor")
    kwargs = spec.cluster_kwargs
    assert spec.backend == "slurm"
    assert (kwargs["cores"], kwargs["processes"], kwargs["memory"]) == (16, 1, "128GiB")
    assert kwargs["account"] == "OD-217087"
    assert kwargs["walltime"] == "1-00:00:00"
    assert kwargs["job_extra_directives"] == ["--qos express"]
    assert kwargs["job_script_prologue"] == [
        "module load singularity",
        "unset SINGULARITY_BINDPATH",
    ]
    assert kwargs["local_directory"] == "$LOCALDIR"
    assert kwargs["interface"] == "ib0"
    assert spec.adapt_kwargs["minimum"] == 1 and spec.adapt_kwargs["maximum"] == 36
    assert spec.adapt_kwargs["wait_count"] == 20
    assert spec.adapt_kwargs["target_duration"] == "300s"
    assert spec.origin["cluster_kwargs.interface"] == where(PETRICHOR, 'interface: "ib0"')
    assert spec.origin["cluster_kwargs.job_script_prologue"] == where(
        PETRICHOR, "job_script_prologue:"
    )
    if "ib0" not in _interfaces():
        assert any("interface 'ib0' has no IPv4 address" in w for w in spec.warnings)
        shown = pipejupyter.dry_run(config=PETRICHOR)
        assert "# warning: " in shown and "'ib0'" in shown
        assert "--interface ib0" in shown  # the job script is still shown
        assert "--local-directory $LOCALDIR" in shown
        # Starting is where the machine's facts count: a clear error, nothing submitted.
        with pytest.raises(ConfigError, match="interface 'ib0' has no IPv4 address"):
            pipejupyter.start(config=PETRICHOR, wait=False)
        assert pipejupyter.clusters() == []


def test_arrakis_rm_petrichor_many_small_workers():
    spec = load_config(RM_PETRICHOR).resolve("arrakis_rm_petrichor")
    assert (spec.cluster_kwargs["cores"], spec.cluster_kwargs["processes"]) == (4, 4)
    assert spec.cluster_kwargs["worker_extra_args"] == [
        "--lifetime",
        "14m",
        "--lifetime-stagger",
        "2m",
        "--memory-limit",
        "128GiB",
    ]
    assert (spec.adapt_kwargs["minimum"], spec.adapt_kwargs["maximum"]) == (108, 512)
    assert spec.adapt_kwargs["interval"] == "10s"
    out = run_cli("config", "-f", str(RM_PETRICHOR))
    assert out.returncode == 0, out.stderr
    assert "worker_extra_args" in out.stdout


def test_arrakis_local_default_translates_its_batch_keywords_with_notes():
    spec = load_config(DATA / "arrakis_default.yaml").resolve("arrakis_default")
    assert spec.backend == "local"
    assert spec.cluster_kwargs["threads_per_worker"] == 1
    assert spec.cluster_kwargs["memory_limit"] == "8GB"
    assert any("cores=1 means threads_per_worker=1" in n for n in spec.notes)
    assert any("name is a batch-job setting" in n for n in spec.notes)


def test_bare_cluster_keywords_are_recognised_with_the_fix():
    out = run_cli("profiles", "-f", str(DATA / "arrakis_magnus.yaml"))
    assert out.returncode == 2
    line = out.stderr.strip()
    assert "\n" not in line
    assert f"arrakis_magnus.yaml:{line_of(DATA / 'arrakis_magnus.yaml', 'cores: 24')}" in line
    assert "bare cluster keywords (cores, processes, name, memory, ...)" in line
    assert "'cluster_kwargs:'" in line and "cluster_class: dask_jobqueue.SLURMCluster" in line


# -- dask-labextension's labextension.yaml ---------------------------------------------------


def _dask_config_dir(isolated: Path) -> Path:
    # The isolated fixture gives every test its own HOME: ~/.config/dask is Dask's user path.
    directory = Path.home() / ".config" / "dask"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def test_labextension_yaml_in_dasks_config_path_is_a_profile(isolated):
    target = _dask_config_dir(isolated) / "labextension.yaml"
    target.write_text(LABEXTENSION.read_text())
    (target.parent / "distributed.yaml").write_text("distributed:\n  version: 2\n")
    cfg = load_config()
    assert any(f.role == "dask" and f.path == str(target) for f in cfg.files)
    spec = cfg.resolve("labextension")
    assert spec.backend == "local"
    assert spec.cluster_class == "dask.distributed.LocalCluster"
    assert spec.workers == 2
    assert spec.adapt_kwargs is None
    assert spec.cluster_kwargs["memory_limit"] == "1GiB"
    assert spec.env["set"]["PJ_FACILITY_SITE"] == "analysis-facility"
    assert spec.env["set"]["OMP_NUM_THREADS"] == "1"
    assert spec.origin["env.set.PJ_FACILITY_SITE"] == where(target, "PJ_FACILITY_SITE:")
    assert spec.origin["workers"] == where(target, "workers: 2")
    out = run_cli("profiles")
    assert out.returncode == 0
    assert "labextension" in out.stdout and f"[{where(target, 'factory:')}]" in out.stdout


def test_labextension_profile_starts_and_its_workers_see_env_override(isolated):
    _dask_config_dir(isolated).joinpath("labextension.yaml").write_text(LABEXTENSION.read_text())
    handle = pipejupyter.start("labextension", timeout=60)
    try:
        seen = handle.client.run(lambda: os.environ.get("PJ_FACILITY_SITE"))
        assert sorted(seen.values()) == ["analysis-facility", "analysis-facility"]
    finally:
        handle.stop()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "labextension:\n  factory: {module: dask_jobqueue, class: SLURMCluster, "
            "args: [4], kwargs: {}}\n",
            "positional args cannot be passed through a pipejupyter profile",
        ),
        ("labextension:\n  factory: {module: dask_jobqueue}\n", "the factory needs class"),
        ("labextension: [1]\n", "expected a mapping, got list"),
    ],
)
def test_labextension_that_cannot_be_used_is_an_error(isolated, text, message):
    _dask_config_dir(isolated).joinpath("labextension.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config()


def test_labextension_initial_and_unknown_keys_are_warnings_not_silence(isolated):
    _dask_config_dir(isolated).joinpath("labextension.yaml").write_text(
        "labextension:\n  factory: {module: dask.distributed, class: LocalCluster}\n"
        "  initial: [{name: big, workers: 100}]\n  browserDashboardCheck: true\n"
    )
    cfg = load_config()
    assert any("labextension.initial lists clusters" in w for w in cfg.warnings)
    assert any("labextension.browserDashboardCheck" in w for w in cfg.warnings)
    with pytest.warns(ConfigWarning, match="labextension.initial"):
        handle = pipejupyter.start("labextension", workers=1, timeout=60)
    handle.stop()


# -- --set in the formats' own words ---------------------------------------------------------


def test_set_accepts_keys_as_each_format_writes_them():
    cfg = load_config(CASA, ["pipeconfig.dask.n_workers=4", "labextension.default.workers=3"])
    for profile in ("local", "slurm", "htcondor"):
        assert cfg.profiles[profile]["workers"] == 4
        assert cfg.where(("profiles", profile, "workers")) == "override"
    assert cfg.profiles["labextension"]["workers"] == 3
    cfg = load_config(
        PETRICHOR, ["cluster_kwargs.cores=8", "pipeconfig.dask.jobqueue.slurm.queue=debug"]
    )
    assert cfg.profiles["arrakis_petrichor"]["cluster_kwargs"]["cores"] == 8
    assert cfg.profiles["slurm"]["cluster_kwargs"]["queue"] == "debug"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("pipeconfig.loglevel=debug", "only pipeconfig.dask is pipejupyter's"),
        ("pipeconfig.dask.nworkers=4", "unknown key 'nworkers'"),
        ("labextension.factory.module=x", "not a dask-labextension key pipejupyter reads"),
    ],
)
def test_set_of_an_unknown_format_key_lists_what_that_format_accepts(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(CASA, [override])
    assert message in str(err.value)
    assert "accepted: " in str(err.value)


def _interfaces() -> set[str]:
    import psutil

    return set(psutil.net_if_addrs())
