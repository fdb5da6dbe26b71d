"""Plain-text views printed by ``%pipecluster`` subcommands (pure functions of core data)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from html import escape
from typing import Any

import yaml

from pipejupyter.environment.redaction import REDACTED, redact_tree
from pipejupyter.environment.workers import WorkerEnvironment
from pipejupyter.notebook.html_views import plural, safe_link


def started_line(handle: Any, model: Mapping[str, Any], *, verb: str) -> str:
    """One line after start/connect: what, where, how many workers, that it is the default."""
    size = plural(model.get("workers", 0), "worker")
    if model.get("pending"):
        size += f" (+{model['pending']} pending)"
    if model.get("adapt"):
        size += f", adaptive {model['adapt']['minimum']}-{model['adapt']['maximum']}"
    dashboard = f", dashboard {model['dashboard_link']}" if model.get("dashboard_link") else ""
    return (
        f"{verb} {handle.name} ({handle.backend_label}, id {handle.id}): {size} at "
        f"{handle.scheduler_address}{dashboard}; its Client is the default Dask client"
    )


def no_cluster_hint(profiles: Iterable[str]) -> str:
    names = ", ".join(profiles) or "none configured"
    return (
        "no cluster in this kernel; start one with %pipecluster start [PROFILE] "
        f"(profiles: {names})"
    )


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)


def cluster_table(records: list[Mapping[str, Any]], default_id: str | None) -> str:
    """``list``: this kernel's clusters (models) then discovered ones (records)."""
    if not records:
        return "no running clusters (this kernel's or discovered)"
    rows = []
    for r in records:
        owner = r.get("owner") or {}
        own = "workers" in r  # models of this kernel carry live worker counts
        workers = str(r["workers"]) if own else f"({r.get('workers_requested', '?')} asked)"
        where = "this kernel" if own else f"{owner.get('kind', '?')} pid {owner.get('pid', '?')}"
        mark = "*" if r["id"] == default_id else " "
        rows.append(
            [
                mark + r["id"],
                r.get("name", ""),
                r.get("backend", ""),
                str(r.get("status", "")),
                workers,
                r.get("scheduler_address") or "-",
                where,
            ]
        )
    table = text_table([" ID", "NAME", "BACKEND", "STATUS", "WORKERS", "SCHEDULER", "OWNER"], rows)
    return table + ("\n* its Client is the default Dask client" if default_id else "")


def profile_table(cfg: Any) -> str:
    """``profiles``: name, backend, workers, description and where each profile was defined."""
    rows = []
    for name, body in cfg.profiles.items():
        mark = "*" if name == cfg.default_profile else " "
        workers = body.get("workers")
        adapt = body.get("adapt_kwargs")
        size = (
            f"adapt {adapt.get('minimum', '?')}-{adapt.get('maximum', '?')}"
            if isinstance(adapt, dict)
            else ("auto" if workers is None else str(workers))
        )
        rows.append(
            [
                mark + name,
                str(body.get("backend") or body.get("cluster_class")),
                size,
                body.get("description", ""),
                cfg.where(("profiles", name)),
            ]
        )
    table = text_table([" PROFILE", "BACKEND", "WORKERS", "DESCRIPTION", "DEFINED IN"], rows)
    return table + "".join(f"\n# warning: {w}" for w in cfg.warnings)


def _scalar(value: Any) -> str:
    dumped = yaml.safe_dump(value, default_flow_style=True, width=10**9)
    if dumped.endswith("\n...\n"):
        dumped = dumped[: -len("\n...\n")]
    return dumped.strip()


def annotated_yaml(
    data: Mapping[str, Any],
    origin: Callable[[str], str | None],
    *,
    prefix: str = "",
    parent: str | None = None,
    indent: int = 0,
) -> list[str]:
    """YAML lines with a ``# source`` comment wherever the source differs from the enclosing
    key's."""
    lines = []
    pad = "  " * indent
    for key, value in data.items():
        path = f"{prefix}{key}"
        where = origin(path) or "derived"
        note = f"  # {where}" if where != parent else ""
        if isinstance(value, Mapping) and value:
            lines.append(f"{pad}{key}:{note}")
            lines += annotated_yaml(
                value, origin, prefix=f"{path}.", parent=where, indent=indent + 1
            )
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}{note}")
    return lines


def config_view(cfg: Any, spec: Any, *, origin: bool) -> str:
    """``config``: the resolved profile as YAML; with ``origin``, each value's source and the
    files read."""
    data = spec.to_json()
    extra = tuple(spec.env.get("redact") or ())
    notes = redact_tree(data.pop("notes", []), extra)
    warnings = data.pop("warnings", [])
    data = redact_tree(data, extra)
    if not origin:
        body = yaml.safe_dump(data, sort_keys=False, default_flow_style=False).rstrip()
    else:
        lines = ["# files read, lowest priority first:"]
        lines += [f"#   {f.path} [{f.role}; {', '.join(f.formats) or 'empty'}]" for f in cfg.files]
        defined = cfg.where(("profiles", spec.profile))
        lines += annotated_yaml(
            data, lambda key: defined if key == "profile" else spec.origin_of(key)
        )
        body = "\n".join(lines)
    return (
        body
        + "".join(f"\n# warning: {w}" for w in warnings)
        + "".join(f"\n# note: {n}" for n in notes)
    )


def env_view(profile: str, env: WorkerEnvironment) -> str:
    """``env``: every variable workers receive (redacted), then what sanitization removed."""
    variables = env.redacted()
    lines = [
        f"# workers of profile {profile!r} receive {len(variables)} variables "
        f"(secret values shown as {REDACTED})"
    ]
    lines += [f"{name}={value}" for name, value in variables.items()]
    removed = (
        ", ".join(env.removed_mpi)
        if env.removed_mpi
        else "none (this process was not started by an MPI launcher)"
    )
    lines.append(f"# MPI launch variables removed: {removed}")
    if env.removed_slurm:
        lines.append(
            "# removed from batch submissions (enclosing SLURM job): "
            f"{', '.join(env.removed_slurm)}"
        )
    if env.summary():
        lines.append(f"# {env.summary()}")
    return "\n".join(lines)


def logs_view(logs: Mapping[str, list[str]]) -> str:
    if not logs:
        return "no log lines"
    parts = []
    for source, lines in logs.items():
        parts.append(f"== {source} ==")
        parts += lines or ["(empty)"]
    return "\n".join(parts)


def dashboard_bundle(name: str, link: str) -> dict[str, str]:
    """The dashboard as a clickable link (http(s) only) with a text fallback."""
    bundle = {"text/plain": f"{name} dashboard: {link}"}
    if safe_link(link):
        bundle["text/html"] = (
            f'{escape(name)} dashboard: <a href="{escape(link, quote=True)}" target="_blank" '
            f'rel="noopener noreferrer">{escape(link)}</a>'
        )
    return bundle
