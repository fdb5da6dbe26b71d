"""The sidebar's Start dialog (the options form) in a real JupyterLab and Debian's Chromium.

SLURM: Start on a profile card opens JupyterLab's Dialog with the core's fields, bounded by
the partition's limits; a walltime over the partition's MaxTime is refused next to its field
and nothing is queued; cores 2, memory 2GiB, walltime 00:20:00 reach the worker job
(``scontrol show job``); reopening (also after a reload) shows the values applied last.
Gateway: the real dask-gateway-server's option spec drives the fields, and worker_cores 2
gives workers of 2 threads. One lab and one browser serve the module; nothing is left
running (no SLURM job under the lab's directory, no gateway cluster of the test's user).
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from typing import Any

import pytest
import yaml

from tests.support.common import ROOT, require, wait_until
from tests.support.gateway import ADDRESS_VAR, PASSWORD_VAR, RealGateway, _healthy
from tests.support.lab import (
    CHROMIUM,
    LabServer,
    chromium_page,
    labextension_problem,
    open_lab,
)
from tests.support.slurm import jobs_under, node_cpus, require_slurm, slurm_up, wait_no_jobs

pytestmark = [pytest.mark.browser]

ARTIFACTS = ROOT / "test-artifacts"
SLURM_PROFILE = "sopt"
GATEWAY_PROFILE = "gwopt"
DIALOG = ".jp-Dialog.pj-options-dialog"
#: a SLURM start (scheduler, one worker job, its worker connecting) on a loaded 2-core box
START_TIMEOUT_MS = 240_000


def _gateway() -> RealGateway | None:
    address = os.environ.get(ADDRESS_VAR, "")
    password = os.environ.get(PASSWORD_VAR, "")
    if not (address and password and _healthy(address)):
        return None
    return RealGateway(address, password, f"pjtest-{uuid.uuid4().hex[:10]}")


def _config(gateway: RealGateway | None) -> dict[str, Any]:
    profiles: dict[str, Any] = {
        SLURM_PROFILE: {
            "backend": "slurm",
            "description": "one small worker job (options dialog test)",
            "workers": 1,
            "cluster_kwargs": {
                "cores": 1,
                "processes": 1,
                "memory": "1GiB",
                "walltime": "00:10:00",
            },
        }
    }
    if gateway is not None:
        profiles[GATEWAY_PROFILE] = {
            "backend": "gateway",
            "address": gateway.address,
            "auth": {"type": "basic", "username": gateway.user, "password_env": PASSWORD_VAR},
            "options": {"worker_cores": 1, "worker_memory": 0.5},
            "wait_timeout": 120,
            "workers": 1,
        }
    return {"pipecluster": {"profiles": profiles}}


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Any:
    """One lab (with both profiles in its ./config.yaml) and one browser page."""
    require(os.access(CHROMIUM, os.X_OK), f"Chromium at {CHROMIUM} (ci/system.sh install)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        require(False, "Python Playwright (pip install playwright)")
    problem = labextension_problem()
    require(problem is None, problem or "")
    gateway = _gateway()
    lab = LabServer(tmp_path_factory.mktemp("options-dialog") / "lab")
    (lab.work / "config.yaml").write_text(yaml.safe_dump(_config(gateway), sort_keys=False))
    lab.start()
    try:
        with chromium_page(viewport=(1280, 900)) as page:
            yield lab, page, gateway
    finally:
        _stop_everything(lab, gateway)


def _stop_everything(lab: LabServer, gateway: RealGateway | None) -> None:
    """Stop the lab's clusters and the lab; fail on anything left behind (cleaned first)."""
    left: list[str] = []
    for cluster in lab.clusters() if lab.proc and lab.proc.poll() is None else []:
        lab.request("DELETE", f"pipejupyter/clusters/{cluster['id']}")
    lab.stop()
    if slurm_up() and wait_no_jobs(lab.work, timeout=60) is None:
        jobs = jobs_under(lab.work)
        subprocess.run(["scancel", *jobs], capture_output=True, timeout=10)
        left.append(f"SLURM jobs {jobs}")
    if gateway is not None:
        running = wait_until(lambda: not gateway.active(), timeout=30) or gateway.active()
        if running is not True:
            gateway.stop_everything()
            left.append(f"gateway clusters {running}")
    assert not left, f"left running (now stopped): {left}"


def _show_panel(page: Any) -> Any:
    """The sidebar after a reload (the restored layout may show it already: a click on its
    tab would close it)."""
    page.evaluate("window.jupyterapp.shell.activateById('pipejupyter-sidebar')")
    panel = page.locator("#pipejupyter-sidebar")
    panel.locator(f'li.pj-profile[data-profile="{SLURM_PROFILE}"]').wait_for(timeout=60_000)
    return panel


def _open_dialog(page: Any, panel: Any, profile: str) -> Any:
    from playwright.sync_api import expect

    panel.locator(f'li.pj-profile[data-profile="{profile}"] button[data-action="start"]').click()
    dialog = page.locator(DIALOG)
    expect(dialog).to_be_visible()
    # The fields are there once the schema is read (the gateway's spec takes a moment).
    expect(dialog.locator(".pj-options-progress")).to_be_hidden(timeout=60_000)
    return dialog


def _field(dialog: Any, key: str) -> Any:
    return dialog.locator(f'[data-field="{key}"]')


def _row(dialog: Any, key: str) -> Any:
    return dialog.locator(f'.pj-option[data-key="{key}"]')


def _apply(dialog: Any) -> None:
    dialog.locator("button.jp-mod-accept").click()


def _job_details(job: str) -> str:
    return subprocess.run(
        ["scontrol", "show", "job", job], capture_output=True, text=True, timeout=10
    ).stdout


def _screenshot(page: Any, name: str) -> None:
    """Into test-artifacts/; also docs/images/ when missing or PIPEJUPYTER_UPDATE_SCREENSHOTS
    is set (docs/sidebar.md shows it)."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.mouse.move(5, 5)  # no hover highlight in the picture
    page.screenshot(path=str(ARTIFACTS / name))
    image = ROOT / "docs" / "images" / name
    if os.environ.get("PIPEJUPYTER_UPDATE_SCREENSHOTS") or not image.exists():
        image.parent.mkdir(parents=True, exist_ok=True)
        image.write_bytes((ARTIFACTS / name).read_bytes())


def _failure_artifacts(page: Any, lab: LabServer, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))
    (ARTIFACTS / f"{name}-jupyter-lab.log").write_text(lab.log_tail(100_000))


@pytest.mark.slurm
def test_slurm_options_reach_the_job_over_limit_is_refused_and_values_are_remembered(setup):
    from playwright.sync_api import expect

    require_slurm()
    lab, page, _ = setup
    expect.set_options(timeout=30_000)
    try:
        open_lab(page, lab)
        panel = _show_panel(page)
        dialog = _open_dialog(page, panel, SLURM_PROFILE)

        # Prefilled from the profile, with where each value came from and the partition's
        # limits as bounds (MaxTime 01:00:00, the node's CPUs).
        expect(_field(dialog, "cluster_kwargs.cores")).to_have_value("1")
        expect(_field(dialog, "cluster_kwargs.cores")).to_have_attribute("max", str(node_cpus()))
        expect(_field(dialog, "cluster_kwargs.memory")).to_have_value("1GiB")
        expect(_field(dialog, "cluster_kwargs.walltime")).to_have_value("00:10:00")
        expect(_field(dialog, "workers")).to_have_value("1")
        expect(_row(dialog, "cluster_kwargs.cores").locator(".pj-option-hint")).to_contain_text(
            "from config.yaml:"
        )
        walltime_row = _row(dialog, "cluster_kwargs.walltime")
        expect(walltime_row.locator(".pj-option-hint")).to_contain_text("allows 01:00:00")
        expect(
            _field(dialog, "cluster_kwargs.queue").locator('option[value="debug"]')
        ).to_contain_text("max time 01:00:00")

        # Over the partition's MaxTime: refused next to the walltime, nothing queued.
        _field(dialog, "cluster_kwargs.walltime").fill("02:00:00")
        _apply(dialog)
        error = walltime_row.locator(".pj-option-error")
        expect(error).to_contain_text("at most 01:00:00", timeout=60_000)
        expect(error).to_contain_text("longer than partition 'debug' allows")
        expect(dialog).to_be_visible()
        assert jobs_under(lab.work) == {}
        assert lab.clusters() == []
        _screenshot(page, "options-dialog.png")

        # cores 2, memory 2GiB, walltime 00:20:00: the worker job asks exactly that.
        _field(dialog, "cluster_kwargs.cores").fill("2")
        _field(dialog, "cluster_kwargs.memory").fill("2GiB")
        _field(dialog, "cluster_kwargs.walltime").fill("00:20:00")
        _apply(dialog)
        expect(dialog.locator(".pj-options-progress")).to_contain_text(f"Starting {SLURM_PROFILE}")
        expect(dialog).to_have_count(0, timeout=START_TIMEOUT_MS)
        card = panel.locator("li.pj-cluster")
        expect(card).to_have_attribute("data-workers", "1", timeout=60_000)
        (cluster,) = lab.clusters()
        assert cluster["profile"] == SLURM_PROFILE
        (job,) = jobs_under(lab.work)
        details = _job_details(job)
        assert re.search(r"\bNumCPUs=2\b", details), details
        assert re.search(r"\bmem=2G\b", details), details
        assert re.search(r"\bTimeLimit=00:20:00\b", details), details

        # Reopened, the dialog shows the values applied last (and says so).
        dialog = _open_dialog(page, panel, SLURM_PROFILE)
        expect(_field(dialog, "cluster_kwargs.cores")).to_have_value("2")
        expect(_field(dialog, "cluster_kwargs.memory")).to_have_value("2GiB")
        expect(_field(dialog, "cluster_kwargs.walltime")).to_have_value("00:20:00")
        expect(_row(dialog, "cluster_kwargs.cores").locator(".pj-option-hint")).to_contain_text(
            "last applied here"
        )
        expect(_field(dialog, "cluster_kwargs.account")).to_have_value("")
        dialog.locator("button.jp-mod-reject").click()
        expect(dialog).to_have_count(0)

        # ... also after a reload: they are kept in the lab's state database (workspace).
        page.wait_for_timeout(1500)  # the workspace is saved shortly after a change
        open_lab(page, lab)
        panel = _show_panel(page)
        dialog = _open_dialog(page, panel, SLURM_PROFILE)
        expect(_field(dialog, "cluster_kwargs.walltime")).to_have_value("00:20:00")
        expect(_field(dialog, "cluster_kwargs.cores")).to_have_value("2")
        dialog.locator("button.jp-mod-reject").click()
        expect(dialog).to_have_count(0)

        # Stop it from the card: the job leaves the queue.
        card = panel.locator(f'li.pj-cluster[data-cluster-id="{cluster["id"]}"]')
        card.locator('button[data-action="stop"]').click()
        expect(card).to_have_count(0, timeout=60_000)
        assert wait_no_jobs(lab.work, timeout=60) is not None, jobs_under(lab.work)
    except Exception:
        _failure_artifacts(page, lab, "options-dialog-slurm-failure")
        raise


@pytest.mark.gateway
def test_gateway_option_spec_drives_the_fields_and_worker_cores_reach_the_workers(setup):
    from playwright.sync_api import expect

    lab, page, gateway = setup
    require(gateway is not None, "dask-gateway-server (ci/gateway.sh; . .ci-state/gateway/env.sh)")
    expect.set_options(timeout=30_000)
    try:
        open_lab(page, lab)
        panel = _show_panel(page)
        dialog = _open_dialog(page, panel, GATEWAY_PROFILE)

        # The server's option spec: its labels and bounds, prefilled from the profile.
        cores = _row(dialog, "options.worker_cores")
        expect(cores.locator(".pj-option-label")).to_have_text("Worker cores")
        expect(cores.locator(".pj-option-hint")).to_contain_text("1–2")
        expect(_field(dialog, "options.worker_cores")).to_have_value("1")
        expect(_field(dialog, "options.worker_cores")).to_have_attribute("min", "1")
        expect(_field(dialog, "options.worker_cores")).to_have_attribute("max", "2")
        expect(_row(dialog, "options.worker_memory").locator(".pj-option-label")).to_have_text(
            "Worker memory (GiB)"
        )
        expect(_field(dialog, "options.worker_memory")).to_have_value("0.5")
        expect(dialog.locator('.pj-options-group[data-group="gateway options"] h4')).to_have_text(
            "Gateway options"
        )

        # Above the spec's maximum: the browser refuses it (Apply disabled, Enter does
        # nothing) and says why.
        _field(dialog, "options.worker_cores").fill("3")
        expect(dialog.locator("button.jp-mod-accept")).to_be_disabled()
        expect(cores.locator(".pj-option-error")).not_to_be_empty()
        _field(dialog, "options.worker_cores").press("Enter")
        page.wait_for_timeout(500)
        expect(dialog.locator(".pj-options-progress")).to_be_hidden()
        assert lab.clusters() == []

        # 2 cores, applied with Enter (the dialog's default button).
        _field(dialog, "options.worker_cores").fill("2")
        expect(dialog.locator("button.jp-mod-accept")).to_be_enabled()
        _field(dialog, "options.worker_cores").press("Enter")
        expect(dialog).to_have_count(0, timeout=START_TIMEOUT_MS)
        card = panel.locator("li.pj-cluster")
        expect(card).to_have_attribute("data-workers", "1", timeout=60_000)
        cid = card.get_attribute("data-cluster-id")
        status, model = lab.request("GET", f"pipejupyter/clusters/{cid}")
        assert status == 200, model
        assert model["backend"] == "gateway"
        assert model["cores"] == 2, model
        assert [w["threads"] for w in model["worker_info"] if w["status"] != "pending"] == [2]
        assert len(gateway.active()) == 1

        card.locator('button[data-action="stop"]').click()
        expect(card).to_have_count(0, timeout=60_000)
        assert wait_until(lambda: not gateway.active(), timeout=60), gateway.active()
    except Exception:
        _failure_artifacts(page, lab, "options-dialog-gateway-failure")
        raise
