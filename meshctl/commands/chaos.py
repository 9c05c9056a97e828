"""`meshctl chaos <subcommand>`: fault injection.

Each subcommand is a ``_register_<name>(chaos_subparsers)`` function listed in `SUBCOMMANDS`;
adding one (e.g. ``run``, ``list``) means writing that function and appending it there.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from data_plane.settings import Settings

SubParsers = argparse._SubParsersAction  # type: ignore[type-arg]


def _proxy(args: argparse.Namespace) -> int:
    from chaos.proxy.cli import run  # imported here so other meshctl commands start fast

    if args.listen is None:
        settings = Settings.from_env()
        args.listen = f"{settings.host}:{settings.ports.chaos_api}"
    return run(args.listen, args.config)


def _register_proxy(sub: SubParsers) -> None:
    p = sub.add_parser(
        "proxy", help="run the Toxiproxy-compatible fault proxy in the foreground",
        description="Serve the Toxiproxy 2.12 HTTP API (proxies, toxics, /populate, /reset) on a "
                    "loopback address until Ctrl-C or SIGTERM. toxiproxy-python, chaostoolkit-toxiproxy "
                    "and toxiproxy-cli work against it unchanged. See docs/chaos-proxy.md.")
    p.add_argument("--listen", default=None, metavar="HOST:PORT",
                   help="API address, loopback only (default 127.0.0.1:<MESH_PORT_CHAOS_API, 8474>; "
                        "port 0 picks a free port and prints it)")
    p.add_argument("--config", type=Path, default=None, metavar="FILE",
                   help="JSON list of proxies to create at start (Toxiproxy's -config format)")
    p.set_defaults(func=_proxy)


def _list(args: argparse.Namespace) -> int:
    from chaos.runner import list_experiments
    from meshctl.output import emit_json

    items = list_experiments()
    if args.json:
        emit_json({"experiments": items})
        return 0
    width = max((len(e["name"]) for e in items), default=4)
    for e in items:
        print(f"{e['name']:<{width}}  {e['title']}")
    return 0


def _register_list(sub: SubParsers) -> None:
    p = sub.add_parser("list", help="list the built-in chaos experiments",
                       description="The built-in Chaos Toolkit experiments (chaos/experiments/*.json).")
    p.add_argument("--json", action="store_true", help="print them as JSON")
    p.set_defaults(func=_list)


def _run(args: argparse.Namespace) -> int:
    from chaos.runner import run_experiment
    from meshctl.output import emit_json

    def show(step: dict[str, object]) -> None:
        if args.json:
            return
        detail = str(step.get("detail") or "")
        detail = f"  {detail[:160]}" if step.get("status") != "running" and detail else ""
        print(f"  [{step.get('phase')}] {step.get('name')}: {step.get('status')}{detail}", flush=True)

    if not args.json:
        print(f"running chaos experiment {args.experiment} (seed {args.seed}, "
              f"duration scale {args.duration_scale:g})", flush=True)
    report = run_experiment(args.experiment, Settings.from_env(), seed=args.seed,
                            duration_scale=args.duration_scale, on_step=show)
    if args.json:
        emit_json(report.to_dict(with_journal=False))
    else:
        print(f"{report.status.upper()}: {report.verdict}")
        print(f"journal: {report.journal_path}")
    return 0 if report.status == "passed" else 1


def _register_run(sub: SubParsers) -> None:
    p = sub.add_parser("run", help="run a chaos experiment (built-in name or JSON file) against the mesh",
                       description="Run a Chaos Toolkit experiment against the running mesh: steady-state "
                                   "hypothesis, faults, expectations, rollbacks (always). Exit 0 when it "
                                   "passed, 1 when the hypothesis deviated or an expectation failed.")
    p.add_argument("experiment", metavar="NAME|FILE",
                   help="built-in name (`meshctl chaos list`) or a JSON file")
    p.add_argument("--duration-scale", type=float, default=1.0, metavar="X",
                   help="multiply the experiment's durations (configuration keys ending in _s) by X")
    p.add_argument("--seed", type=int, default=0, help="seed of the client load's payloads (default 0)")
    p.add_argument("--json", action="store_true", help="print the run report as JSON")
    p.set_defaults(func=_run)


SUBCOMMANDS: list[Callable[[SubParsers], None]] = [_register_proxy, _register_list, _register_run]


def register(subparsers: SubParsers) -> None:
    chaos = subparsers.add_parser("chaos", help="fault injection: fault proxy, chaos experiments",
                                  description="Fault injection for the mesh.")
    sub = chaos.add_subparsers(dest="chaos_command", metavar="CHAOS_COMMAND")
    for add in SUBCOMMANDS:
        add(sub)

    def _usage(args: argparse.Namespace) -> int:
        chaos.print_help()
        return 2

    chaos.set_defaults(func=_usage)
