"""Prefect's own temporary API for the tests here, started once for the whole folder.

``prefect_test_harness`` runs a real Prefect server in a subprocess on a temporary SQLite
database. Starting it costs seconds, so one serves every test of this folder (and the
kernels they start, through PREFECT_API_URL). PREFECT_HOME points into a temporary folder
before Prefect is first imported: results and profiles never land in the user's
~/.prefect, so a rerun starts from nothing.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile

import pytest

from tests.support.common import require

_HOME = tempfile.mkdtemp(prefix="pipejupyter-prefect-home-")
os.environ["PREFECT_HOME"] = _HOME
# No telemetry: there is nobody to send it to, and each attempt costs a failed DNS lookup.
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
# Task logs still reach the console; not sending them to the API takes about a quarter of
# Prefect's CPU time per task off a 2-CPU machine.
os.environ["PREFECT_LOGGING_TO_API_ENABLED"] = "false"
#: seconds the harness may take to start its server (migrations on a busy 2-CPU machine)
HARNESS_TIMEOUT = 300


def require_prefect() -> None:
    require(
        importlib.util.find_spec("prefect") is not None
        and importlib.util.find_spec("prefect_dask") is not None,
        "prefect and prefect-dask (pip install -e '.[prefect]'; scripts/setup.sh installs them)",
    )


@pytest.fixture(scope="package")
def prefect_api():
    """The URL of a temporary Prefect API; flows of this process report to it."""
    require_prefect()
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=HARNESS_TIMEOUT):
        yield PREFECT_API_URL.value()
    shutil.rmtree(_HOME, ignore_errors=True)


@pytest.fixture
def kernel_prefect_env(prefect_api, monkeypatch):
    """Kernels started by the test report to the same temporary API."""
    monkeypatch.setenv("PREFECT_API_URL", prefect_api)
    return prefect_api
