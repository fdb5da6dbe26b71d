"""Where a tiny-items stage spends the time that is not inside items, from its own records.

    PYTHONPATH=. .venv/bin/python benchmarks/stage_timeline.py [--items 20000] [--item-ms 1]

Runs one ``run_stage`` of N sleeping items on a fresh LocalCluster (2 workers x 1 thread),
then reads every item's start and finish times back from ``.pipejupyter/context.sqlite`` and
splits the wall time per worker into: before the first item, inside items, the gaps between
items of one batch (the per-item cost on the worker), the gaps between batches, and after
the last item. This is the profile behind the "vs the time workers spent inside items" rows
of ``stages.py`` and ``stage_growth.py``.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from stage_growth import warm_cluster  # noqa: E402 - the same warmed-up cluster as the growth rows

#: a gap between two items of one worker longer than this is a gap between batches
BATCH_GAP = 0.005


def sleepy(x, seconds):
    time.sleep(seconds)
    return x


def timeline(items: int, item_ms: float) -> dict:
    from pipejupyter import run_stage

    with (
        tempfile.TemporaryDirectory(prefix="pj-timeline-") as tmp,
        warm_cluster(tmp) as client,
    ):
        work = partial(sleepy, seconds=item_ms / 1000)
        began = time.time()
        run_stage("tiny", work, range(items), client=client, progress=None, workdir=tmp)
        ended = time.time()
        with sqlite3.connect(os.path.join(tmp, ".pipejupyter", "context.sqlite")) as db:
            rows = db.execute(
                "SELECT worker, started, finished FROM items WHERE stage = 'tiny'"
            ).fetchall()
    per_worker: dict[str, list[tuple[float, float]]] = {}
    for worker, started, finished in rows:
        per_worker.setdefault(worker, []).append((started, finished))
    workers = {}
    for worker, spans in per_worker.items():
        spans.sort()
        gaps = [spans[i + 1][0] - spans[i][1] for i in range(len(spans) - 1)]
        small = [g for g in gaps if g <= BATCH_GAP]
        large = [g for g in gaps if g > BATCH_GAP]
        workers[worker] = {
            "items": len(spans),
            "before_first": spans[0][0] - began,
            "inside": sum(f - s for s, f in spans),
            "between_items": sum(small),
            "between_items_each": sum(small) / max(1, len(small)),
            "between_batches": sum(large),
            "batch_gaps": len(large),
            "after_last": ended - spans[-1][1],
        }
    return {"wall": ended - began, "workers": workers}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--item-ms", type=float, default=1.0)
    args = parser.parse_args()
    found = timeline(args.items, args.item_ms)
    inside = [w["inside"] for w in found["workers"].values()]
    mean_inside = sum(inside) / len(inside)
    print(
        f"wall {found['wall']:.3f} s, mean time inside items per worker {mean_inside:.3f} s: "
        f"{found['wall'] / mean_inside:.3f}x"
    )
    for worker, w in found["workers"].items():
        print(
            f"{worker}: {w['items']} items; before the first {w['before_first']:.3f} s, "
            f"inside {w['inside']:.3f} s, between items {w['between_items']:.3f} s "
            f"({w['between_items_each'] * 1e6:.1f} µs each), between batches "
            f"{w['between_batches']:.3f} s ({w['batch_gaps']} gaps), after the last "
            f"{w['after_last']:.3f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
