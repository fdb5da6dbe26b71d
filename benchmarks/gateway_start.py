"""Dask Gateway through pipejupyter next to the raw dask-gateway client, on the real server
of ci/gateway.sh.

    ci/gateway.sh start && . .ci-state/gateway/env.sh
    PYTHONPATH=. .venv/bin/python benchmarks/gateway_start.py [--repeat 5]

1. time to two workers, interleaved (the machine's load hits both alike):
   raw:  ``Gateway(...)``, ``cluster_options()``, ``new_cluster(options)``, ``scale(2)``,
         ``get_client()``, ``wait_for_workers(2)``;
   ours: ``pipejupyter.start("gw", workers=2)`` (which also checks the options against the
         server's spec, sends the environment and publishes a discovery file).
   Shutdown is not timed; each run waits until the gateway reports the cluster stopped.
2. time to the error: an unreachable gateway (closed port), a gateway that accepts the
   connection and never answers (``request_timeout: 2``), and a wrong password; raw
   dask-gateway for comparison where it returns at all (it waits on a silent server for
   aiohttp's 300 s default, so that case is cut at 20 s here).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import socket
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.lab import free_port  # noqa: E402

ADDRESS = os.environ.get("PIPEJUPYTER_TEST_GATEWAY_ADDRESS", "")
PASSWORD_VAR = "PIPEJUPYTER_TEST_GATEWAY_PASSWORD"
USER = f"bench-{uuid.uuid4().hex[:8]}"


def write_config(directory: Path) -> None:
    profile = {
        "backend": "gateway",
        "address": ADDRESS,
        "auth": {"type": "basic", "username": USER, "password_env": PASSWORD_VAR},
        "options": {"worker_cores": 1, "worker_memory": 0.5},
    }
    (directory / "config.yaml").write_text(
        yaml.safe_dump({"pipecluster": {"profiles": {"gw": profile}}})
    )


def raw_gateway(address: str = ADDRESS, password: str | None = None):
    from dask_gateway import BasicAuth, Gateway

    return Gateway(
        address, auth=BasicAuth(USER, os.environ[PASSWORD_VAR] if password is None else password)
    )


def close_raw(gateway) -> None:
    gateway.close()
    gateway.__dict__.pop("_loop_runner", None)  # its __del__ would close again and fail


def wait_stopped(name: str, timeout: float = 60) -> None:
    gateway = raw_gateway()
    try:
        deadline = time.monotonic() + timeout
        while any(
            r.name == name for r in gateway.list_clusters(status=["pending", "running", "stopping"])
        ):
            if time.monotonic() > deadline:
                raise TimeoutError(f"gateway cluster {name} still active after {timeout} s")
            time.sleep(0.2)
    finally:
        close_raw(gateway)


def start_raw(n: int) -> float:
    t = time.perf_counter()
    gateway = raw_gateway()
    options = gateway.cluster_options()
    options.worker_cores, options.worker_memory = 1, 0.5
    cluster = gateway.new_cluster(options)
    cluster.scale(n)
    client = cluster.get_client(set_as_default=False)
    client.wait_for_workers(n, timeout=120)
    elapsed = time.perf_counter() - t
    name = cluster.name
    client.close()
    cluster.shutdown()
    cluster.gateway.__dict__.pop("_loop_runner", None)  # same double-close noise as below
    close_raw(gateway)
    wait_stopped(name)
    return elapsed


def start_ours(n: int) -> float:
    import pipejupyter

    t = time.perf_counter()
    handle = pipejupyter.start("gw", workers=n, set_default=False, timeout=120)
    elapsed = time.perf_counter() - t
    handle.stop()  # returns once the gateway reports the cluster stopped
    return elapsed


def bench_start(repeat: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"raw": [], "ours": []}
    start_raw(1)  # warm up imports and the server's first-cluster path (not counted)
    for i in range(repeat):
        order = [("raw", start_raw), ("ours", start_ours)]
        for label, run in order if i % 2 == 0 else order[::-1]:
            times[label].append(run(2))
    return times


# -- time to the error ----------------------------------------------------------------------


def error_ours(overrides: list[str]) -> tuple[float, str]:
    import pipejupyter

    t = time.perf_counter()
    try:
        pipejupyter.start("gw", overrides=overrides, set_default=False)
    except Exception as exc:
        return time.perf_counter() - t, f"{type(exc).__name__}: {exc}"
    raise AssertionError("started?!")


def error_raw(address: str, password: str | None = None, cut: float = 20.0) -> tuple[float, str]:
    def attempt():
        gateway = raw_gateway(address, password)
        try:
            gateway.cluster_options()
        finally:
            close_raw(gateway)

    t = time.perf_counter()
    pool = concurrent.futures.ThreadPoolExecutor(1)
    future = pool.submit(attempt)
    try:
        future.result(cut)
    except concurrent.futures.TimeoutError:
        pool.shutdown(wait=False)
        return (
            time.perf_counter() - t,
            f"no answer after {cut:g} s (cut; aiohttp waits up to 300 s)",
        )
    except Exception as exc:
        pool.shutdown(wait=False)
        return time.perf_counter() - t, f"{type(exc).__name__}: {str(exc)[:100]}"
    raise AssertionError("answered?!")


def bench_errors() -> list[tuple[str, float, str, float, str]]:
    os.environ["BENCH_WRONG_PASSWORD"] = "wrong-password"
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    hung = f"http://127.0.0.1:{silent.getsockname()[1]}"
    # Picked while the silent socket holds its port: a port released first could be handed
    # to the silent socket next, and the "closed" case then measured a silent gateway.
    closed = f"http://127.0.0.1:{free_port()}"
    rows = []
    cases = [
        ("unreachable (closed port)", [f"address={closed}"], (closed, None)),
        (
            "never answers (request_timeout 2 s)",
            [f"address={hung}", "request_timeout=2"],
            (hung, None),
        ),
        ("wrong password", ["auth.password_env=BENCH_WRONG_PASSWORD"], (ADDRESS, "wrong-password")),
    ]
    try:
        for label, overrides, raw_args in cases:
            ours = [error_ours(overrides) for _ in range(3)]
            raw = error_raw(*raw_args)
            rows.append((label, statistics.median(t for t, _ in ours), ours[0][1], raw[0], raw[1]))
    finally:
        silent.close()
    return rows


NO_GATEWAY = "no gateway: run `ci/gateway.sh start && . .ci-state/gateway/env.sh` first"


def _prepare() -> None:
    """A private working directory (with the bench profile) and runtime directory."""
    work = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    os.environ["PIPEJUPYTER_RUNTIME_DIR"] = str(work / "runtime")
    os.chdir(work)
    write_config(work)


def bench(repeat: int = 3) -> list[dict]:
    """Rows for benchmarks/run.py (the working directory and environment are restored)."""
    if not (ADDRESS and os.environ.get(PASSWORD_VAR)):
        return [{"name": "gateway start", "skipped": NO_GATEWAY}]
    cwd, runtime = os.getcwd(), os.environ.get("PIPEJUPYTER_RUNTIME_DIR")
    _prepare()
    try:
        times = bench_start(repeat)
        ours, raw = statistics.median(times["ours"]), statistics.median(times["raw"])
        rows = [
            {
                "name": "gateway start to 2 workers vs raw dask-gateway client",
                "ours": ours,
                "baseline": raw,
            }
        ]
        for label, t_ours, _, t_raw, _ in bench_errors():
            rows.append(
                {
                    "name": f"gateway error, {label} vs raw (raw cut at 20 s)",
                    "ours": t_ours,
                    "baseline": t_raw,
                }
            )
    finally:
        os.chdir(cwd)
        if runtime is None:
            os.environ.pop("PIPEJUPYTER_RUNTIME_DIR", None)
        else:
            os.environ["PIPEJUPYTER_RUNTIME_DIR"] = runtime
    return [{**r, "ratio": r["ours"] / r["baseline"], "unit": "s"} for r in rows]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if not (ADDRESS and os.environ.get(PASSWORD_VAR)):
        print(NO_GATEWAY, file=sys.stderr)
        return 2
    _prepare()
    print(
        f"gateway {ADDRESS}, user {USER}, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )

    times = bench_start(args.repeat)
    raw, ours = statistics.median(times["raw"]), statistics.median(times["ours"])
    print(f"\ntime to two workers, median of {args.repeat} interleaved runs:")
    print(
        f"  raw dask-gateway client      {raw:6.2f} s   "
        f"{' '.join(f'{t:.2f}' for t in times['raw'])}"
    )
    print(
        f"  pipejupyter.start(workers=2) {ours:6.2f} s   "
        f"{' '.join(f'{t:.2f}' for t in times['ours'])}"
    )
    print(f"  ratio ours/raw               {ours / raw:6.2f}")

    print("\ntime to the error (ours: median of 3; raw dask-gateway: one try):")
    for label, t_ours, message, t_raw, raw_message in bench_errors():
        print(f"  {label}")
        print(f"    ours {t_ours * 1000:8.1f} ms  {message[:150]}")
        print(f"    raw  {t_raw * 1000:8.1f} ms  {raw_message[:150]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
