"""Dashboard links a browser can open: through the Jupyter server's proxy or direct."""

from __future__ import annotations

import pytest

from pipejupyter.environment.dashboard_links import (
    ALLOWLIST_SETTING,
    BASE_URL_VARIABLE,
    DASK_LINK_VARIABLE,
    HOSTS_VARIABLE,
    ServerProxy,
    browser_link,
    browser_model,
    export,
    proxy_for_server,
    proxy_from_environ,
)

HUB = ServerProxy("/user/alice/", ("localhost", "127.0.0.1"))


@pytest.mark.parametrize(
    ("link", "expected"),
    [
        ("http://127.0.0.1:8787/status", "/user/alice/proxy/8787/status"),
        ("http://localhost:41234/status?x=1", "/user/alice/proxy/41234/status?x=1"),
        ("http://0.0.0.0:8787/status", "/user/alice/proxy/8787/status"),
        ("http://[::1]:8787/status", "/user/alice/proxy/8787/status"),
        ("https://127.0.0.1/status", "/user/alice/proxy/443/status"),
    ],
)
def test_a_dashboard_on_the_labs_host_goes_through_proxy_port(link, expected):
    shown = browser_link(link, HUB)
    assert shown.url == expected
    assert shown.direct == link
    assert shown.problem is None


def test_another_host_goes_through_proxy_host_port_only_when_allowed():
    allowed = ServerProxy("/", ("localhost", "127.0.0.1", "node17"))
    shown = browser_link("http://node17:8787/status", allowed)
    assert shown.url == "/proxy/node17:8787/status"
    assert shown.problem is None

    refused = browser_link("http://node18:8787/status", allowed)
    assert refused.url == "http://node18:8787/status"  # the direct link stays, with a reason
    assert ALLOWLIST_SETTING in refused.problem
    assert "node18" in refused.problem
    assert "localhost, 127.0.0.1, node17" in refused.problem

    # An allow-list function: the proxy decides per request, the link goes through it.
    anyhost = proxy_for_server("/user/bob", lambda handler, host: True)
    assert anyhost.allowed_hosts is None
    assert browser_link("http://10.1.2.3:8787/status", anyhost).url == (
        "/user/bob/proxy/10.1.2.3:8787/status"
    )


def test_gateway_dashboards_keep_their_public_address_and_no_proxy_keeps_every_link():
    gateway = "https://gateway.example.org/clusters/abc/status"
    assert browser_link(gateway, HUB, backend="gateway").url == gateway
    assert browser_link("http://127.0.0.1:8787/status", HUB, backend="gateway").url == (
        "http://127.0.0.1:8787/status"
    )
    # Outside Jupyter (a script, the CLI): the direct link.
    assert browser_link("http://127.0.0.1:8787/status", None).url == (
        "http://127.0.0.1:8787/status"
    )


def test_a_link_from_dasks_template_is_fixed_for_a_scheduler_elsewhere():
    """In a kernel, Dask's own template gives <base>proxy/<port>/status, which reaches only
    the lab's host: a scheduler on another host gets proxy/<host>:<port> or the message."""
    local = browser_link(
        "/user/alice/proxy/8787/status", HUB, scheduler_address="tcp://127.0.0.1:1"
    )
    assert local.url == "/user/alice/proxy/8787/status"
    elsewhere = browser_link(
        "/user/alice/proxy/8787/status", HUB, scheduler_address="tcp://node9:8786"
    )
    assert elsewhere.url == "http://node9:8787/status"
    assert ALLOWLIST_SETTING in elsewhere.problem


@pytest.mark.parametrize(
    "link", ["javascript:alert(1)", "file:///etc/passwd", "http://x:notaport/", "", None, 5]
)
def test_links_that_are_not_http_are_never_rewritten(link):
    shown = browser_link(link, HUB)
    assert shown.url == (link if isinstance(link, str) else None)
    assert shown.problem is None


def test_export_describes_the_proxy_for_kernels_and_points_dasks_links_through_it():
    environ: dict[str, str] = {}
    export(proxy_for_server("user/alice", ["localhost", "node1"]), environ)
    assert environ == {
        BASE_URL_VARIABLE: "/user/alice/",
        HOSTS_VARIABLE: "localhost,node1",
        DASK_LINK_VARIABLE: "/user/alice/proxy/{port}/status",
    }
    assert proxy_from_environ(environ) == ServerProxy("/user/alice/", ("localhost", "node1"))

    # A user's own Dask link setting stays; no proxy, nothing is set.
    mine = {DASK_LINK_VARIABLE: "https://my.site/{port}/status"}
    export(HUB, mine)
    assert mine[DASK_LINK_VARIABLE] == "https://my.site/{port}/status"
    nothing: dict[str, str] = {}
    export(None, nothing)
    assert nothing == {}
    assert proxy_from_environ({}) is None
    assert proxy_from_environ({BASE_URL_VARIABLE: "/", HOSTS_VARIABLE: "*"}).allowed_hosts is None


def test_browser_model_keeps_the_direct_address_and_the_reason():
    model = {
        "backend": "slurm",
        "scheduler_address": "tcp://127.0.0.1:4000",
        "dashboard_link": "http://127.0.0.1:4001/status",
        "name": "x",
    }
    shown = browser_model(model, HUB)
    assert shown["dashboard_link"] == "/user/alice/proxy/4001/status"
    assert shown["dashboard_direct"] == "http://127.0.0.1:4001/status"
    assert shown["dashboard_problem"] is None
    assert model["dashboard_link"] == "http://127.0.0.1:4001/status"  # not changed in place
    assert browser_model(model, None)["dashboard_link"] == model["dashboard_link"]
