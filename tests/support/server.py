"""Fixtures for tests of the jupyter_server extension run in this process (pytest-jupyter)."""

from __future__ import annotations

import pytest

from pipejupyter.lifecycle import manager

API = "pipejupyter"


@pytest.fixture
def jp_server_config():
    return {"ServerApp": {"jpserver_extensions": {"pipejupyter": True}}}


@pytest.fixture
def restore_owner_kind():
    kind = manager.default_manager.owner_kind
    yield
    manager.default_manager.owner_kind = kind
