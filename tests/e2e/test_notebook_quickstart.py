"""Execute notebooks in a real ipykernel (the venv's python) and check what they printed.

The kernel gets the ``isolated`` environment (HOME, working directory and
PIPEJUPYTER_RUNTIME_DIR); afterwards no process may remain that carries that runtime dir.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from tests.support.common import ROOT
from tests.support.notebooks import clean_code_cells, execute, kernel_env, text_of  # noqa: F401 (kernel_env: fixture)

pytestmark = pytest.mark.notebook

QUICKSTART = ROOT / "notebooks" / "01-quickstart.ipynb"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def rich_outputs(cell) -> list[dict]:
    return [o.data for o in cell.outputs if o.output_type in ("execute_result", "display_data")]


def test_quickstart_notebook_runs_in_a_real_kernel(kernel_env):
    nb = execute(nbformat.read(QUICKSTART, as_version=4), kernel_env / "work")
    code = clean_code_cells(nb)
    by_source = {c.source.splitlines()[0]: c for c in code}

    assert "*local" in text_of(by_source["%pipecluster profiles"])
    started = text_of(by_source["cluster = %pipecluster start local -n 2"])
    assert started.startswith("started local (local, id ")
    assert ": 2 workers at tcp://127.0.0.1:" in started

    (shown,) = rich_outputs(by_source["cluster"])
    assert {WIDGET_MIME, "text/html", "text/plain"} <= set(shown)
    assert "2 workers, 2 threads" in shown["text/html"]

    work = text_of(by_source["import dask.array as da"])
    assert "default client is the cluster's: True" in work
    assert "sum of 0..9,999,999 = 49999995000000" in work
    assert "squares: [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]" in work

    assert text_of(by_source["%pipecluster scale 3"]) == "local: asked for 3 workers\nworkers: 3\n"
    (status,) = rich_outputs(by_source["%pipecluster status"])
    assert WIDGET_MIME in status
    assert "3 workers, 3 threads" in status["text/plain"]

    config = text_of(by_source["%pipecluster config --origin"])
    assert "# files read, lowest priority first:" in config
    assert "backend: local  # default" in config
    env = text_of(by_source["%pipecluster env"])
    assert f"PIPEJUPYTER_RUNTIME_DIR={kernel_env / 'runtime'}" in env
    assert "# MPI launch variables removed: none" in env
    listing = text_of(by_source["%pipecluster list"])
    assert " local " in listing
    assert "this kernel" in listing
    assert text_of(by_source["%pipecluster stop"]) == "stopped local\nstatus: stopped\n"


LIVE_CELLS = [
    "import sys\nprint(sys.executable)",
    "%load_ext pipejupyter",
    "c = %pipecluster start -n 1",
    "c",
    "from pipejupyter.notebook.cluster_widget import widget_for\n"
    "w = widget_for(c)\n"
    "print('live:', w.live)",
    "%pipecluster scale 2",
    # Awaiting hands the kernel's loop back: the widget's own task refreshes it meanwhile.
    "import asyncio, time\n"
    "deadline = time.monotonic() + 60\n"
    "while w.model['workers'] != 2 and time.monotonic() < deadline:\n"
    "    await asyncio.sleep(0.2)\n"
    "print('widget sees', w.model['workers'], 'workers')",
    "%pipecluster stop\n"
    "deadline = time.monotonic() + 20\n"
    "while w.live and time.monotonic() < deadline:\n"
    "    await asyncio.sleep(0.2)\n"
    "print('after stop:', w.status, 'live:', w.live)",
]


def test_widget_refreshes_itself_in_a_real_kernel(kernel_env):
    nb = execute(new_notebook(cells=[new_code_cell(s) for s in LIVE_CELLS]), kernel_env / "work")
    outputs = [text_of(c) for c in nb.cells]
    assert Path(outputs[0].strip()) == Path(sys.executable)  # the kernel runs this venv's python
    assert outputs[4] == "live: True\n"
    assert outputs[6] == "widget sees 2 workers\n"
    assert outputs[7] == "stopped local\nafter stop: stopped live: False\n"
