"""Transport security for a profile: ``security: tls`` or explicit certificate files.

``tls`` creates temporary self-signed credentials (held in memory, passed to the scheduler,
the workers and our Client; batch jobs read them from files beside their logs): nothing
without them can talk to the cluster. Each backend says which forms it can honour
(``security_forms``); any other is refused when the profile is resolved.
"""

from __future__ import annotations

from typing import Any

from .errors import ConfigError

ACCEPTED = "null, tls, or {ca_file, cert, key} (paths of PEM files)"
FORMS = {"tls": "tls (temporary certificates)", "files": "{ca_file, cert, key}"}


def security_form(value: Any, *, source: str | None = None, key: str = "security") -> str | None:
    """None (no TLS), "tls" or "files"; ConfigError for anything else."""
    if value in (None, False, "none", "off"):
        return None
    if value in (True, "tls"):
        return "tls"
    if isinstance(value, dict) and set(value) <= {"ca_file", "cert", "key"} and {"ca_file", "cert"} <= set(value):
        return "files"
    raise ConfigError(f"cannot use security {value!r}", source=source, key=key, accepted=ACCEPTED)


def check_security(spec, backend) -> None:
    """Refuse, at resolve time, a ``security`` value the profile's backend cannot honour."""
    key = f"profiles.{spec.profile}.security"
    form = security_form(spec.security, source=spec.origin_of("security"), key=key)
    if form is None or form in backend.security_forms:
        return
    accepted = ", ".join(["null", *(FORMS[f] for f in backend.security_forms)])
    raise ConfigError(
        f"the {backend.name} backend cannot use security {FORMS[form]}: {backend.security_note}",
        source=spec.origin_of("security"), key=key, accepted=accepted,
    )


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
