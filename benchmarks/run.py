"""Run the benchmarks side by side with raw Dask and print a table (or JSON lines).

    python benchmarks/run.py [--json] [--only NAME ...]

Each benchmark module in this directory exposes ``bench() -> list[dict]`` with rows
``{name, ours, baseline, ratio, unit}`` (baseline is raw Dask or the compute floor). A
module whose service is not running (SLURM, gateway) returns rows with a ``skipped`` note.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

MODULES = [
    "core",
    "config_load",
    "stages",
    "widget_render",
    "rest_clusters",
    "panel_start",
    "slurm_start",
    "gateway_start",
    "casampi",
    "prefect_runner",
    "stage_growth",
    "many_workers",
    "slurm_jobs",
]


def machine() -> str:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{platform.system()} {platform.machine()}, {cpus} CPUs, {mem:.0f} GiB, "
        f"Python {platform.python_version()}"
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--only", nargs="*", default=None, help="module names to run")
    args = parser.parse_args()
    rows: list[dict] = []
    for name in args.only or MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            rows.append({"name": name, "skipped": f"not available: {exc}"})
            continue
        if not hasattr(module, "bench"):
            rows.append({"name": name, "skipped": "the module has no bench()"})
            continue
        try:
            rows.extend(module.bench())
        except Exception as exc:  # one broken benchmark must not hide the others
            rows.append({"name": name, "skipped": f"{type(exc).__name__}: {exc}"})
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    print(f"machine: {machine()}")
    print(f"{'benchmark':<70} {'ours':>10} {'baseline':>10} {'ratio':>7}")
    for row in rows:
        if "skipped" in row:
            print(f"{row['name']:<70} skipped: {row['skipped']}")
            continue
        unit = row.get("unit", "s")
        print(
            f"{row['name']:<70} {_fmt(row['ours'], unit):>10} "
            f"{_fmt(row['baseline'], unit):>10} {row['ratio']:>7.2f}"
        )
    return 0


def _fmt(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"
    return f"{value:.3g} {unit}"


if __name__ == "__main__":
    sys.exit(main())
