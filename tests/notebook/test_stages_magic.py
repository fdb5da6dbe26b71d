"""%%pipestage and %pipecluster stages through a real IPython shell on a real local cluster."""

from __future__ import annotations

import threading

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from pipejupyter.lifecycle import manager
from pipejupyter.stages.results import StageFailed


@pytest.fixture
def shell(isolated, no_leaks):
    kind = manager.default_manager.owner_kind
    ip = InteractiveShell.instance()
    ip.extension_manager.load_extension("pipejupyter")
    ip.run_line_magic("pipecluster", "start -n 2")
    yield ip
    for name in ("out", "factor", "helper", "lock", "files", "once", "res", "flagged"):
        ip.user_ns.pop(name, None)
    manager.stop_all()
    manager.default_manager.owner_kind = kind


def stage(shell, line: str, body: str):
    with capture_output() as cap:
        result = shell.run_cell_magic("pipestage", line, body)
    return result, cap


def test_body_runs_per_item_with_notebook_names(shell):
    shell.run_cell("factor = 3\ndef helper(v):\n    return v + 100\n")
    result, cap = stage(
        shell,
        "triple --over range(4) --as x -o out --progress text",
        "import os\nprint('item', x)\nhelper(x * factor)\n",
    )
    assert result is None
    assert list(shell.user_ns["out"]) == [100, 103, 106, 109]
    for x in range(4):
        assert f"[{x!r}] item {x}" in cap.stdout  # worker output, tagged with its item
    assert "stage 'triple': 4 done" in cap.stdout
    # once, no -o: the value of the last expression comes back as the cell's value
    value, _ = stage(shell, "once --progress none", "import os\nos.getpid()")
    assert isinstance(value, int)
    assert value != __import__("os").getpid()


def test_rerun_is_skipped_and_listed(shell):
    shell.user_ns["files"] = ["a.ms", "b.ms"]
    stage(shell, "flag --over files -o flagged --progress text", "item.upper()")
    _, cap = stage(shell, "flag --over files -o flagged --progress text", "item.upper()")
    assert "2 already done (skipped)" in cap.stdout
    assert list(shell.user_ns["flagged"]) == ["A.MS", "B.MS"]
    _, cap = stage(shell, "flag --over files -o flagged --rerun --progress text", "item.upper()")
    assert "stage 'flag': 2 done" in cap.stdout
    with capture_output() as cap:
        shell.run_line_magic("pipecluster", "stages")
    lines = cap.stdout.splitlines()
    assert lines[0].split()[:3] == ["run", "stage", "status"]
    assert len(lines) == 4
    assert [line.split()[1] for line in lines[1:]] == ["flag", "flag", "flag"]
    with capture_output() as cap:
        shell.run_line_magic("pipecluster", "stages flag --items")
    assert "a.ms" in cap.stdout
    assert "done" in cap.stdout
    import pipejupyter

    assert list(pipejupyter.context.results("flag")) == ["A.MS", "B.MS"]


def test_a_failed_item_still_binds_the_others(shell):
    with pytest.raises(StageFailed) as info, capture_output() as cap:
        shell.run_cell_magic(
            "pipestage", "half --over [1, 0, 2] -o out --progress text", "10 // item"
        )
    assert "ZeroDivisionError" in cap.stderr
    assert "[0] failed" in cap.stderr
    out = shell.user_ns["out"]
    assert out[0] == 10
    assert out[2] == 5
    assert not out[1]
    assert info.value._render_traceback_()[0].startswith(
        "StageFailed: stage 'half': 1 of 3 items failed"
    )


def test_bad_lines_and_bodies_are_usage_errors(shell):
    shell.user_ns["lock"] = threading.Lock()
    with pytest.raises(UsageError, match=r"uses 'lock' .*cannot be sent to the workers"):
        stage(shell, "bad --over [1]", "lock.locked()")
    with pytest.raises(UsageError, match=r"--over 'nothing_here' failed: NameError"):
        stage(shell, "bad --over nothing_here", "1")
    with pytest.raises(UsageError, match="--as needs a Python name"):
        stage(shell, "bad --over [1] --as 1x", "1")
    with pytest.raises(UsageError, match="stage name must be"):
        stage(shell, "'bad name' --over [1]", "1")
    with pytest.raises(UsageError, match=r"argument --per-worker: invalid _positive value: '0'"):
        stage(shell, "bad --per-worker 0", "1")
    with pytest.raises(UsageError, match="the following arguments are required: NAME"):
        stage(shell, "", "1")
    _, cap = stage(shell, "--help", "1")
    assert "--over EXPR" in cap.stdout
    assert "--per-worker N" in cap.stdout


def test_over_takes_an_unquoted_expression():
    from pipejupyter.notebook.stage_magic import parse

    args = parse("flag --over glob('data/*.ms') + ['x.ms'] --as vis -o out --rerun")
    assert (args.name, args.over, args.var, args.output, args.rerun) == (
        "flag",
        "glob('data/*.ms') + ['x.ms']",
        "vis",
        "out",
        True,
    )
    assert parse("x --over=[1, 2] -o y").over == "[1, 2]"
    with pytest.raises(UsageError, match="expected one argument"):
        parse("x --over")
    with pytest.raises(UsageError, match="cannot split"):
        parse("x --over 'unbalanced")


def test_over_is_not_variable_expanded(shell):
    shell.user_ns["n"] = 5
    result, _ = stage(shell, "expr --over {n} --progress none", "item * 10")  # a set, not "5"
    assert list(result) == [50]
