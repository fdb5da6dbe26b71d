"""A real `jupyter server` process stops the clusters it owns when it is stopped (SIGTERM)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from pipejupyter.lifecycle import discovery
from pipejupyter.processes import pid_alive as _alive
from tests.support.common import PYTHON, ROOT, children_of, port_open, wait_until
from tests.support.lab import free_port
from tests.support.server import API

pytestmark = pytest.mark.usefixtures("isolated", "no_leaks")

# -- server shutdown -------------------------------------------------------------------


def test_server_stops_its_clusters_when_it_stops(isolated, tmp_path):
    """A real `jupyter server` process: its clusters die with it, kernels' clusters do not
    matter here; discovery files are removed."""
    port = free_port()
    token = "t0ken"
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(
        [
            str(Path(PYTHON).with_name("jupyter-server")),
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={port}",
            f"--IdentityProvider.token={token}",
            "--allow-root",
            '--ServerApp.jpserver_extensions={"pipejupyter": True}',
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=os.getcwd(),
        env={**os.environ, "PYTHONPATH": str(ROOT), "JUPYTER_RUNTIME_DIR": str(tmp_path / "jrt")},
    )
    try:
        import urllib.request

        def call(method, route, body=None):
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/{API}/{route}",
                method=method,
                data=body,
                headers={"Authorization": f"token {token}"},
            )
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, json.loads(response.read() or b"null")

        def up():
            try:
                return call("GET", "clusters")[0] == 200
            except OSError:
                return False

        assert wait_until(up, timeout=60, interval=0.3), (tmp_path / "server.log").read_text()[
            -2000:
        ]
        status, model = call("POST", "clusters", b'{"profile": "local", "workers": 2}')
        assert status == 201
        assert model["workers"] == 2
        assert model["owner"]["pid"] == server.pid
        # Workers must not re-run the jupyter-server script (importing jupyter_server costs
        # seconds per worker).
        from distributed import Client

        with Client(model["scheduler_address"], set_as_default=False, timeout=30) as client:
            imported = client.run(_imports_jupyter_server)
        assert imported, imported
        assert not any(imported.values()), imported
        workers = set(children_of(server.pid))
        assert workers
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        assert "pipejupyter: stopped local" in (tmp_path / "server.log").read_text()
        assert not port_open(model["scheduler_address"])
        assert wait_until(lambda: not [p for p in workers if _alive(p)], timeout=20)
        assert discovery.read_all(prune=False) == []
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        log.close()


def _imports_jupyter_server() -> bool:
    import sys

    return "jupyter_server.serverapp" in sys.modules
