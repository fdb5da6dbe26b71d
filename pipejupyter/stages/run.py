"""run_stage: run work on a Dask cluster, once or once per item, with bookkeeping per item.

Fan-out with automatic batching (batch_planning.py), retries, host placement from mapfiles,
per-worker limits via Dask resources, progress and output events, and the persisted
context (context.py) so a re-run skips what already succeeded. No IPython here: faces
(``%%pipestage``, widgets) pass a reporter and show what it receives.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pipejupyter.errors import StageError, UnknownCluster
from pipejupyter.lifecycle.manager import get
from pipejupyter.stages import inputs
from pipejupyter.stages.batch_planning import DEFAULT_TARGET
from pipejupyter.stages.inputs import Item
from pipejupyter.stages.reporting import StageReporter, reporter_for
from pipejupyter.stages.results import StageFailed, StageResult
from pipejupyter.work.kinds import as_work

_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")


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
    # The runner imports distributed: loaded when a stage runs, not with this module.
    from pipejupyter.stages.runner import StageRunner

    _check_name(name)
    work = as_work(work)
    _check_int("retries", retries, 0)
    if per_worker is not None:
        _check_int("per_worker", per_worker, 1)
    resources = _check_resources(resources)
    item_list = inputs.resolve_items(items)
    _check_unique(item_list)
    runner = StageRunner(
        name=name,
        work=work,
        items=item_list,
        has_item=items is not None,
        retries=retries,
        resources=resources,
        per_worker=per_worker,
        rerun=rerun,
        batch=batch,
        client=_client(client),
        persist=persist,
        workdir=workdir,
        reporter=reporter_for(progress),
        target=target or DEFAULT_TARGET,
    )
    result = runner.run()
    if result.failed and raise_on_failure:
        raise StageFailed(result)
    return result


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise StageError(
            f"stage name must be 1-100 characters of letters, digits, '_', '-', '.'; got {name!r}"
        )


def _check_int(label: str, value: Any, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise StageError(f"{label} must be an integer >= {minimum}, got {value!r}")


def _check_resources(resources: Any) -> dict[str, float]:
    if resources is None:
        return {}
    if not isinstance(resources, Mapping):
        raise StageError(
            f"resources must be a mapping like {{'MEM': 4}}, got {type(resources).__name__}"
        )
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
    parts = [
        p
        for chunk in ([text] if isinstance(text, str) else text)
        for p in chunk.split(",")
        if p.strip()
    ]
    out: dict[str, float] = {}
    for part in parts:
        key, sep, value = part.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if not sep or not key.strip() or number <= 0:
            raise StageError(
                f"cannot read resource {part.strip()!r}: expected NAME=NUMBER, e.g. MEM=4e9"
            )
        out[key.strip()] = int(number) if number.is_integer() else number
    return out


def _check_unique(items: list[Item]) -> None:
    seen: set[str] = set()
    for item in items:
        if item.key in seen:
            raise StageError(
                f"two items have the key {item.key!r}; "
                "keys identify items across runs and must be unique"
            )
        seen.add(item.key)


def _client(client: Any) -> Any:
    if client is not None:
        return getattr(client, "client", client)  # a ClusterHandle works too
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
            "no cluster to run the stage on: "
            "start one with %pipecluster start or pipejupyter.start(), "
            "or pass client="
        ) from None
