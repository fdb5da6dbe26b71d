"""The "Pipeline clusters" sidebar in a real JupyterLab, in Debian's Chromium.

One walk through what a user does: open the panel, start the local profile with 2
workers (Start, then Apply in its options dialog), scale it to 3, see a cluster that a
notebook kernel started with ``%pipecluster start`` appear next to it (and be refused when
stopped from the panel), stop both. Screenshots go to test-artifacts/;
PIPEJUPYTER_UPDATE_SCREENSHOTS=1 also refreshes docs/images/panel.png (the README's picture).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.support.common import ROOT, require
from tests.support.lab import (
    CHROMIUM,
    LabServer,
    chromium_page,
    labextension_problem,
    notebook,
    open_lab,
    open_panel,
)

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("isolated", "no_leaks")]

ARTIFACTS = ROOT / "test-artifacts"
README_IMAGE = ROOT / "docs" / "images" / "panel.png"
NOTEBOOK = "panel-demo.ipynb"


@pytest.fixture
def lab(tmp_path):
    require(os.access(CHROMIUM, os.X_OK), f"Chromium at {CHROMIUM} (ci/system.sh install)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        require(False, "Python Playwright (pip install playwright)")
    problem = labextension_problem()
    require(problem is None, problem or "")
    server = LabServer(tmp_path / "lab")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _run_next_cell(page) -> None:
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-cell-and-select-next')")


def test_panel_start_scale_kernel_cluster_stop(lab):
    from playwright.sync_api import expect

    expect.set_options(timeout=30_000)  # a loaded 2-core CI machine is slow to repaint
    status, _ = lab.request(
        "PUT",
        f"api/contents/{NOTEBOOK}",
        notebook(
            [
                "%load_ext pipejupyter\n%pipecluster start local -n 1 --name from-notebook",
                "%pipecluster stop from-notebook",
            ]
        ),
    )
    assert status == 201
    ARTIFACTS.mkdir(exist_ok=True)
    timings: dict[str, float] = {}

    with chromium_page() as page:
        try:
            open_lab(page, lab, NOTEBOOK)
            panel = open_panel(page)
            expect(panel.locator(".pj-empty")).to_have_text("No clusters.")

            # Start the local profile with 2 workers from the panel: Start opens the options
            # dialog with the card's count in it, Apply starts.
            row = panel.locator('li.pj-profile[data-profile="local"]')
            row.locator('input[data-field="workers"]').fill("2")
            t0 = time.monotonic()
            row.locator('button[data-action="start"]').click()
            dialog = page.locator(".jp-Dialog.pj-options-dialog")
            expect(dialog.locator('input[data-field="workers"]')).to_have_value("2")
            dialog.locator("button.jp-mod-accept").click()
            card = panel.locator('li.pj-cluster[data-workers="2"]')
            card.wait_for(timeout=120_000)
            timings["start_click_to_2_workers_s"] = time.monotonic() - t0
            cid = card.get_attribute("data-cluster-id")
            card = panel.locator(f'li.pj-cluster[data-cluster-id="{cid}"]')
            expect(card.locator(".pj-cluster-workers")).to_have_text("2 workers")
            expect(card).to_have_attribute("data-status", "running")
            (server_cluster,) = lab.clusters()
            assert server_cluster["id"] == cid
            assert server_cluster["owner"]["kind"] == "server"

            # Scale to 3.
            card.locator('input[data-field="scale"]').fill("3")
            t0 = time.monotonic()
            card.locator('button[data-action="scale"]').click()
            expect(card).to_have_attribute("data-workers", "3", timeout=60_000)
            timings["scale_click_to_3_workers_s"] = time.monotonic() - t0
            expect(card.locator(".pj-cluster-workers")).to_have_text("3 workers")

            # A cluster started by %pipecluster in the notebook's kernel shows up, live.
            t0 = time.monotonic()
            _run_next_cell(page)
            kernel_card = panel.locator(f'li.pj-cluster:not([data-cluster-id="{cid}"])')
            expect(kernel_card).to_have_attribute("data-workers", "1", timeout=120_000)
            timings["kernel_start_to_card_s"] = time.monotonic() - t0
            expect(kernel_card.locator(".pj-cluster-name")).to_have_text("from-notebook")
            by_id = {c["id"]: c for c in lab.clusters()}
            kernel_id = kernel_card.get_attribute("data-cluster-id")
            assert by_id[kernel_id]["owner"]["kind"] == "kernel"
            assert by_id[cid]["workers"] == 3

            page.mouse.move(640, 700)  # no hover highlight in the picture
            page.screenshot(path=str(ARTIFACTS / "panel.png"))
            if os.environ.get("PIPEJUPYTER_UPDATE_SCREENSHOTS") or not README_IMAGE.exists():
                README_IMAGE.parent.mkdir(parents=True, exist_ok=True)
                README_IMAGE.write_bytes((ARTIFACTS / "panel.png").read_bytes())

            # The panel cannot stop a kernel's cluster: it says who owns it.
            kernel_card.locator('button[data-action="stop"]').click()
            error = panel.locator(".pj-error")
            expect(error).to_be_visible(timeout=30_000)
            expect(error).to_contain_text("409")
            expect(error).to_contain_text("belongs to kernel")
            expect(error).to_contain_text("of this server")  # the server named its own kernel
            assert any(c["id"] == kernel_id for c in lab.clusters())

            # Stop the panel's own cluster: its card goes away, the cluster is gone.
            card.locator('button[data-action="stop"]').click()
            expect(card).to_have_count(0, timeout=60_000)
            assert cid not in {c["id"] for c in lab.clusters()}

            # The kernel stops its cluster: that card goes away too.
            _run_next_cell(page)
            expect(panel.locator("li.pj-cluster")).to_have_count(0, timeout=60_000)
            expect(panel.locator(".pj-empty")).to_be_visible()
            assert lab.clusters() == []
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "panel-failure.png"))
            (ARTIFACTS / "jupyter-lab.log").write_text(lab.log_tail(100_000))
            raise
        finally:
            (ARTIFACTS / "browser-timings.json").write_text(json.dumps(timings, indent=2))
    assert not list(Path(lab.runtime).glob("cluster-*.json"))
