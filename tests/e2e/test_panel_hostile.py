"""The sidebar with hostile cluster models, in a real JupyterLab and Debian's Chromium.

A discovery record is input: its id may carry a newline and a Python statement, its
dashboard link may be ``javascript:``. "Insert connect code" must never put more than one
safe ``%pipecluster connect ID`` line into a cell (or refuse with a message), and
"Dashboard" must never hand a non-http(s) URL to ``window.open`` (the user sees a message).

Two routes to the panel: records written into the runtime dir of a real lab (whatever the
server does with them, the panel stays safe), and the same hostile models injected into the
answers of ``GET /pipejupyter/clusters`` in the browser, so the panel's own guards are
exercised even when the server already drops such records.
"""

from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path
from typing import Any

import pytest

from tests.support.common import ROOT, require
from tests.support.lab import (
    CHROMIUM,
    LabServer,
    chromium_page,
    free_port,
    labextension_problem,
    notebook,
    open_lab,
)

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("no_leaks")]

ARTIFACTS = ROOT / "test-artifacts"
NOTEBOOK = "hostile.ipynb"
PLAIN_ID = "0123456789ab"
EVIL_ID = "fedcba987654\nimport os; os.system('touch pwned')"
SAFE_DASHBOARD = "http://127.0.0.1:{port}/status"
BAD_LINKS = [
    "javascript:alert(1)",
    " JavaScript:alert(2)",
    "java\nscript:alert(3)",
    "data:text/html,<script>alert(4)</script>",
    "file:///etc/passwd",
    "vbscript:msgbox(5)",
]

# Every URL the page hands to window.open, recorded before the call goes through.
SPY_OPEN = """
window.__opened = [];
const realOpen = window.open;
window.open = function (url, ...rest) {
  window.__opened.push(String(url));
  return realOpen.call(window, url, ...rest);
};
"""

# The notebook is found by its path: the shell's current widget is null while the sidebar
# has focus, and open_lab() returns once the shell is up, before the document is open.
NOTEBOOK_PANEL = """(path) => Array.from(window.jupyterapp.shell.widgets('main')).find(
  w => w.context && w.context.path === path && w.content && w.content.widgets)"""
NOTEBOOK_READY = f"""(path) => {{
  const panel = ({NOTEBOOK_PANEL})(path);
  return !!(panel && panel.context.isReady && panel.content.widgets.length > 0);
}}"""
CELL_SOURCES = f"""(path) => {{
  const panel = ({NOTEBOOK_PANEL})(path);
  return panel ? panel.content.widgets.map(cell => cell.model.sharedModel.getSource()) : null;
}}"""


def _open_notebook(page, lab) -> None:
    open_lab(page, lab, NOTEBOOK)
    page.wait_for_function(NOTEBOOK_READY, arg=NOTEBOOK, timeout=120_000)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    require(os.access(CHROMIUM, os.X_OK), f"Chromium at {CHROMIUM} (ci/system.sh install)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        require(False, "Python Playwright (pip install playwright)")
    problem = labextension_problem()
    require(problem is None, problem or "")
    # Without dask-labextension the Dashboard button opens a browser tab: the path whose
    # guards these tests check (window.open is spied on).
    server = LabServer(
        tmp_path_factory.mktemp("hostile") / "lab", disabled_extensions=("dask-labextension",)
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def record(cluster_id: str, name: str, dashboard: str | None) -> dict[str, Any]:
    """A discovery record of a cluster owned by this (live) process whose scheduler does
    not answer: listed, shown as lost, never pruned while the test runs."""
    return {
        "id": cluster_id,
        "name": name,
        "backend": "local",
        "profile": "local",
        "status": "running",
        "scheduler_address": f"tcp://127.0.0.1:{free_port()}",
        "dashboard_link": dashboard,
        "workers_requested": 1,
        "adapt": None,
        "owner": {"pid": os.getpid(), "host": socket.gethostname(), "kind": "kernel"},
        "started": 1.0,
        "discovery_version": 1,
    }


def write_record(runtime: Path, content: dict[str, Any]) -> Path:
    path = runtime / f"cluster-{content['id']}.json"
    path.write_text(json.dumps(content))
    return path


def _watch(page) -> dict[str, list]:
    seen: dict[str, list] = {"dialogs": [], "pages": []}
    page.on("dialog", lambda d: (seen["dialogs"].append(d.message), d.dismiss()))
    page.context.on("page", lambda p: seen["pages"].append(p.url))
    page.add_init_script(SPY_OPEN)
    return seen


def _fresh_notebook(lab: LabServer) -> None:
    status, _ = lab.request("PUT", f"api/contents/{NOTEBOOK}", notebook([""]))
    assert status in (200, 201)


def css_string(text: str) -> str:
    """``text`` as a CSS string literal: every character but letters and digits escaped."""
    return '"' + "".join(c if c.isascii() and c.isalnum() else f"\\{ord(c):x} " for c in text) + '"'


def _card(panel, cluster_id: str):
    return panel.locator(f"li.pj-cluster[data-cluster-id={css_string(cluster_id)}]")


def _insert(page, panel, card) -> list[str]:
    card.locator('button[data-action="insert"]').click()
    page.wait_for_timeout(300)
    return page.evaluate(CELL_SOURCES, NOTEBOOK)


def _refused_insert(page, panel, card) -> None:
    from playwright.sync_api import expect

    before = page.evaluate(CELL_SOURCES, NOTEBOOK)
    after = _insert(page, panel, card)
    assert after == before  # nothing inserted, no new cell
    error = panel.locator(".pj-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("not inserted")
    error.click()  # dismiss
    expect(error).to_be_hidden()


def _refused_dashboard(page, panel, card, link: str, seen) -> None:
    from playwright.sync_api import expect

    card.locator('button[data-action="dashboard"]').click()
    page.wait_for_timeout(300)
    assert page.evaluate("window.__opened") == [], link
    assert seen == {"dialogs": [], "pages": []}, link
    error = panel.locator(".pj-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("not an http(s) link")
    error.click()
    expect(error).to_be_hidden()


def _open_panel(page):
    """Show the sidebar (activating it, as a click on its tab would toggle it closed when
    the restored layout already shows it); return it once it lists the profiles."""
    page.evaluate("window.jupyterapp.shell.activateById('pipejupyter-sidebar')")
    panel = page.locator("#pipejupyter-sidebar")
    panel.locator('li.pj-profile[data-profile="local"]').wait_for(timeout=60_000)
    return panel


def _shutdown_kernels(lab: LabServer) -> None:
    status, kernels = lab.request("GET", "api/kernels")
    assert status == 200, kernels
    for kernel in kernels:
        lab.request("DELETE", f"api/kernels/{kernel['id']}")


def _fail_artifacts(page, lab: LabServer, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}-failure.png"))
    (ARTIFACTS / f"{name}-jupyter-lab.log").write_text(lab.log_tail(100_000))


def test_records_in_the_runtime_dir_cannot_inject_code_or_open_scripts(lab, tmp_path):
    """Records written next to a real lab: a plain id inserts exactly one line, a hostile
    id never reaches a cell, a javascript: dashboard is never opened."""
    from playwright.sync_api import expect

    expect.set_options(timeout=30_000)
    runtime = Path(lab.runtime)
    dashboard_port = free_port()
    paths = [
        write_record(
            runtime, record(PLAIN_ID, "plain", SAFE_DASHBOARD.format(port=dashboard_port))
        ),
        write_record(runtime, record("0123456789ac", "scripted", "javascript:alert(1)")),
        write_record(runtime, record(EVIL_ID, "evil", "javascript:alert(document.domain)")),
    ]
    _fresh_notebook(lab)
    try:
        with chromium_page() as page:
            seen = _watch(page)
            try:
                _open_notebook(page, lab)
                panel = _open_panel(page)
                plain = _card(panel, PLAIN_ID)
                plain.wait_for(timeout=60_000)
                listed = {c["id"]: c for c in lab.clusters()}

                # A plain id: exactly one line, the one the server model offers.
                assert _insert(page, panel, plain) == [f"%pipecluster connect {PLAIN_ID}"]

                # The hostile id: either the server never lists it, or the panel refuses.
                evil = _card(panel, EVIL_ID)
                if EVIL_ID in listed:
                    expect(evil).to_have_count(1)
                    _refused_insert(page, panel, evil)
                    _refused_dashboard(page, panel, evil, "javascript:", seen)
                    assert listed[EVIL_ID]["connect_code"] is None
                else:
                    expect(evil).to_have_count(0)
                assert page.evaluate(CELL_SOURCES, NOTEBOOK) == [f"%pipecluster connect {PLAIN_ID}"]

                # A valid id with a javascript: dashboard: never opened, the user is told.
                scripted = _card(panel, "0123456789ac")
                if (listed.get("0123456789ac") or {}).get("dashboard_link"):
                    _refused_dashboard(page, panel, scripted, "javascript:", seen)
                else:  # the server dropped the link (or the record): nothing to click
                    expect(
                        scripted.locator('button[data-action="dashboard"]:enabled')
                    ).to_have_count(0)

                # An http dashboard still opens.
                plain.locator('button[data-action="dashboard"]').click()
                page.wait_for_function("window.__opened.length === 1")
                (opened,) = page.evaluate("window.__opened")
                assert opened.startswith(("http://", "https://")), opened
                assert seen["dialogs"] == []
                assert not (Path(lab.work) / "pwned").exists()
                # The server model offers the line (built in Python, used as it is).
                assert listed[PLAIN_ID]["connect_code"] == f"%pipecluster connect {PLAIN_ID}"
            except Exception:
                _fail_artifacts(page, lab, "panel-hostile-records")
                raise
    finally:
        for path in paths:
            path.unlink(missing_ok=True)
        _shutdown_kernels(lab)


def test_hostile_models_from_the_server_are_refused_by_the_panel(lab):
    """The panel's own guards: hostile models injected into the server's answers (as an
    older or a compromised server could send them) are refused with a message."""
    from playwright.sync_api import expect

    expect.set_options(timeout=30_000)
    base = record(PLAIN_ID, "base", None)
    hostile = [
        # Ids from a server without connect_code (an older one): the panel checks the id.
        # A newline and a statement:
        {**base, "id": EVIL_ID, "name": "evil-id"},
        # IPython expands {expr} and $var in a magic line: such an id must not go in.
        {**base, "id": "{__import__('os').system('touch pwned')}", "name": "brace-id"},
        {**base, "id": "$(touch pwned)", "name": "dollar-id"},
        {**base, "id": "-h", "name": "option-id"},
        # A connect_code that is not one plain %pipecluster line.
        {
            **base,
            "id": "0123456789ad",
            "name": "evil-code",
            "connect_code": "%pipecluster connect 0123456789ad\nimport os",
        },
        {**base, "id": "0123456789ae", "name": "null-code", "connect_code": None},
    ]
    links = [
        {**base, "id": f"{i:012x}", "name": f"link-{i}", "dashboard_link": link}
        for i, link in enumerate(BAD_LINKS, start=0xB00)
    ]
    models = hostile + links
    for model in models:
        model.update(workers=0, pending=0, cores=0, memory=0, memory_used=0, tasks=0, error=None)
        model["worker_info"] = []

    def inject(route) -> None:
        if route.request.method != "GET":
            route.continue_()
            return
        response = route.fetch()
        data = response.json()
        data["clusters"] = data["clusters"] + models
        route.fulfill(response=response, json=data)

    _fresh_notebook(lab)
    with chromium_page() as page:
        seen = _watch(page)
        try:
            page.route(re.compile(r"/pipejupyter/clusters(\?[^/]*)?$"), inject)
            _open_notebook(page, lab)
            panel = _open_panel(page)
            for model in hostile:
                card = _card(panel, model["id"])
                card.wait_for(timeout=60_000)
                _refused_insert(page, panel, card)
            assert page.evaluate(CELL_SOURCES, NOTEBOOK) == [""]
            for model in links:
                card = _card(panel, model["id"])
                card.wait_for(timeout=60_000)
                _refused_dashboard(page, panel, card, model["dashboard_link"], seen)
            assert seen == {"dialogs": [], "pages": []}
            assert not (Path(lab.work) / "pwned").exists()
        except Exception:
            _fail_artifacts(page, lab, "panel-hostile-models")
            raise
        finally:
            _shutdown_kernels(lab)


# Repeated keys in a CASA-format file: PyYAML's reading, with a warning each; one key is
# named like HTML (its warning must stay text).
WARNING_CONFIG = (
    "casaconfig:\n"
    "  logfile: null\n"
    '  "<img src=x onerror=window.__pwned=1>": 1\n'
    "  logfile: null\n"
    '  "<img src=x onerror=window.__pwned=1>": 2\n'
)


def test_configuration_warnings_show_on_the_profile_cards_as_text(lab):
    """A config file with repeated keys: each profile card shows a warning marker whose
    tooltip and aria-label hold the warnings, file:line first, as text; a profile without
    warnings shows none, and a bounded list shows its full count."""
    from playwright.sync_api import expect

    expect.set_options(timeout=30_000)
    config = Path(lab.work) / "config.yaml"
    config.write_text(WARNING_CONFIG)

    def add_profiles(route) -> None:
        response = route.fetch()
        data = response.json()
        local = next(p for p in data["profiles"] if p["name"] == "local")
        data["profiles"] += [
            {**local, "name": "quiet", "warnings": [], "warnings_more": 0},
            {**local, "name": "many", "warnings": ["a:1: x"] * 20, "warnings_more": 7},
        ]
        route.fulfill(response=response, json=data)

    try:
        with chromium_page() as page:
            try:
                page.route(re.compile(r"/pipejupyter/profiles(\?[^/]*)?$"), add_profiles)
                open_lab(page, lab)
                panel = _open_panel(page)
                marker = panel.locator('li.pj-profile[data-profile="local"] .pj-profile-warnings')
                expect(marker).to_be_visible()
                expect(marker).to_have_text("\u26a0 2")
                first = f"{config}:4: casaconfig.logfile is written twice (lines 2 and 4)"
                title = marker.get_attribute("title") or ""
                assert title.splitlines()[0].startswith(first), title
                assert f"{config}:5: casaconfig.<img src=x onerror=window.__pwned=1> " in title
                label = marker.get_attribute("aria-label") or ""
                assert label.startswith(f"2 configuration warnings: {first}"), label
                assert panel.locator("img").count() == 0
                assert page.evaluate("window.__pwned === undefined")
                quiet = panel.locator('li.pj-profile[data-profile="quiet"] .pj-profile-warnings')
                expect(quiet).to_have_count(1)
                expect(quiet).to_be_hidden()
                many = panel.locator('li.pj-profile[data-profile="many"] .pj-profile-warnings')
                expect(many).to_have_text("\u26a0 27")
                expect(many).to_have_attribute("title", re.compile(r"and 7 more warnings$"))
            except Exception:
                _fail_artifacts(page, lab, "panel-config-warnings")
                raise
    finally:
        config.unlink()
        # JupyterLab restores the layout of the tests before: their notebook's kernel
        _shutdown_kernels(lab)
