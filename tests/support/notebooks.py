"""Executing notebooks in a real ipykernel (the venv's python): the ``kernel_env`` fixture
and helpers to read what the cells printed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from nbclient import NotebookClient

from tests.support.common import ROOT, processes_with_env, wait_until


@pytest.fixture
def kernel_env(isolated, monkeypatch):
    """The environment the kernel inherits: isolated dirs, and this checkout importable."""
    paths = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
    runtime = str(isolated / "runtime")
    yield isolated
    left = wait_until(
        lambda: not processes_with_env("PIPEJUPYTER_RUNTIME_DIR", runtime), timeout=30
    )
    assert left, f"processes left running: {processes_with_env('PIPEJUPYTER_RUNTIME_DIR', runtime)}"


def execute(nb, cwd: Path):
    client = NotebookClient(
        nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    )
    client.execute()
    return nb


def text_of(cell) -> str:
    parts = []
    for output in cell.outputs:
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type in ("execute_result", "display_data"):
            parts.append(output.data.get("text/plain", ""))
    return "".join(parts)


def clean_code_cells(nb) -> list:
    """The notebook's code cells, after asserting that none shows an error or stderr output."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    for cell in code:
        errors = [
            o
            for o in cell.outputs
            if o.output_type == "error" or (o.output_type == "stream" and o.name == "stderr")
        ]
        assert not errors, (cell.source, errors)
    return code
