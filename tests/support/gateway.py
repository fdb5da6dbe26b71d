"""A REAL dask-gateway-server for the tests (ci/gateway.sh): who is logged in, what runs,
and the `gw` fixture that leaves nothing behind."""

from __future__ import annotations

import contextlib
import os
import threading
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

from pipejupyter.lifecycle import manager
from tests.support.common import processes_with_env, require, wait_until

ADDRESS_VAR = "PIPEJUPYTER_TEST_GATEWAY_ADDRESS"
PASSWORD_VAR = "PIPEJUPYTER_TEST_GATEWAY_PASSWORD"
# Spaces, both quotes, a dollar sign and a backslash: must reach workers exactly as written.
ODD_VALUE = "a b 'single' \"double\" $HOME ${NOPE} back\\slash"


def _healthy(address: str) -> bool:
    try:
        with urllib.request.urlopen(f"{address}/api/health", timeout=3) as answer:
            return answer.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def _raw_gateway(address: str, user: str, password: str):
    """The plain dask-gateway client, closed once (its __del__ would close it again and fail)."""
    from dask_gateway import BasicAuth, Gateway

    gateway = Gateway(address, auth=BasicAuth(user, password))
    try:
        yield gateway
    finally:
        gateway.close()
        gateway.__dict__.pop("_loop_runner", None)


class RealGateway:
    def __init__(self, address: str, password: str, user: str) -> None:
        self.address, self.password, self.user = address, password, user

    def active(self) -> list[str]:
        """Names of this user's clusters that are pending, running or stopping (raw client)."""
        with _raw_gateway(self.address, self.user, self.password) as gateway:
            return [
                r.name for r in gateway.list_clusters(status=["pending", "running", "stopping"])
            ]

    def stop_everything(self) -> None:
        with _raw_gateway(self.address, self.user, self.password) as gateway:
            for report in gateway.list_clusters():
                gateway.stop_cluster(report.name)


def cluster_processes(name: str) -> list[int]:
    """Pids of gateway schedulers/workers of cluster ``name`` (the gateway sets this variable)."""
    return processes_with_env("DASK_GATEWAY_CLUSTER_NAME", name)


def bounded(fn, limit: float = 60.0) -> dict:
    """Run ``fn`` in a thread; fail if it hangs. Returns {"value": ...} or {"error": exc}."""
    box: dict = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the test
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit)
    assert not thread.is_alive(), f"still running after {limit:g} s: it hangs"
    return box


def write_config(path: Path, gw: RealGateway, **profile) -> Path:
    body = {
        "backend": "gateway",
        "address": gw.address,
        "auth": {"type": "basic", "username": gw.user, "password_env": PASSWORD_VAR},
        "options": {"worker_cores": 1, "worker_memory": 0.5},
        "wait_timeout": 120,
        "workers": 1,
        **profile,
    }
    path.write_text(yaml.safe_dump({"pipecluster": {"profiles": {"gw": body}}}, sort_keys=False))
    return path


def _loop_threads() -> int:
    # distributed's LoopRunner names the thread of every event loop it starts "IO loop".
    return sum(t.name == "IO loop" for t in threading.enumerate())


@pytest.fixture
def gw(isolated):
    address = os.environ.get(ADDRESS_VAR, "")
    password = os.environ.get(PASSWORD_VAR, "")
    require(
        bool(address and password) and _healthy(address),
        "dask-gateway-server from ci/gateway.sh (. .ci-state/gateway/env.sh)",
    )
    gateway = RealGateway(address, password, f"pjtest-{uuid.uuid4().hex[:10]}")
    write_config(isolated / "work" / "config.yaml", gateway)
    loops_before = _loop_threads()
    yield gateway
    manager.stop_all(timeout=30)
    left = wait_until(lambda: not gateway.active(), timeout=30) or gateway.active()
    if left is not True:
        gateway.stop_everything()
        pytest.fail(f"gateway clusters left running: {left}")
    # Every gateway client's and Client's loop thread is gone again (none deadlocked or leaked).
    assert wait_until(lambda: _loop_threads() <= loops_before, timeout=20), threading.enumerate()
