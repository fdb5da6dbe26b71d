"""``%pipecluster`` and ``%%pipestage``: parse the line, call the core, display the result.

Loading registers the magics, tab completion and a display formatter that shows a
ClusterHandle as the live widget. It imports neither distributed nor ipywidgets nor any
backend library: those load when a subcommand or a display needs them.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class, no_var_expand

from pipejupyter.config.loader import load_config
from pipejupyter.errors import PipejupyterError
from pipejupyter.lifecycle import discovery
from pipejupyter.lifecycle.handle import ClusterHandle
from pipejupyter.lifecycle.manager import clusters, default_manager
from pipejupyter.notebook import (
    commands,  # noqa: F401 - registers the built-in subcommands
    parser,
    stage_progress,  # noqa: F401 - offers the stage widget to run_stage
)

COMPLETER_KEY = "%pipecluster"
STAGE_MODULE = f"{__package__}.stage_magic"


def run_line(shell: Any, line: str) -> Any:
    """Parse and run one ``%pipecluster`` line; core errors become one-line UsageErrors."""
    try:
        args = parser.parse(line)
        command = parser.subcommands()[args.command]
        return command.run(args, shell)
    except parser.HelpRequested as help_text:
        print(help_text.text.rstrip())
        return None
    except PipejupyterError as exc:
        name = line.split()[0] if line.split() else parser.DEFAULT_SUBCOMMAND
        raise UsageError(f"%pipecluster {name}: {exc}") from None


@magics_class
class PipeclusterMagics(Magics):
    @line_magic
    def pipecluster(self, line: str = ""):
        # The docstring is replaced by parser.full_help() so %pipecluster? matches the parser.
        return run_line(self.shell, line)

    @cell_magic
    # --over takes a Python expression: {k: v ...} must not be read as $-style expansion
    @no_var_expand
    def pipestage(self, line: str, cell: str):
        """Run the cell as a pipeline stage on the current cluster (see %%pipestage -h)."""
        try:
            stage_magic = importlib.import_module(STAGE_MODULE)
        except ModuleNotFoundError as exc:
            if exc.name != STAGE_MODULE:
                raise
            raise UsageError(
                "%%pipestage: pipeline stages are not available in this installation "
                f"({STAGE_MODULE} is missing)"
            ) from None
        return stage_magic.run_cell(self.shell, line, cell)


def _refresh_doc() -> None:
    PipeclusterMagics.pipecluster.__doc__ = parser.full_help()


def complete(shell: Any, event: Any) -> list[str]:
    """Tab completion: subcommands, option names, profile names, cluster names and ids."""
    typed = event.text_until_cursor
    words = typed.split()
    current = "" if not words or typed[-1:].isspace() else words.pop()
    words = words[1:]  # drop %pipecluster itself
    registry = parser.subcommands()
    if not words:
        return list(registry)
    command = registry.get(words[0])
    if command is None:
        return []
    if current.startswith("-"):
        return [flag for a in command.arguments for flag in a.flags if flag.startswith("-")]
    taking_value = {
        flag
        for a in command.arguments
        if a.flags[0].startswith("-")
        and a.kwargs.get("action") not in ("store_true", "store_false")
        for flag in a.flags
    }
    index = 0
    previous = None
    for word in words[1:]:
        if not word.startswith("-") and previous not in taking_value:
            index += 1
        previous = word
    if previous in taking_value:
        option = next(a for a in command.arguments if previous in a.flags)
        return _candidates(option.complete)
    positionals = command.positionals()
    return _candidates(positionals[index].complete) if index < len(positionals) else []


def _candidates(kind: str | None) -> list[str]:
    try:
        if kind == parser.PROFILE:
            return load_config().profile_names
        if kind == parser.CLUSTER:
            return [h.name for h in clusters()]
        if kind == parser.DISCOVERED:
            records = discovery.read_all()
            return [r["id"] for r in records] + [r["name"] for r in records if r.get("name")]
        if kind == parser.SUBCOMMAND:
            return list(parser.subcommands())
    except Exception:  # completion must never raise into the editor (e.g. a broken config file)
        return []
    return []


def _handle_mimebundle(handle: Any) -> dict[str, Any]:
    # The widget module loads at the first display of a handle, not with %load_ext.
    from pipejupyter.notebook.cluster_widget import handle_mimebundle

    return handle_mimebundle(handle)


def load(ipython: Any) -> None:
    default_manager.owner_kind = "kernel"
    _refresh_doc()
    parser.on_change(_refresh_doc)
    ipython.register_magics(PipeclusterMagics)
    ipython.set_hook("complete_command", complete, str_key=COMPLETER_KEY)
    ipython.display_formatter.mimebundle_formatter.for_type(ClusterHandle, _handle_mimebundle)


def unload(ipython: Any) -> None:
    magics = ipython.magics_manager.magics
    magics["line"].pop("pipecluster", None)
    magics["cell"].pop("pipestage", None)
    ipython.magics_manager.registry.pop(PipeclusterMagics.__name__, None)
    dispatcher = ipython.strdispatchers.get("complete_command")
    if dispatcher is not None:
        dispatcher.strs.pop(COMPLETER_KEY, None)
    ipython.display_formatter.mimebundle_formatter.pop(ClusterHandle, None)
    if "pipejupyter.notebook.cluster_widget" in sys.modules:
        sys.modules["pipejupyter.notebook.cluster_widget"].close_all()
