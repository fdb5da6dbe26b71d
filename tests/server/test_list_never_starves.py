"""GET /pipejupyter/clusters against a real `jupyter lab`: it always answers, promptly and small.

The sidebar polls this route every few seconds. What must hold, whatever lies in the runtime
directory and whatever else the server is doing:

- a malformed discovery record is skipped (200, the server's own cluster still listed);
- a record asking for a million workers does not build a million rows;
- records whose scheduler is a stopped process answer as "unreachable" within the deadline,
  instead of each waiting its connect timeout one after another;
- slow starts in flight do not hold up the list (reads have threads of their own).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.common import write
from tests.support.lab import LabServer

#: how long one GET may take while schedulers hang (the watcher's deadline plus slack)
PROMPT = 3.5
#: response size limit for a record that asks for a million workers
SMALL = 100_000

LISTENER = """
import socket, sys, time
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(1024)
print(s.getsockname()[1], flush=True)
time.sleep(3600)
"""


#: a scheduler that accepts connections and closes each, unanswered, after HOLD seconds
SLOW_SCHEDULER = """
import socket, sys, threading, time
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(1024)
print(s.getsockname()[1], flush=True)
def hold(conn):
    time.sleep(float(sys.argv[1]))
    conn.close()
while True:
    conn, _ = s.accept()
    threading.Thread(target=hold, args=(conn,), daemon=True).start()
"""
HOLD = 15


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[LabServer]:
    """One real `jupyter lab` for this module, owning one local cluster of its own."""
    server = LabServer(tmp_path_factory.mktemp("lab"))
    with server:
        status, model = server.request(
            "POST", "pipejupyter/clusters", {"profile": "local", "workers": 1}, timeout=180
        )
        assert status == 201, (status, model, server.log_tail())
        server.own_id = model["id"]
        try:
            yield server
        finally:
            server.request("DELETE", f"pipejupyter/clusters/{server.own_id}", timeout=60)


@pytest.fixture
def runtime(lab: LabServer) -> Iterator[Path]:
    """The server's runtime dir; records a test writes are removed after it."""
    before = set(lab.runtime.glob("cluster-*.json"))
    yield lab.runtime
    for path in set(lab.runtime.glob("cluster-*.json")) - before:
        path.unlink()


@pytest.fixture
def stopped_listener() -> Iterator[tuple[int, int]]:
    """(pid, port) of a SIGSTOPped process holding a listening TCP socket: connects are
    accepted by the kernel, but nothing ever answers."""
    proc = subprocess.Popen([sys.executable, "-c", LISTENER], stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        os.kill(proc.pid, signal.SIGSTOP)
        yield proc.pid, port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture
def slow_scheduler() -> Iterator[int]:
    """The port of SLOW_SCHEDULER: a start connecting there takes HOLD seconds, then fails."""
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_SCHEDULER, str(HOLD)], stdout=subprocess.PIPE, text=True
    )
    try:
        yield int(proc.stdout.readline())
    finally:
        proc.kill()
        proc.wait(timeout=10)


def record(cluster_id: str, **changes: Any) -> dict[str, Any]:
    base = {
        "id": cluster_id,
        "name": f"rec-{cluster_id[-4:]}",
        "backend": "local",
        "profile": "local",
        "status": "running",
        "scheduler_address": "tcp://127.0.0.1:9",
        "dashboard_link": None,
        "adapt": None,
        "workers_requested": 1,
        "owner": {"pid": os.getpid(), "host": socket.gethostname(), "kind": "kernel"},
        "started": time.time(),
        "backend_info": {},
        "discovery_version": 1,
    }
    return {**base, **changes}


def put(runtime: Path, cluster_id: str, content: Any) -> None:
    text = content if isinstance(content, str) else json.dumps(content)
    (runtime / f"cluster-{cluster_id}.json").write_text(text)


def timed_list(lab: LabServer, timeout: float = 60) -> tuple[float, int, Any, int]:
    """(seconds, status, body, response bytes) of one GET /pipejupyter/clusters."""
    req = urllib.request.Request(
        f"{lab.url}/pipejupyter/clusters", headers={"Authorization": f"token {lab.token}"}
    )
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    return time.monotonic() - t0, status, json.loads(raw) if raw else None, len(raw)


def test_malformed_records_do_not_break_the_list(lab, runtime):
    bad = {
        "a00000000001": record("a00000000001", owner="me"),
        "a00000000002": record("a00000000002", id=["a00000000002"]),
        "a00000000003": record("a00000000003", scheduler_address=8786),
        "a00000000004": record("a00000000004", scheduler_address="tcp://[::1:99999999"),
        "a00000000005": {k: v for k, v in record("a00000000005").items() if k != "name"},
        "a00000000006": "{not json",
        "a00000000007": [1, 2, 3],
    }
    for cluster_id, content in bad.items():
        put(runtime, cluster_id, content)
    for _ in range(2):
        seconds, status, body, _size = timed_list(lab)
        assert status == 200, body
        ids = [c["id"] for c in body["clusters"]]
        assert lab.own_id in ids
        assert not set(bad) & set(ids)
    status, own = lab.request("GET", f"pipejupyter/clusters/{lab.own_id}")
    assert status == 200, own
    assert lab.request("GET", "pipejupyter/clusters/a00000000001")[0] == 404
    log = lab.log_tail(200_000)
    assert "Traceback" not in log
    assert str(runtime / "cluster-a00000000001.json") in log  # the warning names the file
    assert log.count(str(runtime / "cluster-a00000000001.json")) == 1  # once, not every poll


def test_a_million_requested_workers_makes_a_small_answer(lab, runtime):
    # "starting": the owner is still bringing it up, so pending rows are shown.
    put(runtime, "b00000000001", record("b00000000001", status="starting", workers_requested=10**6))
    seconds, status, body, size = timed_list(lab)
    assert status == 200, body
    model = next(c for c in body["clusters"] if c["id"] == "b00000000001")
    assert size < SMALL, size
    assert model["pending"] == 10**6  # the count is still right
    assert 0 < len(model["worker_info"]) <= 100
    assert lab.own_id in [c["id"] for c in body["clusters"]]


def test_stopped_schedulers_are_unreachable_within_the_deadline(lab, runtime, stopped_listener):
    pid, port = stopped_listener
    ids = [f"c0000000000{i:x}" for i in range(10)]
    for cluster_id in ids:
        put(
            runtime,
            cluster_id,
            record(
                cluster_id,
                scheduler_address=f"tcp://127.0.0.1:{port}",
                owner={"pid": pid, "host": socket.gethostname(), "kind": "kernel"},
            ),
        )
    for attempt in range(3):
        seconds, status, body, _size = timed_list(lab)
        assert status == 200, body
        assert seconds < PROMPT, (attempt, seconds)
        listed = {c["id"]: c for c in body["clusters"]}
        assert lab.own_id in listed
        assert {listed[i]["status"] for i in ids} == {"unreachable"}, attempt
        assert all(listed[i]["error"] for i in ids)
        assert listed[lab.own_id]["status"] == "running"
        time.sleep(1)
    seconds, status, body, _size = timed_list(lab)
    assert seconds < PROMPT, seconds
    status, one = lab.request("GET", f"pipejupyter/clusters/{ids[0]}", timeout=60)
    assert status == 200, one
    assert one["status"] == "unreachable"


def test_list_answers_while_slow_starts_are_in_flight(lab, runtime, slow_scheduler):
    port = slow_scheduler
    write(
        lab.work / "config.yaml",
        f"""
        pipecluster:
          profiles:
            hung:
              backend: address
              address: tcp://127.0.0.1:{port}
              wait_timeout: 30
        """,
    )
    answers: list[int] = []

    def start() -> None:
        answers.append(lab.request("POST", "pipejupyter/clusters", {"profile": "hung"}, 120)[0])

    starts = [threading.Thread(target=start) for _ in range(10)]
    try:
        for thread in starts:
            thread.start()
        time.sleep(2)  # every start is now waiting on the silent scheduler
        latencies = []
        for _ in range(4):
            seconds, status, body, _size = timed_list(lab)
            latencies.append(seconds)
            assert status == 200, body
            assert lab.own_id in [c["id"] for c in body["clusters"]]
            time.sleep(0.5)
        assert not answers, latencies  # the starts were in flight all along
        assert max(latencies) < 2.0, latencies
        t0 = time.monotonic()
        assert lab.request("GET", "pipejupyter/profiles", timeout=60)[0] == 200
        assert time.monotonic() - t0 < 2.0
    finally:
        for thread in starts:
            thread.join(timeout=120)
        (lab.work / "config.yaml").unlink()
    assert answers == [502] * 10, answers


# -- the probe threads, in process -----------------------------------------------------


def test_probes_share_a_call_in_flight_and_never_wait_past_the_deadline():
    from pipejupyter.server.watcher import Probes

    before = set(threading.enumerate())
    probes = Probes(threads=2)
    release = threading.Event()
    calls = []

    def hang() -> str:
        calls.append(1)
        release.wait(30)
        return "late"

    try:
        t0 = time.monotonic()
        first = probes.run({"hung": hang, "quick": lambda: "ok"}, deadline=0.5)
        assert time.monotonic() - t0 < 1.5
        assert first["quick"].result() == "ok"
        assert not first["hung"].done()
        again = probes.run({"hung": hang}, deadline=0.2)  # the next poll joins, not repeats
        assert again["hung"] is first["hung"]
        assert len(calls) == 1
        release.set()
        assert first["hung"].result(timeout=5) == "late"
        assert probes.run({"hung": lambda: "fresh"}, deadline=5)["hung"].result() == "fresh"
        threads = [t for t in set(threading.enumerate()) - before if t.name == "pipejupyter-probe"]
        assert 1 <= len(threads) <= 2
        assert all(t.daemon for t in threads)  # a call that never returns cannot block exit
    finally:
        release.set()
        probes.shutdown()
    assert probes.run({"after": lambda: 1}, deadline=0.1)["after"].cancelled()
