"""The built-in ``%pipecluster`` subcommands: one function each, registered in parser.py.

Each function parses nothing and decides nothing: it calls the core (manager, config)
and prints or displays what comes back. Core errors (PipejupyterError) are turned into
one-line UsageErrors by the magic's dispatcher.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pipejupyter.config.loader import load_config
from pipejupyter.environment.dashboard_links import browser_model, proxy_from_environ
from pipejupyter.lifecycle import manager
from pipejupyter.notebook import html_views
from pipejupyter.notebook import text_views as text
from pipejupyter.notebook.options_form import OptionsForm
from pipejupyter.notebook.parser import (
    CLUSTER,
    DISCOVERED,
    PROFILE,
    SUBCOMMAND,
    HelpRequested,
    adapt_range,
    arg,
    assignment,
    full_help,
    nonnegative_int,
    positive_float,
    positive_int,
    subcommand,
    subparser,
)


def _display(obj: Any) -> None:
    from IPython.display import display

    display(obj)


def _files(args: argparse.Namespace) -> list[str] | None:
    return list(args.files) or None


def _overrides(args: argparse.Namespace) -> list[str] | None:
    return list(args.overrides) or None


# Config options shared by start, profiles, config and env (same flags as the CLI).
_file_option = arg(
    "-f",
    "--file",
    dest="files",
    action="append",
    default=[],
    metavar="FILE",
    help="an explicit config file (repeatable)",
)
_set_option = arg(
    "--set",
    dest="overrides",
    action="append",
    default=[],
    type=assignment,
    metavar="KEY=VALUE",
    help="override one config key, e.g. cluster_kwargs.memory=4GiB (repeatable)",
)


@subcommand(
    "start", "start a cluster from a profile; returns its handle and makes its Client the default"
)
@arg(
    "profile",
    nargs="?",
    metavar="PROFILE",
    complete=PROFILE,
    help="profile name (default: the configured default)",
)
@arg("-n", "--workers", type=nonnegative_int, metavar="N", group="size", help="number of workers")
@arg(
    "--adapt",
    type=adapt_range,
    metavar="MIN:MAX",
    group="size",
    help="adaptive between MIN and MAX workers",
)
@_file_option
@_set_option
@arg(
    "--name", metavar="NAME", help="name of the cluster in this kernel (default: the profile name)"
)
@arg(
    "--no-wait",
    dest="wait",
    action="store_false",
    help="return at once; workers join as they start",
)
@arg(
    "--timeout",
    type=positive_float,
    metavar="S",
    help="seconds to wait for the workers (default: the profile's wait_timeout or 120)",
)
@arg(
    "--dry-run",
    action="store_true",
    help="show the resolved spec (and a batch backend's job script); start nothing",
)
@arg(
    "--options",
    action="store_true",
    help="show the profile's options form (cores, memory, walltime, ...) with a Start button",
)
def start(args: argparse.Namespace, shell: Any):
    sizing = {
        "workers": args.workers,
        "adapt": args.adapt,
        "config": _files(args),
        "overrides": _overrides(args),
    }
    if args.options:
        form = OptionsForm(
            args.profile,
            config=sizing["config"],
            overrides=sizing["overrides"],
            name=args.name,
            wait=args.wait,
        )
        if args.workers is not None:
            form["workers"] = args.workers
        if args.adapt:
            form["adapt_kwargs.minimum"], form["adapt_kwargs.maximum"] = args.adapt
        return form
    if args.dry_run:
        print(manager.dry_run(args.profile, **sizing), end="")
        return None
    handle = manager.start(
        args.profile, name=args.name, wait=args.wait, timeout=args.timeout, **sizing
    )
    print(text.started_line(handle, _browser_model(handle.model()), verb="started"))
    summary = handle.backend.env.summary() if handle.backend.env else ""
    if summary:
        print(f"environment: {summary}")
    return handle


@subcommand(
    "connect", "attach to a running cluster; returns its handle and makes its Client the default"
)
@arg(
    "target",
    metavar="ADDRESS|ID",
    complete=DISCOVERED,
    help="a scheduler address (tcp://host:port) or the id or name of a discovered cluster",
)
@arg("--name", metavar="NAME", help="name of the cluster in this kernel")
@arg(
    "--timeout",
    type=positive_float,
    default=10.0,
    metavar="S",
    help="seconds to wait for the scheduler (default: 10)",
)
def connect(args: argparse.Namespace, shell: Any):
    handle = manager.connect(args.target, name=args.name, timeout=args.timeout)
    print(text.started_line(handle, _browser_model(handle.model()), verb="connected to"))
    return handle


@subcommand("status", "the live widget of a cluster (a bare %pipecluster does the same)")
@arg(
    "name",
    nargs="?",
    metavar="NAME",
    complete=CLUSTER,
    help="cluster name or id (default: the most recent)",
)
def status(args: argparse.Namespace, shell: Any):
    if args.name is None and not _live():
        print(text.no_cluster_hint(_profile_names()))
        return None
    _display(manager.get(args.name))
    return None


@subcommand("scale", "set the number of workers (turns adaptivity off)")
@arg("n", type=nonnegative_int, metavar="N", help="number of workers")
@arg(
    "name",
    nargs="?",
    metavar="NAME",
    complete=CLUSTER,
    help="cluster name or id (default: the most recent)",
)
def scale(args: argparse.Namespace, shell: Any):
    handle = manager.get(args.name)
    handle.scale(args.n)
    print(f"{handle.name}: asked for {args.n} workers")


@subcommand("adapt", "let Dask add and remove workers between MIN and MAX")
@arg("minimum", type=nonnegative_int, metavar="MIN", help="fewest workers")
@arg("maximum", type=nonnegative_int, metavar="MAX", help="most workers")
@arg(
    "name",
    nargs="?",
    metavar="NAME",
    complete=CLUSTER,
    help="cluster name or id (default: the most recent)",
)
def adapt(args: argparse.Namespace, shell: Any):
    handle = manager.get(args.name)
    handle.adapt(args.minimum, args.maximum)
    print(f"{handle.name}: adaptive between {args.minimum} and {args.maximum} workers")


@subcommand("stop", "stop a cluster (one that was only connected is disconnected)")
@arg(
    "name",
    nargs="?",
    metavar="NAME",
    complete=CLUSTER,
    help="cluster name or id (default: the most recent)",
)
@arg("--all", action="store_true", help="every cluster of this kernel (not with NAME)")
def stop(args: argparse.Namespace, shell: Any):
    # Not an argparse exclusive group: Python 3.11's usage formatter fails on a group
    # that mixes a positional and an option.
    if args.all and args.name:
        subparser("stop").error("argument --all: not allowed with argument NAME")
    if args.all:
        names = manager.stop_all()
        print(f"stopped {', '.join(names)}" if names else "no clusters in this kernel")
        return None
    if args.name is None and not _live():
        print("no clusters in this kernel")
        return None
    handle = manager.stop(args.name)
    done = "stopped" if handle.owned else "disconnected from"
    print(f"{done} {handle.name}" + (f" ({handle.error})" if handle.error else ""))
    return None


@subcommand("use", "make a cluster the current one: its Client is the default for plain Dask code")
@arg("name", metavar="NAME", complete=CLUSTER, help="cluster name or id")
def use(args: argparse.Namespace, shell: Any):
    handle = manager.use(args.name)
    print(f"the default Dask client is now {handle.name}'s ({handle.scheduler_address})")


@subcommand("list", "clusters of this kernel and those discovered from other processes")
def list_(args: argparse.Namespace, shell: Any):
    print(text.cluster_table(manager.list_clusters(), _default_id()))


@subcommand("profiles", "the configured profiles (* marks the default)")
@_file_option
@_set_option
def profiles(args: argparse.Namespace, shell: Any):
    print(text.profile_table(load_config(_files(args), _overrides(args))))


@subcommand("config", "the merged configuration of a profile")
@arg(
    "profile",
    nargs="?",
    metavar="PROFILE",
    complete=PROFILE,
    help="profile name (default: the configured default)",
)
@arg(
    "--origin",
    action="store_true",
    help="show where each value came from (file:line, default, override)",
)
@_file_option
@_set_option
def config(args: argparse.Namespace, shell: Any):
    cfg = load_config(_files(args), _overrides(args), profile=args.profile)
    spec = cfg.resolve(args.profile)
    print(text.config_view(cfg, spec, origin=args.origin))


@subcommand("env", "exactly what workers will receive (secrets redacted) and what was sanitized")
@arg(
    "profile",
    nargs="?",
    metavar="PROFILE",
    complete=PROFILE,
    help="profile name (default: the configured default)",
)
@_file_option
@_set_option
def env(args: argparse.Namespace, shell: Any):
    spec, backend = manager.prepare(args.profile, config=_files(args), overrides=_overrides(args))
    print(text.env_view(spec.profile, backend.env))


@subcommand("logs", "recent log lines of the workers, the scheduler or the batch jobs")
@arg(
    "worker",
    nargs="?",
    metavar="WORKER",
    help="one worker's name or address (default: every worker)",
)
@arg("--scheduler", action="store_true", help="the scheduler's log instead")
@arg(
    "-n",
    "--lines",
    type=positive_int,
    default=20,
    metavar="LINES",
    help="lines per source (default: 20)",
)
@arg(
    "--cluster",
    metavar="NAME",
    complete=CLUSTER,
    help="cluster name or id (default: the most recent)",
)
def logs(args: argparse.Namespace, shell: Any):
    handle = manager.get(args.cluster)
    print(text.logs_view(handle.logs(args.worker, scheduler=args.scheduler, lines=args.lines)))


@subcommand(
    "dashboard",
    "the Dask dashboard link of a cluster (in Jupyter: through the server's proxy, with a button"
    " for dask-labextension's panes)",
)
@arg(
    "name",
    nargs="?",
    metavar="NAME",
    complete=CLUSTER,
    help="cluster name or id (default: the most recent)",
)
def dashboard(args: argparse.Namespace, shell: Any):
    from IPython.display import display

    handle = manager.get(args.name)
    proxy = proxy_from_environ()
    model = handle.model()
    if handle.dashboard_link:
        model["dashboard_link"] = handle.dashboard_link
    model = browser_model(model, proxy)
    if not model.get("dashboard_link"):
        print(f"{handle.name} has no dashboard")
        return None
    bundle = html_views.dashboard_bundle(handle.name, model, launch_button=proxy is not None)
    display(bundle, raw=True)
    return None


def _browser_model(model: dict[str, Any]) -> dict[str, Any]:
    """``model`` with the dashboard link the browser of this kernel's Jupyter server opens
    (through its proxy; unchanged outside Jupyter)."""
    return browser_model(model, proxy_from_environ())


@subcommand(
    "stages", "pipeline stage runs recorded in this directory (.pipejupyter/context.sqlite)"
)
@arg("stage", nargs="?", metavar="STAGE", help="only this stage's runs")
@arg("--items", action="store_true", help="with STAGE: every item's latest state")
def stages(args: argparse.Namespace, shell: Any):
    # sqlite3 and the store load when the stages subcommand runs, not with %load_ext.
    from pipejupyter.stages import context

    if args.items and args.stage:
        print(context.format_items(context.items(args.stage)))
    else:
        print(context.format_history(context.history(args.stage)))


@subcommand("help", "this overview, or one subcommand's options")
@arg("topic", nargs="?", metavar="SUBCOMMAND", complete=SUBCOMMAND, help="a subcommand")
def help_(args: argparse.Namespace, shell: Any):
    if args.topic:
        raise HelpRequested(subparser(args.topic).format_help())
    print(full_help())


# -- small readers of the core's state ---------------------------------------------------


def _live() -> list:
    return [h for h in manager.clusters() if str(h.status) != "stopped"]


def _default_id() -> str | None:
    """The id of this kernel's cluster whose Client is Dask's default, if any."""
    if "distributed" not in sys.modules:
        return None  # nothing started yet: no client, and no need to import distributed
    from distributed.client import _get_global_client

    client = _get_global_client()
    return next(
        (h.id for h in manager.clusters() if client is not None and h.client is client), None
    )


def _profile_names() -> list[str]:
    try:
        return load_config().profile_names
    except Exception:  # the hint is a nicety: a broken config is reported by start itself
        return []
