"""%pipecluster through a real IPython shell: every subcommand, every error path, real clusters."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

from pipejupyter.lifecycle import manager
from pipejupyter.notebook import parser as magics_parser
from tests.support.common import PYTHON, ROOT, require
from tests.support.magics import (  # noqa: F401 (shell is a fixture)
    WIDGET_MIME,
    _mpi_names,
    _worker_env,
    ipython_shell,
    out,
    run,
    shell,
)

# Completer.complete() is the API IPython's own hooks answer; its successor is provisional.
pytestmark = pytest.mark.filterwarnings("ignore:`Completer.complete` is pending deprecation")


# -- loading ---------------------------------------------------------------------------


def test_load_ext_imports_no_optional_library(isolated):
    code = textwrap.dedent(
        """
        import sys, time
        from IPython.core.interactiveshell import InteractiveShell
        shell = InteractiveShell.instance()
        shell.run_line_magic("load_ext", "pipejupyter")
        heavy = ("distributed", "dask", "ipywidgets", "dask_jobqueue", "dask_gateway",
                 "dask_kubernetes", "casatasks", "mpi4py", "pipejupyter.notebook.cluster_widget",
                 "pipejupyter.notebook.stage_magic")
        print(sorted(m for m in heavy if m in sys.modules))
        print("pipecluster" in shell.magics_manager.magics["line"],
              "pipestage" in shell.magics_manager.magics["cell"])
        import pipejupyter.lifecycle.manager as m
        print(m.default_manager.owner_kind)
        """
    )
    done = subprocess.run(
        [PYTHON, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["[]", "True True", "kernel"]


def test_unload_and_reload(shell):
    shell.run_line_magic("unload_ext", "pipejupyter")
    assert "pipecluster" not in shell.magics_manager.magics["line"]
    with pytest.raises(UsageError):
        shell.run_line_magic("pipecluster", "help")
    shell.run_line_magic("load_ext", "pipejupyter")
    assert "start" in out(shell, "help")


# -- parsing and errors ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "message", "usage"),
    [
        ("bogus", "unknown subcommand 'bogus'", "usage: %pipecluster [-h] SUBCOMMAND"),
        ("start --frob", "unrecognized arguments: --frob", "usage: %pipecluster start"),
        (
            "start -n x",
            "argument -n/--workers: expected an integer >= 0, got 'x'",
            "usage: %pipecluster start",
        ),
        ("start -n -2", "expected an integer >= 0", "usage: %pipecluster start"),
        ("start --adapt 3", "expected MIN:MAX", "usage: %pipecluster start"),
        ("start --adapt 4:1", "minimum 4 is above maximum 1", "usage: %pipecluster start"),
        (
            "start -n 2 --adapt 1:2",
            "not allowed with argument -n/--workers",
            "usage: %pipecluster start",
        ),
        ("start --timeout 0", "expected a number of seconds > 0", "usage: %pipecluster start"),
        ("start --set novalue", "expected KEY=VALUE", "usage: %pipecluster start"),
        ("scale", "the following arguments are required: N", "usage: %pipecluster scale"),
        ("scale two", "expected an integer >= 0, got 'two'", "usage: %pipecluster scale"),
        ("adapt 1", "the following arguments are required: MAX", "usage: %pipecluster adapt"),
        (
            "connect",
            "the following arguments are required: ADDRESS|ID",
            "usage: %pipecluster connect",
        ),
        ("use", "the following arguments are required: NAME", "usage: %pipecluster use"),
        ("stop --all x", "--all: not allowed with argument NAME", "usage: %pipecluster stop"),
        ("logs -n 0", "expected an integer > 0", "usage: %pipecluster logs"),
        ("help nosuch", "unknown subcommand 'nosuch'", "usage: %pipecluster"),
        ("start 'unbalanced", "No closing quotation", "usage: %pipecluster"),
    ],
)
def test_bad_lines_raise_usage_error_with_usage(shell, line, message, usage):
    with pytest.raises(UsageError) as err:
        shell.run_line_magic("pipecluster", line)
    assert message in str(err.value)
    assert usage in str(err.value)
    assert not manager.clusters()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "start nosuch",
            "%pipecluster start: unknown profile 'nosuch'; accepted: htcondor, local, slurm",
        ),
        ("start locl", "did you mean 'local'?"),
        (
            "start --dry-run --set cluster_kwargs.bogus_kw=1",
            "LocalCluster does not accept 'bogus_kw'",
        ),
        ("config nosuch", "%pipecluster config: unknown profile 'nosuch'"),
        ("env nosuch", "%pipecluster env: unknown profile 'nosuch'"),
        ("start -f missing.yaml", "missing.yaml"),
        ("status nosuch", "%pipecluster status: no cluster 'nosuch' in this process"),
        ("scale 2", "%pipecluster scale: no cluster in this process"),
        ("logs", "%pipecluster logs: no cluster in this process"),
        ("use nosuch", "%pipecluster use: no cluster 'nosuch'"),
        ("connect nosuch", "%pipecluster connect: no running cluster 'nosuch'"),
    ],
)
def test_core_errors_become_one_line_usage_errors(shell, line, message):
    with pytest.raises(UsageError) as err:
        shell.run_line_magic("pipecluster", line)
    assert message in str(err.value)
    assert not manager.clusters()


def test_errors_show_no_traceback_in_a_cell(shell):
    with capture_output() as cap:
        result = shell.run_cell("%pipecluster start -n x")
    assert isinstance(result.error_in_exec, UsageError)
    assert "UsageError: argument -n/--workers" in cap.stderr
    assert "Traceback" not in cap.stdout + cap.stderr


def test_help_requests_never_exit(shell):
    for line in ("-h", "start -h", "start --help", "help", "help scale"):
        text = out(shell, line)
        assert "%pipecluster" in text


def test_help_and_docstring_match_the_parser(shell):
    overview = out(shell, "help")
    doc = shell.find_line_magic("pipecluster").__doc__
    assert doc.strip() == overview.strip()
    for name in magics_parser.subcommands():
        sub = magics_parser.subparser(name)
        assert magics_parser.usage_line(name) in overview
        detail = out(shell, f"help {name}")
        flags = [flag for action in sub._actions for flag in action.option_strings]
        metavars = [a.metavar for a in sub._actions if not a.option_strings and a.metavar]
        for token in flags + metavars:
            assert token in detail, (name, token)
    start_help = out(shell, "help start")
    for flag in (
        "-n N",
        "--adapt MIN:MAX",
        "-f FILE",
        "--set KEY=VALUE",
        "--name NAME",
        "--no-wait",
        "--timeout S",
        "--dry-run",
    ):
        assert flag in start_help


def test_the_registry_is_extensible(shell):
    calls = []

    @magics_parser.subcommand("probe", "a subcommand added by another module")
    @magics_parser.arg("value", metavar="VALUE")
    @magics_parser.arg("--twice", action="store_true")
    def probe(args, shell_):
        calls.append((args.value, args.twice, shell_ is shell))
        return args.value * (2 if args.twice else 1)

    try:
        assert shell.run_line_magic("pipecluster", "probe ab --twice") == "abab"
        assert calls == [("ab", True, True)]
        assert "probe" in out(shell, "help")
        assert "probe" in shell.find_line_magic("pipecluster").__doc__
        assert "probe" in shell.Completer.complete(line_buffer="%pipecluster pro", cursor_pos=16)[1]
    finally:
        magics_parser.unregister("probe")
    assert "probe" not in shell.find_line_magic("pipecluster").__doc__


def test_pipestage_is_reserved_and_loaded_lazily(shell, monkeypatch):
    assert "pipestage" in shell.magics_manager.magics["cell"]
    # An installation without the stages module: one clear UsageError, no traceback.
    monkeypatch.setitem(sys.modules, "pipejupyter.notebook.stage_magic", None)
    with pytest.raises(UsageError, match="pipeline stages are not available"):
        shell.run_cell_magic("pipestage", "", "x = 1\n")


def test_completion(shell, isolated):
    def complete(line):
        return shell.Completer.complete(line_buffer=line, cursor_pos=len(line))[1]

    assert {"stages", "start", "status", "stop"} <= set(complete("%pipecluster st"))
    assert set(complete("%pipecluster st")) <= {"stages", "start", "status", "stop"}
    (isolated / "work" / "config.yaml").write_text(
        "pipecluster:\n  profiles:\n    bigmem:\n      backend: local\n"
    )
    assert complete("%pipecluster start big") == ["bigmem"]
    assert complete("%pipecluster start -f x.yaml big") == ["bigmem"]
    assert complete("%pipecluster config --or") == ["--origin"]
    assert complete("%pipecluster help sca") == ["scale"]
    assert complete("%pipecluster env lo") == ["local"]


# -- configuration views (start nothing) -----------------------------------------------


def test_profiles_config_env_dry_run(shell, isolated):
    (isolated / "work" / "config.yaml").write_text(
        "pipecluster:\n  profiles:\n    local:\n      workers: 3\n      env:\n        set:\n"
        "          API_TOKEN: s3cret-value\n"
    )
    profiles = out(shell, "profiles")
    assert "*local" in profiles
    assert "slurm" in profiles
    assert "htcondor" in profiles
    assert f"{isolated / 'work' / 'config.yaml'}" in profiles  # where local was (re)defined

    config = out(shell, "config --origin")
    assert f"workers: 3  # {isolated / 'work' / 'config.yaml'}:4" in config
    assert "threads_per_worker: 1" in config
    assert "# default" in config
    assert "s3cret-value" not in config
    assert "API_TOKEN: '********'" in config
    assert "# files read, lowest priority first:" in config
    assert "workers: 3\n" in out(shell, "config local")
    assert "memory_limit: 1GiB  # override" in out(
        shell, "config --origin --set cluster_kwargs.memory_limit=1GiB"
    )

    env = out(shell, "env")
    assert "API_TOKEN=********" in env
    assert "s3cret-value" not in env
    assert f"PIPEJUPYTER_RUNTIME_DIR={isolated / 'runtime'}" in env
    assert "# MPI launch variables removed: none" in env

    dry = out(shell, "start --dry-run -n 5")
    assert "workers: 5" in dry
    assert "s3cret-value" not in dry
    assert not manager.clusters()


def test_dry_run_of_a_batch_profile_shows_its_job_script(shell):
    require(
        importlib.util.find_spec("dask_jobqueue") is not None,
        "dask-jobqueue (pip install 'pipejupyter[jobqueue]')",
    )
    dry = out(shell, "start slurm --dry-run -n 2 --set env.set.MY_API_TOKEN=abcdefgh")
    assert "backend: slurm" in dry
    assert "#SBATCH" in dry
    assert "dask_worker" in dry
    assert "abcdefgh" not in dry
    assert "MY_API_TOKEN=********" in dry
    assert not manager.clusters()


def test_env_inside_mpi_launch_and_slurm_allocation(shell, monkeypatch):
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "0")
    monkeypatch.setenv("PMIX_RANK", "0")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_NTASKS", "3")
    env = out(shell, "env")
    assert (
        "# MPI launch variables removed: OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE, PMIX_RANK"
        in env
    )
    assert (
        "# removed from batch submissions (enclosing SLURM job): SLURM_JOB_ID, SLURM_NTASKS" in env
    )
    assert "OMPI_COMM_WORLD_SIZE=" not in env
    assert "workers: 3" in out(shell, "config")  # the local default inside an allocation
