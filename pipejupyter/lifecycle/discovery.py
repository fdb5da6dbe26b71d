"""Discovery files: one small JSON file per running cluster in the Jupyter runtime dir.

Kernels, the Jupyter server and the CLI read these to list clusters started by other
processes and to connect to them. A file whose owner process is gone *and* whose
scheduler no longer answers is stale and is pruned when read.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pipejupyter.processes import pid_alive

VERSION = 1


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


def scheduler_reachable(address: str | None, timeout: float = 0.5) -> bool:
    """A cheap TCP connect to the scheduler (no Dask handshake)."""
    if not address:
        return False
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    if parsed.scheme not in ("tcp", "tls", "ws", "wss") or not parsed.hostname or not parsed.port:
        return True  # inproc:// or gateway addresses: cannot tell cheaply
    try:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=timeout):
            return True
    except OSError:
        return False


def read_all(prune: bool = True) -> list[dict[str, Any]]:
    """Every discovery record; stale ones are deleted when ``prune``."""
    directory = runtime_dir()
    records = []
    for path in sorted(directory.glob("cluster-*.json")) if directory.is_dir() else []:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being written or not ours
        if not isinstance(record, dict) or "id" not in record:
            continue
        alive = owner_alive(record.get("owner") or {})
        if not alive and not scheduler_reachable(record.get("scheduler_address")):
            if prune:
                with contextlib.suppress(OSError):
                    path.unlink()
            continue
        record["owner_alive"] = alive
        records.append(record)
    return records


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
