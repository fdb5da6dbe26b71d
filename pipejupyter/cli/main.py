"""The ``pipejupyter`` command: a thin face over config and manager.

Exit status 2 and one line on stderr for any configuration or usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import yaml

from pipejupyter.cli.demo import run
from pipejupyter.config.loader import load_config
from pipejupyter.environment.redaction import redact_tree
from pipejupyter.errors import PipejupyterError
from pipejupyter.lifecycle import discovery
from pipejupyter.lifecycle.manager import dry_run, list_clusters, prepare, stop_discovered


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipejupyter", description="Dask clusters for pipelines, from configuration."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def config_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "-f",
            "--file",
            dest="files",
            action="append",
            default=[],
            metavar="FILE",
            help="an explicit config file (repeatable)",
        )
        p.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override one key (repeatable)",
        )

    p = sub.add_parser("config", help="print the resolved profile")
    p.add_argument(
        "--profile", "-p", default=None, help="profile name (default: the configured default)"
    )
    config_options(p)
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.add_argument("--origin", action="store_true", help="show where each value came from")

    p = sub.add_parser("profiles", help="list the configured profiles")
    config_options(p)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("env", help="what workers of a profile receive (secrets redacted)")
    p.add_argument("--profile", "-p", default=None)
    config_options(p)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("dry-run", help="show what `start` would do; starts nothing")
    p.add_argument("profile", nargs="?")
    p.add_argument("-n", "--workers", type=int, default=None)
    config_options(p)

    p = sub.add_parser("list", help="clusters discovered from kernels, servers and scripts")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("stop", help="shut down a discovered cluster")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("id", nargs="?", help="cluster id or name")
    target.add_argument("--all", action="store_true", help="every discovered cluster")

    p = sub.add_parser("demo", help="start the default profile, run tasks, show the model, stop")
    p.add_argument("profile", nargs="?")
    p.add_argument("-n", "--workers", type=int, default=None)
    config_options(p)
    return parser


def _spec_json(spec) -> dict[str, Any]:

    data = {
        "profile": spec.profile,
        "backend": spec.backend,
        "cluster_class": spec.cluster_class,
        "cluster_kwargs": spec.cluster_kwargs,
        "adapt_kwargs": spec.adapt_kwargs,
        "workers": spec.workers,
        "env": spec.env,
        "mpi": spec.mpi,
        "scheduler": spec.scheduler,
        "dask_config": spec.dask_config,
        "casaconfig": spec.casaconfig,
        "options": spec.options,
        "notes": spec.notes,
        "warnings": spec.warnings,
    }
    # Secret-named values (env.set, gateway passwords, ...) and URL passwords at any depth.
    return redact_tree(data, spec.env.get("redact") or ())


def _cmd_config(args) -> int:

    cfg = load_config(args.files, args.overrides, profile=args.profile)
    spec = cfg.resolve(args.profile)
    data = _spec_json(spec)
    if args.origin:
        data["origin"] = spec.origin
        data["files"] = [
            {"path": f.path, "role": f.role, "formats": list(f.formats)} for f in cfg.files
        ]
    if args.json:
        print(json.dumps(data, sort_keys=False, default=str))
    else:
        print(yaml.safe_dump(data, sort_keys=False, default_flow_style=False), end="")
        _print_warnings(spec.warnings)
    return 0


def _print_warnings(warnings: list[str]) -> None:
    for warning in warnings:
        print(f"pipejupyter: warning: {warning}", file=sys.stderr)


def _cmd_profiles(args) -> int:

    cfg = load_config(args.files, args.overrides)
    rows = []
    for name, body in cfg.profiles.items():
        rows.append(
            {
                "name": name,
                "default": name == cfg.default_profile,
                "backend": body.get("backend") or body.get("cluster_class"),
                "workers": body.get("workers"),
                "description": body.get("description", ""),
                "origin": cfg.where(("profiles", name)),
            }
        )
    if args.json:
        print(json.dumps(rows))
        _print_warnings(cfg.warnings)
        return 0
    for row in rows:
        mark = "*" if row["default"] else " "
        workers = "auto" if row["workers"] is None else row["workers"]
        print(
            f"{mark} {row['name']:<16} {row['backend']:<28} workers={workers:<5} "
            f"{row['description']}  [{row['origin']}]"
        )
    _print_warnings(cfg.warnings)
    return 0


def _cmd_env(args) -> int:

    spec, backend = prepare(args.profile, config=args.files, overrides=args.overrides)
    env = backend.env
    data = {
        "variables": env.redacted(),
        "removed_mpi": env.removed_mpi,
        "removed_slurm_for_submission": env.removed_slurm,
    }
    if args.json:
        print(json.dumps(data))
    else:
        for name, value in data["variables"].items():
            print(f"{name}={value}")
        if env.summary():
            print(f"# {env.summary()}")
    return 0


def _cmd_dry_run(args) -> int:

    print(
        dry_run(args.profile, workers=args.workers, config=args.files, overrides=args.overrides),
        end="",
    )
    return 0


def _cmd_list(args) -> int:

    records = list_clusters()
    if args.json:
        print(json.dumps(records, default=str))
        return 0
    if not records:
        print("no running clusters")
    for r in records:
        owner = r.get("owner") or {}
        print(
            f"{r['id']}  {r['name']:<16} {r['backend']:<10} {r['status']:<9} "
            f"{r.get('scheduler_address') or '-'}  "
            f"owner {owner.get('kind')} pid {owner.get('pid')}"
        )
    return 0


def _cmd_stop(args) -> int:

    targets = [r["id"] for r in discovery.read_all()] if args.all else [args.id]
    for target in targets:
        record = stop_discovered(target)
        print(f"stopped {record['name']} ({record['id']})")
    if args.all and not targets:
        print("no running clusters")
    return 0


def _cmd_demo(args) -> int:

    return run(args.profile, workers=args.workers, files=args.files, overrides=args.overrides)


COMMANDS = {
    "config": _cmd_config,
    "profiles": _cmd_profiles,
    "env": _cmd_env,
    "dry-run": _cmd_dry_run,
    "list": _cmd_list,
    "stop": _cmd_stop,
    "demo": _cmd_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except PipejupyterError as exc:
        print(f"pipejupyter {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
