"""What keeps a stage of very many items cheap: fingerprints computed the same way faster,
keys of a re-run not stored again, per-item records without a dict each."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from pipejupyter.stages import context
from pipejupyter.stages.inputs import Item, item_fingerprint, item_fingerprinter
from pipejupyter.stages.run import run_stage
from tests.support.common import local_client


@pytest.fixture(scope="module")
def client():
    with local_client(n_workers=2, threads_per_worker=1) as c:
        yield c


def double(x):
    return 2 * x


@pytest.mark.parametrize(
    "value",
    [0, 7, -1.5, "a.MS", b"raw", None, (1, "x"), [1, [2, 3]], {"a": 1, "b": [2]}, Path("/d/x")],
)
def test_the_fast_fingerprint_is_the_fingerprint(value):
    # a context written before keeps matching: the same digest, computed with less work
    work = "f" * 64
    assert item_fingerprinter(work)(value) == item_fingerprint(work, value)
    assert item_fingerprinter("g" * 64)(value) != item_fingerprint(work, value)


def test_items_hold_no_dict_each():
    item = Item("k", 1, "host")
    assert not hasattr(item, "__dict__")
    with pytest.raises(AttributeError):
        item.key = "other"  # still frozen


def _stored_keys(workdir: Path, stage: str) -> list[str | None]:
    db = workdir / ".pipejupyter" / "context.sqlite"
    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute("SELECT keys FROM runs WHERE stage = ?", (stage,))]


def test_a_rerun_with_the_same_keys_does_not_store_them_again(client, tmp_path):
    def run(stage, items):
        return run_stage(stage, double, items, client=client, workdir=tmp_path, progress=None)

    items = list(range(50))
    assert list(run("twice", items)) == [2 * x for x in items]
    run("other", [1, 2])  # another stage in between stores its own keys
    again = run("twice", items)
    assert again.stats["skipped"] == 50
    stored = _stored_keys(tmp_path, "twice")
    assert stored[0] is not None and stored[1] is None
    back = context.results("twice", workdir=tmp_path)
    assert back.keys == [str(x) for x in items] and list(back) == [2 * x for x in items]
    # a new order is stored, and results() follows it
    reordered = items[::-1]
    run("twice", reordered)
    assert _stored_keys(tmp_path, "twice")[2] is not None
    back = context.results("twice", workdir=tmp_path)
    assert back.keys == [str(x) for x in reordered] and list(back) == [2 * x for x in reordered]
    assert list(context.results("other", workdir=tmp_path)) == [2, 4]
