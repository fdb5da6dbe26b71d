"""Import and start-up cost of pipejupyter next to raw Dask, measured side by side."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

IMPORT_OURS = """
import time
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
t = time.perf_counter()
import pipejupyter
shell.run_line_magic("load_ext", "pipejupyter")
print(time.perf_counter() - t)
"""
IMPORT_BASELINE = """
import time
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
t = time.perf_counter()
import distributed
print(time.perf_counter() - t)
"""


def _subprocess_time(code: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return float(out.stdout.strip().splitlines()[-1])


def bench_import(repeat: int = 5) -> dict:
    ours, base = [], []
    for _ in range(repeat):  # interleaved so machine noise hits both alike
        ours.append(_subprocess_time(IMPORT_OURS))
        base.append(_subprocess_time(IMPORT_BASELINE))
    o, b = statistics.median(ours), statistics.median(base)
    return {
        "name": "import pipejupyter + %load_ext vs import distributed",
        "ours": o,
        "baseline": b,
        "ratio": o / b,
        "unit": "s",
    }


def _start_ours(n: int) -> float:
    import pipejupyter

    t = time.perf_counter()
    handle = pipejupyter.start(workers=n, set_default=False)
    elapsed = time.perf_counter() - t
    handle.stop()
    return elapsed


def _start_raw(n: int) -> float:
    from distributed import LocalCluster
    from timing import time_to_workers

    return time_to_workers(
        lambda: LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            silence_logs=40,
        ),
        n,
    )


def bench_start(n: int = 2, repeat: int = 3) -> dict:
    ours, base = [], []
    for _ in range(repeat):
        base.append(_start_raw(n))
        ours.append(_start_ours(n))
    o, b = statistics.median(ours), statistics.median(base)
    return {
        "name": f"start local profile to {n} workers vs LocalCluster + Client",
        "ours": o,
        "baseline": b,
        "ratio": o / b,
        "unit": "s",
    }


def bench() -> list[dict]:
    return [bench_import(), bench_start()]
