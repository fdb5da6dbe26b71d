"""One rank of a nested casampi session: ``python -m pipejupyter.work.casampi_child FOLDER``.

Every rank of ``mpirun -n N+1`` runs this file. It points CASA's log at ``FOLDER/casa.log``
(servers and client alike, so one file holds the whole call), loads casampi's MPI
environment, then imports casatasks: on ranks >= 1 that import turns the process into a
casampi server, which serves until the client stops it and exits inside the import. Rank 0
is the MPI client: it runs the task from ``FOLDER/call.pkl`` and writes
``FOLDER/result.pkl`` = (ok, value, traceback text, timings). Nothing here imports
pipejupyter beyond this file, so a rank starts as fast as ``import casatasks`` allows.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
import traceback
from pathlib import Path


def _write(folder: Path, outcome: tuple) -> None:
    try:
        data = pickle.dumps(outcome, protocol=5)
    except Exception:  # an unpicklable return value fails the call, with the reason
        data = pickle.dumps(
            (False, None, f"the task's return value cannot be pickled:\n{traceback.format_exc()}")
            + outcome[3:],
            protocol=5,
        )
    tmp = folder / ".result.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, folder / "result.pkl")


# casampi's services poll every 3 s (5 s heartbeat): a one-task session spends ~15 s of its
# shutdown waiting on them. Shorter polls; the timeouts casampi derived from the defaults at
# import stay as they were, so a busy server is not declared lost any sooner.
POLL_SECONDS = 0.25


def _shorten_polls(environment: type) -> None:
    for name in (
        "mpi_stop_service_sleep_time",
        "mpi_ping_status_request_handler_service_sleep_time",
        "mpi_ping_status_response_handler_service_sleep_time",
        "mpi_monitor_status_service_heartbeat",
    ):
        if getattr(environment, name, None) is not None:
            setattr(environment, name, min(getattr(environment, name), POLL_SECONDS))


def main(argv: list[str]) -> int:
    folder = Path(argv[1])
    started = time.monotonic()
    task, kwargs = pickle.loads((folder / "call.pkl").read_bytes())
    # casatools opens its log file at import, from casaconfig's value: set it first.
    from casaconfig import config

    config.logfile = str(folder / "casa.log")
    # mpi4py (through casampi) before casatools: the system's libmpi, the one mpirun speaks,
    # is then the only one loaded (casatools also bundles an Open MPI of its own).
    from casampi.MPIEnvironment import MPIEnvironment

    _shorten_polls(MPIEnvironment)
    import casatasks  # ranks >= 1 serve in here and exit without returning

    ready = time.monotonic()
    if not MPIEnvironment.is_mpi_enabled:
        _write(
            folder,
            (
                False,
                None,
                "casampi did not enable MPI on the client rank: "
                f"{getattr(MPIEnvironment, 'mpi_error_msg', 'no reason given')}",
                {"setup": ready - started},
            ),
        )
        return 3
    try:
        function = getattr(casatasks, task)
        value = function(**kwargs)
        outcome = (True, value, None)
    except BaseException:  # the client's failure goes back to the worker as text
        outcome = (False, None, traceback.format_exc())
    finished = time.monotonic()
    timings = {
        "setup": ready - started,
        "task": finished - ready,
        "servers": len(MPIEnvironment.mpi_server_rank_list()),
    }
    _write(folder, (*outcome, timings))
    sys.stdout.flush()
    return 0  # casampi's atexit handler stops the servers and finalizes MPI


if __name__ == "__main__":
    sys.exit(main(sys.argv))
