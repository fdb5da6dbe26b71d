"""ClusterWidget: the state it shows for a real cluster, its controls, its live refresh,
escaping."""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from pipejupyter.lifecycle import manager
from pipejupyter.models import cluster_model, worker_row
from pipejupyter.notebook import cluster_widget as widgets
from pipejupyter.notebook import html_views
from pipejupyter.notebook.cluster_widget import ClusterWidget, widget_for
from tests.support.common import wait_until
from tests.support.slurm import jobs_under, slurm_clean  # noqa: F401 (fixture)

EVIL = "<img src=x onerror=alert(1)>"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def synthetic_model(n_workers: int, *, name: str = "synthetic", worker_name=str, **extra) -> dict:
    rows = [
        worker_row(
            name=worker_name(i),
            address=f"tcp://10.0.{i // 250}.{i % 250}:4000{i % 10}",
            host=f"node{i:04d}",
            threads=2,
            memory_used=(i % 7 + 1) * 2**28,
            memory_limit=2**31,
            processing=i % 3,
            status="running",
        )
        for i in range(n_workers)
    ]
    fields = dict(
        id="0123456789ab",
        name=name,
        backend="slurm",
        profile="slurm",
        status="running",
        scheduler_address="tcp://10.0.0.1:8786",
        dashboard_link="http://10.0.0.1:8787/status",
        worker_info=rows,
        adapt=None,
        owner={"pid": 1, "host": "h", "kind": "kernel"},
        started=0.0,
    )
    fields.update(extra)
    return cluster_model(**fields)


# -- static views -----------------------------------------------------------------------


def test_every_model_value_is_escaped():
    model = synthetic_model(
        2,
        name=EVIL,
        worker_name=lambda i: EVIL,
        error=f"lost: {EVIL}",
        dashboard_link="javascript:alert(1)",
    )
    model["worker_info"].append(
        worker_row(name="p", status="pending", job_id=EVIL, job_state="<b>PD</b>")
    )
    model["worker_info"][0]["host"] = EVIL
    html = html_views.cluster_html(model)
    assert "<img" not in html
    assert "<b>" not in html
    assert (
        html.count("&lt;img src=x onerror=alert(1)&gt;") == 6
    )  # name, 2 workers, 1 host, error, job id
    assert "&lt;b&gt;PD&lt;/b&gt;" in html
    assert 'href="javascript' not in html
    assert "javascript:alert(1)" in html  # shown as text, not a link
    assert "onerror=alert(1)" not in re.sub(r"&lt;.*?&gt;", "", html)
    text = html_views.cluster_text(model)
    assert f"Cluster {EVIL} (slurm" in text  # text/plain is not markup: shown as written


def test_worker_table_rows_totals_and_pending_jobs():
    model = synthetic_model(3)
    model["worker_info"].append(
        worker_row(name="slurm-7", status="pending", job_id="1234", job_state="pending")
    )
    model = cluster_model(
        **{
            k: model[k]
            for k in (
                "id",
                "name",
                "backend",
                "profile",
                "status",
                "scheduler_address",
                "dashboard_link",
                "worker_info",
                "adapt",
                "owner",
                "started",
            )
        }
    )
    table = html_views.workers_table_html(model)
    assert table.count("<tr>") == 1 + 4
    assert "pending (job 1234: pending)" in table
    assert "node0002" in table
    assert "512.0 MiB / 2.0 GiB" in table
    header = html_views.header_html(model)
    assert (
        "3 workers (+1 pending), 6 threads, memory 1.5 GiB / 6.0 GiB, 3 tasks processing" in header
    )
    assert '<a href="http://10.0.0.1:8787/status" target="_blank"' in header


def test_large_models_render_as_one_table_with_a_cap():
    model = synthetic_model(1500)
    full = html_views.workers_table_html(model, max_rows=None)
    assert full.count("<tr>") == 1501
    assert full.count("<table") == 1
    capped = html_views.workers_table_html(model)
    assert capped.count("<tr>") == 1 + html_views.MAX_ROWS + 1
    assert "and 500 more workers" in capped
    assert len(html_views.cluster_text(model).splitlines()) == 3 + html_views.MAX_TEXT_ROWS + 1


def test_a_model_that_lists_some_of_its_workers_says_how_many_more_there_are():
    # The model lists at most a hundred connected workers; its totals count all of them.
    model = synthetic_model(100)
    model["workers"] = 1000
    assert "and 900 more workers" in html_views.workers_table_html(model)
    text = html_views.cluster_text(model)
    assert text.endswith(f"... and {1000 - html_views.MAX_TEXT_ROWS} more workers")


# -- a real cluster -----------------------------------------------------------------------

pytestmark_cluster = pytest.mark.usefixtures("isolated", "no_leaks")


@pytestmark_cluster
def test_widget_follows_scale_adapt_and_stop_through_its_controls():
    handle = manager.start(workers=1, name="w", timeout=60)
    widget = ClusterWidget(handle, live=False)
    assert widget.status == "running"
    assert not widget.live
    assert [r["name"] for r in widget.rows] == ["0"]
    assert widget.model["workers"] == 1
    assert widget.model["cores"] == 1
    assert widget.rows[0]["memory_used"] > 0
    assert widget.rows[0]["memory_limit"] > 0
    assert widget.table.value.count("<tr>") == 2
    assert "1 worker, 1 thread" in widget.header.value
    assert not widget.scale_button.disabled
    assert widget.stop_button.description == "Stop"

    widget.workers_input.value = 3
    widget.scale_button.click()
    assert widget.message.value == "asked for 3 workers"
    assert wait_until(lambda: widget.refresh()["workers"] == 3, timeout=60)
    assert [r["name"] for r in widget.rows] == ["0", "1", "2"]
    assert widget.model["cores"] == 3
    assert widget.table.value.count("<tr>") == 4
    assert "3 workers, 3 threads" in widget.header.value

    widget.minimum_input.value, widget.maximum_input.value = 1, 2
    widget.adapt_button.click()
    assert widget.model["adapt"] == {"minimum": 1, "maximum": 2}
    assert "adaptive 1-2" in widget.header.value

    widget.minimum_input.value = 5  # above max: the core refuses, the widget says why
    widget.adapt_button.click()
    assert "adapt minimum 5 is above maximum 2" in widget.message.value

    widget.stop_button.click()
    assert handle.status == "stopped"
    assert widget.status == "stopped"
    assert widget.rows == []
    assert "stopped" in widget.header.value
    assert widget.scale_button.disabled
    assert widget.adapt_button.disabled
    assert widget.stop_button.disabled
    widget.close()


@pytestmark_cluster
def test_a_killed_scheduler_shows_as_lost_not_as_an_exception():
    handle = manager.start(workers=1, name="doomed", timeout=60)
    widget = ClusterWidget(handle, live=False)
    assert widget.status == "running"
    handle.client.shutdown()  # the scheduler and its workers go away behind the handle's back
    model = widget.refresh()
    assert model["status"] == "lost"
    assert widget.status == "lost"
    assert model["error"].startswith("scheduler not reachable")
    assert ">lost</span>" in widget.header.value
    assert "scheduler not reachable" in widget.header.value
    assert widget.rows == []
    assert "no workers" in widget.table.value
    assert not widget.stop_button.disabled  # still possible to clean up
    widget.stop()
    assert handle.status == "stopped"


@pytestmark_cluster
def test_connected_cluster_widget_only_disconnects():
    owner = manager.start(workers=1, name="owner", timeout=60)
    connected = manager.connect(owner.scheduler_address, name="viewer")
    widget = ClusterWidget(connected, live=False)
    assert widget.model["workers"] == 1
    assert widget.model["backend"] == "address"
    assert widget.scale_button.disabled
    assert widget.adapt_button.disabled
    assert widget.stop_button.description == "Disconnect"
    assert not widget.stop_button.disabled
    assert "started elsewhere" in widget.message.value
    widget.stop()
    assert connected.status == "stopped"
    assert owner.model()["workers"] == 1
    owner.stop()


@pytestmark_cluster
def test_display_bundle_is_one_cached_widget_with_static_fallbacks():
    handle = manager.start(workers=1, name=EVIL, timeout=60)
    bundle = widgets.handle_mimebundle(handle)
    assert {WIDGET_MIME, "text/html", "text/plain"} <= set(bundle)
    assert "<img" not in bundle["text/html"]
    assert "&lt;img" in bundle["text/html"]
    first = widget_for(handle)
    assert widget_for(handle) is first  # every display shows the same widget (one refresher)
    assert bundle[WIDGET_MIME]["model_id"] == first.view.model_id
    first.close()
    assert widget_for(handle) is not first
    widgets.close_all()
    handle.stop()


@pytestmark_cluster
def test_live_refresh_on_the_running_loop_stops_on_close_and_on_cluster_stop():
    handle = manager.start(workers=1, name="live", timeout=60)

    async def scenario() -> dict:
        loop = asyncio.get_running_loop()
        widget = ClusterWidget(handle, interval=0.2)
        assert widget.live
        await loop.run_in_executor(None, handle.scale, 2)
        deadline = time.monotonic() + 60
        while widget.model["workers"] != 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)  # nobody calls refresh(): the periodic task does
        seen = {
            "workers_after_scale": widget.model["workers"],
            "rows": [r["name"] for r in widget.rows],
        }
        widget.close()
        await asyncio.sleep(0.5)
        seen["live_after_close"] = widget.live

        second = ClusterWidget(handle, interval=0.2)
        assert second.live
        await loop.run_in_executor(None, handle.stop)
        deadline = time.monotonic() + 10
        while second.live and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        seen["live_after_stop"] = second.live
        seen["status_after_stop"] = second.status
        second.close()
        return seen

    seen = asyncio.run(scenario())
    assert seen == {
        "workers_after_scale": 2,
        "rows": ["0", "1"],
        "live_after_close": False,
        "live_after_stop": False,
        "status_after_stop": "stopped",
    }


@pytestmark_cluster
def test_without_a_running_loop_the_widget_is_static():
    handle = manager.start(workers=1, name="static", timeout=60)
    widget = ClusterWidget(handle)
    assert not widget.live  # no loop to run on: refresh() on demand
    handle.stop()
    assert widget.refresh()["status"] == "stopped"
    widget.close()


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_clean", "no_leaks")
def test_pending_slurm_jobs_show_their_job_ids_then_run(isolated):
    from tests.support.magics import ipython_shell

    kind = manager.default_manager.owner_kind
    shell = ipython_shell()
    shell.extension_manager.load_extension("pipejupyter")
    try:
        handle = shell.run_line_magic(
            "pipecluster",
            "start slurm -n 1 --no-wait --set cluster_kwargs.memory=1GiB "
            "--set cluster_kwargs.walltime=00:20:00",
        )
    finally:
        manager.default_manager.owner_kind = kind
    widget = ClusterWidget(handle, live=False)
    jobs = jobs_under(isolated)
    assert len(jobs) == 1  # one job: the shared 2-CPU test node has room for it
    # Right after --no-wait the job is queued or booting (a worker needs seconds to start):
    # its row says which job it waits for.
    (pending,) = widget.rows
    assert widget.model["pending"] == 1
    assert pending["status"] == "pending"
    assert pending["job_id"] in jobs
    assert pending["job_state"] in ("pending", "running")
    assert f"pending (job {pending['job_id']}: {pending['job_state']})" in widget.table.value

    def all_running() -> bool:
        model = widget.refresh()
        return model["workers"] == 1 and {r["status"] for r in widget.rows} == {"running"}

    assert wait_until(all_running, timeout=180), (widget.rows, jobs_under(isolated))
    assert {r["job_id"] for r in widget.rows} == set(jobs)
    widget.stop()
    assert widget.status == "stopped"
