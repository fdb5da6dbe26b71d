"""The cluster model of a 500- and a 1,000-worker cluster, and what a refresh costs the scheduler.

    python benchmarks/many_workers.py [--sizes 500 1000] [--repeat 20] [--json]

A scheduler owned by another process that calls itself a kernel (found through its
discovery file in a private runtime directory), with N real distributed Workers over TCP,
all in helper processes of 250 each (like batch jobs, not the scheduler's children), started
at once. The helpers' workers are made light (HELPER_CONFIG: no profiler, memory monitor or
GIL monitor, slow system monitor) so that 2 cores can hold 1,000 of them: what the scheduler
sees of each (connection, heartbeats at Dask's own interval for the cluster size) is real.
This process connects to it and times, side by side with raw Dask's
``client.scheduler_info(n_workers=-1)`` (every worker's full record, what a view of all
workers asks for):

- the widget refresh (``ClusterWidget.refresh``: model + HTML),
- the REST GET body (``ClusterService.list()`` + JSON, what GET /pipejupyter/clusters and the
  JupyterLab sidebar get),
- the scheduler's own CPU per refresh (psutil CPU time of the scheduler's process, minus its
  idle rate measured just before), as a share of one core at one refresh a second.
"""

from __future__ import annotations

import argparse
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
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

KERNEL = textwrap.dedent(
    """
    import os, sys
    import pipejupyter.lifecycle.manager as m
    m.default_manager.owner_kind = "kernel"
    h = m.start("local", workers=0, set_default=False)
    print(os.getpid(), h.scheduler_address, flush=True)
    sys.stdin.read()
    h.stop()
    """
)
# N real Workers in one process (one event loop), named from an offset so that several
# helper processes can join one scheduler (a scheduler refuses a second worker of a name).
WORKERS = textwrap.dedent(
    """
    import asyncio, sys
    from distributed import Worker

    async def main(address, n, first):
        workers = [
            Worker(address, nthreads=1, host="127.0.0.1", name=f"w{first + i}", dashboard=False)
            for i in range(n)
        ]
        await asyncio.gather(*workers)
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await asyncio.gather(*(w.close() for w in workers))

    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
    """
)
SIZES = (500, 1000)
PER_HELPER = 250  # workers per helper process
#: dask config of the helper processes (never the scheduler's): what a worker does on its own
#: every few milliseconds (profiling every 10 ms, memory checks every 100 ms, GIL polls
#: every 1 ms) would take 1,000 workers' helpers two cores and starve the scheduler
HELPER_CONFIG = {
    "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False",
    "DASK_DISTRIBUTED__WORKER__MEMORY__MONITOR_INTERVAL": "10s",
    "DASK_DISTRIBUTED__ADMIN__SYSTEM_MONITOR__INTERVAL": "10s",
    "DASK_DISTRIBUTED__ADMIN__SYSTEM_MONITOR__GIL__ENABLED": "False",
    "DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL": "1s",
    "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "300s",
}


class Workers:
    """``n`` workers named from ``first`` on, connected to ``address`` (``close()`` ends them)."""

    def __init__(self, address: str, n: int, first: int, env: dict) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKERS, address, str(n), str(first)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**env, **HELPER_CONFIG},
        )
        self.n = n

    def ready(self) -> None:
        """Wait until all ``n`` workers of this helper registered."""
        if self.proc.stdout.readline().strip() != "ready":
            self.close()
            raise RuntimeError(f"{self.n} workers did not start")

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _median_time(call, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _scheduler_cpu(proc, call, repeat: int, rounds: int = 3) -> float:
    """Seconds of the scheduler's CPU one ``call`` costs: its CPU time while calling, less
    its idle rate (1,000 workers' heartbeats) measured in windows between the calls."""

    def cpu() -> float:
        return sum(proc.cpu_times()[:2])

    idle_cpu = idle_time = busy_cpu = busy_time = 0.0
    for _ in range(rounds):
        c, t = cpu(), time.perf_counter()
        time.sleep(1.0)
        idle_cpu, idle_time = idle_cpu + cpu() - c, idle_time + time.perf_counter() - t
        c, t = cpu(), time.perf_counter()
        for _ in range(repeat):
            call()
        busy_cpu, busy_time = busy_cpu + cpu() - c, busy_time + time.perf_counter() - t
    spent = busy_cpu - idle_cpu / idle_time * busy_time
    return max(spent, 0.0) / (repeat * rounds)


def bench(sizes: tuple[int, ...] = SIZES, repeat: int = 20) -> list[dict]:
    import psutil

    from pipejupyter.lifecycle.manager import ClusterManager
    from pipejupyter.notebook.cluster_widget import ClusterWidget
    from pipejupyter.server.service import ClusterService

    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="pj-many-workers-") as tmp:
        env = {**os.environ, "PIPEJUPYTER_RUNTIME_DIR": tmp}
        old_runtime = os.environ.get("PIPEJUPYTER_RUNTIME_DIR")
        os.environ["PIPEJUPYTER_RUNTIME_DIR"] = tmp
        kernel = subprocess.Popen(
            [sys.executable, "-c", KERNEL],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        helpers: list[Workers] = []
        manager = ClusterManager("script")
        service = ClusterService(ClusterManager("server"))
        try:
            pid, address = kernel.stdout.readline().split()
            scheduler = psutil.Process(int(pid))
            handle = manager.connect(address, set_default=False)
            widget = ClusterWidget(handle, live=False)
            client = handle.client
            connected = 0
            for n in sorted(sizes):
                started = []
                while connected < n:
                    count = min(PER_HELPER, n - connected)
                    started.append(Workers(address, count, connected, env))
                    connected += count
                helpers += started
                t = time.perf_counter()
                try:
                    for helper in started:
                        helper.ready()
                    client.wait_for_workers(n, timeout=300)
                except (TimeoutError, RuntimeError) as exc:  # say how far it got
                    got = client.scheduler_info(n_workers=0).get("n_workers")
                    rows.append(
                        {"name": f"model of {n:,} workers", "skipped": f"{got} of {n}: {exc}"}
                    )
                    break
                print(f"{n} workers up in {time.perf_counter() - t:.0f} s", file=sys.stderr)
                assert widget.refresh()["workers"] == n
                listing = service.list()
                assert [c["workers"] for c in listing["clusters"]] == [n], listing["clusters"]

                def raw() -> None:
                    client.scheduler_info(n_workers=-1)

                def rest() -> None:
                    json.dumps(service.list())

                for _ in range(3):  # warm: connections, imports
                    raw(), widget.refresh(), rest()
                base = _median_time(raw, repeat)
                ours = {"widget": _median_time(widget.refresh, repeat)}
                ours["rest"] = _median_time(rest, repeat)
                size = len(json.dumps(service.list()))
                cpu_raw = _scheduler_cpu(scheduler, raw, repeat)
                cpu_ours = _scheduler_cpu(scheduler, widget.refresh, repeat)
                rows += [
                    {
                        "name": f"model of {n:,} workers: widget refresh vs raw scheduler_info()",
                        "ours": ours["widget"],
                        "baseline": base,
                    },
                    {
                        "name": f"model of {n:,} workers: REST GET body ({size / 1024:.0f} KiB,"
                        " the sidebar's model) vs raw scheduler_info()",
                        "ours": ours["rest"],
                        "baseline": base,
                    },
                    {
                        "name": f"model of {n:,} workers: scheduler CPU per refresh vs raw"
                        " scheduler_info() (at 1 s: ours x 100 = % of a core)",
                        "ours": cpu_ours,
                        "baseline": cpu_raw,
                    },
                ]
        finally:
            for helper in reversed(helpers):
                helper.close()
            service.shutdown()
            manager.stop_all()
            kernel.stdin.close()
            kernel.wait(timeout=120)
            if old_runtime is None:
                os.environ.pop("PIPEJUPYTER_RUNTIME_DIR", None)
            else:
                os.environ["PIPEJUPYTER_RUNTIME_DIR"] = old_runtime
    return [
        r if "skipped" in r else {**r, "ratio": r["ours"] / max(r["baseline"], 1e-9), "unit": "s"}
        for r in rows
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=list(SIZES))
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = bench(tuple(args.sizes), args.repeat)
    for row in rows:
        if args.json:
            print(json.dumps(row))
        elif "skipped" in row:
            print(f"{row['name']}: skipped: {row['skipped']}")
        else:
            print(
                f"{row['name']:<100} {row['ours'] * 1000:8.2f} ms "
                f"{row['baseline'] * 1000:8.2f} ms {row['ratio']:6.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
