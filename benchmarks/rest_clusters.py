"""Latency of GET /pipejupyter/clusters next to GET /api/status on the same real server.

    python benchmarks/rest_clusters.py [--repeat N] [--json]

A real `jupyter server` (subprocess, isolated directories) with the pipejupyter
extension; real Dask clusters of 10, 100 and 1,000 workers whose scheduler was started either
by the server (POST /pipejupyter/clusters) or by another process that calls itself a
kernel and is found through its discovery file (the server keeps a live connection to
it). The workers are real distributed Workers over TCP, all in one helper process so 100
of them fit on a small machine (like batch jobs, they are not the scheduler's children).
Requests go over one keep-alive connection, interleaved with the baseline so machine
noise hits both alike.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tests.support.lab import LabServer  # noqa: E402

# A scheduler with no workers of its own, owned by a process that calls itself a kernel.
KERNEL = textwrap.dedent(
    """
    import sys
    import pipejupyter.lifecycle.manager as m
    m.default_manager.owner_kind = "kernel"
    h = m.start("local", workers=0, set_default=False)
    print(h.id, h.scheduler_address, flush=True)
    sys.stdin.read()
    h.stop()
    """
)
# N real Workers in one process (one event loop), connected to a scheduler over TCP: like
# N batch jobs, without N Python processes on a small machine.
WORKERS = textwrap.dedent(
    """
    import asyncio, sys
    from distributed import Worker

    async def main(address, n):
        workers = [
            Worker(address, nthreads=1, host="127.0.0.1", name=f"w{i}", dashboard=False)
            for i in range(n)
        ]
        await asyncio.gather(*workers)
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await asyncio.gather(*(w.close() for w in workers))

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    """
)


class Workers:
    """``with Workers(address, n, env):`` n workers connected to ``address``."""

    def __init__(self, address: str, n: int, env: dict) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKERS, address, str(n)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )

    def __enter__(self) -> Workers:
        assert self.proc.stdout.readline().strip() == "ready", "the workers did not start"
        return self

    def __exit__(self, *exc) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Timer:
    """Times GETs over one keep-alive connection to the server."""

    def __init__(self, server: LabServer) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        self.headers = {"Authorization": f"token {server.token}"}

    def get(self, path: str) -> tuple[float, bytes]:
        t = time.perf_counter()
        self.conn.request("GET", path, headers=self.headers)
        response = self.conn.getresponse()
        body = response.read()
        elapsed = time.perf_counter() - t
        assert response.status == 200, (path, response.status, body[:300])
        return elapsed, body

    def compare(self, repeat: int) -> tuple[float, float, dict]:
        ours, base = [], []
        body = b""
        for _ in range(repeat):
            elapsed, body = self.get("/pipejupyter/clusters")
            ours.append(elapsed)
            base.append(self.get("/api/status")[0])
        return statistics.median(ours), statistics.median(base), json.loads(body)


def _row(name: str, ours: float, base: float, listing: dict, expect_workers: int) -> dict:
    counts = sorted(c["workers"] for c in listing["clusters"])
    assert counts == ([expect_workers] if expect_workers else []), (
        counts
    )  # live counts, not a stale record
    return {"name": name, "ours": ours, "baseline": base, "ratio": ours / base, "unit": "s"}


# 1,000 workers in one process take a minute to connect: the kernel's case stops at 100.
SIZES = (10, 100, 1000)
KERNEL_SIZES = (10, 100)


def bench(repeat: int = 30, sizes: tuple[int, ...] = SIZES) -> list[dict]:
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="pj-rest-bench-") as tmp:
        server = LabServer(Path(tmp), app="server", expose_app=False)
        with server:
            timer = Timer(server)
            timer.get("/pipejupyter/profiles")  # first call imports the backends once
            ours, base, listing = timer.compare(repeat)
            rows.append(
                _row(
                    "GET /pipejupyter/clusters, no clusters vs GET /api/status",
                    ours,
                    base,
                    listing,
                    0,
                )
            )
            for n in sizes:
                # A cluster owned by the server (its scheduler runs in the server process).
                status, model = server.request(
                    "POST", "pipejupyter/clusters", {"profile": "local", "workers": 0}
                )
                assert status == 201, model
                with Workers(model["scheduler_address"], n, server.env):
                    ours, base, listing = timer.compare(repeat)
                    rows.append(
                        _row(
                            f"GET /pipejupyter/clusters, server's cluster, {n} workers "
                            "vs /api/status",
                            ours,
                            base,
                            listing,
                            n,
                        )
                    )
                assert server.request("DELETE", f"pipejupyter/clusters/{model['id']}")[0] == 204
                if n not in KERNEL_SIZES:
                    continue
                # A cluster owned by a kernel: found through its discovery file, counted live.
                kernel = subprocess.Popen(
                    [sys.executable, "-c", KERNEL],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    env=server.env,
                )
                try:
                    _, address = kernel.stdout.readline().split()
                    with Workers(address, n, server.env):
                        first, _ = timer.get("/pipejupyter/clusters")  # opens the live connection
                        ours, base, listing = timer.compare(repeat)
                        rows.append(
                            _row(
                                f"GET /pipejupyter/clusters, a kernel's cluster, {n} workers "
                                "vs /api/status",
                                ours,
                                base,
                                listing,
                                n,
                            )
                        )
                        rows.append(
                            {
                                "name": f"  first GET once a kernel's {n}-worker cluster "
                                "appears (connects)",
                                "ours": first,
                                "baseline": base,
                                "ratio": first / base,
                                "unit": "s",
                            }
                        )
                finally:
                    kernel.stdin.close()
                    kernel.wait(timeout=120)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument(
        "--sizes", type=int, nargs="*", default=list(SIZES), help="workers per cluster"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = bench(args.repeat, tuple(args.sizes))
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    cpus = len(os.sched_getaffinity(0))
    print(
        f"machine: {cpus} CPUs, Python {sys.version.split()[0]}; "
        f"medians of {args.repeat} interleaved requests"
    )
    print(f"{'benchmark':<78} {'ours':>9} {'baseline':>9} {'ratio':>6}")
    for row in rows:
        print(
            f"{row['name']:<78} {row['ours'] * 1000:>6.2f} ms "
            f"{row['baseline'] * 1000:>6.2f} ms {row['ratio']:>6.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
