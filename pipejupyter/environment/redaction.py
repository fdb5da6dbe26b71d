"""Redaction: showing settings, environments and text without leaking secrets.

A value is secret when its name says so (TOKEN, PASSWORD, KEY...) or matches a
profile's ``env.redact`` patterns; every face shows values through these functions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from pipejupyter.environment.variables import matches_any

SECRET_WORDS: tuple[str, ...] = (
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "KEY",
    "CREDENTIAL",
    "PRIVATE",
)
REDACTED = "********"


def is_secret(name: str, extra: Iterable[str] = ()) -> bool:
    upper = name.upper()
    return any(word in upper for word in SECRET_WORDS) or matches_any(name, extra)


def redact_mapping(values: Mapping[str, Any], extra: Iterable[str] = ()) -> dict[str, Any]:
    extra = tuple(extra)
    return {
        k: (REDACTED if is_secret(str(k), extra) and v not in (None, "") else v)
        for k, v in values.items()
    }


def redact_tree(value: Any, extra: Iterable[str] = ()) -> Any:
    """A copy of nested settings with secret-named values redacted at any depth.

    ``*_env`` keys (e.g. ``password_env``) name a variable, not a secret, and stay shown.
    """
    extra = tuple(extra)
    if isinstance(value, Mapping):
        return {
            k: REDACTED
            if is_secret(str(k), extra)
            and not str(k).lower().endswith("_env")
            and v not in (None, "")
            and not isinstance(v, Mapping)
            else redact_tree(v, extra)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact_tree(v, extra) for v in value]
    return value


def secret_values(values: Mapping[str, Any], extra: Iterable[str] = ()) -> list[str]:
    """The values that must never be shown (at least 4 characters, to avoid noise)."""
    extra = tuple(extra)
    return [
        str(v) for k, v in values.items() if is_secret(str(k), extra) and v and len(str(v)) >= 4
    ]


def redact_text(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of a secret value inside ``text``."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


_ASSIGNMENT = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>\S+)")


def redact_assignments(text: str, extra: Iterable[str] = ()) -> str:
    """Redact ``NAME=value`` pairs in free text (job scripts, command lines) by name."""
    extra = tuple(extra)

    def repl(m: re.Match) -> str:
        return f"{m['name']}={REDACTED}" if is_secret(m["name"], extra) else m.group(0)

    return _ASSIGNMENT.sub(repl, text)
