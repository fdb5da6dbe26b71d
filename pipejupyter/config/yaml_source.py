"""Read YAML while remembering the file and line of every mapping key.

Provenance (``file:line`` for every resolved value) starts here: the loader returns the
data plus a map from key path (a tuple) to the line where that key was written.

A config file is input that may be hostile (the Jupyter server reads ``./config.yaml`` on
every profiles poll), so reading one is bounded. Events come from libyaml when it is
installed (PyYAML's pure-Python parser otherwise) and we build plain values from them in
one pass, with PyYAML's scalar rules (no node tree: building one made large files slow),
so that:

- every use of an alias (``*name``, ``<<: *name``) copies the value it names, and all the
  copies of one file may hold at most :data:`MAX_ALIAS_NODES` nodes (the environment
  variable ``PIPEJUPYTER_MAX_ALIAS_NODES`` raises it): a few hundred bytes of "billion
  laughs" are an error naming the alias, not gigabytes of memory;
- an alias used inside the node it names is a "recursive alias" error at the alias's line;
- values nest at most :data:`MAX_DEPTH` levels (through aliases too), so nothing later
  (copies, merges, validation) can hit Python's recursion limit.

Merge keys (``<<``) follow PyYAML: merged keys come first, a key written in the mapping
itself wins over a merged one, and of several merged mappings the first listed wins.

A key written twice in one mapping is read as PyYAML reads it (the last value wins, in the
first one's place) and recorded in :attr:`SourcedYAML.duplicates`: whether that is an error
or a warning depends on the format (see formats.py), not on the YAML.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from yaml.events import (
    AliasEvent,
    MappingEndEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.nodes import ScalarNode

from pipejupyter.errors import ConfigError

KeyPath = tuple[str, ...]

#: Nodes that alias uses may add to one file (each use copies the node it names)
MAX_ALIAS_NODES = 100_000
#: Environment variable that replaces MAX_ALIAS_NODES
ALIAS_LIMIT_VARIABLE = "PIPEJUPYTER_MAX_ALIAS_NODES"
#: Mappings and lists nested in one another, counted from the top of the file
MAX_DEPTH = 100

#: Repeated keys of one file kept for messages (the count goes on past it)
MAX_DUPLICATES_KEPT = 50

MERGE_TAG = "tag:yaml.org,2002:merge"
STR_TAG = "tag:yaml.org,2002:str"
_EventLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class InvalidYAML(ConfigError):
    """The text is not YAML at all (a syntax error, an unreadable scalar), as opposed to
    YAML that breaks one of our bounds; ``--set`` keeps such a value as plain text."""


class Duplicate(NamedTuple):
    """A key written twice in one mapping: its path, both lines, and whether the two values
    are equal (the later one is the one read)."""

    path: KeyPath
    first_line: int
    line: int
    same: bool


class SourcedYAML:
    """Parsed YAML document with ``lines[path] -> 1-based line``."""

    def __init__(
        self,
        data: Any,
        lines: dict[KeyPath, int],
        filename: str,
        duplicates: list[Duplicate] | None = None,
        duplicate_count: int = 0,
    ) -> None:
        self.data = data
        self.lines = lines
        self.filename = filename
        #: the first MAX_DUPLICATES_KEPT repeated keys, in the order read
        self.duplicates = duplicates or []
        #: how many keys were repeated in all
        self.duplicate_count = duplicate_count or len(self.duplicates)

    def where(self, path: KeyPath) -> str:
        """``file:line`` of the deepest written prefix of ``path``."""
        for cut in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:cut]))
            if line is not None:
                return f"{self.filename}:{line}"
        return self.filename


def load_yaml_file(path: str | Path) -> SourcedYAML:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("config file not found", source=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file ({exc})", source=str(path)) from None
    return load_yaml_text(text, str(path))


def load_yaml_text(text: str, filename: str = "<string>") -> SourcedYAML:
    limit = alias_node_limit()
    lines: dict[KeyPath, int] = {}
    loader = _EventLoader(text)
    reader = _Reader(loader, filename, limit)
    try:
        data = reader.document(lines)
    except ConfigError:
        raise
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{filename}:{mark.line + 1}" if mark is not None else filename
        raise InvalidYAML(
            f"not valid YAML: {_problem(exc)}{_tab_hint(text, mark)}", source=where
        ) from None
    except (ValueError, TypeError) as exc:  # e.g. odd bytes
        raise InvalidYAML(f"not valid YAML: {exc}", source=filename) from None
    finally:
        loader.dispose()
    return SourcedYAML(data, lines, filename, reader.duplicates, reader.duplicate_count)


def alias_node_limit() -> int:
    """MAX_ALIAS_NODES, or the value of PIPEJUPYTER_MAX_ALIAS_NODES when set."""
    raw = os.environ.get(ALIAS_LIMIT_VARIABLE, "").strip()
    if not raw:
        return MAX_ALIAS_NODES
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ConfigError(
            f"{ALIAS_LIMIT_VARIABLE} must be an integer >= 0, got {raw!r}",
            source="environment",
            key=ALIAS_LIMIT_VARIABLE,
        )
    return value


class _Template:
    """An anchored value (``&name``), kept for its aliases: the value, the lines of its keys
    relative to it, how many nodes a copy adds and how deep it nests."""

    __slots__ = ("value", "lines", "count", "height")

    def __init__(self, value: Any, lines: list[tuple[KeyPath, int]]) -> None:
        self.value = value
        self.lines = lines
        self.count, self.height = _measure(value)


class _Reader:
    """Plain dicts, lists and scalars (with key lines) from the parser's events.

    ``level`` is how deep a mapping or list read at that point would nest (the top one is
    1). Every alias use copies its anchored value; ``copied`` counts the copied nodes.
    """

    def __init__(self, loader: Any, filename: str, limit: int) -> None:
        self.get = loader.get_event
        self.peek = loader.peek_event
        self.check = loader.check_event
        self.resolver = loader.resolve
        self.filename = filename
        self.limit = limit
        self.constructor = yaml.SafeLoader("")  # scalars exactly as yaml.safe_load reads them
        self.templates: dict[str, _Template] = {}
        self.open: set[str] = set()  # anchors whose value is still being read
        self.copied = 0
        self.tags: dict[tuple[str, Any], str] = {}  # (text, implicit) -> resolved tag
        self.scalars: dict[tuple[str, str], Any] = {}  # (tag, text) -> value (immutable)
        self.duplicates: list[Duplicate] = []
        self.duplicate_count = 0

    def document(self, lines: dict[KeyPath, int]) -> Any:
        self.get()  # stream start
        if self.check(StreamEndEvent):
            return None
        self.get()  # document start
        value = self.value((), lines, 1)
        self.get()  # document end
        if not self.check(StreamEndEvent):
            event = self.get()
            raise InvalidYAML(
                "not valid YAML: expected a single document in the stream, "
                "but found another document",
                source=f"{self.filename}:{event.start_mark.line + 1}",
            )
        return value

    # -- one value ---------------------------------------------------------------------
    def value(self, path: KeyPath, lines: dict[KeyPath, int], level: int) -> Any:
        event = self.get()
        kind = type(event)
        if kind is ScalarEvent:
            value = self.scalar(event)
            if event.anchor is not None:
                self.new_anchor(event)
                self.templates[event.anchor] = _Template(value, [])
            return value
        if kind is AliasEvent:
            return self.alias(event, path, lines, level)
        if level > MAX_DEPTH:
            raise _too_deep(f"{self.filename}:{event.start_mark.line + 1}")
        anchor = event.anchor
        own = lines
        if anchor is not None:
            self.new_anchor(event)
            self.open.add(anchor)
            own = {}  # collected apart: the template keeps them relative to itself
        if kind is SequenceStartEvent:
            out: Any = []
            while not self.check(SequenceEndEvent):
                out.append(self.value(path, own, level + 1))
            self.get()
        else:
            out = self.mapping(path, own, level)
        if anchor is not None:
            self.open.discard(anchor)
            cut = len(path)
            self.templates[anchor] = _Template(out, [(p[cut:], n) for p, n in own.items()])
            lines.update(own)
        return out

    def mapping(self, path: KeyPath, lines: dict[KeyPath, int], level: int) -> dict:
        out: dict[str, Any] = {}
        merges: list[list[tuple[dict, dict]]] = []
        peek, get = self.peek, self.get
        while True:
            event = peek()
            kind = type(event)
            if kind is MappingEndEvent:
                get()
                break
            if kind is ScalarEvent and event.anchor is None:  # the usual key: a plain word
                get()
                tag = self.tag(event)
                line = event.start_mark.line + 1
                if tag == MERGE_TAG:
                    merges.append(self.merge_sources(path, level, line))
                    continue
                key = (
                    event.value
                    if tag == STR_TAG
                    else self.plain_key(self.scalar(event, tag), path, line)
                )
            else:
                key, line = self.key(path, level)
            here = (*path, key)
            if key in out:
                # PyYAML keeps the last value (in the first one's place); the format decides
                # whether that is an error or a warning.
                first_line = lines.get(here, line)
                earlier = out[key]
                lines[here] = line
                out[key] = self.value(here, lines, level + 1)
                self.duplicate_count += 1
                if len(self.duplicates) < MAX_DUPLICATES_KEPT:
                    self.duplicates.append(
                        Duplicate(here, first_line, line, _equal(earlier, out[key]))
                    )
                continue
            lines[here] = line
            out[key] = self.value(here, lines, level + 1)
        if merges:
            out = _merge(merges, out, path, lines)
        return out

    def key(self, path: KeyPath, level: int) -> tuple[str, int]:
        event = self.get()
        line = event.start_mark.line + 1
        kind = type(event)
        if kind is ScalarEvent:
            key = self.scalar(event)
            if event.anchor is not None:
                self.new_anchor(event)
                self.templates[event.anchor] = _Template(key, [])
        elif kind is AliasEvent:
            key = self.alias(event, path, {}, level)
        else:
            key = [] if kind is SequenceStartEvent else {}
        return self.plain_key(key, path, line), line

    def plain_key(self, key: Any, path: KeyPath, line: int) -> str:
        if not isinstance(key, (str, int, float)) or isinstance(key, bool):
            shown = {list: "a list", dict: "a mapping"}.get(type(key)) or repr(key)
            raise ConfigError(
                f"mapping keys must be plain words, got {shown}",
                source=f"{self.filename}:{line}",
                key=".".join(path) or None,
            )
        return str(key)

    def merge_sources(self, path: KeyPath, level: int, line: int) -> list[tuple[dict, dict]]:
        """What one ``<<`` merges, in written order: (mapping, its key lines) pairs."""
        sources: list[tuple[dict, dict]] = []
        event = self.peek()
        if type(event) is SequenceStartEvent and event.anchor is None:
            self.get()
            while not self.check(SequenceEndEvent):
                own: dict[KeyPath, int] = {}
                sources.append((self.value(path, own, level), own))
            self.get()
        else:
            own = {}
            value = self.value(path, own, level)
            items = value if isinstance(value, list) else [value]
            sources = [(item, own) for item in items]
        if not sources or not all(isinstance(item, dict) for item, _ in sources):
            raise InvalidYAML(
                "a merge key (<<) takes a mapping or a list of mappings",
                source=f"{self.filename}:{line}",
                key=".".join((*path, "<<")),
            )
        return sources

    def alias(self, event: Any, path: KeyPath, lines: dict[KeyPath, int], level: int) -> Any:
        name = event.anchor
        line = event.start_mark.line + 1
        if name in self.open:
            raise ConfigError(
                f"recursive alias *{name}: the node anchored as &{name} contains itself",
                source=f"{self.filename}:{line}",
            )
        template = self.templates.get(name)
        if template is None:
            raise InvalidYAML(
                f"not valid YAML: found undefined alias {name!r}",
                source=f"{self.filename}:{line}",
            )
        if level + template.height - 1 > MAX_DEPTH:
            raise _too_deep(f"{self.filename}:{line}", name)
        self.copied += template.count
        if self.copied > self.limit:
            raise ConfigError(
                f"YAML aliases expand to more than {self.limit:,} nodes (here alias *{name}); "
                "every use of an alias copies the node it names. If the file is meant to be "
                f"this large, raise the limit with the environment variable "
                f"{ALIAS_LIMIT_VARIABLE}",
                source=f"{self.filename}:{line}",
            )
        for relative, key_line in template.lines:
            lines[(*path, *relative)] = key_line
        return _copy(template.value)

    def new_anchor(self, event: Any) -> None:
        anchor = event.anchor
        if anchor in self.templates or anchor in self.open:
            raise InvalidYAML(
                f"not valid YAML: found duplicate anchor {anchor!r}",
                source=f"{self.filename}:{event.start_mark.line + 1}",
            )

    # -- scalars -----------------------------------------------------------------------
    def tag(self, event: Any) -> str:
        tag = event.tag
        if tag is None or tag == "!":
            key = (event.value, event.implicit)
            tag = self.tags.get(key)
            if tag is None:
                tag = self.tags[key] = self.resolver(ScalarNode, event.value, event.implicit)
        return tag

    def scalar(self, event: Any, tag: str | None = None) -> Any:
        if tag is None:
            tag = self.tag(event)
        if tag == STR_TAG:
            return event.value
        key = (tag, event.value)
        try:
            return self.scalars[key]
        except KeyError:
            pass
        node = ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
        line = event.start_mark.line + 1
        constructor = self.constructor
        try:
            value = constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            raise InvalidYAML(
                f"not valid YAML: {_problem(exc)}", source=f"{self.filename}:{line}"
            ) from None
        except (ValueError, TypeError, OverflowError) as exc:
            raise InvalidYAML(
                f"cannot read value: {exc}", source=f"{self.filename}:{line}"
            ) from None
        finally:
            constructor.constructed_objects.clear()
        if not isinstance(value, (dict, list, set)):  # scalars are immutable: share them
            self.scalars[key] = value
        return value


def _merge(
    merges: list[list[tuple[dict, dict]]], explicit: dict, path: KeyPath, lines: dict
) -> dict:
    """PyYAML's merge: merged keys first, a key written in the mapping itself wins, of
    several ``<<`` the later wins and within one list the first mapping wins."""
    sources = [source for listed in merges for source in reversed(listed)]  # lowest first
    merged: dict[str, Any] = {}
    winner: dict[str, int] = {}
    for index, (value, _) in enumerate(sources):
        for key, item in value.items():
            merged[key] = item
            winner[key] = index
    cut = len(path)
    for index, (_, own) in enumerate(sources):
        for key_path, line in own.items():
            key = key_path[cut]
            if key not in explicit and winner.get(key) == index:
                lines[key_path] = line
    merged.update(explicit)
    return merged


def _equal(a: Any, b: Any) -> bool:
    """Equal values of the same types (YAML's 1 and true and 1.0 are not the same value)."""
    if type(a) is not type(b):
        return False
    if type(a) is dict:
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if type(a) is list:
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _copy(value: Any) -> Any:
    """A fresh copy of dicts and lists (scalars are immutable and shared)."""
    if type(value) is dict:
        return {key: _copy(item) for key, item in value.items()}
    if type(value) is list:
        return [_copy(item) for item in value]
    return value


def _measure(value: Any) -> tuple[int, int]:
    """(nodes, nesting levels) of a value: what a copy of it adds."""
    if type(value) is dict:
        items: Any = value.values()
    elif type(value) is list:
        items = value
    else:
        return 1, 0
    count, height = 1, 0
    for item in items:
        c, h = _measure(item)
        count += c
        height = max(height, h)
    return count, height + 1


def _too_deep(source: str, alias: str | None = None) -> ConfigError:
    through = f" through alias *{alias}" if alias is not None else ""
    return ConfigError(
        f"values nested more than {MAX_DEPTH} levels deep{through}; a config file may "
        f"nest mappings and lists at most {MAX_DEPTH} levels",
        source=source,
    )


def _problem(exc: yaml.YAMLError) -> str:
    """The problem alone, on one line (PyYAML's text adds the marks and a snippet)."""
    problem = getattr(exc, "problem", None) or str(exc)
    return problem.strip().splitlines()[0] if problem.strip() else type(exc).__name__


def _tab_hint(text: str, mark: Any) -> str:
    if mark is None:
        return ""
    lines = text.splitlines()
    if mark.line < len(lines) and lines[mark.line][mark.column : mark.column + 1] == "\t":
        return " (a tab: YAML indents with spaces)"
    return ""
