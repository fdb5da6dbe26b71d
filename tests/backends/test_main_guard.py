"""A script that starts a local cluster without ``if __name__ == "__main__":``.

Dask starts local worker processes with multiprocessing's 'spawn', which runs the script's
module again in each child; raw Dask fails there with "Nanny failed to start". We fail the
same way, but say what is wrong and how to fix it, and leave no process behind.
"""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.common import ROOT, processes_with_env, write

BODY = """
import pipejupyter
handle = pipejupyter.start("local", workers=1, timeout=60)
print("RESULT", handle.client.submit(lambda: 6 * 7).result())
handle.stop()
"""


def _run(script, marker: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PJ_GUARD_TEST": marker}
    return subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=script.parent,
    )


def test_script_without_the_guard_is_told_how_to_fix_it(isolated):
    script = write(isolated / "work" / "noguard.py", BODY)
    done = _run(script, "noguard")
    assert done.returncode == 1, done.stdout
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("pipejupyter.errors.ClusterError: local worker processes failed")
    assert 'Put the code that starts the cluster under `if __name__ == "__main__":`' in last
    assert "RESULT" not in done.stdout
    assert processes_with_env("PJ_GUARD_TEST", "noguard") == []


def test_the_same_script_with_the_guard_runs(isolated):
    guarded = "def main():\n" + "".join(f"    {line}\n" for line in BODY.strip().splitlines())
    script = write(
        isolated / "work" / "guarded.py", guarded + '\n\nif __name__ == "__main__":\n    main()\n'
    )
    done = _run(script, "guarded")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "RESULT 42" in done.stdout
    assert processes_with_env("PJ_GUARD_TEST", "guarded") == []
