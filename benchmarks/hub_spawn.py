"""What pipejupyter's server extension adds to a JupyterHub spawn of a lab as a SLURM job,
on the real hub of ci/hub.sh.

    ci/hub.sh start && . .ci-state/hub/env.sh
    PYTHONPATH=. .venv/bin/python benchmarks/hub_spawn.py [--repeat 3]

Time from the hub's POST /hub/api/users/<user>/server until the lab's /api/status answers
through the hub's port, with pipejupyter's server extension ("ours") and without it
(the server option ``{"pipejupyter": "off"}`` of ci/hub_config.py turns it off:
"baseline"), interleaved so the machine's load hits both alike. Each run stops the
server (DELETE through the hub) and waits for an empty queue, which is reported too.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.hub import Hub, hub_settings  # noqa: E402


def spawn_once(hub: Hub, options: dict) -> tuple[float, float]:
    """(spawn-to-ready, stop-to-empty-queue) seconds."""
    ready = hub.spawn(options)
    t = time.monotonic()
    hub.stop_server()
    if hub.wait_no_jobs(timeout=60) is None:
        raise RuntimeError(f"jobs left after the server stopped: {hub.jobs()}")
    return ready, time.monotonic() - t


def bench(repeat: int = 3) -> list[dict]:
    settings = hub_settings()
    if settings is None:
        return [{"name": "hub_spawn", "skipped": "no hub (ci/hub.sh start)"}]
    hub = Hub(settings)
    if hub.server_running():
        hub.stop_server()
    spawn_once(hub, {"pipejupyter": "on"})  # warm the page cache of both venvs (not counted)
    times: dict[str, list[float]] = {"ours": [], "baseline": [], "stop": []}
    # Explicit both ways: JupyterHub reuses a server's last options when given none.
    runs = [("ours", {"pipejupyter": "on"}), ("baseline", {"pipejupyter": "off"})]
    for i in range(repeat):
        for label, options in runs if i % 2 == 0 else runs[::-1]:
            ready, stop = spawn_once(hub, options)
            times[label].append(ready)
            times["stop"].append(stop)
    ours, baseline = statistics.median(times["ours"]), statistics.median(times["baseline"])
    return [
        {
            "name": "hub spawn to ready (median)",
            "ours": ours,
            "baseline": baseline,
            "ratio": ours / baseline,
            "unit": "s",
        },
        {
            "name": "server stop to empty queue (median)",
            "ours": statistics.median(times["stop"]),
            "baseline": None,
            "ratio": None,
            "unit": "s",
        },
        {"name": "raw times", "times": times},
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    for row in bench(args.repeat):
        print(row)


if __name__ == "__main__":
    main()
