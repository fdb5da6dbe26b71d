"""Run the benchmarks side by side with raw Dask and print a table (or JSON lines).

    python benchmarks/run.py [--json | --markdown] [--only NAME ...]
    python benchmarks/run.py --markdown --from run.json   # render a saved --json run

Each benchmark module in this directory exposes ``bench() -> list[dict]`` with rows
``{name, ours, baseline, ratio, unit}`` (baseline is raw Dask or the compute floor). A
module whose service is not running (SLURM, gateway) returns rows with a ``skipped`` note.
``--json`` starts with one ``{"machine": ..., "date": ...}`` line so a saved run names the
machine it ran on; ``--markdown`` prints the README's table from a run (or a saved one), so
the README is refreshed from one run, never assembled by hand.
"""

from __future__ import annotations

import argparse
import datetime
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
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="one JSON object per line")
    output.add_argument("--markdown", action="store_true", help="the README's table")
    parser.add_argument("--only", nargs="*", default=None, help="module names to run")
    parser.add_argument(
        "--from", dest="saved", default=None, help="render a saved --json run instead of running"
    )
    args = parser.parse_args()
    if args.saved:
        header, rows = read_saved(Path(args.saved))
    else:
        header = {"machine": machine(), "date": datetime.date.today().isoformat()}
        rows = run_modules(args.only or MODULES)
    if args.json:
        print(json.dumps(header))
        for row in rows:
            print(json.dumps(row))
    elif args.markdown:
        print(markdown(header, rows))
    else:
        print(text_table(header, rows))
    return 0


def run_modules(names: list[str]) -> list[dict]:
    rows: list[dict] = []
    for name in names:
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
    return rows


def read_saved(path: Path) -> tuple[dict, list[dict]]:
    """The header and rows of a saved ``--json`` run (lines that are not JSON are skipped,
    so a run's output with stray prints still renders)."""
    header: dict = {"machine": "unknown machine", "date": "unknown date"}
    rows: list[dict] = []
    for line in path.read_text().splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if not isinstance(obj, dict):
            continue
        if "machine" in obj and "name" not in obj:
            header = obj
        elif "name" in obj:
            rows.append(obj)
    return header, rows


def text_table(header: dict, rows: list[dict]) -> str:
    lines = [f"machine: {header['machine']}"]
    lines.append(f"{'benchmark':<70} {'ours':>10} {'baseline':>10} {'ratio':>7}")
    for row in rows:
        if "skipped" in row:
            lines.append(f"{row['name']:<70} skipped: {row['skipped']}")
            continue
        unit = row.get("unit", "s")
        lines.append(
            f"{row['name']:<70} {_fmt(row['ours'], unit):>10} "
            f"{_fmt(row['baseline'], unit):>10} {row['ratio']:>7.2f}"
        )
    return "\n".join(lines)


def markdown(header: dict, rows: list[dict]) -> str:
    lines = [
        f"One run, {header['date']}, on {header['machine']}.",
        "",
        "| benchmark (ours vs baseline) | ours | baseline | ratio |",
        "|---|---:|---:|---:|",
    ]
    for row in rows:
        name = row["name"].replace("|", "\\|")
        if "skipped" in row:
            lines.append(f"| {name} | skipped: {row['skipped']} | | |")
            continue
        unit = row.get("unit", "s")
        lines.append(
            f"| {name} | {_fmt(row['ours'], unit)} | {_fmt(row['baseline'], unit)} "
            f"| {row['ratio']:.2f} |"
        )
    return "\n".join(lines)


def _fmt(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"
    if unit == "s/item":
        return f"{value * 1e6:.1f} µs/item"
    if unit == "B" and value >= 2**20:
        return f"{value / 2**20:.1f} MiB"
    if unit == "B" and value >= 2**10:
        return f"{value / 2**10:.0f} KiB"
    return f"{value:.3g} {unit}"


if __name__ == "__main__":
    sys.exit(main())
