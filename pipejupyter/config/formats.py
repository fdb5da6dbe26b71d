"""The four configuration formats, each turned into the native tree.

Every file is read on its own, recognised by its top-level keys, validated in its own
terms (so errors name the keys the user wrote) and translated into the native layout
(the content of ``pipecluster:``). Provenance travels with every translated value: the
origin map points each native key path at the ``file:line`` the user wrote it on.

The formats: native (``pipecluster:``), the CASA pipeline's (``pipeconfig:``,
``casaconfig:``), a single cluster (``cluster_class:``, ``cluster_kwargs:``,
``adapt_kwargs:``, as Arrakis and Prefect set-ups write it) and dask-labextension's
(``labextension:``, see dask_labextension.py).

A key written twice in one mapping: other tools read the CASA pipeline's, single-cluster
and Dask files with PyYAML, which keeps the last value, so we do the same and warn, naming
both lines (and, when the values differ, which one wins). The native format is ours and
refuses a repeated key: there the second one is almost always a mistake.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipejupyter.backend_registry import backend_class_for_profile
from pipejupyter.config import dask_labextension
from pipejupyter.config import schema as S
from pipejupyter.config.yaml_source import Duplicate, KeyPath, SourcedYAML
from pipejupyter.errors import ConfigError, did_you_mean

ENV = S.Field(
    "record",
    "worker environment",
    children={
        "pass": S.Field("str-list", "names or glob patterns copied from this process to workers"),
        "set": S.Field(
            "str-map",
            "variables set on workers; $VAR: expanded here for local workers, "
            "for the node's shell in job scripts",
        ),
        "redact": S.Field("str-list", "extra glob patterns whose values are never displayed"),
    },
)
MPI = S.Field(
    "record",
    "MPI sanitization",
    children={
        "sanitize": S.Field(
            "enum", "remove MPI launch variables from workers", values=("auto", "always", "never")
        ),
        "extra": S.Field(
            "str-list", "extra variable names or glob patterns to treat as MPI variables"
        ),
    },
)
SCHEDULER = S.Field(
    "record",
    "where the scheduler listens",
    children={
        "host": S.Field("str", "interface the scheduler binds", nullable=True),
        "port": S.Field("int", "scheduler port (0: a free port)", minimum=0, nullable=True),
        "dashboard_address": S.Field(
            "str", "dashboard host:port (port 0: a free port)", nullable=True
        ),
    },
)
ADAPT = S.Field(
    "map",
    "adaptive scaling: minimum, maximum (or minimum_jobs, maximum_jobs), wait_count, interval",
    nullable=True,
)
MAX_WORKERS = S.Field(
    "int",
    "most workers a cluster may ask for (workers, -n, adapt maximum, scale); "
    "null: the backend's default (local: 4 per CPU; batch, gateway, kubernetes: 1000). "
    "In a profile it wins over the top-level value",
    minimum=1,
    nullable=True,
)
PROFILE_KEYS: dict[str, S.Field] = {
    "backend": S.Field("str", "backend name (see `pipejupyter profiles`) or module:Class"),
    "cluster_class": S.Field("str", "dotted path of a Dask cluster class"),
    "description": S.Field("str", "one line shown in listings"),
    "workers": S.Field(
        "int", "workers to start (null: the backend's default rule)", minimum=0, nullable=True
    ),
    "max_workers": MAX_WORKERS,
    "cluster_kwargs": S.Field("map", "keyword arguments of the cluster class", nullable=True),
    "adapt_kwargs": ADAPT,
    "env": ENV,
    "mpi": MPI,
    "scheduler": SCHEDULER,
    "dask_config": S.Field(
        "map", "Dask configuration set while the cluster is created", nullable=True
    ),
    "casaconfig": S.Field("map", "CASA settings forwarded to the workers", nullable=True),
    "security": S.Field(
        "any",
        "transport security: null, tls (temporary certificates), "
        "or {ca_file, cert, key} (PEM files)",
        nullable=True,
    ),
    "wait_timeout": S.Field(
        "number", "seconds start() waits for workers", minimum=0, nullable=True
    ),
}


def _profile_extra_keys(profile: dict) -> dict[str, S.Field]:
    # Backends may add keys of their own (gateway address, kubernetes image...).

    cls = backend_class_for_profile(profile, strict=False)
    return dict(getattr(cls, "profile_keys", {}) or {}) if cls is not None else {}


NATIVE = S.Field(
    "record",
    children={
        "default": S.Field("str", "profile used when none is named"),
        "max_workers": MAX_WORKERS,
        "env": ENV,
        "mpi": MPI,
        "dask_config": S.Field("map", "Dask configuration for every cluster", nullable=True),
        "casaconfig": S.Field("map", "CASA settings forwarded to the workers", nullable=True),
        "pipeline": S.Field(
            "map",
            "CASA pipeline settings kept as they are (tier0futures, autostart)",
            nullable=True,
        ),
        "profiles": S.Field("named-records", children=PROFILE_KEYS, extra_keys=_profile_extra_keys),
    },
)

CASA_DASK = S.Field(
    "record",
    children={
        "clustertype": S.Field("enum", values=("local", "slurm", "htcondor"), nullable=True),
        "n_workers": S.Field("int", minimum=0, nullable=True),
        "host": S.Field("str", nullable=True),
        "dashboard_address": S.Field("str", nullable=True),
        "tier0futures": S.Field("bool", nullable=True),
        "autostart": S.Field("bool", nullable=True),
        "distributed": S.Field("map", nullable=True),
        "jobqueue": S.Field(
            "record",
            nullable=True,
            children={
                "slurm": S.Field("map", nullable=True),
                "htcondor": S.Field("map", nullable=True),
            },
        ),
    },
)

SINGLE_KEYS = ("cluster_class", "cluster_kwargs", "adapt_kwargs")
TOP_KEYS = ("pipecluster", "pipeconfig", "casaconfig", *SINGLE_KEYS, dask_labextension.ROOT)
CASA_PROFILES = ("local", "slurm", "htcondor")
#: Keywords of Dask cluster classes (dask-jobqueue's above all) that older set-ups wrote at
#: the top of a file and passed as ``SLURMCluster(**config)``: recognised to explain the fix.
BARE_CLUSTER_KEYWORDS = frozenset(
    {
        "account", "cores", "death_timeout", "disk", "env_extra", "extra", "header_skip",
        "interface", "job_cpu", "job_directives_skip", "job_extra", "job_extra_directives",
        "job_mem", "job_script_prologue", "local_directory", "log_directory", "memory",
        "memory_limit", "n_workers", "name", "nanny", "processes", "project", "protocol",
        "python", "queue", "resource_spec", "scheduler_options", "shebang", "silence_logs",
        "threads_per_worker", "walltime", "worker_extra_args",
    }
)  # fmt: skip
#: dask-jobqueue configuration keys whose cluster keyword has another name
JOBQUEUE_CONFIG_KEYS = {"name": "job_name"}
#: Repeated keys listed one by one in warnings (the rest are counted)
DUPLICATE_WARNINGS = 10


class Normalized:
    """A file translated to the native layout, with origins per native key path."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.tree: dict[str, Any] = {}
        self.origin: dict[KeyPath, str] = {}
        self.formats: list[str] = []
        #: things the user should see that are not errors (``file:line: text``)
        self.warnings: list[str] = []

    def put(self, path: KeyPath, value: Any, where: str, *, children: bool = True) -> None:
        """Set ``path`` to ``value``, from ``where``; ``children=False`` when the caller
        records the origin of every key below it itself."""
        node = self.tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
        self.origin[path] = where
        if children:
            _record_children(self.origin, path, value, where)

    def put_sourced(
        self, path: KeyPath, value: Any, doc: SourcedYAML, source_path: KeyPath
    ) -> None:
        """Set ``path`` to ``value`` read at ``source_path`` of ``doc``: every key below it
        keeps the line it was written on (not its parent mapping's)."""
        self.put(path, value, doc.where(source_path), children=False)
        cut = len(path)
        for sub in _all_paths(value, path):
            self.origin[sub] = doc.where((*source_path, *sub[cut:]))


def _record_children(origin: dict, path: KeyPath, value: Any, where: str) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            origin.setdefault((*path, k), where)
            _record_children(origin, (*path, k), v, where)


def normalize(
    doc: SourcedYAML, *, single_profile: str | None = None, dask_config: bool = False
) -> Normalized:
    """Recognise the format(s) of one file and translate it to the native layout.

    ``dask_config``: the file is one of Dask's own configuration files, where only
    ``labextension:`` is ours (Dask itself reads the rest).
    """
    out = Normalized(doc.filename)
    data = doc.data
    if data is None:
        return out  # an empty file is allowed: it sets nothing
    if not isinstance(data, dict):
        raise ConfigError(
            f"a config file must be a mapping at the top, got {type(data).__name__}",
            source=doc.filename,
            accepted=TOP_KEYS,
        )
    if dask_config:
        _repeated_keys(doc, out, within=(dask_labextension.ROOT,))
        _labextension(doc, out)
        return out
    unknown = [key for key in data if key not in TOP_KEYS]
    if unknown:
        _refuse_unknown_top_keys(doc, unknown)
    _repeated_keys(doc, out)
    if "pipecluster" in data:
        _native(doc, out)
    if "pipeconfig" in data or "casaconfig" in data:
        _casa(doc, out)
    if any(k in data for k in SINGLE_KEYS):
        _single(doc, out, single_profile)
    if dask_labextension.ROOT in data:
        _labextension(doc, out)
    return out


def _refuse_unknown_top_keys(doc: SourcedYAML, unknown: list[str]) -> None:
    key = unknown[0]
    bare = [k for k in doc.data if k in BARE_CLUSTER_KEYWORDS]
    if not any(k in TOP_KEYS for k in doc.data) and len(bare) * 2 >= len(doc.data):
        shown = ", ".join(bare[:4]) + (", ..." if len(bare) > 4 else "")
        raise ConfigError(
            f"this file holds bare cluster keywords ({shown}) at the top, as older set-ups "
            "passed them to SLURMCluster(**config); pipejupyter needs them under "
            "cluster_kwargs: with the class named: indent them under a line "
            "'cluster_kwargs:' and add 'cluster_class: dask_jobqueue.SLURMCluster' "
            "(or the class you use)",
            source=doc.where((key,)),
            key=key,
            accepted=TOP_KEYS,
        )
    raise ConfigError(
        f"unknown top-level key {key!r}",
        source=doc.where((key,)),
        key=key,
        accepted=TOP_KEYS,
        suggestion=did_you_mean(key, TOP_KEYS),
    )


def _repeated_keys(doc: SourcedYAML, out: Normalized, within: KeyPath = ()) -> None:
    """Native: a repeated key is an error. Elsewhere: PyYAML's reading, with a warning."""
    shown = 0
    for dup in doc.duplicates:
        if dup.path[: len(within)] != within:
            continue
        if dup.path[0] == "pipecluster":
            raise ConfigError(
                f"key {dup.path[-1]!r} is written twice in the same mapping "
                f"({_lines(dup)}); the native format (pipecluster:) takes each key once: "
                "delete one of them",
                source=f"{doc.filename}:{dup.line}",
                key=".".join(dup.path[1:]) or "pipecluster",
            )
        if shown < DUPLICATE_WARNINGS:
            out.warnings.append(_repeated_key_warning(doc.filename, dup))
        shown += 1
    more = doc.duplicate_count - len(doc.duplicates) + max(shown - DUPLICATE_WARNINGS, 0)
    if more > 0 and not within:
        out.warnings.append(f"{doc.filename}: {more} more keys are written twice")


def _repeated_key_warning(filename: str, dup: Duplicate) -> str:
    key = ".".join(dup.path)
    text = (
        f"{filename}:{dup.line}: {key} is written twice ({_lines(dup)}); "
        "read as PyYAML reads it, the last one counts"
    )
    if dup.same:
        return text + " (both say the same)"
    if dup.first_line == dup.line:
        return text + ": the values differ, the later one wins"
    return text + f": the values differ, line {dup.line}'s wins over line {dup.first_line}'s"


def _lines(dup: Duplicate) -> str:
    if dup.first_line == dup.line:
        return f"both on line {dup.line}"
    return f"lines {dup.first_line} and {dup.line}"


def _labextension(doc: SourcedYAML, out: Normalized) -> None:
    out.formats.append("dask-labextension")

    def put(path: KeyPath, value: Any, source_path: KeyPath) -> None:
        out.put_sourced(path, value, doc, source_path)

    dask_labextension.translate(doc, put, out.warnings.append)
    profile = ("profiles", dask_labextension.PROFILE)
    if dask_labextension.PROFILE in out.tree.get("profiles", {}):
        # `profiles` lists where each profile is defined: where the factory is.
        out.origin[profile] = doc.where((dask_labextension.ROOT, "factory"))


def _native(doc: SourcedYAML, out: Normalized) -> None:
    body = doc.data["pipecluster"]
    if body is None:
        return

    # Native paths are written under ``pipecluster``; strip that prefix for the origin map.
    def where(path: KeyPath) -> str:
        return doc.where(("pipecluster", *path))

    S.validate(body, NATIVE, (), lambda p: where(p))
    out.formats.append("native")
    lines, prefix = doc.lines, f"{doc.filename}:"
    for key, value in body.items():
        out.put((key,), value, where((key,)), children=False)
        for sub in _all_paths(value, (key,)):
            # Every mapping key has its own line: no need to search the prefixes.
            line = lines.get(("pipecluster", *sub))
            out.origin[sub] = f"{prefix}{line}" if line is not None else where(sub)


def _all_paths(value: Any, prefix: KeyPath):
    if isinstance(value, dict):
        for k, v in value.items():
            yield (*prefix, k)
            yield from _all_paths(v, (*prefix, k))


def _casa(doc: SourcedYAML, out: Normalized) -> None:
    data = doc.data
    out.formats.append("casa-pipeline")
    casaconfig = data.get("casaconfig")
    if casaconfig is not None:
        S.validate(casaconfig, S.Field("map"), ("casaconfig",), doc.where)
        out.put_sourced(("casaconfig",), casaconfig, doc, ("casaconfig",))
    pipeconfig = data.get("pipeconfig")
    if pipeconfig is None:
        return
    if not isinstance(pipeconfig, dict):
        raise ConfigError("expected a mapping", source=doc.where(("pipeconfig",)), key="pipeconfig")
    # Other pipeconfig sections belong to the CASA pipeline itself; only dask is ours.
    dask = pipeconfig.get("dask")
    if dask is None:
        return
    S.validate(dask, CASA_DASK, ("pipeconfig", "dask"), doc.where)

    def w(*key: str) -> str:
        return doc.where(("pipeconfig", "dask", *key))

    # ``null`` means "not set here": skip it so lower files keep their value.
    if dask.get("clustertype") is not None:
        out.put(("default",), dask["clustertype"], w("clustertype"))
    for profile in CASA_PROFILES:
        if dask.get("n_workers") is not None:
            out.put(("profiles", profile, "workers"), dask["n_workers"], w("n_workers"))
        for key in ("host", "dashboard_address"):
            if dask.get(key) is not None:
                out.put(("profiles", profile, "scheduler", key), dask[key], w(key))
    if dask.get("distributed"):
        out.put(("dask_config",), {}, w("distributed"), children=False)
        out.put_sourced(
            ("dask_config", "distributed"),
            _drop_nulls(dask["distributed"]),
            doc,
            ("pipeconfig", "dask", "distributed"),
        )
    for key in ("tier0futures", "autostart"):
        if dask.get(key) is not None:
            out.put(("pipeline", key), dask[key], w(key))
    jobqueue = dask.get("jobqueue") or {}
    for scheduler in ("slurm", "htcondor"):
        kwargs = jobqueue.get(scheduler)
        if not kwargs:
            continue
        for key, value in kwargs.items():
            if value is None:
                continue
            # These sections mirror dask-jobqueue's configuration (jobqueue.slurm.*), where
            # ``name`` is the job's name; as a cluster keyword ``name`` would name the cluster.
            target = JOBQUEUE_CONFIG_KEYS.get(key, key)
            out.put_sourced(
                ("profiles", scheduler, "cluster_kwargs", target),
                value,
                doc,
                ("pipeconfig", "dask", "jobqueue", scheduler, key),
            )


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    return value


def _single(doc: SourcedYAML, out: Normalized, profile_name: str | None) -> None:
    data = doc.data
    out.formats.append("single-cluster")
    name = profile_name or Path(doc.filename).stem.replace(" ", "_") or "cluster"
    if "cluster_class" not in data:
        raise ConfigError(
            "a single-cluster file needs cluster_class (for example dask_jobqueue.SLURMCluster)",
            source=doc.where(
                ("cluster_kwargs",) if "cluster_kwargs" in data else ("adapt_kwargs",)
            ),
            key="cluster_class",
        )
    S.validate(data["cluster_class"], PROFILE_KEYS["cluster_class"], ("cluster_class",), doc.where)
    S.validate(
        data.get("cluster_kwargs"), PROFILE_KEYS["cluster_kwargs"], ("cluster_kwargs",), doc.where
    )
    S.validate(data.get("adapt_kwargs"), ADAPT, ("adapt_kwargs",), doc.where)
    out.put(
        ("profiles", name, "cluster_class"), data["cluster_class"], doc.where(("cluster_class",))
    )
    for key in ("cluster_kwargs", "adapt_kwargs"):
        if data.get(key) is not None:
            out.put(("profiles", name, key), data[key], doc.where((key,)))
            for sub in _all_paths(data[key], ()):
                out.origin[("profiles", name, key, *sub)] = doc.where((key, *sub))
    out.put(("default",), name, doc.where(("cluster_class",)))
