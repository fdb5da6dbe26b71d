"""Pipeline stages on workers that are real SLURM jobs (ci/slurm.sh): the worker side of
run_stage must import and report from inside a job, and the context must record it."""

from __future__ import annotations

import os
import sys

import cloudpickle
import pytest

import pipejupyter
from pipejupyter.stages import context
from pipejupyter.stages.run import run_stage
from tests.support.slurm import jobs_under, slurm_clean  # noqa: F401 (fixture)

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_clean", "no_leaks")]
SMALL = ["cluster_kwargs.memory=1GiB", "cluster_kwargs.walltime=00:20:00"]
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _in_job(marker: str):
    def work(x: int) -> dict:
        print(f"item {x} in job {os.environ.get('SLURM_JOB_ID')}")
        if x == 3 and not os.path.exists(marker):  # a shared file: the retry, on any job, succeeds
            open(marker, "w").close()
            raise RuntimeError("first attempt of item 3 fails")
        return {"x": x * x, "job": os.environ.get("SLURM_JOB_ID")}

    return work


def test_stage_runs_inside_slurm_jobs_with_retries_and_context(isolated):
    work = isolated / "work"
    handle = pipejupyter.start("slurm", workers=2, overrides=SMALL, timeout=180)
    try:
        fn = _in_job(str(work / "seen-3"))
        result = run_stage(
            "squares",
            fn,
            list(range(8)),
            retries=1,
            client=handle.client,
            progress=None,
            workdir=work,
        )
        assert [r["x"] for r in result] == [x * x for x in range(8)]
        jobs = set(jobs_under(isolated))
        assert len(jobs) == 2
        assert {r["job"] for r in result} <= jobs  # every item ran inside a job
        tries = context.attempts("squares", "3", workdir=work)
        assert [(a["attempt"], a["outcome"]) for a in tries] == [(1, "failed"), (2, "done")]
        assert "first attempt of item 3 fails" in tries[0]["error"]
        assert {r["status"] for r in context.items("squares", workdir=work)} == {"done"}
        again = run_stage(
            "squares",
            fn,
            list(range(8)),
            retries=1,
            client=handle.client,
            progress=None,
            workdir=work,
        )
        assert list(again) == list(result), again.stats
        assert again.stats["skipped"] == 8, again.stats
    finally:
        handle.stop(timeout=30)
