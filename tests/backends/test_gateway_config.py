"""The gateway backend's configuration rules: resolving profiles, environment, imports
(no server)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipejupyter.errors import ConfigError
from tests.support.common import ROOT

# -- resolving (no server needed) ---------------------------------------------------------


def _resolve(isolated: Path, body: dict, name: str = "gw"):
    from pipejupyter.config.loader import load_config

    path = isolated / "work" / "extra.yaml"
    path.write_text(yaml.safe_dump({"pipecluster": {"profiles": {name: body}}}))
    return load_config(path).resolve(name)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"backend": "gateway", "address": "http://g", "auth": {"type": "ldap"}},
            "unknown auth type 'ldap'; accepted: basic, kerberos, jupyterhub",
        ),
        (
            {
                "backend": "gateway",
                "address": "http://g",
                "auth": {"password": "x", "password_env": "Y"},
            },
            "give either password or password_env, not both",
        ),
        ({"backend": "gateway"}, "a gateway profile needs an address"),
        (
            {"backend": "gateway", "adress": "http://g"},
            "unknown key 'adress' (did you mean 'address'?)",
        ),
        (
            {"backend": "gateway", "address": "http://g", "proxy_address": [1]},
            "expected an address or a port number",
        ),
        (
            {
                "backend": "gateway",
                "address": "http://g",
                "auth": {"type": "basic", "pasword": "x"},
            },
            "did you mean 'password'?",
        ),
    ],
)
def test_profile_errors(isolated, body, message):
    with pytest.raises(ConfigError) as info:
        _resolve(isolated, body)
    assert message in str(info.value)
    assert "extra.yaml" in str(info.value)


def test_gateway_cluster_class_file_is_translated(isolated):
    from pipejupyter.config.loader import load_config

    path = isolated / "work" / "gateway.yaml"
    path.write_text(
        "cluster_class: dask_gateway.GatewayCluster\n"
        "cluster_kwargs:\n  address: http://g:8000\n  auth: jupyterhub\n  worker_cores: 2\n"
        "  shutdown_on_close: false\n"
    )
    spec = load_config(path).resolve("gateway")
    assert spec.backend == "gateway"
    assert spec.cluster_kwargs == {}
    assert spec.options == {
        "address": "http://g:8000",
        "auth": {"type": "jupyterhub"},
        "options": {"worker_cores": 2},
    }
    assert any("gateway cluster options" in n for n in spec.notes)


def test_environment_without_a_gateway_option_warns_with_names():
    from dask_gateway.options import Options

    from pipejupyter.backends.gateway.options import fill_options

    # The server's option spec as GET /api/v1/options sends it, without an environment field.
    spec = [
        {
            "field": "worker_cores",
            "label": "cores",
            "default": 1,
            "spec": {"type": "int", "min": 1, "max": 4},
        }
    ]
    submit, problems = fill_options(
        Options._from_spec(spec), {}, {"PJ_A": "1", "PJ_B": "2"}, address="http://g", key="options"
    )
    assert submit == {"worker_cores": 1}
    assert problems == [
        "the gateway at http://g has no environment option (its options: worker_cores), "
        "so these variables do not reach its workers: PJ_A, PJ_B"
    ]
    # With one (named env here), variables go through it; the profile's own values win.
    spec.append({"field": "env", "label": "env", "default": {}, "spec": {"type": "mapping"}})
    submit, problems = fill_options(
        Options._from_spec(spec),
        {"env": {"PJ_B": "mine"}},
        {"PJ_A": "1", "PJ_B": "2"},
        address="http://g",
        key="options",
    )
    assert submit["env"] == {"PJ_A": "1", "PJ_B": "mine"}
    assert problems == []


def test_remote_environment_keeps_machine_paths_and_pattern_secrets_here():
    from pipejupyter.environment.remote import remote_environment
    from pipejupyter.environment.workers import worker_environment

    environ = {
        "PATH": "/here/bin",
        "PJ_TOKEN": "t0ken-value",
        "PJ_PLAIN": "x",
        "OMPI_COMM_WORLD_RANK": "0",
        "EXACT_KEY": "k3y-value",
    }
    env = worker_environment(
        {"pass": ["PATH", "PJ_*", "OMPI_*", "EXACT_KEY"], "set": {"SET_TOKEN": "s"}},
        environ=environ,
    )
    send, notes = remote_environment(env, ["PATH", "PJ_*", "OMPI_*", "EXACT_KEY"], "gateway")
    assert send == {"PJ_PLAIN": "x", "EXACT_KEY": "k3y-value", "SET_TOKEN": "s"}
    assert "PATH" in notes[0]
    assert "PJ_TOKEN" in notes[1]
    assert not any("t0ken-value" in n for n in notes)


def test_import_does_not_load_dask_gateway():
    code = (
        "import sys, pipejupyter.backends.gateway.backend, pipejupyter.backends.kubernetes; "
        "print('dask_gateway' in sys.modules, 'dask_kubernetes' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.stdout.split() == ["False", "False"], out.stderr
