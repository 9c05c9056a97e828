"""The serving benchmark's reference upstream: the model server's stack (aiohttp on uvloop) answering
a constant seed-shaped prediction, so only the HTTP path is left.

    python -m bench.fixed_json_server --port 8002 [--workers 2]

`POST /api/v1/predict` reads the body and answers fixed JSON; `GET /ready` and `/health` answer
200 (so `meshctl` probes and the healing loop see a healthy server). `--workers N` runs N
processes on the same port with SO_REUSEPORT (the kernel spreads connections over them).
Stops on SIGTERM / SIGINT. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable

from aiohttp import web

BODY = (b'{"fraud_probability":0.953557,"is_fraud":true,"model_version":"xgboost_v1",'
        b'"model_type":"xgboost","latency_ms":0.312,"routed_to":"xgboost","fallback_reason":null}')


async def predict(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=BODY, content_type="application/json")


async def ready(request: web.Request) -> web.Response:
    return web.Response(body=b'{"ready":true}', content_type="application/json")


async def serve(host: str, port: int, reuse_port: bool) -> None:
    app = web.Application(client_max_size=1024 * 1024)
    app.router.add_post("/api/v1/predict", predict)
    app.router.add_get("/ready", ready)
    app.router.add_get("/health", ready)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=1024, reuse_address=True, reuse_port=reuse_port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def _run(host: str, port: int, reuse_port: bool) -> None:
    factory: Callable[[], asyncio.AbstractEventLoop]
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve(host, port, reuse_port))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fixed_json_server", description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--workers", type=int, default=1, help="processes sharing the port (SO_REUSEPORT)")
    args = p.parse_args(argv)
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        print("fixed_json_server: listens on loopback only", file=sys.stderr)
        return 1
    if args.workers <= 1:
        _run(args.host, args.port, reuse_port=False)
        return 0
    children = []
    for _ in range(args.workers):
        pid = os.fork()
        if pid == 0:  # a worker: its own event loop on the shared port
            _run(args.host, args.port, reuse_port=True)
            os._exit(0)
        children.append(pid)

    def forward(signum: int, frame: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for child in children:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(child, 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
