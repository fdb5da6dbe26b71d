"""Static views of a cluster model (docs/wire-format.md): escaped HTML and plain text.

Pure functions of the model dictionary, shared by the live widget (which shows the same
HTML inside ipywidgets.HTML) and the text/html + text/plain fallback that a saved
notebook keeps for GitHub and nbviewer. Every value from the model is escaped: worker
names, hosts and error messages come from other machines and must not become markup.

The worker table is one string built with one join, so its cost grows with the number
of rows only (benchmarks/widget_render.py measures it).
"""

from __future__ import annotations

import json
import re
from html import escape
from typing import Any

#: rows shown in the HTML table; the rest are summarized in one line
MAX_ROWS = 1000
#: rows shown in the plain-text view
MAX_TEXT_ROWS = 20
#: longer links are not links
MAX_LINK = 8192
#: dask-labextension's public command: populate the dashboard URL, open the default panes
LAUNCH_COMMAND = "dask:populate-and-launch-layout"
#: a path on the notebook's server: no backslashes, spaces, quotes or control characters
_PLAIN_PATH = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/?#\[\]-]*")

STATUS_COLOURS = {
    "running": "#2e7d32",
    "starting": "#f9a825",
    "pending": "#f9a825",
    "lost": "#c62828",
    "failed": "#c62828",
    "stopping": "#757575",
    "stopped": "#757575",
}

# Short attributes instead of per-cell styles: a 1,000-row table crosses the comm at every
# refresh, so each row is kept small.
_TABLE_ATTRS = 'cellpadding="2" style="border-collapse:collapse;font-size:12px;min-width:520px"'
_LEFT = 'align="left"'
_RIGHT = 'align="right"'
_BAR = 'style="display:inline-block;width:80px;height:8px;background:#e0e0e0;vertical-align:middle"'


def format_bytes(n: int | float | None) -> str:
    """1536 -> '1.5 KiB' (binary units, like Dask's memory limits)."""
    if not n:
        return "0 B"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def safe_link(url: Any) -> str | None:
    """Only http(s) links and paths on the notebook's own server (a dashboard behind the
    Jupyter server's proxy, ``/user/alice/proxy/8787/status``) become clickable; anything
    else (javascript:..., //other-host) is shown as text."""
    if not isinstance(url, str) or len(url) > MAX_LINK:
        return None
    if url.startswith("/") and not url.startswith("//") and _PLAIN_PATH.fullmatch(url):
        return url
    return url if url.lower().startswith(("http://", "https://")) else None


def launch_button_html(link: str) -> str:
    """The button Dask's own Client repr shows in JupyterLab: it runs dask-labextension's
    command that opens the dashboard's panes (nothing happens without dask-labextension)."""
    args = _e(json.dumps({"url": link}))
    return (
        '<button class="pipejupyter-launch-dashboard"'
        f' data-commandlinker-command="{LAUNCH_COMMAND}" data-commandlinker-args="{args}"'
        ' title="open the dashboard panes in JupyterLab">'
        "Launch dashboard in JupyterLab</button>"
    )


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def status_badge(status: Any) -> str:
    colour = STATUS_COLOURS.get(str(status), "#757575")
    return f'<span style="color:{colour};font-weight:bold">{_e(status)}</span>'


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def totals_text(model: dict[str, Any]) -> str:
    parts = [plural(model.get("workers", 0), "worker")]
    if model.get("pending"):
        parts[0] += f" (+{model['pending']} pending)"
    parts.append(plural(model.get("cores", 0), "thread"))
    parts.append(
        f"memory {format_bytes(model.get('memory_used'))} / {format_bytes(model.get('memory'))}"
    )
    parts.append(f"{model.get('tasks', 0)} tasks processing")
    adapt = model.get("adapt")
    if adapt:
        parts.append(f"adaptive {adapt.get('minimum')}-{adapt.get('maximum')}")
    return ", ".join(parts)


def header_html(model: dict[str, Any], *, launch_button: bool = False) -> str:
    """Name, backend, status, scheduler address, dashboard link, totals, error.

    ``launch_button``: add the button that opens dask-labextension's panes (in JupyterLab).
    A ``dashboard_problem`` (environment/dashboard_links.py) is shown under the link."""
    link = safe_link(model.get("dashboard_link"))
    problem = model.get("dashboard_problem")
    if link:
        dashboard = f'<a href="{_e(link)}" target="_blank" rel="noopener noreferrer">{_e(link)}</a>'
        if launch_button and not problem:
            dashboard += f" {launch_button_html(link)}"
    else:
        dashboard = _e(model.get("dashboard_link") or "none")
    profile = f" (profile {_e(model['profile'])})" if model.get("profile") else ""
    lines = [
        f"<div><strong>{_e(model.get('name'))}</strong> &middot; "
        f"{_e(model.get('backend'))}{profile}"
        f" &middot; {status_badge(model.get('status'))} &middot; "
        f"id <code>{_e(model.get('id'))}</code></div>",
        f"<div>scheduler <code>{_e(model.get('scheduler_address') or 'none')}</code> "
        f"&middot; dashboard {dashboard}</div>",
        f"<div>{_e(totals_text(model))}</div>",
    ]
    if problem:
        lines.append(f'<div style="color:#e65100">dashboard: {_e(problem)}</div>')
    if model.get("error"):
        lines.append(f'<div style="color:#c62828">{_e(model["error"])}</div>')
    return "".join(lines)


def dashboard_bundle(
    name: str, model: dict[str, Any], *, launch_button: bool = False
) -> dict[str, str]:
    """``%pipecluster dashboard``: the link (clickable when http(s) or a path on the
    notebook's server), the launch button in JupyterLab, and why it may not open."""
    shown = model.get("dashboard_link")
    problem = model.get("dashboard_problem")
    plain = f"{name} dashboard: {shown}" + (f"\n{problem}" if problem else "")
    link = safe_link(shown)
    if link is None:
        return {"text/plain": plain}
    html = (
        f'{_e(name)} dashboard: <a href="{_e(link)}" target="_blank" '
        f'rel="noopener noreferrer">{_e(link)}</a>'
    )
    if launch_button and not problem:
        html += f" {launch_button_html(link)}"
    if problem:
        html += f'<div style="color:#e65100">{_e(problem)}</div>'
    return {"text/plain": plain, "text/html": html}


def _memory_cell(used: int, limit: int) -> str:
    fraction = min(1.0, used / limit) if limit else 0.0
    colour = "#c62828" if fraction > 0.9 else "#f9a825" if fraction > 0.7 else "#2e7d32"
    bar = (
        f'<div {_BAR}><div style="width:{fraction * 100:.0f}%;height:100%;'
        f'background:{colour}"></div></div>'
    )
    return f"<td>{bar} {format_bytes(used)} / {format_bytes(limit)}</td>"


def _worker_status(row: dict[str, Any]) -> str:
    status = row.get("status")
    if row.get("job_id") or row.get("job_state"):
        return (
            f"{_e(status)} (job {_e(row.get('job_id') or '?')}: {_e(row.get('job_state') or '?')})"
        )
    return _e(status)


def workers_table_html(model: dict[str, Any], *, max_rows: int | None = MAX_ROWS) -> str:
    """The worker table as one HTML string (scrolls when long)."""
    rows = model.get("worker_info") or []
    shown = rows if max_rows is None else rows[:max_rows]
    head = "".join(
        f"<th {_RIGHT if right else _LEFT}>{label}</th>"
        for label, right in (
            ("name", False),
            ("host", False),
            ("threads", True),
            ("memory used / limit", False),
            ("processing", True),
            ("status", False),
        )
    )
    body = [
        f"<tr><td>{_e(r.get('name'))}</td><td>{_e(r.get('host') or '')}</td>"
        f"<td {_RIGHT}>{int(r.get('threads') or 0)}</td>"
        f"{_memory_cell(int(r.get('memory_used') or 0), int(r.get('memory_limit') or 0))}"
        f"<td {_RIGHT}>{int(r.get('processing') or 0)}</td><td>{_worker_status(r)}</td></tr>"
        for r in shown
    ]
    hidden = _unlisted(model, len(shown))
    if not rows:
        body.append(f'<tr><td colspan="6" {_LEFT}><em>no workers</em></td></tr>')
    elif hidden:
        body.append(f'<tr><td colspan="6" {_LEFT}><em>and {hidden} more workers</em></td></tr>')
    return (
        '<div style="max-height:320px;overflow-y:auto">'
        f"<table {_TABLE_ATTRS}><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def cluster_html(
    model: dict[str, Any], *, max_rows: int | None = MAX_ROWS, launch_button: bool = False
) -> str:
    """The whole static view: header and worker table."""
    return (
        f'<div class="pipejupyter-cluster">{header_html(model, launch_button=launch_button)}'
        f"{workers_table_html(model, max_rows=max_rows)}</div>"
    )


def cluster_text(model: dict[str, Any], *, max_rows: int = MAX_TEXT_ROWS) -> str:
    """A few plain lines for terminals and text/plain."""
    lines = [
        f"Cluster {model.get('name')} ({model.get('backend')}, id {model.get('id')}): "
        f"{model.get('status')}",
        f"  scheduler {model.get('scheduler_address') or 'none'}, "
        f"dashboard {model.get('dashboard_link') or 'none'}",
        f"  {totals_text(model)}",
    ]
    if model.get("error"):
        lines.append(f"  error: {model['error']}")
    rows = model.get("worker_info") or []
    for r in rows[:max_rows]:
        job = f" job {r.get('job_id')} {r.get('job_state')}" if r.get("job_id") else ""
        lines.append(
            f"  - {r.get('name')}: {r.get('host') or '-'}, {r.get('threads')} threads, "
            f"{format_bytes(r.get('memory_used'))} / {format_bytes(r.get('memory_limit'))}, "
            f"{r.get('processing')} processing, {r.get('status')}{job}"
        )
    hidden = _unlisted(model, min(len(rows), max_rows))
    if hidden:
        lines.append(f"  ... and {hidden} more workers")
    return "\n".join(lines)


def _unlisted(model: dict[str, Any], shown: int) -> int:
    """Workers not shown: the model lists at most a hundred connected workers in
    ``worker_info`` while its totals count every one."""
    rows = model.get("worker_info") or []
    total = max(len(rows), int(model.get("workers") or 0) + int(model.get("pending") or 0))
    return max(total - shown, 0)
