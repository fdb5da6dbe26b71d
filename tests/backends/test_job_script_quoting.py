"""``env.set`` values in batch job scripts: ``$VAR`` / ``${VAR}`` expand on the compute node,
nothing else a shell would run does.

A value written in ``env.set`` goes into the job script inside double quotes. Only the
documented ``$NAME`` and ``${NAME}`` are left to the node's shell; command substitution
(``$(...)``, backticks), arithmetic (``$((...))``, ``$[...]``) and every other ``${...}``
form (defaults, substrings, ``@P`` prompt expansion, ...) stay the literal characters written.
The generated export lines are run by a real bash (and sh) here: no scheduler is needed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from pipejupyter.backends.jobqueue.job_script import export_lines, node_quote
from pipejupyter.environment.workers import worker_environment
from pipejupyter.lifecycle import manager
from tests.support.common import write

pytestmark = pytest.mark.usefixtures("isolated")

DUMP = (
    f"{sys.executable} -I -S -c "
    "'import json, os, sys; json.dump(dict(os.environ), open(sys.argv[1], \"w\"))' ENVDUMP"
)


def hostile(marker: str) -> dict[str, str]:
    """env.set values that would run ``touch marker`` if a shell expanded them."""
    touch = f"touch {marker}"
    return {
        "CMD_SUB": f"$({touch})",
        "BACKTICKS": f"`{touch}`",
        "ARITH": f"$(( $({touch}) + 1 ))",
        "OLD_ARITH": f"$[ $({touch}) ]",
        "IN_DEFAULT": f"${{NO_SUCH_VARIABLE:-$({touch})}}",
        "ASSIGN_DEFAULT": f"${{NO_SUCH_VARIABLE:=$({touch})}}",
        # Indirect: a literal subscript that arithmetic or prompt expansion would evaluate.
        "SUBSCRIPT": f"a[$({touch})]",
        "OFFSET": "${HOME:SUBSCRIPT}",
        "PROMPT": "${CMD_SUB@P}",
        "ARITH_OF_VAR": "$((SUBSCRIPT))",
        "ESCAPED_DOLLAR": f"\\$({touch})",
        "QUOTE_BREAK": f'"; {touch}; echo "',
        "NEWLINE": f"one\n{touch}\ntwo",
        "SPECIALS": "$$ $1 $? $# $@ $* $! $- $0 end$",
    }


def run_prologue(lines: list[str], cwd, *, shell: str = "bash", env=None) -> dict[str, str]:
    """Run export lines in a real shell and return the environment the command after them
    sees."""
    dump = cwd / "env.json"
    script = "\n".join(lines) + "\n" + DUMP.replace("ENVDUMP", str(dump)) + "\n"
    done = subprocess.run(
        [shell, "-c", script],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env or {"PATH": os.environ["PATH"], "HOME": "/node/home"},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(dump.read_text())


# -- the quoting rule, as text -------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        ("plain", '"plain"'),
        ("$HOME/x", '"$HOME/x"'),
        ("${HOME}x", '"${HOME}x"'),
        ("$TMPDIR/casa and ${SCRATCH}", '"$TMPDIR/casa and ${SCRATCH}"'),
        ("$(touch /tmp/x)", '"\\$(touch /tmp/x)"'),
        ("$((1+2))", '"\\$((1+2))"'),
        ("$[1+2]", '"\\$[1+2]"'),
        ("`id`", '"\\`id\\`"'),
        ("${HOME:-$(id)}", '"\\${HOME:-\\$(id)}"'),
        ("${HOME@P}", '"\\${HOME@P}"'),
        ("${#HOME}", '"\\${#HOME}"'),
        ("${!HOME}", '"\\${!HOME}"'),
        ("$$ $1 $? end$", '"\\$\\$ \\$1 \\$? end\\$"'),
        ('say "hi" \\o/', '"say \\"hi\\" \\\\o/"'),
        ("\\$(id)", '"\\\\\\$(id)"'),
    ],
)
def test_node_quote_leaves_only_variables_to_the_shell(value, quoted):
    assert node_quote(value) == quoted


def test_export_lines_never_write_command_substitution_for_the_node(tmp_path):
    env = worker_environment(
        {"set": {**hostile(str(tmp_path / "marker")), "NODE_HOME": "$HOME/x"}},
        environ={"PASSED": "$(touch copied)"},
    )
    env_pass = worker_environment({"pass": ["PASSED"]}, environ={"PASSED": "$(touch copied) `id`"})
    text = "\n".join(export_lines(env) + export_lines(env_pass))
    assert 'export CMD_SUB="\\$(touch ' in text
    assert 'export NODE_HOME="$HOME/x"' in text
    assert "export PASSED='$(touch copied) `id`'" in text  # copied values: single-quoted
    unescaped = [
        line for line in text.splitlines() if "$(" in line.replace("\\$(", "") and "'" not in line
    ]
    assert not unescaped


# -- the quoting rule, in a real shell ------------------------------------------------------


@pytest.mark.parametrize("shell", ["bash", "sh"])
def test_set_values_run_nothing_on_the_node_and_variables_still_expand(tmp_path, shell):
    if not shutil.which(shell):
        pytest.skip(f"no {shell} on this machine")
    marker = tmp_path / "marker"
    values = hostile(str(marker))
    env = worker_environment(
        {
            "set": {
                **values,
                "NODE_HOME": "$HOME/data",
                "NODE_HOME_BRACES": "${HOME}data",
                "MIXED": "$HOME/$(touch " + str(marker) + ")/${HOME}",
            }
        },
        environ={},
    )
    seen = run_prologue(export_lines(env), tmp_path, shell=shell)
    assert not marker.exists(), "an env.set value ran a command on the node"
    assert not list(tmp_path.glob("touch*")), sorted(p.name for p in tmp_path.iterdir())
    for name, value in values.items():
        assert seen[name] == value, name
    assert seen["NODE_HOME"] == "/node/home/data"
    assert seen["NODE_HOME_BRACES"] == "/node/homedata"
    assert seen["MIXED"] == f"/node/home/$(touch {marker})//node/home"


def test_a_whole_slurm_job_script_runs_no_set_value(tmp_path, isolated):
    """The script dask-jobqueue writes, run by bash (``python: true`` stands in for the
    worker): the exports sit before the user's prologue and the worker command."""
    pytest.importorskip("dask_jobqueue")
    marker = tmp_path / "marker"
    dump = tmp_path / "env.json"
    cfg = write(
        isolated / "jobs.yaml",
        f"""
        pipecluster:
          profiles:
            batch:
              backend: slurm
              workers: 1
              env:
                set: {json.dumps({**hostile(str(marker)), "NODE_HOME": "$HOME/d"})}
              cluster_kwargs:
                cores: 1
                memory: 1GiB
                walltime: "00:10:00"
                python: "true"
                job_script_prologue: [{json.dumps(DUMP.replace("ENVDUMP", str(dump)))}]
        """,
    )
    _, backend = manager.prepare("batch", config=cfg)
    script = backend.job_script()
    assert "#SBATCH" in script
    work = tmp_path / "node"
    work.mkdir()
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=work,
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], "HOME": "/node/home"},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert not marker.exists()
    assert not list(work.iterdir())
    seen = json.loads(dump.read_text())
    for name, value in hostile(str(marker)).items():
        assert seen[name] == value, name
    assert seen["NODE_HOME"] == "/node/home/d"


# -- local workers: no shell at all ---------------------------------------------------------


def test_local_workers_get_set_values_without_a_shell(tmp_path, monkeypatch):
    """Local worker processes get ``env`` from the Nanny (no shell): ``$VAR`` is expanded
    here by os.path.expandvars, ``$(...)`` and backticks arrive as written."""
    monkeypatch.setenv("PJ_BASE", "/here")
    marker = tmp_path / "marker"
    values = {"CMD_SUB": f"$(touch {marker})", "BACKTICKS": f"`touch {marker}`"}
    _, backend = manager.prepare(
        "local", overrides=[f"env.set={json.dumps({**values, 'FROM_HERE': '$PJ_BASE/x'})}"]
    )
    env = backend.cluster_kwargs()["env"]
    assert {k: env[k] for k in values} == values
    assert env["FROM_HERE"] == "/here/x"
    assert not marker.exists()
