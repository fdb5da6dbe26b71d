"""A real `jupyter lab` refuses worker counts above max_workers with a 400, and survives.

`POST /pipejupyter/clusters {"profile": "local", "workers": 99999999999999999999}` once made
the server build worker specs until the OOM killer ended jupyter-lab (22 GB). The lab here
runs with an address-space cap (prlimit on its pid) so a regression ends in a MemoryError
inside the lab instead of taking the machine down.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import pytest

from tests.support.common import children_of, wait_until
from tests.support.lab import LabServer

HUGE = 99999999999999999999
API = "pipejupyter/clusters"
#: address space the lab may grow by beyond what it uses once started
HEADROOM = 3 * 2**30


def _address_space(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmSize for {pid}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    server = LabServer(tmp_path_factory.mktemp("lab"))
    server.env.pop("SLURM_NTASKS", None)
    server.start()
    try:
        cap = _address_space(server.proc.pid) + HEADROOM
        resource.prlimit(server.proc.pid, resource.RLIMIT_AS, (cap, cap))
        yield server
    finally:
        server.stop()


def _limit() -> int:
    return 4 * len(os.sched_getaffinity(0))


def _records(lab: LabServer) -> list[Path]:
    return sorted(lab.runtime.glob("cluster-*.json"))


def _assert_limit_error(status: int, body, value: int, key: str) -> None:
    assert status == 400, (status, body)
    message = body["message"]
    assert str(value) in message, message
    assert f"max_workers={_limit()}" in message, message
    assert "profiles.local.max_workers" in message, message
    assert body["key"] == key, body


def test_post_with_a_huge_worker_count_is_400_and_the_server_still_answers(lab):
    before = set(children_of(lab.proc.pid))
    t0 = time.monotonic()
    status, body = lab.request("POST", API, {"profile": "local", "workers": HUGE}, timeout=60)
    seconds = time.monotonic() - t0
    _assert_limit_error(status, body, HUGE, "workers")
    assert seconds < 10, seconds
    assert lab.proc.poll() is None, lab.log_tail()
    assert lab.request("GET", "api/status")[0] == 200
    assert lab.clusters() == []
    assert _records(lab) == []
    # No worker (nor scheduler) process was started for the refused request.
    assert set(children_of(lab.proc.pid)) - before == set()


def test_post_with_a_huge_adapt_maximum_is_400(lab):
    status, body = lab.request(
        "POST", API, {"profile": "local", "adapt": {"minimum": 0, "maximum": HUGE}}
    )
    _assert_limit_error(status, body, HUGE, "adapt.maximum")
    assert lab.clusters() == []


def test_other_configuration_errors_stay_422(lab):
    status, body = lab.request("POST", API, {"profile": "no-such-profile", "workers": 1})
    assert status == 422, (status, body)
    assert "unknown profile" in body["message"]


def test_patch_beyond_the_limit_is_400_and_changes_nothing(lab):
    status, model = lab.request("POST", API, {"profile": "local", "workers": 1}, timeout=180)
    assert status == 201, (status, model, lab.log_tail())
    cid = model["id"]
    try:
        assert wait_until(lambda: lab.request("GET", f"{API}/{cid}")[1]["workers"] == 1, 60)
        workers_before = set(children_of(lab.proc.pid))
        for body, value, key in (
            ({"workers": HUGE}, HUGE, "workers"),
            ({"workers": _limit() + 1}, _limit() + 1, "workers"),
            ({"adapt": {"minimum": 0, "maximum": HUGE}}, HUGE, "adapt.maximum"),
        ):
            status, answer = lab.request("PATCH", f"{API}/{cid}", body, timeout=60)
            _assert_limit_error(status, answer, value, key)
        status, model = lab.request("GET", f"{API}/{cid}")
        assert status == 200
        assert model["workers"] == 1
        assert model["pending"] == 0
        assert model["adapt"] is None
        assert set(children_of(lab.proc.pid)) == workers_before
        assert lab.request("GET", "api/status")[0] == 200
    finally:
        status, _ = lab.request("DELETE", f"{API}/{cid}", timeout=60)
        assert status == 204, status
    assert wait_until(lambda: _records(lab) == [], 30)


@pytest.mark.parametrize(
    "overrides",
    [
        {"max_workers": 10**20},
        {"profiles.local.max_workers": 10**20},
        {"profiles.local": {"max_workers": 10**20}},
        {"pipecluster": {"profiles": {"local": {"max_workers": 10**20}}}},
    ],
)
def test_a_request_cannot_raise_the_limit_for_itself(lab, overrides):
    before = set(children_of(lab.proc.pid))
    status, body = lab.request(
        "POST", API, {"profile": "local", "workers": HUGE, "overrides": overrides}, timeout=60
    )
    assert status == 400, body
    assert "may not set max_workers" in body["message"]
    assert lab.request("GET", "api/status")[0] == 200
    assert lab.clusters() == []
    assert set(children_of(lab.proc.pid)) == before
