"""Find, merge and validate configuration files; resolve a profile to a ClusterSpec.

Search order, lowest priority first: the package defaults (config.yaml next to this file),
``~/.casa/config.yaml``, ``./config.yaml``, the files in ``PIPEJUPYTER_CONFIG``
(os.pathsep-separated), explicit files, then ``key.path=value`` overrides. Mappings merge
deeply, anything else replaces. Every resolved value remembers where it came from.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipejupyter.backend_registry import backend_name_for_profile, get_backend
from pipejupyter.config import schema as S
from pipejupyter.config.formats import NATIVE, PROFILE_KEYS, normalize
from pipejupyter.config.security import check_security
from pipejupyter.config.yaml_source import KeyPath, load_yaml_file
from pipejupyter.errors import ConfigError, did_you_mean
from pipejupyter.models import ClusterSpec

DEFAULTS_FILE = Path(__file__).with_name("defaults.yaml")
OVERRIDE = "override"
DEFAULT = "default"
ARGUMENT = "argument"
NATIVE_ROOT_KEYS = tuple(NATIVE.children)


@dataclass(frozen=True)
class ConfigFile:
    path: str
    formats: tuple[str, ...]
    role: str  # default | casa | cwd | env | explicit


def search_path(explicit: Iterable[str | os.PathLike] = ()) -> list[tuple[Path, str]]:
    """Files that would be read, lowest priority first, with the reason each is read.

    Implicit locations are skipped when absent; explicit ones must exist.
    """
    found: list[tuple[Path, str]] = [(DEFAULTS_FILE, "default")]
    for path, role in (
        (Path.home() / ".casa" / "config.yaml", "casa"),
        (Path.cwd() / "config.yaml", "cwd"),
    ):
        if path.is_file():
            found.append((path, role))
    for item in os.environ.get("PIPEJUPYTER_CONFIG", "").split(os.pathsep):
        if item.strip():
            found.append((Path(item.strip()).expanduser(), "env"))
    for item in explicit:
        found.append((Path(item).expanduser(), "explicit"))
    # The same file reached twice (./config.yaml also named explicitly) is read once, late.
    seen: dict[Path, int] = {}
    for index, (path, _) in enumerate(found):
        seen[path.resolve() if path.exists() else path] = index
    return [item for index, item in enumerate(found) if index in seen.values()]


class Config:
    """The merged configuration tree (native layout) with provenance."""

    def __init__(self) -> None:
        self.tree: dict[str, Any] = {}
        self.origin: dict[KeyPath, str] = {}
        self.files: list[ConfigFile] = []

    # -- building -------------------------------------------------------------
    def merge(
        self, tree: Mapping[str, Any], origin: Mapping[KeyPath, str], label: str | None = None
    ) -> None:
        _deep_merge(self.tree, tree, (), self.origin, origin, label)

    def override(self, assignment: str, profile: str | None = None) -> None:
        """Apply ``key.path=value`` (value read as YAML); see :meth:`set_value`."""
        if "=" not in assignment:
            raise ConfigError(
                f"override {assignment!r} has no '='",
                source=OVERRIDE,
                accepted=(
                    "KEY.PATH=VALUE, e.g. cluster_kwargs.memory=4GiB or profiles.slurm.workers=2"
                ),
            )
        key, _, raw = assignment.partition("=")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw  # not YAML: keep the text as written
        if isinstance(value, bool) and raw.strip().lower() not in ("true", "false"):
            value = raw.strip()  # YAML 1.1 reads on/off/yes/no as booleans; keep the word
        self.set_value(key, value, profile)

    def set_value(self, key: str, value: Any, profile: str | None = None) -> None:
        """Set one key; keys outside the native root are relative to ``profile``."""
        parts = [p for p in str(key).strip().split(".") if p]
        if parts and parts[0] == "pipecluster":
            parts = parts[1:]
        if not parts:
            raise ConfigError("override has an empty key", source=OVERRIDE, key=str(key))
        if parts[0] not in NATIVE_ROOT_KEYS:
            parts = ["profiles", profile or self.default_profile, *parts]
        tree: dict[str, Any] = {}
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
        origin: dict[KeyPath, str] = {tuple(parts): OVERRIDE}
        _mark_all(origin, tuple(parts), value, OVERRIDE)
        self.merge(tree, origin)

    def validate(self) -> None:
        S.validate(self.tree, NATIVE, (), self.where)

    # -- reading --------------------------------------------------------------
    def where(self, path: Sequence[str]) -> str:
        for cut in range(len(path), -1, -1):
            found = self.origin.get(tuple(path[:cut]))
            if found:
                return found
        return DEFAULT

    @property
    def profiles(self) -> dict[str, dict[str, Any]]:
        return self.tree.get("profiles") or {}

    @property
    def profile_names(self) -> list[str]:
        return list(self.profiles)

    @property
    def default_profile(self) -> str:
        return self.tree.get("default") or "local"

    def profile(self, name: str | None = None) -> dict[str, Any]:
        name = name or self.default_profile
        if name not in self.profiles:
            source = self.where(("default",)) if name == self.default_profile else None
            raise ConfigError(
                f"unknown profile {name!r}",
                source=source,
                key="default" if source else None,
                accepted=self.profile_names,
                suggestion=did_you_mean(name, self.profile_names),
            )
        return self.profiles[name]

    def resolve(
        self,
        profile: str | None = None,
        *,
        workers: int | None = None,
        adapt: tuple[int, int] | Mapping[str, Any] | None = None,
    ) -> ClusterSpec:
        """Turn one profile into a ClusterSpec, validated by its backend."""

        name = profile or self.default_profile
        body = copy.deepcopy(self.profile(name))
        base = ("profiles", name)
        backend_name = backend_name_for_profile(body, where=self.where(base), key=".".join(base))
        backend = get_backend(backend_name, where=self.where((*base, "backend")))
        spec = ClusterSpec(
            profile=name,
            backend=backend.name,
            cluster_class=body.get("cluster_class"),
            cluster_kwargs=dict(body.get("cluster_kwargs") or {}),
            adapt_kwargs=dict(body["adapt_kwargs"]) if body.get("adapt_kwargs") else None,
            workers=body.get("workers"),
            env=_merge_env(self.tree.get("env") or {}, body.get("env") or {}),
            mpi={"sanitize": "auto", **(self.tree.get("mpi") or {}), **(body.get("mpi") or {})},
            scheduler=dict(body.get("scheduler") or {}),
            dask_config=_merged(self.tree.get("dask_config"), body.get("dask_config")),
            casaconfig=_merged(self.tree.get("casaconfig"), body.get("casaconfig")),
            security=body.get("security"),
            wait_timeout=body.get("wait_timeout"),
            description=body.get("description") or "",
            options={k: v for k, v in body.items() if k not in PROFILE_KEYS},
            origin=self._spec_origin(name),
        )
        _apply_sizing_arguments(spec, workers, adapt)
        backend.finalize(spec)

        check_security(spec, backend)
        return spec

    def _spec_origin(self, name: str) -> dict[str, str]:
        origin: dict[str, str] = {}
        for path, source in self.origin.items():
            if path and path[0] in ("env", "mpi", "dask_config", "casaconfig"):
                origin.setdefault(".".join(path), source)
        for path, source in self.origin.items():
            if path[:2] == ("profiles", name) and len(path) > 2:
                origin[".".join(path[2:])] = source
        return origin

    def describe(self, name: str | None = None, *, origin: bool = False) -> dict[str, Any]:
        """One profile as the CLI and magics print it (raw, before backend translation)."""
        name = name or self.default_profile
        body = copy.deepcopy(self.profile(name))
        out: dict[str, Any] = {"profile": name, **body}
        if origin:
            out["origin"] = {
                ".".join(p[2:]): s
                for p, s in self.origin.items()
                if p[:2] == ("profiles", name) and len(p) > 2
            }
        return out


def _apply_sizing_arguments(spec: ClusterSpec, workers, adapt) -> None:
    if workers is not None and adapt is not None:
        raise ConfigError("give either a worker count or an adapt range, not both", source=ARGUMENT)
    if workers is not None:
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
            raise ConfigError(
                f"workers must be an integer >= 0, got {workers!r}", source=ARGUMENT, key="workers"
            )
        spec.workers = workers
        spec.adapt_kwargs = None  # an explicit count wins over configured adaptivity
        spec.origin["workers"] = ARGUMENT
    if adapt is not None:
        if isinstance(adapt, Mapping):
            minimum, maximum = adapt.get("minimum"), adapt.get("maximum")
        else:
            try:
                minimum, maximum = adapt
            except (TypeError, ValueError):
                raise ConfigError(
                    f"adapt must be (minimum, maximum), got {adapt!r}", source=ARGUMENT
                ) from None
        for label, value in (("minimum", minimum), ("maximum", maximum)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(
                    f"adapt {label} must be an integer >= 0, got {value!r}",
                    source=ARGUMENT,
                    key=f"adapt.{label}",
                )
        if minimum > maximum:
            raise ConfigError(
                f"adapt minimum {minimum} is above maximum {maximum}", source=ARGUMENT, key="adapt"
            )
        spec.adapt_kwargs = {"minimum": minimum, "maximum": maximum}
        spec.origin["adapt_kwargs"] = ARGUMENT


def _merge_env(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    passed = list(base.get("pass") or [])
    passed += [p for p in extra.get("pass") or [] if p not in passed]
    redact = list(base.get("redact") or [])
    redact += [p for p in extra.get("redact") or [] if p not in redact]
    values = {**(base.get("set") or {}), **(extra.get("set") or {})}
    return {
        "pass": passed,
        "set": {k: "" if v is None else str(v) for k, v in values.items()},
        "redact": redact,
    }


def _merged(base: Any, extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = copy.deepcopy(base) if isinstance(base, dict) else {}
    _deep_merge(out, extra or {}, (), {}, {}, None)
    return out


def _mark_all(origin: dict, path: KeyPath, value: Any, source: str) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            origin[(*path, k)] = source
            _mark_all(origin, (*path, k), v, source)


def _deep_merge(
    dst: dict, src: Mapping, path: KeyPath, dst_origin: dict, src_origin: Mapping, label
) -> None:
    for key, value in src.items():
        here = (*path, key)
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            if here in src_origin:
                dst_origin[here] = src_origin[here]
            _deep_merge(dst[key], value, here, dst_origin, src_origin, label)
            continue
        # Replacing: forget where the old subtree came from.
        for stale in [p for p in dst_origin if p[: len(here)] == here]:
            del dst_origin[stale]
        dst[key] = copy.deepcopy(value)
        for p, s in src_origin.items():
            if p[: len(here)] == here:
                dst_origin[p] = label or s
        if here not in dst_origin and (label or src_origin):
            dst_origin[here] = label or src_origin.get(here, DEFAULT)


def load_config(
    files: Iterable[str | os.PathLike] | str | os.PathLike | None = None,
    overrides: Iterable[str] | Mapping[str, Any] | None = None,
    *,
    profile: str | None = None,
) -> Config:
    """Read the whole chain and validate it. Raises ConfigError on any problem.

    ``files`` are explicit files (``-f``); ``overrides`` are ``key.path=value`` strings
    (or a mapping of key path to value); ``profile`` names the profile that relative
    override keys and single-cluster explicit files apply to.
    """
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    config = Config()
    for path, role in search_path(files or ()):
        doc = load_yaml_file(path)
        single_name = profile if role == "explicit" else None
        normal = normalize(doc, single_profile=single_name)
        label = DEFAULT if role == "default" else None
        config.merge(normal.tree, normal.origin, label)
        config.files.append(ConfigFile(str(path), tuple(normal.formats), role))
    if isinstance(overrides, Mapping):
        for key, value in overrides.items():
            config.set_value(key, value, profile)
    elif overrides:
        for assignment in overrides:
            config.override(assignment, profile)
    config.validate()
    return config
