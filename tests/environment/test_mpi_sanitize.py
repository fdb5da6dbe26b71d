"""Real OpenMPI: a notebook or script started under mpirun can still start local workers.

Under ``mpirun -n 1``, a script that imports mpi4py at module top and starts process
workers: each spawned worker re-imports ``__main__`` and would call MPI_Init with the
parent's rank identity. pipejupyter removes the launch variables around every spawn.
The second test turns sanitization off to prove the first one can fail.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

from tests.support.common import require

pytestmark = [pytest.mark.mpi, pytest.mark.usefixtures("isolated")]

SCRIPT = textwrap.dedent(
    """
    from mpi4py import MPI  # at module top: re-imported by every spawned worker
    import sys
    import pipejupyter

    def square(x):
        return x * x

    if __name__ == "__main__":
        assert MPI.COMM_WORLD.Get_size() == 1
        overrides = sys.argv[1:]
        handle = pipejupyter.start(workers=2, overrides=overrides, timeout=40)
        total = sum(handle.client.gather(handle.client.map(square, range(10))))
        handle.stop()
        print("RESULT", total, flush=True)
    """
)


def _mpirun() -> list[str]:
    require(
        shutil.which("mpirun") is not None, "OpenMPI's mpirun (ci/system.sh installs openmpi-bin)"
    )
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        require(False, "mpi4py for the system OpenMPI (ci/mpi.sh install)")
    cmd = ["mpirun", "-n", "1"]
    if os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    return cmd


def _run(tmp_path, *overrides: str, timeout: float) -> tuple[int | None, str]:
    script = tmp_path / "under_mpirun.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen(
        [*_mpirun(), sys.executable, str(script), *overrides],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        cwd=tmp_path,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return None, out  # a hang


def test_local_profile_under_mpirun_runs_tasks(isolated):
    code, out = _run(isolated, timeout=120)
    assert code == 0, out[-3000:]
    assert "RESULT 285" in out


def test_same_script_without_sanitization_fails_or_hangs(isolated):
    code, out = _run(isolated, "mpi.sanitize=never", timeout=60)
    assert "RESULT 285" not in out
    assert code != 0  # None (hung, killed) or a failure exit status
