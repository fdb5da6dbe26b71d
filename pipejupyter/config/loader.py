"""Find, merge and validate configuration files; resolve a profile to a ClusterSpec.

Search order, lowest priority first: the package defaults (config.yaml next to this file),
dask-labextension's configuration in Dask's own config directories (files with a
``labextension:`` key, see dask_labextension.py), ``~/.casa/config.yaml``,
``./config.yaml``, the files in ``PIPEJUPYTER_CONFIG`` (os.pathsep-separated), explicit
files, then ``key.path=value`` overrides (native paths, or paths as the CASA pipeline's
and dask-labextension's formats write them). Mappings merge
deeply, anything else replaces. Every resolved value remembers where it came from.
Loading is linear in the size of the files and overrides; config/cache.py reads the chain
again only when one of its files changed (the Jupyter server's profile polls).
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipejupyter.backend_registry import backend_name_for_profile, get_backend
from pipejupyter.config import dask_labextension
from pipejupyter.config import schema as S
from pipejupyter.config.formats import CASA_DASK, NATIVE, PROFILE_KEYS, normalize
from pipejupyter.config.security import check_security
from pipejupyter.config.yaml_source import (
    MAX_DEPTH,
    InvalidYAML,
    KeyPath,
    SourcedYAML,
    load_yaml_file,
    load_yaml_text,
)
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
    role: str  # default | dask | casa | cwd | env | explicit


def search_path(explicit: Iterable[str | os.PathLike] = ()) -> list[tuple[Path, str]]:
    """Files that would be read, lowest priority first, with the reason each is read.

    Implicit locations are skipped when absent; explicit ones must exist.
    """
    found: list[tuple[Path, str]] = [(DEFAULTS_FILE, "default")]
    found += [(path, "dask") for path in dask_labextension.dask_config_files()]
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
        #: what the files do that the user should know but that is no error
        #: (``file:line: text``): repeated keys, settings read but not used
        self.warnings: list[str] = []

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
            # Read like a config file: the same bounds on aliases and nesting.
            value = load_yaml_text(raw, OVERRIDE).data if raw.strip() else ""
        except InvalidYAML:
            value = raw  # not YAML: keep the text as written
        except ConfigError as exc:
            raise ConfigError(exc.problem, source=OVERRIDE, key=key.strip()) from None
        if isinstance(value, bool) and raw.strip().lower() not in ("true", "false"):
            value = raw.strip()  # YAML 1.1 reads on/off/yes/no as booleans; keep the word
        self.set_value(key, value, profile)

    def set_value(self, key: str, value: Any, profile: str | None = None) -> None:
        """Set one key; keys outside the native root are relative to ``profile``.

        Keys may also be written as the CASA pipeline's format writes them
        (``pipeconfig.dask.n_workers``) or dask-labextension's (``labextension.default.workers``).
        """
        parts = [p for p in str(key).strip().split(".") if p]
        if parts and parts[0] == "pipecluster":
            parts = parts[1:]
        if not parts:
            raise ConfigError("override has an empty key", source=OVERRIDE, key=str(key))
        if parts[0] == "pipeconfig":
            self._set_casa_pipeline_value(parts, value, str(key))
            return
        if parts[0] == dask_labextension.ROOT:
            target = dask_labextension.override_path(tuple(parts[1:]))
            if target is None:
                raise ConfigError(
                    "not a dask-labextension key pipejupyter reads",
                    source=OVERRIDE,
                    key=str(key)[:200],
                    accepted=dask_labextension.override_paths_accepted(),
                )
            parts = list(target)
        if parts[0] not in NATIVE_ROOT_KEYS:
            parts = ["profiles", profile or self.default_profile, *parts]
        if _nested_deeper(value, MAX_DEPTH - len(parts)):
            raise ConfigError(
                f"the key and its value nest more than {MAX_DEPTH} levels deep",
                source=OVERRIDE,
                key=str(key)[:200],
                accepted=f"at most {MAX_DEPTH} levels, as in a config file",
            )
        tree: dict[str, Any] = {}
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
        origin: dict[KeyPath, str] = {tuple(parts): OVERRIDE}
        _mark_all(origin, tuple(parts), value, OVERRIDE)
        self.merge(tree, origin)

    def _set_casa_pipeline_value(self, parts: list[str], value: Any, key: str) -> None:
        """``pipeconfig.dask.<key>=value``: translated exactly as the same key in a file."""
        accepted = [f"pipeconfig.dask.{name}" for name in CASA_DASK.children]
        if len(parts) < 3 or parts[1] != "dask":
            raise ConfigError(
                "only pipeconfig.dask is pipejupyter's (the rest of pipeconfig belongs to "
                "the CASA pipeline itself)",
                source=OVERRIDE,
                key=key[:200],
                accepted=accepted,
            )
        if _nested_deeper(value, MAX_DEPTH - len(parts)):
            raise ConfigError(
                f"the key and its value nest more than {MAX_DEPTH} levels deep",
                source=OVERRIDE,
                key=key[:200],
            )
        tree: dict[str, Any] = {}
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
        normal = normalize(SourcedYAML(tree, {}, OVERRIDE))
        self.merge(normal.tree, normal.origin, OVERRIDE)

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
            max_workers=_max_workers(body, self.tree),
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
            warnings=list(self.warnings),
        )
        if body.get("max_workers") is None and self.tree.get("max_workers") is not None:
            spec.origin["max_workers"] = self.where(("max_workers",))
        _apply_sizing_arguments(spec, workers, adapt)
        backend.finalize(spec)

        check_security(spec, backend)
        return spec

    def _spec_origin(self, name: str) -> dict[str, str]:
        # Walk the subtrees the spec uses (not the whole origin map: resolving every
        # profile would be quadratic); origins exist only for paths in the tree.
        origin: dict[str, str] = {}
        for root in ("env", "mpi", "dask_config", "casaconfig"):
            for path in ((root,), *_paths(self.tree.get(root), (root,))):
                source = self.origin.get(path)
                if source is not None:
                    origin[".".join(path)] = source
        origin.update(self._profile_origin(name))
        return origin

    def _profile_origin(self, name: str) -> dict[str, str]:
        base = ("profiles", name)
        return {
            ".".join(path[2:]): self.origin[path]
            for path in _paths(self.profiles.get(name), base)
            if path in self.origin
        }

    def copy(self) -> Config:
        """An independent copy: changing it (tree, origins, files) changes nothing here."""
        other = copy.copy(self)
        other.tree = _copy_tree(self.tree)
        other.origin = dict(self.origin)
        other.files = list(self.files)
        other.warnings = list(self.warnings)
        return other

    def describe(self, name: str | None = None, *, origin: bool = False) -> dict[str, Any]:
        """One profile as the CLI and magics print it (raw, before backend translation)."""
        name = name or self.default_profile
        body = copy.deepcopy(self.profile(name))
        out: dict[str, Any] = {"profile": name, **body}
        if origin:
            out["origin"] = self._profile_origin(name)
        return out


def _max_workers(body: Mapping[str, Any], tree: Mapping[str, Any]) -> int | None:
    """A profile's own max_workers, else the top-level one; None: the backend's default."""
    value = body.get("max_workers")
    return value if value is not None else tree.get("max_workers")


def _apply_sizing_arguments(spec: ClusterSpec, workers, adapt) -> None:
    """Arguments (-n, --adapt, workers=, adapt=) over the profile's sizing; the backend
    checks every count against max_workers when it finalizes the spec."""
    if workers is not None and adapt is not None:
        raise ConfigError("give either a worker count or an adapt range, not both", source=ARGUMENT)
    if workers is not None:
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
            raise ConfigError(
                f"workers must be an integer >= 0, got {_shown(workers)}",
                source=ARGUMENT,
                key="workers",
            )
        spec.workers = workers
        spec.adapt_kwargs = None  # an explicit count wins over configured adaptivity
        _forget_origin(spec, "adapt_kwargs")
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
                    f"adapt {label} must be an integer >= 0, got {_shown(value)}",
                    source=ARGUMENT,
                    key=f"adapt.{label}",
                )
        if minimum > maximum:
            raise ConfigError(
                f"adapt minimum {_shown(minimum)} is above maximum {_shown(maximum)}",
                source=ARGUMENT,
                key="adapt",
            )
        spec.adapt_kwargs = {"minimum": minimum, "maximum": maximum}
        _forget_origin(spec, "adapt_kwargs")
        spec.origin["adapt_kwargs"] = ARGUMENT


def _forget_origin(spec: ClusterSpec, key: str) -> None:
    """Drop the origins of ``key`` and below: an argument replaced what the files said."""
    for stale in [k for k in spec.origin if k == key or k.startswith(f"{key}.")]:
        del spec.origin[stale]


def _shown(value: Any) -> str:
    """A value for an error message: a huge int (str() refuses > 4300 digits) by its size."""
    if isinstance(value, int) and not -(10**30) < value < 10**30:
        return f"a number with about {int(abs(value).bit_length() * math.log10(2)) + 1} digits"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


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


def _copy_tree(value: Any) -> Any:
    """A deep copy of configuration data: dicts, lists and scalars directly (several times
    faster than copy.deepcopy), anything else through copy.deepcopy."""
    kind = type(value)
    if kind is dict:
        return {key: _copy_tree(item) for key, item in value.items()}
    if kind is list:
        return [_copy_tree(item) for item in value]
    if kind in (str, int, float, bool) or value is None:
        return value
    return copy.deepcopy(value)


def _nested_deeper(value: Any, limit: int) -> bool:
    """Whether mappings and lists in ``value`` nest more than ``limit`` levels."""
    if limit < 0:
        return True
    stack = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth >= limit:
                return True
            stack.extend(
                (child, depth + 1) for child in (node.values() if isinstance(node, dict) else node)
            )
    return False


def _mark_all(origin: dict, path: KeyPath, value: Any, source: str) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            origin[(*path, k)] = source
            _mark_all(origin, (*path, k), v, source)


def _paths(value: Any, prefix: KeyPath) -> list[KeyPath]:
    """Every key path below ``prefix`` in ``value`` (mappings only, as origins are kept)."""
    out: list[KeyPath] = []
    if not isinstance(value, dict):
        return out
    # Depth first in written order, without recursion (override values may nest deeply).
    stack = [(prefix, iter(value.items()))]
    while stack:
        path, items = stack[-1]
        for key, child in items:
            here = (*path, key)
            out.append(here)
            if isinstance(child, dict) and child:
                stack.append((here, iter(child.items())))
                break
        else:
            stack.pop()
    return out


def _deep_merge(
    dst: dict, src: Mapping, path: KeyPath, dst_origin: dict, src_origin: Mapping, label
) -> None:
    """Merge ``src`` into ``dst`` (mappings deeply, anything else replaces), origins along.

    An origin map only holds key paths that exist in its tree, so the origins to forget and
    to copy are found by walking the replaced and the new value: the cost is the size of
    ``src`` plus what it replaces, never the size of ``dst_origin`` (that made loading
    10,000 profiles or applying 100,000 overrides quadratic).
    """
    for key, value in src.items():
        here = (*path, key)
        old = dst.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            if here in src_origin:
                dst_origin[here] = src_origin[here]
            _deep_merge(old, value, here, dst_origin, src_origin, label)
            continue
        # Replacing: forget where the old subtree came from.
        dst_origin.pop(here, None)
        for stale in _paths(old, here):
            dst_origin.pop(stale, None)
        dst[key] = _copy_tree(value)
        if src_origin:
            for p in (here, *_paths(value, here)):
                source = src_origin.get(p)
                if source is not None:
                    dst_origin[p] = label or source
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
        normal = normalize(doc, single_profile=single_name, dask_config=role == "dask")
        label = DEFAULT if role == "default" else None
        config.merge(normal.tree, normal.origin, label)
        config.files.append(ConfigFile(str(path), tuple(normal.formats), role))
        config.warnings += normal.warnings
    if isinstance(overrides, Mapping):
        for key, value in overrides.items():
            config.set_value(key, value, profile)
    elif overrides:
        for assignment in overrides:
            config.override(assignment, profile)
    config.validate()
    return config
