"""JobQueueBackend: what every dask-jobqueue scheduler backend shares (see schedulers.py).

What we add to dask-jobqueue:
- job submission errors surface in ``start()``/``scale()`` (dask-jobqueue submits in the
  background and only logs them), and nothing stays queued after a failed start;
- sbatch/qsub/scancel run with a sanitized environment (no MPI launch variables, no
  variables of an enclosing SLURM job), the workers' environment is exported in the job
  script, and a job whose scheduler is gone ends at once (scheduler probe);
- per-cluster log files read by ``logs()``, job ids and states of not-yet-connected
  workers in the model, and (SLURM) partition limits checked before submitting.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import shutil
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any, ClassVar

from pipejupyter.backends.base import ClusterClassBackend
from pipejupyter.backends.form_fields import PLACEMENT, RESOURCES, field_for, sizing_fields
from pipejupyter.backends.jobqueue.job_script import (
    Ledger,
    export_lines,
    make_job_class,
    worker_names,
)
from pipejupyter.backends.jobqueue.sizing import (
    translate_for_batch,
    validate_sizes,
    workers_per_job,
)
from pipejupyter.backends.jobqueue.slurm_tools import ENDED_STATES
from pipejupyter.environment.mpi import mpi_sanitized
from pipejupyter.environment.redaction import redact_assignments, redact_text, secret_values
from pipejupyter.environment.slurm import submission_environ
from pipejupyter.environment.tls import make_security
from pipejupyter.errors import ClusterError, ConfigError
from pipejupyter.models import ClusterSpec, OptionField, worker_row

logger = logging.getLogger(__name__)

#: JobQueueCluster keywords that are the cluster's, not the job's
CLUSTER_KEYS = frozenset(
    {
        "n_workers",
        "job_cls",
        "loop",
        "security",
        "shared_temp_directory",
        "silence_logs",
        "name",
        "asynchronous",
        "dashboard_address",
        "host",
        "scheduler_options",
        "scheduler_cls",
    }
)
#: Seconds a worker may take from its nanny's start until it is registered with the
#: scheduler: distributed bounds the worker's whole start with death_timeout (two Python
#: processes importing distributed), not only finding the scheduler. dask-jobqueue's 60 s;
#: a node or filesystem where many jobs start at once may need more (50 one-core jobs on
#: the 2 real cores of the test node took 39-46 s quiet, over 60 s under load): set
#: cluster_kwargs.death_timeout or dask's jobqueue.<scheduler>.death-timeout. Longer is
#: not free: a job that is starting when its owner dies holds its allocation that long.
DEFAULT_DEATH_TIMEOUT = 60
#: dask-jobqueue's own default for jobqueue.<scheduler>.death-timeout (jobqueue.yaml)
JOBQUEUE_DEATH_TIMEOUT = 60
DRY_RUN_SCHEDULER = "tcp://SCHEDULER-ADDRESS:PORT"
SUBMIT_TIMEOUT = 120
#: ended_workers: lines of each job output file quoted, and at most this many jobs asked
#: about (one scheduler command each) per look
OUTPUT_TAIL = 20
ENDED_CHECKS = 3
#: what a Dask worker logs once its scheduler has registered it
REGISTERED = "Registered to:"
_log_counter = itertools.count(1)


def default_log_directory(profile: str) -> Path:
    """``$PIPEJUPYTER_LOG_DIR`` or ``./pipejupyter-logs``, one directory per cluster.

    The working directory, like sbatch's own ``slurm-%j.out``, because compute nodes must
    be able to write there (a node-local /tmp would not do).
    """
    base = Path(os.environ.get("PIPEJUPYTER_LOG_DIR") or Path.cwd() / "pipejupyter-logs")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return (base / f"{profile}-{stamp}-{os.getpid()}-{next(_log_counter)}").absolute()


class JobQueueBackend(ClusterClassBackend):
    """Shared by every dask-jobqueue scheduler; subclasses set the class attributes."""

    name = "jobqueue"
    extra = "jobqueue"
    security_forms = ("tls", "files")
    requires = ("dask_jobqueue",)
    batch = True
    #: dask-jobqueue's config section (jobqueue.<name>.*) and the submit command
    config_name: ClassVar[str] = ""
    submit_command: ClassVar[str] = ""

    # -- resolve time ---------------------------------------------------------------
    @classmethod
    def translate(cls, spec: ClusterSpec) -> None:
        translate_for_batch(spec)
        cls.job_defaults(spec)
        kwargs = spec.cluster_kwargs
        options = kwargs.get("scheduler_options") or {}
        # Loopback unless the profile names a host or an interface (workers on other nodes
        # then need scheduler.host or cluster_kwargs.interface: see docs/slurm.md).
        if not ({"host", "interface"} & set(options) or kwargs.get("interface")):
            spec.scheduler.setdefault("host", "127.0.0.1")
        if spec.scheduler.get("dashboard_address") is None and "dashboard_address" not in options:
            # The dashboard listens where the scheduler does: never every interface by default.
            interface = options.get("interface") or kwargs.get("interface")
            host = spec.scheduler.get("host") or options.get("host")
            if host is None and interface:
                # Whether this machine has the interface is a fact of where we start, not of
                # the file: a missing one is a warning now and an error at start.
                try:
                    host = _interface_address(spec, interface)
                except ConfigError as exc:
                    spec.warnings.append(
                        f"{exc}; starting here fails (a start on a machine that has it works)"
                    )
            if host is not None or not interface:
                spec.scheduler["dashboard_address"] = f"{host}:0" if host else ":0"
        _default_death_timeout(spec, kwargs.get("config_name") or cls.config_name)

    @classmethod
    def workers_per_job(cls, spec: ClusterSpec) -> int:
        return workers_per_job(spec)

    @classmethod
    def option_fields(cls, spec: ClusterSpec) -> list[OptionField]:
        """Job size and placement; the scheduler's limits are added by its backend."""
        per_job = f"workers ({workers_per_job(spec)} per job)"
        return [
            *sizing_fields(spec, spec.max_workers, unit=per_job),
            field_for(spec, "cluster_kwargs.cores", "Cores per job", "int", minimum=1,
                      group=RESOURCES, help="CPUs each worker job asks for"),
            field_for(spec, "cluster_kwargs.memory", "Memory per job", "memory",
                      group=RESOURCES, help="e.g. 4GiB, shared by the job's worker processes"),
            field_for(spec, "cluster_kwargs.processes", "Processes per job", "int", minimum=1,
                      group=RESOURCES, nullable=True,
                      help="Dask worker processes each job starts (cores are split among them)"),
            field_for(spec, "cluster_kwargs.walltime", "Walltime", "duration", group=PLACEMENT,
                      nullable=True, help="HH:MM:SS or D-HH:MM:SS"),
            field_for(spec, "cluster_kwargs.queue", "Queue", "str", group=PLACEMENT,
                      nullable=True, help="queue or partition"),
            field_for(spec, "cluster_kwargs.account", "Account", "str", group=PLACEMENT,
                      nullable=True, help="project or account charged"),
            field_for(spec, "cluster_kwargs.job_extra_directives", "Extra directives", "list",
                      group=PLACEMENT, nullable=True,
                      help="one directive per line, e.g. --qos=express"),
        ]  # fmt: skip

    @classmethod
    def job_defaults(cls, spec: ClusterSpec) -> None:
        """Scheduler-specific defaults (queue, job name); SLURM overrides."""
        _default_job_name(spec, cls.config_name, f"pipejupyter-{spec.profile}")

    @classmethod
    def default_workers(cls, spec: ClusterSpec) -> int:
        # One job by default: jobs cost queue time and allocation; ask for more explicitly
        # (`-n N`, workers: N, or the CASA pipeline's n_workers).
        return 1

    @classmethod
    def accepted_kwargs(cls, klass: type) -> set[str] | None:
        # JobQueueCluster takes **job_kwargs: the job class's keywords are accepted too.
        cluster = super().accepted_kwargs(klass) or set()
        job_cls = getattr(klass, "job_cls", None)
        job = super().accepted_kwargs(job_cls) if job_cls is not None else set()
        names = cluster | (job or set())
        names |= {
            "job_cls",
            "scheduler_options",
            "n_workers",
            "interface",
            "protocol",
            "config_name",
            "security",
        }
        names.discard("scheduler")
        return names

    @classmethod
    def validate_kwargs(cls, spec: ClusterSpec) -> None:
        super().validate_kwargs(spec)
        validate_sizes(spec)

    # -- building -------------------------------------------------------------------
    def __init__(self, spec: ClusterSpec, env) -> None:
        super().__init__(spec, env)
        self.ledger = Ledger()
        configured = spec.cluster_kwargs.get("log_directory")
        self.log_directory = (
            str(configured) if configured else str(default_log_directory(spec.profile))
        )
        self._secrets = secret_values(env.variables, env.redact) if env else []
        self._ever_connected: set[str] = set()  # worker names seen connected (ended_workers)

    def submission_environ(self) -> dict[str, str]:
        mpi = self.spec.mpi or {}
        return submission_environ(mpi.get("sanitize", "auto"), tuple(mpi.get("extra") or ()))

    def cluster_kwargs(self, *, probe: bool = True) -> dict[str, Any]:
        import dask

        klass = self.cluster_type(self.spec)
        spec = self.spec
        kwargs = dict(spec.cluster_kwargs)
        config_name = kwargs.get("config_name") or self.config_name
        prologue = kwargs.get("job_script_prologue")
        if prologue is None:
            prologue = dask.config.get(f"jobqueue.{config_name}.job-script-prologue", None) or []
        kwargs["job_script_prologue"] = [*export_lines(self.env), *prologue]
        kwargs["log_directory"] = self.log_directory
        options = dict(kwargs.get("scheduler_options") or {})
        for key in ("host", "port", "dashboard_address"):
            if spec.scheduler.get(key) is not None:
                options.setdefault(key, spec.scheduler[key])
        kwargs["scheduler_options"] = options
        if spec.security and "security" not in kwargs:
            kwargs["security"] = _security(spec.security, spec.origin_of("security"))
        if (
            kwargs.get("security")
            and not kwargs.get("shared_temp_directory")
            and not dask.config.get(f"jobqueue.{config_name}.shared-temp-directory", None)
        ):
            # Temporary certificates are written to files the worker jobs read (mode 0600,
            # removed at stop): beside the job logs, on the filesystem the logs already share.
            kwargs["shared_temp_directory"] = self.log_directory
        kwargs.setdefault("silence_logs", "error")
        kwargs.setdefault(
            "job_cls",
            make_job_class(
                klass.job_cls, environ=self.submission_environ, ledger=self.ledger, probe=probe
            ),
        )
        return kwargs

    def job_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The keywords JobQueueCluster hands each job (see its __init__)."""
        job = {k: v for k, v in kwargs.items() if k not in CLUSTER_KEYS}
        job.setdefault("config_name", self.config_name)
        security = kwargs.get("security")
        job.setdefault("security", security if security not in (None, True) else None)
        return job

    def job_script(self, scheduler: str = DRY_RUN_SCHEDULER, name: str = "WORKER-NAME") -> str:
        """The exact job script a worker job gets (the scheduler address is known at start)."""
        kwargs = self.cluster_kwargs()
        job_cls = kwargs["job_cls"]
        created = _missing_ancestors(Path(self.log_directory))
        try:
            with mpi_sanitized(self.spec.mpi):
                return job_cls(scheduler, name=name, **self.job_kwargs(kwargs)).job_script()
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"{type(exc).__name__}: {exc}", key=f"profiles.{self.spec.profile}.cluster_kwargs"
            ) from None
        finally:
            # Building a job creates its log directory; a dry run must leave no trace.
            for path in created:
                with contextlib.suppress(OSError):
                    path.rmdir()

    def redact(self, text: str) -> str:
        return redact_text(redact_assignments(text, self.env.redact), self._secrets)

    def dry_run(self) -> str:
        text = super().dry_run()
        script = self.job_script()
        text += (
            f"# job script ({self.submit_command}); "
            "at start the scheduler address is filled in and a\n"
        )
        text += "# line before the worker command ends the job at once if that scheduler is gone:\n"
        text += self.redact(script)
        if self.spec.security:
            text += (
                "# security: the scheduler listens on tls://; "
                "at start each job gets --tls-ca-file, "
                "--tls-cert and --tls-key options naming certificate files "
                "(temporary ones are written "
                "beside the job logs unless shared_temp_directory says otherwise)\n"
            )
        for line in self.preflight_notes(script):
            text += f"# {line}\n"
        return text

    def preflight_notes(self, script: str) -> list[str]:
        """What the scheduler would say about the job (dry-run); SLURM asks sbatch."""
        return []

    def preflight(self) -> None:
        """Raise before anything is submitted when the job cannot run (SLURM checks)."""

    def check_interface(self) -> None:
        """The scheduler's network interface must exist here; its address is where the
        dashboard listens (resolving only warned when it was missing)."""
        spec = self.spec
        kwargs = spec.cluster_kwargs
        interface = (kwargs.get("scheduler_options") or {}).get("interface") or kwargs.get(
            "interface"
        )
        if not interface:
            return
        address = _interface_address(spec, interface)  # ConfigError when it is missing
        if spec.scheduler.get("dashboard_address") is None:
            spec.scheduler["dashboard_address"] = f"{address}:0"

    # -- live -----------------------------------------------------------------------
    def start(self) -> None:
        klass = self.cluster_type(self.spec)
        environ = self.submission_environ()
        if self.submit_command and not shutil.which(self.submit_command, path=environ.get("PATH")):
            raise ClusterError(
                f"{self.submit_command} not found on PATH: "
                f"the {self.name!r} backend submits each worker as a "
                f"job with {self.submit_command}; "
                "start it on a machine with the scheduler's commands "
                "(a login node), or load them first (e.g. `module load slurm`)"
            )
        self.check_interface()
        self.preflight()
        kwargs = self.cluster_kwargs()
        if kwargs.get("shared_temp_directory"):
            Path(kwargs["shared_temp_directory"]).mkdir(parents=True, exist_ok=True)
        with mpi_sanitized(self.spec.mpi):
            self.cluster = klass(**kwargs)

    def scale(self, n: int) -> None:
        """Scale and wait until every new job is submitted, raising the scheduler's error."""
        cluster = self.cluster
        self.ledger.waiting = True
        try:
            with mpi_sanitized(self.spec.mpi):
                cluster.scale(n)
                cluster.sync(cluster._correct_state, callback_timeout=SUBMIT_TIMEOUT)
        except Exception as exc:
            raise ClusterError(
                self.redact(f"scaling to {n} failed: {type(exc).__name__}: {exc}")
            ) from exc
        finally:
            self.ledger.waiting = False
        failures = self.ledger.take_failures()
        if failures:
            self._forget(name for name, _ in failures)
            first = failures[0][1]
            more = f" ({len(failures)} of the new jobs failed)" if len(failures) > 1 else ""
            raise ClusterError(self.redact(f"submitting a worker job failed{more}: {first}"))

    def _forget(self, names) -> None:
        """Drop failed jobs so neither the model nor a later scale sees them as pending."""
        from distributed.core import Status

        for name in set(names):
            self.cluster.worker_spec.pop(name, None)
            job = self.cluster.workers.pop(name, None)
            if job is not None:
                job.status = Status.failed  # SpecCluster's close() checks every job it made

    def adapt(self, minimum: int, maximum: int, **kwargs: Any) -> None:
        if minimum > 0:
            self.scale(minimum)  # the first jobs synchronously: their errors surface here
        with mpi_sanitized(self.spec.mpi):
            self.cluster.adapt(minimum=minimum, maximum=maximum, **kwargs)

    def close(self, timeout: float = 20) -> None:
        cluster = self.cluster
        try:
            super().close(timeout)
        finally:
            self.cancel_leftovers()
            _remove_certificate_files(cluster)

    def cancel_leftovers(self) -> None:
        """Cancel jobs that closing did not (still being submitted, adaptive races)."""

    # -- reading --------------------------------------------------------------------
    def job_states(self, job_ids: list[str]) -> dict[str, str]:
        return {}

    def _jobs(self) -> list[tuple[str, Any, dict | None]]:
        cluster = self.cluster
        if cluster is None:
            return []
        return [
            (str(name), job, cluster.worker_spec.get(name))
            for name, job in list(cluster.workers.items())
        ]

    def pending_workers(self, connected: dict[str, dict]) -> list[dict]:
        self._ever_connected.update(connected)
        jobs = self._jobs()
        ids = [str(job.job_id) for _, job, _ in jobs if getattr(job, "job_id", None)]
        states = self.job_states(ids) if ids else {}
        rows = []
        for name, job, spec in jobs:
            job_id = str(job.job_id) if getattr(job, "job_id", None) else None
            state = states.get(job_id, "").lower() if job_id else "submitting"
            for worker in worker_names(name, spec):
                if worker in connected:
                    # Connected rows get their job id too (the caller's dicts, on purpose).
                    connected[worker]["job_id"] = job_id
                    connected[worker]["job_state"] = state or "running"
                    continue
                rows.append(
                    worker_row(
                        name=worker, status="pending", job_id=job_id, job_state=state or "unknown"
                    )
                )
        return rows

    def job_end(self, job_id: str, listed_state: str | None) -> dict[str, str] | None:
        """How job ``job_id`` ended (``state``, ``exit_code``, ``reason``), or None while it
        is live or the scheduler cannot tell; ``listed_state``: what job_states() said
        (None: not listed). Only SLURM answers; other schedulers never conclude."""
        return None

    def ended_workers(self, connected: Collection[str]) -> list[dict[str, Any]]:
        """Jobs that ended while none of their workers ever connected (see Backend).

        A job whose worker connected and later left is not a failed start: names seen
        connected are remembered, and an output file saying the worker registered counts
        as connected too (a worker may connect and die between two looks).
        """
        seen = self._ever_connected
        seen.update(connected)
        jobs = [
            (name, str(job.job_id), worker_names(name, spec))
            for name, job, spec in self._jobs()
            # spec None: scaled away, being cancelled by dask-jobqueue (not a failure)
            if getattr(job, "job_id", None) and spec is not None
        ]
        jobs = [j for j in jobs if not seen.intersection(j[2])]
        if not jobs:
            return []
        states = self.job_states([job_id for _, job_id, _ in jobs])
        ended = []
        asked = 0
        for name, job_id, workers in jobs:
            listed = states.get(job_id)
            if listed is not None and listed.upper() not in ENDED_STATES:
                continue  # pending or running: the common case, no further question
            if asked >= ENDED_CHECKS:
                break  # bounded per look: the next look asks about the next ones
            asked += 1
            end = self.job_end(job_id, listed)
            if end is None:
                continue
            text = {path: _file_end(path) for path in self._job_files(job_id)}
            if any(REGISTERED in end_text for end_text in text.values()):
                seen.update(workers)
                continue
            ended.append(
                {
                    "name": name,
                    "workers": workers,
                    "job_id": job_id,
                    "state": end.get("state", ""),
                    "exit_code": end.get("exit_code", ""),
                    "reason": end.get("reason", ""),
                    "output": {
                        str(path): [
                            self.redact(line[:300]) for line in end_text.splitlines()[-OUTPUT_TAIL:]
                        ]
                        for path, end_text in text.items()
                    },
                }
            )
        return ended

    def _job_files(self, job_id: str) -> list[Path]:
        """The output files of one job in the log directory (``NAME-ID.out``/``.err``...);
        the id must stand alone in the name (job 95 is not job 951)."""
        directory = Path(self.log_directory)
        if not directory.is_dir():
            return []
        alone = re.compile(rf"(?<!\d){re.escape(job_id)}(?!\d)")
        return [
            path
            for path in sorted(directory.glob(f"*{job_id}*"))
            if path.is_file() and alone.search(path.name)
        ]

    def logs(self, client, lines: int | None = None) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for job_id, worker in self.ledger.jobs.items():
            for path in self._job_files(job_id):
                stream = path.suffix.lstrip(".") or "log"
                text = path.read_text(errors="replace").splitlines()
                out[f"job {job_id} ({worker}) {stream}"] = text[-lines:] if lines else text
        return out

    def discovery_info(self) -> dict[str, Any]:
        return {"job_ids": list(self.ledger.job_ids), "log_directory": self.log_directory}


def _file_end(path: Path, max_bytes: int = 256 * 1024) -> str:
    """The last ``max_bytes`` of a file as text ("" when it cannot be read)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - max_bytes))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def _missing_ancestors(path: Path) -> list[Path]:
    """``path`` and its parents that do not exist yet, deepest first."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def _interface_address(spec: ClusterSpec, interface: str) -> str:
    """The IPv4 address of a network interface of this machine (where the scheduler runs)."""
    import socket

    import psutil

    addresses = psutil.net_if_addrs()
    for entry in addresses.get(interface, []):
        if entry.family == socket.AF_INET:
            return entry.address
    key = "cluster_kwargs.interface"
    raise ConfigError(
        f"interface {interface!r} has no IPv4 address on this machine, where the scheduler runs",
        key=f"profiles.{spec.profile}.{key}",
        source=spec.origin_of(key),
        accepted=", ".join(sorted(addresses)),
    )


def _remove_certificate_files(cluster: Any) -> None:
    """dask-jobqueue writes temporary certificates for the jobs to files it deletes only
    when the cluster object is collected; a stopped cluster must not leave its key behind."""
    for attr, value in list(vars(cluster).items()) if cluster is not None else ():
        if attr.startswith("_job_") and hasattr(value, "close") and hasattr(value, "name"):
            with contextlib.suppress(OSError):
                value.close()  # a NamedTemporaryFile: closing removes it


def _security(value: Any, source: str | None) -> Any:
    """What dask-jobqueue's ``security=`` takes: True makes temporary certificates itself."""

    if value in (True, "tls", "temporary"):
        return True
    return make_security(value, source=source)


def _default_death_timeout(spec: ClusterSpec, config_name: str) -> None:
    """Keep a profile's death_timeout or one set in dask's jobqueue config, else ours."""
    import dask

    if spec.cluster_kwargs.get("death_timeout") is not None:
        return
    key = f"jobqueue.{config_name}.death-timeout"
    with dask.config.set(spec.dask_config or {}):  # the profile's dask_config counts too
        configured = dask.config.get(key, None)
    if configured is not None and configured != JOBQUEUE_DEATH_TIMEOUT:
        spec.cluster_kwargs["death_timeout"] = configured
        spec.origin.setdefault("cluster_kwargs.death_timeout", f"dask config {key}")
        return
    spec.cluster_kwargs["death_timeout"] = DEFAULT_DEATH_TIMEOUT
    spec.origin.setdefault("cluster_kwargs.death_timeout", "default")


def _default_job_name(spec: ClusterSpec, config_name: str, fallback: str) -> None:
    """Keep a configured job name (profile or dask's jobqueue config), else ``fallback``."""
    import dask

    if spec.cluster_kwargs.get("job_name"):
        return
    configured = dask.config.get(f"jobqueue.{config_name}.name", None)
    if configured and configured != "dask-worker":  # dask-jobqueue's own default
        return
    spec.cluster_kwargs["job_name"] = fallback
    spec.origin.setdefault("cluster_kwargs.job_name", "default")
