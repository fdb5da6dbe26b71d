"""%pipecluster through a real IPython shell: every subcommand, every error path, real clusters."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from traitlets.config import Config

from pipejupyter import discovery, magics_parser, manager
from tests.conftest import PYTHON, ROOT, require, wait_until

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
# Completer.complete() is the API IPython's own hooks answer; its successor is provisional.
pytestmark = pytest.mark.filterwarnings("ignore:`Completer.complete` is pending deprecation")


def ipython_shell() -> InteractiveShell:
    """The process's IPython shell; created without a history file, which would otherwise live
    in a test's temporary HOME and fail to write at interpreter exit."""
    if InteractiveShell.initialized():
        return InteractiveShell.instance()
    config = Config()
    config.HistoryManager.enabled = False
    return InteractiveShell.instance(config=config)


@pytest.fixture
def shell(isolated):
    kind = manager.OWNER_KIND  # loading marks this process as a kernel: undo that for other tests
    ip = ipython_shell()
    ip.extension_manager.load_extension("pipejupyter")
    manager.set_owner_kind("kernel")  # already loaded by an earlier test: load() did not run again
    yield ip
    ip.user_ns.pop("c", None)
    manager.set_owner_kind(kind)


def run(shell, line: str):
    """Run ``%pipecluster line``; returns (result, captured output)."""
    with capture_output() as cap:
        result = shell.run_line_magic("pipecluster", line)
    return result, cap


def out(shell, line: str) -> str:
    return run(shell, line)[1].stdout


def _worker_env(name):
    return os.environ.get(name)


def _mpi_names():
    return sorted(k for k in os.environ if k.startswith(("OMPI_", "PMIX_")))


# -- loading ---------------------------------------------------------------------------


def test_load_ext_imports_no_optional_library(isolated):
    code = textwrap.dedent(
        """
        import sys, time
        from IPython.core.interactiveshell import InteractiveShell
        shell = InteractiveShell.instance()
        shell.run_line_magic("load_ext", "pipejupyter")
        heavy = ("distributed", "dask", "ipywidgets", "dask_jobqueue", "dask_gateway",
                 "dask_kubernetes", "casatasks", "mpi4py", "pipejupyter.widgets", "pipejupyter.stage_magic")
        print(sorted(m for m in heavy if m in sys.modules))
        print("pipecluster" in shell.magics_manager.magics["line"], "pipestage" in shell.magics_manager.magics["cell"])
        import pipejupyter.manager as m
        print(m.OWNER_KIND)
        """
    )
    done = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
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
        ("start -n x", "argument -n/--workers: expected an integer >= 0, got 'x'", "usage: %pipecluster start"),
        ("start -n -2", "expected an integer >= 0", "usage: %pipecluster start"),
        ("start --adapt 3", "expected MIN:MAX", "usage: %pipecluster start"),
        ("start --adapt 4:1", "minimum 4 is above maximum 1", "usage: %pipecluster start"),
        ("start -n 2 --adapt 1:2", "not allowed with argument -n/--workers", "usage: %pipecluster start"),
        ("start --timeout 0", "expected a number of seconds > 0", "usage: %pipecluster start"),
        ("start --set novalue", "expected KEY=VALUE", "usage: %pipecluster start"),
        ("scale", "the following arguments are required: N", "usage: %pipecluster scale"),
        ("scale two", "expected an integer >= 0, got 'two'", "usage: %pipecluster scale"),
        ("adapt 1", "the following arguments are required: MAX", "usage: %pipecluster adapt"),
        ("connect", "the following arguments are required: ADDRESS|ID", "usage: %pipecluster connect"),
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
        ("start nosuch", "%pipecluster start: unknown profile 'nosuch'; accepted: htcondor, local, slurm"),
        ("start locl", "did you mean 'local'?"),
        ("start --dry-run --set cluster_kwargs.bogus_kw=1", "LocalCluster does not accept 'bogus_kw'"),
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
    for flag in ("-n N", "--adapt MIN:MAX", "-f FILE", "--set KEY=VALUE", "--name NAME", "--no-wait", "--timeout S", "--dry-run"):
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
    monkeypatch.setitem(sys.modules, "pipejupyter.stage_magic", None)
    with pytest.raises(UsageError, match="pipeline stages are not available"):
        shell.run_cell_magic("pipestage", "", "x = 1\n")


def test_completion(shell, isolated):
    def complete(line):
        return shell.Completer.complete(line_buffer=line, cursor_pos=len(line))[1]

    assert {"stages", "start", "status", "stop"} <= set(complete("%pipecluster st"))
    assert set(complete("%pipecluster st")) <= {"stages", "start", "status", "stop"}
    (isolated / "work" / "config.yaml").write_text("pipecluster:\n  profiles:\n    bigmem:\n      backend: local\n")
    assert complete("%pipecluster start big") == ["bigmem"]
    assert complete("%pipecluster start -f x.yaml big") == ["bigmem"]
    assert complete("%pipecluster config --or") == ["--origin"]
    assert complete("%pipecluster help sca") == ["scale"]
    assert complete("%pipecluster env lo") == ["local"]


# -- configuration views (start nothing) -----------------------------------------------


def test_profiles_config_env_dry_run(shell, isolated):
    (isolated / "work" / "config.yaml").write_text(
        "pipecluster:\n  profiles:\n    local:\n      workers: 3\n      env:\n        set:\n          API_TOKEN: s3cret-value\n"
    )
    profiles = out(shell, "profiles")
    assert "*local" in profiles and "slurm" in profiles and "htcondor" in profiles
    assert f"{isolated / 'work' / 'config.yaml'}" in profiles  # where local was (re)defined

    config = out(shell, "config --origin")
    assert f"workers: 3  # {isolated / 'work' / 'config.yaml'}:4" in config
    assert "threads_per_worker: 1" in config and "# default" in config
    assert "s3cret-value" not in config and "API_TOKEN: '********'" in config
    assert "# files read, lowest priority first:" in config
    assert "workers: 3\n" in out(shell, "config local")
    assert "memory_limit: 1GiB  # override" in out(shell, "config --origin --set cluster_kwargs.memory_limit=1GiB")

    env = out(shell, "env")
    assert "API_TOKEN=********" in env and "s3cret-value" not in env
    assert f"PIPEJUPYTER_RUNTIME_DIR={isolated / 'runtime'}" in env
    assert "# MPI launch variables removed: none" in env

    dry = out(shell, "start --dry-run -n 5")
    assert "workers: 5" in dry and "s3cret-value" not in dry
    assert not manager.clusters()


def test_dry_run_of_a_batch_profile_shows_its_job_script(shell):
    require(importlib.util.find_spec("dask_jobqueue") is not None, "dask-jobqueue (pip install 'pipejupyter[jobqueue]')")
    dry = out(shell, "start slurm --dry-run -n 2 --set env.set.MY_API_TOKEN=abcdefgh")
    assert "backend: slurm" in dry and "#SBATCH" in dry and "dask_worker" in dry
    assert "abcdefgh" not in dry and "MY_API_TOKEN=********" in dry
    assert not manager.clusters()


def test_env_inside_mpi_launch_and_slurm_allocation(shell, monkeypatch):
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "0")
    monkeypatch.setenv("PMIX_RANK", "0")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_NTASKS", "3")
    env = out(shell, "env")
    assert "# MPI launch variables removed: OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE, PMIX_RANK" in env
    assert "# removed from batch submissions (enclosing SLURM job): SLURM_JOB_ID, SLURM_NTASKS" in env
    assert "OMPI_COMM_WORLD_SIZE=" not in env
    assert "workers: 3" in out(shell, "config")  # the local default inside an allocation


# -- real clusters -----------------------------------------------------------------------


@pytest.mark.usefixtures("no_leaks")
def test_lifecycle_through_every_subcommand(shell):
    import distributed

    handle, cap = run(shell, "start -n 1 --name first")
    assert handle is manager.get("first") and handle.status == "running"
    assert distributed.default_client() is handle.client
    assert cap.stdout.startswith(f"started first (local, id {handle.id}): 1 worker at {handle.scheduler_address}")
    assert "its Client is the default Dask client" in cap.stdout
    assert handle.client.submit(sum, [1, 2, 3]).result() == 6

    # status and a bare %pipecluster display the widget, with static fallbacks
    for line in ("status", "", "status first"):
        result, cap = run(shell, line)
        assert result is None
        (shown,) = cap.outputs
        assert {WIDGET_MIME, "text/html", "text/plain"} <= set(shown.data)
        assert "Cluster first (local" in shown.data["text/plain"]

    assert out(shell, "scale 2") == "first: asked for 2 workers\n"
    handle.wait_for_workers(2, timeout=60)
    assert handle.model()["workers"] == 2
    assert out(shell, "adapt 1 2 first") == "first: adaptive between 1 and 2 workers\n"
    assert handle.model()["adapt"] == {"minimum": 1, "maximum": 2}

    listing = out(shell, "list")
    assert f"*{handle.id}  first" in listing and "this kernel" in listing

    logs = out(shell, "logs --scheduler -n 3")
    assert logs.startswith("== scheduler ==\n") and len(logs.strip().splitlines()) == 4
    assert "== worker 0 ==" in out(shell, "logs 0 -n 2")
    with pytest.raises(UsageError, match="no worker 'nine'"):
        shell.run_line_magic("pipecluster", "logs nine")

    (link,) = run(shell, "dashboard")[1].outputs
    assert link.data["text/plain"] == f"first dashboard: {handle.dashboard_link}"
    assert f'href="{handle.dashboard_link}"' in link.data["text/html"]

    second = shell.run_line_magic("pipecluster", "start -n 1 --name second --no-wait")
    assert distributed.default_client() is second.client
    assert out(shell, "use first").startswith("the default Dask client is now first's")
    assert distributed.default_client() is handle.client
    assert manager.get() is handle  # commands without NAME now act on it
    (link,) = run(shell, "dashboard")[1].outputs
    assert link.data["text/plain"].startswith("first dashboard:")
    assert set(shell.Completer.complete(line_buffer="%pipecluster stop ", cursor_pos=18)[1]) == {"first", "second"}

    assert out(shell, "stop second") == "stopped second\n"
    assert second.status == "stopped"
    assert out(shell, "stop") == "stopped first\n"
    assert handle.status == "stopped" and not manager.clusters()
    assert out(shell, "stop") == "no clusters in this kernel\n"
    assert out(shell, "list") == "no running clusters (this kernel's or discovered)\n"


@pytest.mark.usefixtures("no_leaks")
def test_assignment_and_display_of_the_returned_handle(shell):
    with capture_output() as cap:
        result = shell.run_cell("c = %pipecluster start -n 1")
    assert result.success, cap.stderr
    handle = shell.user_ns["c"]
    assert handle is manager.get() and "started local" in cap.stdout
    assert not cap.outputs  # an assignment displays nothing
    with capture_output() as cap:
        shell.run_cell("c")  # the terminal displayhook prints the text/plain part
    assert cap.stdout.startswith("Out[") and f"Cluster local (local, id {handle.id}): running" in cap.stdout
    data, _ = shell.display_formatter.format(handle)  # what a kernel's displayhook sends
    assert {WIDGET_MIME, "text/html", "text/plain"} <= set(data)
    assert "1 worker, 1 thread," in data["text/html"]
    with capture_output() as cap:
        shell.run_cell("%pipecluster stop --all")
    assert cap.stdout == "stopped local\n"


@pytest.mark.usefixtures("no_leaks")
def test_start_in_an_mpi_launch_inside_a_slurm_allocation_says_what_it_sanitized(shell, monkeypatch):
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "0")
    monkeypatch.setenv("OMPI_MCA_ess", "pmi")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_NTASKS", "1")
    handle, cap = run(shell, "start")  # nothing to say: the local default is SLURM_NTASKS workers
    lines = cap.stdout.splitlines()
    assert len(lines) == 2 and ": 1 worker at " in lines[0]
    assert lines[1] == (
        "environment: removed 3 MPI launch variables (OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE, OMPI_MCA_ess); "
        "removed 2 variables of the enclosing SLURM job from submissions (SLURM_JOB_ID, SLURM_NTASKS)"
    )
    assert handle.client.run(_mpi_names) == {w: [] for w in handle.client.scheduler_info()["workers"]}
    assert os.environ["OMPI_COMM_WORLD_SIZE"] == "2"  # the kernel's own environment is intact
    run(shell, "stop")


def test_start_refused_on_mpi_rank_above_zero(shell, monkeypatch):
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "1")
    with pytest.raises(UsageError, match="refusing to start a cluster from MPI rank 1"):
        shell.run_line_magic("pipecluster", "start -n 1")
    assert not manager.clusters()


OWNER_SCRIPT = """
import sys
import pipejupyter
if __name__ == "__main__":
    handle = pipejupyter.start(workers=1, name="elsewhere", timeout=60)
    print(handle.id, handle.scheduler_address, flush=True)
    sys.stdin.read()  # run until the test closes stdin
    handle.stop()
"""


@pytest.mark.usefixtures("no_leaks")
def test_list_and_connect_clusters_of_another_process(shell, isolated):
    script = isolated / "owner.py"
    script.write_text(OWNER_SCRIPT)
    owner = subprocess.Popen(
        [PYTHON, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        cluster_id, address = owner.stdout.readline().split()
        listing = out(shell, "list")
        assert f" {cluster_id}  elsewhere" in listing and f"script pid {owner.pid}" in listing
        assert cluster_id in shell.Completer.complete(line_buffer="%pipecluster connect ", cursor_pos=21)[1]

        handle, cap = run(shell, f"connect {cluster_id}")
        assert handle.owned is False and handle.scheduler_address == address
        assert cap.stdout.startswith("connected to elsewhere (local, id ")
        import distributed

        assert distributed.default_client() is handle.client
        assert handle.client.submit(sum, [2, 3]).result() == 5
        with pytest.raises(UsageError, match="cannot scale 'elsewhere': it was connected, not started"):
            shell.run_line_magic("pipecluster", "scale 3")
        assert out(shell, "stop") == "disconnected from elsewhere\n"
        assert discovery.scheduler_reachable(address)  # disconnecting leaves it running

        by_address = shell.run_line_magic("pipecluster", f"connect {address} --name byaddr")
        assert by_address.name == "byaddr" and by_address.model()["workers"] == 1
        assert out(shell, "stop byaddr") == "disconnected from byaddr\n"
    finally:
        owner.stdin.close()
        owner.wait(timeout=60)
    assert wait_until(lambda: not discovery.read_all(), timeout=10)
    assert sys.modules["pipejupyter.manager"].OWNER_KIND == "kernel"
