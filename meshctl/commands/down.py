"""`meshctl down`: stop everything `meshctl up` recorded; safe to run twice."""

from __future__ import annotations

import argparse

from data_plane.settings import Settings
from meshctl import lifecycle
from meshctl.output import emit_json


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()

    def out(line: str) -> None:
        if not args.json:
            print(line, flush=True)

    stopped = lifecycle.down(settings, timeout=args.timeout, out=out)
    if args.json:
        emit_json({"stopped": stopped})
    elif not stopped:
        print("nothing running")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("down", help="stop the mesh's processes",
                              description="SIGTERM each service's process group (SIGKILL after "
                                          "--timeout), remove the pid files.")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds before SIGKILL (default 10)")
    p.add_argument("--json", action="store_true", help="print the stopped services as JSON")
    p.set_defaults(func=run)
