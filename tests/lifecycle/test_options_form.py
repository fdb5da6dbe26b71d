"""The options form, defined once in the core: fields per backend, prefilled from the profile,
chosen values applied as overrides and validated like a config file (real SLURM, real gateway).
"""

from __future__ import annotations

import subprocess

import pytest

import pipejupyter
from pipejupyter.errors import ConfigError
from pipejupyter.lifecycle.manager import profile_options
from pipejupyter.lifecycle.options import option_overrides
from tests.support.gateway import gw  # noqa: F401 (fixture)
from tests.support.slurm import jobs_under, node_cpus, require_slurm, slurm_clean  # noqa: F401

pytestmark = pytest.mark.usefixtures("isolated")


def _fields(form: dict) -> dict[str, dict]:
    return {f["key"]: f for f in form["fields"]}


def test_chosen_values_become_overrides():
    assert option_overrides({"workers": 3, "cluster_kwargs.cores": 2, "account": ""}) == {
        "workers": 3,
        "adapt_kwargs": None,
        "cluster_kwargs.cores": 2,
    }
    assert option_overrides({"adapt_kwargs.minimum": 0, "adapt_kwargs.maximum": 4}) == {
        "workers": None,
        "adapt_kwargs.minimum": 0,
        "adapt_kwargs.maximum": 4,
    }
    assert option_overrides(
        {"cluster_kwargs.job_extra_directives": "--qos=express\n\n--exclusive"}
    ) == {"cluster_kwargs.job_extra_directives": ["--qos=express", "--exclusive"]}
    with pytest.raises(ConfigError, match="either a worker count or an adapt range"):
        option_overrides({"workers": 2, "adapt_kwargs.maximum": 4})


def test_local_form_and_a_bad_value_refused_before_anything_starts(isolated):
    form = profile_options("local")
    fields = _fields(form)
    assert [k for k in fields][:3] == ["workers", "adapt_kwargs.minimum", "adapt_kwargs.maximum"]
    assert fields["cluster_kwargs.processes"]["kind"] == "bool"
    assert fields["cluster_kwargs.processes"]["value"] is True
    with pytest.raises(ConfigError) as err:
        pipejupyter.start("local", options={"cluster_kwargs.threads_per_worker": 0})
    assert err.value.key == "profiles.local.cluster_kwargs.threads_per_worker"
    assert "an integer >= 1" in str(err.value)
    assert pipejupyter.clusters() == []
    handle = pipejupyter.start(
        "local", options={"workers": 1, "cluster_kwargs.threads_per_worker": 2}, timeout=60
    )
    try:
        assert list(handle.client.nthreads().values()) == [2]
    finally:
        handle.stop()


@pytest.mark.slurm
def test_slurm_form_has_partitions_and_limits_and_its_values_reach_the_job(isolated, slurm_clean):
    require_slurm()
    fields = _fields(profile_options("slurm"))
    queue = fields["cluster_kwargs.queue"]
    assert queue["kind"] == "select" and "debug" in queue["choices"]
    assert any("max time 01:00:00" in h for h in queue["choice_help"])
    assert fields["cluster_kwargs.walltime"]["maximum"] == 3600
    assert fields["cluster_kwargs.cores"]["maximum"] == node_cpus()

    # A walltime over the partition's MaxTime is refused, naming the field and the limit.
    with pytest.raises(ConfigError) as err:
        pipejupyter.start("slurm", options={"cluster_kwargs.walltime": "02:00:00"}, timeout=60)
    assert err.value.key == "profiles.slurm.cluster_kwargs.walltime"
    assert "at most 01:00:00" in str(err.value)
    assert not jobs_under(isolated)

    form = pipejupyter.options("slurm")
    form["cluster_kwargs.cores"] = 2
    form["cluster_kwargs.memory"] = "2GiB"
    form["cluster_kwargs.walltime"] = "00:20:00"
    handle = pipejupyter.start("slurm", options=form, timeout=120)
    try:
        (job_id,) = handle.backend.ledger.job_ids
        shown = subprocess.run(
            ["scontrol", "show", "job", str(job_id)], capture_output=True, text=True, timeout=20
        ).stdout
        assert "NumCPUs=2" in shown, shown
        assert "TimeLimit=00:20:00" in shown, shown
        assert "mem=2G" in shown, shown
    finally:
        handle.stop()


@pytest.mark.gateway
def test_gateway_form_follows_the_servers_option_spec_and_an_option_reaches_workers(gw):
    fields = _fields(profile_options("gw"))
    cores = fields["options.worker_cores"]
    assert (cores["kind"], cores["minimum"], cores["maximum"]) == ("int", 1, 2)
    assert cores["label"] == "Worker cores"
    assert fields["options.worker_memory"]["kind"] == "number"
    assert "options.environment" not in fields  # filled from env passthrough, not the form
    with pytest.raises(ConfigError, match="refuses 5"):
        pipejupyter.start("gw", options={"options.worker_cores": 5}, timeout=60)
    assert gw.active() == []
    handle = pipejupyter.start("gw", options={"options.worker_cores": 2}, timeout=120)
    try:
        assert set(handle.client.nthreads().values()) == {2}
    finally:
        handle.stop()


def test_notebook_form_renders_and_its_start_button_starts_with_the_values(isolated):
    pytest.importorskip("ipywidgets")
    form = pipejupyter.options("local")
    widget = form.widget()
    bundle = form._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert "cluster_kwargs.threads_per_worker" in bundle["text/plain"]
    form._inputs["workers"].value = "1"
    form._inputs["cluster_kwargs.threads_per_worker"].value = "3"
    button = widget.children[-1].children[0]
    assert button.description == "Start"
    button.click()
    try:
        assert form.handle is not None, form._status.value
        assert list(form.handle.client.nthreads().values()) == [3]
    finally:
        if form.handle is not None:
            form.handle.stop()
    # A value the core refuses is shown next to its field, and nothing starts.
    form = pipejupyter.options("local")
    form.widget()
    form._inputs["cluster_kwargs.threads_per_worker"].value = "zero"
    form._on_start()
    assert form.handle is None
    assert "an integer &gt;= 1" in form._errors["cluster_kwargs.threads_per_worker"].value
    assert pipejupyter.clusters() == []
