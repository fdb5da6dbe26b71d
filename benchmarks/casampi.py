"""casa("tclean", parallel=True, mpi=2) through a stage vs the same mpirun run by hand.

    PYTHONPATH=. .venv/bin/python benchmarks/casampi.py [--repeat 2]

Needs casatasks, casampi and the offline CASA config (ci/casa.sh install), OpenMPI (ci/mpi.sh).
On a simulated MeasurementSet (ci/make_ms.py) a small tclean (64 px, 10 iterations, two
major cycles) runs:

1. by hand: ``OMP_NUM_THREADS=1 mpirun -n 3 python script.py`` where the script is
   ``import casatasks; casatasks.tclean(..., parallel=True)`` (the recipe's whole entry);
2. ours: ``run_stage`` of ``casa("tclean", ..., parallel=True, mpi=2)`` on a warm one-worker
   LocalCluster: the worker starts the same session (mpirun -n 3) as a nested subprocess.

Rows: the wall time of 2 vs 1; the per-call casampi overhead (session wall time minus the
task's own time, i.e. MPI start, casatasks import on every rank, casampi shutdown) of 2 vs
1; and the parallel call vs the same tclean serial on the same worker. Each figure is the
best of ``--repeat`` runs, by hand and ours interleaved (the machine may be shared).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TCLEAN = {
    "imsize": 64,
    "cell": "20arcsec",
    "niter": 10,
    "cyclefactor": 0.05,
    "weighting": "natural",
    "specmode": "mfs",
}
BY_HAND = """
import time
started = time.monotonic()
import casatasks
ready = time.monotonic()
casatasks.tclean(vis={vis!r}, imagename={imagename!r}, parallel=True, **{tclean!r})
print("TASK", time.monotonic() - ready, flush=True)
"""


def _casa_config() -> str | None:
    config = os.environ.get("CASASITECONFIG") or str(ROOT / ".ci-state" / "casa" / "config.py")
    return config if os.path.isfile(config) else None


def missing() -> str | None:
    from importlib.util import find_spec

    for name in ("casatasks", "casampi"):
        if find_spec(name) is None:
            return f"{name} is not installed (ci/casa.sh install)"
    if not shutil.which("mpirun"):
        return "mpirun is not installed (ci/mpi.sh install)"
    if _casa_config() is None:
        return "no offline CASA config (ci/casa.sh install)"
    return None


def by_hand(folder: Path, vis: str, run: int) -> tuple[float, float]:
    """(wall, task seconds) of the mpirun command a user would type."""
    script = folder / f"by_hand_{run}.py"
    imagename = str(folder / f"hand-{run}")
    script.write_text(BY_HAND.format(vis=vis, imagename=imagename, tclean=TCLEAN))
    argv = ["mpirun", "-n", "3", "--oversubscribe"]
    if os.geteuid() == 0:
        argv.append("--allow-run-as-root")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CASASITECONFIG": _casa_config() or ""}
    started = time.perf_counter()
    proc = subprocess.run(
        [*argv, sys.executable, str(script)],
        capture_output=True,
        text=True,
        cwd=folder,
        env=env,
        timeout=900,
    )
    wall = time.perf_counter() - started
    lines = [x for x in proc.stdout.splitlines() if x.startswith("TASK ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"by-hand mpirun failed ({proc.returncode}): {proc.stderr[-800:]}")
    return wall, float(lines[-1].split()[1])


def measure(repeat: int) -> dict[str, float]:
    import pipejupyter
    from pipejupyter.stages.run import run_stage

    os.environ["CASASITECONFIG"] = _casa_config() or ""
    from distributed import Client, LocalCluster

    folder = Path(tempfile.mkdtemp(prefix="bench-casampi-"))
    vis = str(folder / "sim.ms")
    subprocess.run([sys.executable, str(ROOT / "ci" / "make_ms.py"), vis], check=True, timeout=300)
    out = {"hand": [], "hand_overhead": [], "ours": [], "ours_overhead": [], "serial": []}
    try:
        with (
            LocalCluster(
                n_workers=1,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address="127.0.0.1:0",
                silence_logs=40,
            ) as cluster,
            Client(cluster) as client,
        ):
            # warm: casatasks imported on the worker, the stage machinery loaded
            run_stage(
                "warm",
                pipejupyter.casa("listobs", listfile=""),
                [vis],
                client=client,
                workdir=folder,
                progress=None,
                persist=False,
            )
            for run in range(repeat):
                wall, task = by_hand(folder, vis, run)
                out["hand"].append(wall)
                out["hand_overhead"].append(wall - task)
                work = pipejupyter.casa(
                    "tclean", imagename=str(folder / f"ours-{run}"), parallel=True, mpi=2, **TCLEAN
                )
                started = time.perf_counter()
                result = run_stage(
                    f"ours-{run}", work, [vis], client=client, workdir=folder, progress=None
                )
                out["ours"].append(time.perf_counter() - started)
                timings = result[0].mpi
                out["ours_overhead"].append(timings["total"] - timings["task"])
                serial = pipejupyter.casa("tclean", imagename=str(folder / f"s-{run}"), **TCLEAN)
                started = time.perf_counter()
                run_stage(f"s-{run}", serial, [vis], client=client, workdir=folder, progress=None)
                out["serial"].append(time.perf_counter() - started)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {key: min(values) for key, values in out.items()}


def bench(repeat: int = 1) -> list[dict]:
    """Rows for benchmarks/run.py."""
    reason = missing()
    if reason:
        return [{"name": "casampi: tclean(parallel=True, mpi=2)", "skipped": reason}]
    m = measure(repeat)
    return [
        {
            "name": "casampi: stage casa(tclean, parallel, mpi=2) vs mpirun -n 3 by hand",
            "ours": m["ours"],
            "baseline": m["hand"],
            "ratio": m["ours"] / m["hand"],
            "unit": "s",
        },
        {
            "name": "casampi: per-call overhead (wall - task), ours vs by hand",
            "ours": m["ours_overhead"],
            "baseline": m["hand_overhead"],
            "ratio": m["ours_overhead"] / m["hand_overhead"],
            "unit": "s",
        },
        {
            "name": "casampi: stage tclean mpi=2 (2 servers) vs serial, same worker",
            "ours": m["ours"],
            "baseline": m["serial"],
            "ratio": m["ours"] / m["serial"],
            "unit": "s",
        },
    ]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    for row in bench(args.repeat):
        if "skipped" in row:
            print(f"{row['name']}: skipped ({row['skipped']})")
        else:
            print(
                f"{row['name']:<72} {row['ours']:8.2f} s {row['baseline']:8.2f} s "
                f"{row['ratio']:6.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
