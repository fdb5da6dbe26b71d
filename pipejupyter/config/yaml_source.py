"""Read YAML while remembering the file and line of every mapping key.

Provenance (``file:line`` for every resolved value) starts here: the loader returns the
data plus a map from key path (a tuple) to the line where that key was written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pipejupyter.errors import ConfigError

KeyPath = tuple[str, ...]


class SourcedYAML:
    """Parsed YAML document with ``lines[path] -> 1-based line``."""

    def __init__(self, data: Any, lines: dict[KeyPath, int], filename: str) -> None:
        self.data = data
        self.lines = lines
        self.filename = filename

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
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{filename}:{mark.line + 1}" if mark is not None else filename
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"not valid YAML: {problem}", source=where) from None
    except (ValueError, TypeError, RecursionError) as exc:  # e.g. odd bytes
        raise ConfigError(f"not valid YAML: {exc}", source=filename) from None
    lines: dict[KeyPath, int] = {}
    if node is None:
        return SourcedYAML(None, lines, filename)
    constructor = yaml.SafeLoader("")
    data = _build(node, (), lines, constructor, filename)
    return SourcedYAML(data, lines, filename)


def _build(node, path: KeyPath, lines, constructor, filename: str) -> Any:
    if isinstance(node, yaml.MappingNode):
        constructor.flatten_mapping(node)  # honours YAML merge keys (<<)
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node, constructor, filename)
            line = key_node.start_mark.line + 1
            if not isinstance(key, (str, int, float, bool)) or isinstance(key, bool):
                raise ConfigError(
                    f"mapping keys must be plain words, got {key!r}",
                    source=f"{filename}:{line}",
                    key=".".join(path) or None,
                )
            key = str(key)
            if key in out:
                raise ConfigError(
                    f"key {key!r} is written twice in the same mapping",
                    source=f"{filename}:{line}",
                    key=".".join((*path, key)),
                )
            lines[(*path, key)] = line
            out[key] = _build(value_node, (*path, key), lines, constructor, filename)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, path, lines, constructor, filename) for item in node.value]
    return _scalar(node, constructor, filename)


def _scalar(node, constructor, filename: str) -> Any:
    try:
        return constructor.construct_object(node, deep=True)
    except yaml.YAMLError as exc:
        line = node.start_mark.line + 1
        raise ConfigError(f"not valid YAML: {exc}", source=f"{filename}:{line}") from None
    except (ValueError, TypeError, OverflowError) as exc:
        line = node.start_mark.line + 1
        raise ConfigError(f"cannot read value: {exc}", source=f"{filename}:{line}") from None
