"""One MPI rank of ``pipejupyter.mpirun``: ``python -m pipejupyter.work.mpi_child FOLDER``.

Loads ``FOLDER/payload.pkl`` (fn, args, kwargs), calls it, and writes
``FOLDER/rank-<rank>.pkl`` holding (ok, value, traceback text). The rank comes from the
launcher's environment, so this file needs no MPI library itself; ``fn`` may use mpi4py.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

from pipejupyter.environment.mpi import mpi_rank


def main(argv: list[str]) -> int:
    import cloudpickle

    folder = Path(argv[1])
    rank = mpi_rank() or 0
    try:
        fn, args, kwargs = cloudpickle.loads((folder / "payload.pkl").read_bytes())
        outcome = (True, fn(*args, **kwargs), None)
        data = cloudpickle.dumps(outcome)
    except BaseException:  # every failure goes back to the worker as text
        data = cloudpickle.dumps((False, None, traceback.format_exc()))
    tmp = folder / f".rank-{rank}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, folder / f"rank-{rank}.pkl")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
