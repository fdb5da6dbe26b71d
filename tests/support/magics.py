"""A real IPython shell with the extension loaded, and helpers to run %pipecluster in it."""

from __future__ import annotations

import os

import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from traitlets.config import Config

from pipejupyter.lifecycle import manager

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def ipython_shell() -> InteractiveShell:
    """The process's IPython shell; created without a history file, which would otherwise live
    in a test's temporary HOME and fail to write at interpreter exit."""
    if InteractiveShell.initialized():
        return InteractiveShell.instance()
    config = Config()
    config.HistoryManager.enabled = False
    return InteractiveShell.instance(config=config)


@pytest.fixture
def shell(isolated):
    kind = (
        manager.default_manager.owner_kind
    )  # loading marks this process as a kernel: undo that for other tests
    ip = ipython_shell()
    ip.extension_manager.load_extension("pipejupyter")
    manager.default_manager.owner_kind = (
        "kernel"  # already loaded by an earlier test: load() did not run again
    )
    yield ip
    ip.user_ns.pop("c", None)
    manager.default_manager.owner_kind = kind


def run(shell, line: str):
    """Run ``%pipecluster line``; returns (result, captured output)."""
    with capture_output() as cap:
        result = shell.run_line_magic("pipecluster", line)
    return result, cap


def out(shell, line: str) -> str:
    return run(shell, line)[1].stdout


def _worker_env(name):
    return os.environ.get(name)


def _mpi_names():
    return sorted(k for k in os.environ if k.startswith(("OMPI_", "PMIX_")))
