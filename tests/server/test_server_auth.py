"""Every REST route refuses unauthenticated requests, and cookie sessions need the XSRF token."""

from __future__ import annotations

import pytest

from pipejupyter.lifecycle import manager
from tests.support.server import API, jp_server_config, restore_owner_kind  # noqa: F401 (fixtures)

pytest_plugins = ["pytest_jupyter.jupyter_server"]
pytestmark = pytest.mark.usefixtures("isolated", "no_leaks", "restore_owner_kind")

# -- authentication and XSRF -----------------------------------------------------------

ROUTES = [
    ("GET", "profiles", None),
    ("GET", "profiles/local/options", None),
    ("GET", "clusters", None),
    ("POST", "clusters", b'{"profile": "local", "workers": 1}'),
    ("GET", "clusters/0123456789ab", None),
    ("PATCH", "clusters/0123456789ab", b'{"workers": 1}'),
    ("DELETE", "clusters/0123456789ab", None),
]


@pytest.fixture
def raw(http_server_client, jp_base_url):
    """A request without jp_fetch's token: ``await raw(method, path, body, headers)``."""

    async def fetch(method: str, path: str, body=None, headers=None):
        if body is None and method in ("POST", "PATCH"):
            body = b""
        return await http_server_client.fetch(
            f"{jp_base_url}{path}",
            method=method,
            body=body,
            headers=headers or {},
            follow_redirects=False,
            allow_nonstandard_methods=True,
            raise_error=False,
        )

    return fetch


async def test_every_route_refuses_unauthenticated_requests(raw):
    for method, route, body in ROUTES:
        for headers in ({}, {"Authorization": "token wrong"}):
            response = await raw(method, f"{API}/{route}", body, headers)
            assert response.code == 403, (method, route, headers, response.code)
    assert manager.clusters() == []


async def test_cookie_session_needs_the_xsrf_token(jp_serverapp, raw):
    """A browser session (cookie) may not write without the XSRF token: a cross-site form
    or fetch cannot start or stop clusters."""
    login = await raw("GET", "login")
    xsrf = login.headers["Set-Cookie"].split("_xsrf=", 1)[1].split(";", 1)[0]
    token = jp_serverapp.identity_provider.token
    answer = await raw(
        "POST", "login", f"_xsrf={xsrf}&password={token}", {"Cookie": f"_xsrf={xsrf}"}
    )
    assert answer.code == 302, answer.code
    cookies = [c.split(";", 1)[0] for c in answer.headers.get_list("Set-Cookie")]
    session = "; ".join([*cookies, f"_xsrf={xsrf}"])

    assert (await raw("GET", f"{API}/clusters", None, {"Cookie": session})).code == 200
    for method, route, body in ROUTES:
        if method == "GET":
            continue
        refused = await raw(method, f"{API}/{route}", body, {"Cookie": session})
        assert refused.code == 403, (method, route, refused.code)
        assert b"_xsrf" in refused.body, (method, route, refused.code)
        # The same request with the token gets past the check (and fails on its own merits).
        bad = body.replace(b'"workers"', b'"wrkers"') if body else None
        allowed = await raw(method, f"{API}/{route}", bad, {"Cookie": session, "X-XSRFToken": xsrf})
        assert allowed.code in (400, 404), (method, route, allowed.code)
    assert manager.clusters() == []
