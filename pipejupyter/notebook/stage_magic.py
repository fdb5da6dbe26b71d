"""``%%pipestage NAME [--over EXPR] [--as VAR] [-o OUTPUT] ...``: parse, call run_stage, bind.

The cell body runs on the cluster once, or once per item of ``--over`` with the item bound
to ``--as`` (default ``item``); the value of its last expression is the item's result.
Results come back in input order into ``-o`` (the single value when there is no --over).
"""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from IPython.core.error import UsageError

from pipejupyter.errors import PipejupyterError
from pipejupyter.lifecycle.manager import get
from pipejupyter.notebook.parser import MagicArgumentParser
from pipejupyter.stages import inputs
from pipejupyter.stages.results import StageFailed
from pipejupyter.stages.run import parse_resources, run_stage
from pipejupyter.work.cell import cell_work

USAGE_EPILOG = """\
examples:
  %%pipestage flag --over glob('data/*.ms') --as vis -o flagged --retries 1
  %%pipestage image --over mses --as vis --per-worker 1 --resources MEM=8e9
  %%pipestage listobs --over mapfile('input.map') --as vis
--over takes everything up to the next option (no quotes needed); NAME comes first.
"""


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def _nonnegative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def _batch(text: str) -> str | int:
    return text if text in ("auto", "off") else _positive(text)


def parser() -> MagicArgumentParser:
    # No -h option: --over takes everything up to the next option, and parse() looks for -h.
    p = MagicArgumentParser(
        prog="%%pipestage",
        description="Run the cell as a pipeline stage on the current cluster.",
        epilog=USAGE_EPILOG,
        prefix="%%pipestage: ",
        help_option=False,
    )
    p.add_argument("name", metavar="NAME", help="stage name (its results are kept under this name)")
    p.add_argument(
        "--over",
        metavar="EXPR",
        help="items: a Python expression (list, dict, glob pattern, glob(...), mapfile(...))",
    )
    p.add_argument(
        "--as",
        dest="var",
        default="item",
        metavar="VAR",
        help="name the item is bound to in the cell (default: item)",
    )
    p.add_argument(
        "-o",
        "--output",
        metavar="OUTPUT",
        help="variable that receives the results (in input order)",
    )
    p.add_argument(
        "--retries",
        type=_nonnegative,
        default=0,
        metavar="N",
        help="extra attempts for an item that raised",
    )
    p.add_argument(
        "--resources",
        action="append",
        default=[],
        metavar="K=V",
        help="Dask resources each item needs (repeatable, or K=V,K2=V2)",
    )
    p.add_argument(
        "--per-worker",
        type=_positive,
        metavar="N",
        help="at most N items at once per worker (memory-heavy work)",
    )
    p.add_argument("--rerun", action="store_true", help="recompute items that already succeeded")
    p.add_argument(
        "--batch",
        type=_batch,
        default="auto",
        metavar="auto|off|N",
        help="items per Dask task (default: auto)",
    )
    p.add_argument(
        "--cluster", metavar="NAME", help="cluster of this kernel to use (default: the current one)"
    )
    p.add_argument(
        "--progress",
        choices=("auto", "text", "widget", "none"),
        default="auto",
        help="how progress is shown",
    )
    return p


def parse(line: str) -> argparse.Namespace | None:
    """The parsed line, or None when help was asked for (and printed)."""
    try:
        # Not posix: quotes stay, so --over glob('*.ms') keeps its string literal.
        lexer = shlex.shlex(line, posix=False)
        lexer.whitespace_split = True
        tokens = list(lexer)
    except ValueError as exc:
        raise UsageError(f"%%pipestage: cannot split {line!r}: {exc}") from None
    p = parser()
    argv = _join_expression(tokens, set(p._option_string_actions))
    if {"-h", "--help"} & set(argv):
        print(p.format_help())
        return None
    args = p.parse_args(argv)
    if not args.var.isidentifier():
        raise UsageError(f"%%pipestage: --as needs a Python name, got {args.var!r}")
    if args.output is not None and not args.output.isidentifier():
        raise UsageError(f"%%pipestage: -o needs a Python name, got {args.output!r}")
    return args


def _join_expression(argv: list[str], flags: set[str]) -> list[str]:
    """``--over [1, 2, 3] --as x`` splits into pieces: --over takes everything up to the
    next option, so expressions need no quotes."""
    argv = [part for a in argv for part in (a.split("=", 1) if a.startswith("--over=") else [a])]
    if "--over" not in argv:
        return [_unquote(a) for a in argv]
    start = argv.index("--over") + 1
    end = start
    while end < len(argv) and argv[end] not in flags and argv[end].split("=", 1)[0] not in flags:
        end += 1
    expression = [" ".join(argv[start:end])] if end > start else []  # none: argparse says so
    return [_unquote(a) for a in argv[:start]] + expression + [_unquote(a) for a in argv[end:]]


def _unquote(token: str) -> str:
    if len(token) >= 2 and token[0] == token[-1] and token[0] in "'\"":
        return token[1:-1]
    return token


def _items(expression: str, namespace: dict[str, Any]) -> Any:

    scope = {"glob": inputs.glob, "mapfile": inputs.mapfile, **namespace}
    try:
        return eval(expression, scope)  # the user's own expression, in their own namespace
    except Exception as exc:
        raise UsageError(
            f"%%pipestage: --over {expression!r} failed: {type(exc).__name__}: {exc}"
        ) from None


def run_cell(shell: Any, line: str, cell: str) -> Any:
    """Run the cell body as a stage; bind ``-o``; return the results when there is no ``-o``."""

    args = parse(line)
    if args is None:
        return None
    namespace = shell.user_ns
    items = _items(args.over, namespace) if args.over is not None else None
    try:
        work = cell_work(
            shell.transform_cell(cell),
            namespace,
            name=args.name,
            item_var=args.var if args.over is not None else None,
        )
        client = None
        if args.cluster:
            client = get(args.cluster).client
        result = run_stage(
            args.name,
            work,
            items,
            retries=args.retries,
            resources=parse_resources(args.resources),
            per_worker=args.per_worker,
            rerun=args.rerun,
            batch=False if args.batch == "off" else args.batch,
            client=client,
            progress=None if args.progress == "none" else args.progress,
        )
    except StageFailed as exc:
        if args.output:
            namespace[args.output] = exc.result
        raise
    except PipejupyterError as exc:
        raise UsageError(f"%%pipestage {args.name}: {exc}") from None
    value = result if args.over is not None else result.value
    if args.output:
        namespace[args.output] = value
        return None
    return value
