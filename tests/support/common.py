"""Plain helpers every kind of test uses: the repository's paths, ``require``, process,
port and config-file helpers, and ``run_cli``.

Tests that need a real component (SLURM, the gateway server, OpenMPI, casatasks,
Chromium) call ``require(...)``: locally a missing component skips with a reason that
names it; in CI (CI=true) it fails, because CI must have every component.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes") or bool(
    os.environ.get("PIPEJUPYTER_REQUIRE_ALL")
)


def require(ok: bool, what: str) -> None:
    """Skip (locally) or fail (in CI) when a real component is missing."""
    if ok:
        return
    if IN_CI:
        pytest.fail(f"CI must provide: {what}", pytrace=False)
    pytest.skip(f"missing: {what}")


def children_of(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (zombies excluded)."""
    out = []
    try:
        listing = subprocess.run(
            ["ps", "-eo", "pid=,ppid=,stat="], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return out
    tree: dict[int, list[tuple[int, str]]] = {}
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) >= 3:
            tree.setdefault(int(parts[1]), []).append((int(parts[0]), parts[2]))
    stack = [pid]
    while stack:
        for child, stat in tree.get(stack.pop(), []):
            if not stat.startswith("Z"):
                out.append(child)
            stack.append(child)
    return out


def live_children(pid: int) -> set[int]:
    """Descendants that count as leaks: multiprocessing's resource tracker lives as long as
    the interpreter, and an empty command line means the process is already exiting."""
    return {
        p for p in children_of(pid) if cmdline_of(p) and "resource_tracker" not in cmdline_of(p)
    }


def wait_until(predicate, timeout: float = 15.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def cmdline_of(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def have(cmd: str) -> bool:
    return shutil.which(cmd) is not None


def run_cli(
    *args: str, env: dict | None = None, cwd=None, timeout: float = 120
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, "-m", "pipejupyter", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=timeout,
    )


def processes_with_env(name: str, value: str) -> list[int]:
    """Every process on the machine (but this one) whose environment has ``name=value``."""
    needle = f"{name}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def port_open(address: str) -> bool:
    """Something accepts TCP connections at ``scheme://host:port``."""
    parsed = urlparse(address)
    try:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=0.5):
            return True
    except OSError:
        return False


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


@contextlib.contextmanager
def local_client(n_workers: int = 2, threads_per_worker: int = 1, **kwargs: Any) -> Iterator[Any]:
    """A raw Dask LocalCluster of worker processes on loopback, and a Client of it."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            silence_logs=40,
            **kwargs,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client
