"""A console demo of the core: start the default profile, run tasks, show the model, stop."""

from __future__ import annotations

import json
import time

from pipejupyter.lifecycle.manager import start


def _square(x: int) -> int:
    return x * x


def run(
    profile: str | None = None, *, workers: int | None = None, files=None, overrides=None
) -> int:

    t0 = time.perf_counter()
    handle = start(profile, workers=workers, config=files or None, overrides=overrides or None)
    print(f"started {handle.name!r} ({handle.backend_label}) in {time.perf_counter() - t0:.2f} s")
    print(f"dashboard: {handle.dashboard_link}")
    try:
        futures = handle.client.map(_square, range(10))
        print("squares computed on the cluster:", handle.client.gather(futures))
        model = handle.model()
        shown = {k: v for k, v in model.items() if k != "worker_info"}
        print("cluster model:", json.dumps(shown, indent=2))
        for row in model["worker_info"]:
            print(
                f"  worker {row['name']}: {row['threads']} thread(s), "
                f"{row['memory_limit'] / 2**30:.1f} GiB limit, {row['status']}"
            )
    finally:
        handle.stop()
    print(f"stopped: {handle.status}")
    return 0
