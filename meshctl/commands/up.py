"""`meshctl up [--detach]`: start nats, the control plane, the edge Envoy and whatever else is ready."""

from __future__ import annotations

import argparse

from data_plane.settings import Settings
from meshctl import lifecycle
from meshctl.output import emit_json
from meshctl.services import service_names


def _names(raw: str | None) -> list[str] | None:
    return [n.strip() for n in raw.split(",") if n.strip()] if raw else None


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    quiet = args.json

    def out(line: str) -> None:
        if not quiet:
            print(line, flush=True)

    out(f"starting the mesh in {settings.home}")
    records = lifecycle.up(settings, only=_names(args.only), skip=_names(args.skip), out=out)
    if args.json:
        emit_json({"home": str(settings.home),
                   "services": {n: {"pid": r.pid, "ports": r.ports, "log": r.log}
                                for n, r in records.items()}})
    else:
        out(f"edge API  {settings.edge_url}   operator API {settings.operator_url}")
        out(f"operator token: {settings.operator_token_file}   logs: {settings.log_dir}")
    if args.detach:
        out("detached; `meshctl status` shows it, `meshctl down` stops it")
        return 0
    return lifecycle.foreground(settings, out=out)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "up", help="start the mesh (nats, control plane, Envoys, model servers)",
        description="Start every enabled service in order and wait until each is ready. Services "
                    "already running are kept. Ports come from MESH_PORT_<NAME>.")
    p.add_argument("-d", "--detach", action="store_true",
                   help="return once everything is ready (default: stay in the foreground; Ctrl-C stops)")
    p.add_argument("--only", metavar="NAMES", help=f"comma-separated subset of: {', '.join(service_names())}")
    p.add_argument("--skip", metavar="NAMES", help="comma-separated services not to start")
    p.add_argument("--json", action="store_true", help="print the started services as JSON")
    p.set_defaults(func=run)
