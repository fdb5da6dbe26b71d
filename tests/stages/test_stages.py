"""run_stage on a real LocalCluster: order, failures, retries, output, batching, limits,
placement."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time

import pytest

import pipejupyter
from pipejupyter.stages import context
from pipejupyter.stages.placement import PlacementError
from pipejupyter.stages.results import StageFailed
from pipejupyter.stages.run import StageError, StageReporter, run_stage
from tests.support.common import PYTHON, local_client, wait_until


@pytest.fixture(scope="module")
def client():
    with local_client(n_workers=2, threads_per_worker=2, resources={"GPU": 1}) as c:
        yield c


class Recorder(StageReporter):
    """Keeps everything a stage reports, with the time it arrived."""

    def __init__(self) -> None:
        self.outputs: list[tuple[float, str, str, str]] = []
        self.failures: list[tuple[str, str, int, bool]] = []
        self.notes: list[str] = []
        self.updates: list[dict] = []
        self.started = None

    def start(self, stage, total, skipped, batch):
        self.started = (stage, total, skipped)

    def update(self, counts):
        self.updates.append(dict(counts))

    def output(self, key, text, stream):
        self.outputs.append((time.monotonic(), key, text, stream))

    def failure(self, key, error, attempt, final):
        self.failures.append((key, error, attempt, final))

    def note(self, text):
        self.notes.append(text)

    def text_of(self, key):
        return "".join(t for _, k, t, _ in self.outputs if k == key)


def square(x):
    return x * x


def test_results_in_input_order(client, tmp_path):
    result = run_stage("square", square, range(50), client=client, workdir=tmp_path, progress=None)
    assert list(result) == [x * x for x in range(50)]
    assert result.keys == [repr(x) for x in range(50)]
    assert result.ok
    by_name = run_stage(
        "dict", square, {"b": 3, "a": 2}, client=client, workdir=tmp_path, progress=None
    )
    assert by_name.by_key() == {"b": 9, "a": 4}
    once = run_stage("once", os.getpid, client=client, workdir=tmp_path, progress=None)
    assert once.value != os.getpid()  # ran on a worker process


def test_glob_inputs_and_a_cluster_handle(isolated, no_leaks):
    work = isolated / "work"
    for name in ("b.ms", "a.ms"):
        (work / name).write_text(name)
    handle = pipejupyter.start(workers=1)
    try:
        result = run_stage("read", lambda p: open(p).read(), "*.ms", client=handle, progress=None)
        assert list(result) == ["a.ms", "b.ms"]
        # no client given: the manager's current cluster
        assert run_stage("again", lambda p: len(p), ["xyz"], progress=None).value == 3
    finally:
        handle.stop()


def boom_on_three(x):
    print(f"working on {x}")
    if x == 3:
        raise ValueError(f"item {x} is bad")
    return x


def test_a_failed_item_shows_its_traceback_and_others_finish(client, tmp_path):
    rec = Recorder()
    with pytest.raises(StageFailed) as info:
        run_stage(
            "boom", boom_on_three, range(8), client=client, workdir=tmp_path, progress=rec, batch=1
        )
    result = info.value.result
    assert [r for i, r in enumerate(result) if i != 3] == [0, 1, 2, 4, 5, 6, 7]
    failure = result.failed["3"]
    assert not result[3]
    assert failure.message == "ValueError: item 3 is bad"
    assert 'in boom_on_three\n    raise ValueError(f"item {x} is bad")' in failure.error
    assert isinstance(failure.exception, ValueError)
    assert rec.failures[0][0] == "3"
    assert rec.failures[0][3] is True
    assert "working on 5" in rec.text_of("5")
    assert "1 of 8 items failed" in str(info.value)
    assert "3: ValueError: item 3 is bad" in str(info.value)
    rows = {r["key"]: r for r in context.items("boom", workdir=tmp_path)}
    assert rows["3"]["status"] == "failed"
    assert "item 3 is bad" in rows["3"]["error"]
    assert rows["5"]["status"] == "done"
    assert rows["5"]["log"] == "working on 5\n"
    assert context.history("boom", workdir=tmp_path)[-1]["status"] == "failed"


def flaky(args):
    """Fails the first time it sees an item (a marker file remembers)."""
    folder, x = args
    marker = os.path.join(folder, f"seen-{x}")
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise OSError(f"transient failure on {x}")
    return x


def test_retries_are_per_item_and_recorded(client, tmp_path):
    rec = Recorder()
    items = {str(x): (str(tmp_path), x) for x in range(6)}
    result = run_stage(
        "flaky", flaky, items, retries=1, client=client, workdir=tmp_path, progress=rec
    )
    assert list(result) == list(range(6))
    assert result.stats["retried"] == 6
    assert all(not final for *_, final in rec.failures)
    assert len(rec.failures) == 6
    history = context.attempts("flaky", "2", workdir=tmp_path)
    assert [(a["attempt"], a["outcome"]) for a in history] == [(1, "failed"), (2, "done")]
    assert "transient failure on 2" in history[0]["error"]
    assert {r["attempts"] for r in context.items("flaky", workdir=tmp_path)} == {2}
    # no retries left: the item fails
    for marker in tmp_path.glob("seen-*"):
        marker.unlink()
    with pytest.raises(StageFailed):
        run_stage("flaky0", flaky, items, retries=0, client=client, workdir=tmp_path, progress=None)


def chatty(x):
    import logging
    import sys

    print(f"start {x}", flush=True)
    logging.getLogger("pipeline.test").warning("half way through %s", x)
    print(f"to stderr {x}", file=sys.stderr)
    time.sleep(1.5)
    print(f"end {x}")
    return x


def test_output_appears_while_the_item_runs(client, tmp_path):
    rec = Recorder()
    run_stage("chatty", chatty, ["a", "b"], client=client, workdir=tmp_path, progress=rec, batch=1)
    done = time.monotonic()
    for key in ("a", "b"):
        first = min(t for t, k, text, _ in rec.outputs if k == key and f"start {key}" in text)
        assert done - first > 1.0, "the first line must arrive while the item still runs"
        text = rec.text_of(key)
        assert f"start {key}" in text
        assert f"WARNING pipeline.test: half way through {key}" in text
        assert f"end {key}" in text
        assert any(
            k == key and s == "stderr" and f"to stderr {key}" in t for _, k, t, s in rec.outputs
        )
        assert text.count(f"end {key}") == 1  # shown once, not again from the final log


def test_tiny_items_are_batched_but_kept_per_item(client, tmp_path):
    result = run_stage("tiny", square, range(3000), client=client, workdir=tmp_path, progress=None)
    assert list(result) == [x * x for x in range(3000)]
    assert result.stats["tasks"] < 100, result.stats  # not 3000 Dask tasks
    assert len(context.items("tiny", workdir=tmp_path)) == 3000
    unbatched = run_stage(
        "tiny1", square, range(40), client=client, persist=False, batch=False, progress=None
    )
    assert unbatched.stats["tasks"] == 40


def nap(x):
    start = time.time()
    time.sleep(0.4)
    return (start, time.time())


def _overlaps(spans):
    spans = sorted(spans)
    return any(b[0] < a[1] - 0.05 for a, b in zip(spans, spans[1:], strict=False))


def test_per_worker_limits_concurrency(tmp_path):
    with local_client(n_workers=1, threads_per_worker=4) as c:
        free = run_stage("free", nap, range(4), client=c, persist=False, progress=None)
        assert _overlaps(list(free)), "4 threads and no limit: items overlap (the control)"
        limited = run_stage(
            "limited", nap, range(4), client=c, per_worker=1, persist=False, progress=None
        )
        assert not _overlaps(list(limited)), list(limited)


def test_resources_are_checked_before_submitting(client, tmp_path):
    assert list(
        run_stage(
            "gpu",
            square,
            [2, 3],
            resources={"GPU": 1},
            client=client,
            workdir=tmp_path,
            progress=None,
        )
    ) == [4, 9]
    with pytest.raises(PlacementError, match=r"resource TPU=1.*worker resources: GPU=1"):
        run_stage(
            "tpu", square, [2], resources={"TPU": 1}, client=client, workdir=tmp_path, progress=None
        )
    assert context.history("tpu", workdir=tmp_path) == []  # nothing started, nothing recorded
    with pytest.raises(StageError, match="retries must be an integer >= 0"):
        run_stage("x", square, [1], retries=-1, client=client, progress=None)
    with pytest.raises(StageError, match="stage name"):
        run_stage("a b/c", square, [1], client=client, progress=None)
    with pytest.raises(StageError, match="two items have the key"):
        run_stage(
            "dup",
            square,
            [pipejupyter.stages.run.Item("k", 1), pipejupyter.stages.run.Item("k", 2)],
            client=client,
            progress=None,
        )


def where(path):
    from distributed import get_worker

    return get_worker().address.rsplit(":", 1)[0].removeprefix("tcp://")


def test_mapfile_hosts_place_items(client, tmp_path):
    """Workers on two loopback addresses stand for two hosts; the mapfile decides."""
    address = client.scheduler.address
    proc = subprocess.Popen(
        [
            shutil.which("dask", path=os.path.dirname(PYTHON)) or "dask",
            "worker",
            address,
            "--host",
            "127.0.0.2",
            "--nthreads",
            "1",
            "--no-dashboard",
            "--name",
            "second-host",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert wait_until(
            lambda: any(
                w["host"] == "127.0.0.2"
                for w in client.scheduler_info(n_workers=-1)["workers"].values()
            ),
            60,
        )
        mapfile = pipejupyter.stages.inputs.write_mapfile(
            tmp_path / "in.map",
            {
                "127.0.0.2": [f"/data/b{i}.MS" for i in range(6)],
                "localhost": [f"/data/a{i}.MS" for i in range(6)],
            },
        )
        result = run_stage(
            "placed", where, str(mapfile), client=client, workdir=tmp_path, progress=None, batch=1
        )
        placed = result.by_key()
        assert {placed[f"/data/b{i}.MS"] for i in range(6)} == {"127.0.0.2"}
        assert {placed[f"/data/a{i}.MS"] for i in range(6)} == {"127.0.0.1"}
        nowhere = pipejupyter.stages.inputs.write_mapfile(
            tmp_path / "bad.map", {"192.0.2.77": ["/data/x.MS"]}
        )
        with pytest.raises(
            PlacementError,
            match=r"'192\.0\.2\.77', but no worker runs there; "
            r"worker hosts: 127\.0\.0\.1, 127\.0\.0\.2",
        ):
            run_stage(
                "nowhere",
                where,
                pipejupyter.stages.inputs.mapfile(nowhere),
                client=client,
                workdir=tmp_path,
                progress=None,
            )
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def slow_item(x):
    import os

    print(f"pid {os.getpid()}", flush=True)
    time.sleep(0.6)
    return x


def test_killing_a_worker_loses_no_item(tmp_path, no_leaks):
    with local_client(n_workers=2, threads_per_worker=1) as c:
        rec = Recorder()
        killed: list[int] = []

        def killer():
            def running_pid():
                for _, _, text, _ in rec.outputs:
                    if text.startswith("pid "):
                        return int(text.split()[1])
                return None

            pid = wait_until(running_pid, 60, 0.05)
            if pid:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

        thread = threading.Thread(target=killer)
        thread.start()
        result = run_stage(
            "survive", slow_item, range(10), client=c, workdir=tmp_path, progress=rec, batch=1
        )
        thread.join()
        assert killed, "the test must have killed a worker"
        assert list(result) == list(range(10))
        assert result.ok
        lost = [a for a in context.attempts("survive", workdir=tmp_path) if a["outcome"] == "lost"]
        assert lost
        assert all("was lost" in a["error"] for a in lost)
        retried = {a["key"] for a in lost}
        rows = {r["key"]: r for r in context.items("survive", workdir=tmp_path)}
        assert all(rows[k]["attempts"] == 2 and rows[k]["status"] == "done" for k in retried)
        assert result.stats["retried"] >= 1
        assert any("was lost" in n for n in rec.notes)
