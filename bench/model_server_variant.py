"""Benchmark experiments: the model server with one serving choice changed, to measure that choice.

    python -m bench.model_server_variant [--workers 2] [--event-loop asyncio] [--no-micro-batch]
        -- --kind xgboost --port 9001 --challenger-port 0

Each worker is the unmodified `python -m model_servers` entry point with one knob turned:
- `--workers N`: N processes share the port through SO_REUSEPORT (the kernel spreads the
  connections over them);
- `--event-loop asyncio`: the stdlib loop instead of uvloop;
- `--no-micro-batch`: one ONNX Runtime call per request instead of one per loop tick.
Bench only: with several workers `POST /admin/reload` would reach one of them, which is why the
product's model server runs one process per kind.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import signal
import sys
from typing import Any


def _apply(event_loop: str, micro_batch: bool, reuse_port: bool) -> None:
    if event_loop == "asyncio":
        sys.modules["uvloop"] = None  # type: ignore[assignment]  # `import uvloop` now fails
    import model_servers.__main__ as entry

    if not micro_batch:
        entry.create_app = functools.partial(entry.create_app, micro_batch=False)  # type: ignore[assignment]
    if reuse_port:
        from aiohttp import web

        original = web.TCPSite.__init__

        def init(self: web.TCPSite, *args: Any, **kwargs: Any) -> None:
            kwargs["reuse_port"] = True
            original(self, *args, **kwargs)

        web.TCPSite.__init__ = init  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.model_server_variant",
                                description=__doc__.split("\n")[0])
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--event-loop", choices=("uvloop", "asyncio"), default="uvloop")
    p.add_argument("--no-micro-batch", action="store_true")
    p.add_argument("server_args", nargs=argparse.REMAINDER, help="-- then the model server's arguments")
    args = p.parse_args(argv)
    server_args = [a for a in args.server_args if a != "--"]
    children = []
    for _ in range(max(1, args.workers)):
        pid = os.fork()
        if pid == 0:  # a worker: the model server's own main, one knob turned
            _apply(args.event_loop, not args.no_micro_batch, reuse_port=args.workers > 1)
            from model_servers.__main__ import main as serve

            os._exit(serve(server_args))
        children.append(pid)

    def forward(signum: int, frame: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = 0
    for child in children:
        with contextlib.suppress(ChildProcessError):
            _, status = os.waitpid(child, 0)
            code = code or os.waitstatus_to_exitcode(status)
    return code


if __name__ == "__main__":
    sys.exit(main())
