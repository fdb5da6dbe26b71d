"""Stage inputs, fingerprints, cell bodies and batching plans: the parts without a cluster."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from pipejupyter.stages import inputs
from pipejupyter.stages.batch_planning import BatchPlanner
from pipejupyter.stages.inputs import InputError, Item, resolve_items
from pipejupyter.stages.run import StageError, parse_resources
from pipejupyter.work.cell import CellError, cell_work, used_names
from pipejupyter.work.executor import Entries, run_batch
from pipejupyter.work.fingerprint import digest, token
from pipejupyter.work.kinds import Command, CommandFailed, WorkError, as_work, command
from tests.support.common import PYTHON, ROOT


def test_lists_dicts_and_once():
    assert resolve_items(None) == [Item(inputs.ONCE, None)]
    assert [i.key for i in resolve_items(["a.ms", "b.ms"])] == ["a.ms", "b.ms"]
    # not unique or not scalar: positions are the keys
    assert [i.key for i in resolve_items([1, 1, 2])] == ["0", "1", "2"]
    assert [i.key for i in resolve_items([{"a": 1}, {"a": 2}])] == ["0", "1"]
    assert [(i.key, i.value) for i in resolve_items({"x": 1, 2: "y"})] == [("x", 1), ("2", "y")]
    assert [i.value for i in resolve_items(range(3))] == [0, 1, 2]
    with pytest.raises(InputError, match="cannot iterate over items of type int"):
        resolve_items(5)


def test_globs(tmp_path):
    for name in ("b.ms", "a.ms", "c.txt"):
        (tmp_path / name).mkdir()
    items = resolve_items(str(tmp_path / "*.ms"))
    assert [i.value for i in items] == [str(tmp_path / "a.ms"), str(tmp_path / "b.ms")]
    assert [i.value for i in resolve_items(inputs.glob(tmp_path / "*.txt"))] == [
        str(tmp_path / "c.txt")
    ]
    with pytest.raises(InputError, match=r"no files match .*\*\.uvfits"):
        resolve_items(str(tmp_path / "*.uvfits"))


def test_old_style_mapfile(tmp_path):
    path = tmp_path / "input.map"
    path.write_text(
        "# made by hand\nlocus001 = [/data/a.MS, /data/b.MS]\n\nlocus002 = ['/data/c.MS']\n"
    )
    items = resolve_items(str(path))  # a string naming a mapfile is read as one
    assert [(i.key, i.host) for i in items] == [
        ("/data/a.MS", "locus001"),
        ("/data/b.MS", "locus001"),
        ("/data/c.MS", "locus002"),
    ]
    assert resolve_items(inputs.mapfile(path)) == items


def test_datamap_mapfile_skips_and_errors(tmp_path):
    path = tmp_path / "dm.mapfile"
    path.write_text(
        "[{'host': 'n1', 'file': '/d/a.MS', 'skip': False}, "
        "{'host': 'n2', 'file': '/d/b.MS', 'skip': True}]"
    )
    assert [(i.value, i.host) for i in inputs.read_mapfile(path)] == [("/d/a.MS", "n1")]
    bad = tmp_path / "bad.map"
    bad.write_text("locus001 = [/data/a.MS]\nthis is not a mapfile line\n")
    with pytest.raises(InputError, match=r"bad\.map:2: not a mapfile line"):
        inputs.read_mapfile(bad)
    dup = tmp_path / "dup.map"
    dup.write_text("h1 = [/a]\nh2 = [/a]\n")
    with pytest.raises(InputError, match="listed twice"):
        inputs.read_mapfile(dup)
    broken = tmp_path / "broken.map"
    broken.write_text("[{'host': 'n1', 'file': }]")
    with pytest.raises(InputError, match="not a valid DataMap"):
        inputs.read_mapfile(broken)


def test_write_mapfile_round_trip(tmp_path):
    path = inputs.write_mapfile(tmp_path / "x.map", {"127.0.0.1": ["/a", "/b"], "node2": ["/c"]})
    assert [(i.key, i.host) for i in inputs.read_mapfile(path)] == [
        ("/a", "127.0.0.1"),
        ("/b", "127.0.0.1"),
        ("/c", "node2"),
    ]


def test_tokens_are_stable_and_sensitive():
    def f(x, k=2):
        return x * k

    def g(x, k=3):
        return x * k

    assert token(f) == token(f)
    assert token(f) != token(g)  # defaults differ
    assert digest({"b": 1, "a": [1, 2]}) == digest({"a": [1, 2], "b": 1})
    assert digest(1) != digest("1") != digest(1.0)


def test_token_of_a_notebook_function_survives_a_restart(tmp_path):
    """Functions defined in __main__ (as in a notebook) fingerprint the same in two processes,
    although their pickles differ (they carry the defining file's name)."""
    script = textwrap.dedent(
        """
        import sys
        sys.path.insert(0, sys.argv[1])
        from pipejupyter.work.fingerprint import token
        scale = 3
        src = "def work(x):\\n    return x * scale + 1\\n"
        exec(compile(src, sys.argv[2], "exec"))
        print(token(work))
        """
    )
    outs = [
        subprocess.run(
            [PYTHON, "-c", script, str(ROOT), f"/tmp/ipykernel_{n}/cell.py"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for n in (1111, 2222)
    ]
    assert outs[0] == outs[1]
    assert outs[0].startswith("fn:")


def test_used_names_and_unpicklable_values():
    src = (
        "import numpy as np\nx = threshold + 1\ndef f(a):\n    return a + offset\n"
        "y = x + f(item)\nnp.sum([y])\n"
    )
    assert used_names(src) == ["threshold", "offset", "item"]
    import threading

    namespace = {"threshold": 1, "offset": 2, "lock": threading.Lock(), "item": 99}
    work = cell_work(
        src.replace("import numpy as np\n", "").replace("np.sum([y])", "y"),
        namespace,
        name="s",
        item_var="item",
    )
    assert sorted(work.blobs) == ["offset", "threshold"]
    assert work.run_item(10, "k", True) == 1 + 1 + 10 + 2
    with pytest.raises(CellError, match=r"uses 'lock' .*cannot be sent to the workers"):
        cell_work("lock.acquire()\n", namespace, name="s")
    with pytest.raises(CellError, match="line 1"):
        cell_work("x = (\n", namespace, name="s")


def test_cell_fingerprint_follows_values():
    a = cell_work("threshold * item", {"threshold": 1}, name="s", item_var="item")
    b = cell_work("threshold * item", {"threshold": 1}, name="s", item_var="item")
    c = cell_work("threshold * item", {"threshold": 2}, name="s", item_var="item")
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_batch_runner_keeps_going_after_a_failure():
    def work(x):
        print("item", x)
        if x == 1:
            raise KeyError("one")
        return x * 10

    _, _, outcomes = run_batch(
        as_work(work), Entries([(0, "a", 0), (1, "b", 1), (2, "c", 2)]), _meta()
    )
    assert [o.ok for o in outcomes] == [True, False, True]
    assert "KeyError: 'one'" in outcomes[1].error
    assert "in work" in outcomes[1].error
    assert "run_batch" not in outcomes[1].error  # the user's frames, not ours
    assert outcomes[2].log == "item 2\n"


def _meta():
    from pipejupyter.work.executor import BatchMeta

    return BatchMeta(None, 0, True)


def test_commands(tmp_path):
    script = tmp_path / "node.sh"
    script.write_text(
        '#!/bin/sh\necho "in $PWD: $1 with $MODE"\necho warn >&2\n[ "$1" != bad ] || exit 3\n'
    )
    script.chmod(0o755)
    cmd = command([str(script)], env={"MODE": "fast"}, cwd=tmp_path)
    result = cmd.bind("a.ms", "a").execute()
    assert result.returncode == 0
    assert result.stdout == f"in {tmp_path}: a.ms with fast\n"
    assert result.stderr == "warn\n"
    with pytest.raises(CommandFailed, match="exited with status 3") as info:
        cmd.bind("bad", "bad").execute()
    assert info.value.result.stderr == "warn\n"
    placed = Command(["echo", "--in={item}", "--key={key}"]).bind("x.ms", "k1")
    assert placed.argv == ["echo", "--in=x.ms", "--key=k1"]
    assert command("echo a b").argv == ["echo", "a", "b"]
    assert command(["definitely-not-a-program-xyz"], check=False).execute().returncode == 127
    with pytest.raises(WorkError):
        command([])


def test_bad_requests_are_refused_before_anything_runs():
    with pytest.raises(WorkError, match="cannot run int"):
        as_work(3)
    with pytest.raises(StageError, match="NAME=NUMBER"):
        parse_resources("MEM")
    assert parse_resources(["GPU=1,MEM=4e9"]) == {"GPU": 1, "MEM": 4_000_000_000}


def test_planner_probes_then_packs():
    plan = BatchPlanner("auto", slots=2, target=0.1)
    assert plan.next_size(20_000) == 1
    assert plan.max_in_flight() == 2  # nothing measured yet
    plan.observe(1, 0.001)
    assert plan.next_size(20_000) == 100
    assert plan.max_in_flight() == 4
    assert plan.next_size(50) == 25  # the tail is shared evenly between threads
    slow = BatchPlanner("auto", slots=2, target=0.1)
    slow.observe(1, 5.0)
    assert slow.next_size(1000) == 1
    assert BatchPlanner(False).next_size(10) == 1
    assert BatchPlanner(7).next_size(10) == 7
    with pytest.raises(ValueError):
        BatchPlanner("lots")


def test_python_module_imports_stay_light():
    """Stage modules import neither distributed nor IPython nor ipywidgets at import time."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import pipejupyter.stages.run, pipejupyter.stages.context, pipejupyter.work.casa, "
        "pipejupyter.work.nested_mpi, pipejupyter.stages.inputs;"
        "bad = [m for m in ('distributed', 'IPython', 'ipywidgets', 'casatasks', 'mpi4py') "
        "if m in sys.modules];"
        "print(bad)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(ROOT)], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
