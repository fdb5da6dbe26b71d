"""Argument parsing for ``%pipecluster``: one registry of subcommands, one parser built from it.

Each subcommand is one function ``run(args, shell)`` registered with :func:`subcommand`
and described by :func:`arg` decorators (argparse arguments, in the order written).
Another module adds a subcommand the same way (``stages`` does), and the help text,
``%pipecluster?``, tab completion and parsing all follow the registry.

Every parse problem raises IPython's ``UsageError`` with the usage line: never
``SystemExit``, never a traceback. ``%%pipestage`` parses its line with the same
:class:`MagicArgumentParser`.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from IPython.core import magic_arguments
from IPython.core.error import UsageError

PROG = "%pipecluster"
DEFAULT_SUBCOMMAND = "status"

#: completion kinds a positional argument can declare with ``arg(..., complete=...)``
PROFILE, CLUSTER, DISCOVERED, SUBCOMMAND = "profile", "cluster", "discovered", "subcommand"


class HelpRequested(Exception):
    """``-h``/``--help`` was given: show this text instead of running anything."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class _HelpAction(argparse.Action):
    def __init__(
        self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None
    ):
        super().__init__(
            option_strings=option_strings, dest=dest, default=default, nargs=0, help=help
        )

    def __call__(self, parser, namespace, values, option_string=None):
        raise HelpRequested(parser.format_help())


class MagicArgumentParser(magic_arguments.MagicArgumentParser):
    """argparse for a magic's line (``%pipecluster`` and ``%%pipestage``): raises UsageError
    (with the usage line) instead of exiting the kernel.

    Parameters
    ----------
    *args, **kwargs
        As for ``argparse.ArgumentParser``; ``add_help`` is ignored (see ``help_option``).
    prefix : str
        Put before every error message, e.g. ``"%%pipestage: "`` (default: nothing).
    help_option : bool
        Add ``-h``/``--help``, which raise :class:`HelpRequested` with the help text (default).
        Without it the caller handles -h itself (``%%pipestage`` does, before parsing).
    """

    def __init__(
        self, *args: Any, prefix: str = "", help_option: bool = True, **kwargs: Any
    ) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        kwargs["add_help"] = False  # argparse's help action exits the process
        super().__init__(*args, **kwargs)
        self.prefix = prefix
        if help_option:
            self.add_argument("-h", "--help", action=_HelpAction, help="show this help")

    def error(self, message: str):
        raise UsageError(f"{self.prefix}{message}\n{self.format_usage().strip()}")

    def exit(self, status: int = 0, message: str | None = None):
        # argparse exits only from error() and its own help/version actions, none of which
        # these parsers use: kept so that nothing can end the kernel.
        raise UsageError((message or f"{self.prog}: exit {status}").strip())


@dataclass
class Argument:
    flags: tuple[str, ...]
    kwargs: dict[str, Any]
    group: str | None = None  # arguments sharing a group are mutually exclusive
    complete: str | None = None  # PROFILE | CLUSTER | DISCOVERED | SUBCOMMAND


@dataclass
class Subcommand:
    name: str
    help: str
    run: Callable[[argparse.Namespace, Any], Any]
    arguments: list[Argument] = field(default_factory=list)
    description: str = ""

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        groups: dict[str, argparse._MutuallyExclusiveGroup] = {}
        for argument in self.arguments:
            target: Any = parser
            if argument.group:
                if argument.group not in groups:
                    groups[argument.group] = parser.add_mutually_exclusive_group()
                target = groups[argument.group]
            target.add_argument(*argument.flags, **argument.kwargs)

    def positionals(self) -> list[Argument]:
        return [a for a in self.arguments if not a.flags[0].startswith("-")]


_REGISTRY: dict[str, Subcommand] = {}
_parser_cache: list[MagicArgumentParser] = []
_listeners: list[Callable[[], None]] = []


def arg(*flags: str, group: str | None = None, complete: str | None = None, **kwargs: Any):
    """Declare one argparse argument of a subcommand (decorators apply bottom-up)."""

    def decorate(func):
        declared = func.__dict__.setdefault("_pipecluster_arguments", [])
        declared.insert(0, Argument(flags, kwargs, group, complete))
        return func

    return decorate


def subcommand(name: str, help: str, *, description: str = ""):
    """Register ``func(args, shell)`` as ``%pipecluster NAME``; a later registration replaces it."""

    def decorate(func):
        register(
            Subcommand(
                name, help, func, list(func.__dict__.get("_pipecluster_arguments", [])), description
            )
        )
        return func

    return decorate


def register(command: Subcommand) -> None:
    _REGISTRY[command.name] = command
    _parser_cache.clear()
    for listener in list(_listeners):
        listener()


def unregister(name: str) -> None:
    if _REGISTRY.pop(name, None) is not None:
        _parser_cache.clear()
        for listener in list(_listeners):
            listener()


def on_change(listener: Callable[[], None]) -> None:
    """Call ``listener`` whenever the registry changes (the magic refreshes its docstring)."""
    if listener not in _listeners:
        _listeners.append(listener)


def subcommands() -> dict[str, Subcommand]:
    return dict(_REGISTRY)


def parser() -> MagicArgumentParser:
    """The whole parser, rebuilt only when the registry changed."""
    if not _parser_cache:
        root = MagicArgumentParser(
            prog=PROG, description="Dask clusters from pipejupyter configuration."
        )
        sub = root.add_subparsers(
            dest="command", metavar="SUBCOMMAND", parser_class=MagicArgumentParser
        )
        for command in _REGISTRY.values():
            # argparse %-formats the help of each choice: a literal %pipecluster needs %%.
            child = sub.add_parser(
                command.name,
                help=command.help.replace("%", "%%"),
                description=command.description or command.help,
            )
            command.add_to(child)
        _parser_cache.append(root)
    return _parser_cache[0]


def subparser(name: str) -> MagicArgumentParser:
    action = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    try:
        return action.choices[name]
    except KeyError:
        raise UsageError(
            f"unknown subcommand {name!r}; subcommands: {', '.join(_REGISTRY)}\n"
            f"{parser().format_usage().strip()}"
        ) from None


def split(line: str) -> list[str]:
    """Split the line as a POSIX shell would: quotes group words and are removed
    (``--name 'two words'`` is the name ``two words``), a backslash escapes the next
    character, ``#`` is an ordinary character. IPython has already expanded ``$var`` and
    ``{expr}`` in the line, so a value with spaces needs quotes: ``--name "$who"``.
    Unbalanced quotes are a UsageError with the usage line."""
    lexer = shlex.shlex(line, posix=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        return list(lexer)
    except ValueError as exc:  # unbalanced quotes, a trailing backslash
        raise UsageError(
            f"cannot split {line!r}: {exc}; quote a value with spaces as in a shell, "
            f"e.g. --name 'two words'\n{parser().format_usage().strip()}"
        ) from None


def parse(line: str) -> argparse.Namespace:
    """Parse one magic line; an empty line means ``status``. Raises UsageError or HelpRequested."""
    argv = split(line)
    if not argv:
        argv = [DEFAULT_SUBCOMMAND]
    root = parser()
    if argv[0] not in _REGISTRY and not argv[0].startswith("-"):
        subparser(argv[0])  # raises the unknown-subcommand error with the list of names
    args, extra = root.parse_known_args(argv)
    if args.command is None:
        root.error("a subcommand is required")
    if extra:
        subparser(args.command).error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def usage_line(name: str) -> str:
    return " ".join(subparser(name).format_usage().split()).removeprefix("usage: ")


def full_help() -> str:
    """``%pipecluster help`` and ``%pipecluster?``: every subcommand's usage, from the parser."""
    lines = [
        "%pipecluster SUBCOMMAND [options]: Dask clusters from pipejupyter configuration.",
        "A bare %pipecluster shows the live widget of the current cluster (same as status).",
        "",
        "Subcommands:",
    ]
    for name, command in _REGISTRY.items():
        lines.append(f"  {name:<9} {command.help}")
        lines.append(f"      {usage_line(name)}")
    lines += [
        "",
        "%pipecluster help SUBCOMMAND (or %pipecluster SUBCOMMAND -h) "
        "shows one subcommand's options.",
        "start and connect return the cluster handle (c = %pipecluster start) and make its Client",
        "the default Dask client. Python variables expand in the line: -n $n or -n {n}.",
        "Words are split as in a shell: quote a value with spaces, --name 'two words'.",
    ]
    return "\n".join(lines)


# -- argument types: argparse turns their ValueError/ArgumentTypeError into a usage error --


def nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def positive_int(text: str) -> int:
    value = nonnegative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected an integer > 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number of seconds > 0, got {text!r}"
        ) from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def adapt_range(text: str) -> tuple[int, int]:
    minimum, sep, maximum = text.partition(":")
    try:
        if not sep:
            raise ValueError
        low, high = nonnegative_int(minimum), nonnegative_int(maximum)
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(
            f"expected MIN:MAX with integers >= 0, e.g. 1:4, got {text!r}"
        ) from None
    if low > high:
        raise argparse.ArgumentTypeError(f"minimum {low} is above maximum {high} in {text!r}")
    return low, high


def assignment(text: str) -> str:
    key, sep, _ = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(
            f"expected KEY=VALUE, e.g. cluster_kwargs.memory=4GiB, got {text!r}"
        )
    return text
