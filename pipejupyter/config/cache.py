"""Loaded configuration chains, read again only when one of their files changed.

The Jupyter server lists profiles on every poll of its sidebar; ``load_config_cached``
keeps the validated chain (or its ConfigError) keyed by the state of every file in the
search path, so an unchanged chain is a copy, not a parse.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, NamedTuple

from pipejupyter.config.loader import Config, load_config, search_path
from pipejupyter.config.yaml_source import ALIAS_LIMIT_VARIABLE
from pipejupyter.errors import ConfigError

#: files up to this size are also hashed for the cache key (larger ones: by stat only)
HASHED_CONFIG_BYTES = 1 << 20


class CacheInfo(NamedTuple):
    hits: int
    misses: int
    currsize: int


class ConfigCache:
    """Loaded (and validated) chains, keyed by the state of the files they were read from.

    The Jupyter server lists profiles on every poll of its sidebar; reading and validating
    the whole chain each time is wasted work when no file changed. The key is the explicit
    files plus ``(path, role, device, inode, size, mtime_ns, ctime_ns)`` of every file in
    the search path (a file that is edited, touched, replaced, appears or disappears is read
    again), a hash of each file up to HASHED_CONFIG_BYTES (an edit within one timestamp
    tick) and PIPEJUPYTER_MAX_ALIAS_NODES. A broken chain's ConfigError is kept too. Callers get a
    deep copy, so changing what they got (``resolve_config`` applies overrides in place)
    changes no later answer. Holds the ``size`` most recently used chains.
    """

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._entries: OrderedDict[Any, Config | ConfigError] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0

    def load(self, files: Iterable[str | os.PathLike] | str | os.PathLike | None = None) -> Config:
        if isinstance(files, (str, os.PathLike)):
            files = [files]
        explicit = [os.fspath(f) for f in files or ()]
        key = _chain_state(explicit)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self._misses += 1
            else:
                self._hits += 1
                self._entries.move_to_end(key)
        if entry is None:
            try:
                entry = load_config(explicit)
            except ConfigError as exc:
                entry = exc
            with self._lock:
                self._entries[key] = entry
                while len(self._entries) > self.size:
                    self._entries.popitem(last=False)
        if isinstance(entry, ConfigError):
            raise entry.with_traceback(None)
        return entry.copy()

    def info(self) -> CacheInfo:
        with self._lock:
            return CacheInfo(self._hits, self._misses, len(self._entries))

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def _chain_state(explicit: list[str]) -> tuple:
    state: list[Any] = [tuple(explicit), os.environ.get(ALIAS_LIMIT_VARIABLE)]
    for path, role in search_path(explicit):
        try:
            st = path.stat()
        except OSError:
            state.append((str(path), role, None))
            continue
        digest = None
        if st.st_size <= HASHED_CONFIG_BYTES:
            # Two writes within one timestamp tick can leave size and times alike.
            try:
                import hashlib  # only when a cached chain is checked

                digest = hashlib.blake2b(path.read_bytes(), digest_size=16).digest()
            except OSError:
                pass
        state.append(
            (str(path), role, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            + (digest,)
        )
    return tuple(state)


#: the cache the Jupyter server's profile list reads through
_CONFIG_CACHE = ConfigCache()


def load_config_cached(
    files: Iterable[str | os.PathLike] | str | os.PathLike | None = None,
) -> Config:
    """:func:`load_config` of ``files`` (no overrides), read again only when a file of the
    chain changed; returns a copy the caller may change. ``load_config_cached.cache_info()``
    counts hits and misses (like functools.lru_cache)."""
    return _CONFIG_CACHE.load(files)


load_config_cached.cache_info = _CONFIG_CACHE.info  # type: ignore[attr-defined]
load_config_cached.cache_clear = _CONFIG_CACHE.clear  # type: ignore[attr-defined]
