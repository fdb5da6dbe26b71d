"""GET /pipejupyter/profiles/{name}/options: the options form over REST, and starting with
chosen values as overrides (400 naming the key for a bad value)."""

from __future__ import annotations

import json

import pytest
from tornado.httpclient import HTTPClientError

from pipejupyter.lifecycle import manager
from tests.support.server import API, jp_server_config, restore_owner_kind  # noqa: F401 (fixtures)

pytest_plugins = ["pytest_jupyter.jupyter_server"]
pytestmark = pytest.mark.usefixtures("isolated", "no_leaks", "restore_owner_kind")


@pytest.fixture
def api(jp_fetch):
    async def call(method: str, *path: str, body=None):
        data = json.dumps(body) if body is not None else (b"" if method == "POST" else None)
        try:
            response = await jp_fetch(API, *path, method=method, body=data, request_timeout=120)
        except HTTPClientError as exc:
            response = exc.response
        text = response.body.decode() if response.body else ""
        return response.code, json.loads(text) if text else None

    return call


async def test_options_schema_of_a_profile(api):
    status, form = await api("GET", "profiles", "local", "options")
    assert status == 200, form
    assert (form["profile"], form["backend"]) == ("local", "local")
    fields = {f["key"]: f for f in form["fields"]}
    assert list(fields)[:3] == ["workers", "adapt_kwargs.minimum", "adapt_kwargs.maximum"]
    threads = fields["cluster_kwargs.threads_per_worker"]
    assert (threads["kind"], threads["value"], threads["origin"]) == ("int", 1, "default")
    assert threads["minimum"] == 1 and threads["maximum"] >= 4
    assert fields["workers"]["maximum"] == fields["adapt_kwargs.maximum"]["maximum"] > 0
    assert {"label", "help", "unit", "choices", "group", "nullable"} <= set(threads)


async def test_unknown_profile_is_404_with_a_suggestion(api):
    status, error = await api("GET", "profiles", "locl", "options")
    assert status == 404
    assert error["message"] == "no profile 'locl'"
    assert error["source"] == "local"  # the did-you-mean


async def test_start_with_chosen_values_and_a_bad_one_is_400_naming_it(api):
    status, error = await api(
        "POST",
        "clusters",
        body={"profile": "local", "overrides": {"cluster_kwargs.threads_per_worker": "many"}},
    )
    assert status == 400, error
    assert error["key"] == "profiles.local.cluster_kwargs.threads_per_worker"
    assert error["source"] == "override"
    assert manager.clusters() == []

    status, model = await api(
        "POST",
        "clusters",
        body={
            "profile": "local",
            "overrides": {"workers": 1, "cluster_kwargs.threads_per_worker": 2},
        },
    )
    assert status == 201, model
    try:
        from distributed import Client

        with Client(model["scheduler_address"], timeout=30) as client:
            assert set(client.nthreads().values()) == {2}
    finally:
        assert (await api("DELETE", "clusters", model["id"]))[0] == 204
