"""Draw the stage growth curves (benchmarks/stage_growth.py) into a small PNG.

    python benchmarks/run.py --json --only stage_growth > growth.json
    python benchmarks/plot_growth.py growth.json [-o docs/images/scale-growth.png]

Reads the ``growth: N no-op items, ...`` rows of a ``--json`` run (one JSON object per
line; other rows are ignored) and draws, against the number of items: time per item,
the kernel's peak memory growth and the result's own size per item, context.sqlite bytes
per item, and the full-skip re-run and read-back times.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "docs" / "images" / "scale-growth.png"
_ROW = re.compile(r"^growth: (?P<n>[\d,]+) no-op items, (?P<what>.*)$")


def read_rows(path: Path) -> dict[str, dict[int, dict]]:
    """metric (the row name after the item count) -> {items: row}."""
    curves: dict[str, dict[int, dict]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        row = json.loads(line)
        m = _ROW.match(row.get("name", ""))
        if m and "skipped" not in row:
            curves.setdefault(m["what"], {})[int(m["n"].replace(",", ""))] = row
    if not curves:
        raise SystemExit(f"{path}: no 'growth: N no-op items, ...' rows (run stage_growth)")
    return curves


def _series(curves, prefix: str, field: str, scale: float = 1.0, per_item: bool = False):
    rows = next((v for k, v in curves.items() if k.startswith(prefix)), {})
    ns = sorted(rows)
    return ns, [rows[n][field] * scale / (n if per_item else 1) for n in ns]


def draw(curves: dict[str, dict[int, dict]], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(12, 2.8), constrained_layout=True)
    ax = axes[0]
    ns, ys = _series(curves, "time per item", "ours", 1e6)
    ax.plot(ns, ys, "o-", label="run_stage")
    ns, ys = _series(curves, "run_stage vs client.map", "baseline", 1e6, per_item=True)
    if ns:
        ax.plot(ns, ys, "s--", label="client.map")
    ax.set_title("time per item (µs)")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax = axes[1]
    ns, ys = _series(curves, "kernel peak RSS", "ours", 1.0, per_item=True)
    ax.plot(ns, ys, "o-", label="kernel peak growth")
    ns, ys = _series(curves, "kernel peak RSS", "baseline", 1.0, per_item=True)
    ax.plot(ns, ys, "s--", label="the result itself")
    ns, ys = _series(curves, "kernel RSS overhead", "ours")
    if ns:
        ax.plot(ns, ys, "^-", label="growth minus the result")
    ax.set_title("memory per item (bytes)")
    ax.legend(fontsize=7)
    ax = axes[2]
    ns, ys = _series(curves, "context.sqlite", "ours")
    ax.plot(ns, ys, "o-")
    ax.set_title("context.sqlite per item (bytes)")
    ax.set_ylim(bottom=0)
    ax = axes[3]
    ns, ys = _series(curves, "full-skip", "ours")
    ax.plot(ns, ys, "o-", label="full-skip re-run")
    ns, ys = _series(curves, "context.results()", "ours")
    ax.plot(ns, ys, "s-", label="context.results()")
    ax.axhline(10, color="grey", lw=0.8, ls=":", label="goal at 10^6: 10 s")
    ax.set_title("seconds")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("no-op items")
        ax.grid(alpha=0.3)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json_file", type=Path, help="output of run.py --json (or '-')")
    parser.add_argument("-o", "--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    print(draw(read_rows(args.json_file), args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
