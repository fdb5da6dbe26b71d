"""Redaction: showing settings, environments and text without leaking secrets.

A value is secret when its name says so (TOKEN, PASSWORD, KEY...) or matches a
profile's ``env.redact`` patterns: such values are shown as ``********`` whole. Inside any
other value or text, the password of a URL (``scheme://user:PASSWORD@host``, any scheme) is
replaced, so ``DB_URL=postgres://u:pw@h/db`` shows as ``postgres://u:********@h/db``. Every
face shows values through these functions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote

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
MIN_SECRET_LENGTH = 4  # shorter values would be replaced everywhere they occur by chance

# scheme://user:PASSWORD@host. The password is what a URL parser reads (up to the last "@"
# before the host's "/", "?" or "#"), or, for a raw "/" in it, up to the first "@" (as
# SQLAlchemy reads it) unless it looks like a port and a path (host:8080/a@b). Both scans
# stop at whitespace and at the next "://", so the work stays linear in the text's length.
_URL_PASSWORD = re.compile(
    r"(?<![A-Za-z0-9+.\-])(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/?#@]*:)"
    r"(?:(?P<password>[^\s/?#]+)@|(?!\d+[/?#])(?P<loose>[^\s@:]*(?::(?!//)[^\s@:]*)*)@)"
)


def is_secret(name: str, extra: Iterable[str] = ()) -> bool:
    upper = name.upper()
    return any(word in upper for word in SECRET_WORDS) or matches_any(name, extra)


def _hidden(value: Any) -> bool:
    """Whether a secret-named value has something to hide (empty ones are shown as they are)."""
    return value not in (None, "", [], {})


def _redacted_url(match: re.Match) -> str:
    if not (match["password"] or match["loose"]):  # scheme://user:@host: nothing to hide
        return match.group(0)
    return f"{match['head']}{REDACTED}@"


def redact_urls(value: Any) -> Any:
    """``value`` (text, or nested mappings and lists) with every URL password replaced."""
    if isinstance(value, str):
        if "://" not in value:
            return value
        return _URL_PASSWORD.sub(_redacted_url, value)
    if isinstance(value, Mapping):
        return {k: redact_urls(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_urls(v) for v in value]
    return value


def url_passwords(value: Any) -> list[str]:
    """The URL passwords inside ``value`` (text, or nested mappings and lists), as written
    and percent-decoded, to be replaced wherever they occur: at least MIN_SECRET_LENGTH
    characters (a shorter one is still hidden inside its URL by redact_urls)."""
    found: list[str] = []
    if isinstance(value, str):
        if "://" in value:
            for match in _URL_PASSWORD.finditer(value):
                password = match["password"] or match["loose"]
                if not password or password == REDACTED:
                    continue
                found += {password, unquote(password)}
    elif isinstance(value, Mapping):
        for item in value.values():
            found += url_passwords(item)
    elif isinstance(value, list | tuple):
        for item in value:
            found += url_passwords(item)
    return [p for p in found if len(p) >= MIN_SECRET_LENGTH]


def redact_mapping(values: Mapping[str, Any], extra: Iterable[str] = ()) -> dict[str, Any]:
    """A copy of ``NAME: value`` pairs: secret-named values whole, URL passwords in the
    others."""
    extra = tuple(extra)
    return {
        k: (REDACTED if is_secret(str(k), extra) and _hidden(v) else redact_urls(v))
        for k, v in values.items()
    }


def redact_tree(value: Any, extra: Iterable[str] = ()) -> Any:
    """A copy of nested settings with secret-named values redacted at any depth, and URL
    passwords in every other text.

    ``*_env`` keys (e.g. ``password_env``) name a variable, not a secret, and stay shown.
    """
    extra = tuple(extra)
    if isinstance(value, Mapping):
        return {
            k: REDACTED
            if is_secret(str(k), extra)
            and not str(k).lower().endswith("_env")
            and _hidden(v)
            and not isinstance(v, Mapping)
            else redact_tree(v, extra)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_tree(v, extra) for v in value]
    return redact_urls(value)


def secret_values(values: Mapping[str, Any], extra: Iterable[str] = ()) -> list[str]:
    """The values that must never be shown: those of secret-named variables and every URL
    password inside the others (at least MIN_SECRET_LENGTH characters, to avoid noise)."""
    extra = tuple(extra)
    found = []
    for k, v in values.items():
        if is_secret(str(k), extra) and v:
            found.append(str(v))
        found += url_passwords(v)
    return [s for s in found if len(s) >= MIN_SECRET_LENGTH]


def redact_text(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of a secret value inside ``text``, then every URL password."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        if secret:
            text = text.replace(secret, REDACTED)
    return redact_urls(text)


_ASSIGNMENT = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>\S+)")


def redact_assignments(text: str, extra: Iterable[str] = ()) -> str:
    """Redact ``NAME=value`` pairs in free text (job scripts, command lines) by name, and
    URL passwords anywhere in it."""
    extra = tuple(extra)

    def repl(m: re.Match) -> str:
        return f"{m['name']}={REDACTED}" if is_secret(m["name"], extra) else m.group(0)

    return redact_urls(_ASSIGNMENT.sub(repl, text))
