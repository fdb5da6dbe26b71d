"""The REST API of the jupyter_server extension against a real server and real clusters.

The server runs in this process (pytest-jupyter's ``jp_fetch``), so clusters it starts
are children of this interpreter and ``no_leaks`` sees them. Clusters "owned by a kernel"
are started by a real second Python process that announces itself as a kernel.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
from tornado.httpclient import HTTPClientError

from pipejupyter.lifecycle import discovery, manager
from tests.support.common import PYTHON, ROOT, live_children, port_open, wait_until
from tests.support.server import API, jp_server_config, restore_owner_kind  # noqa: F401 (fixtures)

pytest_plugins = ["pytest_jupyter.jupyter_server"]
pytestmark = pytest.mark.usefixtures("isolated", "no_leaks", "restore_owner_kind")


@pytest.fixture
def api(jp_fetch):
    """``await api(method, "clusters", body=...) -> (status, json)``; errors are answers too."""

    async def call(method: str, *path: str, body=None, raw: bytes | None = None, **kwargs):
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        if data is None and method in ("POST", "PATCH"):
            data = b""
        try:
            response = await jp_fetch(
                API, *path, method=method, body=data, request_timeout=120, **kwargs
            )
        except HTTPClientError as exc:
            response = exc.response
        text = response.body.decode() if response.body else ""
        return response.code, json.loads(text) if text else None

    return call


@pytest.fixture
def slow_preload(tmp_path) -> str:
    """A worker preload script that holds each worker back for 4 s (a slow batch queue)."""
    path = tmp_path / "slow_preload.py"
    path.write_text("import time\ntime.sleep(4)\n")
    return str(path)


KERNEL_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import pipejupyter.lifecycle.manager as m
    m.default_manager.owner_kind = "kernel"
    handle = m.start("local", workers=1, timeout=60)
    print(json.dumps({"id": handle.id, "pid": __import__("os").getpid()}), flush=True)
    for line in sys.stdin:
        command = line.split()
        if command[0] == "scale":
            handle.scale(int(command[1]))
            handle.wait_for_workers(int(command[1]), timeout=60)
        elif command[0] == "stop":
            handle.stop()
        elif command[0] == "crash":  # the scheduler dies; this process and its record stay
            handle.backend.cluster.close()
        print("ok", flush=True)
    """
)


@pytest.fixture
def kernel_cluster():
    """A real local cluster owned by another process that calls itself a kernel."""
    proc = subprocess.Popen(
        [PYTHON, "-c", KERNEL_SCRIPT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.getcwd(),
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        line = proc.stdout.readline()
        assert line, "the kernel-like process did not start its cluster"
        info = json.loads(line)

        def send(command: str) -> None:
            proc.stdin.write(command + "\n")
            proc.stdin.flush()
            assert proc.stdout.readline().strip() == "ok"

        info["send"] = send
        info["proc"] = proc
        yield info
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _until(predicate, timeout: float = 30.0, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(interval)


# -- happy paths -----------------------------------------------------------------------


async def test_profiles_resolved_with_provenance(api, isolated):
    (Path.cwd() / "config.yaml").write_text(
        "pipecluster:\n  profiles:\n    small:\n      backend: local\n      workers: 3\n"
        "      cluster_kwargs:\n        threads_per_worker: 2\n        memory_limit: 1GiB\n"
    )
    status, data = await api("GET", "profiles")
    assert status == 200
    assert data["default"] == "local"
    profiles = {p["name"]: p for p in data["profiles"]}
    small = profiles["small"]
    assert (small["backend"], small["workers"], small["cores"], small["memory"]) == (
        "local",
        3,
        2,
        "1GiB",
    )
    config = str(Path.cwd() / "config.yaml")
    assert small["origin"]["workers"] == f"{config}:5"
    assert small["origin"]["memory"] == f"{config}:8"
    assert profiles["local"]["origin"]["backend"] == "default"
    assert profiles["local"]["cluster_class"] == "distributed.LocalCluster"


async def test_start_get_scale_adapt_stop(api):
    status, model = await api("POST", "clusters", body={"profile": "local", "workers": 1})
    assert status == 201, model
    cid = model["id"]
    assert model["status"] == "running"
    assert model["workers"] == 1
    assert model["owner"] == {"pid": os.getpid(), "host": socket.gethostname(), "kind": "server"}
    assert discovery.find(cid)["owner"]["kind"] == "server"  # kernels see it too

    status, listing = await api("GET", "clusters")
    assert status == 200
    assert [c["id"] for c in listing["clusters"]] == [cid]

    status, detail = await api("GET", "clusters", cid)
    assert status == 200
    assert detail["worker_info"][0]["address"].startswith("tcp://127.0.0.1:")

    status, model = await api("PATCH", "clusters", cid, body={"workers": 2})
    assert status == 200, model

    async def two_workers():
        return (await api("GET", "clusters", cid))[1]["workers"] == 2

    assert await _until(two_workers)

    status, model = await api(
        "PATCH", "clusters", cid, body={"adapt": {"minimum": 1, "maximum": 3}}
    )
    assert status == 200
    assert model["adapt"] == {"minimum": 1, "maximum": 3}

    address = model["scheduler_address"]
    status, body = await api("DELETE", "clusters", cid)
    assert (status, body) == (204, None)
    assert not port_open(address)
    assert discovery.find(cid) is None
    assert (await api("GET", "clusters"))[1] == {"clusters": []}


async def test_start_adaptive_and_overrides(api):
    status, model = await api(
        "POST",
        "clusters",
        body={
            "profile": "local",
            "adapt": {"minimum": 1, "maximum": 2},
            "overrides": {"cluster_kwargs.threads_per_worker": 2},
        },
    )
    assert status == 201, model
    assert model["adapt"] == {"minimum": 1, "maximum": 2}
    assert model["workers"] >= 1
    assert model["worker_info"][0]["threads"] == 2
    assert (await api("DELETE", "clusters", model["id"]))[0] == 204


async def test_polling_stays_fast_while_a_start_is_slow(api, slow_preload):
    """Starts run off the event loop: GET answers while a POST waits for its workers,
    the starting cluster is listed, and it cannot be stopped until it is up (409)."""
    post = asyncio.ensure_future(
        api(
            "POST",
            "clusters",
            body={
                "profile": "local",
                "workers": 1,
                "overrides": {"cluster_kwargs.preload": [slow_preload]},
            },
        )
    )

    async def starting():
        t0 = time.monotonic()
        status, listing = await api("GET", "clusters")
        assert status == 200
        assert time.monotonic() - t0 < 2.0
        return [c for c in listing["clusters"] if c["status"] == "starting"]

    seen = await _until(starting, timeout=20, interval=0.1)
    assert seen
    assert not post.done()
    status, body = await api("DELETE", "clusters", seen[0]["id"])
    assert status == 409
    assert "still starting" in body["message"]
    status, model = await post
    assert status == 201
    assert model["id"] == seen[0]["id"]
    assert model["workers"] == 1
    assert (await api("DELETE", "clusters", model["id"]))[0] == 204


# -- clusters owned by a kernel --------------------------------------------------------


async def test_kernel_cluster_listed_live_and_protected(api, kernel_cluster):
    cid, pid = kernel_cluster["id"], kernel_cluster["pid"]

    async def listed():
        clusters = (await api("GET", "clusters"))[1]["clusters"]
        return next((c for c in clusters if c["id"] == cid), None)

    model = await listed()
    assert model is not None
    assert model["owner"]["kind"] == "kernel"
    assert model["owner"]["pid"] == pid
    # Live counts come from the scheduler: a discovery record alone would say 0 connected.
    assert (model["workers"], model["pending"], model["status"]) == (1, 0, "running")

    status, detail = await api("GET", "clusters", cid)
    assert status == 200
    assert len(detail["worker_info"]) == 1
    assert detail["worker_info"][0]["address"]

    for method, body in (("PATCH", {"workers": 3}), ("DELETE", None)):
        status, error = await api(method, "clusters", cid, body=body)
        assert status == 409, (method, error)
        assert "kernel" in error["message"]
        assert f"pid {pid}" in error["message"]

    await asyncio.to_thread(kernel_cluster["send"], "scale 2")

    async def two():
        found = await listed()
        return found and found["workers"] == 2

    assert await _until(two)

    address = model["scheduler_address"]
    await asyncio.to_thread(kernel_cluster["send"], "stop")

    async def gone():
        return await listed() is None

    assert await _until(gone)
    assert (await api("GET", "clusters", cid))[0] == 404
    assert not port_open(address)


async def test_kernel_cluster_whose_scheduler_died_is_lost_and_polls_stay_fast(api, kernel_cluster):
    cid = kernel_cluster["id"]

    async def model():
        clusters = (await api("GET", "clusters"))[1]["clusters"]
        return next(c for c in clusters if c["id"] == cid)

    assert (await model())["workers"] == 1
    await asyncio.to_thread(kernel_cluster["send"], "crash")
    found = await _until(lambda: _lost(model))
    assert found["workers"] == 0
    assert found["error"]
    for _ in range(5):  # a dead scheduler must not hold up the panel's polls
        t0 = time.monotonic()
        assert (await model())["status"] == "lost"
        assert time.monotonic() - t0 < 1.5


async def _lost(model):
    found = await model()
    return found if found["status"] == "lost" else None


# -- errors ----------------------------------------------------------------------------

BAD_START_BODIES = [
    (b"{not json", "not JSON"),
    (b"", "empty"),
    (b"[1, 2]", "JSON object"),
    (b'{"profile": "local", "worker": 2}', "did you mean 'workers'"),
    (b'{"profile": "local", "workers": -1}', "integer >= 0"),
    (b'{"profile": "local", "workers": "2"}', "integer >= 0"),
    (b'{"profile": "local", "workers": true}', "integer >= 0"),
    (b'{"profile": "local", "workers": 1, "adapt": {"minimum": 1, "maximum": 2}}', "not both"),
    (b'{"profile": "local", "adapt": {"minimum": 3, "maximum": 2}}', "above maximum"),
    (b'{"profile": "local", "adapt": {"minimum": 1}}', "adapt needs maximum"),
    (b'{"profile": "local", "adapt": [1, 2]}', "adapt must be an object"),
    (b'{"profile": 5}', "profile must be a non-empty string"),
    (b'{"profile": "local", "overrides": ["a=b"]}', "overrides must be an object"),
]


@pytest.mark.parametrize(("raw", "expected"), BAD_START_BODIES)
async def test_bad_start_body_is_400_and_starts_nothing(api, raw, expected):
    status, error = await api("POST", "clusters", raw=raw)
    assert status == 400, error
    assert expected in error["message"]
    assert set(error) == {"message", "key", "source"}
    assert manager.clusters() == []
    assert live_children(os.getpid()) == set()


async def test_bad_scale_body_is_400(api):
    status, model = await api("POST", "clusters", body={"profile": "local", "workers": 1})
    assert status == 201
    cid = model["id"]
    for raw, expected in (
        (b"{}", 'give "workers"'),
        (b'{"workers": 2, "adapt": {"minimum": 0, "maximum": 1}}', "not both"),
        (b'{"workrs": 2}', "did you mean 'workers'"),
        (b'{"adapt": {"minimum": 0, "maximum": 1, "step": 2}}', "unknown key 'step'"),
        (b"2", "JSON object"),
    ):
        status, error = await api("PATCH", "clusters", cid, raw=raw)
        assert status == 400, (raw, error)
        assert expected in error["message"], (raw, error)
    assert (await api("GET", "clusters", cid))[1]["workers"] == 1
    assert (await api("DELETE", "clusters", cid))[0] == 204


async def test_unknown_id_is_404_on_every_route(api):
    for method, body in (("GET", None), ("PATCH", {"workers": 1}), ("DELETE", None)):
        status, error = await api(method, "clusters", "0123456789ab", body=body)
        assert status == 404, (method, error)
        assert "0123456789ab" in error["message"], (method, error)


async def test_stopped_cluster_is_gone(api):
    status, model = await api("POST", "clusters", body={"profile": "local", "workers": 0})
    assert status == 201
    assert model["workers"] == 0
    assert (await api("DELETE", "clusters", model["id"]))[0] == 204
    assert (await api("DELETE", "clusters", model["id"]))[0] == 404
    assert (await api("PATCH", "clusters", model["id"], body={"workers": 1}))[0] == 404


async def test_config_errors_are_422_with_where_and_bad_overrides_400(api):
    status, error = await api("POST", "clusters", body={"profile": "locl", "workers": 1})
    assert status == 422
    assert "did you mean 'local'" in error["message"]

    status, error = await api(
        "POST",
        "clusters",
        body={
            "profile": "local",
            "workers": 1,
            "overrides": {"cluster_kwargs.thredas_per_worker": 2},
        },
    )
    assert status == 400  # the request's own value: a bad request, not a bad config file
    assert "threads_per_worker" in error["message"]
    assert error["key"] == "profiles.local.cluster_kwargs.thredas_per_worker"
    assert error["source"] == "override"

    config = Path.cwd() / "config.yaml"
    config.write_text("pipecluster:\n  profiles:\n    local:\n      workers: many\n")
    for method, path, body in (
        ("GET", ("profiles",), None),
        ("POST", ("clusters",), {"profile": "local"}),
    ):
        status, error = await api(method, *path, body=body)
        assert status == 422, (method, error)
        assert error["source"] == f"{config}:4"
        assert "workers" in error["message"]
    assert manager.clusters() == []


async def test_backend_start_failure_is_502_and_cleaned_up(api, tmp_path):
    """Valid configuration, but the workers cannot start (a broken site module on them)."""
    broken = tmp_path / "broken_site.py"
    broken.write_text("raise RuntimeError('the worker environment is broken')\n")
    body = {
        "profile": "local",
        "workers": 1,
        "overrides": {"cluster_kwargs.preload": [str(broken)]},
    }
    status, error = await api("POST", "clusters", body=body)
    assert status == 502, error
    assert "starting 'local' (local) failed" in error["message"]
    assert manager.clusters() == []
    assert discovery.read_all() == []
    assert wait_until(lambda: not live_children(os.getpid()), timeout=20)


async def test_a_bug_is_a_logged_500_with_a_json_message(api, jp_serverapp, monkeypatch):
    import logging

    from pipejupyter.server.service import ClusterService

    def broken(self, timeout=2.0):
        raise ZeroDivisionError("injected bug")

    class Keep(logging.Handler):
        records: list[logging.LogRecord] = []

        def emit(self, record):
            self.records.append(record)

    keep = Keep(level=logging.ERROR)
    jp_serverapp.log.addHandler(keep)
    monkeypatch.setattr(ClusterService, "list", broken)  # a bug, injected
    try:
        status, error = await api("GET", "clusters")
    finally:
        jp_serverapp.log.removeHandler(keep)
    assert status == 500
    assert "ZeroDivisionError: injected bug" in error["message"]
    logged = [r for r in keep.records if "pipejupyter: GET" in r.getMessage()]
    assert logged
    assert logged[0].exc_info[0] is ZeroDivisionError  # with its traceback
