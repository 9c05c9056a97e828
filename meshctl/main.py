"""`meshctl`: one CLI for the mesh. Each subcommand lives in meshctl/commands/<name>.py.

A command module defines ``register(subparsers) -> None`` that adds its parser and sets
``func=<callable(args) -> int>``. Modules are discovered, so adding a command touches one file.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from data_plane.contracts.errors import MeshError


def build_parser() -> argparse.ArgumentParser:
    import meshctl.commands as pkg

    parser = argparse.ArgumentParser(
        prog="meshctl", description="Operate the self-healing fraud-scoring mesh.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        importlib.import_module(f"meshctl.commands.{info.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except MeshError as exc:
        print(f"meshctl {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"meshctl {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
