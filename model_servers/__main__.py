"""Run one model server: `python -m model_servers --kind xgboost|pytorch|heuristic`.

Ports default to the settings' (`MESH_PORT_XGBOOST`, `MESH_PORT_XGBOOST_CHALLENGER`, ...); the
challenger listener exists for xgboost and pytorch only. Runs on uvloop when it is installed.
SIGTERM/SIGINT: /ready turns 503 (so health checks route away), the listeners close, requests on
existing connections are still answered for --drain-grace seconds (with `Connection: close`),
requests in flight finish (up to --drain-timeout seconds), then the process exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from collections.abc import Callable

from aiohttp import web

from data_plane.contracts.errors import MeshError
from data_plane.settings import Settings
from model_servers.app import context_of, create_app
from model_servers.context import HEURISTIC, KINDS, ServerContext

log = logging.getLogger("model_servers")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m model_servers",
                                description="Serve fraud predictions for one model kind.")
    p.add_argument("--kind", required=True, choices=KINDS)
    p.add_argument("--port", type=int, help="champion listener (default: the kind's settings port)")
    p.add_argument("--challenger-port", type=int,
                   help="challenger listener (default: settings; xgboost/pytorch only; 0 = none)")
    p.add_argument("--host", help="bind address (default: settings host, 127.0.0.1)")
    p.add_argument("--nats-url", help="NATS for prediction records and model events "
                                      "(default: settings)")
    p.add_argument("--no-nats", action="store_true", help="do not connect to NATS")
    p.add_argument("--log-buffer", type=int, default=256,
                   help="prediction batches kept while NATS is away before dropping (default 256)")
    p.add_argument("--registry-poll", type=float, default=30.0,
                   help="seconds between registry alias checks; 0 = NATS events only (default 30)")
    p.add_argument("--no-micro-batch", action="store_true",
                   help="score every request in its own model call (default: the requests of one "
                        "event-loop tick share a call; ML kinds only)")
    p.add_argument("--drain-timeout", type=float, default=10.0,
                   help="seconds in-flight requests may take after SIGTERM (default 10)")
    p.add_argument("--drain-grace", type=float, default=0.5,
                   help="seconds existing connections are still served after SIGTERM, answering "
                        "with Connection: close (default 0.5)")
    return p


def _ports(args: argparse.Namespace, settings: Settings) -> tuple[int, int | None]:
    port = args.port if args.port is not None else getattr(settings.ports, args.kind)
    if args.kind == HEURISTIC:
        return port, None
    challenger = args.challenger_port
    if challenger is None:
        challenger = getattr(settings.ports, f"{args.kind}_challenger")
    return port, (challenger or None)


async def serve(args: argparse.Namespace, settings: Settings) -> int:
    """Start the listeners, wait for SIGTERM/SIGINT, drain, stop."""
    host = args.host or settings.bind_host
    port, challenger_port = _ports(args, settings)
    app = create_app(args.kind, settings, nats_url=None if args.no_nats else (args.nats_url or
                                                                              settings.nats_url),
                     challenger_ports=(challenger_port,) if challenger_port else (),
                     log_buffer=args.log_buffer, registry_poll_s=args.registry_poll,
                     micro_batch=not args.no_micro_batch)
    ctx = context_of(app)
    runner = web.AppRunner(app, access_log=None, handle_signals=False,
                           shutdown_timeout=args.drain_timeout)
    await runner.setup()
    listeners = [(port, "champion")] + ([(challenger_port, "challenger")] if challenger_port else [])
    try:
        for p, _slot in listeners:
            await web.TCPSite(runner, host, p, backlog=1024, reuse_address=True).start()
    except OSError as exc:
        await runner.cleanup()
        raise MeshError(f"cannot listen on {host}:{p} ({exc.strerror or exc}); stop what uses it or "
                        f"choose another port (--port/--challenger-port or MESH_PORT_*)") from None
    log.info("%s model server listening on %s (pid %d)", args.kind,
             ", ".join(f"{host}:{p} ({s})" for p, s in listeners), __import__("os").getpid())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await drain(runner, ctx, args.kind, grace_s=args.drain_grace, timeout_s=args.drain_timeout)
    return 0


async def drain(runner: web.AppRunner, ctx: ServerContext, kind: str, grace_s: float,
                timeout_s: float) -> None:
    """Graceful stop. Why not just `runner.cleanup()`: it marks every connection closing at once,
    and aiohttp then ignores bytes still arriving on them, so a request whose body is in transit
    would hang until the timeout. Instead: stop accepting, keep reading existing connections for
    `grace_s` while answering with `Connection: close` (keep-alive peers such as Envoy move on),
    wait for the handlers in flight, then clean up (closes idle connections, flushes the log)."""
    started = time.monotonic()
    ctx.draining = True  # /ready -> 503; responses carry Connection: close
    for site in list(runner.sites):
        await site.stop()
    log.info("%s model server draining (%d requests in flight)", kind, ctx.metrics.in_flight_now)
    deadline = started + timeout_s
    await asyncio.sleep(max(0.0, min(grace_s, timeout_s)))
    # Polling a plain int: an Event would cost every request a set/clear on the hot path.
    while ctx.metrics.in_flight_now > 0 and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    if ctx.metrics.in_flight_now:
        log.warning("%s model server: %d requests still in flight after %.1f s; stopping anyway",
                    kind, ctx.metrics.in_flight_now, timeout_s)
    await runner.cleanup()
    log.info("%s model server stopped after %.2f s drain", kind, time.monotonic() - started)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings.from_env()
    logging.basicConfig(level=getattr(logging, settings.log_level, logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    runner_factory: Callable[[], asyncio.AbstractEventLoop]
    try:
        import uvloop

        runner_factory = uvloop.new_event_loop
    except ImportError:  # optional: plain asyncio works, a little slower
        runner_factory = asyncio.new_event_loop
    try:
        with asyncio.Runner(loop_factory=runner_factory) as runner:
            return runner.run(serve(args, settings))
    except MeshError as exc:
        print(f"model server: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
