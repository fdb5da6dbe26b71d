"""Configuration: the three formats, the merge order, provenance and every error path."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipejupyter.config.loader import load_config
from pipejupyter.errors import ConfigError
from tests.support.common import line_of, write

pytestmark = pytest.mark.usefixtures("isolated")


def test_package_defaults_give_local_profile_with_default_rule(monkeypatch):
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    cfg = load_config()
    assert cfg.default_profile == "local"
    assert {"local", "slurm", "htcondor"} <= set(cfg.profile_names)
    spec = cfg.resolve()
    assert spec.backend == "local"
    assert spec.cluster_class == "distributed.LocalCluster"
    assert spec.cluster_kwargs == {"threads_per_worker": 1, "processes": True}
    import os

    assert spec.workers == max(1, min(len(os.sched_getaffinity(0)), 4))
    assert spec.scheduler == {"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"}
    assert spec.origin["cluster_kwargs.threads_per_worker"] == "default"


def test_slurm_ntasks_sets_local_worker_count(monkeypatch):
    monkeypatch.setenv("SLURM_NTASKS", "7")
    assert load_config().resolve().workers == 7


def test_native_profile_in_working_directory_with_provenance(isolated):
    cfg_file = write(
        isolated / "work" / "config.yaml",
        """
        pipecluster:
          default: small
          env:
            set: {PIPELINE_MODE: fast}
          profiles:
            small:
              backend: local
              workers: 3
              cluster_kwargs:
                memory_limit: 1GiB
        """,
    )
    cfg = load_config()
    spec = cfg.resolve()
    assert spec.profile == "small"
    assert spec.workers == 3
    assert spec.cluster_kwargs["memory_limit"] == "1GiB"
    assert spec.env["set"] == {"PIPELINE_MODE": "fast"}
    assert "PYTHONPATH" in spec.env["pass"]  # package default pass-list still applies
    assert spec.origin["workers"] == f"{cfg_file}:{line_of(cfg_file, 'workers: 3')}"
    assert (
        spec.origin["cluster_kwargs.memory_limit"]
        == f"{cfg_file}:{line_of(cfg_file, 'memory_limit')}"
    )
    assert (
        spec.origin["env.set.PIPELINE_MODE"] == f"{cfg_file}:{line_of(cfg_file, 'PIPELINE_MODE')}"
    )


def test_merge_order_each_layer_wins_over_the_one_before(isolated, monkeypatch):
    def layer(path: Path, n: int) -> Path:
        return write(
            path,
            "pipecluster:\n  profiles:\n    local:\n"
            f"      workers: {n}\n      description: layer{n}\n",
        )

    casa = layer(isolated / "home" / ".casa" / "config.yaml", 1)
    spec = load_config().resolve()
    assert spec.workers == 1
    assert spec.origin["workers"] == f"{casa}:4"

    cwd = layer(isolated / "work" / "config.yaml", 2)
    assert load_config().resolve().workers == 2

    env1 = layer(isolated / "env1.yaml", 3)
    env2 = layer(isolated / "env2.yaml", 4)
    monkeypatch.setenv("PIPEJUPYTER_CONFIG", f"{env1}:{env2}")
    spec = load_config().resolve()
    assert spec.workers == 4
    assert spec.origin["workers"] == f"{env2}:4"

    explicit = layer(isolated / "explicit.yaml", 5)
    cfg = load_config([explicit])
    assert cfg.resolve().workers == 5
    assert [f.role for f in cfg.files] == ["default", "casa", "cwd", "env", "env", "explicit"]
    assert [f.path for f in cfg.files][1:3] == [str(casa), str(cwd)]

    spec = load_config([explicit], ["workers=6"]).resolve()
    assert spec.workers == 6
    assert spec.origin["workers"] == "override"
    # untouched keys keep the origin of the last layer that wrote them
    assert spec.description == "layer5"
    assert spec.origin["description"] == f"{explicit}:5"


def test_deep_merge_keeps_sibling_keys(isolated):
    write(
        isolated / "work" / "config.yaml",
        "pipecluster:\n  profiles:\n    local:\n"
        "      cluster_kwargs:\n        memory_limit: 2GiB\n",
    )
    spec = load_config().resolve()
    assert spec.cluster_kwargs == {
        "threads_per_worker": 1,
        "processes": True,
        "memory_limit": "2GiB",
    }


def test_override_paths_absolute_and_relative_to_profile(isolated):
    cfg = load_config(
        overrides=[
            "cluster_kwargs.memory_limit=3GiB",
            "pipecluster.profiles.local.workers=2",
            "mpi.sanitize=never",
        ]
    )
    spec = cfg.resolve()
    assert spec.cluster_kwargs["memory_limit"] == "3GiB"
    assert spec.workers == 2
    assert spec.mpi["sanitize"] == "never"
    spec = load_config(overrides={"workers": 5}).resolve()
    assert spec.workers == 5


CASA_PIPELINE = """
casaconfig:
  measurespath: /data/casa/measures
  measures_auto_update: false
pipeconfig:
  dask:
    clustertype: slurm
    n_workers: 6
    host: 127.0.0.1
    dashboard_address: "127.0.0.1:0"
    tier0futures: false
    autostart: null
    distributed:
      worker:
        memory:
          target: 0.7
    jobqueue:
      slurm:
        queue: debug
        cores: 1
        memory: 2GiB
        local_directory: $LOCALDIR
        job_extra_directives: ["--exclusive"]
        walltime: null
      htcondor:
        disk: 4GiB
"""


def test_casa_pipeline_format_maps_onto_profiles(isolated):
    path = write(isolated / "home" / ".casa" / "config.yaml", CASA_PIPELINE)
    cfg = load_config()
    assert cfg.default_profile == "slurm"
    assert cfg.files[1].formats == ("casa-pipeline",)
    assert cfg.tree["casaconfig"]["measurespath"] == "/data/casa/measures"
    for name in ("local", "slurm", "htcondor"):
        profile = cfg.profiles[name]
        assert profile["workers"] == 6
        assert profile["scheduler"] == {"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"}
    slurm = cfg.profiles["slurm"]["cluster_kwargs"]
    assert slurm["queue"] == "debug"
    assert slurm["memory"] == "2GiB"
    assert slurm["local_directory"] == "$LOCALDIR"  # for the node's shell, unexpanded
    assert slurm["walltime"] == "01:00:00"  # null means "not set here": the default stays
    assert cfg.profiles["htcondor"]["cluster_kwargs"]["disk"] == "4GiB"
    assert cfg.tree["dask_config"] == {"distributed": {"worker": {"memory": {"target": 0.7}}}}
    assert cfg.tree["pipeline"] == {"tier0futures": False}
    assert (
        cfg.where(("profiles", "slurm", "cluster_kwargs", "queue"))
        == f"{path}:{line_of(path, 'queue: debug')}"
    )
    assert cfg.where(("default",)) == f"{path}:{line_of(path, 'clustertype')}"
    spec = cfg.resolve("local")
    assert spec.workers == 6
    assert spec.casaconfig["measurespath"] == "/data/casa/measures"
    assert spec.dask_config["distributed"]["worker"]["memory"]["target"] == 0.7


def test_casa_null_n_workers_keeps_default_rule(isolated, monkeypatch):
    monkeypatch.setenv("SLURM_NTASKS", "3")
    write(
        isolated / "work" / "config.yaml",
        "pipeconfig:\n  dask:\n    clustertype: local\n    n_workers: null\n",
    )
    assert load_config().resolve().workers == 3


def test_single_cluster_file_becomes_default_profile_named_after_file(isolated):
    path = write(
        isolated / "prefect_local.yaml",
        """
        cluster_class: distributed.LocalCluster
        cluster_kwargs:
          n_workers: 3
          threads_per_worker: 1
        adapt_kwargs: null
        """,
    )
    cfg = load_config([path])
    assert cfg.default_profile == "prefect_local"
    spec = cfg.resolve()
    assert spec.backend == "local"
    assert spec.workers == 3
    assert "n_workers" not in spec.cluster_kwargs
    assert any("n_workers" in note for note in spec.notes)
    # ...or named after the profile asked for
    cfg = load_config([path], profile="mine")
    assert cfg.default_profile == "mine"
    assert cfg.resolve("mine").workers == 3


def test_single_cluster_adapt_kwargs_with_jobs_aliases(isolated):
    path = write(
        isolated / "adaptive.yaml",
        "cluster_class: distributed.LocalCluster\n"
        "adapt_kwargs:\n  minimum_jobs: 1\n  maximum_jobs: 3\n",
    )
    spec = load_config([path]).resolve()
    assert spec.adapt_kwargs == {"minimum": 1, "maximum": 3}
    assert spec.workers is None


def test_formats_mix_along_the_chain(isolated):
    write(isolated / "home" / ".casa" / "config.yaml", "pipeconfig:\n  dask:\n    n_workers: 2\n")
    write(
        isolated / "work" / "config.yaml",
        "pipecluster:\n  profiles:\n    local:\n      cluster_kwargs: {memory_limit: 1GiB}\n",
    )
    single = write(
        isolated / "one.yaml",
        "cluster_class: distributed.LocalCluster\ncluster_kwargs: {threads_per_worker: 2}\n",
    )
    cfg = load_config([single], profile="local")
    spec = cfg.resolve("local")
    assert spec.workers == 2
    assert spec.cluster_kwargs["memory_limit"] == "1GiB"
    assert spec.cluster_kwargs["threads_per_worker"] == 2
    assert [f.formats for f in cfg.files] == [
        ("native",),
        ("casa-pipeline",),
        ("native",),
        ("single-cluster",),
    ]


def test_sizing_keys_of_batch_backends_are_translated_for_local(isolated):
    spec = load_config(
        overrides=[
            "cluster_kwargs.cores=2",
            "cluster_kwargs.memory=1GiB",
            "cluster_kwargs.walltime=01:00:00",
        ]
    ).resolve()
    assert spec.cluster_kwargs["threads_per_worker"] == 1  # the profile's own value wins
    assert spec.cluster_kwargs["memory_limit"] == "1GiB"
    assert "walltime" not in spec.cluster_kwargs
    assert any("memory_limit" in n for n in spec.notes)
    assert any("walltime" in n for n in spec.notes)


def test_explicit_workers_and_adapt_arguments():
    cfg = load_config()
    assert cfg.resolve(workers=3).workers == 3
    spec = cfg.resolve(adapt=(1, 4))
    assert spec.adapt_kwargs == {"minimum": 1, "maximum": 4}
    with pytest.raises(ConfigError, match="either a worker count or an adapt range"):
        cfg.resolve(workers=2, adapt=(1, 2))
    with pytest.raises(ConfigError, match="minimum 5 is above maximum 2"):
        cfg.resolve(adapt=(5, 2))
    with pytest.raises(ConfigError, match="workers must be an integer"):
        cfg.resolve(workers=-1)


# -- errors ---------------------------------------------------------------------------


def error_for(tmp: Path, text: str, **kwargs) -> ConfigError:
    path = write(tmp / "bad.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_config([path], **kwargs).resolve(kwargs.get("profile"))
    return info.value


def test_unknown_key_names_file_line_accepted_and_did_you_mean(isolated):
    err = error_for(isolated, "pipecluster:\n  profiles:\n    local:\n      wokers: 2\n")
    assert err.source == f"{isolated / 'bad.yaml'}:4"
    assert err.key == "profiles.local.wokers"
    assert err.suggestion == "workers"
    assert "cluster_kwargs" in err.accepted
    assert "did you mean 'workers'" in str(err)


def test_wrong_type_names_expected_type(isolated):
    err = error_for(isolated, "pipecluster:\n  profiles:\n    local:\n      workers: two\n")
    assert "expected an integer >= 0" in str(err)
    assert "'two'" in str(err)
    assert err.source.endswith("bad.yaml:4")


def test_bad_enum_value(isolated):
    err = error_for(isolated, "pipecluster:\n  mpi:\n    sanitize: sometimes\n")
    assert err.accepted == "auto | always | never"


def test_unknown_top_level_key(isolated):
    err = error_for(isolated, "pipeclustr:\n  default: local\n")
    assert err.suggestion == "pipecluster"
    assert err.source.endswith("bad.yaml:1")


def test_casa_format_errors_use_the_casa_key_names(isolated):
    err = error_for(isolated, "pipeconfig:\n  dask:\n    clustertype: pbs\n")
    assert err.key == "pipeconfig.dask.clustertype"
    assert err.accepted == "local | slurm | htcondor"
    err = error_for(isolated, "pipeconfig:\n  dask:\n    n_worker: 2\n")
    assert err.suggestion == "n_workers"


def test_unknown_profile_lists_profiles(isolated):
    with pytest.raises(ConfigError) as info:
        load_config().resolve("slurn")
    assert info.value.suggestion == "slurm"
    assert "local" in info.value.accepted
    err = error_for(isolated, "pipecluster:\n  default: nope\n")
    assert err.key == "default"
    assert err.source.endswith("bad.yaml:2")


def test_unknown_backend_lists_installed(isolated):
    err = error_for(
        isolated, "pipecluster:\n  profiles:\n    x:\n      backend: locall\n", profile="x"
    )
    assert err.suggestion == "local"
    assert "address" in err.accepted


def test_cluster_class_that_does_not_import(isolated):
    err = error_for(isolated, "cluster_class: nosuchpackage.Cluster\n")
    assert "does not import" in str(err)
    assert err.source.endswith("bad.yaml:1")


def test_cluster_kwarg_the_class_does_not_accept(isolated):
    err = error_for(
        isolated,
        "cluster_class: distributed.LocalCluster\ncluster_kwargs:\n  thread_per_worker: 2\n",
    )
    assert "does not accept 'thread_per_worker'" in str(err)
    assert err.suggestion == "threads_per_worker"
    assert err.source.endswith("bad.yaml:3")


def test_invalid_yaml_and_duplicate_keys_report_lines(isolated):
    err = error_for(isolated, "pipecluster:\n  default: [unclosed\n")
    assert "not valid YAML" in str(err)
    assert err.source.startswith(str(isolated / "bad.yaml"))
    err = error_for(isolated, "pipecluster:\n  default: local\n  default: slurm\n")
    assert "written twice" in str(err)
    assert err.source.endswith("bad.yaml:3")


def test_missing_explicit_file_and_bad_override(isolated):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config([isolated / "nope.yaml"])
    with pytest.raises(ConfigError, match="has no '='"):
        load_config(overrides=["workers"])
    with pytest.raises(ConfigError) as info:
        load_config(overrides=["workers=lots"])
    assert info.value.source == "override"


def test_top_level_must_be_mapping(isolated):
    err = error_for(isolated, "- just\n- a list\n")
    assert "must be a mapping" in str(err)
