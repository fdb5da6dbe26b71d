"""Discovery records are input: a malformed file in the runtime directory is skipped with one
warning naming the file and the bad key, and every face that lists clusters keeps working.

Records of owners on another host are never pruned (their owner may be alive); when their
scheduler does not answer they are listed as "unreachable", not with their last recorded status.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipejupyter.lifecycle import discovery
from tests.support.common import run_cli

pytestmark = pytest.mark.usefixtures("isolated")

GOOD_ID = "0123456789ab"


def good_record(cluster_id: str = GOOD_ID, **changes: Any) -> dict[str, Any]:
    """A well-formed record of a live owner (this process) whose scheduler is gone."""
    record = {
        "id": cluster_id,
        "name": f"good-{cluster_id[:4]}",
        "backend": "local",
        "profile": "local",
        "status": "running",
        "scheduler_address": "tcp://127.0.0.1:9",
        "dashboard_link": None,
        "adapt": None,
        "workers_requested": 2,
        "owner": {"pid": os.getpid(), "host": socket.gethostname(), "kind": "kernel"},
        "started": time.time(),
        "backend_info": {},
        "discovery_version": discovery.VERSION,
    }
    record.update(changes)
    return record


def write_raw(runtime: Path, cluster_id: str, content: Any) -> Path:
    path = runtime / f"cluster-{cluster_id}.json"
    runtime.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def _without(key: str) -> dict[str, Any]:
    record = good_record()
    del record[key]
    return record


#: (label, file content, the key the warning must name)
MALFORMED = [
    ("owner is a string", good_record(owner="me"), "owner"),
    ("id is a list", good_record(id=["0123456789ab"]), "id"),
    ("id is not the file's", good_record(id="ba9876543210"), "id"),
    ("id with a newline", good_record(id="0123456789ab\nimport os"), "id"),
    ("address is a number", good_record(scheduler_address=8786), "scheduler_address"),
    (
        "address does not parse",
        good_record(scheduler_address="tcp://[::1:99999999"),
        "scheduler_address",
    ),
    (
        "port out of range",
        good_record(scheduler_address="tcp://127.0.0.1:99999999"),
        "scheduler_address",
    ),
    ("no name", _without("name"), "name"),
    ("name is a number", good_record(name=7), "name"),
    (
        "owner pid is a string",
        good_record(owner={"pid": "1", "host": "h", "kind": "k"}),
        "owner.pid",
    ),
    ("owner host missing", good_record(owner={"pid": 1, "kind": "kernel"}), "owner.host"),
    ("owner kind is a list", good_record(owner={"pid": 1, "host": "h", "kind": []}), "owner.kind"),
    ("status unknown", good_record(status="exploded"), "status"),
    ("status is a dict", good_record(status={}), "status"),
    ("workers_requested too big", good_record(workers_requested=10**20), "workers_requested"),
    ("workers_requested negative", good_record(workers_requested=-1), "workers_requested"),
    ("workers_requested a string", good_record(workers_requested="lots"), "workers_requested"),
    ("workers_requested a bool", good_record(workers_requested=True), "workers_requested"),
    ("started a string", good_record(started="yesterday"), "started"),
    ("backend_info a list", good_record(backend_info=[]), "backend_info"),
    ("adapt a number", good_record(adapt=3), "adapt"),
    ("adapt min above max", good_record(adapt={"minimum": 3, "maximum": 1}), "adapt"),
    ("dashboard_link a number", good_record(dashboard_link=1), "dashboard_link"),
    ("backend a dict", good_record(backend={}), "backend"),
    ("not an object", [1, 2], "the file"),
    ("not JSON", "{not json", "the file"),
    ("too large", good_record(backend_info={"x": "y" * 2_000_000}), "the file"),
]


@pytest.mark.parametrize(("label", "content", "key"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_record_is_skipped_with_a_warning_naming_file_and_key(
    isolated, caplog, label, content, key
):
    runtime = isolated / "runtime"
    good = write_raw(runtime, "fedcba987654", good_record("fedcba987654"))
    bad = write_raw(runtime, GOOD_ID, content)
    with caplog.at_level(logging.WARNING, logger="pipejupyter.lifecycle.discovery"):
        records = discovery.read_all()
    assert [r["id"] for r in records] == ["fedcba987654"], label
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert str(bad) in warnings[0]
    assert key in warnings[0], warnings[0]
    assert bad.exists()  # not ours to delete: someone may be debugging it
    assert good.exists()


def test_a_bad_record_is_reported_once_not_every_poll(isolated, caplog):
    runtime = isolated / "runtime"
    bad = write_raw(runtime, GOOD_ID, good_record(owner="me"))
    with caplog.at_level(logging.WARNING, logger="pipejupyter.lifecycle.discovery"):
        for _ in range(5):
            assert discovery.read_all() == []
        assert len(caplog.records) == 1
        # Rewritten (still bad): a new problem is worth a new warning.
        bad.write_text(json.dumps(good_record(name=["x"])))
        os.utime(bad, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
        discovery.read_all()
        discovery.read_all()
    assert len(caplog.records) == 2
    assert "name" in caplog.records[1].getMessage()


def test_only_the_newest_records_are_read(isolated, caplog, monkeypatch):
    monkeypatch.setattr(discovery, "MAX_RECORDS", 5)
    for i in range(8):
        cluster_id = f"{i:012x}"
        path = write_raw(isolated / "runtime", cluster_id, good_record(cluster_id))
        os.utime(path, (1_000_000 + i, 1_000_000 + i))
    with caplog.at_level(logging.WARNING, logger="pipejupyter.lifecycle.discovery"):
        for _ in range(3):
            records = discovery.read_all()
    assert [int(r["id"], 16) for r in records] == [3, 4, 5, 6, 7]
    assert len(caplog.records) == 1
    assert "MAX_RECORDS" in caplog.text
    assert "holds 8 discovery files" in caplog.text


def test_find_and_listing_skip_bad_records(isolated):
    runtime = isolated / "runtime"
    write_raw(runtime, GOOD_ID, good_record(id=["x"]))
    write_raw(runtime, "fedcba987654", good_record("fedcba987654", name="fine"))
    assert discovery.find("fine")["id"] == "fedcba987654"
    assert discovery.find("0123") is None


def test_workers_requested_of_a_million_is_accepted_as_data(isolated):
    write_raw(isolated / "runtime", GOOD_ID, good_record(workers_requested=1_000_000))
    assert [r["workers_requested"] for r in discovery.read_all()] == [1_000_000]


def _write_all_malformed(runtime: Path) -> None:
    for i, (_label, content, _key) in enumerate(MALFORMED):
        cluster_id = f"{i:012x}"
        if isinstance(content, dict) and content.get("id") == GOOD_ID:
            content = {**content, "id": cluster_id}
        write_raw(runtime, cluster_id, content)
    write_raw(runtime, "fedcba987654", good_record("fedcba987654", name="survivor"))


def test_cli_list_survives_malformed_records(isolated):
    _write_all_malformed(isolated / "runtime")
    result = run_cli("list")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "survivor" in result.stdout
    assert "cluster-000000000000.json" in result.stderr  # the warning names the file
    as_json = run_cli("list", "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert [r["name"] for r in json.loads(as_json.stdout)] == ["survivor"]


def test_magic_list_survives_malformed_records(isolated, capsys):
    from pipejupyter.notebook.magics import run_line

    _write_all_malformed(isolated / "runtime")
    run_line(None, "list")
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    assert "survivor" in out.out


# -- owners on another host ------------------------------------------------------------


def _silent_address() -> str:
    """An address whose TCP connect fails: a port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"tcp://127.0.0.1:{port}"


def test_record_of_another_host_whose_scheduler_is_silent_is_unreachable(isolated):
    other = {"pid": 4242, "host": "elsewhere.invalid", "kind": "kernel"}
    write_raw(
        isolated / "runtime",
        GOOD_ID,
        good_record(owner=other, status="running", scheduler_address=_silent_address()),
    )
    (record,) = discovery.read_all()
    assert record["status"] == "unreachable"
    assert record["owner_alive"] is True  # unknown: never pruned
    result = run_cli("list")
    assert result.returncode == 0, result.stderr
    assert "unreachable" in result.stdout
    assert (isolated / "runtime" / f"cluster-{GOOD_ID}.json").exists()


@pytest.fixture
def greeting_address() -> Iterator[str]:
    """A listener that greets each connection first, as a Dask scheduler does."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.2)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(b"hello")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"tcp://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        done.set()
        thread.join(timeout=5)
        listener.close()


def test_record_of_another_host_whose_scheduler_answers_keeps_its_status(
    isolated, greeting_address
):
    other = {"pid": 4242, "host": "elsewhere.invalid", "kind": "kernel"}
    record = good_record(owner=other, scheduler_address=greeting_address)
    write_raw(isolated / "runtime", GOOD_ID, record)
    assert [r["status"] for r in discovery.read_all()] == ["running"]


def test_a_port_that_accepts_but_never_speaks_is_silent(isolated):
    """A stopped scheduler: its kernel accepts the TCP connection, nobody answers it."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = f"tcp://127.0.0.1:{listener.getsockname()[1]}"
        t0 = time.monotonic()
        assert discovery.scheduler_answer(address, timeout=0.5) == discovery.SILENT
        assert time.monotonic() - t0 < 1.5
        other = {"pid": 4242, "host": "elsewhere.invalid", "kind": "kernel"}
        write_raw(
            isolated / "runtime", GOOD_ID, good_record(owner=other, scheduler_address=address)
        )
        assert [r["status"] for r in discovery.read_all()] == ["unreachable"]


@pytest.fixture
def silent_addresses() -> Iterator[list[str]]:
    """40 addresses whose TCP connect hangs: listeners with a full backlog (listen(0) and one
    connection held), as a stopped process or a saturated scheduler looks from outside."""
    listeners, held, addresses = [], [], []
    try:
        for _ in range(40):
            listener = socket.socket()
            listeners.append(listener)
            listener.bind(("127.0.0.1", 0))
            listener.listen(0)
            held.append(socket.create_connection(listener.getsockname(), timeout=2))
            addresses.append(f"tcp://127.0.0.1:{listener.getsockname()[1]}")
        yield addresses
    finally:
        for sock in held + listeners:
            sock.close()


def test_many_silent_records_are_probed_together(isolated, silent_addresses):
    """Probes of other hosts' schedulers run concurrently: 40 records that each time out take
    about one probe timeout, not 40 of them."""
    other = {"pid": 4242, "host": "elsewhere.invalid", "kind": "kernel"}
    for i, address in enumerate(silent_addresses):
        cluster_id = f"{i:012x}"
        write_raw(
            isolated / "runtime",
            cluster_id,
            good_record(cluster_id, owner=other, scheduler_address=address),
        )
    t0 = time.monotonic()
    records = discovery.read_all()
    elapsed = time.monotonic() - t0
    assert len(records) == 40
    assert {r["status"] for r in records} == {"unreachable"}
    assert elapsed < discovery.PROBE_DEADLINE + 1.0, elapsed


def test_dead_owner_with_a_silent_scheduler_is_hidden_but_kept(isolated, silent_addresses):
    """The owner is gone but something still holds the port: perhaps a stopped orphan
    scheduler. Not listed, and not deleted either (it may come back)."""
    # Above the largest pid_max Linux allows: no process has it.
    dead = {"pid": 2**22 + 1, "host": socket.gethostname(), "kind": "kernel"}
    write_raw(
        isolated / "runtime",
        GOOD_ID,
        good_record(owner=dead, scheduler_address=silent_addresses[0]),
    )
    assert discovery.read_all() == []
    assert (isolated / "runtime" / f"cluster-{GOOD_ID}.json").exists()


def test_a_fifo_under_a_record_name_does_not_block_listing(isolated, caplog):
    fifo = isolated / "runtime" / f"cluster-{GOOD_ID}.json"
    os.mkfifo(fifo)
    with caplog.at_level(logging.WARNING, logger="pipejupyter.lifecycle.discovery"):
        assert discovery.read_all() == []
    assert "not a regular file" in caplog.text
