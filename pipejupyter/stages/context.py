"""The persisted stage context: SQLite at ``.pipejupyter/context.sqlite`` in the working directory.

One row per stage run (``runs``), the latest state of every item (``items``: fingerprint,
status, attempts, worker, timings, result, captured log) and every attempt (``attempts``:
retries and lost workers). Small results are pickled inline; large ones go to files in
``.pipejupyter/results/`` beside the database, written before the row that names them.

Only the notebook process writes (workers send results back), in batched transactions;
WAL lets other processes read meanwhile; a killed writer leaves the last committed state.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pipejupyter.errors import PipejupyterError
from pipejupyter.processes import pid_alive
from pipejupyter.stages.bulk import paused_gc
from pipejupyter.stages.results import ItemFailure, StageResult

DIRNAME = ".pipejupyter"
FILENAME = "context.sqlite"
INLINE_LIMIT = 64 * 1024
FLUSH_SECONDS = 0.5
FLUSH_ROWS = 5000
FETCH_ROWS = 10_000  # rows per fetch when a run reads its stage's stored items
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, stage TEXT NOT NULL, work TEXT, keys TEXT,
    started REAL, finished REAL, status TEXT, total INTEGER, done INTEGER DEFAULT 0,
    failed INTEGER DEFAULT 0, skipped INTEGER DEFAULT 0, retried INTEGER DEFAULT 0,
    pid INTEGER, host TEXT, cluster TEXT);
CREATE INDEX IF NOT EXISTS runs_stage ON runs (stage, id);
CREATE TABLE IF NOT EXISTS items (
    stage TEXT NOT NULL, key TEXT NOT NULL, run_id INTEGER, fingerprint TEXT, status TEXT,
    attempts INTEGER, worker TEXT, started REAL, finished REAL, result BLOB, result_file TEXT,
    error TEXT, log TEXT, PRIMARY KEY (stage, key));
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id INTEGER, stage TEXT NOT NULL, key TEXT NOT NULL,
    attempt INTEGER, worker TEXT, started REAL, finished REAL, outcome TEXT, error TEXT);
CREATE INDEX IF NOT EXISTS attempts_key ON attempts (stage, key);
"""


class ContextError(PipejupyterError, RuntimeError):
    """The context database cannot be used."""


def default_path(workdir: str | os.PathLike | None = None) -> Path:
    return Path(workdir or os.getcwd()) / DIRNAME / FILENAME


def _connect(path: Path, *, create: bool) -> sqlite3.Connection:
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
    elif not path.exists():
        raise ContextError(f"no stage context at {path}: no stage has run in {path.parent.parent}")
    try:
        conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 30000")
        if create:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(
                "PRAGMA synchronous = NORMAL"
            )  # WAL + NORMAL: atomic, survives a killed process
            conn.executescript(f"BEGIN IMMEDIATE;{SCHEMA}COMMIT;")  # readers see all tables or none
        elif (
            conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'items'"
            ).fetchone()
            is None
        ):
            conn.close()
            raise ContextError(
                f"no stage context at {path} yet: no stage has run in {path.parent.parent}"
            )
    except sqlite3.DatabaseError as exc:
        raise ContextError(f"{path} is not a usable stage context database: {exc}") from None
    return conn


class ContextStore:
    """The writer used by one stage run (and the reader behind the module functions)."""

    def __init__(self, workdir: str | os.PathLike | None = None) -> None:
        self.path = default_path(workdir)
        self.results_dir = self.path.parent / "results"
        self.conn = _connect(self.path, create=True)
        self._items: list[tuple] = []
        self._attempts: list[tuple] = []
        self._last_flush = time.monotonic()
        self._progress: tuple | None = None

    # -- one run -----------------------------------------------------------------------
    def begin_run(self, stage: str, work: str, keys: list[str], cluster: str | None = None) -> int:
        """A new run's row. Its keys (the input order ``results()`` gives back) are stored
        only when they differ from the stage's last stored keys: a re-run of a million
        items adds a row, not 10 MB of keys again (NULL means "the same as before")."""
        text = json.dumps(keys)
        last = self.conn.execute(
            "SELECT keys FROM runs WHERE stage = ? AND keys IS NOT NULL ORDER BY id DESC LIMIT 1",
            (stage,),
        ).fetchone()
        cur = self.conn.execute(
            "INSERT INTO runs (stage, work, keys, started, status, total, pid, host, cluster)"
            " VALUES (?,?,?,?,?,?,?,?,?)",
            (
                stage,
                work,
                None if last is not None and last[0] == text else text,
                time.time(),
                "running",
                len(keys),
                os.getpid(),
                socket.gethostname(),
                cluster,
            ),
        )
        return int(cur.lastrowid)

    def succeeded(self, stage: str) -> Iterator[tuple[str, str, bytes | None, str | None]]:
        """(key, fingerprint, inline result, result file) of every item that succeeded,
        streamed from one query: a re-run of a million items holds one row at a time here,
        not a dict of them all."""
        cursor = self.conn.execute(
            "SELECT key, fingerprint, result, result_file FROM items"
            " WHERE stage = ? AND status = 'done'",
            (stage,),
        )
        cursor.arraysize = FETCH_ROWS
        while rows := cursor.fetchmany():
            yield from rows

    def record_item(
        self,
        run_id: int,
        stage: str,
        key: str,
        fingerprint: str,
        status: str,
        attempts: int,
        worker: str | None,
        started: float | None,
        finished: float | None,
        result: bytes | None,
        error: str | None,
        log: str | None,
    ) -> None:
        self._items.append(
            (
                stage,
                key,
                run_id,
                fingerprint,
                status,
                attempts,
                worker,
                started,
                finished,
                result,
                error,
                log or None,
            )
        )

    def record_attempt(
        self,
        run_id: int,
        stage: str,
        key: str,
        attempt: int,
        worker: str | None,
        started: float | None,
        finished: float | None,
        outcome: str,
        error: str | None = None,
    ) -> None:
        self._attempts.append(
            (run_id, stage, key, attempt, worker, started, finished, outcome, error)
        )

    def set_progress(self, run_id: int, counts: dict[str, int]) -> None:
        """Counts for the run's row, written with the next flush (a killed run keeps them)."""
        self._progress = (
            counts.get("done", 0),
            counts.get("failed", 0),
            counts.get("skipped", 0),
            counts.get("retried", 0),
            run_id,
        )

    def maybe_flush(self) -> None:
        due = time.monotonic() - self._last_flush > FLUSH_SECONDS
        if due or len(self._items) + len(self._attempts) >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        """Write buffered rows in one transaction (large results to files first)."""
        self._last_flush = time.monotonic()
        if not self._items and not self._attempts and self._progress is None:
            return
        items, self._items = self._items, []
        attempts, self._attempts = self._attempts, []
        rows: list[tuple] = []
        stale: list[str] = []
        for (
            stage,
            key,
            run_id,
            fp,
            status,
            n,
            worker,
            started,
            finished,
            result,
            error,
            log,
        ) in items:
            result_file = None
            if result is not None and len(result) > INLINE_LIMIT:
                result_file = self._write_file(stage, key, fp, result)
                result = None
            rows.append(
                (
                    stage,
                    key,
                    run_id,
                    fp,
                    status,
                    n,
                    worker,
                    started,
                    finished,
                    result,
                    result_file,
                    error,
                    log,
                )
            )
        with self._transaction() as conn:
            if self.results_dir.exists():
                stale = self._stale_files(conn, rows)
            conn.executemany(
                "INSERT OR REPLACE INTO items (stage, key, run_id, fingerprint, status, attempts,"
                " worker, started, finished, result, result_file, error, log)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                rows,
            )
            conn.executemany(
                "INSERT INTO attempts (run_id, stage, key, attempt, worker, started, finished,"
                " outcome, error)"
                " VALUES (?,?,?,?,?,?,?,?,?)",
                attempts,
            )
            if self._progress is not None:
                conn.execute(
                    "UPDATE runs SET done = ?, failed = ?, skipped = ?, retried = ? WHERE id = ?",
                    self._progress,
                )
                self._progress = None
        for path in stale:
            with contextlib.suppress(OSError):
                (self.path.parent / path).unlink()

    def finish_run(self, run_id: int, status: str, counts: dict[str, int]) -> None:
        self.flush()
        with self._transaction() as conn:
            conn.execute(
                "UPDATE runs SET finished = ?, status = ?, done = ?, failed = ?, skipped = ?,"
                " retried = ? WHERE id = ?",
                (
                    time.time(),
                    status,
                    counts.get("done", 0),
                    counts.get("failed", 0),
                    counts.get("skipped", 0),
                    counts.get("retried", 0),
                    run_id,
                ),
            )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.flush()
        self.conn.close()

    # -- helpers -------------------------------------------------------------------------
    @contextlib.contextmanager
    def _transaction(self):
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def _write_file(self, stage: str, key: str, fingerprint: str, data: bytes) -> str:
        folder = self.results_dir / _short(stage)
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{_short(key)}-{fingerprint[:16]}.pkl"
        final = folder / name
        tmp = folder / f".{name}.{os.getpid()}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)  # the row naming it is committed after: never a dangling name
        return str(final.relative_to(self.path.parent))

    def _stale_files(self, conn: sqlite3.Connection, rows: list[tuple]) -> list[str]:
        """Result files that the rows being written replace (deleted after the commit)."""
        stale = []
        for stage in {r[0] for r in rows}:
            old = dict(
                conn.execute(
                    "SELECT key, result_file FROM items"
                    " WHERE stage = ? AND result_file IS NOT NULL",
                    (stage,),
                )
            )
            if old:
                stale += [
                    old[r[1]] for r in rows if r[0] == stage and r[1] in old and old[r[1]] != r[10]
                ]
        return stale

    def load(self, blob: bytes | None, result_file: str | None) -> Any:
        if result_file:
            blob = (self.path.parent / result_file).read_bytes()
        return pickle.loads(blob) if blob is not None else None


def _short(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


# -- reading (also from other processes) --------------------------------------------------


def _reader(workdir: str | os.PathLike | None) -> tuple[sqlite3.Connection, Path]:
    path = default_path(workdir)
    return _connect(path, create=False), path


def history(
    stage: str | None = None, *, workdir: str | os.PathLike | None = None
) -> list[dict[str, Any]]:
    """Every recorded stage run, oldest first. A run whose process died shows as 'killed'."""
    try:
        conn, _ = _reader(workdir)
    except ContextError:
        return []
    with contextlib.closing(conn):
        query = (
            "SELECT id, stage, work, started, finished, status, total, done, failed, skipped,"
            " retried, pid, host FROM runs"
        )
        args: tuple = ()
        if stage is not None:
            query += " WHERE stage = ?"
            args = (stage,)
        cols = (
            "id",
            "stage",
            "work",
            "started",
            "finished",
            "status",
            "total",
            "done",
            "failed",
            "skipped",
            "retried",
            "pid",
            "host",
        )
        runs = [
            dict(zip(cols, row, strict=True)) for row in conn.execute(query + " ORDER BY id", args)
        ]
    here = socket.gethostname()
    for run in runs:
        if run["status"] == "running" and run["host"] == here and not pid_alive(run["pid"]):
            run["status"] = "killed"
    return runs


def items(stage: str, *, workdir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """The latest record of every item of ``stage`` (no result values; see ``results``)."""
    conn, _ = _reader(workdir)
    cols = (
        "key",
        "run_id",
        "fingerprint",
        "status",
        "attempts",
        "worker",
        "started",
        "finished",
        "error",
        "log",
    )
    with contextlib.closing(conn):
        rows = conn.execute(
            f"SELECT {', '.join(cols)} FROM items WHERE stage = ? ORDER BY rowid", (stage,)
        ).fetchall()
    return [dict(zip(cols, row, strict=True)) for row in rows]


def attempts(
    stage: str, key: str | None = None, *, workdir: str | os.PathLike | None = None
) -> list[dict[str, Any]]:
    """Every attempt of ``stage``'s items (a retry or a lost worker adds one)."""
    conn, _ = _reader(workdir)
    cols = ("run_id", "key", "attempt", "worker", "started", "finished", "outcome", "error")
    query = f"SELECT {', '.join(cols)} FROM attempts WHERE stage = ?"
    args: tuple = (stage,)
    if key is not None:
        query += " AND key = ?"
        args += (key,)
    with contextlib.closing(conn):
        rows = conn.execute(query + " ORDER BY id", args).fetchall()
    return [dict(zip(cols, row, strict=True)) for row in rows]


def results(stage: str, *, workdir: str | os.PathLike | None = None) -> StageResult:
    """The results of ``stage``'s latest run, in its input order, without recomputing.

    Items that failed or never finished stand as ``ItemFailure`` (see ``.failed``).
    """
    conn, path = _reader(workdir)
    with contextlib.closing(conn):
        run = conn.execute(
            "SELECT id, keys FROM runs WHERE stage = ? ORDER BY id DESC LIMIT 1", (stage,)
        ).fetchone()
        if run is None:
            known = sorted({r[0] for r in conn.execute("SELECT DISTINCT stage FROM runs")})
            raise ContextError(
                f"no stage {stage!r} in {path}; recorded stages: {', '.join(known) or 'none'}"
            )
        stored = run[1]
        if stored is None:  # the same keys as the stage's last run that stored them
            stored = conn.execute(
                "SELECT keys FROM runs WHERE stage = ? AND id < ? AND keys IS NOT NULL"
                " ORDER BY id DESC LIMIT 1",
                (stage, run[0]),
            ).fetchone()[0]
        keys = json.loads(stored)
        with paused_gc():
            return _stored_result(conn, stage, run[0], keys, path.parent)


def _stored_result(
    conn: sqlite3.Connection, stage: str, run_id: int, keys: list[str], store_dir: Path
) -> StageResult:
    """Stored rows placed at their key's position, streamed (no key -> row dict)."""
    position = dict(zip(keys, range(len(keys)), strict=True))
    values: list[Any] = [None] * len(keys)
    found = bytearray(len(keys))  # 1: a success was placed at this position
    not_done: dict[int, tuple[str, str | None, int | None]] = {}
    cursor = conn.execute(
        "SELECT key, status, result, result_file, error, attempts FROM items WHERE stage = ?",
        (stage,),
    )
    cursor.arraysize = FETCH_ROWS
    loads = pickle.loads
    while rows := cursor.fetchmany():
        for key, status, blob, result_file, error, n in rows:
            i = position.get(key)
            if i is None:
                continue  # an item of an earlier run with other inputs
            if status == "done":
                if result_file:
                    blob = (store_dir / result_file).read_bytes()
                values[i] = loads(blob) if blob is not None else None
                found[i] = 1
            else:
                not_done[i] = (status, error, n)
    failed: dict[str, ItemFailure] = {}
    if found.count(1) < len(keys):  # some item failed or has no row
        for i, key in enumerate(keys):  # input order, as a run's own result has them
            if found[i]:
                continue
            status, error, n = not_done.get(i, ("missing", None, 0))
            failure = ItemFailure(
                key, error or f"no result recorded (status {status})", attempts=n or 0
            )
            failed[key] = failure
            values[i] = failure
    return StageResult(
        values,
        keys,
        stage=stage,
        failed=failed,
        stats={"done": len(keys) - len(failed), "failed": len(failed)},
        run_id=run_id,
    )


def format_history(runs: Iterable[dict[str, Any]]) -> str:
    """A plain-text table of runs (for ``%pipecluster stages`` and the CLI)."""
    runs = list(runs)
    if not runs:
        return "no stage runs recorded in this directory"
    header = (
        f"{'run':>4}  {'stage':<20} {'status':<10} {'items':>6} {'done':>6} {'skip':>6} "
        f"{'fail':>5} {'retry':>5}  {'started':<19}  time"
    )
    lines = [header]
    for r in runs:
        started = (
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["started"]))
            if r["started"]
            else "-"
        )
        took = f"{r['finished'] - r['started']:.1f} s" if r["finished"] and r["started"] else "-"
        lines.append(
            f"{r['id']:>4}  {r['stage'][:20]:<20} {r['status']:<10} "
            f"{r['total'] or 0:>6} {r['done'] or 0:>6} "
            f"{r['skipped'] or 0:>6} {r['failed'] or 0:>5} {r['retried'] or 0:>5}  "
            f"{started:<19}  {took}"
        )
    return "\n".join(lines)


def format_items(rows: Iterable[dict[str, Any]]) -> str:
    """A plain-text table of items (key, status, attempts, worker, time, error)."""
    rows = list(rows)
    if not rows:
        return "no items recorded for this stage"
    lines = [f"{'key':<30} {'status':<7} {'tries':>5}  {'worker':<24} {'time':>8}  error"]
    for r in rows:
        took = f"{r['finished'] - r['started']:.2f} s" if r["finished"] and r["started"] else "-"
        error = (r["error"] or "").strip().splitlines()[-1:] or [""]
        lines.append(
            f"{r['key'][-30:]:<30} {r['status']:<7} {r['attempts'] or 0:>5}  "
            f"{(r['worker'] or '-')[-24:]:<24} {took:>8}  {error[0][:60]}"
        )
    return "\n".join(lines)
