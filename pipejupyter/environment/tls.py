"""Transport security objects: a ``distributed.Security`` for a profile's ``security`` value."""

from __future__ import annotations

from typing import Any

from pipejupyter.config.security import security_form


def make_security(value: Any, *, source: str | None = None):
    """A ``distributed.Security`` for the profile's ``security`` value, or None."""
    form = security_form(value, source=source)
    if form is None:
        return None
    from distributed.security import Security

    if form == "tls":
        return Security.temporary()
    # "files". No key file: the key is in the certificate's file (and dask-jobqueue would
    # otherwise pass "--tls-key None" to every worker job).
    key = value.get("key") or value["cert"]
    return Security(
        tls_ca_file=value["ca_file"],
        tls_client_cert=value["cert"],
        tls_client_key=key,
        tls_scheduler_cert=value["cert"],
        tls_scheduler_key=key,
        tls_worker_cert=value["cert"],
        tls_worker_key=key,
        require_encryption=True,
    )
