"""A notebook cell body as stage work (what ``%%pipestage`` sends to the workers).

The body runs on the worker as a small module: the names it uses from the notebook's
namespace travel with it (pickled one by one here, so an unpicklable one is named in the
error), the item is bound to a variable, imports run on the worker, and the value of the
last expression is the item's result.
"""

from __future__ import annotations

import ast
import builtins
import linecache
from collections.abc import Mapping
from typing import Any

from pipejupyter.errors import PipejupyterError
from pipejupyter.work.fingerprint import digest, token
from pipejupyter.work.kinds import Work

RESULT_NAME = "__pipestage_result__"
# IPython's own names in a user namespace: never sent along.
_SHELL_NAMES = frozenset(
    {
        "In",
        "Out",
        "get_ipython",
        "exit",
        "quit",
        "_",
        "__",
        "___",
        "_ih",
        "_oh",
        "_dh",
        "_ii",
        "_iii",
    }
)


class CellError(PipejupyterError, ValueError):
    """A cell body that cannot be sent to the workers."""


def compile_body(source: str, filename: str) -> Any:
    """Compile ``source`` as a module whose last expression is stored in RESULT_NAME."""
    try:
        tree = ast.parse(source, filename, "exec")
    except SyntaxError as exc:
        raise CellError(f"{filename} line {exc.lineno}: {exc.msg}") from None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = tree.body[-1]
        assign = ast.Assign(targets=[ast.Name(RESULT_NAME, ast.Store())], value=last.value)
        tree.body[-1] = ast.copy_location(assign, last)
        ast.fix_missing_locations(tree)
    return compile(tree, filename, "exec")


def used_names(source: str) -> list[str]:
    """Names the body reads before binding them itself, in order of first use.

    Top-level statements are walked in order; a name assigned, imported or defined by an
    earlier statement is the body's own. Reads inside functions count where the function
    is defined: a conservative approximation (at worst, one more value travels).
    """
    tree = ast.parse(source)
    bound: set[str] = set()
    wanted: dict[str, None] = {}
    for stmt in tree.body:
        loads, stores = _names(stmt)
        for name in loads:
            if name not in bound:
                wanted.setdefault(name, None)
        bound |= stores
    return list(wanted)


def _names(stmt: ast.stmt) -> tuple[list[str], set[str]]:
    loads: list[str] = []
    stores: set[str] = set()
    for node in ast.walk(stmt):
        if isinstance(node, ast.Name):
            (loads.append if isinstance(node.ctx, ast.Load) else stores.add)(node.id)  # type: ignore[func-returns-value]
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                stores.add((alias.asname or alias.name).split(".")[0])
        elif (
            isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node is stmt
        ):
            stores.add(node.name)
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
        # Arguments are local to the function: do not look them up in the notebook.
        args = stmt.args
        local = {a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)}
        local |= {a.arg for a in (args.vararg, args.kwarg) if a}
        inner_stores = {
            n.id
            for n in ast.walk(stmt)
            if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)
        }
        loads = [n for n in loads if n not in local and n not in inner_stores]
    return loads, stores


class CellWork(Work):
    kind = "cell"

    def __init__(
        self,
        source: str,
        filename: str,
        item_var: str | None,
        blobs: Mapping[str, bytes],
        values_token: str,
    ) -> None:
        self.source = source
        self.filename = filename
        self.item_var = item_var
        self.blobs = dict(blobs)
        self._token = digest("cell", source, item_var, values_token)
        self._code: Any = None
        self._values: dict[str, Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_code"] = None  # code objects are rebuilt on the worker (and cached there)
        state["_values"] = None
        return state

    def _prepare(self) -> tuple[Any, dict[str, Any]]:
        if self._code is None:
            import cloudpickle

            # Tracebacks on the worker show the cell's own lines.
            lines = self.source.splitlines(True)
            linecache.cache[self.filename] = (len(self.source), None, lines, self.filename)
            self._values = {name: cloudpickle.loads(blob) for name, blob in self.blobs.items()}
            self._code = compile_body(self.source, self.filename)
        return self._code, self._values or {}

    def run_item(self, value: Any, key: str, has_item: bool) -> Any:
        code, values = self._prepare()
        namespace: dict[str, Any] = {
            "__builtins__": builtins,
            "__name__": "__pipestage__",
            **values,
        }
        if self.item_var:
            namespace[self.item_var] = value
        exec(code, namespace)
        return namespace.get(RESULT_NAME)

    def fingerprint(self) -> str:
        return self._token

    def describe(self) -> str:
        first = next((line.strip() for line in self.source.splitlines() if line.strip()), "")
        return f"cell: {first[:60]}"


def cell_work(
    source: str, namespace: Mapping[str, Any], *, name: str, item_var: str | None = None
) -> CellWork:
    """Build the work for a cell body, taking what it uses from ``namespace``."""
    import cloudpickle

    filename = f"<pipestage {name}>"
    compile_body(source, filename)  # a syntax error is reported here, before anything runs
    blobs: dict[str, bytes] = {}
    tokens: list[tuple[str, str]] = []
    for used in used_names(source):
        if used == item_var or used in _SHELL_NAMES or used not in namespace:
            continue
        if (
            used.startswith("_i")
            and used[2:].isdigit()
            or used.startswith("_")
            and used[1:].isdigit()
        ):
            continue  # IPython's input/output history variables
        value = namespace[used]
        if value is getattr(builtins, used, object()):
            continue
        try:
            blobs[used] = cloudpickle.dumps(value)
        except Exception as exc:
            raise CellError(
                f"the cell uses {used!r} ({type(value).__name__}) from the notebook, "
                "and it cannot be "
                f"sent to the workers: {type(exc).__name__}: {exc}. "
                "Create it inside the cell instead, "
                "or pass something picklable (a file name, plain data)"
            ) from None
        tokens.append((used, token(value)))
    return CellWork(source, filename, item_var, blobs, digest(tokens))
