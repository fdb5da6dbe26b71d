"""GET /pipejupyter/profiles carries configuration warnings (repeated keys, unknown
labextension keys, ...) as the CLI prints them, file:line first, and bounded in number
and length so a hostile file cannot bloat the list the sidebar polls."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from tornado.httpclient import HTTPClientError

from pipejupyter.server.service import MAX_WARNING_CHARS, MAX_WARNINGS, MAX_WARNINGS_TOTAL
from tests.support.server import API, jp_server_config, restore_owner_kind  # noqa: F401 (fixtures)

pytest_plugins = ["pytest_jupyter.jupyter_server"]
pytestmark = pytest.mark.usefixtures("isolated", "no_leaks", "restore_owner_kind")

CASA = Path(__file__).resolve().parents[1] / "data" / "real_configs" / "casa_pipeline_config.yaml"


@pytest.fixture
def profiles(jp_fetch):
    async def call() -> dict:
        try:
            response = await jp_fetch(API, "profiles", method="GET", request_timeout=60)
        except HTTPClientError as exc:
            response = exc.response
        assert response.code == 200, response.body
        return json.loads(response.body)

    return call


async def test_repeated_keys_of_a_casa_pipeline_file_reach_every_profile(profiles):
    config = Path.cwd() / "config.yaml"
    shutil.copy(CASA, config)
    data = await profiles()
    cachedir = (
        f"{config}:76: casaconfig.cachedir is written twice (lines 72 and 76); read as PyYAML "
        "reads it, the last one counts (both say the same)"
    )
    user_site = f"{config}:82: casaconfig.user_site is written twice (lines 69 and 82)"
    assert data["warnings"][0] == cachedir
    assert data["warnings"][1].startswith(user_site)
    assert data["warnings_more"] == 0
    by_name = {p["name"]: p for p in data["profiles"]}
    assert "local" in by_name
    for profile in by_name.values():
        # file-level warnings apply to every profile: a start of any of them raises them
        assert cachedir in profile["warnings"], profile
        assert any(w.startswith(user_site) for w in profile["warnings"]), profile
        assert profile["warnings_more"] == 0

    # The same server, the file fixed: no warnings anywhere.
    config.write_text("pipecluster:\n  profiles:\n    small:\n      backend: local\n")
    data = await profiles()
    assert data["warnings"] == []
    by_name = {p["name"]: p for p in data["profiles"]}
    assert (by_name["small"]["warnings"], by_name["small"]["warnings_more"]) == ([], 0)
    assert by_name["local"]["warnings"] == []


async def test_warnings_are_bounded_in_number_and_length(profiles):
    long_key = "k" * 1000  # PyYAML takes plain keys up to 1024 characters
    keys = f"  {long_key}: 1\n" + "".join(f"  unknown{i}: 1\n" for i in range(MAX_WARNINGS + 9))
    (Path.cwd() / "config.yaml").write_text(
        "labextension:\n  factory:\n    module: distributed\n    class: LocalCluster\n"
        + keys
        + "pipecluster:\n  profiles:\n    hpc:\n      backend: slurm\n"
        + "      cluster_kwargs:\n        interface: nosuchif0\n"
    )
    data = await profiles()
    # A profile's own warning comes first: the file-level ones cannot push it out.
    hpc = next(p for p in data["profiles"] if p["name"] == "hpc")
    assert "nosuchif0" in hpc["warnings"][0], hpc["warnings"]
    assert hpc["warnings_more"] == 11
    assert hpc["warnings"][1:] == data["warnings"][:-1]
    for model in (data, *(p for p in data["profiles"] if p is not hpc)):
        assert len(model["warnings"]) == MAX_WARNINGS, model["warnings"]
        assert model["warnings_more"] == 10  # of the 30 unknown keys
        assert all(len(w) <= MAX_WARNING_CHARS for w in model["warnings"])
    config = Path.cwd() / "config.yaml"
    first, second = data["warnings"][:2]
    assert first.startswith(f"{config}:5: labextension.kkk") and first.endswith("...")
    assert len(first) == MAX_WARNING_CHARS
    assert second.startswith(f"{config}:6: labextension.unknown0 is a dask-labextension setting")
    assert len(json.dumps(data)) < 20 * MAX_WARNINGS * MAX_WARNING_CHARS


async def test_file_level_warnings_are_not_repeated_without_bound_over_many_profiles(profiles):
    # Every profile carries the file's warnings; 500 profiles x 20 texts would be 10,000.
    keys = "".join(f"  unknown{i}: 1\n" for i in range(MAX_WARNINGS))
    many = "".join(f"    p{i}:\n      backend: local\n" for i in range(500))
    (Path.cwd() / "config.yaml").write_text(
        "labextension:\n  factory:\n    module: distributed\n    class: LocalCluster\n"
        + keys
        + "pipecluster:\n  profiles:\n"
        + many
    )
    data = await profiles()
    models = [data, *data["profiles"]]
    assert sum(len(m["warnings"]) for m in models) == MAX_WARNINGS_TOTAL
    # the counts stay true: every model still says it has MAX_WARNINGS warnings
    assert all(len(m["warnings"]) + m["warnings_more"] == MAX_WARNINGS for m in models)
    assert data["warnings"] == [w for w in data["warnings"] if "unknown" in w]
    assert len(data["warnings"]) == MAX_WARNINGS
