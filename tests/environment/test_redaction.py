"""Redaction of credentials inside values: URL passwords (``scheme://user:PASSWORD@host``)
and whole values of variables named in ``env.redact``, in every face that shows a value.

The faces are exercised for real: the ``pipejupyter`` command in a subprocess (its own
environment holds the secrets), the magics' text views, dry runs of local, SLURM and
Kubernetes profiles (job script and resource text; nothing is submitted), and the error of
a start that really fails.
"""

from __future__ import annotations

import importlib.util
import json
import time

import pytest
import yaml

import pipejupyter
from pipejupyter.environment.redaction import (
    REDACTED,
    redact_assignments,
    redact_mapping,
    redact_text,
    redact_tree,
    redact_urls,
    secret_values,
    url_passwords,
)
from pipejupyter.environment.workers import worker_environment
from pipejupyter.errors import ClusterError
from pipejupyter.lifecycle import manager
from pipejupyter.lifecycle.handle import ClusterHandle
from tests.support.common import ROOT, run_cli

pytestmark = pytest.mark.usefixtures("isolated")

HAVE_JOBQUEUE = importlib.util.find_spec("dask_jobqueue") is not None
HAVE_KUBERNETES = importlib.util.find_spec("dask_kubernetes") is not None

# -- the rule ---------------------------------------------------------------------------

URLS = [
    ("postgres://u:secret123@h/db", "postgres://u:********@h/db"),
    ("redis://:secret123@cache:6379/0", "redis://:********@cache:6379/0"),
    ("amqp://guest:secret123@mq:5672//", "amqp://guest:********@mq:5672//"),
    (
        "mongodb+srv://app:p%40ss!w0rd@cluster0.example.org/?retryWrites=true",
        "mongodb+srv://app:********@cluster0.example.org/?retryWrites=true",
    ),
    ("https://me:pa@ss@host.example.org/x", "https://me:********@host.example.org/x"),
    ("jdbc:postgresql://u:secret123@h:5432/db", "jdbc:postgresql://u:********@h:5432/db"),
    ("s3://KEYID:secret/123@bucket", "s3://KEYID:********@bucket"),
    ("HTTP://U:secret123@H", "HTTP://U:********@H"),
]
NOT_CREDENTIALS = [
    "tcp://127.0.0.1:8786",
    "tls://[::1]:8786",
    "https://user@host.example.org/x",
    "http://host:8080/path@version",
    "git@github.com:org/repo.git",
    "ssh://git@github.com:22/org/repo",
    "mailto:someone@example.org",
    "plain text with a colon: and an @ sign",
    "",
]


@pytest.mark.parametrize(("value", "shown"), URLS)
def test_url_passwords_are_redacted_in_any_value(value, shown):
    assert redact_urls(value) == shown
    assert redact_mapping({"DB_URL": value}) == {"DB_URL": shown}
    assert redact_tree({"a": [{"b": value}], "n": 3}) == {"a": [{"b": shown}], "n": 3}
    assert redact_text(f"could not connect to {value}: refused", []) == (
        f"could not connect to {shown}: refused"
    )
    assert redact_assignments(f"export DB_URL={value} X=1") == f"export DB_URL={shown} X=1"
    assert redact_urls({"k": [value, 1, None]}) == {"k": [shown, 1, None]}


@pytest.mark.parametrize("value", NOT_CREDENTIALS)
def test_values_without_a_url_password_are_shown_unchanged(value):
    assert redact_urls(value) == value
    assert redact_mapping({"ADDRESS": value}) == {"ADDRESS": value}
    assert url_passwords(value) == []


def test_url_passwords_are_secret_values_so_they_vanish_from_free_text():
    values = {"DB_URL": "postgres://u:secret123@h/db", "SHORT": "redis://:pw@h", "X": "1"}
    secrets = secret_values(values)
    assert "secret123" in secrets
    assert "pw" not in secrets  # too short to replace everywhere; the URL form is still caught
    # A driver that prints the password on its own, away from its URL:
    text = "FATAL: password authentication failed (password 'secret123' for user u)"
    assert "secret123" not in redact_text(text, secrets)
    assert "redis://:********@h" in redact_text("retrying redis://:pw@h", secrets)
    # Percent-encoded passwords are also removed in their decoded form.
    encoded = secret_values({"URL": "mongodb://app:p%40ssw0rd@h"})
    assert {"p%40ssw0rd", "p@ssw0rd"} <= set(encoded)
    assert url_passwords({"a": ["postgres://u:secret123@h/db"]}) == ["secret123"]
    assert url_passwords("redis://:pw@h") == []  # too short to replace outside its URL


def test_variables_named_in_env_redact_are_redacted_whole():
    env = worker_environment(
        {"pass": ["CONN_STRING"], "set": {"SITE_CODE": "named-secret-7"}, "redact": ["SITE_*"]},
        environ={"CONN_STRING": "Server=db;Password=connpass8"},
    )
    env.redact += ("CONN_STRING",)
    assert env.redacted() == {"CONN_STRING": REDACTED, "SITE_CODE": REDACTED}
    assert {"named-secret-7", "Server=db;Password=connpass8"} <= set(
        secret_values(env.variables, env.redact)
    )
    assert redact_tree({"env": {"set": {"SITE_CODE": "named-secret-7"}}}, ["SITE_*"]) == {
        "env": {"set": {"SITE_CODE": REDACTED}}
    }
    assert redact_assignments("SITE_CODE=named-secret-7 OK=1", ["SITE_*"]) == (
        f"SITE_CODE={REDACTED} OK=1"
    )


def test_the_url_rule_is_linear_on_huge_hostile_text():
    """A megabyte of hostile text takes about a second at most (linear in its length; a
    quadratic scan of these would take hours)."""
    hostile = [
        "a" * 1_000_000,
        "a://b:" * 150_000,
        "x://u:" + "p" * 1_000_000,
        "x://" + ":" * 1_000_000,
        "h://u:p@" * 100_000,
    ]
    for text in hostile:
        started = time.perf_counter()
        redact_text(text, ["secret123"])
        url_passwords(text)
        assert time.perf_counter() - started < 10, text[:20]


# -- every face ---------------------------------------------------------------------------

SECRETS = ["secret123", "brokerpass1", "named-secret-7", "connpass8", "cachepass9"]
ENVIRON = {
    "DB_URL": "postgres://u:secret123@h/db",
    "CONN_STRING": "Server=db;Password=connpass8",
}


@pytest.fixture
def profiles(isolated):
    """Profiles whose environment and settings carry credentials inside values."""
    batch = {
        "backend": "slurm",
        "workers": 1,
        "cluster_kwargs": {
            "cores": 1,
            "memory": "1GiB",
            "walltime": "00:10:00",
            "job_script_prologue": ["export CACHE=redis://:cachepass9@cache:6379/0"],
        },
    }
    k8s = {"backend": "kubernetes", "image": "ghcr.io/dask/dask:latest", "workers": 1}
    body = {
        "env": {
            "pass": ["DB_URL", "CONN_STRING"],
            "set": {"BROKER": "amqp://guest:brokerpass1@mq:5672//", "SITE_CODE": "named-secret-7"},
            "redact": ["SITE_*", "CONN_STRING"],
        },
        "profiles": {"local": {"backend": "local", "workers": 1}, "batch": batch, "k8s": k8s},
    }
    path = isolated / "work" / "config.yaml"
    path.write_text(yaml.safe_dump({"pipecluster": body}, sort_keys=False))
    return path


def cli(*args: str, cwd):
    done = run_cli(*args, cwd=cwd, env={**ENVIRON, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def assert_clean(text: str) -> None:
    leaks = [s for s in SECRETS if s in text]
    assert not leaks, f"{leaks} shown in:\n{text}"


def test_cli_env_shows_url_passwords_and_named_values_redacted(profiles):
    text = cli("env", cwd=profiles.parent)
    assert_clean(text)
    assert "DB_URL=postgres://u:********@h/db" in text
    assert "BROKER=amqp://guest:********@mq:5672//" in text
    assert f"CONN_STRING={REDACTED}" in text
    assert f"SITE_CODE={REDACTED}" in text
    data = json.loads(cli("env", "--json", cwd=profiles.parent))
    assert data["variables"]["DB_URL"] == "postgres://u:********@h/db"
    assert data["variables"]["CONN_STRING"] == REDACTED


@pytest.mark.parametrize("profile", ["local", "batch"])
def test_cli_config_shows_no_credentials(profiles, profile):
    for extra in ([], ["--json"], ["--origin"]):
        text = cli("config", "--profile", profile, *extra, cwd=profiles.parent)
        assert_clean(text)
        assert "amqp://guest:********@mq:5672//" in text
    if profile == "batch":
        assert "redis://:********@cache:6379/0" in text


def test_cli_dry_run_shows_no_credentials(profiles):
    text = cli("dry-run", "local", cwd=profiles.parent)
    assert_clean(text)
    assert "DB_URL: postgres://u:********@h/db" in text
    if HAVE_JOBQUEUE:
        text = cli("dry-run", "batch", cwd=profiles.parent)
        assert_clean(text)
        assert 'export BROKER="amqp://guest:********@mq:5672//"' in text
        assert "export DB_URL=postgres://u:********@h/db" in text
        assert "export CACHE=redis://:********@cache:6379/0" in text
        assert f"export CONN_STRING={REDACTED}" in text


def test_kubernetes_dry_run_resource_shows_no_credentials(profiles, monkeypatch):
    if not HAVE_KUBERNETES:
        pytest.skip("dask-kubernetes is not installed")
    for name, value in ENVIRON.items():
        monkeypatch.setenv(name, value)
    text = pipejupyter.dry_run("k8s", config=profiles)
    assert_clean(text)
    assert "postgres://u:********@h/db" in text.split("# DaskCluster resource", 1)[1]


def test_magic_text_views_show_no_credentials(profiles, monkeypatch):
    from pipejupyter.config.loader import load_config
    from pipejupyter.notebook.text_views import config_view, env_view

    for name, value in ENVIRON.items():
        monkeypatch.setenv(name, value)
    cfg = load_config([str(profiles)])
    for profile in ("local", "batch"):
        spec = cfg.resolve(profile)
        for origin in (False, True):
            text = config_view(cfg, spec, origin=origin)
            assert_clean(text)
            assert "amqp://guest:********@mq:5672//" in text
    _, backend = manager.prepare("local", config=profiles)
    text = env_view("local", backend.env)
    assert_clean(text)
    assert "DB_URL=postgres://u:********@h/db" in text


def test_handle_safe_removes_url_passwords_from_error_messages(profiles, monkeypatch):
    for name, value in ENVIRON.items():
        monkeypatch.setenv(name, value)
    spec, backend = manager.prepare("local", config=profiles)
    handle = ClusterHandle(spec, backend, "safe-test")
    message = (
        "start failed: could not reach postgres://u:secret123@h/db; "
        "the server said: password 'secret123' rejected; "
        "also tried https://me:another-pass@h2/x and CONN Server=db;Password=connpass8"
    )
    shown = handle.safe(message)
    assert_clean(shown)
    assert "another-pass" not in shown
    assert "postgres://u:********@h/db" in shown
    assert "https://me:********@h2/x" in shown


def test_a_failed_start_names_no_url_password(profiles, no_leaks):
    """The error of a start that really fails (the dashboard address is a URL with a
    password, which distributed splits apart in its message)."""
    with pytest.raises(ClusterError) as caught:
        pipejupyter.start(
            "local",
            config=profiles,
            overrides=["cluster_kwargs.dashboard_address=http://u:dashpass55@h:xx"],
            timeout=60,
        )
    assert "dashpass55" not in str(caught.value)
