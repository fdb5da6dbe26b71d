"""Errors that are safe to show to a user as they are (no traceback needed)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class PipejupyterError(Exception):
    """Base class: the message is complete and meant for the user."""


class ConfigError(PipejupyterError, ValueError):
    """A configuration problem, located as precisely as we can.

    ``source`` is ``file:line`` (or ``--set``/``default``), ``key`` the dotted key path,
    ``accepted`` what would have been accepted, ``suggestion`` a did-you-mean.
    """

    def __init__(
        self,
        problem: str,
        *,
        source: str | None = None,
        key: str | None = None,
        accepted: Iterable[str] | str | None = None,
        suggestion: str | None = None,
    ) -> None:
        self.problem = problem
        self.source = source
        self.key = key
        if accepted is not None and not isinstance(accepted, str):
            accepted = ", ".join(sorted(str(a) for a in accepted))
        self.accepted = accepted
        self.suggestion = suggestion
        super().__init__(self._render())

    def _render(self) -> str:
        where = f"{self.source}: " if self.source else ""
        key = f"{self.key}: " if self.key else ""
        text = f"{where}{key}{self.problem}"
        if self.suggestion:
            text += f" (did you mean {self.suggestion!r}?)"
        if self.accepted:
            text += f"; accepted: {self.accepted}"
        return text

    def to_json(self) -> dict:
        return {"message": str(self), "key": self.key, "source": self.source}


class MissingDependency(PipejupyterError, ImportError):
    """An optional dependency is not installed; names the pip extra that brings it."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        self.package = package
        self.extra = extra
        super().__init__(
            f"{purpose} needs the Python package {package!r}, which is not installed; "
            f"install it with: pip install 'pipejupyter[{extra}]'"
        )


class ClusterError(PipejupyterError, RuntimeError):
    """Starting, connecting to or driving a cluster failed."""


class UnknownCluster(PipejupyterError, KeyError):
    """No cluster with that id or name."""

    def __str__(self) -> str:  # KeyError would add quotes
        return str(self.args[0])


class NotOwned(ClusterError):
    """The cluster belongs to another process and cannot be changed from here."""


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return matches[0] if matches else None


class StageError(PipejupyterError, ValueError):
    """A stage request that cannot start (nothing was submitted)."""


class LimitError(ConfigError):
    """A count above its configured limit (``max_workers``); the message names the limit,
    the value and where to raise it. The REST API answers 400 (other ConfigErrors: 422)."""


class ConfigWarning(UserWarning):
    """Something in the configuration the user should know that is not an error: a key
    written twice (read as PyYAML reads it), a setting another tool uses and we do not."""
