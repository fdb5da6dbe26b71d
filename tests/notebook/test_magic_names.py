"""Names in a ``%pipecluster`` line are split as a shell would: quotes group words and are
removed, unbalanced quotes are a usage error, and IPython's ``$var``/``{expr}`` expansion
(which happens before the line is split) still works."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError

from pipejupyter import models
from pipejupyter.lifecycle import discovery, manager
from pipejupyter.notebook import commands  # noqa: F401 - registers the subcommands
from pipejupyter.notebook import parser as magics_parser
from tests.support.common import run_cli
from tests.support.magics import run, shell  # noqa: F401 (shell is a fixture)


@pytest.mark.parametrize(
    ("line", "name"),
    [
        ("start local --name 'two words'", "two words"),
        ('start local --name "two words"', "two words"),
        ("start local --name=two\\ words", "two words"),
        ("start local --name 'it''s'", "its"),
        ('start local --name "it\'s"', "it's"),
        ("start local --name a#b", "a#b"),  # no comments in a magic line
        ("start local --name ''", ""),
    ],
)
def test_quotes_group_words_and_are_removed(line, name):
    assert magics_parser.parse(line).name == name


def test_quoted_target_of_stop_and_connect():
    assert magics_parser.parse("stop 'two words'").name == "two words"
    assert magics_parser.parse('connect "two words"').target == "two words"
    with pytest.raises(UsageError, match="unrecognized arguments: words"):
        magics_parser.parse("stop two words")


@pytest.mark.parametrize("line", ["start --name 'two words", 'stop "x', "start --name it's"])
def test_unbalanced_quotes_are_a_usage_error_with_the_usage_line(line):
    with pytest.raises(UsageError) as info:
        magics_parser.parse(line)
    message = str(info.value)
    assert "quotation" in message
    assert repr(line) in message
    assert "usage: %pipecluster" in message
    assert "Traceback" not in message


def test_override_values_keep_their_quotes_inside(tmp_path):
    args = magics_parser.parse("start local --set 'cluster_kwargs.memory=4 GiB' --set env.x=a=b")
    assert args.overrides == ["cluster_kwargs.memory=4 GiB", "env.x=a=b"]


@pytest.mark.usefixtures("no_leaks")
def test_expanded_quoted_name_reaches_the_record_and_the_cli_stops_it(shell):
    shell.user_ns["who"] = "two words"
    handle, cap = run(shell, 'start local -n 0 --name "$who"')
    try:
        assert handle.name == "two words", cap.stdout
        assert manager.get("two words") is handle
        (record,) = discovery.read_all(prune=False)
        assert record["name"] == "two words"
        # {expr} expansion too: the braces are IPython's, the quotes are ours.
        assert run(shell, "status '{who}'")[0] is None
        done = run_cli("stop", "two words")
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"stopped two words ({handle.id})")
        assert discovery.read_all(prune=False) == []
    finally:
        manager.stop_all(timeout=10)


@pytest.mark.parametrize("cluster_id", ["0123456789ab", "dask-gateway.f3a9", "ns/c@h:1_x-y"])
def test_connect_code_parses_back_to_the_id_and_nothing_expands(shell, cluster_id):
    line = models.connect_code(cluster_id)
    assert line == f"%pipecluster connect {cluster_id}"
    body = line.removeprefix("%pipecluster ")
    assert shell.var_expand(body) == body
    assert magics_parser.parse(body).target == cluster_id


@pytest.mark.parametrize(
    "cluster_id",
    [
        "0123456789ab\nimport os; os.system('touch pwned')",
        "{__import__('os').system('touch pwned')}",
        "$(touch pwned)",
        "$x",
        "-h",
        "--all",
        "two words",
        "it's",
        'a"b',
        "a\\b",
        "",
        "x" * 201,
        "caf\u00e9",
        ["0123456789ab"],
        None,
    ],
)
def test_no_connect_code_for_an_id_that_is_unsafe_in_a_magic_line(cluster_id):
    assert models.connect_code(cluster_id) is None
