"""Nested MPI with real OpenMPI and mpi4py: ``pipejupyter.mpirun(fn, nprocs=N)`` on workers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

import pipejupyter
from pipejupyter.stages.results import StageFailed
from pipejupyter.stages.run import run_stage
from pipejupyter.work.nested_mpi import MpiError, mpi_child_environ
from tests.support.common import ROOT, local_client, require

pytestmark = pytest.mark.mpi


@pytest.fixture(scope="module", autouse=True)
def real_mpi():
    require(shutil.which("mpirun") is not None, "OpenMPI's mpirun (ci/mpi.sh install)")
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        require(False, "mpi4py for the system OpenMPI (ci/mpi.sh install)")


@pytest.fixture(scope="module")
def client():
    with local_client(n_workers=2, threads_per_worker=1) as c:
        yield c


def ranks(tag=None):
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    total = comm.allreduce(1)  # a real collective: every rank must take part
    print(f"rank {comm.Get_rank()} of {comm.Get_size()}")
    return {
        "tag": tag,
        "rank": comm.Get_rank(),
        "size": comm.Get_size(),
        "sum": total,
        "pid": os.getpid(),
        "library": MPI.Get_library_version().splitlines()[0],
    }


def test_ranks_report_n_processes_here():
    out = pipejupyter.mpirun(ranks, nprocs=3).run()
    assert [(r["rank"], r["size"], r["sum"]) for r in out] == [(0, 3, 3), (1, 3, 3), (2, 3, 3)]
    assert len({r["pid"] for r in out}) == 3
    assert "Open MPI" in out[0]["library"]


def test_on_workers_per_item_and_returned_from_a_function(client, tmp_path):
    result = run_stage(
        "mpi",
        pipejupyter.mpirun(ranks, nprocs=2),
        ["a", "b"],
        client=client,
        workdir=tmp_path,
        progress=None,
    )
    assert [[(r["tag"], r["rank"], r["size"]) for r in ranks_] for ranks_ in result] == [
        [("a", 0, 2), ("a", 1, 2)],
        [("b", 0, 2), ("b", 1, 2)],
    ]
    # a callable (or a %%pipestage cell) may return the request: the worker runs it
    sizes = run_stage(
        "mpi-n",
        lambda n: pipejupyter.mpirun(ranks, nprocs=n),
        [1, 3],
        client=client,
        workdir=tmp_path,
        progress=None,
    )
    assert [[r["size"] for r in out] for out in sizes] == [[1], [3, 3, 3]]
    worker_pids = set(client.run(os.getpid).values())
    assert not worker_pids & {
        r["pid"] for out in sizes for r in out
    }  # ranks are processes of their own


def broken(x):
    from mpi4py import MPI

    if MPI.COMM_WORLD.Get_rank() == 1:
        raise RuntimeError("rank one cannot cope")
    return x


def test_a_failing_rank_fails_the_item_with_its_traceback(client, tmp_path):
    with pytest.raises(
        MpiError, match="MPI rank 1 of 2 failed:(.|\n)*RuntimeError: rank one cannot cope"
    ):
        pipejupyter.mpirun(broken, 5, nprocs=2).run()
    with pytest.raises(StageFailed) as info:
        run_stage(
            "broken",
            pipejupyter.mpirun(broken, nprocs=2),
            [1],
            client=client,
            workdir=tmp_path,
            progress=None,
        )
    assert "rank one cannot cope" in info.value.result.failed["1"].error


def test_children_get_a_fresh_mpi_identity(monkeypatch):
    for name, value in {
        "OMPI_COMM_WORLD_RANK": "3",
        "OMPI_COMM_WORLD_SIZE": "7",
        "PMIX_RANK": "3",
        "OMPI_MCA_ess": "pmi",
    }.items():
        monkeypatch.setenv(name, value)
    env = mpi_child_environ()
    assert not [n for n in env if n.startswith(("OMPI_COMM", "PMIX_", "OMPI_MCA"))]
    assert [(r["rank"], r["size"]) for r in pipejupyter.mpirun(ranks, nprocs=2).run()] == [
        (0, 2),
        (1, 2),
    ]


def test_nested_mpi_from_a_notebook_that_is_itself_an_mpi_rank(tmp_path):
    """A kernel started under mpirun (with mpi4py initialised) starts local workers (which
    must not inherit its rank), and a stage on them runs its own mpirun: the one place
    where MPI variables are wanted."""
    script = tmp_path / "outer.py"
    script.write_text(
        textwrap.dedent(
            f"""
        import os, sys
        sys.path.insert(0, {str(ROOT)!r})
        from mpi4py import MPI
        import pipejupyter

        def worker_env(_):
            return sorted(n for n in os.environ if n.startswith(("OMPI_COMM", "PMIX_RANK")))

        def ranks():
            from mpi4py import MPI
            return (MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size())

        if __name__ == "__main__":
            assert MPI.COMM_WORLD.Get_size() == 1
            assert "OMPI_COMM_WORLD_RANK" in os.environ
            handle = pipejupyter.start(workers=1, timeout=60)
            try:
                leaked = pipejupyter.run_stage("env", worker_env, [0], progress=None)[0]
                nested = pipejupyter.run_stage(
                    "nested", pipejupyter.mpirun(ranks, nprocs=2), progress=None
                ).value
            finally:
                handle.stop()
            print("RESULT", leaked, nested, flush=True)
        """
        )
    )
    cmd = [
        "mpirun",
        "-n",
        "1",
        *(["--allow-run-as-root"] if os.geteuid() == 0 else []),
        sys.executable,
        str(script),
    ]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
        env={**os.environ, "PIPEJUPYTER_RUNTIME_DIR": str(tmp_path / "rt"), "HOME": str(tmp_path)},
    )
    assert "RESULT [] [(0, 2), (1, 2)]" in proc.stdout, (proc.stdout + proc.stderr)[-3000:]
