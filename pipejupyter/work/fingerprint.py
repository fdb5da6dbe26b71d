"""Stable fingerprints of work and inputs, equal across kernel restarts.

A re-run skips an item when its fingerprint matches a stored success, so the token of
a value must not depend on the process: functions are fingerprinted by their code
(bytecode, constants, names, defaults, closure values), not by pickling them, because
a pickled notebook function carries the kernel's temporary file name.
"""

from __future__ import annotations

import hashlib
import os
import types
from collections.abc import Mapping
from typing import Any

_MAX_DEPTH = 12


def digest(*parts: Any) -> str:
    """A hex digest of the tokens of ``parts``."""
    h = hashlib.sha256()
    for part in parts:
        h.update(token(part).encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()


def token(value: Any, _depth: int = 0) -> str:
    """A deterministic text token for ``value``."""
    if _depth > _MAX_DEPTH:
        return "<deep>"
    d = _depth + 1
    if value is None or isinstance(value, (bool, int, float, complex)):
        return f"{type(value).__name__}:{value!r}"
    if isinstance(value, (str, bytes)):
        return f"{type(value).__name__}:{len(value)}:{value!r}"
    if isinstance(value, os.PathLike):
        return f"path:{os.fspath(value)!r}"
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__}[{','.join(token(v, d) for v in value)}]"
    if isinstance(value, (set, frozenset)):
        return f"set[{','.join(sorted(token(v, d) for v in value))}]"
    if isinstance(value, Mapping):
        items = sorted((token(k, d), token(v, d)) for k, v in value.items())
        return f"map{{{','.join(f'{k}:{v}' for k, v in items)}}}"
    method = getattr(type(value), "fingerprint", None)
    if callable(method) and not isinstance(value, type):
        return f"{type(value).__qualname__}:{value.fingerprint()}"
    if isinstance(value, types.FunctionType):
        return _function_token(value, d)
    if isinstance(value, types.MethodType):
        return f"method:{token(value.__func__, d)}:{token(value.__self__, d)}"
    if isinstance(value, types.ModuleType):
        return f"module:{value.__name__}"
    if isinstance(value, type):
        return f"class:{value.__module__}.{value.__qualname__}"
    if isinstance(value, types.CodeType):
        return _code_token(value, d)
    if isinstance(value, types.BuiltinFunctionType):
        return f"builtin:{getattr(value, '__module__', '')}.{value.__qualname__}"
    try:
        from dask.base import tokenize
    except ImportError:  # pragma: no cover - dask is a dependency
        return f"repr:{value!r}"
    return f"dask:{tokenize(value)}"


def _code_token(code: types.CodeType, depth: int) -> str:
    consts = ",".join(token(c, depth) for c in code.co_consts)
    return f"code:{code.co_code.hex()}:{consts}:{','.join(code.co_names)}:{code.co_argcount}"


def _function_token(fn: types.FunctionType, depth: int) -> str:
    if (
        fn.__module__ not in ("__main__", None)
        and "<locals>" not in fn.__qualname__
        and fn.__name__ != "<lambda>"
    ):
        # Importable functions are part of an installed library: name plus code.
        head = f"{fn.__module__}.{fn.__qualname__}"
    else:
        head = fn.__qualname__
    closure = [c.cell_contents for c in fn.__closure__ or () if _has_contents(c)]
    return (
        f"fn:{head}:{_code_token(fn.__code__, depth)}:defaults={token(fn.__defaults__, depth)}"
        f":kw={token(fn.__kwdefaults__, depth)}:closure={token(closure, depth)}"
    )


def _has_contents(cell: types.CellType) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - an empty cell raises
    except ValueError:
        return False
    return True
