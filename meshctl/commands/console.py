"""`meshctl console`: the Textual operator console (topology, charts, drift, models, chaos, ledger).

    meshctl console [--operator-url URL] [--nats-url URL | --no-events] [--poll SECONDS]

It needs an interactive terminal; without one it says so and exits 1. The operator token for
actions is read from MESH_HOME/operator-token (written by the control plane at its first start).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from data_plane.contracts.errors import MeshError
from data_plane.settings import Settings


class NoTerminalError(MeshError):
    """The console was started without an interactive terminal."""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "console", help="open the operator console (a terminal UI)",
        description="Watch and drive the mesh: topology and weights, live charts, drift, models and "
                    "canary, chaos experiments, the NATS event stream and the decision ledger. "
                    "Press ? inside for every key.")
    p.add_argument("--operator-url", default=None,
                   help="operator API base URL (default: http://<MESH_HOST>:<MESH_PORT_OPERATOR>)")
    p.add_argument("--nats-url", default=None, help="NATS for the live event log (default: MESH_NATS_URL "
                                                    "or nats://<MESH_HOST>:<MESH_PORT_NATS>)")
    p.add_argument("--no-events", action="store_true", help="do not connect to NATS")
    p.add_argument("--token-file", type=Path, default=None,
                   help="operator token file (default: MESH_HOME/operator-token)")
    p.add_argument("--poll", type=float, default=1.5, help="seconds between API polls (0.2-30, default 1.5)")
    p.set_defaults(func=run)


def _log_to_file(settings: Settings) -> None:
    """Library warnings must not scribble over the terminal UI: send them to MESH_HOME/logs."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    target: logging.Handler
    try:
        settings.log_dir.mkdir(parents=True, exist_ok=True)
        target = logging.FileHandler(settings.log_dir / "console.log")
    except OSError:
        target = logging.NullHandler()
    target.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(target)
    root.setLevel(logging.WARNING)


def run(args: argparse.Namespace) -> int:
    """Open the console until the operator quits."""
    if not 0.2 <= args.poll <= 30:
        raise MeshError(f"--poll {args.poll:g} is outside 0.2-30 seconds")
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise NoTerminalError("the console needs an interactive terminal (a TTY); run it in a terminal, "
                              "or use `meshctl status` for a one-shot report")
    from tui.app import MeshConsole
    from tui.client import OperatorClient
    from tui.events import NatsEventSource

    settings = Settings.from_env()
    _log_to_file(settings)
    client = OperatorClient(args.operator_url or settings.operator_url,
                            args.token_file or settings.operator_token_file)
    events = None if args.no_events else NatsEventSource(args.nats_url or settings.nats_url)
    MeshConsole(client, events, poll_interval=args.poll).run()
    return 0
