"""The index notebook links every example, and every example is executed by a test."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
TESTS = Path(__file__).resolve().parents[1]


def test_index_links_every_example_and_each_is_executed_by_a_test():
    index = nbformat.read(NOTEBOOKS / "00-index.ipynb", as_version=4)
    text = "\n".join(c.source for c in index.cells if c.cell_type == "markdown")
    linked = set(re.findall(r"\(([0-9]{2}-[\w-]+\.ipynb)\)", text))
    examples = {p.name for p in NOTEBOOKS.glob("0[1-9]-*.ipynb")}
    assert examples
    assert linked == examples
    test_sources = "\n".join(p.read_text() for p in TESTS.rglob("test_*.py"))
    for name in examples:
        assert name in test_sources, f"no test executes notebooks/{name}"


@pytest.mark.notebook
def test_index_notebook_executes(isolated):
    nb = nbformat.read(NOTEBOOKS / "00-index.ipynb", as_version=4)
    NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    output = nb.cells[1].outputs[0]["data"]["text/plain"]
    assert "01-quickstart.ipynb" in output
