"""pipejupyter where HPC users work: a JupyterLab that JupyterHub spawned as a SLURM job.

The hub of ci/hub.sh (JupyterHub 6, batchspawner's SlurmSpawner, configurable-http-proxy,
all on 127.0.0.1) runs the user's lab as a SLURM job of user alice. Everything goes
through the hub's public port: the hub's REST API (service token), the lab's own API
under /user/alice/, and Chromium after logging in through the hub's form. One lab serves
the module (a spawn costs ~10 s); the last test stops it through the hub and checks that
nothing of the user's clusters is left.
"""

from __future__ import annotations

import ast
import json
import os
import re
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.common import ROOT, require
from tests.support.hub import Hub, login, require_hub
from tests.support.lab import CHROMIUM, PANEL_TAB, chromium_page
from tests.support.slurm import require_slurm

pytestmark = [pytest.mark.hub, pytest.mark.slurm]

ARTIFACTS = ROOT / "test-artifacts"
#: the README's picture (refreshed with PIPEJUPYTER_UPDATE_SCREENSHOTS=1)
README_IMAGE = ROOT / "docs" / "images" / "hub-dask-panes.png"
PROFILE = "hub-slurm"
#: the user's ./config.yaml (the lab and its kernels run in the home directory)
USER_CONFIG = f"""\
pipecluster:
  profiles:
    {PROFILE}:
      backend: slurm
      description: one small worker job per worker (hub tests)
      workers: 1
      cluster_kwargs:
        cores: 1
        processes: 1
        memory: 1GiB
        walltime: "00:20:00"
"""
#: dask-labextension's NEW button builds clusters through pipejupyter (its documented
#: labextension.factory setting, in the user's Dask config)
LABEXTENSION_CONFIG = f"""\
labextension:
  factory:
    module: pipejupyter.server.labextension_factory
    class: PipejupyterCluster
    args: []
    kwargs:
      profile: {PROFILE}
  default:
    workers: 1
    adapt: null
  initial: []
"""
#: a dashboard on a host the lab's proxy does not allow (TEST-NET-1: never routed)
FAR_DASHBOARD = "http://192.0.2.10:8787/status"
FAR_ID = "0badd0c0ffee"
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def hub() -> Any:
    require_slurm()
    hub = require_hub()
    if hub.server_running():
        hub.stop_server()
    hub.write_as_user(hub.home / "config.yaml", USER_CONFIG)
    hub.write_as_user(hub.home / ".config" / "dask" / "labextension.yaml", LABEXTENSION_CONFIG)
    # Options given explicitly: JupyterHub reuses a server's last options when given none
    # (benchmarks/hub_spawn.py spawns with pipejupyter "off" too).
    TIMINGS["spawn_to_ready_s"] = hub.spawn({"pipejupyter": "on"})
    try:
        yield hub
    finally:
        if hub.server_running():
            hub.stop_server()
        for path in hub.runtime_dir.glob(f"cluster-{FAR_ID}.json"):
            path.unlink()
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "hub-timings.json").write_text(json.dumps(TIMINGS, indent=2))


def _lab_job(hub: Hub) -> str:
    (job,) = [j for j, (name, state) in hub.jobs().items() if name == "spawner-jupyterhub"]
    return job


def _worker_jobs(hub: Hub, lab_job: str) -> dict[str, tuple[str, str]]:
    return {j: v for j, v in hub.jobs().items() if j != lab_job}


def test_the_lab_is_a_slurm_job_of_the_user_reached_through_the_hub(hub):
    jobs = hub.jobs()
    lab_job = _lab_job(hub)
    assert jobs[lab_job][1] == "RUNNING"
    status, profiles = hub.lab("GET", "pipejupyter/profiles")
    assert status == 200, profiles
    assert PROFILE in [p["name"] for p in profiles["profiles"]]
    # The kernel runs inside the lab's allocation, as the user, with the proxy described.
    out = hub.execute(
        "import os, getpass\n"
        "print(getpass.getuser(), os.environ['SLURM_JOB_ID'], "
        "os.environ.get('PIPEJUPYTER_PROXY_BASE_URL'), "
        "os.environ.get('DASK_DISTRIBUTED__DASHBOARD__LINK'))"
    )
    assert out.split() == [hub.user, lab_job, hub.prefix, f"{hub.prefix}proxy/{{port}}/status"]


def test_notebook_start_slurm_submits_nested_worker_jobs_and_stop_empties_the_queue(hub):
    """``%pipecluster start`` in a kernel of the hub-spawned lab: worker jobs are
    submitted from inside the lab's allocation, none of its SLURM_* leaks into them."""
    lab_job = _lab_job(hub)
    code = (
        "%load_ext pipejupyter\n"
        f"h = %pipecluster start {PROFILE} --workers 2\n"
        "import os\n"
        "jobs = h.client.run(lambda: os.environ.get('SLURM_JOB_ID'))\n"
        "print('WORKERS', sorted(jobs.values()))\n"
        "print('LAB', os.environ['SLURM_JOB_ID'])\n"
        "print('LINK', h.model()['dashboard_link'])\n"
        "%pipecluster dashboard\n"
        "%pipecluster stop\n"
        "%pipecluster start local --workers 1 --name nb-local\n"
        "%pipecluster stop nb-local\n"
    )
    t0 = time.monotonic()
    out = hub.execute(code)
    TIMINGS["notebook_start_2_workers_and_stop_s"] = time.monotonic() - t0
    assert "started hub-slurm" in out, out
    workers = ast.literal_eval(re.search(r"WORKERS (\[.*\])", out).group(1))
    # Each worker is a job of its own (the lab's SLURM_JOB_ID did not leak into them).
    assert len(set(workers)) == 2, out
    assert lab_job not in workers, out
    assert re.search(rf"LINK {re.escape(hub.prefix)}proxy/\d+/status", out), out
    # The start message and %pipecluster dashboard link through the lab's proxy.
    assert re.search(rf"dashboard {re.escape(hub.prefix)}proxy/\d+/status", out), out
    assert re.search(rf"hub-slurm dashboard: {re.escape(hub.prefix)}proxy/\d+/status", out), out
    assert re.search(rf"started nb-local .*dashboard {re.escape(hub.prefix)}proxy/\d+/status", out)
    left = _wait_workers_gone(hub, lab_job, timeout=60)
    assert left == {}, f"worker jobs left after %pipecluster stop: {left}"


def _wait_workers_gone(hub: Hub, lab_job: str, timeout: float) -> dict[str, tuple[str, str]]:
    deadline = time.monotonic() + timeout
    while (left := _worker_jobs(hub, lab_job)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


@pytest.mark.browser
def test_sidebar_start_then_dashboard_opens_a_live_dask_pane_through_the_hub(hub):
    """Log in through the hub, start the profile from the sidebar (nested worker job),
    click Dashboard: dask-labextension's panes open and their frames hold Dask's Bokeh
    page, loaded through the hub's port. A dashboard on a host the proxy does not allow
    gets a message naming the setting instead of a blank frame."""
    require(os.access(CHROMIUM, os.X_OK), f"Chromium at {CHROMIUM} (ci/system.sh install)")
    from playwright.sync_api import expect

    expect.set_options(timeout=60_000)
    lab_job = _lab_job(hub)
    _write_far_record(hub)
    ARTIFACTS.mkdir(exist_ok=True)
    with chromium_page((1400, 860)) as page:
        try:
            login(page, hub)
            page.locator(PANEL_TAB).wait_for(timeout=120_000)
            assert page.url.startswith(hub.url)
            # Activate rather than click: the user's saved workspace may have it open.
            page.evaluate("window.jupyterapp.shell.activateById('pipejupyter-sidebar')")
            panel = page.locator("#pipejupyter-sidebar")
            row = panel.locator(f'li.pj-profile[data-profile="{PROFILE}"]')
            row.wait_for(timeout=60_000)
            row.locator('input[data-field="workers"]').fill("1")
            t0 = time.monotonic()
            row.locator('button[data-action="start"]').click()
            # Start opens the options dialog (prefilled with the card's count); Apply starts.
            dialog = page.locator(".jp-Dialog.pj-options-dialog")
            dialog.locator('input[data-field="workers"]').wait_for(timeout=60_000)
            dialog.locator("button.jp-mod-accept").click()
            card = panel.locator('li.pj-cluster[data-workers="1"]')
            card.wait_for(timeout=120_000)
            TIMINGS["sidebar_start_to_1_worker_s"] = time.monotonic() - t0
            cid = card.get_attribute("data-cluster-id")
            card = panel.locator(f'li.pj-cluster[data-cluster-id="{cid}"]')
            assert len(_worker_jobs(hub, lab_job)) == 1

            # The REST model links through the lab's proxy; the direct address stays too.
            status, model = hub.lab("GET", f"pipejupyter/clusters/{cid}")
            assert status == 200, model
            port = int(model["dashboard_direct"].rsplit(":", 1)[1].split("/")[0])
            assert model["dashboard_link"] == f"{hub.prefix}proxy/{port}/status"
            assert model["dashboard_problem"] is None

            # Only the logged-in user gets the dashboard through the hub.
            anonymous = hub.request("GET", f"{hub.prefix}proxy/{port}/status", token=False)
            assert anonymous[0] == 302, anonymous[:2]
            assert "/hub/" in anonymous[2]["location"], anonymous[2]

            t0 = time.monotonic()
            card.locator('button[data-action="dashboard"]').click()
            frame_el = page.locator(".dask-DaskDashboard-widget iframe").first
            expect(frame_el).to_have_attribute(
                "src", re.compile(rf"^{re.escape(hub.url)}{re.escape(hub.prefix)}proxy/{port}/")
            )
            frame = frame_el.content_frame
            frame.locator(".bk-Canvas, .bk-root, div[class^='bk']").first.wait_for(timeout=60_000)
            TIMINGS["dashboard_click_to_pane_s"] = time.monotonic() - t0
            assert frame_el.evaluate("el => typeof el.contentWindow.Bokeh") == "object"
            page.wait_for_timeout(1500)  # let the plots draw for the picture
            page.screenshot(path=str(ARTIFACTS / "hub-dask-panes.png"))
            if os.environ.get("PIPEJUPYTER_UPDATE_SCREENSHOTS") or not README_IMAGE.exists():
                README_IMAGE.parent.mkdir(parents=True, exist_ok=True)
                README_IMAGE.write_bytes((ARTIFACTS / "hub-dask-panes.png").read_bytes())

            # A dashboard on a host the proxy does not allow: a message naming the setting.
            far = panel.locator(f'li.pj-cluster[data-cluster-id="{FAR_ID}"]')
            far.wait_for(timeout=60_000)
            panes = page.locator(".dask-DaskDashboard-widget").count()
            far.locator('button[data-action="dashboard"]').click()
            error = panel.locator(".pj-error")
            expect(error).to_contain_text("c.ServerProxy.host_allowlist")
            expect(error).to_contain_text("192.0.2.10")
            assert page.locator(".dask-DaskDashboard-widget").count() == panes

            # Stop from the sidebar: the worker job goes.
            card.locator('button[data-action="stop"]').click()
            expect(card).to_have_count(0)
            assert _wait_workers_gone(hub, lab_job, timeout=60) == {}
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "hub-failure.png"))
            (ARTIFACTS / "hub.log").write_text(hub.log_tail(100_000))
            raise
        finally:
            for path in hub.runtime_dir.glob(f"cluster-{FAR_ID}.json"):
                path.unlink()


def _write_far_record(hub: Hub) -> Path:
    """A discovery record of a cluster whose dashboard is on a host the lab's proxy does
    not allow. Its owner is this (live) test process, so the lab lists it while it runs."""
    record = {
        "id": FAR_ID,
        "name": "far-away",
        "backend": "slurm",
        "profile": PROFILE,
        "status": "running",
        "scheduler_address": "tcp://192.0.2.10:8786",
        "dashboard_link": FAR_DASHBOARD,
        "workers_requested": 1,
        "adapt": None,
        "owner": {"pid": os.getpid(), "host": socket.gethostname(), "kind": "kernel"},
        "started": time.time(),
        "discovery_version": 1,
    }
    path = hub.runtime_dir / f"cluster-{FAR_ID}.json"
    hub.write_as_user(path, json.dumps(record))
    return path


def test_dask_labextensions_new_button_starts_a_profile_through_pipejupyter(hub):
    """The request dask-labextension's NEW button sends (PUT /dask/clusters/): its cluster
    manager calls pipejupyter's factory, so the cluster is a pipejupyter cluster of the
    lab's server (listed in the sidebar, with its worker job) and its dashboard link goes
    through the lab's proxy."""
    lab_job = _lab_job(hub)
    status, model = hub.lab("PUT", "dask/clusters/", {})
    assert status == 200, model
    try:
        assert model["name"].startswith("PipejupyterCluster")
        assert re.fullmatch(rf"{re.escape(hub.prefix)}proxy/\d+/status", model["dashboard_link"])
        status, listed = hub.lab("GET", "pipejupyter/clusters")
        ours = [
            c for c in listed["clusters"] if c["scheduler_address"] == model["scheduler_address"]
        ]
        assert len(ours) == 1, listed
        assert ours[0]["profile"] == PROFILE
        assert ours[0]["owner"]["kind"] == "server"
        assert ours[0]["dashboard_link"] == model["dashboard_link"]
        assert len(_worker_jobs(hub, lab_job)) == 1
    finally:
        status, _ = hub.lab("DELETE", f"dask/clusters/{model['id']}")
    assert status in (200, 204)
    assert _wait_workers_gone(hub, lab_job, timeout=60) == {}


def test_the_hub_stopping_the_server_leaves_no_worker_job_process_or_record(hub):
    """Last: DELETE of the user's server through the hub's API while a cluster with
    worker jobs runs in the lab; the queue, the user's processes and the discovery
    records all empty."""
    lab_job = _lab_job(hub)
    status, model = hub.lab("POST", "pipejupyter/clusters", {"profile": PROFILE, "workers": 2})
    assert status == 201, model
    assert model["workers"] == 2, model
    assert len(_worker_jobs(hub, lab_job)) == 2
    assert list(hub.runtime_dir.glob("cluster-*.json"))

    t0 = time.monotonic()
    hub.stop_server()
    emptied = hub.wait_no_jobs(timeout=90)
    assert emptied is not None, f"jobs left after the server stopped: {hub.jobs()}"
    TIMINGS["server_stop_to_empty_queue_s"] = time.monotonic() - t0
    deadline = time.monotonic() + 30
    while hub.processes() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert hub.processes() == []
    assert list(hub.runtime_dir.glob("cluster-*.json")) == []
