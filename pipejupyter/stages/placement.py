"""Where items may run: hosts named by a mapfile, and Dask resources they need (including
the CPUs of a nested MPI session).

Both are checked against the workers that are there before anything is submitted: a
task restricted to a host with no worker, or needing a resource no worker has, would
wait forever without a word.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Mapping
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from pipejupyter.errors import PipejupyterError
from pipejupyter.work.cpu_slots import CPU_RESOURCE, worker_cpus


class PlacementError(PipejupyterError, ValueError):
    """Items that no worker can run."""


def _addresses(host: str) -> set[str]:
    """The addresses a host name stands for (itself, what it resolves to)."""
    out = {host}
    try:
        out |= {info[4][0] for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)}
    except (OSError, UnicodeError):
        pass
    return out


def _is_local(addresses: Iterable[str]) -> bool:
    for address in addresses:
        try:
            if ipaddress.ip_address(address).is_loopback:
                return True
        except ValueError:
            continue
    return False


def host_restrictions(
    hosts: Iterable[str], workers: Mapping[str, Mapping[str, Any]]
) -> dict[str, tuple[str, ...]]:
    """For each host name of a mapfile, the worker hosts (as Dask knows them) it means.

    An IP address matches workers on exactly that address. A name matches workers on the
    addresses it resolves to, or whose worker name it is; this machine's own name also
    matches workers listening on loopback (local clusters bind 127.0.0.1).
    Restrictions are by host, not worker address, so a restarted worker still qualifies.
    """
    worker_hosts = {
        str(w.get("host")): str(w.get("name", "")) for w in workers.values() if w.get("host")
    }
    own_names = {socket.gethostname(), socket.getfqdn()}
    out: dict[str, tuple[str, ...]] = {}
    missing = []
    for host in hosts:
        if _is_ip(host):
            names, this_machine = {host}, False
        else:
            names = _addresses(host)
            this_machine = host in own_names
        matched = sorted(
            wh
            for wh, wname in worker_hosts.items()
            if wh in names or wname == host or (this_machine and _is_local([wh]))
        )
        if matched:
            out[host] = tuple(matched)
        else:
            missing.append(host)
    if missing:
        known = ", ".join(sorted(worker_hosts)) or "none (no workers connected)"
        raise PlacementError(
            f"the mapfile places items on {', '.join(repr(h) for h in missing)}, "
            "but no worker runs there; "
            f"worker hosts: {known}"
        )
    return out


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def check_resources(needed: Mapping[str, float], workers: Mapping[str, Mapping[str, Any]]) -> None:
    """Raise when no connected worker offers enough of a resource (tasks would wait forever).

    With no workers connected (an adaptive cluster scaled to zero) nothing can be checked.
    """
    if not needed or not workers:
        return
    for name, amount in needed.items():
        offers = [float((w.get("resources") or {}).get(name, 0)) for w in workers.values()]
        if max(offers, default=0) < amount:
            have = sorted(
                {
                    f"{k}={v:g}"
                    for w in workers.values()
                    for k, v in (w.get("resources") or {}).items()
                }
            )
            raise PlacementError(
                f"items need resource {name}={amount:g}, but no worker offers that much; "
                f"worker resources: {', '.join(have) or 'none'} "
                f"(start workers with --resources {name}={amount:g})"
            )


def cpu_resources(client: Any, cpus: int) -> dict[str, float]:
    """The Dask resource an item that keeps ``cpus`` CPUs busy asks for (a nested MPI session).

    Every worker, present and future, offers ``pipejupyter-cpus`` = its CPU budget (its SLURM
    job's CPUs on the node, else its CPU affinity; see work/cpu_slots.py), so items whose
    sessions would together need more CPUs than a worker has wait for each other. An item
    asks for at most the smallest budget among the workers: a session larger than any
    worker still runs, alone, oversubscribed.
    """
    if cpus <= 1:
        return {}
    from distributed.diagnostics.plugin import WorkerPlugin

    class _CpuBudget(WorkerPlugin):
        idempotent = True

        async def setup(self, worker: Any) -> None:
            await worker.set_resources(**{CPU_RESOURCE: worker_cpus()})

    client.register_plugin(_CpuBudget(), name=CPU_RESOURCE)
    workers = client.scheduler_info(n_workers=-1).get("workers", {})
    budgets = [float((w.get("resources") or {}).get(CPU_RESOURCE) or 0) for w in workers.values()]
    budgets = [b for b in budgets if b > 0]
    if not budgets:  # no worker yet (adaptive): the worker-side guard alone keeps the limit
        return {}
    return {CPU_RESOURCE: min(cpus, int(min(budgets)))}


class SlotsPlugin(WorkerPlugin):
    """Gives every worker (present and future) ``amount`` units of a resource, so tasks
    asking for one unit run at most ``amount`` at a time per worker."""

    idempotent = True

    def __init__(self, resource: str, amount: int) -> None:
        self.resource = resource
        self.amount = amount

    async def setup(self, worker: Any) -> None:
        await worker.set_resources(**{self.resource: self.amount})
