"""run_stage: run work on a Dask cluster, once or once per item, with bookkeeping per item.

Fan-out with automatic batching (batching.py), retries, host placement from mapfiles,
per-worker limits via Dask resources, progress and output events, and the persisted
context (context.py) so a re-run skips what already succeeded. No IPython here: faces
(``%%pipestage``, widgets) pass a reporter and show what it receives.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from . import inputs
from .errors import PipejupyterError
from .fingerprint import digest
from .inputs import Item, glob, mapfile  # noqa: F401 - re-exported for the stage API
from .results import ItemFailure, StageFailed, StageResult  # noqa: F401 - re-exported
from .work import Command, CommandResult, as_work, command  # noqa: F401 - re-exported

MISSING = object()
_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")


class StageError(PipejupyterError, ValueError):
    """A stage request that cannot start (nothing was submitted)."""


class StageReporter:
    """What a stage tells its face. Every method may be left as is (no-op)."""

    def start(self, stage: str, total: int, skipped: int, batch: str) -> None: ...

    def update(self, counts: Mapping[str, Any]) -> None:
        """counts: done, failed, running, skipped, total, retried, elapsed, eta (seconds or None)."""

    def output(self, key: str, text: str, stream: str) -> None: ...

    def failure(self, key: str, error: str, attempt: int, final: bool) -> None: ...

    def note(self, text: str) -> None: ...

    def finish(self, result: StageResult) -> None: ...


def run_stage(
    name: str,
    work: Any,
    items: Any = None,
    *,
    retries: int = 0,
    resources: Mapping[str, float] | None = None,
    per_worker: int | None = None,
    rerun: bool = False,
    batch: str | int | bool = "auto",
    client: Any = None,
    persist: bool = True,
    workdir: Any = None,
    progress: StageReporter | str | None = "auto",
    target: float | None = None,
    raise_on_failure: bool = True,
) -> StageResult:
    """Run ``work`` on the cluster once (``items=None``) or once per item; results in input order.

    work: a Python callable (``fn(item)``/``fn()``), ``casa(task, ...)``, ``command(argv)``
    or ``mpirun(fn, nprocs=N)``. items: a list, dict (keys kept), glob pattern, or LOFAR
    mapfile (items then run on workers of the host the map names). retries: extra attempts
    for an item that raised. resources: Dask resources each item needs. per_worker: at
    most this many items at once per worker. rerun: recompute items that already succeeded
    with the same fingerprint. batch: "auto" (measure and pack tiny items), an int, or
    False. persist: record everything in ``.pipejupyter/context.sqlite`` of ``workdir``.
    """
    from .batching import DEFAULT_TARGET
    from .driver import StageDriver

    _check_name(name)
    work = as_work(work)
    _check_int("retries", retries, 0)
    if per_worker is not None:
        _check_int("per_worker", per_worker, 1)
    resources = _check_resources(resources)
    item_list = inputs.resolve_items(items)
    _check_unique(item_list)
    driver = StageDriver(
        name=name, work=work, items=item_list, has_item=items is not None, retries=retries,
        resources=resources, per_worker=per_worker, rerun=rerun, batch=batch, client=_client(client),
        persist=persist, workdir=workdir, reporter=_reporter(progress),
        target=target or DEFAULT_TARGET,
    )
    result = driver.run()
    if result.failed and raise_on_failure:
        raise StageFailed(result)
    return result


def item_fingerprint(work_fingerprint: str, value: Any) -> str:
    return digest(work_fingerprint, value)


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise StageError(f"stage name must be 1-100 characters of letters, digits, '_', '-', '.'; got {name!r}")


def _check_int(label: str, value: Any, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise StageError(f"{label} must be an integer >= {minimum}, got {value!r}")


def _check_resources(resources: Any) -> dict[str, float]:
    if resources is None:
        return {}
    if not isinstance(resources, Mapping):
        raise StageError(f"resources must be a mapping like {{'MEM': 4}}, got {type(resources).__name__}")
    out = {}
    for key, value in resources.items():
        if not isinstance(key, str) or not key:
            raise StageError(f"resource names must be non-empty strings, got {key!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise StageError(f"resource {key!r} needs a positive number, got {value!r}")
        out[key] = value
    return out


def parse_resources(text: str | list[str] | None) -> dict[str, float]:
    """``"GPU=1,MEM=4e9"`` (or a list of such) -> {"GPU": 1, "MEM": 4e9}."""
    if not text:
        return {}
    parts = [p for chunk in ([text] if isinstance(text, str) else text) for p in chunk.split(",") if p.strip()]
    out: dict[str, float] = {}
    for part in parts:
        key, sep, value = part.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if not sep or not key.strip() or number <= 0:
            raise StageError(f"cannot read resource {part.strip()!r}: expected NAME=NUMBER, e.g. MEM=4e9")
        out[key.strip()] = int(number) if number.is_integer() else number
    return out


def _check_unique(items: list[Item]) -> None:
    seen: set[str] = set()
    for item in items:
        if item.key in seen:
            raise StageError(f"two items have the key {item.key!r}; keys identify items across runs and must be unique")
        seen.add(item.key)


def _client(client: Any) -> Any:
    if client is not None:
        return getattr(client, "client", client)  # a ClusterHandle works too
    from .errors import UnknownCluster
    from .manager import get

    try:
        handle = get()
        if handle.client is not None:
            return handle.client
    except UnknownCluster:
        pass
    try:
        from distributed import default_client

        return default_client()
    except ValueError:
        raise StageError(
            "no cluster to run the stage on: start one with %pipecluster start or pipejupyter.start(), "
            "or pass client="
        ) from None


def _reporter(progress: StageReporter | str | None) -> StageReporter:
    if isinstance(progress, StageReporter):
        return progress
    if progress in (None, False, "none", "off"):
        return StageReporter()
    if progress in ("auto", "text", "widget"):
        from .stage_widgets import make_reporter

        return make_reporter(progress)
    raise StageError(f"progress must be 'auto', 'text', 'widget', None or a StageReporter; got {progress!r}")
