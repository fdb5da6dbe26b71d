"""Stop a remote cluster when the process that owns it dies, whatever kills it.

Local workers die with their scheduler (it lives in the owner) and SLURM jobs carry their
own watchdog, but a Dask Gateway cluster lives on a server: a kernel killed with SIGKILL
never says "stop", and a gateway without an idle timeout keeps the cluster for ever. So
the owner starts ``python -m pipejupyter.backends.reaper`` in a session of its own (a kernel
restart kills the kernel's process group, not this one) and keeps the write end of its
stdin open:

- the owner writes one pickled :class:`Order` (a callable that stops the cluster, and the
  discovery file to remove); the reaper answers ``ready`` once it holds it;
- ``release`` from the owner (it stopped the cluster itself): the reaper exits quietly;
- end of file without ``release``, or a new parent process (the owner died: dying closes
  the pipe): the reaper runs the order, removes the discovery file and exits.

Credentials travel in the pipe, never in argv or on disk.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import select
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

RELEASE = b"R"
READY = b"ready\n"
#: seconds between attempts when the remote side does not answer (then give up)
RETRY_DELAYS = (0, 5, 30, 120)


@dataclass
class Order:
    """What the reaper does when the owner dies."""

    label: str  # for its log: "gateway cluster 3f2a..."
    stop: Callable[[], None]
    record_path: str | None = None  # the discovery file of the cluster


class Reaper:
    """The owner's end of one reaper process."""

    def __init__(self, proc: subprocess.Popen, label: str) -> None:
        self._proc = proc
        self.label = label
        self._confirmed = False

    @property
    def pid(self) -> int:
        return self._proc.pid

    @classmethod
    def start(cls, order: Order) -> Reaper:
        """Start a reaper holding ``order``; OSError/PicklingError if it cannot be started."""
        payload = pickle.dumps(order)
        env = dict(os.environ)
        # The reaper imports pipejupyter and unpickles the order: same import path as ours.
        here = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipejupyter.backends.reaper"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
        try:
            proc.stdin.write(len(payload).to_bytes(8, "big") + payload)
            proc.stdin.flush()
        except OSError:
            proc.kill()
            proc.wait()
            raise
        return cls(proc, order.label)

    def confirm(self, timeout: float = 15.0) -> bool:
        """Wait until the reaper holds its order (False: it died or is too slow)."""
        if self._confirmed:
            return True
        ready, _, _ = select.select([self._proc.stdout], [], [], timeout)
        self._confirmed = bool(ready) and self._proc.stdout.readline() == READY
        return self._confirmed

    def release(self, timeout: float = 5.0) -> None:
        """The owner has stopped the cluster itself: the reaper exits without acting."""
        proc = self._proc
        with contextlib.suppress(OSError, ValueError):
            proc.stdin.write(RELEASE)
            proc.stdin.flush()
        with contextlib.suppress(OSError, ValueError):
            proc.stdin.close()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:  # still unpickling: it has nothing to do
            proc.kill()
            proc.wait()
        with contextlib.suppress(OSError, ValueError):
            proc.stdout.close()


# -- the reaper process -------------------------------------------------------------------


def _wait_for_owner(fd: int, parent: int) -> bool:
    """Block until the owner releases us (False) or dies (True)."""
    while True:
        readable, _, _ = select.select([fd], [], [], 1.0)
        if readable:
            return os.read(fd, 1) != RELEASE  # b"" is end of file: the owner died
        if os.getppid() != parent:  # re-parented: the owner died while a child kept the pipe
            return True


def _carry_out(order: Order) -> None:
    for delay in RETRY_DELAYS:
        time.sleep(delay)
        try:
            order.stop()
        except Exception as exc:  # the next attempt may reach it
            logger.warning("reaper: stopping %s failed: %s", order.label, exc)
            continue
        logger.info("reaper: the owner of %s died; stopped it", order.label)
        if order.record_path:
            with contextlib.suppress(OSError):
                os.unlink(order.record_path)
        return
    logger.error("reaper: gave up stopping %s", order.label)


def _read_exact(fd: int, size: int) -> bytes:
    # Raw reads only: a buffered reader could swallow the release byte that follows.
    data = b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def main() -> int:
    parent = os.getppid()
    fd = sys.stdin.fileno()
    header = _read_exact(fd, 8)
    if len(header) < 8:
        return 0
    order: Order = pickle.loads(_read_exact(fd, int.from_bytes(header, "big")))
    if order.record_path:
        # Failures go beside the discovery file, where `pipejupyter list` users look.
        handler = logging.FileHandler(f"{order.record_path}.reaper.log", delay=True)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        logging.basicConfig(handlers=[handler], level=logging.WARNING)
    os.write(sys.stdout.fileno(), READY)
    if _wait_for_owner(fd, parent):
        _carry_out(order)
    return 0


if __name__ == "__main__":
    sys.exit(main())
