"""Every worker count is bounded by max_workers, refused before anything is built.

One request for 99999999999999999999 workers once made the Jupyter server build worker
specs until the OOM killer ended it. The limit is checked when a profile is resolved
(`-n`, workers:, cluster_kwargs.n_workers, adapt ranges, dry-run) and again when a live
cluster is scaled or made adaptive; the error names the limit, the value and where to
raise it. The OOM reproduction runs in a subprocess under a 2 GiB address-space cap.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

import pipejupyter
from pipejupyter.config.loader import load_config
from pipejupyter.errors import ConfigError, LimitError
from pipejupyter.lifecycle import discovery, manager
from tests.support.common import ROOT, line_of, run_cli, write
from tests.support.magics import run, shell  # noqa: F401 (shell is a fixture)

pytestmark = [
    pytest.mark.usefixtures("isolated"),
    pytest.mark.filterwarnings("ignore:`Completer.complete` is pending deprecation"),
]

HUGE = 99999999999999999999
#: the address-space cap of the OOM reproduction
CAP = 2 * 2**30


@pytest.fixture(autouse=True)
def _no_allocation(monkeypatch):
    # Inside a SLURM allocation the local default follows SLURM_NTASKS; not here.
    monkeypatch.delenv("SLURM_NTASKS", raising=False)


def local_limit() -> int:
    """The documented default for local profiles: 4 workers per CPU this process may use."""
    return 4 * len(os.sched_getaffinity(0))


def assert_names_the_limit(exc: BaseException, value: int, limit: int, profile: str) -> None:
    text = str(exc)
    assert isinstance(exc, LimitError), repr(exc)
    assert isinstance(exc, ConfigError), repr(exc)
    assert str(value) in text, text
    assert f"max_workers={limit}" in text, text
    assert f"profiles.{profile}.max_workers" in text, text
    assert "--set" in text, text


# -- resolving a profile ---------------------------------------------------------------


def test_a_huge_worker_argument_is_refused_with_the_limit_and_where_to_raise_it():
    with pytest.raises(LimitError) as info:
        load_config().resolve("local", workers=HUGE)
    assert_names_the_limit(info.value, HUGE, local_limit(), "local")
    assert info.value.key == "workers"
    assert info.value.source == "argument"
    assert "4 per CPU" in str(info.value)


def test_the_local_default_limit_is_four_workers_per_cpu():
    limit = local_limit()
    spec = load_config().resolve("local", workers=limit)
    assert spec.workers == limit
    assert spec.max_workers == limit
    with pytest.raises(LimitError):
        load_config().resolve("local", workers=limit + 1)


def test_batch_profiles_default_to_a_thousand_workers():
    pytest.importorskip("dask_jobqueue")
    spec = load_config().resolve("slurm", workers=1000)
    assert spec.max_workers == 1000
    with pytest.raises(LimitError) as info:
        load_config().resolve("slurm", workers=1001)
    assert_names_the_limit(info.value, 1001, 1000, "slurm")


def test_max_workers_raises_the_limit_at_the_top_level_in_a_profile_and_by_set(isolated):
    top = write(
        isolated / "top.yaml",
        """
        pipecluster:
          max_workers: 500
        """,
    )
    assert load_config(top).resolve("local", workers=500).workers == 500
    both = write(
        isolated / "both.yaml",
        """
        pipecluster:
          max_workers: 500
          profiles:
            local:
              max_workers: 3
        """,
    )
    # The profile's own limit wins over the top-level one, and the error says where it is set.
    with pytest.raises(LimitError) as info:
        load_config(both).resolve("local", workers=4)
    assert_names_the_limit(info.value, 4, 3, "local")
    assert f"{both}:{line_of(both, 'max_workers: 3')}" in str(info.value)
    assert load_config(both).resolve("local", workers=3).workers == 3
    # --set max_workers=N is the top level; --set profiles.NAME.max_workers=N the profile.
    assert load_config(overrides=["max_workers=40"]).resolve("local", workers=40).workers == 40
    with pytest.raises(LimitError) as info:
        load_config(overrides=["max_workers=40"]).resolve("local", workers=41)
    assert "max_workers=40 (set by an override (--set))" in str(info.value)
    raised = load_config(both, overrides=["profiles.local.max_workers=9"])
    assert raised.resolve("local", workers=9).max_workers == 9


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, "an integer >= 1 or null"), (-5, "an integer >= 1"), ("many", "an integer >= 1")],
)
def test_max_workers_itself_is_checked_where_it_is_written(isolated, value, expected):
    path = write(
        isolated / "bad.yaml",
        f"""
        pipecluster:
          profiles:
            local:
              max_workers: {value}
        """,
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert f"{path}:4" in str(info.value)
    assert "max_workers" in str(info.value)
    assert expected in str(info.value)


def test_a_null_max_workers_means_the_backends_default(isolated):
    path = write(
        isolated / "null.yaml",
        """
        pipecluster:
          max_workers: null
          profiles:
            local:
              max_workers: null
        """,
    )
    assert load_config(path).resolve("local").max_workers == local_limit()


def test_configured_counts_are_checked_with_their_file_and_line(isolated):
    path = write(
        isolated / "counts.yaml",
        f"""
        pipecluster:
          profiles:
            big:
              backend: local
              workers: {HUGE}
            nworkers:
              backend: local
              cluster_kwargs:
                n_workers: {HUGE}
            adaptive:
              backend: local
              adapt_kwargs:
                minimum: 1
                maximum: {HUGE}
        """,
    )
    cfg = load_config(path)
    for profile, key, line in (
        ("big", "workers", f"workers: {HUGE}"),
        ("nworkers", "cluster_kwargs.n_workers", f"n_workers: {HUGE}"),
        ("adaptive", "adapt_kwargs.maximum", f"maximum: {HUGE}"),
    ):
        with pytest.raises(LimitError) as info:
            cfg.resolve(profile)
        assert_names_the_limit(info.value, HUGE, local_limit(), profile)
        assert info.value.source == f"{path}:{line_of(path, line)}", str(info.value)
        assert info.value.key == f"profiles.{profile}.{key}", info.value.key


def test_adapt_ranges_are_checked_as_arguments_and_as_jobs():
    with pytest.raises(LimitError) as info:
        load_config().resolve("local", adapt=(0, HUGE))
    assert_names_the_limit(info.value, HUGE, local_limit(), "local")
    assert info.value.key == "adapt.maximum"
    with pytest.raises(LimitError):
        load_config().resolve("local", adapt={"minimum": HUGE, "maximum": HUGE})
    pytest.importorskip("dask_jobqueue")
    # maximum_jobs becomes maximum workers (jobs x processes per job), then is checked.
    with pytest.raises(LimitError) as info:
        load_config(
            overrides={
                "profiles.slurm.cluster_kwargs.processes": 4,
                "profiles.slurm.adapt_kwargs": {"maximum_jobs": 300},
            }
        ).resolve("slurm")
    assert_names_the_limit(info.value, 1200, 1000, "slurm")


def test_non_integer_counts_from_free_form_mappings_are_refused(isolated):
    path = write(
        isolated / "floats.yaml",
        """
        pipecluster:
          profiles:
            local:
              cluster_kwargs:
                n_workers: 1.0e+20
        """,
    )
    with pytest.raises(ConfigError) as info:
        load_config(path).resolve("local")
    assert "an integer >= 0" in str(info.value)
    assert "n_workers" in str(info.value)


def test_a_number_too_long_to_print_is_still_refused_cleanly():
    with pytest.raises(LimitError) as info:
        load_config().resolve("local", workers=10**5000)
    assert "5001 digits" in str(info.value)


def test_dry_run_refuses_before_it_renders_anything():
    with pytest.raises(LimitError):
        manager.dry_run("local", workers=10_000_000)


# -- the command line and the magics ----------------------------------------------------


def test_cli_dry_run_and_demo_refuse_a_huge_n():
    for command in ("dry-run", "demo"):
        result = run_cli(command, "-n", str(HUGE), timeout=120)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert result.stdout == ""
        assert result.stderr.startswith(f"pipejupyter {command}: argument: workers: "), (
            result.stderr
        )
        assert "max_workers" in result.stderr
        assert "Traceback" not in result.stderr
        assert discovery.read_all() == []


@pytest.mark.usefixtures("no_leaks")
def test_magics_refuse_a_huge_n_before_starting(shell):
    from IPython.core.error import UsageError

    for line in (f"start -n {HUGE}", f"start -n {HUGE} --dry-run", f"start --adapt 0:{HUGE}"):
        with pytest.raises(UsageError) as info:
            run(shell, line)
        assert str(info.value).startswith("%pipecluster start: argument: "), str(info.value)
        assert f"max_workers={local_limit()}" in str(info.value)
    assert manager.clusters() == []
    assert discovery.read_all() == []


# -- a live cluster -----------------------------------------------------------------------


@pytest.mark.usefixtures("no_leaks")
def test_scale_and_adapt_of_a_live_cluster_are_bounded(shell):
    from IPython.core.error import UsageError

    handle = pipejupyter.start("local", workers=1, set_default=False, name="bounded")
    try:
        limit = local_limit()
        for call in (
            lambda: handle.scale(HUGE),
            lambda: handle.scale(limit + 1),
            lambda: handle.adapt(0, HUGE),
            lambda: handle.adapt(limit + 1, limit + 2),
        ):
            with pytest.raises(LimitError) as info:
                call()
            assert f"max_workers={limit}" in str(info.value)
            assert "profiles.local.max_workers" in str(info.value)
        with pytest.raises(UsageError) as info:
            run(shell, f"scale {HUGE} bounded")
        assert "max_workers" in str(info.value)
        with pytest.raises(UsageError):
            run(shell, f"adapt 0 {HUGE} bounded")
        # Nothing changed: one worker, no adaptivity, the recorded request unchanged.
        model = handle.model()
        assert model["workers"] == 1
        assert model["pending"] == 0
        assert model["adapt"] is None
        assert handle.spec.workers == 1
        assert discovery.read_all()[0]["workers_requested"] == 1
    finally:
        handle.stop()


@pytest.mark.usefixtures("no_leaks")
def test_a_configured_limit_bounds_the_live_cluster_too(isolated):
    path = write(
        isolated / "one.yaml",
        """
        pipecluster:
          profiles:
            local:
              max_workers: 1
        """,
    )
    handle = pipejupyter.start("local", workers=1, config=path, set_default=False)
    try:
        with pytest.raises(LimitError) as info:
            handle.scale(2)
        assert_names_the_limit(info.value, 2, 1, "local")
        assert f"{path}:4" in str(info.value)
        handle.scale(0)  # within the limit: still allowed
        assert handle.spec.workers == 0
    finally:
        handle.stop()


# -- the OOM reproduction -----------------------------------------------------------------

CAPPED = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({cap}, {cap}))
{body}
"""


def _capped(body: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    code = CAPPED.format(cap=CAP, body=body)
    t0 = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=Path.cwd(),
    )
    return result, time.monotonic() - t0


def test_oom_reproduction_start_under_a_memory_cap_fails_fast_with_the_limit():
    """``start(workers=10**8)`` built 10**8 worker specs; under a 2 GiB cap that was a
    MemoryError after seconds of allocation (without the cap: the OOM killer)."""
    assert resource.getrlimit(resource.RLIMIT_AS)[0] in (resource.RLIM_INFINITY,) or (
        resource.getrlimit(resource.RLIMIT_AS)[0] > CAP
    )
    result, seconds = _capped(
        "import pipejupyter\n"
        "try:\n"
        "    pipejupyter.start(workers=10**8, wait=False, set_default=False)\n"
        "except pipejupyter.ConfigError as exc:\n"
        "    print(type(exc).__name__, exc, file=sys.stderr)\n"
        "    sys.exit(3)\n"
    )
    assert result.returncode == 3, (result.returncode, result.stderr[-2000:])
    assert result.stderr.startswith("LimitError argument: workers: 100000000 workers"), (
        result.stderr[-2000:]
    )
    assert "max_workers" in result.stderr
    assert "MemoryError" not in result.stderr
    assert seconds < 60, seconds
    assert discovery.read_all() == []


def test_oom_reproduction_cli_dry_run_under_a_memory_cap():
    result, seconds = _capped(
        "from pipejupyter.cli.main import main\nsys.exit(main(['dry-run', '-n', '10000000']))\n"
    )
    assert result.returncode == 2, (result.returncode, result.stdout[-500:], result.stderr[-2000:])
    assert "max_workers" in result.stderr
    assert "MemoryError" not in result.stderr
    assert seconds < 60, seconds
