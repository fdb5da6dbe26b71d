"""Property-based: whatever a user types after %pipecluster, only a UsageError (or a
clean parse, or a help request) comes out of the parser, never SystemExit or a traceback."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from IPython.core.error import UsageError

from pipejupyter.notebook import parser as magics_parser

WORDS = st.sampled_from(
    [
        "start",
        "stop",
        "scale",
        "adapt",
        "connect",
        "logs",
        "config",
        "env",
        "list",
        "help",
        "use",
        "status",
        "stages",
        "-n",
        "--adapt",
        "--set",
        "-f",
        "--all",
        "--timeout",
        "--dry-run",
        "--no-wait",
        "2",
        "-1",
        "1:3",
        "x",
        "a=b",
        "'",
        '"',
        "--",
        "-",
        "\\",
        "local",
        "$x",
        "{x}",
        "--origin",
    ]
)
LINES = st.one_of(st.text(max_size=60), st.lists(WORDS, max_size=6).map(" ".join))


@settings(max_examples=400, deadline=None)
@given(line=LINES)
def test_parser_never_exits_or_crashes(line):
    try:
        magics_parser.parse(line)
    except (UsageError, magics_parser.HelpRequested):
        pass
