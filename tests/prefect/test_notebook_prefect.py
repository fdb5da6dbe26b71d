"""notebooks/05-prefect.ipynb in a real kernel: Arrakis' two flows (imaging on few big
workers, cutouts on many small ones), each on the cluster its own single-cluster file
describes, reporting to the temporary Prefect API of conftest.py."""

from __future__ import annotations

import re

import nbformat
import pytest

from tests.support.common import ROOT
from tests.support.notebooks import execute, kernel_env, text_of  # noqa: F401 (fixture)

pytestmark = [
    pytest.mark.notebook,
    pytest.mark.prefect,
    pytest.mark.usefixtures("kernel_env", "kernel_prefect_env"),
]
NOTEBOOK = ROOT / "notebooks" / "05-prefect.ipynb"


def _plain(text: str) -> str:
    """Without the terminal colours of Prefect's log lines."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def test_prefect_notebook_runs_two_flows_each_on_its_own_cluster(isolated, monkeypatch):
    # ipykernel forwards what its child processes (the local workers) write to the notebook,
    # except when it sees it runs under pytest: let the kernel see what a user's would.
    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)
    nb = execute(nbformat.read(NOTEBOOK, as_version=4), isolated / "work")
    code = [c for c in nb.cells if c.cell_type == "code"]
    for cell in code:
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert not errors, (cell.source, errors)
    out = {c.source.splitlines()[0]: _plain(text_of(c)) for c in code}
    # Prefect's handler shows the kernel's records as display data, the workers' reach
    # stderr: both are under the cells.
    logs = "".join(out.values())

    runners = out["Path(\"imaging.yaml\").write_text('''\\"].splitlines()
    assert runners[0].startswith("<PipejupyterTaskRunner profile 'imaging' (local backend)>")
    assert runners[1].startswith("<PipejupyterTaskRunner profile 'cutout' (local backend)>")
    assert "'minimum': 3, 'maximum': 3" in runners[1]

    images = out["images = imaging.with_options(task_runner=imaging_runner)(catalogue)"]
    assert "'field-a': 'field-a.npy'" in images
    assert (isolated / "work" / "field-b.npy").is_file()

    cutouts = out["peaks = cutouts.with_options(task_runner=cutout_runner)(images, catalogue)"]
    assert "clusters while the cutout flow runs: ['prefect-" in cutouts
    assert "12 cutouts" in cutouts
    worst = float(re.search(r"largest \|peak - flux\|: ([0-9.]+)", cutouts).group(1))
    assert worst < 0.1  # every stamp found its source

    assert out["pipejupyter.list_clusters()"].strip() == "[]"
    # Prefect's own logging, in the notebook as the flows ran.
    assert "Beginning flow run" in logs
    assert "for flow 'imaging'" in logs and "for flow 'cutouts'" in logs
    assert "Finished in state Completed()" in logs
    assert "Task run 'cutout-" in logs  # the workers' task states too
    assert "distributed.scheduler" not in logs  # the notebook quiets the scheduler's chatter
    assert "Starting pipejupyter profile 'cutout' (local backend)" in logs
