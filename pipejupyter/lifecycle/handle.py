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


#: connected workers listed in a model's ``worker_info`` (the totals count every worker): a
#: view shows a screenful; 1,000 full rows cost the scheduler and the notebook ~10x more.
WORKER_ROWS = 100


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
        self._summary_works = True  # False once the scheduler refused the summary RPC
        self._summary_installed = False  # the summary RPC was added to the scheduler
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

    def _summary(self, timeout: float, rows: int | None) -> dict[str, Any]:
        """Totals over every worker and the first ``rows`` worker records (None: all),
        computed on the scheduler by an RPC this handle adds to it once (worker_summary.py);
        every worker's name only for an owner (its backend tells queued jobs by name).
        A scheduler that cannot take it is asked for its full identity from then on, as
        before: the same numbers, at the full price."""
        if self._summary_works:
            from pipejupyter.lifecycle import worker_summary

            try:
                if not self._summary_installed:  # once per handle: idempotent on the scheduler
                    _pickle_by_value(worker_summary)
                    self.client.sync(
                        self.client._run_on_scheduler,
                        worker_summary.install,
                        callback_timeout=timeout,
                    )
                    self._summary_installed = True
                call = getattr(self.client.scheduler, worker_summary.HANDLER)
                got = self.client.sync(
                    call,
                    rows=-1 if rows is None else rows,
                    names=self.owned,
                    callback_timeout=timeout,
                )
                if isinstance(got, dict):
                    return got
                # None: the scheduler lost the RPC (restarted at the same address); add it
                # again next time, this time ask for everything.
                self._summary_installed = False
            except (OSError, TimeoutError):
                self._summary_installed = False
                raise  # the scheduler did not answer: the caller reports it lost
            except Exception as exc:
                logger.debug("the scheduler cannot summarize its workers: %s", exc)
                self._summary_works = False
        return _summary_from_identity(self._identity(timeout), rows)

    def model(self, timeout: float = 2.0, worker_rows: int | None = WORKER_ROWS) -> dict[str, Any]:
        """The JSON model (docs/wire-format.md). A scheduler that does not answer is 'lost'.

        ``worker_rows``: at most this many connected workers get a row in ``worker_info``
        (the totals count them all); None lists every worker.
        """
        rows: list[dict[str, Any]] = []
        summary: dict[str, Any] | None = None
        if self.client is not None and self.status in (
            ClusterStatus.RUNNING,
            ClusterStatus.LOST,
            ClusterStatus.STARTING,
        ):
            try:
                summary = self._summary(timeout, worker_rows)
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
                        name=name,
                        address=address,
                        host=host,
                        threads=threads,
                        memory_used=used,
                        memory_limit=limit,
                        processing=busy,
                        status=str(status).replace("Status.", ""),
                    )
                    for address, name, host, threads, used, limit, busy, status in summary["rows"]
                ]
                if self._dashboard is None and self.backend.dashboard_link is None:
                    self._dashboard = _dashboard_from_identity(summary, self.scheduler_address)
        if self.status in (ClusterStatus.RUNNING, ClusterStatus.STARTING) and self.owned:
            # Backends tell queued jobs from connected workers by name: all names, not the rows.
            connected: dict[str, dict[str, Any]] = dict.fromkeys(
                summary["names"] if summary else (), {}
            )
            connected.update((r["name"], r) for r in rows)
            try:
                rows += self.backend.pending_workers(connected)
            except Exception as exc:  # pending rows are a nicety; never fail the model
                logger.debug("pending_workers failed: %s", exc)
        model = cluster_model(
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
        if summary is not None:  # the totals of every worker, listed or not
            model.update(
                workers=summary["workers"],
                cores=summary["threads"],
                memory=summary["memory"],
                memory_used=summary["memory_used"],
                tasks=summary["tasks"],
            )
        return model

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

    #: wait_for_workers waits in slices this long and asks the backend between them whether
    #: a worker job has ended unconnected (SLURM: one squeue per slice, cached 1 s)
    WAIT_SLICE = 2.0

    def wait_for_workers(self, n: int, timeout: float | None = None) -> None:
        """Wait until ``n`` workers are connected; raise ClusterError at ``timeout`` or as
        soon as the backend reports a worker job that ended before its worker connected."""
        if n <= 0:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            step = self.WAIT_SLICE if left is None else max(min(self.WAIT_SLICE, left), 0.01)
            try:
                self.client.wait_for_workers(n, timeout=step)
                return
            except TimeoutError:
                pass
            ended = self._ended_workers()
            if ended:
                raise ClusterError(self.safe(self._ended_job_text(ended[0], n)))
            if deadline is not None and time.monotonic() >= deadline:
                break
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

    def _ended_workers(self) -> list[dict[str, Any]]:
        """The backend's worker jobs that ended unconnected; a look that fails finds none
        (it only shortens a wait that the timeout bounds anyway)."""
        if not self.owned:
            return []
        identity = getattr(self.client, "_scheduler_identity", None) or {}
        # wait_for_workers refreshed the client's copy of the scheduler's workers every 0.1 s
        connected = {str(w.get("name")) for w in dict(identity.get("workers") or {}).values()}
        try:
            return self.backend.ended_workers(connected)
        except Exception as exc:
            logger.debug("ended_workers failed: %s", exc)
            return []

    @staticmethod
    def _ended_job_text(job: Mapping[str, Any], n: int) -> str:
        """A start's error for a worker job that ended before its worker connected."""
        how = job.get("state") or "ended"
        if job.get("exit_code"):
            how += f", exit code {job['exit_code']}"
        if job.get("reason"):
            how += f", {job['reason']}"
        text = (
            f"worker job {job['job_id']} ({job['name']}) ended before its worker connected "
            f"({how}), so {n} workers cannot all connect"
        )
        output = {path: lines for path, lines in (job.get("output") or {}).items() if lines}
        if not output:
            return text + "; the job left no output in its log files"
        for path, lines in output.items():
            text += f"\nlast {len(lines)} lines of {path}:\n" + "\n".join(
                f"    {line}" for line in lines
            )
        return text

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
            model = self.model(worker_rows=None)  # every worker: any may be named
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


def _pickle_by_value(module: Any) -> None:
    import cloudpickle

    if module.__name__ not in cloudpickle.list_registry_pickle_by_value():
        cloudpickle.register_pickle_by_value(module)


def _summary_from_identity(identity: Mapping[str, Any], rows: int | None) -> dict[str, Any]:
    """What ``worker_summary.summarize`` returns, from a scheduler's full identity."""
    workers = identity.get("workers") or {}
    records = []
    for address, info in workers.items():
        metrics = info.get("metrics") or {}
        records.append(
            (
                address,
                str(info.get("name", address)),
                info.get("host"),
                info.get("nthreads", 0),
                metrics.get("memory", 0),
                info.get("memory_limit", 0),
                _processing(metrics),
                str(info.get("status", "running")),
            )
        )
    records.sort(key=lambda r: _natural({"name": r[1]}))
    return {
        "workers": len(records),
        "threads": sum(int(r[3] or 0) for r in records),
        "memory": sum(int(r[5] or 0) for r in records),
        "memory_used": sum(int(r[4] or 0) for r in records),
        "tasks": sum(r[6] for r in records),
        "names": [r[1] for r in records],
        "rows": records if rows is None else records[:rows],
        "services": identity.get("services") or {},
        "address": identity.get("address"),
    }


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
