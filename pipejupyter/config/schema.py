"""A small schema language for the configuration tree, with user-facing errors.

We validate by hand instead of with jsonschema so every error can carry the file and line
of the offending key, the accepted values and a did-you-mean.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipejupyter.errors import ConfigError, did_you_mean

Where = Callable[[tuple[str, ...]], str]


@dataclass(frozen=True)
class Field:
    """One configuration value.

    kind: "str", "int", "bool", "number", "str-list", "str-map" (str -> scalar),
    "map" (free-form mapping), "any", "enum", "record" (fixed keys in ``children``),
    "named-records" (free keys, each value a record of ``children``).
    """

    kind: str
    doc: str = ""
    children: Mapping[str, Field] = field(default_factory=dict)
    values: tuple[Any, ...] = ()
    nullable: bool = False
    minimum: float | None = None
    # For records whose extra keys depend on another value (profiles and their backend).
    extra_keys: Callable[[dict], Mapping[str, Field]] | None = None

    def describe(self) -> str:
        if self.kind == "enum":
            text = " | ".join(str(v) for v in self.values)
        else:
            text = {
                "str": "a string",
                "int": "an integer" + (f" >= {self.minimum:g}" if self.minimum is not None else ""),
                "number": "a number"
                + (f" >= {self.minimum:g}" if self.minimum is not None else ""),
                "bool": "true or false",
                "str-list": "a list of strings",
                "str-map": "a mapping of names to strings",
                "map": "a mapping",
                "record": "a mapping",
                "named-records": "a mapping of names to mappings",
                "any": "any value",
            }[self.kind]
        return text + (" or null" if self.nullable else "")


def _type_error(path, where: Where, spec: Field, value: Any) -> ConfigError:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return ConfigError(
        f"expected {spec.describe()}, got {type(value).__name__} {shown}",
        source=where(path),
        key=".".join(path),
    )


def validate(value: Any, spec: Field, path: tuple[str, ...], where: Where) -> None:
    """Raise ConfigError for the first value that does not fit ``spec``."""
    if value is None:
        if spec.nullable or spec.kind in ("any",):
            return
        raise _type_error(path, where, spec, value)
    kind = spec.kind
    if kind == "any":
        return
    if kind == "str":
        if not isinstance(value, str):
            raise _type_error(path, where, spec, value)
    elif kind == "bool":
        if not isinstance(value, bool):
            raise _type_error(path, where, spec, value)
    elif kind in ("int", "number"):
        ok = isinstance(value, int) if kind == "int" else isinstance(value, (int, float))
        if not ok or isinstance(value, bool):
            raise _type_error(path, where, spec, value)
        if spec.minimum is not None and value < spec.minimum:
            raise _type_error(path, where, spec, value)
    elif kind == "enum":
        if value not in spec.values:
            hint = (
                did_you_mean(value, [str(v) for v in spec.values])
                if isinstance(value, str)
                else None
            )
            raise ConfigError(
                f"{value!r} is not allowed",
                source=where(path),
                key=".".join(path),
                accepted=" | ".join(str(v) for v in spec.values),
                suggestion=hint,
            )
    elif kind == "str-list":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _type_error(path, where, spec, value)
    elif kind == "str-map":
        if not isinstance(value, dict):
            raise _type_error(path, where, spec, value)
        for k, v in value.items():
            if isinstance(v, (dict, list)):
                raise _type_error((*path, k), where, Field("str"), v)
    elif kind == "map":
        if not isinstance(value, dict):
            raise _type_error(path, where, spec, value)
    elif kind == "record":
        _validate_record(value, spec, path, where)
    elif kind == "named-records":
        if not isinstance(value, dict):
            raise _type_error(path, where, spec, value)
        record = Field("record", children=spec.children, extra_keys=spec.extra_keys)
        for name, item in value.items():
            _validate_record(item, record, (*path, name), where)
    else:  # pragma: no cover - a schema bug, not a user error
        raise AssertionError(f"unknown schema kind {kind}")


def _validate_record(value: Any, spec: Field, path, where: Where) -> None:
    if not isinstance(value, dict):
        raise _type_error(path, where, spec, value)
    extra = spec.extra_keys(value) if spec.extra_keys is not None else None
    for key, item in value.items():
        child = extra.get(key) if extra else None  # a backend's own key wins
        if child is None:
            child = spec.children.get(key)
        if child is None:
            children = {**spec.children, **(extra or {})}
            raise ConfigError(
                f"unknown key {key!r}",
                source=where((*path, key)),
                key=".".join((*path, key)),
                accepted=children.keys(),
                suggestion=did_you_mean(key, children.keys()),
            )
        validate(item, child, (*path, key), where)
