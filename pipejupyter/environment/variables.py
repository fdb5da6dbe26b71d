"""Matching environment variable names against shell-style patterns (``OMPI_*``)."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable


def matches_any(name: str, patterns: Iterable[str]) -> bool:
    """True when ``name`` matches one of the shell-style ``patterns``."""
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)
