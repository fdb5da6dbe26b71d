"""The gateway backend against a REAL dask-gateway-server (ci/gateway.sh); its config rules
are in test_gateway_config.py, its fault cases in test_gateway_faults.py.

Each test logs in as its own user (the test server accepts any name with its password),
so "nothing left" can be checked on the gateway itself: no cluster of that user pending,
running or stopping, and no process carrying the cluster's name.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import textwrap
import urllib.request
from pathlib import Path

import pytest

import pipejupyter
from pipejupyter.errors import ClusterError, ConfigError, UnknownCluster
from pipejupyter.lifecycle import discovery, manager
from tests.support.common import PYTHON, ROOT, run_cli, wait_until
from tests.support.gateway import (  # noqa: F401  (gw is a fixture)
    ADDRESS_VAR,
    ODD_VALUE,
    PASSWORD_VAR,
    RealGateway,
    _healthy,
    _loop_threads,
    _raw_gateway,
    bounded,
    cluster_processes,
    gw,
    write_config,
)
from tests.support.lab import free_port

# -- a real gateway cluster, end to end ---------------------------------------------------


@pytest.mark.gateway
@pytest.mark.usefixtures("no_leaks")
def test_create_scale_tasks_environment_list_connect_stop(gw, isolated):
    write_config(
        isolated / "work" / "config.yaml",
        gw,
        options={"worker_cores": 2, "worker_memory": 0.5},
        env={"set": {"PJ_ODD": ODD_VALUE}},
        workers=2,
    )
    handle = pipejupyter.start("gw", timeout=120)
    name = handle.backend.cluster_name
    try:
        assert handle.status == "running"
        assert gw.active() == [name]
        # Builtins only: gateway workers cannot import this test module.
        assert handle.client.gather(handle.client.map(abs, range(-10, 10))) == [
            abs(i) for i in range(-10, 10)
        ]

        model = handle.model()
        assert model["backend"] == "gateway"
        assert model["workers"] == 2
        # The options reached the gateway: 2 threads and 0.5 GiB per worker.
        assert [w["threads"] for w in model["worker_info"]] == [2, 2]
        assert {w["memory_limit"] for w in model["worker_info"]} == {2**29}
        assert model["scheduler_address"] == f"gateway://{gw.address.split('://')[1]}/{name}"
        # The dashboard goes through the gateway's proxy, and answers there.
        assert model["dashboard_link"] == f"{gw.address}/clusters/{name}/status"
        with urllib.request.urlopen(model["dashboard_link"], timeout=10) as page:
            assert page.status == 200

        # Environment passthrough through the server's `environment` option, exactly.
        # (Lambdas travel by value; a module-level function of this file would not import there.)
        assert set(handle.client.run(lambda: os.environ.get("PJ_ODD")).values()) == {ODD_VALUE}
        # The gateway password is matched by the PIPEJUPYTER_* pattern but never sent.
        assert all(
            gw.password not in env
            for env in handle.client.run(lambda: list(os.environ.values())).values()
        )

        # `list` shows it once, beside a local cluster of this process.
        local = pipejupyter.start("local", workers=1, timeout=60)
        listed = manager.list_clusters()
        assert sorted(r["backend"] for r in listed) == ["gateway", "local"]
        assert [r["name"] for r in listed if r["backend"] == "gateway"] == [handle.name]
        local.stop()

        # A second process connects by gateway://NAME and by the discovery id, and sees workers.
        out = _second_process([f"gateway://{name}", handle.id], isolated)
        for seen in out:
            assert seen["workers"] == 2
            assert seen["result"] == 6
            assert seen["backend"] == "gateway"
            assert seen["scale_error"].startswith("cannot scale")
        # Listed there once (its discovery record and the gateway's report are one cluster).
        assert out[0]["listed"] == [{"backend": "gateway", "id": handle.id}]
        assert out[0]["also_listed"] == []  # once connected, only as the connected handle
        # Disconnecting there left the cluster running here.
        assert handle.model()["workers"] == 2
        assert gw.active() == [name]

        handle.adapt(1, 2)
        assert handle.model()["adapt"] == {"minimum": 1, "maximum": 2}
    finally:
        handle.stop()
    assert handle.status == "stopped"
    assert handle.error is None
    # stop() returns once the gateway says the cluster is stopped: its processes are gone.
    assert gw.active() == []
    assert wait_until(lambda: not cluster_processes(name), timeout=10), cluster_processes(name)
    assert not discovery.read_all()


def _second_process(targets: list[str], isolated: Path) -> list[dict]:
    script = textwrap.dedent(
        """
        import json, sys
        import pipejupyter
        from pipejupyter.lifecycle import manager
        from pipejupyter.errors import NotOwned
        listed = [{"backend": r["backend"], "id": r["id"]} for r in manager.list_clusters()]
        out = []
        for target in sys.argv[1:]:
            handle = pipejupyter.connect(target)
            model = handle.model()
            seen = {"workers": model["workers"], "backend": model["backend"],
                    "result": handle.client.submit(sum, [1, 2, 3]).result(), "listed": listed,
                    "also_listed": [r["id"] for r in manager.list_clusters()
                                    if r["id"] != handle.id]}
            try:
                handle.scale(3)
            except NotOwned as exc:
                seen["scale_error"] = str(exc)
            handle.stop()
            out.append(seen)
        print(json.dumps(out))
        """
    )
    proc = subprocess.run(
        [PYTHON, "-c", script, *targets],
        capture_output=True,
        text=True,
        cwd=isolated / "work",
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.gateway
def test_cluster_made_elsewhere_is_listed_connected_and_stopped_by_the_cli(gw, isolated):
    # A cluster created with the plain dask-gateway client, not by pipejupyter.
    with _raw_gateway(gw.address, gw.user, gw.password) as gateway:
        name = gateway.submit()
    assert wait_until(
        lambda: any(r["id"] == name and r["status"] == "running" for r in manager.list_clusters()),
        timeout=60,
    )
    record = next(r for r in manager.list_clusters() if r["id"] == name)
    assert record["backend"] == "gateway"
    assert record["profile"] == "gw"
    assert record["dashboard_link"] == f"{gw.address}/clusters/{name}/status"

    handle = pipejupyter.connect(name)  # the listed id connects
    assert handle.backend_label == "gateway"
    assert handle.model()["status"] == "running"
    handle.stop()  # only disconnects: not ours
    assert gw.active() == [name]

    proc = run_cli("stop", name, cwd=isolated / "work", env={"PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert gw.active() == []
    assert wait_until(lambda: not cluster_processes(name), timeout=10)


# -- errors: clear, bounded, nothing left -----------------------------------------------


def _armed_gateways() -> int:
    """dask-gateway Gateway objects whose __del__ would still close through their loop (run
    by a collection on that loop's thread, it deadlocks it)."""
    import gc

    from dask_gateway import Gateway

    return sum(isinstance(o, Gateway) and "_loop_runner" in vars(o) for o in gc.get_objects())


@pytest.mark.gateway
def test_wrong_password_is_a_clear_error_and_leaves_nothing(gw, monkeypatch):
    monkeypatch.setenv("PJ_WRONG_PASSWORD", "wrong-password-7f3a")
    armed = _armed_gateways()
    box = bounded(
        lambda: pipejupyter.start("gw", overrides=["auth.password_env=PJ_WRONG_PASSWORD"])
    )
    # A failed start collects no garbage (50-100 ms in a kernel with Dask loaded): it
    # leaves no Gateway that a later collection, on whatever thread, would close again.
    assert _armed_gateways() == armed
    error = box.get("error")
    assert isinstance(error, ClusterError), box
    assert "rejected the credentials" in str(error)
    assert "401" in str(error)
    assert gw.user in str(error)
    assert "wrong-password-7f3a" not in str(error)
    assert gw.active() == []
    assert manager.clusters() == []


@pytest.mark.gateway
@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("options.worker_cores=99", "options.worker_cores: the gateway at {address} refuses 99"),
        ("options.foo=1", "has no cluster option 'foo'"),
        ("options.worker_memry=1", "did you mean 'worker_memory'?"),
    ],
)
def test_bad_option_is_refused_before_anything_is_created(gw, override, expected):
    box = bounded(lambda: pipejupyter.start("gw", overrides=[override]))
    error = box.get("error")
    assert isinstance(error, ConfigError), box
    assert expected.format(address=gw.address) in str(error)
    # The error names what this server accepts.
    assert "worker_cores (integer 1..2, default 1)" in str(error)
    if "foo" in override:
        assert "worker_memory (number 0.25..4, default 1.0); environment (mapping)" in str(error)
    assert gw.active() == []
    assert manager.clusters() == []


@pytest.mark.usefixtures("isolated")
def test_unreachable_gateway_is_a_clear_error(isolated, monkeypatch):
    monkeypatch.setenv(PASSWORD_VAR, "any-password")
    gateway = RealGateway(f"http://127.0.0.1:{free_port()}", "any-password", "nobody")
    write_config(isolated / "work" / "config.yaml", gateway)
    box = bounded(lambda: pipejupyter.start("gw"), limit=30)
    error = box.get("error")
    assert isinstance(error, ClusterError), box
    assert f"cannot reach the gateway at {gateway.address}" in str(error)
    assert manager.clusters() == []


@pytest.mark.usefixtures("isolated")
def test_gateway_that_never_answers_times_out(isolated, monkeypatch):
    monkeypatch.setenv(PASSWORD_VAR, "any-password")
    # Accepts connections (the kernel's backlog) and never answers: a hung gateway.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        gateway = RealGateway(
            f"http://127.0.0.1:{silent.getsockname()[1]}", "any-password", "nobody"
        )
        write_config(isolated / "work" / "config.yaml", gateway, request_timeout=1)
        box = bounded(lambda: pipejupyter.start("gw"), limit=30)
    error = box.get("error")
    assert isinstance(error, ClusterError), box
    assert "did not answer within 1 s" in str(error)
    assert manager.clusters() == []


@pytest.mark.gateway
def test_connect_to_unknown_gateway_cluster(gw):
    box = bounded(lambda: pipejupyter.connect("gateway://nosuch"), limit=30)
    error = box.get("error")
    assert isinstance(error, UnknownCluster), box
    assert "no gateway cluster 'nosuch'" in str(error)
    assert gw.address in str(error)


def test_password_variable_not_set_fails_before_any_request(isolated, monkeypatch):
    monkeypatch.delenv("PJ_UNSET_PASSWORD", raising=False)
    gateway = RealGateway(f"http://127.0.0.1:{free_port()}", "", "nobody")
    write_config(
        isolated / "work" / "config.yaml",
        gateway,
        auth={"type": "basic", "password_env": "PJ_UNSET_PASSWORD"},
    )
    with pytest.raises(
        ConfigError, match="environment variable 'PJ_UNSET_PASSWORD', which is not set"
    ):
        pipejupyter.start("gw")


@pytest.mark.gateway
def test_adaptive_gateway_cluster(gw):
    handle = pipejupyter.start("gw", adapt=(1, 2), timeout=120)
    try:
        model = handle.model()
        assert model["adapt"] == {"minimum": 1, "maximum": 2}
        assert model["workers"] >= 1
        assert model["pending"] == 0  # the gateway decides; no invented pending rows
    finally:
        handle.stop()
    assert gw.active() == []


@pytest.mark.gateway
def test_scale_beyond_the_gateway_limit_says_so(gw):
    from pipejupyter.backends.gateway.backend import GatewayLimitWarning

    handle = pipejupyter.start("gw", workers=1, timeout=120)
    try:
        # ci/gateway_config.py: cluster_max_workers = 4 (GATEWAY_MAX_WORKERS)
        with pytest.warns(
            GatewayLimitWarning, match="exceed resource limit of 4 workers. Scaling to 4 instead"
        ):
            handle.scale(10)
        model = handle.model()
        assert model["workers"] + model["pending"] == 4  # no pending rows for workers never coming
    finally:
        handle.stop()
    assert gw.active() == []


@pytest.mark.gateway
@pytest.mark.parametrize(
    ("auth", "outcome"),
    [
        # A dotted class with $VAR in its kwargs: logs in (the unknown name is the only error).
        (
            {
                "type": "dask_gateway.auth.BasicAuth",
                "kwargs": {"username": "{user}", "password": "$PIPEJUPYTER_TEST_GATEWAY_PASSWORD"},
            },
            "no gateway cluster 'nosuch'",
        ),
        # JupyterHub tokens are not what this server checks: refused, and the token never shown.
        (
            {"type": "jupyterhub", "api_token_env": "PJ_HUB_TOKEN"},
            "rejected the credentials (HTTP 401)",
        ),
        (
            {"type": "jupyterhub", "api_token_env": "PJ_UNSET_TOKEN"},
            "'PJ_UNSET_TOKEN', which is not set",
        ),
    ],
)
def test_auth_types(gw, isolated, monkeypatch, auth, outcome):
    monkeypatch.setenv("PJ_HUB_TOKEN", "hub-t0ken-value")
    monkeypatch.delenv("PJ_UNSET_TOKEN", raising=False)
    auth = json.loads(json.dumps(auth).replace("{user}", gw.user))
    write_config(isolated / "work" / "config.yaml", gw, auth=auth)
    box = bounded(lambda: pipejupyter.connect("gateway://nosuch"), limit=30)
    assert outcome in str(box.get("error")), box
    assert "hub-t0ken-value" not in str(box["error"])
    assert gw.password not in str(box["error"])
    assert "hub-t0ken-value" not in pipejupyter.dry_run("gw")
    assert gw.password not in pipejupyter.dry_run("gw")


def test_kerberos_needs_its_package(isolated):
    pytest.importorskip("dask_gateway")
    try:
        import kerberos  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("kerberos is installed here")
    gateway = RealGateway(f"http://127.0.0.1:{free_port()}", "", "nobody")
    write_config(isolated / "work" / "config.yaml", gateway, auth={"type": "kerberos"})
    with pytest.raises(
        ConfigError, match="kerberos authentication needs the Python package 'kerberos'"
    ):
        pipejupyter.start("gw")


def _text(cell) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output["output_type"] == "stream":
            parts.append(output["text"])
        elif output["output_type"] in ("execute_result", "display_data"):
            parts.append(output["data"].get("text/plain", ""))
    return "".join(parts)


@pytest.mark.gateway
@pytest.mark.notebook
def test_gateway_notebook_runs(gw, isolated, monkeypatch):
    """notebooks/03-gateway.ipynb, executed in a real kernel against the real gateway."""
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("PIPEJUPYTER_GATEWAY_USER", gw.user)  # so the fixture checks what it left
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    )
    notebook = nbformat.read(ROOT / "notebooks" / "03-gateway.ipynb", as_version=4)
    client = NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(isolated / "work")}},
    )
    box = bounded(client.execute, limit=600)
    assert "error" not in box, box.get("error")
    code = {c.source.splitlines()[0]: c for c in notebook.cells if c.cell_type == "code"}
    for cell in code.values():
        assert not [
            o for o in cell.outputs if o["output_type"] == "error" or o.get("name") == "stderr"
        ], cell.source

    config_text = _text(code["import os"])
    assert "password_env: PIPEJUPYTER_TEST_GATEWAY_PASSWORD" in config_text
    assert gw.password not in config_text
    dry = _text(code["%pipecluster start gateway --dry-run"])
    assert "PIPELINE_STAGE: calibrate 'field 3' $RUN" in dry
    assert "# note: not sent to gateway workers" in dry
    assert "refused: " in _text(code["import pipejupyter"])
    assert "worker_cores (integer 1..2" in _text(code["import pipejupyter"])
    assert _text(code["cluster = %pipecluster start gateway -n 2"]).startswith(
        "started gateway (gateway, id "
    )
    work = _text(code["from distributed import default_client"])
    assert "workers: 2\n" in work
    assert "squares: [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]" in work
    assert "PIPELINE_STAGE on the workers: {\"calibrate 'field 3' $RUN\"}" in work
    assert f"{gw.address}/clusters/" in _text(code["%pipecluster dashboard"])
    assert " gateway " in _text(code["%pipecluster list"])
    assert _text(code["%pipecluster stop"]).endswith(
        "status: stopped\ngateway clusters still running: []\n"
    )
    everything = "".join(
        _text(c) + json.dumps([o.get("data", {}) for o in c.outputs]) for c in code.values()
    )
    assert gw.password not in everything
    assert gw.active() == []
