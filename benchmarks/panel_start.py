"""The sidebar panel: time from clicking Start (local profile, 2 workers) to "2 workers"
on the card, next to the REST call alone and to raw Dask.

    python benchmarks/panel_start.py [--repeat N] [--json]

A real `jupyter lab` (isolated directories, the installed lab extension) in Debian's
Chromium driven by Playwright. Needs /usr/bin/chromium and the installed extension.

The panel's time is taken in the page (TIMING: the click events' own time stamps, a
MutationObserver for the card, the POST timed around ``fetch``): what the panel makes the
user wait for, from the Start click until the dialog's Apply is enabled, plus from the Apply
click until the card shows 2 workers. Not in it: the pause between the two clicks (a user
reading the form; here Playwright's actionability checks of the Apply button). The wall time
Playwright sees (both clicks with their checks, the card looked for at every frame) is a row
of its own.
The baseline is the same click's POST, as the page saw it; a POST from a script is a row too.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tests.support.lab import LabServer, chromium_page, labextension_problem, open_lab, open_panel  # noqa: E402

#: runs in the page before JupyterLab: times the clicks, the dialog, the POST and the card
TIMING = """
window.__pj = {};
const realFetch = window.fetch;
window.fetch = function (input, init) {
  const method = (init && init.method) || (input && input.method) || 'GET';
  const url = String((input && input.url) || input);
  const timed = method === 'POST' && url.includes('/pipejupyter/clusters');
  if (timed) { window.__pj.postStart = performance.now(); }
  const answer = realFetch.apply(this, arguments);
  if (timed) { answer.then(() => { window.__pj.postEnd = performance.now(); }); }
  return answer;
};
document.addEventListener('click', event => {
  const button = event.target.closest && event.target.closest('button');
  if (!button) { return; }
  if (button.matches('li.pj-profile button[data-action="start"]')) {
    window.__pj.start = event.timeStamp;
  } else if (button.matches('.pj-options-dialog button.jp-mod-accept')) {
    window.__pj.apply = event.timeStamp;
  }
}, true);
const look = () => {
  const pj = window.__pj;
  const apply = document.querySelector('.pj-options-dialog button.jp-mod-accept');
  if (pj.start !== undefined && pj.ready === undefined && apply && !apply.disabled) {
    pj.ready = performance.now();
  }
  if (pj.apply !== undefined && pj.card === undefined &&
      document.querySelector('li.pj-cluster[data-workers="2"]')) {
    pj.card = performance.now();
  }
};
new MutationObserver(look).observe(document, {
  subtree: true, childList: true, attributes: true, attributeFilter: ['disabled', 'data-workers']
});
"""

RAW_DASK = """
import time
from distributed import Client, LocalCluster
t = time.perf_counter()
cluster = LocalCluster(
    n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0",
    silence_logs=40,
)
client = Client(cluster, set_as_default=False)
client.wait_for_workers(2)
print(time.perf_counter() - t)
client.close(); cluster.close()
"""


def _raw_dask() -> float:
    out = subprocess.run(
        [sys.executable, "-c", RAW_DASK], capture_output=True, text=True, check=True, timeout=300
    )
    return float(out.stdout.strip().splitlines()[-1])


def bench(repeat: int = 3) -> list[dict]:
    problem = labextension_problem()
    if problem or not Path("/usr/bin/chromium").exists():
        return [{"name": "panel start", "skipped": problem or "no /usr/bin/chromium"}]
    clicks, waits, page_posts, posts, raws = [], [], [], [], []
    with tempfile.TemporaryDirectory(prefix="pj-panel-bench-") as tmp:
        with LabServer(Path(tmp)) as server, chromium_page() as page:
            page.add_init_script(TIMING)
            open_lab(page, server)
            panel = open_panel(page)
            row = panel.locator('li.pj-profile[data-profile="local"]')
            row.locator('input[data-field="workers"]').fill("2")
            for _ in range(repeat):
                page.evaluate("window.__pj = {}")
                t = time.perf_counter()
                row.locator('button[data-action="start"]').click()
                # Start opens the options dialog (prefilled); Apply waits until it is enabled.
                page.locator(".jp-Dialog.pj-options-dialog button.jp-mod-accept").click()
                # Looked for at every frame (a locator's wait looks up to 500 ms apart).
                page.wait_for_function(
                    "!!document.querySelector('li.pj-cluster[data-workers=\"2\"]')",
                    polling="raf",
                    timeout=120_000,
                )
                clicks.append(time.perf_counter() - t)
                pj = page.evaluate("window.__pj")
                waits.append(((pj["ready"] - pj["start"]) + (pj["card"] - pj["apply"])) / 1000)
                page_posts.append((pj["postEnd"] - pj["postStart"]) / 1000)
                (cluster,) = server.clusters()
                assert server.request("DELETE", f"pipejupyter/clusters/{cluster['id']}")[0] == 204
                panel.locator("li.pj-cluster").wait_for(state="detached", timeout=60_000)

                t = time.perf_counter()
                status, model = server.request(
                    "POST", "pipejupyter/clusters", {"profile": "local", "workers": 2}
                )
                posts.append(time.perf_counter() - t)
                assert status == 201 and model["workers"] == 2, model
                assert server.request("DELETE", f"pipejupyter/clusters/{model['id']}")[0] == 204
                panel.locator("li.pj-cluster").wait_for(state="detached", timeout=60_000)

                raws.append(_raw_dask())
    click, post, raw = statistics.median(clicks), statistics.median(posts), statistics.median(raws)
    ratios = [w / p for w, p in zip(waits, page_posts, strict=True)]
    ratio = statistics.median(ratios)
    wait, page_post = statistics.median(waits), statistics.median(page_posts)
    return [
        {
            "name": "panel: Start -> Apply enabled, Apply -> card shows 2 workers (in the page)"
            " vs the same click's POST",
            "ours": wait,
            "baseline": page_post,
            "ratio": ratio,  # the median of the clicks' ratios (each next to its own POST)
            "unit": "s",
        },
        {
            "name": "  the same clicks' wall time in Playwright (its click checks too) vs a POST"
            " from a script",
            "ours": click,
            "baseline": post,
            "ratio": click / post,
            "unit": "s",
        },
        {
            "name": (
                "POST /pipejupyter/clusters (2 workers) vs LocalCluster(n_workers=2) in a script"
            ),
            "ours": post,
            "baseline": raw,
            "ratio": post / raw,
            "unit": "s",
        },
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = bench(args.repeat)
    for row in rows:
        if args.json:
            print(json.dumps(row))
        elif "skipped" in row:
            print(f"{row['name']}: skipped: {row['skipped']}")
        else:
            print(
                f"{row['name']:<84} {row['ours']:.2f} s  "
                f"{row['baseline']:.2f} s  x{row['ratio']:.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
