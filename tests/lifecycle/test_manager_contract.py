"""The ClusterManager as an object, and the backend contract it relies on.

A manager owns its registry and its owner kind (no module globals); the optional abilities
of a backend are declared on the base class, so the manager never probes with hasattr.
"""

from __future__ import annotations

import json

import pytest
from IPython.core.error import UsageError

import pipejupyter
from pipejupyter.backend_registry import get_backend
from pipejupyter.backends.base import Backend
from pipejupyter.config.loader import load_config
from pipejupyter.errors import ClusterError
from pipejupyter.lifecycle import discovery
from pipejupyter.lifecycle.manager import ClusterManager, default_manager
from pipejupyter.notebook.magics import run_line

pytestmark = pytest.mark.usefixtures("isolated")


def test_connect_to_a_backend_that_cannot_attach_is_a_clear_error():
    # Reproduces: connect("kubernetes://x") raised a bare AttributeError (no attach()).
    with pytest.raises(ClusterError) as info:
        pipejupyter.connect("kubernetes://x")
    message = str(info.value)
    assert "'kubernetes' backend cannot connect to 'kubernetes://x'" in message
    assert "tcp://host:port" in message
    assert pipejupyter.clusters() == []


def test_the_magic_shows_that_error_as_one_line():
    with pytest.raises(UsageError) as info:
        run_line(None, "connect kubernetes://x")
    assert str(info.value).startswith(
        "%pipecluster connect: the 'kubernetes' backend cannot connect"
    )
    assert "Traceback" not in str(info.value)


def test_optional_backend_abilities_are_declared_on_the_base_class():
    local = get_backend("local")
    gateway = get_backend("gateway")
    assert local.remote_clusters is False
    assert gateway.remote_clusters is True
    assert local.attach_record({"id": "x", "backend_info": {"a": 1}}) is None
    assert local.stop_record({"id": "x"}) is False
    assert local.list_remote(load_config().resolve("local")) == []
    # Overridden where a backend has the ability, inherited (not missing) elsewhere.
    assert gateway.list_remote.__func__ is not Backend.list_remote.__func__
    assert local.attach.__func__ is Backend.attach.__func__


@pytest.mark.parametrize(
    ("profile", "overrides", "expected"),
    [
        ("local", [], {"minimum": 2, "maximum": 3}),
        (
            "slurm",
            ["cluster_kwargs.cores=4", "cluster_kwargs.processes=2"],
            {"minimum": 4, "maximum": 6},
        ),
    ],
)
def test_adapt_jobs_become_worker_counts_once(profile, overrides, expected):
    cfg = load_config(
        overrides=[*overrides, "adapt_kwargs.minimum_jobs=2", "adapt_kwargs.maximum_jobs=3"],
        profile=profile,
    )
    spec = cfg.resolve(profile)
    assert spec.adapt_kwargs == expected


def test_each_manager_has_its_own_clusters_and_owner_kind():
    cli = ClusterManager("cli")
    handle = cli.start("local", workers=1, timeout=60, set_default=False)
    try:
        assert cli.clusters() == [handle]
        assert default_manager.clusters() == []
        record = json.loads(discovery.record_path(handle.id).read_text())
        assert record["owner"]["kind"] == "cli"
        # The default manager sees it only as another owner's cluster.
        listed = {r["id"]: r for r in default_manager.list_clusters()}
        assert listed[handle.id]["owner"]["kind"] == "cli"
    finally:
        handle.stop()
    assert cli.clusters() == []
    assert not discovery.record_path(handle.id).exists()


def test_an_unknown_owner_kind_is_refused():
    with pytest.raises(ValueError, match="owner_kind must be one of"):
        ClusterManager("notebook")
