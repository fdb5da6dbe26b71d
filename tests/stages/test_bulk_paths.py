"""The bulk paths of a stage: the re-run's streamed skip, the streamed read-back, list keys
built in C loops, and batch entries that travel as one pickled blob."""

from __future__ import annotations

import gc
import os
import pickle

import cloudpickle
import pytest

from pipejupyter.stages import context
from pipejupyter.stages.bulk import paused_gc
from pipejupyter.stages.inputs import Item, _list_keys, resolve_items
from pipejupyter.stages.results import ItemFailure, StageFailed
from pipejupyter.stages.run import run_stage
from pipejupyter.work.executor import Entries
from tests.support.common import local_client


@pytest.fixture(scope="module")
def client():
    with local_client(n_workers=2, threads_per_worker=1) as c:
        yield c


def flaky(args):
    """Fails for the values listed in the file ``args[0]`` names; leaves a mark per run."""
    folder, x = args
    with open(os.path.join(folder, f"ran-{x}-{os.getpid()}-{id(args)}"), "w"):
        pass
    bad = open(os.path.join(folder, "bad")).read().split()
    if str(x) in bad:
        raise ValueError(f"bad {x}")
    return x * 10


def _ran(folder) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in folder.glob("ran-*"))


def test_a_rerun_after_a_partial_failure_runs_exactly_the_failed_items(client, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    (marks / "bad").write_text("1 3")
    items = {f"k{x}": (str(marks), x) for x in range(6)}
    with pytest.raises(StageFailed) as failed:
        run_stage("flaky", flaky, items, client=client, workdir=tmp_path, progress=None)
    assert sorted(failed.value.result.failed) == ["k1", "k3"]
    assert _ran(marks) == [0, 1, 2, 3, 4, 5]
    # read back while two failed: in input order, failures in place and in .failed in order
    stored = context.results("flaky", workdir=tmp_path)
    assert [v if not isinstance(v, ItemFailure) else "F" for v in stored] == [
        0,
        "F",
        20,
        "F",
        40,
        50,
    ]
    assert list(stored.failed) == ["k1", "k3"]
    assert "bad 3" in stored.failed["k3"].error
    (marks / "bad").write_text("")
    for p in marks.glob("ran-*"):
        p.unlink()
    again = run_stage("flaky", flaky, items, client=client, workdir=tmp_path, progress=None)
    assert _ran(marks) == [1, 3]  # exactly the two that failed
    assert list(again) == [0, 10, 20, 30, 40, 50]
    assert again.stats["skipped"] == 4 and again.stats["done"] == 2
    assert list(context.results("flaky", workdir=tmp_path)) == [0, 10, 20, 30, 40, 50]


def test_read_back_ignores_rows_of_keys_the_latest_run_does_not_have(client, tmp_path):
    run_stage("shrink", str, ["a", "b", "c"], client=client, workdir=tmp_path, progress=None)
    run_stage("shrink", str, ["c", "a"], client=client, workdir=tmp_path, progress=None)
    stored = context.results("shrink", workdir=tmp_path)
    assert list(stored) == ["c", "a"] and stored.keys == ["c", "a"] and stored.ok


def test_list_keys_fast_paths_give_the_general_paths_keys():
    assert _list_keys(list(range(5))) == ["0", "1", "2", "3", "4"]
    assert _list_keys([5, 5, 6]) == ["0", "1", "2"]  # duplicates: positions
    assert _list_keys([10**300]) == ["0"]  # a key over 200 characters: positions
    assert _list_keys(["b", "a"]) == ["b", "a"]
    assert _list_keys(["a", "a"]) == ["0", "1"]
    assert _list_keys(["", "x"]) == ["0", "1"]
    assert _list_keys([1, "1"]) == ["0", "1"]  # the same text twice: positions
    assert _list_keys([True, 2]) == ["0", "1"]  # bools are not keys
    assert [it.key for it in resolve_items([Item("x", 1), 2])] == ["x", "1"]


def test_paused_gc_restores_the_collectors_state():
    assert gc.isenabled()
    with paused_gc():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with paused_gc():
            pass
        assert not gc.isenabled()  # it was off before: it stays off
    finally:
        gc.enable()


def test_entries_travel_as_one_blob_and_unpickle_where_used():
    entries = Entries([(0, "a", 1), (1, "b", lambda x: x + 1)])  # a value only cloudpickle takes
    sent = pickle.loads(cloudpickle.dumps(entries))
    assert sent._items is None and isinstance(sent._blob, bytes)  # not unpickled in transit
    again = pickle.loads(pickle.dumps(sent))  # a scheduler passing it on: the blob as it was
    assert again._blob == sent._blob
    assert again.items[0] == (0, "a", 1)
    assert again.items[1][2](1) == 2


def test_index_queue_is_first_in_first_out_across_compaction(monkeypatch):
    from pipejupyter.stages.bulk import IndexQueue

    monkeypatch.setattr(IndexQueue, "COMPACT", 4)
    queue = IndexQueue(range(10))
    assert len(queue) == 10
    assert queue.take(3) == [0, 1, 2]
    queue.append(100)  # a retry goes to the back
    assert queue.take(3) == [3, 4, 5]  # the taken front is dropped here (6 >= 4, 2 * 6 >= 11)
    assert len(queue) == 5
    assert queue.take(10) == [6, 7, 8, 9, 100]
    assert not queue and queue.take(2) == []
    queue.append(7)
    assert queue.take(1) == [7]


@pytest.mark.parametrize(
    "value",
    [0, -5, 10**40, "x", "", "é\ud800", True, None, 1.5, (1, "a"), [1], {"a": 1}, b"b"],
)
def test_fast_item_fingerprints_equal_the_digests_stored_contexts_hold(value):
    from pipejupyter.stages.inputs import item_fingerprint, item_fingerprinter

    assert item_fingerprinter("work")(value) == item_fingerprint("work", value)
