"""Reading configuration: our loader next to reading the same YAML file raw.

    PYTHONPATH=. .venv/bin/python benchmarks/config_load.py

Rows (median of repeated runs, seconds; ratio = ours / baseline):
  load N profiles      load_config([file]): parse with provenance, normalize, merge over the
                       package defaults, validate; baseline yaml.safe_load(file) (PyYAML's
                       pure-Python loader, what most tools call) and, for the largest file,
                       yaml.load(file, CSafeLoader) (libyaml: the parsing floor)
  GET /profiles        server.service.profile_list: the first poll (load + resolve every
                       profile) and a later poll with no file changed (cached chain)
  overrides            load_config(overrides={100,000 keys}); baseline: building the same
                       nested dict in plain Python
  alias bomb           refusing a 342-byte billion-laughs file; baseline yaml.safe_load of it
                       (which shares the aliased lists instead of copying them)

Runs in a temporary HOME and working directory, so no config of the machine is read.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml

from pipejupyter.config.cache import load_config_cached
from pipejupyter.config.loader import load_config
from pipejupyter.errors import ConfigError
from pipejupyter.server.service import profile_list

SIZES = (1_000, 10_000)
OVERRIDE_KEYS = 100_000
BOMB = "".join(
    [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n',
        *(
            f"{name}: &{name} [{','.join([f'*{prev}'] * 9)}]\n"
            for prev, name in zip("abcdefgh", "bcdefghi", strict=True)
        ),
    ]
)


def profiles_yaml(count: int) -> str:
    lines = ["pipecluster:", "  profiles:"]
    for i in range(count):
        lines += [
            f"    p{i}:",
            "      backend: local",
            f"      workers: {i % 8}",
            f"      description: profile number {i}",
            "      cluster_kwargs:",
            "        memory_limit: 1GiB",
            "        threads_per_worker: 1",
        ]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def isolated() -> Iterator[Path]:
    """A temporary HOME and working directory, restored afterwards."""
    old_cwd, old_env = os.getcwd(), dict(os.environ)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        (base / "home").mkdir()
        (base / "work").mkdir()
        os.environ["HOME"] = str(base / "home")
        os.environ.pop("PIPEJUPYTER_CONFIG", None)
        os.chdir(base / "work")
        try:
            yield base
        finally:
            os.chdir(old_cwd)
            os.environ.clear()
            os.environ.update(old_env)


def median_time(action: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        action()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def row(name: str, ours: float, baseline: float) -> dict:
    return {"name": name, "ours": ours, "baseline": baseline, "ratio": ours / baseline, "unit": "s"}


def _refuse(path: Path) -> None:
    try:
        load_config(path)
    except ConfigError:
        return
    raise AssertionError("the alias bomb was accepted")


def bench() -> list[dict]:
    rows = []
    with isolated() as base:
        for count in SIZES:
            path = base / f"profiles-{count}.yaml"
            path.write_text(profiles_yaml(count))
            repeat = 5 if count <= 1_000 else 3
            ours = median_time(lambda p=path: load_config(p), repeat)
            raw = median_time(lambda p=path: yaml.safe_load(p.read_text()), repeat)
            rows.append(row(f"load {count:,} profiles vs yaml.safe_load", ours, raw))
        libyaml = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        floor = median_time(lambda p=path: yaml.load(p.read_text(), Loader=libyaml), 3)
        rows.append(row(f"load {SIZES[-1]:,} profiles vs yaml.load(CSafeLoader)", ours, floor))

        path = base / f"profiles-{SIZES[0]}.yaml"
        raw = median_time(lambda: yaml.safe_load(path.read_text()), 5)
        load_config_cached.cache_clear()
        t = time.perf_counter()
        profile_list([path])
        first = time.perf_counter() - t
        rows.append(row(f"GET /profiles, {SIZES[0]:,} profiles, first poll", first, raw))
        again = median_time(lambda: profile_list([path]), 3)
        rows.append(row(f"GET /profiles, {SIZES[0]:,} profiles, unchanged", again, raw))

        overrides = {f"profiles.local.env.set.VAR{i}": str(i) for i in range(OVERRIDE_KEYS)}

        def plain_dict() -> dict:
            tree: dict = {}
            for key, value in overrides.items():
                node = tree
                *parents, last = key.split(".")
                for part in parents:
                    node = node.setdefault(part, {})
                node[last] = value
            return tree

        ours = median_time(lambda: load_config(overrides=overrides), 3)
        floor = median_time(plain_dict, 3)
        rows.append(row(f"{OVERRIDE_KEYS:,} override keys vs a plain nested dict", ours, floor))

        bomb = base / "bomb.yaml"
        bomb.write_text(BOMB)
        ours = median_time(lambda: _refuse(bomb), 3)
        raw = median_time(lambda: yaml.safe_load(BOMB), 3)
        rows.append(row("refuse a billion-laughs file vs yaml.safe_load (shares)", ours, raw))
    return rows


if __name__ == "__main__":
    for r in bench():
        print(
            f"{r['name']:<62} ours {r['ours'] * 1000:9.1f} ms  baseline "
            f"{r['baseline'] * 1000:9.1f} ms  ratio {r['ratio']:6.2f}"
        )
