"""Version 1 of issue 17 found this: in a script that is the client rank of a casampi
session, Open MPI's PMIx sets PMIX_MCA_* with the C library's setenv(). ``os.environ`` never
shows them, yet every spawned process inherits them, so sanitization must look there too."""

from __future__ import annotations

import ctypes
import os
import subprocess

from pipejupyter.environment.mpi import hidden_mpi_variables, mpi_sanitized


def _spawned_environment() -> str:
    # env=None: the child gets the C library's environment, as Dask's spawned workers do
    return subprocess.run(["env"], capture_output=True, text=True, check=True).stdout


def test_variables_the_mpi_library_set_itself_do_not_reach_spawned_processes(monkeypatch):
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "0")  # as under mpirun
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "3")
    ctypes.CDLL(None).setenv(b"PMIX_MCA_psec", b"native", 1)
    try:
        assert "PMIX_MCA_psec" not in os.environ
        assert hidden_mpi_variables() == {"PMIX_MCA_psec": "native"}
        with mpi_sanitized() as removed:
            inside = _spawned_environment()
        assert "PMIX_MCA_psec" in removed
        assert "PMIX_MCA_psec=" not in inside
        assert "OMPI_COMM_WORLD_RANK=" not in inside
        # afterwards the library finds its variable again; os.environ still does not list it
        assert "PMIX_MCA_psec=native" in _spawned_environment()
        assert "PMIX_MCA_psec" not in os.environ
        assert hidden_mpi_variables(policy="never") == {}
    finally:
        os.unsetenv("PMIX_MCA_psec")
