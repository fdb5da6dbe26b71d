"""The persisted stage context: skip on re-run, results without recomputing, big results in
files, concurrent readers, and a kernel killed mid-stage (SIGKILL) that resumes cleanly."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import textwrap
import time

import pytest

from pipejupyter.stages import context
from pipejupyter.stages.context import ContextError
from pipejupyter.stages.run import run_stage
from tests.support.common import PYTHON, ROOT, children_of, local_client, wait_until


@pytest.fixture(scope="module")
def client():
    with local_client(n_workers=2, threads_per_worker=1) as c:
        yield c


def counted(args):
    """Leaves a file per execution, so the test can count what really ran."""
    folder, x = args
    with open(os.path.join(folder, f"ran-{x}-{time.monotonic_ns()}"), "w"):
        pass
    return x * 10


def _runs(folder) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in folder.glob("ran-*"))


def test_rerun_skips_what_succeeded(client, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    items = {str(x): (str(marks), x) for x in range(5)}
    first = run_stage("count", counted, items, client=client, workdir=tmp_path, progress=None)
    assert list(first) == [0, 10, 20, 30, 40]
    assert _runs(marks) == [0, 1, 2, 3, 4]
    again = run_stage("count", counted, items, client=client, workdir=tmp_path, progress=None)
    assert list(again) == list(first)
    assert again.stats["skipped"] == 5
    assert _runs(marks) == [0, 1, 2, 3, 4]
    # one more item and one changed input: only those two run
    items["5"] = (str(marks), 5)
    items["0"] = (str(marks), 100)
    grown = run_stage("count", counted, items, client=client, workdir=tmp_path, progress=None)
    assert list(grown) == [1000, 10, 20, 30, 40, 50]
    assert _runs(marks) == [0, 1, 2, 3, 4, 5, 100]
    # --rerun computes everything again
    run_stage("count", counted, items, client=client, workdir=tmp_path, progress=None, rerun=True)
    assert len(_runs(marks)) == 13
    # results without recomputing, in the latest run's order
    stored = context.results("count", workdir=tmp_path)
    assert list(stored) == [1000, 10, 20, 30, 40, 50]
    assert stored.keys == list(items)
    assert stored.ok
    assert len(_runs(marks)) == 13
    runs = context.history("count", workdir=tmp_path)
    assert [(r["status"], r["done"], r["skipped"]) for r in runs] == [
        ("done", 5, 0),
        ("done", 0, 5),
        ("done", 2, 4),
        ("done", 6, 0),
    ]
    table = context.format_history(runs)
    assert "count" in table.splitlines()[1]
    assert len(table.splitlines()) == 5


def test_changed_code_recomputes(client, tmp_path):
    def v1(x):
        return x + 1

    def v2(x):
        return x + 2

    assert list(run_stage("code", v1, [1, 2], client=client, workdir=tmp_path, progress=None)) == [
        2,
        3,
    ]
    assert list(run_stage("code", v2, [1, 2], client=client, workdir=tmp_path, progress=None)) == [
        3,
        4,
    ]


def big(x):
    return bytes([x]) * 200_000


def test_large_results_live_in_files_beside_the_database(client, tmp_path):
    run_stage("big", big, [1, 2], client=client, workdir=tmp_path, progress=None)
    files = sorted((tmp_path / ".pipejupyter" / "results").rglob("*.pkl"))
    assert len(files) == 2
    conn = sqlite3.connect(tmp_path / ".pipejupyter" / "context.sqlite")
    assert (
        conn.execute(
            "SELECT COUNT(*) FROM items WHERE result IS NULL AND result_file IS NOT NULL"
        ).fetchone()[0]
        == 2
    )
    conn.close()
    assert [len(r) for r in context.results("big", workdir=tmp_path)] == [200_000, 200_000]
    # recomputed with another fingerprint: the old files are replaced, not left behind
    run_stage(
        "big",
        lambda x: bytes([x]) * 300_000,
        [1, 2],
        client=client,
        workdir=tmp_path,
        progress=None,
    )
    assert len(list((tmp_path / ".pipejupyter" / "results").rglob("*.pkl"))) == 2
    assert [len(r) for r in context.results("big", workdir=tmp_path)] == [300_000, 300_000]


def test_readers_are_never_blocked_by_a_running_stage(client, tmp_path):
    """Another process reads the context in a loop while a stage writes to it."""
    reader = subprocess.Popen(
        [
            PYTHON,
            "-c",
            textwrap.dedent(
                """
            import sys, time, json
            sys.path.insert(0, sys.argv[1])
            from pipejupyter import context
            reads, errors, deadline = 0, [], time.time() + 60
            while time.time() < deadline:
                try:
                    runs = context.history(workdir=sys.argv[2])
                    if runs:
                        context.items("readers", workdir=sys.argv[2])
                        reads += 1
                    if runs and runs[-1]["status"] != "running":
                        break
                except Exception as exc:
                    errors.append(repr(exc))
            print(json.dumps({"reads": reads, "errors": errors}))
            """
            ),
            str(ROOT),
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    run_stage(
        "readers",
        lambda x: time.sleep(0.002) or x,
        range(4000),
        client=client,
        workdir=tmp_path,
        progress=None,
    )
    out = json.loads(reader.communicate(timeout=90)[0])
    assert out["errors"] == []
    assert out["reads"] > 3


def test_missing_context_is_a_clear_error(tmp_path):
    with pytest.raises(ContextError, match="no stage has run"):
        context.results("nothing", workdir=tmp_path)
    assert context.history(workdir=tmp_path) == []
    (tmp_path / ".pipejupyter").mkdir()
    (tmp_path / ".pipejupyter" / "context.sqlite").write_text("not a database at all" * 100)
    with pytest.raises(ContextError, match="not a usable stage context database"):
        context.ContextStore(tmp_path)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


KERNEL = textwrap.dedent(
    """
    import os, sys, time
    sys.path.insert(0, sys.argv[1])
    os.chdir(sys.argv[2])

    def work(x):
        open(os.path.join(sys.argv[2], "marks", f"ran-{x}-{time.monotonic_ns()}"), "w").close()
        time.sleep(0.25)
        return x * x

    if __name__ == "__main__":
        from distributed import Client, LocalCluster
        from pipejupyter import run_stage
        with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                          dashboard_address="127.0.0.1:0",
                          silence_logs=50) as cluster, Client(cluster) as client:
            result = run_stage("resume", work, range(40), client=client, progress=None)
            print("RESULT", list(result) == [x * x for x in range(40)], result.stats["skipped"],
                  flush=True)
    """
)


def test_a_killed_kernel_resumes_where_it_stopped(tmp_path, no_leaks):
    (tmp_path / "marks").mkdir()
    script = tmp_path / "kernel.py"
    script.write_text(KERNEL)
    db = tmp_path / ".pipejupyter" / "context.sqlite"

    def done_items() -> int:
        try:
            return sum(
                1 for r in context.items("resume", workdir=tmp_path) if r["status"] == "done"
            )
        except ContextError:
            return 0

    kernel = subprocess.Popen(
        [PYTHON, str(script), str(ROOT), str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert wait_until(lambda: done_items() >= 8, 90, 0.05), (
            "the stage should have recorded some items"
        )
        workers = children_of(kernel.pid)
        assert workers
        kernel.send_signal(signal.SIGKILL)
        kernel.wait(30)
    finally:
        if kernel.poll() is None:
            kernel.kill()
    # its workers notice that their parent is gone and exit
    assert wait_until(lambda: not [p for p in workers if _alive(p)], 60), [
        p for p in workers if _alive(p)
    ]
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    done_before = {
        r["key"] for r in context.items("resume", workdir=tmp_path) if r["status"] == "done"
    }
    assert 8 <= len(done_before) < 40
    assert context.history("resume", workdir=tmp_path)[-1]["status"] == "killed"
    ran_before = set(_runs(tmp_path / "marks"))
    for mark in (tmp_path / "marks").iterdir():
        mark.unlink()

    second = subprocess.run(
        [PYTHON, str(script), str(ROOT), str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert "RESULT True" in second.stdout, second.stderr[-2000:]
    skipped = int(second.stdout.split("RESULT True")[1].split()[0])
    ran_after = set(_runs(tmp_path / "marks"))
    assert skipped == len(done_before)
    assert ran_after == set(range(40)) - {int(k) for k in done_before}  # only the unfinished items
    assert ran_before | ran_after == set(range(40))
    assert context.history("resume", workdir=tmp_path)[-1]["status"] == "done"


def test_an_interrupted_stage_resumes(client, tmp_path):
    from pipejupyter.stages.run import StageReporter

    marks = tmp_path / "marks"
    marks.mkdir()
    items = {str(x): (str(marks), x) for x in range(30)}

    class Interrupt(StageReporter):
        def update(self, counts):
            if counts["done"] >= 4:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_stage(
            "interrupted",
            counted,
            items,
            client=client,
            workdir=tmp_path,
            progress=Interrupt(),
            batch=1,
        )
    assert context.history("interrupted", workdir=tmp_path)[-1]["status"] == "interrupted"
    done = {
        r["key"] for r in context.items("interrupted", workdir=tmp_path) if r["status"] == "done"
    }
    assert 4 <= len(done) < 30
    time.sleep(1)  # cancelled tasks that were already running finish their file
    before = len(list(marks.iterdir()))
    result = run_stage(
        "interrupted", counted, items, client=client, workdir=tmp_path, progress=None
    )
    assert list(result) == [x * 10 for x in range(30)]
    assert result.stats["skipped"] == len(done)
    assert len(list(marks.iterdir())) - before == 30 - len(done)
