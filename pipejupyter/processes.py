"""Is a process of this machine still alive? (Shared by discovery and the stage context.)"""

from __future__ import annotations

import os


def pid_alive(pid: int | None) -> bool:
    """True unless the process is gone; a zombie (killed, not yet reaped) counts as gone."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True
