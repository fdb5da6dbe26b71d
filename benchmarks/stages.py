"""Stage throughput next to raw Dask, on one LocalCluster (side by side, same workers).

    PYTHONPATH=. .venv/bin/python benchmarks/stages.py [--workers 2] [--noop 10000] [--sleepy 20000]
                                                      [--item-ms 1] [--unbatched]

1. 10,000 no-op items: run_stage with persistence on and off, next to client.map + gather.
2. 20,000 one-millisecond items (time.sleep): run_stage with automatic batching, next to
   client.map + gather and to the compute floor (items x duration / worker threads).
   The floor is also given for the measured duration of one item (a 1 ms sleep takes a
   little longer than 1 ms).

Each measurement is one run, wall-clock, after a warm-up on the same cluster.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def noop(x):
    return None


def sleepy(x, seconds):
    time.sleep(seconds)
    return x


def _time(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="threads per worker")
    parser.add_argument("--noop", type=int, default=10_000)
    parser.add_argument("--sleepy", type=int, default=20_000)
    parser.add_argument("--item-ms", type=float, default=1.0)
    parser.add_argument(
        "--unbatched", action="store_true", help="also run_stage with batch=1 on the sleepy items"
    )
    return parser.parse_args(argv)


def bench() -> list[dict]:
    """Rows for benchmarks/run.py: ours next to client.map + gather, and next to the floor."""
    args = parse([])
    m, n = measure(args), args.noop
    rows = [
        {
            "name": f"stage: {n:,} no-op items, persisted vs client.map + gather",
            "ours": m["on"],
            "baseline": m["raw"],
        },
        {
            "name": f"stage: {n:,} no-op items, not persisted vs client.map + gather",
            "ours": m["off"],
            "baseline": m["raw"],
        },
        {
            "name": f"stage: {args.sleepy:,} x 1 ms items, auto batching vs client.map + gather",
            "ours": m["stage"],
            "baseline": m["raw2"],
        },
        {
            "name": (
                f"stage: {args.sleepy:,} x 1 ms items vs compute floor (items x 1 ms / threads)"
            ),
            "ours": m["stage"],
            "baseline": m["floor"],
        },
        {
            "name": "stage: ... vs the time workers spent inside items in that run",
            "ours": m["stage"],
            "baseline": m["busy"],
        },
        {
            # A 1 ms time.sleep takes longer than 1 ms on a VM: this is what the same items
            # can cost at best, measured by a bare loop of them on a worker in this run.
            "name": "stage: ... vs a bare time.sleep loop on a worker (items x its cost / threads)",
            "ours": m["stage"],
            "baseline": m["sleep_floor"],
        },
    ]
    return [{**r, "ratio": r["ours"] / r["baseline"], "unit": "s"} for r in rows]


def main() -> None:
    args = parse()
    m = measure(args)
    rows, floor, busy = m["rows"], m["floor"], m["busy"]
    t_on, t_off, t_raw, t_raw2, t_stage = m["on"], m["off"], m["raw"], m["raw2"], m["stage"]
    print(
        f"\nLocalCluster: {args.workers} workers x {args.threads} thread(s), "
        f"{os.cpu_count()} CPUs\n"
    )
    print(f"{'workload':<18} {'how':<48} {'seconds':>8} {'items/s':>10}  ratio")
    for workload, how, t, ratio in rows:
        count = int(workload.split()[0].replace(",", ""))
        print(f"{workload:<18} {how:<48} {t:8.2f} {count / t:10,.0f}  {ratio}")
    print(
        f"\nno-op: run_stage/raw time ratio, "
        f"persistence on {t_on / t_raw:.3f}, off {t_off / t_raw:.3f}"
    )
    print(
        f"{args.item_ms:g} ms items: run_stage {t_stage / floor:.3f}x floor "
        f"({t_stage / busy:.3f}x the recorded item time), "
        f"client.map {t_raw2 / floor:.3f}x floor, "
        f"run_stage {t_raw2 / t_stage:.2f}x faster than client.map"
    )
    print(f"load average during the run: {os.getloadavg()[0]:.2f} (1 min)")


def measure(args: argparse.Namespace) -> dict:
    """Every workload on one LocalCluster; the times in seconds and the printable rows."""
    from functools import partial

    from distributed import Client, LocalCluster

    from pipejupyter import run_stage

    seconds = args.item_ms / 1000
    work = partial(sleepy, seconds=seconds)
    rows: list[tuple[str, str, float, str]] = []
    busy = float("nan")
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalCluster(
            n_workers=args.workers,
            threads_per_worker=args.threads,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            silence_logs=40,
        ) as cluster,
        Client(cluster) as client,
    ):
        threads = args.workers * args.threads
        previous = os.getcwd()
        os.chdir(tmp)
        # warm-up: imports and connections on every worker
        client.gather(client.map(noop, range(200), pure=False))
        run_stage("warmup", noop, range(200), client=client, progress=None, persist=False)

        n = args.noop
        t_raw, _ = _time(lambda: client.gather(client.map(noop, range(n), pure=False)))
        rows.append((f"{n:,} no-op", "client.map + gather", t_raw, "1.00x"))
        t_on, r = _time(
            lambda: run_stage("noop", noop, range(n), client=client, progress=None, workdir=tmp)
        )
        assert len(r) == n and r.ok
        rows.append(
            (f"{n:,} no-op", "run_stage, persistence on", t_on, f"{t_raw / t_on:.1f}x faster")
        )
        t_off, r = _time(
            lambda: run_stage("noop", noop, range(n), client=client, progress=None, persist=False)
        )
        rows.append(
            (f"{n:,} no-op", "run_stage, persistence off", t_off, f"{t_raw / t_off:.1f}x faster")
        )
        t_skip, r = _time(
            lambda: run_stage("noop", noop, range(n), client=client, progress=None, workdir=tmp)
        )
        assert r.stats["skipped"] == n
        rows.append((f"{n:,} no-op", "run_stage re-run (all skipped)", t_skip, ""))

        m = args.sleepy
        floor = m * seconds / threads
        probe = client.submit(_measure_sleep, seconds, pure=False).result()
        real_floor = m * probe / threads
        t_raw2, _ = _time(lambda: client.gather(client.map(work, range(m), pure=False)))
        rows.append(
            (
                f"{m:,} x {args.item_ms:g} ms",
                "client.map + gather",
                t_raw2,
                f"{t_raw2 / floor:.2f}x floor",
            )
        )
        t_stage, r = _time(
            lambda: run_stage("sleepy", work, range(m), client=client, progress=None, workdir=tmp)
        )
        assert len(r) == m and r.ok and r[-1] == m - 1
        rows.append(
            (
                f"{m:,} x {args.item_ms:g} ms",
                "run_stage, auto batching, persisted",
                t_stage,
                f"{t_stage / floor:.2f}x floor",
            )
        )
        if args.unbatched:
            t_one, r = _time(
                lambda: run_stage(
                    "sleepy1", work, range(m), client=client, progress=None, batch=1, persist=False
                )
            )
            rows.append(
                (
                    f"{m:,} x {args.item_ms:g} ms",
                    "run_stage, batch=1 (no batching)",
                    t_one,
                    f"{t_one / floor:.2f}x floor",
                )
            )
        rows.append(
            (
                f"{m:,} x {args.item_ms:g} ms",
                f"compute floor ({m:,} x {args.item_ms:g} ms / {threads} threads)",
                floor,
                "1.00x floor",
            )
        )
        rows.append(
            (
                f"{m:,} x {args.item_ms:g} ms",
                f"floor at measured item time ({probe * 1000:.3f} ms)",
                real_floor,
                f"{real_floor / floor:.2f}x floor",
            )
        )
        # What the workers really spent inside items during the run_stage run (from the context).
        from pipejupyter.stages import context

        busy = (
            sum(r["finished"] - r["started"] for r in context.items("sleepy", workdir=tmp))
            / threads
        )
        rows.append(
            (
                f"{m:,} x {args.item_ms:g} ms",
                "floor from item times recorded in that run",
                busy,
                f"{busy / floor:.2f}x floor",
            )
        )
        os.chdir(previous)  # leave the temporary directory before it goes
    return {
        "rows": rows,
        "raw": t_raw,
        "on": t_on,
        "off": t_off,
        "raw2": t_raw2,
        "stage": t_stage,
        "floor": floor,
        "busy": busy,
        "sleep_floor": real_floor,
    }


def _measure_sleep(seconds: float, n: int = 500) -> float:
    start = time.perf_counter()
    for _ in range(n):
        time.sleep(seconds)
    return (time.perf_counter() - start) / n


if __name__ == "__main__":
    main()
