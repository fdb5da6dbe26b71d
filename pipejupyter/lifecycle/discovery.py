"""Discovery files: one small JSON file per running cluster in the Jupyter runtime dir.

Kernels, the Jupyter server and the CLI read these to list clusters started by other
processes and to connect to them. A file whose owner process is gone *and* whose
scheduler no longer answers is stale and is pruned when read.

Whatever lies in the runtime directory is input: every file is checked against the
record's schema (``check_record``) and a bad one is skipped with one warning naming the
file and the key, so one broken file never breaks a listing. Schedulers are probed with
short deadlines, all at once, and never with a Dask handshake (which can wait for ever).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import socket
import stat
import tempfile
import threading
from pathlib import Path
from typing import Any

from pipejupyter.backends.probe import (
    OPEN,
    PROBE_TIMEOUT,
    REFUSED,
    SILENT,
    UNKNOWN,
    scheduler_answer,
    split_address,
)
from pipejupyter.models import ClusterStatus
from pipejupyter.processes import pid_alive

logger = logging.getLogger(__name__)

VERSION = 1

#: a cluster id, as ClusterHandle makes them (uuid4().hex[:12])
ID_PATTERN = re.compile(r"[0-9a-f]{12}")
ID_FORMAT = "12 lowercase hex digits"
#: the statuses a record may carry
STATUSES = tuple(str(s) for s in ClusterStatus)
#: a discovery file larger than this is skipped (a record is about 500 bytes; the job ids of
#: a 10,000-job batch cluster take about 100 kB)
MAX_RECORD_BYTES = 1 << 20
#: discovery files read per listing (the newest); more is no user's set of clusters
MAX_RECORDS = 256
#: workers_requested (and adapt bounds) above this are no cluster anyone started
MAX_WORKERS_REQUESTED = 1_000_000
#: longest name, host, owner kind, backend or profile in a record; longest address or link
MAX_TEXT = 256
MAX_ADDRESS = 2048
#: seconds one TCP probe of a scheduler may take; probes run concurrently (PROBE_THREADS)
#: and a listing waits at most PROBE_DEADLINE for all of them
PROBE_THREADS = 32
PROBE_DEADLINE = 1.0


def runtime_dir() -> Path:
    """``$PIPEJUPYTER_RUNTIME_DIR``, else ``<jupyter runtime dir>/pipejupyter``."""
    explicit = os.environ.get("PIPEJUPYTER_RUNTIME_DIR")
    if explicit:
        return Path(explicit)
    try:
        from jupyter_core.paths import jupyter_runtime_dir

        base = Path(jupyter_runtime_dir())
    except ImportError:  # jupyter_core is optional for plain scripts
        base = Path(
            os.environ.get("JUPYTER_RUNTIME_DIR") or Path.home() / ".local/share/jupyter/runtime"
        )
    return base / "pipejupyter"


def record_path(cluster_id: str) -> Path:
    """Where the discovery file of cluster ``cluster_id`` lives."""
    return runtime_dir() / f"cluster-{cluster_id}.json"


def write(record: dict[str, Any]) -> Path:
    """Write atomically (readers never see half a file); only the owner can read it."""
    directory = runtime_dir()
    directory.mkdir(parents=True, exist_ok=True)
    target = record_path(record["id"])
    fd, tmp = tempfile.mkstemp(prefix=".cluster-", suffix=".json", dir=directory)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump({**record, "discovery_version": VERSION}, fh)
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target


def remove(cluster_id: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        record_path(cluster_id).unlink()


def owner_alive(owner: dict[str, Any]) -> bool:
    """True unless we can tell the owner process is gone (other hosts: unknown, so True)."""
    if owner.get("host") != socket.gethostname():
        return True
    return pid_alive(owner.get("pid"))


def scheduler_reachable(address: str | None, timeout: float = PROBE_TIMEOUT) -> bool:
    """The scheduler answers (or it cannot be told cheaply): see scheduler_answer."""
    return scheduler_answer(address, timeout) in (OPEN, UNKNOWN)


# -- validation ------------------------------------------------------------------------


class BadRecord(ValueError):
    """A discovery file that is not a record: ``key`` is the offending key (or "the file")."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key


def _text(value: Any, key: str, *, limit: int = MAX_TEXT, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not value:
        kind = "a string or null" if optional else "a non-empty string"
        raise BadRecord(key, f"must be {kind}, not {_shown(value)}")
    if len(value) > limit:
        raise BadRecord(key, f"is {len(value)} characters long; at most {limit} are accepted")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise BadRecord(key, f"contains control characters: {value[:80]!r}")


def _integer(value: Any, key: str, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise BadRecord(key, f"must be an integer from {low} to {high}, not {_shown(value)}")


def _shown(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def check_record(data: Any, path: Path) -> dict[str, Any]:
    """``data`` read from discovery file ``path`` as a record, or BadRecord naming the key.

    Required: ``id`` (12 hex digits, the one in the file name), ``name``, ``owner``
    ({pid, host, kind}). Checked when present: ``status`` (a cluster status),
    ``scheduler_address`` and ``dashboard_link`` (null or a string; the address must parse),
    ``workers_requested`` (null or 0..MAX_WORKERS_REQUESTED), ``adapt``
    (null or {minimum, maximum}), ``started`` (seconds since the epoch), ``backend``,
    ``profile`` (null or a string), ``backend_info`` (an object).
    """
    if not isinstance(data, dict):
        raise BadRecord("the file", f"must hold a JSON object, not {type(data).__name__}")
    cluster_id = data.get("id")
    if not isinstance(cluster_id, str) or not ID_PATTERN.fullmatch(cluster_id):
        raise BadRecord("id", f"must be {ID_FORMAT}, not {_shown(cluster_id)}")
    if path.name != f"cluster-{cluster_id}.json":
        raise BadRecord("id", f"{cluster_id!r} is not the id in the file name {path.name!r}")
    if "name" not in data:
        raise BadRecord("name", "is missing")
    _text(data["name"], "name")
    owner = data.get("owner")
    if not isinstance(owner, dict):
        raise BadRecord("owner", f"must be an object {{pid, host, kind}}, not {_shown(owner)}")
    if "pid" not in owner or "host" not in owner:
        raise BadRecord(f"owner.{'pid' if 'pid' not in owner else 'host'}", "is missing")
    _integer(owner["pid"], "owner.pid", 1, 2**31)
    _text(owner["host"], "owner.host")
    if "kind" in owner:
        _text(owner["kind"], "owner.kind")
    if "status" in data and data["status"] not in STATUSES:
        raise BadRecord(
            "status", f"must be one of {', '.join(STATUSES)}, not {_shown(data['status'])}"
        )
    address = data.get("scheduler_address")
    _text(address, "scheduler_address", limit=MAX_ADDRESS, optional=True)
    if address is not None:
        try:
            split_address(address)
        except ValueError as exc:
            raise BadRecord("scheduler_address", f"{address!r} does not parse: {exc}") from None
    _text(data.get("dashboard_link"), "dashboard_link", limit=MAX_ADDRESS, optional=True)
    for key in ("backend", "profile"):
        _text(data.get(key), key, optional=True)
    if data.get("workers_requested") is not None:
        _integer(data["workers_requested"], "workers_requested", 0, MAX_WORKERS_REQUESTED)
    adapt = data.get("adapt")
    if adapt is not None:
        if not isinstance(adapt, dict) or set(adapt) != {"minimum", "maximum"}:
            raise BadRecord("adapt", f"must be null or {{minimum, maximum}}, not {_shown(adapt)}")
        _integer(adapt["minimum"], "adapt.minimum", 0, MAX_WORKERS_REQUESTED)
        _integer(adapt["maximum"], "adapt.maximum", 0, MAX_WORKERS_REQUESTED)
        if adapt["minimum"] > adapt["maximum"]:
            raise BadRecord("adapt", f"minimum {adapt['minimum']} is above maximum")
    started = data.get("started")
    if started is not None and (
        not isinstance(started, int | float)
        or isinstance(started, bool)
        or not math.isfinite(started)
        or started < 0
    ):
        raise BadRecord("started", f"must be seconds since the epoch, not {_shown(started)}")
    if "backend_info" in data and not isinstance(data["backend_info"], dict):
        raise BadRecord("backend_info", f"must be an object, not {_shown(data['backend_info'])}")
    return data


def _load(path: Path) -> dict[str, Any]:
    """The checked record in ``path``; BadRecord when it is none; OSError when it is gone."""
    # O_NONBLOCK: opening a FIFO planted under a record's name must not wait for a writer.
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise BadRecord("the file", "is not a regular file")
        raw = fh.read(MAX_RECORD_BYTES + 1)
    if len(raw) > MAX_RECORD_BYTES:
        raise BadRecord(
            "the file",
            f"is larger than {MAX_RECORD_BYTES} bytes "
            "(pipejupyter.lifecycle.discovery.MAX_RECORD_BYTES)",
        )
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise BadRecord("the file", f"is not JSON: {str(exc)[:200]}") from None
    return check_record(data, path)


class _Reported:
    """Bad files already warned about, by (mtime, size): one warning per version of a file,
    not one per poll; forgotten when the file goes away. Also a directory with too many
    files, by its count."""

    def __init__(self) -> None:
        self._seen: dict[Path, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def warn(self, path: Path, problem: BadRecord) -> None:
        try:
            info = path.stat()
            version = (info.st_mtime_ns, info.st_size)
        except OSError:
            version = (0, 0)
        with self._lock:
            if self._seen.get(path) == version:
                return
            self._seen[path] = version
        logger.warning(
            "pipejupyter: skipping discovery file %s: %s (a discovery file holds one cluster "
            "record, written by pipejupyter; delete this file if no cluster owns it)",
            path,
            problem,
        )

    def too_many(self, directory: Path, count: int) -> None:
        with self._lock:
            if self._seen.get(directory) == (count, 0):
                return
            self._seen[directory] = (count, 0)
        logger.warning(
            "pipejupyter: %s holds %d discovery files; only the newest %d are read "
            "(pipejupyter.lifecycle.discovery.MAX_RECORDS)",
            directory,
            count,
            MAX_RECORDS,
        )

    def forget_except(self, present: set[Path]) -> None:
        with self._lock:
            for path in [p for p in self._seen if p not in present]:
                del self._seen[path]


_reported = _Reported()


def _answers(addresses: set[str | None]) -> dict[str | None, str]:
    """scheduler_answer of each address, concurrently, within PROBE_DEADLINE overall;
    an address not probed by then counts as SILENT."""
    if not addresses:
        return {}
    # Loaded by the first listing that must probe other hosts, not with %load_ext.
    from concurrent.futures import ThreadPoolExecutor, wait

    pool = ThreadPoolExecutor(
        max_workers=min(PROBE_THREADS, len(addresses)), thread_name_prefix="pipejupyter-probe"
    )
    try:
        futures = {address: pool.submit(scheduler_answer, address) for address in addresses}
        wait(futures.values(), timeout=PROBE_DEADLINE)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return {a: f.result() if f.done() and not f.cancelled() else SILENT for a, f in futures.items()}


def read_all(prune: bool = True) -> list[dict[str, Any]]:
    """Every discovery record, checked (a bad file is skipped with one warning); stale ones
    (owner gone, scheduler not answering) are deleted when ``prune``.

    Each record gains ``owner_alive``. A record whose owner is on another host and whose
    scheduler does not answer is kept (its owner may be fine) with status "unreachable".
    """
    directory = runtime_dir()
    paths = sorted(directory.glob("cluster-*.json")) if directory.is_dir() else []
    if len(paths) > MAX_RECORDS:
        _reported.too_many(directory, len(paths))
        paths = sorted(paths, key=_mtime, reverse=True)[:MAX_RECORDS]
        paths.sort()
    _reported.forget_except({*paths, directory})
    loaded: list[tuple[Path, dict[str, Any]]] = []
    for path in paths:
        try:
            loaded.append((path, _load(path)))
        except BadRecord as exc:
            _reported.warn(path, exc)
        except OSError:
            continue  # removed since the listing
    here = socket.gethostname()
    alive = {path: owner_alive(record["owner"]) for path, record in loaded}
    to_probe = {
        record.get("scheduler_address")
        for path, record in loaded
        if not alive[path] or record["owner"]["host"] != here
    }
    answers = _answers(to_probe)
    records = []
    for path, record in loaded:
        answer = answers.get(record.get("scheduler_address"), OPEN)
        if not alive[path] and answer in (REFUSED, SILENT):
            if prune and answer == REFUSED:  # a silent one may only be slow: keep it
                with contextlib.suppress(OSError):
                    path.unlink()
            continue
        if record["owner"]["host"] != here and answer in (REFUSED, SILENT):
            record["status"] = str(ClusterStatus.UNREACHABLE)
        record["owner_alive"] = alive[path]
        records.append(record)
    return records


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def is_cluster_id(text: Any) -> bool:
    """``text`` is a cluster id (safe in a file name, a URL and quoted code)."""
    return isinstance(text, str) and ID_PATTERN.fullmatch(text) is not None


def find(key: str) -> dict[str, Any] | None:
    """A record by id, id prefix (at least 4 characters) or name."""
    records = read_all()
    for record in records:
        if record["id"] == key or record.get("name") == key:
            return record
    if len(key) >= 4:
        matches = [r for r in records if r["id"].startswith(key)]
        if len(matches) == 1:
            return matches[0]
    return None
