"""CASA tasks as stage work, on a simulated MeasurementSet, inside real Dask process workers."""

from __future__ import annotations

import functools
import importlib.util
import os
import subprocess

import pytest

import pipejupyter
from pipejupyter.stages.results import StageFailed
from pipejupyter.stages.run import run_stage
from pipejupyter.work.casa import COMMANDS_LOG, CasaResult, CasaTaskError
from tests.support.common import PYTHON, ROOT, local_client, require

pytestmark = pytest.mark.casa
SITE_CONFIG = ROOT / ".ci-state" / "casa" / "config.py"


@pytest.fixture(scope="module")
def casa_env():
    require(importlib.util.find_spec("casatasks") is not None, "casatasks (ci/casa.sh install)")
    config = os.environ.get("CASASITECONFIG") or (str(SITE_CONFIG) if SITE_CONFIG.is_file() else "")
    require(
        bool(config) and os.path.isfile(config),
        "the offline CASA site config (ci/casa.sh install writes it)",
    )
    previous = os.environ.get("CASASITECONFIG")
    os.environ["CASASITECONFIG"] = config  # workers spawned below inherit it
    yield config
    if previous is None:
        os.environ.pop("CASASITECONFIG", None)


@pytest.fixture(scope="module")
def mses(casa_env, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ms")
    out = []
    for name in ("first.ms", "second.ms"):
        path = folder / name
        proc = subprocess.run(
            [PYTHON, str(ROOT / "ci" / "make_ms.py"), str(path)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert path.is_dir(), proc.stderr[-2000:]
        out.append(str(path))
    return out


@pytest.fixture(scope="module")
def client(casa_env):
    with local_client(n_workers=2, threads_per_worker=1) as c:
        yield c


def test_listobs_over_measurement_sets(client, mses, tmp_path):
    result = run_stage(
        "listobs",
        pipejupyter.casa("listobs", listfile=""),
        mses,
        client=client,
        workdir=tmp_path,
        progress=None,
    )
    assert result.keys == mses
    for ms, res in zip(mses, result, strict=True):
        assert isinstance(res, CasaResult)
        assert res.value["nfields"] == 1
        assert res.value["numrecords"] > 0
        assert any("Begin Task: listobs" in line for line in res.log)
        assert any(ms in line for line in res.log)  # this call's lines, not another's
        assert not any(other in line for other in mses if other != ms for line in res.log)
        assert res.command == f"listobs(vis={ms!r}, listfile='')"
    log = (tmp_path / COMMANDS_LOG).read_text()
    for ms in mses:
        assert f"listobs(vis={ms!r}, listfile='')" in log
        assert f"item {ms!r}" in log


def calibrate_and_image(vis, workdir):
    """What a %%pipestage cell body does: several CASA calls, each run on the worker."""
    import os

    import pipejupyter

    name = os.path.basename(vis).removesuffix(".ms")
    flags = pipejupyter.casa("flagdata", vis=vis, mode="summary").run()
    split_ms = os.path.join(workdir, f"{name}-split.ms")
    pipejupyter.casa("split", vis=vis, outputvis=split_ms, datacolumn="data").run()
    image = os.path.join(workdir, name)
    pipejupyter.casa(
        "tclean",
        vis=split_ms,
        imagename=image,
        imsize=64,
        cell="20arcsec",
        niter=20,
        weighting="natural",
        specmode="mfs",
    ).run()
    stats = pipejupyter.casa("imstat", imagename=image + ".image").run()
    return {
        "rows": flags.value["total"],
        "peak": float(stats.value["max"][0]),
        "tclean_log": len(stats.log),
    }


def test_a_chain_of_tasks_in_one_item(client, mses, tmp_path):
    result = run_stage(
        "image",
        functools.partial(calibrate_and_image, workdir=str(tmp_path)),
        [mses[0]],
        client=client,
        workdir=tmp_path,
        progress=None,
        batch=1,
    )
    out = result[0]
    assert out["rows"] > 0
    assert 0.5 < out["peak"] < 1.5  # the simulated 1 Jy source
    log = (tmp_path / COMMANDS_LOG).read_text()
    order = [log.index(f"{task}(") for task in ("flagdata", "split", "tclean", "imstat")]
    assert order == sorted(order)


def test_casa_task_errors(client, mses, tmp_path):
    with pytest.raises(StageFailed) as info:
        run_stage(
            "typo",
            pipejupyter.casa("listobz"),
            [mses[0]],
            client=client,
            workdir=tmp_path,
            progress=None,
        )
    assert (
        "casatasks has no task 'listobz' (did you mean 'listobs'?)"
        in info.value.result.failed[mses[0]].error
    )
    with pytest.raises(StageFailed) as info:
        run_stage(
            "not-an-image",
            pipejupyter.casa("imstat", item_arg="imagename"),
            [mses[0]],
            client=client,
            workdir=tmp_path,
            progress=None,
        )
    assert "Unable to open image" in info.value.result.failed[mses[0]].message
    assert f"FAILED\nimstat(imagename={mses[0]!r})" in (tmp_path / COMMANDS_LOG).read_text()


def test_run_here_logs_the_command_in_the_working_directory(casa_env, mses, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = pipejupyter.casa("listobs", vis=mses[0], listfile="").run()
    assert res.value["nfields"] == 1
    assert res.duration > 0
    assert f"listobs(vis={mses[0]!r}, listfile='')" in (tmp_path / COMMANDS_LOG).read_text()
    with pytest.raises(CasaTaskError, match="did you mean 'tclean'"):
        pipejupyter.casa("tcleen").run()
