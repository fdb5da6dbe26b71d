"""Plain data shared by the core and every face: ClusterSpec and the JSON cluster model.

The cluster model is the wire format (docs/wire-format.md): the widget, the REST API,
the sidebar panel and the CLI all show exactly these dictionaries.
"""

from __future__ import annotations

import copy
import re
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any


class ClusterStatus(str, Enum):
    """What a cluster model's ``status`` says (docs/wire-format.md).

    LOST: the scheduler is gone (its port is closed, or this process's connection to it
    died). UNREACHABLE: a cluster another process owns whose scheduler did not answer
    this process in time (stopped, overloaded, another host out of reach); it may be fine.
    """

    STARTING = "starting"
    RUNNING = "running"
    LOST = "lost"
    UNREACHABLE = "unreachable"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


@dataclass
class ClusterSpec:
    """Everything needed to start one cluster, resolved from configuration."""

    profile: str
    backend: str
    cluster_class: str | None = None
    cluster_kwargs: dict[str, Any] = field(default_factory=dict)
    adapt_kwargs: dict[str, Any] | None = None
    workers: int | None = None
    #: most workers the cluster may ask for (workers, adapt, scale); None: no limit
    max_workers: int | None = None
    env: dict[str, Any] = field(
        default_factory=dict
    )  # {"pass": [...], "set": {...}, "redact": [...]}
    mpi: dict[str, Any] = field(default_factory=lambda: {"sanitize": "auto"})
    scheduler: dict[str, Any] = field(default_factory=dict)
    dask_config: dict[str, Any] = field(default_factory=dict)
    casaconfig: dict[str, Any] = field(default_factory=dict)
    security: Any = None
    wait_timeout: float | None = None
    description: str = ""
    options: dict[str, Any] = field(default_factory=dict)  # backend-specific profile keys
    origin: dict[str, str] = field(
        default_factory=dict
    )  # dotted key -> "file:line" | default | --set
    notes: list[str] = field(default_factory=list)  # translations made while resolving
    #: what the user should know before starting: repeated keys, facts of this machine
    #: that make a start fail here (a missing network interface), settings not used
    warnings: list[str] = field(default_factory=list)

    def to_json(self, *, origin: bool = False) -> dict[str, Any]:
        data = asdict(self)
        if not origin:
            data.pop("origin")
        return copy.deepcopy(data)

    def origin_of(self, key: str) -> str | None:
        """Where ``key`` (dotted, e.g. ``cluster_kwargs.memory``) was set, or its nearest parent."""
        parts = key.split(".")
        for cut in range(len(parts), 0, -1):
            found = self.origin.get(".".join(parts[:cut]))
            if found:
                return found
        return None


def worker_row(
    *,
    name: str,
    address: str | None = None,
    host: str | None = None,
    threads: int = 0,
    memory_used: int = 0,
    memory_limit: int = 0,
    processing: int = 0,
    status: str = "running",
    job_id: str | None = None,
    job_state: str | None = None,
) -> dict[str, Any]:
    return {
        "name": str(name),
        "address": address,
        "host": host,
        "threads": int(threads or 0),
        "memory_used": int(memory_used or 0),
        "memory_limit": int(memory_limit or 0),
        "processing": int(processing or 0),
        "status": status,
        "job_id": job_id,
        "job_state": job_state,
    }


#: ids that go into a ``%pipecluster connect`` line as they are. IPython expands ``$var``
#: and ``{expr}`` in a magic line even inside quotes, so quoting cannot make any id safe:
#: only ids without quotes, spaces, ``$``, braces, backslashes or a leading ``-`` get a line.
#: Ours are 12 hex digits; gateway cluster names are ``[a-z0-9.]``.
CONNECT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@-]{0,199}")


def connect_code(cluster_id: Any) -> str | None:
    """The line that connects a kernel to cluster ``cluster_id`` (the sidebar's "Insert
    connect code"), or None when the id cannot be written into code safely."""
    if isinstance(cluster_id, str) and CONNECT_ID.fullmatch(cluster_id):
        return f"%pipecluster connect {cluster_id}"
    return None


def cluster_model(
    *,
    id: str,
    name: str,
    backend: str,
    profile: str | None,
    status: ClusterStatus | str,
    scheduler_address: str | None,
    dashboard_link: str | None,
    worker_info: list[dict[str, Any]],
    adapt: dict[str, int] | None,
    owner: dict[str, Any],
    started: float,
    error: str | None = None,
) -> dict[str, Any]:
    """The JSON model; totals are computed from ``worker_info`` so they always agree."""
    connected = [w for w in worker_info if w["status"] not in ("pending", "starting")]
    return {
        "id": id,
        "name": name,
        "backend": backend,
        "profile": profile,
        "status": str(status),
        "scheduler_address": scheduler_address,
        "dashboard_link": dashboard_link,
        "workers": len(connected),
        "pending": len(worker_info) - len(connected),
        "cores": sum(w["threads"] for w in connected),
        "memory": sum(w["memory_limit"] for w in connected),
        "memory_used": sum(w["memory_used"] for w in connected),
        "tasks": sum(w["processing"] for w in connected),
        "adapt": adapt,
        "owner": owner,
        "started": started,
        "error": error,
        "connect_code": connect_code(id),
        "worker_info": worker_info,
    }


@dataclass
class OptionField:
    """One value a user may choose when starting a profile (the options form).

    ``key`` is the override key relative to the profile, exactly as ``--set`` takes it
    (``cluster_kwargs.cores``); a chosen value is an override validated like a config file.
    ``kind``: int | number | str | bool | select | memory | duration | list. ``origin`` is
    where the current value came from (``file:line``, default, override).
    """

    key: str
    label: str
    kind: str
    value: Any = None
    origin: str | None = None
    help: str = ""
    unit: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    choices: list[Any] | None = None
    #: short text per choice (a partition's limits), same order as ``choices``
    choice_help: list[str] | None = None
    group: str = "size"
    nullable: bool = False

    def to_json(self) -> dict[str, Any]:
        return copy.deepcopy(asdict(self))
