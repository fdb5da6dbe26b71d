"""What a stage returns: results in input order, plus what failed and how it went."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from pipejupyter.errors import PipejupyterError

#: the value of an item that has no result (yet)
MISSING = object()

_EXCEPTION_LINE = re.compile(
    r"^[A-Za-z_][\w.]*(Error|Exception|Failed|Interrupt|Exit|Warning|Worker)\b.*?:"
)


class ItemFailure:
    """Stands in the result list for an item that failed (and is falsy)."""

    def __init__(
        self, key: str, error: str, exception: BaseException | None = None, attempts: int = 1
    ) -> None:
        self.key = key
        self.error = error  # the remote traceback
        self.exception = exception
        self.attempts = attempts

    @property
    def message(self) -> str:
        """The last ``SomeError: text`` line of the traceback (CASA errors span lines)."""
        lines = [line for line in self.error.strip().splitlines() if line.strip()]
        for line in reversed(lines):
            if _EXCEPTION_LINE.match(line):
                return line
        return lines[-1] if lines else "failed"

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"<ItemFailure {self.key!r}: {self.message}>"


class StageResult(list):
    """The results of a stage in input order (a list), with ``keys``, ``failed``
    (key -> ItemFailure), ``stats`` and ``value`` (the one result of a stage without items)."""

    def __init__(
        self,
        values: Iterable[Any],
        keys: Iterable[str],
        *,
        stage: str,
        failed: Mapping[str, ItemFailure] | None = None,
        stats: Mapping[str, Any] | None = None,
        run_id: int | None = None,
    ) -> None:
        super().__init__(values)
        self.keys = list(keys)
        self.stage = stage
        self.failed = dict(failed or {})
        self.stats = dict(stats or {})
        self.run_id = run_id

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def value(self) -> Any:
        if len(self) != 1:
            raise ValueError(
                f"stage {self.stage!r} has {len(self)} results; "
                ".value is for a stage that runs once"
            )
        return self[0]

    def by_key(self) -> dict[str, Any]:
        return dict(zip(self.keys, self, strict=True))

    def summary(self) -> str:
        s = self.stats
        parts = [f"{s.get('done', 0)} done"]
        for label in ("skipped", "failed", "retried"):
            if s.get(label):
                parts.append(f"{s[label]} {label}")
        if "elapsed" in s:
            parts.append(f"{s['elapsed']:.2f} s")
        return f"stage {self.stage!r}: " + ", ".join(parts)


class StageFailed(PipejupyterError, RuntimeError):
    """Some items failed after their retries; ``result`` holds everything else."""

    def __init__(self, result: StageResult) -> None:
        self.result = result
        shown = list(result.failed.values())[:5]
        more = len(result.failed) - len(shown)
        lines = [f"  {f.key}: {f.message}" for f in shown]
        if more > 0:
            lines.append(f"  ... and {more} more")
        super().__init__(
            f"stage {result.stage!r}: {len(result.failed)} of {len(result)} items failed "
            "(their tracebacks are shown above; results of the others are in .result):\n"
            + "\n".join(lines)
        )

    def _render_traceback_(self) -> list[str]:
        # IPython shows this instead of a traceback of the notebook-side machinery.
        return [f"StageFailed: {self}"]
