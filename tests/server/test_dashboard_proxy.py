"""Dashboard links of the REST API go through the server's own jupyter-server-proxy, for a
server at the root (a plain `jupyter lab`) and under a hub's /user/<name>/ base URL, and
the proxied page is the Dask dashboard."""

from __future__ import annotations

import json

import pytest

from pipejupyter.environment.dashboard_links import (
    BASE_URL_VARIABLE,
    DASK_LINK_VARIABLE,
    HOSTS_VARIABLE,
)
from tests.support.server import API, restore_owner_kind  # noqa: F401 (fixtures)

pytest_plugins = ["pytest_jupyter.jupyter_server"]

pytest.importorskip("jupyter_server_proxy", reason="jupyter-server-proxy (the lab extra)")


@pytest.fixture
def jp_server_config():
    return {
        "ServerApp": {"jpserver_extensions": {"pipejupyter": True, "jupyter_server_proxy": True}}
    }


@pytest.fixture(params=["/", "/user/alice/"], ids=["root", "hub-prefix"])
def jp_base_url(request):
    return request.param


@pytest.fixture(autouse=True)
def kernel_environment(monkeypatch):
    """The extension describes its proxy in os.environ for its kernels: this process's
    environment is restored after the test."""
    for name in (BASE_URL_VARIABLE, HOSTS_VARIABLE, DASK_LINK_VARIABLE):
        monkeypatch.setenv(name, "-")
        monkeypatch.delenv(name)


async def test_rest_models_link_through_the_proxy_which_serves_the_dashboard(
    jp_fetch, jp_base_url, restore_owner_kind
):
    import os

    response = await jp_fetch(
        API,
        "clusters",
        method="POST",
        body=json.dumps({"profile": "local", "workers": 1}),
        request_timeout=120,
    )
    model = json.loads(response.body)
    try:
        direct = model["dashboard_direct"]
        port = int(direct.split(":")[2].split("/")[0])
        assert direct == f"http://127.0.0.1:{port}/status"
        assert model["dashboard_link"] == f"{jp_base_url}proxy/{port}/status"
        assert model["dashboard_problem"] is None
        listed = json.loads((await jp_fetch(API, "clusters")).body)["clusters"]
        assert [c["dashboard_link"] for c in listed] == [model["dashboard_link"]]
        # Kernels of this server learn the proxy and Dask's link template from it.
        assert os.environ[BASE_URL_VARIABLE] == jp_base_url
        assert os.environ[DASK_LINK_VARIABLE] == f"{jp_base_url}proxy/{{port}}/status"

        page = await jp_fetch("proxy", str(port), "status", request_timeout=60)
        assert page.code == 200
        assert b"Bokeh" in page.body
    finally:
        await jp_fetch(API, "clusters", model["id"], method="DELETE", request_timeout=60)


def test_the_host_allowlist_is_read_from_the_servers_config():
    from types import SimpleNamespace

    from traitlets.config import Config

    from pipejupyter.server import _server_proxy

    config = Config()
    config.ServerProxy.host_allowlist = ["localhost", "node1"]
    app = SimpleNamespace(
        jpserver_extensions={"jupyter_server_proxy": True}, config=config, base_url="/user/a/"
    )
    assert _server_proxy(app).allowed_hosts == ("localhost", "node1")
    app.config = Config()  # jupyter-server-proxy's default
    assert _server_proxy(app).allowed_hosts == ("localhost", "127.0.0.1")
    app.config.ServerProxy.host_allowlist = lambda handler, host: True
    assert _server_proxy(app).allowed_hosts is None  # a function: the proxy decides
    app.jpserver_extensions = {"jupyter_server_proxy": False}
    assert _server_proxy(app) is None  # not enabled: links stay direct
