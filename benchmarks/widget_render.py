"""How long the cluster widget takes to render a model of 10, 100 and 1,000 workers.

    PYTHONPATH=. .venv/bin/python benchmarks/widget_render.py

Measures, per model size (median of repeated runs, in milliseconds):
  json      json.dumps(model): the baseline, what serializing the model alone costs
  html      html_views.cluster_html(model): the escaped static view (header + one table)
  text      html_views.cluster_text(model): the text/plain view
  update    ClusterWidget._show(model): what each periodic refresh costs in the kernel
            (both HTML strings + setting the ipywidgets values, without a frontend)
  bundle    ClusterWidget._repr_mimebundle_(): what displaying the widget costs
and the ratio of each to the json baseline. The worker table is one HTML widget, so the
number of widget objects stays at 12 whatever the number of workers.
"""

from __future__ import annotations

import itertools
import json
import statistics
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipejupyter.models import cluster_model, worker_row
from pipejupyter.notebook import html_views

SIZES = (10, 100, 1000)


def synthetic_model(n: int) -> dict[str, Any]:
    rows = [
        worker_row(
            name=f"slurm-{i}",
            address=f"tcp://10.0.{i // 250}.{i % 250}:40001",
            host=f"node{i:04d}",
            threads=4,
            memory_used=(i % 7 + 1) * 2**28,
            memory_limit=2**33,
            processing=i % 5,
            status="running",
        )
        for i in range(n)
    ]
    return cluster_model(
        id="0123456789ab",
        name="bench",
        backend="slurm",
        profile="slurm",
        status="running",
        scheduler_address="tcp://10.0.0.1:8786",
        dashboard_link="http://10.0.0.1:8787/status",
        worker_info=rows,
        adapt={"minimum": 1, "maximum": n},
        owner={"pid": 1, "host": "h", "kind": "kernel"},
        started=0.0,
    )


class FakeHandle:
    """Just enough of a ClusterHandle for the widget: a fixed model, no cluster behind it."""

    owned = True

    def __init__(self, model: dict[str, Any]) -> None:
        self._model = model
        self.id = model["id"]

    def model(self, timeout: float = 2.0) -> dict[str, Any]:
        return self._model


def median_ms(func, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def measure(n: int) -> dict[str, float]:
    from pipejupyter.notebook.cluster_widget import ClusterWidget

    model = synthetic_model(n)
    repeat = 200 if n <= 100 else 40
    widget = ClusterWidget(FakeHandle(model), live=False)
    # Alternate two models so every update really changes the HTML values.
    other = synthetic_model(n)
    other["worker_info"][0]["memory_used"] += 1
    models = itertools.cycle([model, other])
    try:
        return {
            "json": median_ms(partial(json.dumps, model), repeat),
            "html": median_ms(partial(html_views.cluster_html, model), repeat),
            "text": median_ms(partial(html_views.cluster_text, model), repeat),
            "update": median_ms(lambda: widget._show(next(models)), repeat),
            "bundle": median_ms(widget._repr_mimebundle_, repeat),
            "kib": len(html_views.cluster_html(model)) / 1024,
        }
    finally:
        widget.close()


def bench() -> list[dict]:
    """Rows for benchmarks/run.py: one widget refresh next to json.dumps of the same model."""
    rows = []
    for n in SIZES:
        r = measure(n)
        rows.append(
            {
                "name": f"widget refresh, {n} workers (synthetic model) vs json.dumps(model)",
                "ours": r["update"] / 1000,
                "baseline": r["json"] / 1000,
                "ratio": r["update"] / r["json"],
                "unit": "s",
            }
        )
    return rows


def main() -> None:
    print(
        f"{'workers':>8} {'json ms':>9} {'html ms':>9} {'text ms':>9}"
        f" {'update ms':>10} {'bundle ms':>10}"
        f" {'html/json':>10} {'update/json':>12} {'html KiB':>9}"
    )
    for n in SIZES:
        r = measure(n)
        print(
            f"{n:>8} {r['json']:>9.3f} {r['html']:>9.3f} {r['text']:>9.3f}"
            f" {r['update']:>10.3f} {r['bundle']:>10.3f}"
            f" {r['html'] / r['json']:>10.1f} {r['update'] / r['json']:>12.1f} {r['kib']:>9.1f}"
        )


if __name__ == "__main__":
    main()
