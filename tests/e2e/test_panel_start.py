"""The sidebar shows a cluster it started from the POST's own answer, in a real JupyterLab and
Debian's Chromium.

The POST /pipejupyter/clusters answer is the cluster's model read from its scheduler once the
workers are up, so the card can show the workers without waiting for the next GET. Here every
GET /pipejupyter/clusters fails after Apply is clicked: the card with its 2 workers must show
all the same (before, it waited for a GET), and it is still there once the GETs answer again.
"""

from __future__ import annotations

import os

import pytest

from tests.support.common import require, wait_until
from tests.support.lab import (
    CHROMIUM,
    LabServer,
    chromium_page,
    labextension_problem,
    open_lab,
    open_panel,
)

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("no_leaks")]

CLUSTERS = "**/pipejupyter/clusters?*"
CLUSTERS_PLAIN = "**/pipejupyter/clusters"


@pytest.fixture
def lab(tmp_path):
    require(os.access(CHROMIUM, os.X_OK), f"Chromium at {CHROMIUM} (ci/system.sh install)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        require(False, "Python Playwright (pip install playwright)")
    problem = labextension_problem()
    require(problem is None, problem or "")
    with LabServer(tmp_path / "lab") as server:
        yield server


def test_the_card_shows_the_started_workers_from_the_posts_answer(lab):
    failed_gets: list[str] = []

    def refuse_listing(route) -> None:
        if route.request.method == "GET":
            failed_gets.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    with chromium_page() as page:
        open_lab(page, lab)
        panel = open_panel(page)
        row = panel.locator('li.pj-profile[data-profile="local"]')
        row.locator('input[data-field="workers"]').fill("2")
        row.locator('button[data-action="start"]').click()
        apply = page.locator(".jp-Dialog.pj-options-dialog button.jp-mod-accept")
        apply.wait_for()
        for pattern in (CLUSTERS, CLUSTERS_PLAIN):
            page.route(pattern, refuse_listing)
        apply.click()
        card = panel.locator('li.pj-cluster[data-workers="2"]')
        try:
            card.wait_for(timeout=120_000)
            # The POST's answer put it there: the listing has failed since Apply.
            assert wait_until(lambda: failed_gets, timeout=30), "no GET of the listing after Apply"
            (cluster,) = lab.clusters()
            assert cluster["workers"] == 2
            assert card.get_attribute("data-cluster-id") == cluster["id"]
            for pattern in (CLUSTERS, CLUSTERS_PLAIN):
                page.unroute(pattern)
            page.locator("#pipejupyter-sidebar .pj-button-refresh").click()
            assert wait_until(lambda: panel.locator(".pj-error").is_hidden(), timeout=30), (
                "the listing did not come back"
            )
            assert panel.locator('li.pj-cluster[data-workers="2"]').count() == 1
        finally:
            for cluster in lab.clusters():
                lab.request("DELETE", f"pipejupyter/clusters/{cluster['id']}")
