"""Benchmark experiment: N model-server processes sharing one port through SO_REUSEPORT.

    python -m bench.reuseport_model_server --workers 2 -- --kind xgboost

Each worker is an unmodified `python -m model_servers` process (own event loop, slots, NATS
connection); the only difference is that its listeners are opened with SO_REUSEPORT, so the
kernel spreads the sidecar's connections over the workers. Bench only: `POST /admin/reload`
would reach one worker, which is why the product's model server runs one process per kind.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from typing import Any


def _force_reuse_port() -> None:
    from aiohttp import web

    original = web.TCPSite.__init__

    def init(self: web.TCPSite, *args: Any, **kwargs: Any) -> None:
        kwargs["reuse_port"] = True
        original(self, *args, **kwargs)

    web.TCPSite.__init__ = init  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.reuseport_model_server",
                                description=__doc__.split("\n")[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("server_args", nargs=argparse.REMAINDER, help="-- then the model server's arguments")
    args = p.parse_args(argv)
    server_args = [a for a in args.server_args if a != "--"]
    children = []
    for _ in range(max(1, args.workers)):
        pid = os.fork()
        if pid == 0:
            _force_reuse_port()
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
