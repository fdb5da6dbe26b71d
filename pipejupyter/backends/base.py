"""The backend contract, and ClusterClassBackend: any ``distributed`` Cluster class.

A backend turns a ClusterSpec into a running Dask cluster and drives it. Class-level
methods work at resolve time (no cluster yet: sizing translation, kwargs validation,
dry-run text); instance methods drive one live cluster. The manager owns the Client,
discovery and cleanup; backends only know their library.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import math
from collections.abc import Collection, Iterable
from typing import Any, ClassVar

import yaml

from pipejupyter.backends.form_fields import sizing_fields
from pipejupyter.config.loader import ARGUMENT, OVERRIDE
from pipejupyter.config.schema import Field
from pipejupyter.environment.mpi import mpi_sanitized
from pipejupyter.environment.redaction import redact_tree
from pipejupyter.environment.workers import WorkerEnvironment
from pipejupyter.errors import (
    ClusterError,
    ConfigError,
    LimitError,
    MissingDependency,
    did_you_mean,
)
from pipejupyter.models import ClusterSpec, OptionField, worker_row

logger = logging.getLogger(__name__)

#: max_workers of a profile that sets none, for backends whose workers run elsewhere (batch
#: jobs, a gateway, Kubernetes pods); local profiles default to 4 per CPU (backends/local.py)
DEFAULT_MAX_WORKERS = 1000
#: counts with more digits are shown by their length (str() of a huge int is slow, and
#: refused above 4300 digits)
SHOWN_DIGITS = 30
#: worker counts of a spec: dotted key -> the name of the argument that sets it
_COUNT_ARGUMENTS = {
    "workers": "workers",
    "cluster_kwargs.n_workers": "workers",
    "adapt_kwargs.minimum": "adapt.minimum",
    "adapt_kwargs.maximum": "adapt.maximum",
}


def import_dotted(path: str) -> Any:
    """Import ``package.module.Name`` or ``package.module:Name``."""
    if ":" in path:
        module_name, _, attr = path.partition(":")
    else:
        module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise ImportError(f"{path!r} is not a dotted path (package.module.Class)")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ImportError(f"module {module_name!r} has no attribute {attr!r}") from None


@functools.cache
def keyword_arguments(klass: type) -> frozenset[str] | None:
    """The keyword arguments ``klass(...)`` accepts along its MRO (None: any), computed once
    per class: signatures are slow, and every profile of every listing asks."""
    names: set[str] = set()
    for base in klass.__mro__:
        init = base.__dict__.get("__init__")
        if init is None:
            continue
        try:
            params = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            return None
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            names.discard("self")
            return frozenset(names)
    return None


class Backend:
    """Contract shared by every backend. Subclasses set the class attributes."""

    name: ClassVar[str] = ""
    #: pip extra that installs the backend's library (named in MissingDependency)
    extra: ClassVar[str | None] = None
    #: modules that must import for the backend to work
    requires: ClassVar[tuple[str, ...]] = ()
    #: dotted cluster classes this backend serves; the first is its default
    cluster_classes: ClassVar[tuple[str, ...]] = ()
    #: profile keys of this backend beyond the common ones (gateway address, image...)
    profile_keys: ClassVar[dict[str, Field]] = {}
    #: batch backends have job scripts, shown by dry-run
    batch: ClassVar[bool] = False
    #: False when the cluster belongs to someone else (connected by address)
    owns_cluster: ClassVar[bool] = True
    #: which ``security`` forms the backend honours: "tls" (temporary), "files" (PEM paths)
    security_forms: ClassVar[tuple[str, ...]] = ()
    security_note: ClassVar[str] = "it does not pass TLS settings to its cluster"
    #: True when clusters live on a service (Dask Gateway) that any process of this user can
    #: list, attach to and stop: then list_remote, attach, attach_record and stop_record work
    remote_clusters: ClassVar[bool] = False

    # -- resolve time -------------------------------------------------------------
    @classmethod
    def finalize(cls, spec: ClusterSpec) -> None:
        """Translate sizing keys, fill defaults, validate kwargs. Raises ConfigError.

        Every worker count is checked against ``max_workers`` twice, as written (so the
        error names the key and line the user wrote) and as translated (``n_workers``,
        ``maximum_jobs``, the default count), before anything is built.
        """
        if spec.cluster_class is None and cls.cluster_classes:
            spec.cluster_class = cls.cluster_classes[0]
        if spec.max_workers is None:
            spec.max_workers = cls.default_max_workers(spec)
        cls.check_worker_counts(spec, before_translation=True)
        cls.translate(spec)
        normalize_adapt_keys(spec, cls.workers_per_job(spec), note=cls.batch)
        if spec.workers is None and spec.adapt_kwargs is None:
            spec.workers = cls.default_workers(spec)
        cls.check_worker_counts(spec)
        cls.validate_kwargs(spec)

    @classmethod
    def translate(cls, spec: ClusterSpec) -> None:
        """Rename keys that mean the same thing on other backends (with a note)."""

    @classmethod
    def option_fields(cls, spec: ClusterSpec) -> list[OptionField]:
        """What a user may choose when starting ``spec`` (the options form), prefilled from
        it; backends add their resources. May ask the scheduler or service (briefly)."""
        return sizing_fields(spec, spec.max_workers)

    @classmethod
    def default_workers(cls, spec: ClusterSpec) -> int:
        return 1

    @classmethod
    def default_max_workers(cls, spec: ClusterSpec) -> int | None:
        """The most workers a profile may ask for when it sets no ``max_workers``; None:
        no limit. Backends override it (local: 4 per CPU)."""
        return DEFAULT_MAX_WORKERS

    @classmethod
    def max_workers_rule(cls, spec: ClusterSpec) -> str:
        """How :meth:`default_max_workers` was decided, for the error that names it."""
        return f"the default of the {cls.name!r} backend"

    @classmethod
    def check_worker_counts(cls, spec: ClusterSpec, *, before_translation: bool = False) -> None:
        """Raise ConfigError for a worker count of ``spec`` that is not an integer >= 0,
        and LimitError for one above ``spec.max_workers``."""
        counts: list[tuple[str, Any]] = [("workers", spec.workers)]
        n_workers = spec.cluster_kwargs.get("n_workers")
        # As written, n_workers is the worker count unless an argument gave one; after
        # translation it is still there only for cluster classes that take it themselves.
        if not before_translation or spec.origin.get("workers") != ARGUMENT:
            counts.append(("cluster_kwargs.n_workers", n_workers))
        for label in ("minimum", "maximum"):
            counts.append((f"adapt_kwargs.{label}", (spec.adapt_kwargs or {}).get(label)))
        for dotted, value in counts:
            if value is None:
                continue
            key, source = _count_key(spec, dotted)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                shown = shown_count(value) if isinstance(value, int) else repr(value)[:60]
                raise ConfigError(f"expected an integer >= 0, got {shown}", source=source, key=key)
            cls.check_worker_limit(spec, value, key=key, source=source)

    @classmethod
    def check_worker_limit(
        cls,
        spec: ClusterSpec,
        value: int,
        *,
        key: str,
        source: str | None = None,
        live: bool = False,
    ) -> None:
        """Raise LimitError when ``value`` workers is above ``spec.max_workers``.

        ``live``: the cluster runs (scale, adapt), so a raised limit needs a new start.
        """
        limit = spec.max_workers
        if limit is None or value <= limit:
            return
        origin = spec.origin.get("max_workers")
        if origin == OVERRIDE:
            why = "set by an override (--set)"
        else:
            why = f"set at {origin}" if origin else cls.max_workers_rule(spec)
        where = f"profiles.{spec.profile}"
        count = (
            f"{value} workers"
            if value < 10**SHOWN_DIGITS
            else f"a worker count with {_digits(value)} digits"
        )
        then = " and start the cluster again (a running cluster keeps its limit)" if live else ""
        raise LimitError(
            f"{count} is above max_workers={shown_count(limit)} ({why}); raise the limit with "
            f"max_workers: N in {where} (or at the top level, for every profile) of a config "
            f"file, or with --set {where}.max_workers=N{then}",
            source=source,
            key=key,
        )

    @classmethod
    def workers_per_job(cls, spec: ClusterSpec) -> int:
        """Dask workers one job starts (batch backends: processes per job), for adapt's
        ``minimum_jobs``/``maximum_jobs``."""
        return 1

    @classmethod
    def check_dependencies(cls) -> None:
        for module in cls.requires:
            try:
                importlib.import_module(module)
            except ImportError:
                raise MissingDependency(
                    module, cls.extra or "all", f"the {cls.name!r} backend"
                ) from None

    @classmethod
    def cluster_type(cls, spec: ClusterSpec) -> type:
        cls.check_dependencies()
        path = spec.cluster_class or (cls.cluster_classes[0] if cls.cluster_classes else None)
        if not path:
            raise ConfigError(
                "no cluster_class to start",
                key="cluster_class",
                source=spec.origin_of("cluster_class"),
            )
        try:
            return import_dotted(path)
        except ImportError as exc:
            top = path.split(".")[0].split(":")[0]
            extra = {
                "dask_jobqueue": "jobqueue",
                "dask_gateway": "gateway",
                "dask_kubernetes": "kubernetes",
            }.get(top)
            hint = f"; install it with: pip install 'pipejupyter[{extra}]'" if extra else ""
            raise ConfigError(
                f"cluster_class {path!r} does not import ({exc}){hint}",
                source=spec.origin_of("cluster_class"),
                key="cluster_class",
            ) from None

    @classmethod
    def accepted_kwargs(cls, klass: type) -> set[str] | None:
        """Keyword arguments ``klass`` accepts; None when it takes anything."""
        found = keyword_arguments(klass)
        return set(found) if found is not None else None

    @classmethod
    def validate_kwargs(cls, spec: ClusterSpec) -> None:
        if not spec.cluster_class and not cls.cluster_classes:
            return
        klass = cls.cluster_type(spec)
        accepted = cls.accepted_kwargs(klass)
        if accepted is None:
            return
        for key in spec.cluster_kwargs:
            if key not in accepted:
                raise ConfigError(
                    f"{klass.__name__} does not accept {key!r}",
                    source=spec.origin_of(f"cluster_kwargs.{key}"),
                    key=f"profiles.{spec.profile}.cluster_kwargs.{key}",
                    accepted=sorted(a for a in accepted if not a.startswith("_")),
                    suggestion=did_you_mean(key, accepted),
                )

    # -- live ---------------------------------------------------------------------
    def __init__(self, spec: ClusterSpec, env: WorkerEnvironment) -> None:
        self.spec = spec
        self.env = env
        self.cluster: Any = None
        # The cluster's discovery file, set by the manager before start(): a backend whose
        # cluster outlives this process (gateway) has its reaper remove it.
        self.record_path: str | None = None

    def dry_run(self) -> str:
        """What would be started, as text; batch backends add their job script."""
        shown = self.spec.to_json()
        shown["env"] = {
            "pass": shown["env"].get("pass", []),
            "workers_receive": self.env.redacted(),
        }
        shown = redact_tree(shown, self.env.redact)  # cluster_kwargs, options... at any depth
        shown.pop("notes", None)
        shown.pop("warnings", None)
        text = yaml.safe_dump(shown, sort_keys=False, default_flow_style=False)
        return text + closing_comments(self.spec)

    def start(self) -> None:
        raise NotImplementedError

    @property
    def scheduler_address(self) -> str | None:
        return getattr(self.cluster, "scheduler_address", None)

    @property
    def dashboard_link(self) -> str | None:
        try:
            return getattr(self.cluster, "dashboard_link", None)
        except Exception:  # some clusters compute it from a live scheduler
            return None

    def make_client(self, **kwargs: Any):
        from distributed import Client

        return Client(
            self.cluster if self.cluster is not None else self.scheduler_address, **kwargs
        )

    def scale(self, n: int) -> None:
        raise ClusterError(f"the {self.name!r} backend cannot scale")

    def adapt(self, minimum: int, maximum: int, **kwargs: Any) -> None:
        raise ClusterError(f"the {self.name!r} backend cannot adapt")

    def close(self, timeout: float = 20) -> None:
        pass

    def pending_workers(self, connected: dict[str, dict]) -> list[dict]:
        """Rows for workers asked for but not connected (``connected`` by worker name)."""
        return []

    def ended_workers(self, connected: Collection[str]) -> list[dict[str, Any]]:
        """Workers whose job has ended although their worker never connected (names in
        ``connected`` are connected now): ``{name, job_id, state, exit_code, reason,
        output}`` each, ``output`` being the last lines of the job's output files. A start
        waiting for workers fails on the first one instead of waiting out its timeout.
        Backends without jobs have none."""
        return []

    def logs(self, client, lines: int | None = None) -> dict[str, list[str]]:
        """Extra log sources beyond the scheduler/worker logs (job output files...)."""
        return {}

    def discovery_info(self) -> dict[str, Any]:
        """Backend details other processes need to reconnect (gateway name...)."""
        return {}

    def secret_values(self) -> list[str]:
        """Credentials of this backend (gateway password...) that must never be shown."""
        return []

    def disconnect(self) -> None:
        """Release what a connected (not owned) cluster holds here, without stopping it."""

    # -- other processes' clusters (backends with remote_clusters) ----------------------
    @classmethod
    def attach(cls, target: str, env: WorkerEnvironment) -> Backend:
        """A backend attached to the running cluster ``target`` (``NAME://...``)."""
        raise ClusterError(
            f"the {cls.name!r} backend cannot connect to {target!r}: connect takes a scheduler "
            "address (tcp://host:port, tls://...), gateway://NAME, or the id or name of a "
            "discovered cluster"
        )

    @classmethod
    def attach_record(cls, record: dict[str, Any]) -> Backend | None:
        """A backend attached to a discovery record's cluster; None: connect to its
        scheduler address instead."""
        return None

    @classmethod
    def list_remote(cls, spec: ClusterSpec, timeout: float = 2.0) -> list[dict[str, Any]]:
        """Listing records of the clusters this profile's service runs for this user."""
        return []

    @classmethod
    def stop_record(cls, record: dict[str, Any], timeout: float = 30) -> bool:
        """Stop a discovered cluster through the backend's service; False: not handled here
        (the caller shuts it down through its scheduler)."""
        return False


def closing_comments(spec: ClusterSpec, extra_notes: Iterable[str] = ()) -> str:
    """A dry run's closing comment lines: warnings first, then notes."""
    lines = [f"# warning: {w}\n" for w in spec.warnings]
    lines += [f"# note: {n}\n" for n in [*spec.notes, *extra_notes]]
    return "".join(lines)


def shown_count(value: int) -> str:
    """``value`` as text; a number too long to read (or to convert) by its length."""
    if -(10**SHOWN_DIGITS) < value < 10**SHOWN_DIGITS:
        return str(value)
    return f"a number with {_digits(value)} digits"


def _digits(value: int) -> int:
    value = abs(value)
    digits = int(math.log10(value)) + 1
    if 10 ** (digits - 1) > value:  # log10 of a huge int is a float: correct its rounding
        digits -= 1
    elif 10**digits <= value:
        digits += 1
    return digits


def _count_key(spec: ClusterSpec, dotted: str) -> tuple[str, str | None]:
    """The key an error about count ``dotted`` names, and where the count came from."""
    source = spec.origin_of(dotted)
    if source == ARGUMENT:
        return _COUNT_ARGUMENTS[dotted], source
    return f"profiles.{spec.profile}.{dotted}", source


def normalize_adapt_keys(spec: ClusterSpec, workers_per_job: int, *, note: bool = False) -> None:
    """dask-jobqueue's ``minimum_jobs``/``maximum_jobs`` as worker counts (``minimum``/
    ``maximum``), so every backend and the manager read one pair of keys."""
    adapt = spec.adapt_kwargs
    if not adapt:
        return
    for old, new in (("minimum_jobs", "minimum"), ("maximum_jobs", "maximum")):
        if old not in adapt:
            continue
        jobs = adapt.pop(old)
        if new in adapt or not isinstance(jobs, int) or isinstance(jobs, bool):
            continue
        adapt[new] = jobs * workers_per_job
        if note:
            spec.notes.append(
                f"adapt {old}={jobs} means {new}={jobs * workers_per_job} workers "
                f"({workers_per_job} per job)"
            )


class ClusterClassBackend(Backend):
    """Any ``distributed.deploy.Cluster`` subclass named by ``cluster_class``."""

    name = "generic"

    def cluster_kwargs(self) -> dict[str, Any]:
        return dict(self.spec.cluster_kwargs)

    def start(self) -> None:
        klass = self.cluster_type(self.spec)
        kwargs = self.cluster_kwargs()
        with mpi_sanitized(self.spec.mpi):
            self.cluster = klass(**kwargs)

    def scale(self, n: int) -> None:
        with mpi_sanitized(self.spec.mpi):
            self.cluster.scale(n)

    def adapt(self, minimum: int, maximum: int, **kwargs: Any) -> None:
        with mpi_sanitized(self.spec.mpi):
            self.cluster.adapt(minimum=minimum, maximum=maximum, **kwargs)

    def close(self, timeout: float = 20) -> None:
        if self.cluster is None:
            return
        try:
            self.cluster.close(timeout=timeout)
        except TypeError:  # close() without a timeout argument
            self.cluster.close()

    def pending_workers(self, connected: dict[str, dict]) -> list[dict]:
        requested = getattr(self.cluster, "requested", None)
        if not requested:
            return []
        return [
            worker_row(name=str(n), status="pending")
            for n in sorted(map(str, requested))
            if str(n) not in connected
        ]
