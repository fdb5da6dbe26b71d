"""Hostile and huge config files: bounded memory, one-line errors, linear time, a cached chain.

A billion-laughs file is read by the real CLI in a subprocess whose address space is capped
(``resource.setrlimit(RLIMIT_AS)``), so a regression fails the test instead of the machine.
Scaling is asserted as growth (time for 4x the input / time for the input), never as an
absolute time alone: benchmarks/config_load.py reports the absolute numbers. The last test
puts an alias bomb into a real `jupyter lab`'s ./config.yaml.
"""

from __future__ import annotations

import gc
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipejupyter.config.cache import load_config_cached
from pipejupyter.config.loader import load_config
from pipejupyter.config.yaml_source import MAX_ALIAS_NODES, MAX_DEPTH, load_yaml_text
from pipejupyter.errors import ConfigError
from tests.support.common import line_of, write

pytestmark = pytest.mark.usefixtures("isolated")

GiB = 1 << 30
#: address-space cap of the CLI subprocess; the honest CLI runs well inside it
CLI_CAP = 3 * GiB // 2

#: 9 levels of 9 aliases: 9**9 (387 million) strings once expanded, from 342 bytes
BOMB = "".join(
    [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n',
        *(
            f"{name}: &{name} [{','.join([f'*{prev}'] * 9)}]\n"
            for prev, name in zip("abcdefgh", "bcdefghi", strict=True)
        ),
    ]
)


def _cap_address_space() -> None:
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    limit = CLI_CAP if hard == resource.RLIM_INFINITY else min(CLI_CAP, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _capped_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipejupyter", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        preexec_fn=_cap_address_space,
        timeout=300,
    )


def _profiles_file(path: Path, count: int, *, alias: bool = False) -> Path:
    lines = ["pipecluster:", "  profiles:"]
    for i in range(count):
        lines += [
            f"    p{i}:",
            "      backend: local",
            f"      workers: {i % 8}",
            f"      description: profile number {i}",
        ]
        if alias and i == 0:
            lines.append(
                "      cluster_kwargs: &common {memory_limit: 1GiB, threads_per_worker: 1}"
            )
        elif alias:
            lines.append("      cluster_kwargs: *common")
        else:
            lines += [
                "      cluster_kwargs:",
                "        memory_limit: 1GiB",
                "        threads_per_worker: 1",
            ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _cpu_seconds(action, repeat: int = 3) -> float:
    """The least CPU time of ``repeat`` runs (CPU time: other processes on the machine
    slow the wall clock, not this). The cyclic garbage collector is held off while timing:
    its full passes scan the whole heap at moments that depend on what earlier tests left
    behind, which made a linear load look 7x slower for 4x the input in one CI run."""
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        gc.disable()
        try:
            t0 = time.process_time()
            action()
            best = min(best, time.process_time() - t0)
        finally:
            gc.enable()
    return best


# Linear-time checks feed 8x the input and accept up to 20x the time: linear is ~8x,
# quadratic ~64x, so neither noise nor a small constant term can flip the verdict.
GROWTH = 8
GROWTH_LIMIT = 20


# -- aliases ------------------------------------------------------------------------------


def test_alias_bomb_is_a_clean_error_under_a_memory_cap(isolated):
    work = isolated / "work"
    honest = write(
        work / "honest.yaml",
        "pipecluster:\n  profiles:\n    small:\n      backend: local\n      workers: 2\n",
    )
    control = _capped_cli("profiles", "-f", str(honest), cwd=work)
    assert control.returncode == 0, control.stderr  # the cap leaves room for the CLI itself
    assert "small" in control.stdout

    bomb = write(work / "config.yaml", BOMB)  # ./config.yaml: read by every command
    t0 = time.monotonic()
    result = _capped_cli("profiles", cwd=work)
    elapsed = time.monotonic() - t0
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    match = re.match(rf"pipejupyter profiles: {re.escape(str(bomb))}:(\d+): (.*)", lines[0])
    assert match, lines[0]
    alias_line = bomb.read_text().splitlines()[int(match[1]) - 1]
    assert "*" in alias_line, (match[1], alias_line)  # the line of an alias use
    message = match[2]
    assert "alias" in message and f"{MAX_ALIAS_NODES:,}" in message, message
    assert "PIPEJUPYTER_MAX_ALIAS_NODES" in message, message  # where to raise the limit
    assert elapsed < 60, elapsed


def test_mapping_and_merge_key_bombs_stop_at_the_limit(isolated):
    keys = [f"k{i}" for i in range(9)]
    levels = [
        "pipecluster:",
        "  pipeline:",
        "    a: &a {" + ", ".join(f"{k}: lol" for k in keys) + "}",
    ]
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        if name in "ei":  # merge keys copy too: <<: [*d, *d, ...]
            body = f"<<: [{', '.join([f'*{prev}'] * 9)}], own: *{prev}"
        else:
            body = ", ".join(f"{k}: *{prev}" for k in keys)
        levels.append(f"    {name}: &{name} {{{body}}}")
    path = write(isolated / "work" / "bomb.yaml", "\n".join(levels) + "\n")
    t0 = time.process_time()
    with pytest.raises(ConfigError, match=rf"{path}:\d+: .*more than {MAX_ALIAS_NODES:,} nodes"):
        load_config(path)
    assert time.process_time() - t0 < 10
    # An override value is read like a file: the same bound.
    value = "{a: &a [1,1,1,1,1,1,1,1,1], b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a], "
    value += ", ".join(
        f"{n}: &{n} [{','.join([f'*{p}'] * 9)}]" for p, n in zip("bcdefg", "cdefgh", strict=True)
    )
    with pytest.raises(ConfigError, match=r"override: .*more than [\d,]+ nodes"):
        load_config(overrides=[f"profiles.local.dask_config={value}}}"])


def test_alias_limit_can_be_raised_by_environment(isolated, monkeypatch):
    text = "a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9]\nb: [*a, *a, *a, *a]\n"  # 40 expanded nodes
    assert load_yaml_text(text).data["b"][3] == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    monkeypatch.setenv("PIPEJUPYTER_MAX_ALIAS_NODES", "30")
    with pytest.raises(ConfigError, match=r"<string>:2: .*more than 30 nodes"):
        load_yaml_text(text)
    monkeypatch.setenv("PIPEJUPYTER_MAX_ALIAS_NODES", "many")
    with pytest.raises(ConfigError, match="PIPEJUPYTER_MAX_ALIAS_NODES.*integer"):
        load_yaml_text(text)


@pytest.mark.parametrize(
    ("text", "alias"),
    [
        ("a: &a [*a]\n", "*a]"),
        (
            "pipecluster:\n  profiles:\n    loop: &loop\n      backend: local\n"
            "      cluster_kwargs: *loop\n",
            "cluster_kwargs: *loop",
        ),
        (
            "pipecluster:\n  profiles:\n    p: &p\n      backend: local\n      <<: *p\n",
            "<<: *p",
        ),
        (
            "x: &x {y: [1, {z: *x}]}\n",
            "z: *x",
        ),
    ],
    ids=["sequence", "mapping", "merge-key", "nested"],
)
def test_recursive_alias_is_a_one_line_error(isolated, text, alias):
    path = write(isolated / "work" / "loop.yaml", text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:{line_of(path, alias)}: "), message
    assert "recursive alias" in message, message


def test_recursive_alias_from_the_cli_is_one_line(isolated):
    path = write(isolated / "work" / "loop.yaml", "a: &a [*a]\n")
    result = _capped_cli("profiles", "-f", str(path), cwd=isolated / "work")
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [
        f"pipejupyter profiles: {path}:1: recursive alias *a: the node anchored as &a "
        "contains itself"
    ]


def test_honest_aliases_and_merge_keys_still_work(isolated):
    path = write(
        isolated / "work" / "shared.yaml",
        """
        pipecluster:
          profiles:
            base: &base
              backend: local
              workers: 1
              cluster_kwargs: &kwargs {memory_limit: 1GiB}
            bigger:
              <<: *base
              workers: 4
              description: like base with more workers
            again:
              <<: [*base]
              cluster_kwargs: *kwargs
        """,
    )
    cfg = load_config(path)
    assert cfg.profiles["bigger"] == {
        "backend": "local",
        "workers": 4,
        "cluster_kwargs": {"memory_limit": "1GiB"},
        "description": "like base with more workers",
    }
    assert cfg.profiles["again"]["cluster_kwargs"] == {"memory_limit": "1GiB"}
    # Provenance: an explicit key is where it was written, a merged one where its anchor is.
    assert cfg.where(("profiles", "bigger", "workers")) == f"{path}:{line_of(path, 'workers: 4')}"
    assert cfg.where(("profiles", "bigger", "backend")) == (
        f"{path}:{line_of(path, 'backend: local')}"
    )
    # Copies, not shared objects: changing one profile leaves the other alone.
    cfg.profiles["again"]["cluster_kwargs"]["memory_limit"] = "2GiB"
    assert cfg.profiles["base"]["cluster_kwargs"] == {"memory_limit": "1GiB"}
    # A key written twice by hand beside a merge is recorded (the format decides what it
    # means), and in the native format it is an error.
    doc = load_yaml_text("a: &a {x: 1}\nb: {<<: *a, y: 1, y: 2}\n", "twice.yaml")
    assert doc.data["b"] == {"x": 1, "y": 2}
    assert [(d.path, d.first_line, d.line, d.same) for d in doc.duplicates] == [
        (("b", "y"), 2, 2, False)
    ]
    twice = write(
        isolated / "work" / "twice.yaml",
        "pipecluster:\n  profiles:\n    a: &a {backend: local}\n"
        "    b: {<<: *a, workers: 1, workers: 2}\n",
    )
    with pytest.raises(ConfigError, match=rf"{twice}:4: profiles.b.workers: key 'workers' is"):
        load_config(twice)


def test_deep_nesting_is_a_clean_error_naming_the_line(isolated):
    depth = MAX_DEPTH + 5
    path = write(
        isolated / "work" / "deep.yaml",
        "pipecluster:\n  pipeline:\n    x: " + "[" * depth + "]" * depth + "\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:3: "), message
    assert f"nested more than {MAX_DEPTH} levels deep" in message, message
    for depth in (5_000, 100_000):  # far beyond the recursion limit: no RecursionError
        path.write_text("x: " + "[" * depth + "]" * depth + "\n")
        # ours or libyaml's own bound (1,000 levels): one line with the file and line
        with pytest.raises(ConfigError, match=rf"{path}:1: .*nest(ed more than|ing depth)"):
            load_config(path)
    ok = MAX_DEPTH - 5
    path.write_text("pipecluster:\n  pipeline:\n    x: " + "[" * ok + "]" * ok + "\n")
    assert load_config(path).tree["pipeline"]["x"] is not None


# -- size ---------------------------------------------------------------------------------


def test_many_profiles_load_and_list_in_linear_time(isolated):
    from pipejupyter.server.service import profile_model

    def load_and_list(path: Path) -> None:
        cfg = load_config(path)
        rows = [profile_model(cfg, name) for name in cfg.profile_names]
        assert len(rows) >= 500
        assert all("error" not in row for row in rows), rows[:3]

    small = _profiles_file(isolated / "work" / "small.yaml", 500)
    large = _profiles_file(isolated / "work" / "large.yaml", 500 * GROWTH)
    load_and_list(small)  # warm imports
    t_small = _cpu_seconds(lambda: load_and_list(small))
    t_large = _cpu_seconds(lambda: load_and_list(large), repeat=2)
    assert t_large / t_small < GROWTH_LIMIT, (t_small, t_large)
    cfg = load_config(large)
    assert cfg.where(("profiles", "p3999", "workers")) == (
        f"{large}:{line_of(large, 'p3999:') + 2}"
    )


def test_many_profiles_sharing_an_alias_load_in_linear_time(isolated):
    small = _profiles_file(isolated / "work" / "small.yaml", 500, alias=True)
    large = _profiles_file(isolated / "work" / "large.yaml", 500 * GROWTH, alias=True)
    load_config(small)
    t_small = _cpu_seconds(lambda: load_config(small))
    t_large = _cpu_seconds(lambda: load_config(large), repeat=2)
    assert t_large / t_small < GROWTH_LIMIT, (t_small, t_large)
    cfg = load_config(large)
    assert cfg.profiles["p3999"]["cluster_kwargs"] == {
        "memory_limit": "1GiB",
        "threads_per_worker": 1,
    }


def test_many_override_keys_apply_in_linear_time(isolated):
    def overrides(count: int) -> dict[str, str]:
        return {f"profiles.local.env.set.VAR{i}": str(i) for i in range(count)}

    few, many = overrides(12_500), overrides(12_500 * GROWTH)
    load_config(overrides=few)
    t_few = _cpu_seconds(lambda: load_config(overrides=few), repeat=2)
    t_many = _cpu_seconds(lambda: load_config(overrides=many), repeat=1)
    assert t_many / t_few < GROWTH_LIMIT, (t_few, t_many)
    cfg = load_config(overrides=many)
    assert cfg.profiles["local"]["env"]["set"]["VAR99999"] == "99999"
    assert cfg.where(("profiles", "local", "env", "set", "VAR5")) == "override"
    spec = cfg.resolve("local")
    assert spec.env["set"]["VAR99999"] == "99999"
    assert spec.origin["env.set.VAR99999"] == "override"
    assert spec.origin["cluster_kwargs.threads_per_worker"] == "default"


def test_override_replacing_a_subtree_forgets_its_old_origins(isolated):
    path = write(
        isolated / "work" / "config.yaml",
        """
        pipecluster:
          profiles:
            small:
              backend: local
              cluster_kwargs:
                memory_limit: 1GiB
        """,
    )
    # A mapping merges into the mapping below it; anything else replaces it.
    cfg = load_config(overrides={"profiles.small.cluster_kwargs": {"processes": False}})
    origin = cfg.resolve("small").origin
    assert origin["cluster_kwargs.processes"] == "override"
    assert origin["cluster_kwargs.memory_limit"] == f"{path}:{line_of(path, 'memory_limit')}"
    cfg = load_config(overrides=["profiles.small.cluster_kwargs=null"])
    assert cfg.profiles["small"]["cluster_kwargs"] is None
    origin = cfg.resolve("small").origin
    assert origin["cluster_kwargs"] == "override"
    assert "cluster_kwargs.memory_limit" not in origin
    assert cfg.where(("profiles", "small", "cluster_kwargs", "memory_limit")) == "override"
    assert origin["backend"] == f"{path}:{line_of(path, 'backend: local')}"


# -- the cache the server polls -----------------------------------------------------------


def test_cached_load_reads_again_only_when_a_file_changed(isolated):
    work = isolated / "work"
    explicit = write(
        work / "extra.yaml", "pipecluster:\n  profiles:\n    one:\n      backend: local\n"
    )
    info = load_config_cached.cache_info
    start = info()
    first = load_config_cached([explicit])
    second = load_config_cached([explicit])
    after = info()
    assert (after.misses - start.misses, after.hits - start.hits) == (1, 1)
    assert second.tree == first.tree and second.origin == first.origin
    # Callers get their own copy: changing it changes no later answer.
    assert second is not first and second.tree is not first.tree
    second.profiles["one"]["workers"] = 99
    second.origin.clear()
    third = load_config_cached([explicit])
    assert "workers" not in third.profiles["one"] and third.origin == first.origin

    # Same size, new content, a new mtime: read again.
    explicit.write_text(explicit.read_text().replace("one:", "two:"))
    stat = explicit.stat()
    os.utime(explicit, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert "two" in load_config_cached([explicit]).profiles
    # Rewritten with the same size and mtime (as within one timestamp tick): read again.
    before = explicit.stat()
    explicit.write_text(explicit.read_text().replace("two:", "six:"))
    os.utime(explicit, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert "six" in load_config_cached([explicit]).profiles
    # A file that appears in the search path (./config.yaml) is read too.
    write(work / "config.yaml", "pipecluster:\n  default: two\n")
    assert load_config_cached([explicit]).default_profile == "two"
    assert info().misses - start.misses == 4

    # A broken file: the error is cached as well, and raised again each time.
    explicit.write_text("pipecluster: [\n")
    for _ in range(2):
        with pytest.raises(ConfigError, match=f"{explicit}:2: not valid YAML"):
            load_config_cached([explicit])
    assert info().misses - start.misses == 5


def test_lab_answers_an_alias_bomb_in_config_yaml_with_an_error(tmp_path):
    """A real `jupyter lab` whose ./config.yaml is a bomb: every profiles poll is a 422
    (a config error) naming the file and line, memory stays capped, the server answers on."""
    from tests.support.lab import LabServer

    lab = LabServer(tmp_path / "lab", expose_app=False)
    bomb = write(lab.work / "config.yaml", BOMB)
    with lab:
        size = int(
            re.search(r"VmSize:\s+(\d+)", Path(f"/proc/{lab.proc.pid}/status").read_text())[1]
        )
        # Fail with MemoryError (a test failure) rather than take the machine down.
        hard = resource.prlimit(lab.proc.pid, resource.RLIMIT_AS)[1]
        resource.prlimit(lab.proc.pid, resource.RLIMIT_AS, (size * 1024 + 2 * GiB, hard))
        for _ in range(3):
            t0 = time.monotonic()
            status, body = lab.request("GET", "pipejupyter/profiles", timeout=60)
            assert status == 422, body
            assert body["message"].startswith(f"{bomb}:"), body
            assert body["source"] == f"{bomb}:{line_of(bomb, 'f: &f')}", body
            assert "alias" in body["message"], body
            assert time.monotonic() - t0 < 20
        assert lab.clusters() == []
        bomb.write_text(
            "pipecluster:\n  profiles:\n    fine:\n      backend: local\n      workers: 1\n"
        )
        status, body = lab.request("GET", "pipejupyter/profiles", timeout=60)
        assert status == 200, body
        assert "fine" in [p["name"] for p in body["profiles"]]
        assert lab.proc.poll() is None
