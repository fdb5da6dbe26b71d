"""dask-gateway's own auth convention (``auth: {type, kwargs}``) logs in, for real.

dask-gateway's configuration writes credentials as ``gateway.auth.kwargs`` handed to the
auth class; a profile (or a GatewayCluster file's ``cluster_kwargs.auth``) written that way
must log in as that user, never as the local user with an empty password.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import pipejupyter
from pipejupyter.errors import ConfigError
from tests.support.gateway import PASSWORD_VAR, gw, write_config  # noqa: F401 (fixture)

pytestmark = pytest.mark.gateway
DATA = Path(__file__).resolve().parents[1] / "data" / "real_configs"


def _started_as(gw, **start) -> list[str]:
    handle = pipejupyter.start(workers=1, timeout=120, **start)
    try:
        assert handle.client.submit(lambda: 41 + 1).result(timeout=60) == 42
        return gw.active()  # the cluster is listed for the user we logged in as
    finally:
        handle.stop()


def test_profile_auth_kwargs_log_in_as_that_user(gw, isolated):
    write_config(
        isolated / "work" / "config.yaml",
        gw,
        auth={
            "type": "basic",
            "kwargs": {"username": gw.user, "password": f"${PASSWORD_VAR}"},
        },
    )
    assert len(_started_as(gw, profile="gw")) == 1
    assert gw.active() == []
    shown = pipejupyter.dry_run("gw")
    assert gw.password not in shown
    assert "kwargs:" in shown and "username: '********'" in shown


def test_gateway_cluster_file_auth_kwargs_log_in(gw, isolated):
    text = (DATA / "dask_gateway_cluster.yaml").read_text()
    path = isolated / "work" / "gateway_cluster.yaml"
    path.write_text(text.replace("ADDRESS", gw.address).replace("USER", gw.user))
    (isolated / "work" / "config.yaml").unlink()
    assert len(_started_as(gw, config=path)) == 1
    assert gw.active() == []


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        (
            {"type": "basic", "username": "a", "kwargs": {"username": "b"}},
            "username is given twice, as profiles.gw.auth.username and as "
            "profiles.gw.auth.kwargs.username",
        ),
        (
            {"type": "basic", "kwargs": {"user": "b"}},
            "dask-gateway's basic auth takes no keyword 'user'; accepted: password, username",
        ),
        ({"type": "kerberos", "kwargs": {"x": 1}}, "accepted: no kwargs"),
    ],
)
def test_auth_kwargs_that_cannot_be_used_are_refused_before_any_request(
    gw, isolated, auth, message
):
    write_config(isolated / "work" / "config.yaml", gw, auth=auth)
    with pytest.raises(ConfigError) as err:
        pipejupyter.dry_run("gw")
    assert message in str(err.value)
    assert gw.active() == []
