"""The kubernetes backend without a Kubernetes API: what can be real here is the DaskCluster
resource built by dask-kubernetes' own ``make_cluster_spec``, the dry-run text, and a quick,
clear error when no API answers.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest
import yaml

import pipejupyter
from pipejupyter.environment.remote import MACHINE_LOCAL
from pipejupyter.errors import ClusterError, ConfigError
from pipejupyter.lifecycle import manager
from tests.support.common import ROOT, require, run_cli

ODD_VALUE = "a b 'single' \"double\" $HOME $(NOT_EXPANDED) back\\slash"
MPI_ENVIRON = {
    "OMPI_COMM_WORLD_RANK": "0",
    "OMPI_COMM_WORLD_SIZE": "2",
    "PMIX_RANK": "0",
    "OMPI_MCA_plm": "x",
    "PMI_FD": "3",
}

pytestmark = pytest.mark.usefixtures("isolated")


@pytest.fixture(autouse=True)
def _dask_kubernetes():
    try:
        import dask_kubernetes.operator  # noqa: F401
    except ImportError:
        require(False, "dask-kubernetes (pip install 'pipejupyter[kubernetes]')")


def write_profile(isolated: Path, **profile) -> Path:
    body = {
        "backend": "kubernetes",
        "image": "ghcr.io/dask/dask:2026.8.0",
        "namespace": "science",
        "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "2Gi"}},
        "workers": 3,
        "env": {"pass": ["*"], "set": {"PJ_ODD": ODD_VALUE, "PJ_API_TOKEN": "tok-5ecret-value"}},
        **profile,
    }
    path = isolated / "work" / "config.yaml"
    path.write_text(yaml.safe_dump({"pipecluster": {"profiles": {"k8s": body}}}, sort_keys=False))
    return path


def containers(resource: dict) -> list[dict]:
    return [
        c for part in ("scheduler", "worker") for c in resource["spec"][part]["spec"]["containers"]
    ]


def env_of(container: dict) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container["env"] or []}


def test_cluster_spec_carries_image_resources_environment_and_no_mpi(isolated, monkeypatch):
    for name, value in MPI_ENVIRON.items():
        monkeypatch.setenv(name, value)  # as if this notebook ran under mpirun
    monkeypatch.setenv("PJ_COPIED", "from here")
    monkeypatch.setenv("PJ_PATTERN_PASSWORD", "pattern-5ecret")
    write_profile(isolated)
    spec, backend = manager.prepare("k8s")
    resource = backend.cluster_spec()

    assert resource["kind"] == "DaskCluster"
    assert resource["metadata"]["name"] == backend.cluster_name
    assert backend.cluster_name.startswith("pipejupyter-k8s-")
    assert resource["spec"]["worker"]["replicas"] == 3
    for container in containers(resource):
        assert container["image"] == "ghcr.io/dask/dask:2026.8.0"
        assert container["resources"] == {
            "requests": {"cpu": "1", "memory": "2Gi"},
            "limits": {"memory": "2Gi"},
        }
        env = env_of(container)
        assert env["PJ_ODD"] == ODD_VALUE  # exactly as written: no shell on the way
        assert env["PJ_COPIED"] == "from here"  # passed through by pattern
        assert env["PJ_API_TOKEN"] == "tok-5ecret-value"  # set explicitly: sent
        assert "PJ_PATTERN_PASSWORD" not in env  # secret-looking, matched only by "*"
        assert not [n for n in env if n.startswith(("OMPI_", "PMIX_", "PMI_"))]
        assert not set(MACHINE_LOCAL) & set(env)  # this machine's PATH, HOME... stay here


def test_dry_run_prints_the_resource_without_secrets(isolated):
    write_profile(isolated, cluster_name="survey-7")
    text = pipejupyter.dry_run("k8s")
    resource_text = text.split(
        "# DaskCluster resource (dask_kubernetes.operator.make_cluster_spec):\n", 1
    )[1]
    resource = yaml.safe_load(resource_text)
    assert resource["metadata"]["name"] == "survey-7"
    assert env_of(containers(resource)[1])["PJ_ODD"] == ODD_VALUE
    assert env_of(containers(resource)[1])["PJ_API_TOKEN"] == "********"
    assert "tok-5ecret-value" not in text
    assert "&id" not in text  # written out, not as YAML anchors
    # The CLI face prints the same.
    proc = run_cli("dry-run", "k8s", cwd=isolated / "work", env={"PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert "kind: DaskCluster" in proc.stdout
    assert "image: ghcr.io/dask/dask:2026.8.0" in proc.stdout
    assert "tok-5ecret-value" not in proc.stdout


def test_kubecluster_file_format_is_translated(isolated):
    from pipejupyter.config.loader import load_config

    path = isolated / "work" / "kube.yaml"
    path.write_text(
        "cluster_class: dask_kubernetes.operator.KubeCluster\n"
        "cluster_kwargs:\n  image: img:1\n  n_workers: 2\n  env: {A: '1'}\n"
        "  resources: {limits: {cpu: '2'}}\n"
    )
    spec = load_config(path).resolve("kube")
    assert spec.backend == "kubernetes"
    assert spec.workers == 2
    assert spec.options["image"] == "img:1"
    assert spec.options["resources"] == {"limits": {"cpu": "2"}}
    assert spec.env["set"]["A"] == "1"
    assert spec.cluster_kwargs == {}


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        (
            {"resources": {"request": {"cpu": "1"}}},
            "unknown key 'request' (did you mean 'requests'?)",
        ),
        ({"cluster_name": "Bad_Name"}, "'Bad_Name' cannot name a DaskCluster"),
        ({"imagee": "x"}, "did you mean 'image'?"),
        (
            {"cluster_kwargs": {"custom_cluster_spec": {}}},
            "custom_cluster_spec is built by pipejupyter",
        ),
        ({"cluster_kwargs": {"n_worker": 2}}, "KubeCluster does not accept 'n_worker'"),
    ],
)
def test_profile_errors(isolated, profile, message):
    write_profile(isolated, **profile)
    with pytest.raises(ConfigError) as info:
        manager.prepare("k8s")
    assert message in str(info.value)


def _start_error(limit: float = 60) -> BaseException:
    box: dict = {}

    def run() -> None:
        try:
            pipejupyter.start("k8s", timeout=30)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit)
    assert not thread.is_alive(), "start() hangs without a Kubernetes API"
    return box.get("error")


def test_no_kubeconfig_is_a_clear_error(isolated, monkeypatch):
    monkeypatch.delenv("KUBECONFIG", raising=False)  # and HOME is fresh: no ~/.kube/config
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    write_profile(isolated)
    error = _start_error()
    assert isinstance(error, ClusterError), error
    assert "no Kubernetes API reachable" in str(error)
    assert "kubeconfig" in str(error)
    assert manager.clusters() == []


def _kubeconfig(isolated: Path, server: str) -> Path:
    path = isolated / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "c", "cluster": {"server": server, "insecure-skip-tls-verify": True}}
                ],
                "contexts": [
                    {"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "science"}}
                ],
                "current-context": "x",
                "users": [{"name": "u", "user": {"token": "kube-t0ken-value"}}],
            }
        )
    )
    return path


def test_api_refusing_connections_is_a_clear_error(isolated, monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(isolated, f"https://127.0.0.1:{port}")))
    write_profile(isolated)
    error = _start_error()
    assert isinstance(error, ClusterError), error
    assert "no Kubernetes API reachable (ConnectError" in str(error)
    assert "kube-t0ken-value" not in str(error)


def test_api_that_never_answers_times_out(isolated, monkeypatch):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        monkeypatch.setenv(
            "KUBECONFIG", str(_kubeconfig(isolated, f"https://127.0.0.1:{silent.getsockname()[1]}"))
        )
        write_profile(isolated, api_timeout=1)
        error = _start_error()
    assert isinstance(error, ClusterError), error
    assert "the Kubernetes API did not answer within 1 s" in str(error)
    assert manager.clusters() == []
