"""Screenshot the live cluster widget in a real JupyterLab, for the README.

Starts `jupyter lab` in a temporary directory (tests/support/lab.py: its own HOME,
config, runtime dirs, loopback, a random token), opens a notebook in Debian's Chromium,
runs ``%load_ext pipejupyter`` / ``c = %pipecluster start -n 2`` / ``%pipecluster``, waits
until the widget shows 2 workers, saves both cells to docs/images/widget.png, stops the
cluster from the notebook and shuts everything down. Exits non-zero if any process it
started is still alive at the end (those are killed by pid, and listed).

    cd /work/main && PYTHONPATH=. .venv/bin/python scripts/screenshot_widget.py [--out PATH]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.lab import (  # noqa: E402
    CHROMIUM,
    LabServer,
    chromium_page,
    labextension_problem,
    notebook,
    open_lab,
)

NOTEBOOK = "widget-demo.ipynb"
CELLS = [
    "%load_ext pipejupyter\nc = %pipecluster start -n 2",
    "%pipecluster",
    "%pipecluster stop",
]
# The widget's header line: "2 workers, 2 threads, memory ... / ..., 0 tasks processing".
WIDGET_TWO_WORKERS = ".jp-OutputArea-output .widget-html-content:has-text('2 workers,')"


def run_cell(page) -> None:
    # Not awaited: the command's promise settles only when the cell has run; the caller
    # waits for what the cell shows instead (with a timeout).
    page.evaluate("void window.jupyterapp.commands.execute('notebook:run-cell-and-select-next')")


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def take(lab: LabServer, out: Path) -> None:
    status, body = lab.request("PUT", f"api/contents/{NOTEBOOK}", notebook(CELLS))
    if status != 201:
        raise RuntimeError(f"could not create the notebook: {status} {body}")
    with chromium_page(viewport=(1400, 800)) as page:
        try:
            _drive(page, lab, out)
        except Exception:
            failure = out.with_name(out.stem + "-failure.png")
            page.screenshot(path=str(failure))
            print(f"failed; the page is in {failure}", file=sys.stderr)
            raise
    # Shut the kernel down through the server, as closing the notebook would.
    _, sessions = lab.request("GET", "api/sessions")
    for session in sessions or []:
        lab.request("DELETE", f"api/sessions/{session['id']}")


def step(text: str) -> None:
    print(text, flush=True)


def _drive(page, lab: LabServer, out: Path) -> None:
    step("opening the notebook")
    open_lab(page, lab, NOTEBOOK)
    cells = page.locator(".jp-Notebook .jp-Cell")
    cells.first.wait_for(timeout=60_000)
    # Wait for the kernel before running cells.
    page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for(timeout=120_000)
    page.evaluate("window.jupyterapp.commands.execute('application:toggle-left-area')")
    cells.first.click()
    step("running: %load_ext pipejupyter; c = %pipecluster start -n 2")
    run_cell(page)
    cells.nth(0).locator(".jp-InputPrompt:has-text('[1]')").wait_for(timeout=180_000)
    step("running: %pipecluster")
    run_cell(page)
    widget = cells.nth(1)
    widget.locator(WIDGET_TWO_WORKERS).wait_for(timeout=120_000)
    widget.locator("table tbody tr").nth(1).wait_for(timeout=60_000)
    time.sleep(2)  # one more refresh, so the memory numbers are live ones
    page.mouse.move(5, 5)  # no hover highlight in the picture
    out.parent.mkdir(parents=True, exist_ok=True)
    # The two cells: the start line and the widget under %pipecluster.
    top, bottom = cells.nth(0).bounding_box(), widget.bounding_box()
    clip = {
        "x": top["x"],
        "y": top["y"],
        "width": max(top["width"], bottom["width"]),
        "height": bottom["y"] + bottom["height"] - top["y"] - 2,
    }
    page.screenshot(path=str(out), clip=clip)
    step(f"saved {out}")
    step("running: %pipecluster stop")
    run_cell(page)
    widget.locator(".widget-html-content:has-text('stopped')").first.wait_for(timeout=60_000)
    cells.nth(2).locator(".jp-InputPrompt:has-text('[3]')").wait_for(timeout=60_000)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "widget.png")
    args = parser.parse_args()
    problem = labextension_problem()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    if not Path(CHROMIUM).exists():
        print(f"no Chromium at {CHROMIUM}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="pj-widget-shot-") as tmp:
        lab = LabServer(Path(tmp) / "lab")
        lab.start()
        seen: dict[int, psutil.Process] = {}
        try:
            try:
                take(lab, args.out)
            finally:
                assert lab.proc is not None
                seen.update({p.pid: p for p in descendants(lab.proc.pid)})
        except Exception:
            print(lab.log_tail(), file=sys.stderr)
            raise
        finally:
            lab.stop()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and any(alive(p) for p in seen.values()):
                time.sleep(0.5)
            left = [p for p in seen.values() if alive(p)]
            for p in left:
                print(f"left running, killing pid {p.pid}", file=sys.stderr)
                p.kill()
            leftover_files = sorted(lab.runtime.glob("cluster-*.json"))
    if left or leftover_files:
        print(
            f"not clean: {len(left)} processes, discovery files {leftover_files}", file=sys.stderr
        )
        return 1
    print("clean: no process, kernel or cluster left")
    return 0


if __name__ == "__main__":
    sys.exit(main())
