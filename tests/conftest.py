"""Shared fixtures: an isolated config/runtime world per test, and leak checks.

Plain helpers (``require``, ``wait_until``, ``ROOT``, ...) are in tests/support/common.py.
"""

from __future__ import annotations

import os

import pytest

# Helpers in tests/support that assert (e.g. clean_code_cells) report like test code does.
pytest.register_assert_rewrite("tests.support")

from tests.support.common import cmdline_of, live_children, wait_until  # noqa: E402


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """A fresh HOME, working directory and runtime dir; no config from the machine."""
    home = tmp_path / "home"
    work = tmp_path / "work"
    runtime = tmp_path / "runtime"
    for d in (home, work, runtime):
        d.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PIPEJUPYTER_RUNTIME_DIR", str(runtime))
    monkeypatch.delenv("PIPEJUPYTER_CONFIG", raising=False)
    monkeypatch.chdir(work)
    return tmp_path


@pytest.fixture
def no_leaks():
    """Fail if a test leaves child processes of this interpreter behind."""
    import pipejupyter.lifecycle.manager as manager

    before = live_children(os.getpid())
    yield
    manager.stop_all(timeout=10)

    def leaked() -> set[int]:
        return live_children(os.getpid()) - before

    if not wait_until(lambda: not leaked(), timeout=20):
        pytest.fail(
            f"processes left running: {[(p, cmdline_of(p)[:80]) for p in sorted(leaked())]}"
        )
