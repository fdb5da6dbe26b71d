"""notebooks/02-slurm.ipynb executed in a real kernel against the real SLURM."""

from __future__ import annotations

import nbformat
import pytest

from tests.support.common import ROOT
from tests.support.notebooks import clean_code_cells, execute, kernel_env, text_of  # noqa: F401 (fixture)
from tests.support.slurm import jobs_under, node_cpus, slurm_clean  # noqa: F401 (fixture)

pytestmark = [
    pytest.mark.notebook,
    pytest.mark.slurm,
    pytest.mark.usefixtures("slurm_clean", "kernel_env"),
]

NOTEBOOK = ROOT / "notebooks" / "02-slurm.ipynb"


def test_slurm_notebook_runs_against_real_slurm(isolated):
    # The notebook shows a worker waiting in the queue: on the test node (which declares
    # many CPUs) each job asks for half of them, so two run and the third waits, as on a
    # full partition.
    (isolated / "work" / "config.yaml").write_text(
        "pipecluster:\n  profiles:\n    slurm:\n      cluster_kwargs:\n"
        f"        job_cpu: {node_cpus() // 2}\n"
    )
    nb = execute(nbformat.read(NOTEBOOK, as_version=4), isolated / "work")
    code = clean_code_cells(nb)
    by_source = {c.source.splitlines()[0]: c for c in code}

    dry = text_of(by_source["%pipecluster start slurm -n 2 --dry-run"])
    assert "#SBATCH -J pipejupyter-slurm" in dry
    assert "#SBATCH --mem=4G" in dry
    assert "sbatch --test-only: accepted (would start at " in dry

    started = text_of(by_source["cluster = %pipecluster start slurm -n 2"])
    assert started.startswith("started slurm (slurm, id ")
    assert ": 2 workers at tcp://127.0.0.1:" in started

    work = text_of(by_source["import os"])
    assert "2 jobs run the workers" in work
    assert "sum of squares: 328350" in work

    pending = text_of(by_source["%pipecluster scale 3"])
    assert "2 running, 1 pending" in pending
    assert "pending  job " in pending
    assert "(pending)" in pending
    assert "(running)" in pending

    logs = text_of(by_source["logs = cluster.logs(lines=200)"])
    assert "job output files, e.g. job " in logs
    assert "Start worker at" in logs

    assert text_of(by_source["%pipecluster stop"]).endswith("status: stopped\n")
    assert not {j: s for j, s in jobs_under(isolated).items() if s not in ("COMPLETING",)}
