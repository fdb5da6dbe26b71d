"""CASA's own MPI, for real: casampi sessions nested in Dask workers, and a script that is
itself the MPI client of a casampi session starting Dask clusters (issue 17).

Real components only: casatasks + casampi (ci/casa.sh), OpenMPI (ci/mpi.sh), the SLURM of
ci/slurm.sh, a MeasurementSet simulated by ci/make_ms.py. The tclean problem is tiny
(64 px, 10 iterations, two major cycles) so each session costs its fixed overhead only.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import pipejupyter
from pipejupyter.stages.results import StageFailed
from pipejupyter.stages.run import run_stage
from pipejupyter.work.casa import COMMANDS_LOG, CasaResult
from pipejupyter.work.casampi_session import CasampiError, run_casampi_task
from pipejupyter.work.cpu_slots import CPU_RESOURCE, CpuSlots, worker_cpus
from tests.support.common import PYTHON, ROOT, local_client, require, wait_until
from tests.support.slurm import jobs_under, slurm_clean  # noqa: F401 (fixture)

pytestmark = [pytest.mark.casa, pytest.mark.mpi]
SITE_CONFIG = ROOT / ".ci-state" / "casa" / "config.py"
PRODUCTS = (".image", ".residual", ".psf", ".model", ".mask", ".pb", ".sumwt")
# Small enough for 2 cores; cyclefactor keeps all 10 iterations in one minor cycle, so
# tclean runs two major cycles (the PSF/residual one and one after the minor cycle).
TCLEAN = {
    "imsize": 64,
    "cell": "20arcsec",
    "niter": 10,
    "cyclefactor": 0.05,
    "weighting": "natural",
    "specmode": "mfs",
}
SLURM_SMALL = ["cluster_kwargs.memory=2GiB", "cluster_kwargs.walltime=00:20:00"]
CHILD = "pipejupyter.work.casampi_child"


@pytest.fixture(scope="module")
def casa_env():
    require(importlib.util.find_spec("casatasks") is not None, "casatasks (ci/casa.sh install)")
    require(importlib.util.find_spec("casampi") is not None, "casampi (ci/casa.sh install)")
    require(shutil.which("mpirun") is not None, "OpenMPI's mpirun (ci/mpi.sh install)")
    require(importlib.util.find_spec("mpi4py") is not None, "mpi4py (ci/mpi.sh install)")
    config = os.environ.get("CASASITECONFIG") or (str(SITE_CONFIG) if SITE_CONFIG.is_file() else "")
    require(
        bool(config) and os.path.isfile(config),
        "the offline CASA site config (ci/casa.sh install writes it)",
    )
    previous = os.environ.get("CASASITECONFIG")
    os.environ["CASASITECONFIG"] = config  # workers and jobs started below inherit it
    yield config
    if previous is None:
        os.environ.pop("CASASITECONFIG", None)


@pytest.fixture(scope="module")
def ms(casa_env, tmp_path_factory):
    path = tmp_path_factory.mktemp("ms") / "sim.ms"
    proc = subprocess.run(
        [PYTHON, str(ROOT / "ci" / "make_ms.py"), str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return str(path)


def pixels(image: str):
    from casatools import image as image_tool

    ia = image_tool()
    ia.open(image)
    try:
        return ia.getchunk()
    finally:
        ia.close()


@pytest.fixture(scope="module")
def serial_image(ms, tmp_path_factory):
    """The reference: the same tclean, serial, in this process."""
    folder = tmp_path_factory.mktemp("serial")
    here = os.getcwd()
    os.chdir(folder)  # a call outside a stage logs its command in the working directory
    try:
        pipejupyter.casa("tclean", vis=ms, imagename=str(folder / "img"), **TCLEAN).run()
    finally:
        os.chdir(here)
    return pixels(str(folder / "img.image"))


@pytest.fixture(scope="module")
def client(casa_env):
    with local_client(n_workers=1, threads_per_worker=2) as c:
        yield c


def session_processes() -> list[int]:
    """Ranks of any nested casampi session still alive on this machine."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if CHILD.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def remove_kept_folder(error: str) -> None:
    """A failed call keeps its session's files and names the folder: check it, remove it."""
    match = re.search(r"the session's files are kept in (\S+)\)", error)
    assert match, error[-500:]
    folder = Path(match.group(1))
    assert (folder / "casa.log").is_file()
    assert (folder / "mpirun.out").is_file()
    shutil.rmtree(folder)


def check_parallel_tclean(result: CasaResult, imagename: str, reference) -> None:
    import numpy as np

    for suffix in PRODUCTS:
        assert os.path.isdir(imagename + suffix), suffix
    assert result.mpi["servers"] == 2
    assert result.mpi["nprocs"] == 3
    assert result.value["iterdone"] == 10
    log = result.log
    assert any("setupCluster, Setting up 2 engines." in line for line in log)
    for server in ("MPIServer-1", "MPIServer-2"):  # both servers ran major cycles
        assert any(server in line and "executeMajorCycle" in line for line in log), server
    image = pixels(imagename + ".image")
    scale = float(np.max(np.abs(reference)))
    assert float(np.max(np.abs(image - reference))) <= 1e-4 * scale


def test_parallel_tclean_in_a_local_cluster_stage(client, ms, serial_image, tmp_path):
    imagename = str(tmp_path / "par")
    work = pipejupyter.casa("tclean", imagename=imagename, parallel=True, mpi=2, **TCLEAN)
    result = run_stage("par", work, [ms], client=client, workdir=tmp_path, progress=None)
    res = result[0]
    check_parallel_tclean(res, imagename, serial_image)
    assert res.mpi["setup"] > 0 and res.mpi["shutdown"] >= 0
    log = (tmp_path / COMMANDS_LOG).read_text()
    assert f"tclean(vis={ms!r}, imagename={imagename!r}" in log
    assert "parallel=True" in log
    # the item asked the scheduler for the session's CPUs (capped at the worker's budget)
    budget = client.run(worker_cpus)
    assert set(budget.values()) == {worker_cpus()}
    info = client.scheduler_info(n_workers=-1)["workers"]
    assert [w["resources"][CPU_RESOURCE] for w in info.values()] == [worker_cpus()]
    assert not session_processes()


def test_a_broken_input_fails_cleanly_with_the_log_tail(client, ms, tmp_path):
    missing = str(tmp_path / "missing.ms")
    work = pipejupyter.casa(
        "tclean", imagename=str(tmp_path / "bad"), parallel=True, mpi=2, **TCLEAN
    )
    started = time.monotonic()
    with pytest.raises(StageFailed) as info:
        run_stage("broken", work, [missing], client=client, workdir=tmp_path, progress=None)
    failure = info.value.result.failed[missing]
    assert "failed on the MPI client rank" in failure.error
    assert "must be a path that exists" in failure.error
    assert "CASA log (last lines):" in failure.error
    assert "MPI Enabled" in failure.error  # the tail is the session's own log
    remove_kept_folder(failure.error)
    assert not session_processes()
    assert f"FAILED\ntclean(vis={missing!r}" in (tmp_path / COMMANDS_LOG).read_text()
    assert time.monotonic() - started < 240
    # a typo in the task name fails before any MPI process starts
    with pytest.raises(StageFailed) as info:
        run_stage(
            "typo",
            pipejupyter.casa("tcleen", mpi=2),
            [ms],
            client=client,
            workdir=tmp_path,
            progress=None,
        )
    assert "did you mean 'tclean'" in info.value.result.failed[ms].error


def test_an_interrupted_session_leaves_no_mpi_process(casa_env, ms, tmp_path, monkeypatch):
    """A session cut short (here by its timeout, while the ranks import casatasks) is killed
    as a whole: mpirun and every rank, whatever process group each rank put itself in."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CasampiError, match="did not finish within 3 s and was killed") as info:
        run_casampi_task("tclean", {"vis": ms, "imagename": "cut", **TCLEAN}, 2, timeout=3)
    assert not session_processes()
    remove_kept_folder(str(info.value))


def _server_rank_at_work(rank: int) -> int | None:
    """The pid of casampi server ``rank`` once tclean has handed work to the servers."""
    for pid in session_processes():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            folder = Path(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[-2].decode())
            log = (folder / "casa.log").read_text(errors="replace")
        except (OSError, IndexError):
            continue
        if f"OMPI_COMM_WORLD_RANK={rank}".encode() in environ and "Setting up 2 engines" in log:
            return pid
    return None


def test_a_server_crash_fails_the_call_and_leaves_nothing(casa_env, ms, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    outcome: dict = {}

    def call() -> None:
        try:
            run_casampi_task(
                "tclean", {"vis": ms, "imagename": "crash", "parallel": True, **TCLEAN}, 2
            )
        except Exception as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=call)
    thread.start()
    server = wait_until(lambda: _server_rank_at_work(1), timeout=240, interval=0.2)
    assert server, "the session never reached tclean's parallel part"
    os.kill(server, signal.SIGKILL)
    thread.join(240)
    assert not thread.is_alive()
    error = outcome.get("error")
    assert isinstance(error, CasampiError), outcome
    assert "mpirun exit status" in str(error) or "a server failed" in str(error)
    assert "CASA log (last lines):" in str(error)
    assert "exited on signal 9" in str(error)  # mpirun's own words, not CASA's log again
    assert not session_processes()
    remove_kept_folder(str(error))


def _stamp(tag: str, seconds: float) -> tuple[str, float, float]:
    started = time.time()
    time.sleep(seconds)
    return tag, started, time.time()


def test_two_sessions_do_not_oversubscribe_one_worker(casa_env, tmp_path):
    """Two items that each need the worker's whole CPU budget run one after the other on a
    worker with two threads (mpirun(fn) shares the sizing with casa(..., mpi=N))."""
    with local_client(n_workers=1, threads_per_worker=2) as c:
        cpus = next(iter(c.run(worker_cpus).values()))
        result = run_stage(
            "sizing",
            pipejupyter.mpirun(_stamp, 1.5, nprocs=cpus),
            ["a", "b"],
            client=c,
            workdir=tmp_path,
            progress=None,
            batch=1,
        )
    (a, a0, a1), (b, b0, b1) = (ranks[0] for ranks in result)
    assert (a, b) == ("a", "b")
    assert a1 <= b0 or b1 <= a0, (a0, a1, b0, b1)


def test_the_worker_side_guard_serializes_what_the_scheduler_did_not_size():
    slots = CpuSlots(2)
    spans: list[tuple[float, float]] = []

    def session() -> None:
        with slots.hold(3) as held:  # larger than the budget: runs alone
            assert held == 2
            started = time.monotonic()
            time.sleep(0.3)
            spans.append((started, time.monotonic()))

    threads = [threading.Thread(target=session) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    (a0, a1), (b0, b1) = sorted(spans)
    assert a1 <= b0
    assert worker_cpus({"SLURM_CPUS_ON_NODE": "3"}) == 3


@pytest.mark.slurm
def test_parallel_tclean_in_a_slurm_worker_stage(slurm_clean, ms, serial_image):
    """The worker is a SLURM job (with SLURM step variables) asking for the session's CPUs."""
    work_dir = slurm_clean / "work"
    handle = pipejupyter.start(
        "slurm", workers=1, overrides=[*SLURM_SMALL, "cluster_kwargs.cores=3"], timeout=180
    )
    try:
        imagename = str(work_dir / "par-slurm")
        result = run_stage(
            "par-slurm",
            pipejupyter.casa("tclean", imagename=imagename, parallel=True, mpi=2, **TCLEAN),
            [ms],
            client=handle.client,
            workdir=work_dir,
            progress=None,
        )
        check_parallel_tclean(result[0], imagename, serial_image)
        info = handle.client.scheduler_info(n_workers=-1)["workers"]
        assert [w["resources"][CPU_RESOURCE] for w in info.values()] == [3]  # cores=3
        job = handle.client.run(lambda: os.environ.get("SLURM_JOB_ID"))
        assert set(job.values()) <= set(jobs_under(slurm_clean))
    finally:
        handle.stop(timeout=30)
    assert not session_processes()


VERSION_ONE = """
import json, os, sys
sys.path.insert(0, {root!r})
import casatasks  # ranks 1-2 become casampi servers in here and exit; rank 0 goes on
from casampi.MPIEnvironment import MPIEnvironment
import pipejupyter

def on_worker(vis):
    import os
    import pipejupyter
    from casampi.MPIEnvironment import MPIEnvironment
    leaked = sorted(n for n in os.environ if n.startswith(("OMPI_COMM", "OMPI_MCA", "PMIX_")))
    res = pipejupyter.casa("listobs", vis=vis, listfile="").run()
    return {{"leaked": leaked, "nfields": res.value["nfields"],
             "mpi": MPIEnvironment.is_mpi_enabled, "pid": os.getpid()}}

if __name__ == "__main__":
    assert MPIEnvironment.is_mpi_enabled and MPIEnvironment.is_mpi_client
    out = {{"rank": MPIEnvironment.mpi_processor_rank, "size": MPIEnvironment.mpi_world_size}}
    local = pipejupyter.start("local", workers=1, timeout=120)
    slurm = pipejupyter.start("slurm", workers=1, overrides={slurm!r}, timeout=180)
    try:
        for name, handle in (("local", local), ("slurm", slurm)):
            out[name] = pipejupyter.run_stage(
                "v1-" + name, on_worker, [{ms!r}], client=handle.client, progress=None
            )[0]
        # the script's own casampi servers still do its parallel work
        res = pipejupyter.casa("tclean", vis={ms!r}, imagename="v1", parallel=True,
                               **{tclean!r}).run()
        out["engines"] = any("Setting up 2 engines" in line for line in res.log)
        out["products"] = all(os.path.isdir("v1" + s) for s in {products!r})
    finally:
        slurm.stop(timeout=60)
        local.stop(timeout=60)
    out["stopped"] = not pipejupyter.clusters()
    print("RESULT " + json.dumps(out), flush=True)
"""


@pytest.mark.slurm
def test_version_one_the_script_is_the_mpi_client(slurm_clean, ms):
    """A script that is rank 0 of `mpirun -n 3` with casampi (servers on ranks 1-2) starts a
    local and a SLURM cluster; their workers carry no MPI identity and run CASA serially; the
    script still uses its own servers; the clusters stop before the MPI session ends."""
    work_dir = slurm_clean / "work"
    script = work_dir / "version_one.py"
    script.write_text(
        textwrap.dedent(
            VERSION_ONE.format(
                root=str(ROOT), ms=ms, slurm=SLURM_SMALL, tclean=TCLEAN, products=PRODUCTS
            )
        )
    )
    cmd = [
        shutil.which("mpirun"),
        "-n",
        "3",
        "--oversubscribe",
        *(["--allow-run-as-root"] if os.geteuid() == 0 else []),
        sys.executable,
        str(script),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=540, cwd=work_dir, env=env)
    output = (proc.stdout + proc.stderr)[-4000:]
    assert proc.returncode == 0, output
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line is not None, output
    out = json.loads(line.removeprefix("RESULT "))
    assert (out["rank"], out["size"]) == (0, 3)
    for name in ("local", "slurm"):
        assert out[name]["leaked"] == [], name
        assert out[name]["nfields"] == 1, name
        assert out[name]["mpi"] is False, name  # the worker is no MPI rank
    assert out["engines"] is True
    assert out["products"] is True
    assert out["stopped"] is True
    assert wait_until(lambda: not jobs_under(slurm_clean), timeout=30)
