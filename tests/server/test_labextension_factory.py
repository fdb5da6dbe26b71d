"""dask-labextension's NEW button on a pipejupyter profile: its own cluster manager builds
the cluster through PipejupyterCluster (its documented labextension.factory setting)."""

from __future__ import annotations

import asyncio

import pytest

from pipejupyter.environment.dashboard_links import BASE_URL_VARIABLE
from pipejupyter.lifecycle import discovery
from pipejupyter.lifecycle.manager import ClusterManager
from tests.support.common import wait_until

pytest.importorskip("dask_labextension", reason="dask-labextension (the lab extra)")

FACTORY = {
    "labextension.factory.module": "pipejupyter.server.labextension_factory",
    "labextension.factory.class": "PipejupyterCluster",
    "labextension.factory.kwargs": {"profile": "local"},
    "labextension.factory.args": [],
}


def test_dask_labextensions_manager_starts_scales_and_closes_a_profile(
    isolated, no_leaks, monkeypatch
):
    import dask
    from dask_labextension.manager import DaskClusterManager

    from pipejupyter.server import labextension_factory

    monkeypatch.setenv(BASE_URL_VARIABLE, "/user/alice/")  # as under the hub's lab
    server_manager = ClusterManager("server")
    monkeypatch.setattr(labextension_factory, "server_manager", lambda: server_manager)

    async def walk() -> None:
        with dask.config.set(FACTORY):
            labext = DaskClusterManager()
            model = await labext.start_cluster(configuration={"workers": 2})
            (handle,) = server_manager.clusters()
            assert handle.spec.profile == "local"
            assert handle.owner["kind"] == "server"
            assert model["scheduler_address"] == handle.scheduler_address
            port = handle.dashboard_link.split(":")[2].split("/")[0]
            assert model["dashboard_link"] == f"/user/alice/proxy/{port}/status"
            assert [r["id"] for r in discovery.read_all(prune=False)] == [handle.id]

            def workers() -> int:
                return labext.get_cluster(model["id"])["workers"]

            assert await asyncio.to_thread(wait_until, lambda: workers() == 2, 60)
            await labext.scale_cluster(model["id"], 1)
            assert await asyncio.to_thread(wait_until, lambda: workers() == 1, 60)

            await labext.close_cluster(model["id"])
            assert str(handle.status) == "stopped"
            assert discovery.read_all(prune=False) == []

    asyncio.run(walk())
