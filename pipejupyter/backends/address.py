"""Address backend: attach to a scheduler that is already running somewhere."""

from __future__ import annotations

from typing import Any

from pipejupyter.backends.base import Backend
from pipejupyter.backends.probe import REFUSED, SILENT, scheduler_answer
from pipejupyter.config.schema import Field
from pipejupyter.environment.tls import make_security
from pipejupyter.errors import ClusterError, NotOwned
from pipejupyter.models import ClusterSpec


class AddressBackend(Backend):
    name = "address"
    owns_cluster = False
    security_forms = ("files",)
    security_note = (
        "temporary certificates are made for clusters we start; "
        "give the files of the scheduler's certificates"
    )
    profile_keys = {"address": Field("str", "scheduler address, e.g. tcp://host:8786")}

    @classmethod
    def finalize(cls, spec: ClusterSpec) -> None:
        spec.workers = spec.workers or 0

    def start(self) -> None:
        self._address = self.spec.options["address"]

    def make_client(self, **kwargs: Any):
        from distributed import Client

        # A Dask connect to a scheduler that accepts but never speaks waits for ever.
        timeout = kwargs.get("timeout")
        answer = scheduler_answer(self._address, min(float(timeout or 5), 5.0))
        if answer == SILENT:
            raise ClusterError(
                f"cannot connect to {self._address}: the scheduler does not answer (a stopped "
                "process, a full backlog or a host out of reach)"
            )
        if answer == REFUSED:
            raise ClusterError(f"cannot connect to {self._address}: nothing listens there")
        security = make_security(self.spec.security, source=self.spec.origin_of("security"))
        return Client(self._address, **({"security": security} if security else {}), **kwargs)

    @property
    def scheduler_address(self) -> str | None:
        return self.spec.options.get("address")

    @property
    def dashboard_link(self) -> str | None:
        return None  # filled in by the manager from the scheduler's identity

    def scale(self, n: int) -> None:
        raise NotOwned(
            "this cluster was connected by address: scale it where it was started "
            "(the kernel or server that owns it)"
        )

    def adapt(self, minimum: int, maximum: int, **kwargs: Any) -> None:
        raise NotOwned("this cluster was connected by address: adapt it where it was started")
