"""Binder's path, for real: what a newcomer clicking the Binder badge gets.

Clone the committed repository, create a fresh venv with the system python3 (Binder's
environment.yml pins python 3.11 and nodejs 20), run ``binder/postBuild`` from the clone's
root as Binder does, then run the quickstart notebook with a real kernel from that venv.

Everything runs with a fresh HOME, Jupyter dirs and runtime dir. Only caches and the
machine's package-index settings are carried over (pip's user config and cache, yarn's
global cache), so the build is as offline and fast as this machine allows. The clone and
venv are deleted afterwards, and any process that carries this run's marker is ended.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell

from tests.support.common import ROOT, have, processes_with_env, require, wait_until
from tests.support.notebooks import clean_code_cells

pytestmark = pytest.mark.binder

MARKER = "PIPEJUPYTER_BINDER_TEST"  # set on every process this module starts, to find leftovers
ANSI = re.compile(r"\x1b\[[0-9;]*m")
CHECK_CELL = "import sys, pipejupyter\nprint(sys.prefix)\nprint(pipejupyter.__file__)"


@dataclass
class BinderBuild:
    base: Path
    clone: Path
    venv: Path
    runtime: Path
    env: dict[str, str]
    postbuild: subprocess.CompletedProcess | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def run(
        self, *args: str, cwd: Path | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            list(args),
            cwd=cwd or self.clone,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def timed(
        self, step: str, *args: str, timeout: float = 300, **kw
    ) -> subprocess.CompletedProcess:
        started = time.monotonic()
        try:
            return self.run(*args, timeout=timeout, **kw)
        finally:
            self.seconds[step] = round(time.monotonic() - started, 1)


def path_without_venvs() -> str:
    """PATH minus an active venv's bin: Binder's python is the system's, not this test venv's."""
    venv_bins = {str(Path(sys.prefix) / "bin")} if sys.prefix != sys.base_prefix else set()
    if os.environ.get("VIRTUAL_ENV"):
        venv_bins.add(str(Path(os.environ["VIRTUAL_ENV"]) / "bin"))
    return os.pathsep.join(
        p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p not in venv_bins
    )


def system_python() -> str | None:
    """The real interpreter behind ``python3`` (a pyenv shim would need the real HOME)."""
    shim = shutil.which("python3", path=path_without_venvs())
    if shim is None:
        return None
    env = {**os.environ, "PATH": path_without_venvs()}
    found = subprocess.run(
        [shim, "-c", "import sys; print(sys.executable)"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    return found.stdout.strip() or None


def node_version() -> str:
    try:
        return subprocess.run(
            ["node", "--version"], capture_output=True, text=True, timeout=30
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def carried_over_settings() -> dict[str, str]:
    """Package-index settings and caches from the real HOME, so the fresh HOME builds offline."""
    home = Path.home()
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    cache_home = Path(os.environ.get("XDG_CACHE_HOME") or home / ".cache")
    settings = {
        "PIP_CACHE_DIR": os.environ.get("PIP_CACHE_DIR") or str(cache_home / "pip"),
        "YARN_GLOBAL_FOLDER": os.environ.get("YARN_GLOBAL_FOLDER") or str(home / ".yarn" / "berry"),
    }
    user_pip_configs = [config_home / "pip" / "pip.conf", home / ".pip" / "pip.conf"]
    pip_config = os.environ.get("PIP_CONFIG_FILE") or next(
        (str(p) for p in user_pip_configs if p.is_file()), None
    )
    if pip_config:
        settings["PIP_CONFIG_FILE"] = pip_config
    return settings


def binder_environ(base: Path, venv: Path) -> dict[str, str]:
    """This process's environment without anything that points at the checkout or its venv."""
    dropped = ("JUPYTER", "IPYTHON", "PIPEJUPYTER", "PYTHON", "VIRTUAL_ENV", "CONDA")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env.update(carried_over_settings())
    env.update(
        HOME=str(base / "home"),
        PIPEJUPYTER_RUNTIME_DIR=str(base / "runtime"),
        VIRTUAL_ENV=str(venv),  # as if activated, like Binder's conda env
        PATH=os.pathsep.join([str(venv / "bin"), path_without_venvs()]),
        **{MARKER: str(base)},
    )
    return env


def end_marked_processes(base: Path) -> list[int]:
    """End what this module started and left behind (by pid); return those pids."""
    left = processes_with_env(MARKER, str(base))
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    if not wait_until(lambda: not processes_with_env(MARKER, str(base)), timeout=10):
        for pid in processes_with_env(MARKER, str(base)):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    return left


def command_lines(pids: list[int]) -> list[tuple[int, str]]:
    found = []
    for pid in pids:
        with contextlib.suppress(OSError):
            found.append(
                (pid, Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:100])
            )
    return found


# pip's notice for each package a configured local index lacks: noise in a failure message.
PIP_NOISE = re.compile(r"^WARNING: Location '.*' is ignored: .*\n?", re.MULTILINE)


def tail(text: str, chars: int = 4000) -> str:
    text = PIP_NOISE.sub("", text)
    return text if len(text) <= chars else "..." + text[-chars:]


@pytest.fixture(scope="module")
def binder():
    """Clone, venv and postBuild, once for the module; everything is removed afterwards."""
    require(have("git"), "git (the test clones the repository)")
    python3 = system_python()
    require(python3 is not None, "python3 on PATH (binder/environment.yml pins python 3.11)")
    node = node_version()
    major = re.match(r"v(\d+)\.", node)
    require(
        bool(major) and int(major.group(1)) >= 18,
        "Node 18+ on PATH to build the lab extension (binder/environment.yml pins nodejs 20; "
        f"node --version: {node or 'not found'})",
    )
    base = Path(tempfile.mkdtemp(prefix="pipejupyter-binder-"))
    build = BinderBuild(
        base, base / "clone", base / "venv", base / "runtime", binder_environ(base, base / "venv")
    )
    try:
        (base / "home").mkdir()
        cloned = subprocess.run(
            ["git", "clone", "--quiet", str(ROOT), str(build.clone)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert cloned.returncode == 0, f"git clone {ROOT} failed:\n{cloned.stderr}"
        made = build.timed("venv", python3, "-m", "venv", str(build.venv))
        assert made.returncode == 0, f"{python3} -m venv failed:\n{made.stdout}{made.stderr}"
        # Binder's conda env comes with a current pip; the bundled one may be older.
        pip = build.timed("pip upgrade", "python", "-m", "pip", "install", "-q", "--upgrade", "pip")
        assert pip.returncode == 0, (
            f"upgrading pip in the fresh venv failed:\n{tail(pip.stdout + pip.stderr)}"
        )
        # repo2docker runs binder/postBuild from the repository root, env activated.
        build.postbuild = build.timed("postBuild", "bash", "binder/postBuild", timeout=1500)
        yield build
    finally:
        leftovers = end_marked_processes(base)
        shutil.rmtree(base, ignore_errors=True)
        print(f"\nbinder timings (s): {build.seconds}; processes ended at teardown: {leftovers}")


def require_postbuild(binder: BinderBuild) -> None:
    if binder.postbuild is None or binder.postbuild.returncode != 0:
        pytest.fail(
            "binder/postBuild failed (see test_postbuild_succeeds_on_a_fresh_venv)", pytrace=False
        )


def test_postbuild_succeeds_on_a_fresh_venv(binder):
    result = binder.postbuild
    assert result.returncode == 0, (
        f"binder/postBuild exited {result.returncode} in a fresh venv "
        f"(python {sys.version_info.major}.{sys.version_info.minor}, node {node_version()}):\n"
        f"--- stdout ---\n{tail(result.stdout)}\n--- stderr ---\n{tail(result.stderr)}"
    )


def listed_sections(output: str) -> dict[str, list[str]]:
    """``jupyter labextension list``/``server extension list`` output: lines under each
    directory."""
    sections: dict[str, list[str]] = {}
    current = None
    for raw in ANSI.sub("", output).splitlines():
        line = raw.strip()
        if line.startswith("Config dir:"):
            line = line.removeprefix("Config dir:").strip()
        if line.startswith("/") and not raw[:1].isspace():
            current = sections.setdefault(line, [])
        elif current is not None and line:
            current.append(line)
    return sections


def test_lab_extension_is_built_and_enabled_in_the_venv(binder):
    require_postbuild(binder)
    labext_dir = binder.venv / "share" / "jupyter" / "labextensions"
    listing = binder.run("jupyter", "labextension", "list")
    output = listing.stdout + listing.stderr
    assert listing.returncode == 0, (
        f"jupyter labextension list exited {listing.returncode}:\n{output}"
    )
    lines = [
        x for x in listed_sections(output).get(str(labext_dir), []) if x.startswith("pipejupyter ")
    ]
    assert lines, (
        f"pipejupyter is not listed under the venv's {labext_dir}; "
        f"jupyter labextension list said:\n{output}"
    )
    assert "enabled" in lines[0], f"pipejupyter is listed but not 'enabled OK': {lines[0]!r}"
    assert " OK" in lines[0], f"pipejupyter is listed but not 'enabled OK': {lines[0]!r}"

    installed = labext_dir / "pipejupyter"
    built = sorted(p.name for p in (installed / "static").glob("remoteEntry.*.js"))
    assert (installed / "package.json").is_file(), (
        f"the built extension is missing from {installed}: package.json present: "
        f"{(installed / 'package.json').is_file()}, static/remoteEntry.*.js: {built}"
    )
    assert built, (
        f"the built extension is missing from {installed}: package.json present: "
        f"{(installed / 'package.json').is_file()}, static/remoteEntry.*.js: {built}"
    )

    servers = binder.run("jupyter", "server", "extension", "list")
    output = servers.stdout + servers.stderr
    config_dir = str(binder.venv / "etc" / "jupyter")
    enabled = [
        x for x in listed_sections(output).get(config_dir, []) if x.startswith("pipejupyter ")
    ]
    assert any("enabled" in x for x in enabled), (
        f"the pipejupyter server extension is not enabled and OK in {config_dir}; "
        f"jupyter server extension list said:\n{output}"
    )
    assert any(" OK" in x for x in enabled), (
        f"the pipejupyter server extension is not enabled and OK in {config_dir}; "
        f"jupyter server extension list said:\n{output}"
    )


def cell_text(cell) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type in ("execute_result", "display_data"):
            parts.append(output.data.get("text/plain", ""))
    return "".join(parts)


def test_quickstart_notebook_runs_in_the_binder_venv(binder):
    require_postbuild(binder)
    notebooks = binder.clone / "notebooks"
    nb = nbformat.read(notebooks / "01-quickstart.ipynb", as_version=4)
    nb.cells.append(new_code_cell(CHECK_CELL))  # which interpreter and which pipejupyter ran it
    # Next to the original, so the kernel's working directory is Binder's: notebooks/.
    checked = notebooks / "01-quickstart-binder-check.ipynb"
    nbformat.write(nb, checked)
    executed_dir = binder.base / "executed"
    ran = binder.timed(
        "notebook",
        "jupyter", "nbconvert", "--to", "notebook", "--execute",
        "--ExecutePreprocessor.timeout=300", "--output-dir", str(executed_dir), str(checked),
        cwd=notebooks, timeout=900,
    )  # fmt: skip
    assert ran.returncode == 0, f"executing the quickstart notebook failed:\n{tail(ran.stderr)}"

    executed = nbformat.read(executed_dir / checked.name, as_version=4)
    code = clean_code_cells(executed)
    prefix, module = cell_text(code[-1]).split()
    assert Path(prefix) == binder.venv, (
        f"the kernel ran {prefix}, not the Binder venv {binder.venv}"
    )
    assert Path(module).is_relative_to(binder.clone), (
        f"the kernel imported pipejupyter from {module}, not the clone"
    )
    by_source = {c.source.splitlines()[0]: cell_text(c) for c in code}
    assert by_source["cluster = %pipecluster start local -n 2"].startswith(
        "started local (local, id "
    )
    assert " local " in by_source["%pipecluster list"]
    assert by_source["%pipecluster stop"] == "stopped local\nstatus: stopped\n"

    # The cluster is gone: no worker, nanny or kernel is left, and no discovery file.
    gone = wait_until(lambda: not processes_with_env(MARKER, str(binder.base)), timeout=30)
    assert gone, (
        "processes left running after the notebook: "
        f"{command_lines(processes_with_env(MARKER, str(binder.base)))}"
    )
    records = (
        sorted(p.name for p in binder.runtime.glob("*cluster-*.json"))
        if binder.runtime.exists()
        else []
    )
    assert not records, f"discovery files left in {binder.runtime}: {records}"
