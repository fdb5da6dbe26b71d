"""Stage inputs -> keyed items: lists, dicts, globs and LOFAR mapfiles.

Every item has a key (stable across runs, so a re-run can find what already succeeded),
a value (what the work receives) and an optional host hint (from a mapfile).
"""

from __future__ import annotations

import ast
import glob as _glob
import hashlib
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipejupyter.errors import PipejupyterError
from pipejupyter.stages.bulk import paused_gc
from pipejupyter.work.fingerprint import digest, token

#: key of the single item of a stage that runs once (no items)
ONCE = "-"
_GLOB_CHARS = re.compile(r"[*?\[]")
# old-style LOFAR mapfile line:  locus001 = [/data/L1_SB000.MS, /data/L1_SB001.MS]
_MAP_LINE = re.compile(r"^\s*(?P<host>[^=\s#][^=]*?)\s*=\s*\[(?P<files>.*)\]\s*$")


class InputError(PipejupyterError, ValueError):
    """Stage inputs that cannot be turned into items."""


@dataclass(frozen=True, slots=True)  # slots: a million items, a third of the memory
class Item:
    key: str
    value: Any
    host: str | None = None


@dataclass(frozen=True)
class Glob:
    """A glob pattern, expanded (sorted) when the stage starts."""

    pattern: str
    recursive: bool = True


@dataclass(frozen=True)
class Mapfile:
    """A LOFAR mapfile: items are its files, each placed on workers of its host."""

    path: str


def glob(pattern: str | os.PathLike, recursive: bool = True) -> Glob:
    return Glob(os.fspath(pattern), recursive)


def mapfile(path: str | os.PathLike) -> Mapfile:
    return Mapfile(os.fspath(path))


def resolve_items(items: Any) -> list[Item]:
    """Turn what a user passes as ``items`` into keyed items, or raise one clear error."""
    if items is None:
        return [Item(ONCE, None)]
    if isinstance(items, Mapfile):
        return read_mapfile(items.path)
    if isinstance(items, Glob):
        return _expand_glob(items.pattern, items.recursive)
    if isinstance(items, (str, os.PathLike)):
        text = os.fspath(items)
        if not _GLOB_CHARS.search(text) and _is_mapfile(text):
            return read_mapfile(text)
        return _expand_glob(text, True)
    if isinstance(items, Mapping):
        return [Item(_key_text(k), v) for k, v in items.items()]
    if isinstance(items, (bytes, bytearray)):
        raise InputError("items must be a list, dict, glob pattern or mapfile, not bytes")
    if isinstance(items, Iterable):
        values = list(items)
        with paused_gc():  # a million Items: no collection walking them as they are made
            return _list_items(values)
    raise InputError(
        f"cannot iterate over items of type {type(items).__name__}; "
        "accepted: a list/tuple/range, a dict, a glob pattern, pipejupyter.glob(...), "
        "or a LOFAR mapfile (pipejupyter.mapfile(path))"
    )


def _list_items(values: list[Any]) -> list[Item]:
    if any(issubclass(kind, Item) for kind in set(map(type, values))):
        return [v if isinstance(v, Item) else Item(str(i), v) for i, v in enumerate(values)]
    return [Item(k, v) for k, v in zip(_list_keys(values), values, strict=True)]


def _key_text(key: Any) -> str:
    return key if isinstance(key, str) else repr(key)


def _list_keys(values: list[Any]) -> list[str]:
    """Keys for list items: the values themselves when they are short, unique scalars
    (file names survive re-ordering), else their positions."""
    kinds = set(map(type, values))
    if kinds == {int}:  # range(10**6) and the like: the same keys as below, in C loops
        if len(set(values)) == len(values):
            keys = list(map(repr, values))
            if max(map(len, keys)) <= 200:
                return keys
        return [str(i) for i in range(len(values))]
    if kinds == {str}:
        if len(set(values)) == len(values) and all(0 < len(k) <= 200 for k in values):
            return values
        return [str(i) for i in range(len(values))]
    scalars = (str, int, float, Path)
    if values and all(isinstance(v, scalars) and not isinstance(v, bool) for v in values):
        keys = [os.fspath(v) if isinstance(v, (str, Path)) else repr(v) for v in values]
        if len(set(keys)) == len(keys) and all(0 < len(k) <= 200 for k in keys):
            return keys
    return [str(i) for i in range(len(values))]


def _expand_glob(pattern: str, recursive: bool) -> list[Item]:
    matches = sorted(_glob.glob(os.path.expanduser(pattern), recursive=recursive))
    if not matches:
        where = os.path.abspath(os.path.dirname(pattern) or ".")
        raise InputError(f"no files match {pattern!r} (looked in {where})")
    return [Item(m, m) for m in matches]


def _is_mapfile(path: str) -> bool:
    if not os.path.isfile(path):
        return False
    try:
        with open(path, encoding="utf-8") as fh:
            head = fh.read(4096)
    except (OSError, UnicodeDecodeError):
        return False
    for line in head.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        return line.startswith("[") or bool(_MAP_LINE.match(line))
    return False


def read_mapfile(path: str | os.PathLike) -> list[Item]:
    """Read a LOFAR mapfile in either of its two formats:

    - old style, one line per host: ``locus001 = [/data/a.MS, /data/b.MS]``
    - DataMap style, a Python literal:
      ``[{'host': 'locus001', 'file': '/data/a.MS', 'skip': False}, ...]``

    Entries with ``skip: True`` are left out, as LOFAR's pipeline does.
    """
    path = os.fspath(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read mapfile {path}: {exc.strerror or exc}") from None
    stripped = text.lstrip()
    if stripped.startswith("["):
        return _datamap_items(path, text)
    items: list[Item] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _MAP_LINE.match(line)
        if not m:
            raise InputError(
                f"{path}:{number}: not a mapfile line: {line.strip()[:80]!r}; "
                "accepted: 'host = [file, file, ...]' lines "
                "or a DataMap list of {'host':..., 'file':...}"
            )
        host = m["host"].strip()
        for name in (f.strip().strip("'\"") for f in m["files"].split(",")):
            if name:
                items.append(Item(name, name, host))
    return _unique(path, items)


def _datamap_items(path: str, text: str) -> list[Item]:
    try:
        entries = ast.literal_eval(text)
    except (ValueError, SyntaxError) as exc:
        line = getattr(exc, "lineno", None)
        where = f"{path}:{line}" if line else path
        raise InputError(
            f"{where}: not a valid DataMap literal: {exc.__class__.__name__}: {exc}"
        ) from None
    items = []
    for n, entry in enumerate(entries if isinstance(entries, list) else [None]):
        if not isinstance(entry, Mapping) or "file" not in entry or "host" not in entry:
            raise InputError(
                f"{path}: entry {n} must be a mapping with 'host' and 'file' keys, "
                f"got {entry!r:.80}"
            )
        if entry.get("skip"):
            continue
        items.append(Item(str(entry["file"]), str(entry["file"]), str(entry["host"])))
    return _unique(path, items)


def _unique(path: str, items: list[Item]) -> list[Item]:
    seen: dict[str, str | None] = {}
    for item in items:
        if item.key in seen:
            raise InputError(
                f"{path}: file {item.key!r} is listed twice "
                f"(hosts {seen[item.key]} and {item.host})"
            )
        seen[item.key] = item.host
    if not items:
        raise InputError(f"{path}: the mapfile lists no files")
    return items


def write_mapfile(path: str | os.PathLike, placement: Mapping[str, Iterable[str]]) -> Path:
    """Write an old-style mapfile (host = [files]) - handy for examples and tests."""
    lines = [
        f"{host} = [{', '.join(os.fspath(f) for f in files)}]" for host, files in placement.items()
    ]
    out = Path(path)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def item_fingerprint(work_fingerprint: str, value: Any) -> str:
    """An item's identity across runs: the work's fingerprint and the item's value."""
    return digest(work_fingerprint, value)


def item_fingerprinter(work_fingerprint: str) -> Callable[[Any], str]:
    """``item_fingerprint`` for one work, faster: the work's part is hashed once, not per
    item (a million items: seconds less on every re-run). Same fingerprints."""
    prefix = hashlib.sha256()
    prefix.update(token(work_fingerprint).encode("utf-8", "surrogatepass"))
    prefix.update(b"\x00")

    def fingerprint(value: Any) -> str:
        h = prefix.copy()
        kind = type(value)
        # The commonest item values, tokenized inline (the same text as token() gives).
        if kind is int:
            text = f"int:{value!r}"
        elif kind is str:
            text = f"str:{len(value)}:{value!r}"
        else:
            text = token(value)
        h.update(text.encode("utf-8", "surrogatepass") + b"\x00")
        return h.hexdigest()

    return fingerprint
