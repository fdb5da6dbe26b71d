"""What a remote cluster (Dask Gateway, Kubernetes) receives of the worker environment.

Remote workers run on other machines, and what we send is stored server-side (the
gateway keeps cluster options in its database and shows them in cluster reports; a
DaskCluster resource is readable by anyone with access to the namespace). So two kinds
of variables that ``env.pass`` copied from this process stay here, each named in a note
so nothing is dropped silently:

- paths and identity of this machine (PATH, HOME, USER, ...), which would break or
  mislead the remote image (``env.set`` sends a value chosen for the remote side);
- variables whose names look secret (…TOKEN, …PASSWORD) matched only by a glob; naming
  one exactly in ``env.pass``, or setting it in ``env.set``, sends it.

Values are sent exactly as written: no shell runs between us and a remote worker, so a
``$VAR`` in ``env.set`` arrives as those characters.
"""

from __future__ import annotations

from collections.abc import Iterable

from pipejupyter.environment.redaction import is_secret
from pipejupyter.environment.workers import WorkerEnvironment

MACHINE_LOCAL = (
    "PATH",
    "LD_LIBRARY_PATH",
    "PYTHONPATH",
    "PYTHONHOME",
    "VIRTUAL_ENV",
    "CONDA_PREFIX",
    "HOME",
    "PWD",
    "OLDPWD",
    "TMPDIR",
    "SHELL",
    "HOSTNAME",
    "USER",
    "LOGNAME",
    "_",
)
GLOB_CHARS = set("*?[")


def remote_environment(
    env: WorkerEnvironment, patterns: Iterable[str], where: str
) -> tuple[dict[str, str], list[str]]:
    """``(variables to send, notes)`` for workers of ``where`` (e.g. "gateway")."""
    explicit = set(env.explicit)
    named = {p for p in patterns if not GLOB_CHARS & set(p)}
    send: dict[str, str] = {}
    local: list[str] = []
    secret: list[str] = []
    for name, value in env.variables.items():
        if name not in explicit and name in MACHINE_LOCAL:
            local.append(name)
        elif name not in explicit and name not in named and is_secret(name, env.redact):
            secret.append(name)
        else:
            send[name] = value
    notes = []
    if local:
        notes.append(
            f"not sent to {where} workers (paths and identity of this machine): "
            f"{', '.join(sorted(local))}; "
            "set a value under env.set to send one"
        )
    if secret:
        notes.append(
            f"not sent to {where} workers (secret-looking names matched by a pattern): "
            f"{', '.join(sorted(secret))}; "
            "name them exactly in env.pass to send them"
        )
    return send, notes
