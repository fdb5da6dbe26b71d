"""dask-labextension's configuration, read as a profile source (the fourth format).

dask-labextension builds the cluster its **NEW** button starts from the Dask configuration
key ``labextension``, usually in ``~/.config/dask/labextension.yaml``::

    labextension:
      factory: {module: dask_jobqueue, class: SLURMCluster, args: [], kwargs: {cores: 4}}
      default: {workers: 2, adapt: null}     # or adapt: {minimum: 0, maximum: 10}
      initial: []                            # clusters it starts when the lab opens
      env_override: {OMP_NUM_THREADS: "1"}   # analysis facilities: worker environment

We read that file as the profile ``labextension`` (found where Dask finds its own
configuration, see :func:`dask_config_files`), so the cluster a user starts today from
dask-labextension is a pipejupyter profile with environment passthrough, MPI and SLURM
sanitization and cleanup. Every key is used, refused or reported: ``args`` cannot be
passed through a profile (an error says to write them as ``kwargs``), ``initial`` is
dask-labextension's own start-up list (a warning says pipejupyter starts nothing by
itself), and keys we do not know are warnings, not errors, because the ``labextension``
namespace belongs to dask-labextension and may grow.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from pipejupyter.config import schema as S
from pipejupyter.config.yaml_source import KeyPath, SourcedYAML
from pipejupyter.errors import ConfigError

#: the profile a labextension configuration becomes
PROFILE = "labextension"
ROOT = "labextension"
#: what each key of ``labextension`` means to us
KNOWN_KEYS = ("factory", "default", "initial", "env_override")

FACTORY = S.Field(
    "record",
    "the cluster class dask-labextension builds",
    children={
        "module": S.Field("str", "module of the cluster class, e.g. dask_jobqueue"),
        "class": S.Field("str", "the cluster class, e.g. SLURMCluster"),
        "args": S.Field("any", "positional arguments (must be empty: write kwargs)", nullable=True),
        "kwargs": S.Field("map", "keyword arguments of the cluster class", nullable=True),
    },
)
DEFAULT = S.Field(
    "record",
    "size of a new cluster",
    nullable=True,
    children={
        "workers": S.Field("int", "workers to start", minimum=0, nullable=True),
        "adapt": S.Field("map", "adaptive scaling {minimum, maximum}", nullable=True),
    },
)
ENV_OVERRIDE = S.Field("str-map", "variables set on the workers", nullable=True)
_HAS_ROOT = re.compile(rf"^{ROOT}\s*:", re.MULTILINE)


def dask_config_files() -> list[Path]:
    """YAML files in Dask's configuration directories that have a ``labextension`` key.

    The directories are Dask's own (``dask.config.paths``: /etc/dask or DASK_ROOT_CONFIG,
    <prefix>/etc/dask, ~/.config/dask, DASK_CONFIG), lowest priority first, as Dask merges
    them; the files in one directory in name order.
    """
    found: list[Path] = []
    seen: set[Path] = set()
    for directory in _dask_paths():
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        for name in names:
            path = Path(directory) / name
            if path.suffix not in (".yaml", ".yml") or not path.is_file():
                continue
            real = path.resolve()
            if real in seen:
                continue
            seen.add(real)
            try:
                # Most Dask config files are not ours: a cheap look before parsing.
                with open(path, encoding="utf-8", errors="replace") as handle:
                    head = handle.read(1 << 20)
            except OSError:
                continue
            if _HAS_ROOT.search(head):
                found.append(path)
    return found


def _dask_paths() -> list[str]:
    # The same list Dask builds at import (dask/config.py); computed here so that listing
    # profiles does not import Dask.
    import site

    paths = [
        os.getenv("DASK_ROOT_CONFIG", "/etc/dask"),
        os.path.join(sys.prefix, "etc", "dask"),
        *[os.path.join(prefix, "etc", "dask") for prefix in site.PREFIXES],
        os.path.join(os.path.expanduser("~"), ".config", "dask"),
    ]
    if "DASK_CONFIG" in os.environ:
        paths.append(os.environ["DASK_CONFIG"])
    unique: list[str] = []
    for path in paths:
        if path not in unique:
            unique.append(path)
    return unique


def translate(doc: SourcedYAML, put, warn) -> None:
    """Turn ``labextension:`` of ``doc`` into the profile ``labextension``.

    ``put(native_path, value, source_path)`` stores a value with the line of
    ``source_path``; ``warn(text)`` records a visible warning.
    """
    body = doc.data.get(ROOT)
    if body is None:
        return
    if not isinstance(body, dict):
        raise ConfigError(
            f"expected a mapping, got {type(body).__name__}",
            source=doc.where((ROOT,)),
            key=ROOT,
            accepted=KNOWN_KEYS,
        )
    for key in body:
        if key not in KNOWN_KEYS:
            warn(
                f"{doc.where((ROOT, key))}: {ROOT}.{key} is a dask-labextension setting "
                "pipejupyter does not use (it still applies in dask-labextension)"
            )
    if body.get("initial"):
        warn(
            f"{doc.where((ROOT, 'initial'))}: {ROOT}.initial lists clusters dask-labextension "
            "starts when the lab opens; pipejupyter starts no cluster by itself (start the "
            f"profile '{PROFILE}' when you need it)"
        )
    factory = body.get("factory")
    if factory is None:
        return  # default/env_override alone change dask-labextension's own LocalCluster
    S.validate(factory, FACTORY, (ROOT, "factory"), doc.where)
    for key in ("module", "class"):
        if not factory.get(key):
            raise ConfigError(
                f"the factory needs {key}",
                source=doc.where((ROOT, "factory")),
                key=f"{ROOT}.factory.{key}",
                accepted="module: a Python module, class: a cluster class in it",
            )
    if factory.get("args"):
        raise ConfigError(
            "positional args cannot be passed through a pipejupyter profile; write them "
            "as kwargs with their parameter names",
            source=doc.where((ROOT, "factory", "args")),
            key=f"{ROOT}.factory.args",
            accepted="args: [] and the values in kwargs",
        )
    default = body.get("default")
    S.validate(default, DEFAULT, (ROOT, "default"), doc.where)
    S.validate(body.get("env_override"), ENV_OVERRIDE, (ROOT, "env_override"), doc.where)

    profile: KeyPath = ("profiles", PROFILE)
    cluster_class = f"{factory['module']}.{factory['class']}"
    put((*profile, "cluster_class"), cluster_class, (ROOT, "factory", "class"))
    put(
        (*profile, "description"),
        f"dask-labextension's factory {cluster_class}",
        (ROOT, "factory"),
    )
    if factory.get("kwargs"):
        put((*profile, "cluster_kwargs"), factory["kwargs"], (ROOT, "factory", "kwargs"))
    default = default or {}
    if default.get("workers") is not None:
        put((*profile, "workers"), default["workers"], (ROOT, "default", "workers"))
    if default.get("adapt"):
        put((*profile, "adapt_kwargs"), default["adapt"], (ROOT, "default", "adapt"))
    env = body.get("env_override")
    if env:
        values = {name: "" if value is None else str(value) for name, value in env.items()}
        put((*profile, "env", "set"), values, (ROOT, "env_override"))


#: ``--set labextension.<path>`` and where it lands in the profile (prefixes)
OVERRIDE_PATHS: dict[KeyPath, KeyPath] = {
    ("default", "workers"): ("workers",),
    ("default", "adapt"): ("adapt_kwargs",),
    ("factory", "kwargs"): ("cluster_kwargs",),
    ("env_override",): ("env", "set"),
}


def override_path(parts: KeyPath) -> KeyPath | None:
    """The native key path of ``labextension.<parts>`` (None: not one we can set)."""
    for prefix, target in OVERRIDE_PATHS.items():
        if parts[: len(prefix)] == prefix:
            return ("profiles", PROFILE, *target, *parts[len(prefix) :])
    return None


def override_paths_accepted() -> list[str]:
    return [f"{ROOT}.{'.'.join(prefix)}" for prefix in OVERRIDE_PATHS]
