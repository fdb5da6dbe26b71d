"""Transport security for a profile: ``security: tls`` or explicit certificate files.

``tls`` creates temporary self-signed credentials (held in memory, passed to the scheduler,
the workers and our Client): nothing without them can talk to the cluster.
"""

from __future__ import annotations

from typing import Any

from .errors import ConfigError

ACCEPTED = "null, tls, or {ca_file, cert, key} (paths of PEM files)"


def make_security(value: Any, *, source: str | None = None):
    """A ``distributed.Security`` for the profile's ``security`` value, or None."""
    if value in (None, False, "none", "off"):
        return None
    from distributed.security import Security

    if value in (True, "tls"):
        return Security.temporary()
    if isinstance(value, dict) and set(value) <= {"ca_file", "cert", "key"} and {"ca_file", "cert"} <= set(value):
        key = value.get("key")
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
    raise ConfigError(f"cannot use security {value!r}", source=source, key="security", accepted=ACCEPTED)
