"""ClusterHandle: one cluster started or connected by this process, and its JSON model.

The manager creates handles and keeps the registry; a handle drives its backend and
turns the scheduler's identity into the wire model (docs/wire-format.md).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlparse

from pipejupyter.backends.base import Backend, shown_count
from pipejupyter.environment.redaction import redact_text, secret_values, url_passwords
from pipejupyter.errors import ClusterError, NotOwned, UnknownCluster
from pipejupyter.lifecycle import discovery
from pipejupyter.models import ClusterSpec, ClusterStatus, cluster_model, worker_row

logger = logging.getLogger(__name__)


def owner_identity(kind: str) -> dict[str, Any]:
    """Who owns a cluster, as discovery records carry it: this process and its kind."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "kind": kind}


def _processing(metrics: Mapping[str, Any]) -> int:
    counts = metrics.get("task_counts") or {}
    return int(sum(counts.get(k, 0) for k in ("executing", "ready", "constrained")))


class ClusterHandle:
    """One cluster started or connected by this process."""

    def __init__(
        self,
        spec: ClusterSpec,
        backend: Backend,
        name: str,
        *,
        owned: bool = True,
        label: str | None = None,
        owner: dict[str, Any] | None = None,
        on_teardown: Callable[[str], None] | None = None,
    ) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.spec = spec
        self.backend = backend
        self.name = name
        self.owned = owned
        self.backend_label = label or spec.backend
        self.status = ClusterStatus.STARTING
        self.error: str | None = None
        self.client = None
        self.started = time.time()
        self.adapt_range: dict[str, int] | None = None
        self.owner = owner or owner_identity("script")
        self._on_teardown = on_teardown
        self._dashboard: str | None = None
        self._secrets = (
            secret_values(backend.env.variables, backend.env.redact) if backend.env else []
        )
        self._secrets += backend.secret_values()
        self._secrets += url_passwords(spec.to_json())  # cluster_kwargs, options...

    # -- reading ------------------------------------------------------------------
    def __repr__(self) -> str:
        return (
            f"<ClusterHandle {self.name!r} id={self.id} "
            f"backend={self.backend_label} status={self.status}>"
        )

    @property
    def scheduler_address(self) -> str | None:
        return self.backend.scheduler_address

    @property
    def dashboard_link(self) -> str | None:
        return self._dashboard or self.backend.dashboard_link

    def _identity(self, timeout: float) -> dict[str, Any]:
        return self.client.sync(self.client.scheduler.identity, callback_timeout=timeout)

    def model(self, timeout: float = 2.0) -> dict[str, Any]:
        """The JSON model (docs/wire-format.md). A scheduler that does not answer is 'lost'."""
        rows: list[dict[str, Any]] = []
        if self.client is not None and self.status in (
            ClusterStatus.RUNNING,
            ClusterStatus.LOST,
            ClusterStatus.STARTING,
        ):
            try:
                identity = self._identity(timeout)
            except Exception as exc:  # any failure to reach the scheduler means lost, not a crash
                # Only a running cluster becomes lost (a concurrent stop() must stay stopped).
                if self.status in (ClusterStatus.RUNNING, ClusterStatus.LOST):
                    self.status = ClusterStatus.LOST
                    self.error = self.safe(f"scheduler not reachable: {type(exc).__name__}: {exc}")
            else:
                if self.status is ClusterStatus.LOST:
                    self.status, self.error = ClusterStatus.RUNNING, None
                rows = [
                    worker_row(
                        name=str(info.get("name", address)),
                        address=address,
                        host=info.get("host"),
                        threads=info.get("nthreads", 0),
                        memory_used=(info.get("metrics") or {}).get("memory", 0),
                        memory_limit=info.get("memory_limit", 0),
                        processing=_processing(info.get("metrics") or {}),
                        status=str(info.get("status", "running")).replace("Status.", ""),
                    )
                    for address, info in (identity.get("workers") or {}).items()
                ]
                rows.sort(key=_natural)
                if self._dashboard is None and self.backend.dashboard_link is None:
                    self._dashboard = _dashboard_from_identity(identity, self.scheduler_address)
        if self.status in (ClusterStatus.RUNNING, ClusterStatus.STARTING) and self.owned:
            try:
                rows += self.backend.pending_workers({r["name"]: r for r in rows})
            except Exception as exc:  # pending rows are a nicety; never fail the model
                logger.debug("pending_workers failed: %s", exc)
        return cluster_model(
            id=self.id,
            name=self.name,
            backend=self.backend_label,
            profile=self.spec.profile,
            status=self.status,
            scheduler_address=self.scheduler_address,
            dashboard_link=self.dashboard_link,
            worker_info=rows,
            adapt=self.adapt_range,
            owner=self.owner,
            started=self.started,
            error=self.error,
        )

    def record(self) -> dict[str, Any]:
        """What the discovery file holds: the model without live worker rows."""
        return {
            "id": self.id,
            "name": self.name,
            "backend": self.backend_label,
            "profile": self.spec.profile,
            "status": str(self.status),
            "scheduler_address": self.scheduler_address,
            "dashboard_link": self.dashboard_link,
            "adapt": self.adapt_range,
            "workers_requested": self.spec.workers,
            "owner": self.owner,
            "started": self.started,
            "backend_info": self.backend.discovery_info(),
        }

    def safe(self, text: str) -> str:
        """``text`` with every credential of this cluster replaced."""
        return redact_text(text, self._secrets)

    # -- driving ------------------------------------------------------------------
    def _require_owned(self, action: str) -> None:
        if not self.owned:
            raise NotOwned(
                f"cannot {action} {self.name!r}: it was connected, not started, by this process"
            )
        if self.status in (ClusterStatus.STOPPED, ClusterStatus.STOPPING, ClusterStatus.FAILED):
            raise ClusterError(f"cannot {action} {self.name!r}: it is {self.status}")

    def scale(self, n: int) -> None:
        """Ask for ``n`` workers; LimitError (nothing asked) above the spec's max_workers."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ClusterError(f"scale needs an integer >= 0, got {_shown(n)}")
        self._require_owned("scale")
        self.backend.check_worker_limit(self.spec, n, key="workers", live=True)
        self.backend.scale(n)
        self.adapt_range = None
        self.spec.workers = n
        self.publish()

    def adapt(self, minimum: int, maximum: int, **kwargs: Any) -> None:
        """Adaptive between ``minimum`` and ``maximum`` workers; LimitError (nothing
        changed) when ``maximum`` is above the spec's max_workers."""
        for label, value in (("minimum", minimum), ("maximum", maximum)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ClusterError(f"adapt {label} must be an integer >= 0, got {_shown(value)}")
        if minimum > maximum:
            raise ClusterError(
                f"adapt minimum {shown_count(minimum)} is above maximum {shown_count(maximum)}"
            )
        self._require_owned("adapt")
        self.backend.check_worker_limit(self.spec, maximum, key="adapt.maximum", live=True)
        self.backend.adapt(minimum, maximum, **kwargs)
        self.adapt_range = {"minimum": minimum, "maximum": maximum}
        self.publish()

    def wait_for_workers(self, n: int, timeout: float | None = None) -> None:
        if n <= 0:
            return
        try:
            self.client.wait_for_workers(n, timeout=timeout)
        except TimeoutError:
            model = self.model()
            pending = [w for w in model["worker_info"] if w["status"] == "pending"]
            detail = ""
            if pending:
                states = ", ".join(
                    f"{w['name']}: {w.get('job_state') or 'pending'}" for w in pending[:5]
                )
                detail = f"; still waiting for {states}"
            raise ClusterError(
                f"only {model['workers']} of {n} workers connected within {timeout:g} s{detail}"
            ) from None

    def logs(
        self, worker: str | None = None, *, scheduler: bool = False, lines: int | None = 50
    ) -> dict[str, list[str]]:
        """Recent log lines by source (``scheduler``, worker name, job output files)."""
        if self.client is None:
            raise ClusterError(f"{self.name!r} has no client (status {self.status})")
        n = lines or 10_000
        out: dict[str, list[str]] = {}
        if scheduler:
            out["scheduler"] = [f"{lvl} {msg}" for lvl, msg in self.client.get_scheduler_logs(n=n)]
        if not scheduler or worker:
            model = self.model()
            addresses = {w["address"]: w["name"] for w in model["worker_info"] if w["address"]}
            wanted = [a for a, nm in addresses.items() if worker in (None, a, nm)]
            if worker and not wanted and not any(w["name"] == worker for w in model["worker_info"]):
                raise UnknownCluster(
                    f"no worker {worker!r}; workers: {', '.join(addresses.values()) or 'none'}"
                )
            if wanted:
                got = self.client.get_worker_logs(n=n, workers=wanted)
                for address, entries in got.items():
                    out[f"worker {addresses.get(address, address)}"] = [
                        f"{lvl} {msg}" for lvl, msg in entries
                    ]
            if self.owned:
                for source, text in self.backend.logs(self.client, lines).items():
                    if worker in (None, source) or (worker and worker in source):
                        out[source] = text
        return {k: [self.safe(line) for line in v] for k, v in out.items()}

    def stop(self, timeout: float = 20) -> None:
        """Stop the cluster (or, when only connected, disconnect). Idempotent."""
        if self.status in (ClusterStatus.STOPPED,):
            return
        self.status = ClusterStatus.STOPPING
        errors = self.teardown(timeout)
        self.status = ClusterStatus.STOPPED
        if errors:
            self.error = self.safe("; ".join(errors))
            logger.warning("while stopping %s: %s", self.name, self.error)

    def teardown(self, timeout: float) -> list[str]:
        """Close the Client and stop (owned) or release (connected) the cluster; the errors met."""
        errors = []
        if self.client is not None:
            try:
                self.client.close(timeout=min(timeout, 10))
            except Exception as exc:
                errors.append(f"client: {exc}")
        if self.owned:
            try:
                self.backend.close(timeout=timeout)
            except Exception as exc:
                errors.append(f"cluster: {exc}")
            discovery.remove(self.id)
        else:
            try:
                self.backend.disconnect()
            except Exception as exc:
                errors.append(f"disconnect: {exc}")
        if self._on_teardown is not None:
            self._on_teardown(self.id)
        return errors

    def publish(self) -> None:
        """Write this cluster's discovery record (owned clusters only; best effort)."""
        if self.owned:
            try:
                discovery.write(self.record())
            except OSError as exc:  # discovery is best-effort; the cluster still works
                logger.warning("cannot write discovery file: %s", exc)


def _shown(value: Any) -> str:
    return shown_count(value) if isinstance(value, int) else repr(value)[:60]


def _natural(row: Mapping[str, Any]) -> tuple:
    name = row["name"]
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


def _dashboard_from_identity(identity: Mapping[str, Any], address: str | None) -> str | None:
    port = (identity.get("services") or {}).get("dashboard")
    if not port or not address:
        return None
    host = urlparse(address).hostname or "127.0.0.1"
    return f"http://{host}:{port}/status"
