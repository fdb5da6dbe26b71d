"""A gateway password appears in no output: dry-run, model, record, reprs, discovery files,
logs, errors, CLI (REAL dask-gateway-server)."""

from __future__ import annotations

import json
import logging
import warnings

import pytest

import pipejupyter
from pipejupyter.errors import ClusterError, ConfigError
from pipejupyter.lifecycle import manager
from tests.support.common import ROOT, run_cli
from tests.support.gateway import bounded, gw, write_config  # noqa: F401  (gw is a fixture)
from tests.support.lab import free_port

# -- secrets ------------------------------------------------------------------------------


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.mark.gateway
def test_password_never_shown(gw, isolated):
    """A password written in the file (the worst case) appears in no output at all."""
    assert len(gw.password) >= 8, "the test needs a password that cannot occur by chance"
    write_config(
        isolated / "work" / "config.yaml",
        gw,
        auth={"type": "basic", "username": gw.user, "password": gw.password},
    )
    collect = _Collect()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(collect)
    root.setLevel(logging.DEBUG)
    shown: list[str] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            shown.append(pipejupyter.dry_run("gw"))
            handle = pipejupyter.start("gw", timeout=120)
            try:
                shown += [
                    json.dumps(handle.model()),
                    json.dumps(handle.record()),
                    repr(handle),
                    repr(handle.backend),
                    json.dumps(manager.list_clusters(), default=str),
                    json.dumps(handle.logs(scheduler=True, lines=200)),
                    *(p.read_text() for p in (isolated / "runtime").glob("*.json")),
                ]
            finally:
                handle.stop()
            # Failing starts with the literal password: the error texts are clean too.
            for override in (f"address=http://127.0.0.1:{free_port()}", "options.worker_cores=99"):
                box = bounded(lambda o=override: pipejupyter.start("gw", overrides=[o]))
                assert isinstance(box.get("error"), (ClusterError, ConfigError)), box
                shown.append(str(box["error"]))
        shown += [str(w.message) for w in caught]
    finally:
        root.removeHandler(collect)
        root.setLevel(old_level)
    cli = run_cli(
        "config",
        "--profile",
        "gw",
        "--origin",
        cwd=isolated / "work",
        env={"PYTHONPATH": str(ROOT)},
    )
    dry = run_cli("dry-run", "gw", cwd=isolated / "work", env={"PYTHONPATH": str(ROOT)})
    shown += [cli.stdout, cli.stderr, dry.stdout, dry.stderr, *collect.lines]
    assert cli.returncode == 0
    assert dry.returncode == 0
    assert "password: '********'" in shown[0]
    assert "password: '********'" in cli.stdout
    leaks = [text[:200] for text in shown if gw.password in text]
    assert not leaks
