"""Transport security a profile may ask for: ``security: tls`` or explicit certificate files.

``tls`` creates temporary self-signed credentials (held in memory, passed to the scheduler,
the workers and our Client; batch jobs read them from files beside their logs): nothing
without them can talk to the cluster. Each backend says which forms it can honour
(``security_forms``); any other is refused when the profile is resolved.
"""

from __future__ import annotations

from typing import Any

from pipejupyter.errors import ConfigError

ACCEPTED = "null, tls, or {ca_file, cert, key} (paths of PEM files)"
FORMS = {"tls": "tls (temporary certificates)", "files": "{ca_file, cert, key}"}


def security_form(value: Any, *, source: str | None = None, key: str = "security") -> str | None:
    """None (no TLS), "tls" or "files"; ConfigError for anything else."""
    if value in (None, False, "none", "off"):
        return None
    if value in (True, "tls"):
        return "tls"
    if (
        isinstance(value, dict)
        and set(value) <= {"ca_file", "cert", "key"}
        and {"ca_file", "cert"} <= set(value)
    ):
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
        source=spec.origin_of("security"),
        key=key,
        accepted=accepted,
    )
