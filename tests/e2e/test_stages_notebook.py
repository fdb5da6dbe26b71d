"""notebooks/04-pipeline-stages.ipynb in a real kernel: functions, CASA tasks on a simulated
MeasurementSet, a mapfile, a command line, and a re-run that skips what is done."""

from __future__ import annotations

import importlib.util
import os

import nbformat
import pytest

from tests.support.common import ROOT, require
from tests.support.notebooks import execute, kernel_env, text_of  # noqa: F401 - kernel_env is a fixture

pytestmark = [pytest.mark.notebook, pytest.mark.casa]
NOTEBOOK = ROOT / "notebooks" / "04-pipeline-stages.ipynb"
SITE_CONFIG = ROOT / ".ci-state" / "casa" / "config.py"


def test_pipeline_stages_notebook(kernel_env, monkeypatch):  # noqa: F811 - the imported fixture
    require(importlib.util.find_spec("casatasks") is not None, "casatasks (ci/casa.sh install)")
    config = os.environ.get("CASASITECONFIG") or (str(SITE_CONFIG) if SITE_CONFIG.is_file() else "")
    require(bool(config), "the offline CASA site config (ci/casa.sh install)")
    monkeypatch.setenv("CASASITECONFIG", config)  # the kernel, and its workers, inherit it
    work = kernel_env / "work"
    nb = execute(nbformat.read(NOTEBOOK, as_version=4), work)
    code = [c for c in nb.cells if c.cell_type == "code"]
    for cell in code:
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert not errors, (cell.source, errors)
    out = {c.source.splitlines()[0]: text_of(c) for c in code}

    assert "first three:" in out["def noise_rms(seed):"]
    assert "Dask tasks used: True" in out["def noise_rms(seed):"]
    quality = out["%%pipestage quality --over range(5) --as seed -o verdicts"]
    assert all(f"[{n}] seed {n}: rms" in quality for n in range(5))
    assert out["print(verdicts)"].strip().startswith("[")
    assert "'ok'" in out["print(verdicts)"]
    assert "['field-a.ms', 'field-b.ms']" in out["def simulate(name):"]
    listobs = out[
        'summaries = pipejupyter.run_stage("listobs", pipejupyter.casa("listobs", listfile=""), '
        'pipejupyter.glob("field-?.ms"))'
    ]
    assert "listobs(vis='field-a.ms', listfile='')" in listobs
    assert "fields: 1" in listobs
    peaks = eval(out["print('peak flux (Jy/beam):', list(peaks))"].split(":", 1)[1])
    assert len(peaks) == 2
    assert all(0.5 < p < 1.5 for p in peaks)
    assert out[
        "print(open('casa_commands.log').read().count('tclean('), 'tclean commands logged')"
    ].startswith("2 ")
    # the nested casampi session (mpi=2): iterations done, both servers ran major cycles
    parallel = eval(out["print(parallel[0])"])
    assert parallel["iterations"] > 0
    assert parallel["servers doing major cycles"] == ["MPIServer-1", "MPIServer-2"]
    assert set(parallel["session seconds"]) == {"setup", "task", "shutdown"}
    assert out["print('rows per MS:', list(flagged))"].startswith("rows per MS: [")
    assert (
        "[(0, True), (0, True)]"
        in out[
            'sizes = pipejupyter.run_stage("du", '
            'pipejupyter.command(["du", "-s", "--block-size=1K"]), mses)'
        ]
    )
    assert (
        "skipped: 2 of 2"
        in out[
            'again = pipejupyter.run_stage("listobs", pipejupyter.casa("listobs", listfile=""), '
            'pipejupyter.glob("field-?.ms"))'
        ]
    )
    history = out["%pipecluster stages"]
    for stage in ("rms", "quality", "simulate", "listobs", "image", "flagsummary", "du"):
        assert f" {stage} " in history
    assert (
        out["print('stored peaks:', list(pipejupyter.context.results('image')))"]
        == f"stored peaks: {peaks}\n"
    )
    assert (work / ".pipejupyter" / "context.sqlite").is_file()
