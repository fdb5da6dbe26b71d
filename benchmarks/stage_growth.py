"""How the cost of run_stage grows with the number of items (10^4, 10^5, 10^6).

    python benchmarks/stage_growth.py [--full] [--sizes 10000 100000] [--json]

Each size runs in a fresh Python process (the "kernel": its peak RSS is that run's alone)
with its own LocalCluster of 2 one-thread worker processes and its own working directory:

- run_stage over N no-op items, persisted: time per item, the kernel's peak RSS above what
  it held before the run, and how much of that the result itself holds (values and keys);
- ``.pipejupyter/context.sqlite`` (with its WAL) bytes per item;
- the re-run that skips every item, and ``context.results()`` reading them back;
- raw ``client.map`` + ``gather`` over the same items, where it finishes in reasonable time
  (up to 10^5 with --full, 10^4 by default: one Dask task per item costs the scheduler
  ~1 ms on this kind of machine, 10^6 would take a quarter of an hour);
- with ``--full``: also 10^6 no-op items and 10^5 x 1 ms items (a 50 s compute floor on
  2 threads) next to client.map and the floor. ``PIPEJUPYTER_BENCH_FULL=1`` does the same
  through benchmarks/run.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

DEFAULT_SIZES = (10_000, 100_000)
FULL_SIZES = (10_000, 100_000, 1_000_000)
SLEEPY_FULL = 100_000
RAW_LIMIT = 10_000
RAW_LIMIT_FULL = 100_000


def noop(x):
    return None


def sleepy(x, seconds=0.001):
    time.sleep(seconds)
    return x


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _reset_peak() -> bool:
    """Start the kernel's peak-RSS mark (VmHWM) from the current RSS. Without this the peak
    is the process's high-water mark since it started: a spike while the cluster starts (or
    a heavy import from the environment) would be counted as the stage's."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


@contextlib.contextmanager
def warm_cluster(workdir: str) -> Iterator[Any]:
    """The Client of a LocalCluster of 2 one-thread worker processes, warmed up: imports and
    connections done on every worker, and one small stage run (and stored in ``workdir``)."""
    from distributed import Client, LocalCluster

    from pipejupyter import run_stage

    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            silence_logs=40,
        ) as cluster,
        Client(cluster) as client,
    ):
        client.gather(client.map(noop, range(200), pure=False))
        run_stage("warmup", noop, range(200), client=client, progress=None, workdir=workdir)
        yield client


def child(n: int, kind: str, raw: bool) -> dict:
    """One size in this process: every measurement, as a dict (printed as JSON)."""
    from pipejupyter import run_stage
    from pipejupyter.stages import context

    work = noop if kind == "noop" else sleepy
    out: dict = {"n": n, "kind": kind}
    with (
        tempfile.TemporaryDirectory(prefix="pj-growth-") as tmp,
        warm_cluster(tmp) as client,
    ):
        items = range(n)
        _reset_peak()
        before = _rss()
        t = time.perf_counter()
        result = run_stage(kind, work, items, client=client, progress=None, workdir=tmp)
        out["run"] = time.perf_counter() - t
        out["peak_growth"] = max(0, _peak() - before)
        assert len(result) == n and result.ok
        # What the result itself holds: its list of values, its keys and the key strings.
        out["result_bytes"] = (
            sys.getsizeof(list(result))
            + sys.getsizeof(result.keys)
            + sum(sys.getsizeof(k) for k in result.keys)
        )
        del result
        db = Path(tmp, ".pipejupyter", "context.sqlite")
        out["db_bytes"] = sum(
            p.stat().st_size for p in db.parent.glob("context.sqlite*") if p.is_file()
        )
        t = time.perf_counter()
        again = run_stage(kind, work, items, client=client, progress=None, workdir=tmp)
        out["skip"] = time.perf_counter() - t
        assert again.stats["skipped"] == n
        del again
        t = time.perf_counter()
        back = context.results(kind, workdir=tmp)
        out["read"] = time.perf_counter() - t
        assert len(back) == n and back.ok
        del back
        if kind == "sleepy":
            records = context.items(kind, workdir=tmp)
            out["busy"] = sum(r["finished"] - r["started"] for r in records)
        if raw:
            t = time.perf_counter()
            client.gather(client.map(work, items, pure=False))
            out["raw"] = time.perf_counter() - t
    return out


def measure(sizes: tuple[int, ...], sleepy_n: int | None, raw_limit: int) -> list[dict]:
    runs = [(n, "noop") for n in sizes] + ([(sleepy_n, "sleepy")] if sleepy_n else [])
    found = []
    for n, kind in runs:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", str(n), kind]
            + (["--raw"] if n <= raw_limit else []),
            capture_output=True,
            text=True,
            timeout=3600,
            env={**os.environ, "PYTHONPATH": str(HERE.parent)},
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{n} {kind} items: {proc.stderr.strip()[-2000:]}")
        found.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return found


def rows_from(found: list[dict]) -> list[dict]:
    rows: list[dict] = []
    noops = [f for f in found if f["kind"] == "noop"]
    first = noops[0] if noops else None
    for f in found:
        n, what = f["n"], ("no-op" if f["kind"] == "noop" else "x 1 ms")
        per_item = f["run"] / n
        label = f"growth: {n:,} {what} items"
        if f["kind"] == "noop" and first is not None:
            rows.append(
                {
                    "name": f"{label}, time per item vs {first['n']:,} no-op items",
                    "ours": per_item,
                    "baseline": first["run"] / first["n"],
                    "unit": "s/item",
                }
            )
        if "raw" in f:
            rows.append(
                {
                    "name": f"{label}, run_stage vs client.map + gather",
                    "ours": f["run"],
                    "baseline": f["raw"],
                    "unit": "s",
                }
            )
        if "busy" in f:
            rows.append(
                {
                    "name": f"{label}, run_stage vs time inside items / 2 threads",
                    "ours": f["run"],
                    "baseline": f["busy"] / 2,
                    "unit": "s",
                }
            )
            rows.append(
                {
                    "name": f"{label}, run_stage vs floor (items x 1 ms / 2 threads)",
                    "ours": f["run"],
                    "baseline": n * 0.001 / 2,
                    "unit": "s",
                }
            )
        if f["kind"] == "noop" and first is not None:
            # O(batch) means this stays flat as N grows: what the run holds beyond its result.
            rows.append(
                {
                    "name": f"{label}, kernel RSS overhead per item (peak growth minus the"
                    f" result) vs {first['n']:,} no-op items",
                    "ours": max(0, f["peak_growth"] - f["result_bytes"]) / n,
                    "baseline": max(1, first["peak_growth"] - first["result_bytes"]) / first["n"],
                    "unit": "B/item",
                }
            )
        rows += [
            {
                "name": f"{label}, kernel peak RSS growth vs the result's own size",
                "ours": f["peak_growth"],
                "baseline": f["result_bytes"],
                "unit": "B",
            },
            {
                "name": f"{label}, context.sqlite bytes per item (baseline: 100 B)",
                "ours": f["db_bytes"] / n,
                "baseline": 100.0,
                "unit": "B/item",
            },
            {
                "name": f"{label}, full-skip re-run vs goal 10 s per 10^6 items",
                "ours": f["skip"],
                "baseline": 10.0 * n / 1_000_000,
                "unit": "s",
            },
            {
                "name": f"{label}, context.results() read-back vs the first run",
                "ours": f["read"],
                "baseline": f["run"],
                "unit": "s",
            },
        ]
    out = []
    for r in rows:
        r["ratio"] = r["ours"] / r["baseline"] if r["baseline"] else float("nan")
        out.append(r)
    return out


def full_run() -> bool:
    return os.environ.get("PIPEJUPYTER_BENCH_FULL", "") not in ("", "0")


def bench(full: bool | None = None) -> list[dict]:
    full = full_run() if full is None else full
    found = measure(
        FULL_SIZES if full else DEFAULT_SIZES,
        SLEEPY_FULL if full else None,
        RAW_LIMIT_FULL if full else RAW_LIMIT,
    )
    return rows_from(found)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="10^6 no-op and 10^5 x 1 ms items")
    parser.add_argument("--sizes", type=int, nargs="*", default=None)
    parser.add_argument("--sleepy", type=int, default=None, help="also N x 1 ms items")
    parser.add_argument("--json", action="store_true", help="one row per line, as run.py --json")
    parser.add_argument("--child", nargs=2, metavar=("N", "KIND"), help=argparse.SUPPRESS)
    parser.add_argument("--raw", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(int(args.child[0]), args.child[1], args.raw)))
        return 0
    full = args.full or full_run()
    sizes = tuple(args.sizes or (FULL_SIZES if full else DEFAULT_SIZES))
    sleepy_n = args.sleepy or (SLEEPY_FULL if full else None)
    found = measure(sizes, sleepy_n, RAW_LIMIT_FULL if full else RAW_LIMIT)
    if args.json:  # the rows of benchmarks/run.py --json (plot_growth.py reads them)
        for r in rows_from(found):
            print(json.dumps(r))
        return 0
    for f in found:
        print(json.dumps(f))
    for r in rows_from(found):
        print(f"{r['name']:<90} {r['ours']:>12.4g} {r['baseline']:>12.4g} {r['ratio']:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
