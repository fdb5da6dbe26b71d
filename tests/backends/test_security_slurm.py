"""`security: tls` for SLURM clusters (real SLURM of ci/slurm.sh): temporary certificates
reach the worker jobs, strangers are refused, and no key file outlives the cluster."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import pipejupyter
from pipejupyter.errors import ConfigError
from tests.support.security import assert_refused
from tests.support.slurm import jobs_under, slurm_clean  # noqa: F401 (fixture)

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_clean", "no_leaks")]
SMALL = ["cluster_kwargs.memory=1GiB", "cluster_kwargs.walltime=00:20:00"]


def _where_am_i() -> dict:
    return {"job": os.environ.get("SLURM_JOB_ID"), "pid": os.getpid()}


def _key_files(directory: Path) -> list[Path]:
    return [p for p in directory.rglob(".dask-jobqueue.worker.*") if p.is_file()]


def test_tls_slurm_cluster_runs_tasks_and_refuses_clients_without_its_certificate(isolated):
    from distributed.security import Security

    with _no_warning():
        handle = pipejupyter.start(
            "slurm", workers=1, overrides=[*SMALL, "security=tls"], timeout=180
        )
    try:
        address = handle.scheduler_address
        assert address.startswith("tls://127.0.0.1:")
        where = handle.client.submit(_where_am_i).result(timeout=60)
        assert where["job"] in jobs_under(isolated)  # the task ran inside a SLURM job
        worker_address = handle.model()["worker_info"][0]["address"]
        assert worker_address.startswith("tls://")
        # The job read its certificates from files beside its logs, readable by us only.
        logs = Path(handle.backend.log_directory)
        keys = _key_files(logs)
        assert {p.name.split(".")[3] for p in keys} >= {"ca_file", "cert", "key"}, keys
        assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in keys)
        assert not list(
            (isolated / "work").glob(".dask-jobqueue.*")
        )  # not in the working directory
        assert_refused(address)  # no certificate at all
        assert_refused(address, OSError, security=Security.temporary())  # another authority's
        assert_refused(address.replace("tls://", "tcp://"), OSError)  # plain TCP to the TLS port
        assert_refused(
            worker_address, OSError, security=Security.temporary()
        )  # nor to the worker directly
    finally:
        handle.stop(timeout=30)
    assert not _key_files(isolated), "certificate files left after stop"


def test_tls_dry_run_says_how_jobs_get_certificates_and_bad_values_are_refused(isolated):
    shown = pipejupyter.dry_run("slurm", overrides=[*SMALL, "security=tls"])
    assert "# security: the scheduler listens on tls://" in shown
    with pytest.raises(ConfigError, match="cannot use security 'ssl'.*accepted: null, tls"):
        pipejupyter.start("slurm", workers=1, overrides=[*SMALL, "security=ssl"], timeout=60)
    assert not jobs_under(isolated)
    assert pipejupyter.clusters() == []


class _no_warning:
    """dask-jobqueue warns when certificates go to the working directory: they must not."""

    def __enter__(self):
        import warnings

        self._catch = warnings.catch_warnings(record=True)
        self.seen = self._catch.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self._catch.__exit__(*exc)
        shared = [str(w.message) for w in self.seen if "shared_temp_directory" in str(w.message)]
        assert not shared, shared
