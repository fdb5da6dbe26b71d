"""Backend registry: short names and ``module:Class`` paths to Backend classes.

Built-in backends are listed here so a source checkout works without installation;
third-party backends register under the entry-point group ``pipejupyter.backends``.
Backend modules import their optional dependency only inside methods, so looking a
backend up never imports dask-jobqueue, dask-gateway or dask-kubernetes.
"""

from __future__ import annotations

import importlib
import importlib.util
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any

from pipejupyter.errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from pipejupyter.backends.base import Backend

ENTRY_POINT_GROUP = "pipejupyter.backends"

BUILTIN: dict[str, str] = {
    "local": "pipejupyter.backends.local:LocalBackend",
    "address": "pipejupyter.backends.address:AddressBackend",
    "generic": "pipejupyter.backends.base:ClusterClassBackend",
    "slurm": "pipejupyter.backends.jobqueue.schedulers:SLURMBackend",
    "pbs": "pipejupyter.backends.jobqueue.schedulers:PBSBackend",
    "sge": "pipejupyter.backends.jobqueue.schedulers:SGEBackend",
    "lsf": "pipejupyter.backends.jobqueue.schedulers:LSFBackend",
    "htcondor": "pipejupyter.backends.jobqueue.schedulers:HTCondorBackend",
    "oar": "pipejupyter.backends.jobqueue.schedulers:OARBackend",
    "moab": "pipejupyter.backends.jobqueue.schedulers:MoabBackend",
    "gateway": "pipejupyter.backends.gateway.backend:GatewayBackend",
    "kubernetes": "pipejupyter.backends.kubernetes:KubernetesBackend",
}


@lru_cache(maxsize=1)
def _entry_points() -> dict[str, str]:
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available() -> dict[str, str]:
    """Every backend name we can load, mapped to its ``module:Class``."""
    names = {**BUILTIN, **_entry_points()}
    return {name: target for name, target in names.items() if _loadable(target)}


@cache
def _loadable(target: str) -> bool:
    module = target.partition(":")[0]
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


@cache
def _load(target: str) -> type[Backend]:
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr)


def get_backend(name: str, *, where: str | None = None) -> type[Backend]:
    """Find a backend by short name or ``module:Class``; ConfigError lists the installed ones."""
    target = available().get(name)
    if target is None and ":" in name:
        target = name
    if target is None:
        names = sorted(available())
        raise ConfigError(
            f"unknown backend {name!r}",
            source=where,
            key="backend",
            accepted=names,
            suggestion=did_you_mean(name, names),
        )
    try:
        return _load(target)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"backend {name!r} ({target}) cannot be loaded: {exc}", source=where, key="backend"
        ) from None


def backend_name_for_class(cluster_class: str) -> str:
    """The backend that serves a dotted cluster class; ``generic`` for any other class."""
    short = cluster_class.replace(":", ".")
    for name in available():
        try:
            cls = get_backend(name)
        except ConfigError:
            continue
        if short in getattr(cls, "cluster_classes", ()):
            return name
    return "generic"


def backend_name_for_profile(
    profile: dict[str, Any], *, where: str | None = None, key: str | None = None
) -> str:
    if profile.get("backend"):
        return profile["backend"]
    if profile.get("cluster_class"):
        return backend_name_for_class(profile["cluster_class"])
    raise ConfigError(
        "a profile needs either backend or cluster_class",
        source=where,
        key=key,
        accepted=sorted(available()),
    )


def backend_class_for_profile(profile: Any, *, strict: bool = True) -> type[Backend] | None:
    """Used by validation to learn a backend's extra profile keys; None when unknown."""
    if not isinstance(profile, dict):
        return None
    if not isinstance(profile.get("backend") or "", str) or not isinstance(
        profile.get("cluster_class") or "", str
    ):
        return None  # the type error itself is reported by validation
    try:
        return get_backend(backend_name_for_profile(profile))
    except ConfigError:
        if strict:
            raise
        return None
