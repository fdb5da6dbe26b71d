"""Connecting to a scheduler that accepts TCP but never speaks (a SIGSTOPped process) ends.

A Dask connect waits for the scheduler's greeting without a time limit, so a stopped
scheduler used to hold `connect` (and a server thread starting an address profile) for ever.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import time

import pytest

from pipejupyter.backends.probe import REFUSED, SILENT, scheduler_answer

pytestmark = pytest.mark.usefixtures("isolated")


@pytest.fixture
def silent_port():
    """A listening socket that accepts connections (the kernel does) and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    yield server.getsockname()[1]
    server.close()


def test_the_probe_tells_silent_from_refused(silent_port):
    assert scheduler_answer(f"tcp://127.0.0.1:{silent_port}", timeout=0.5) == SILENT
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        closed = free.getsockname()[1]
    assert scheduler_answer(f"tcp://127.0.0.1:{closed}", timeout=0.5) == REFUSED


@pytest.mark.parametrize("how", ["connect", "address profile"])
def test_connect_to_a_silent_scheduler_fails_fast_with_a_clear_error(silent_port, how):
    address = f"tcp://127.0.0.1:{silent_port}"
    call = (
        f"pipejupyter.connect({address!r}, timeout=2)"
        if how == "connect"
        else "pipejupyter.start(config=None, overrides={'profiles.x.backend': 'address', "
        f"'profiles.x.address': {address!r}}}, profile='x', timeout=2)"
    )
    code = textwrap.dedent(
        f"""
        import pipejupyter
        try:
            {call}
        except pipejupyter.PipejupyterError as exc:
            print("ERROR", exc)
        """
    )
    started = time.monotonic()
    # In a subprocess: before the fix this never returned.
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - started
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ERROR"), out.stdout + out.stderr
    assert "does not answer" in out.stdout
    assert elapsed < 30
