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


SUBCOMMANDS: list[Callable[[SubParsers], None]] = [_register_proxy]


def register(subparsers: SubParsers) -> None:
    chaos = subparsers.add_parser("chaos", help="fault injection: the fault proxy (Toxiproxy API)",
                                  description="Fault injection for the mesh.")
    sub = chaos.add_subparsers(dest="chaos_command", metavar="CHAOS_COMMAND")
    for add in SUBCOMMANDS:
        add(sub)

    def _usage(args: argparse.Namespace) -> int:
        chaos.print_help()
        return 2

    chaos.set_defaults(func=_usage)
