"""Run the fault proxy in the foreground until Ctrl-C or SIGTERM (``python -m chaos.proxy``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

from chaos.proxy.api import VERSION
from chaos.proxy.errors import FaultProxyConfigError
from chaos.proxy.server import DEFAULT_PORT, FaultProxyServer, parse_api_listen

log = logging.getLogger(__name__)


def _say(line: str) -> None:
    """Print a status line; a closed stdout (the parent went away) must not crash the shutdown."""
    with contextlib.suppress(BrokenPipeError, ValueError):
        print(line, flush=True)


async def serve(host: str, port: int, config: tuple[bytes, str] | None = None) -> int:
    """Serve until SIGINT/SIGTERM; prints one ``listening on <url>`` line once ready.

    `config` is (JSON document, where it came from): proxies to create before serving.
    """
    server = FaultProxyServer(host, port)
    await server.start()
    try:
        if config is not None:
            count = await server.populate(*config)
            _say(f"populated {count} proxies from {config[1]}")
        _say(f"fault proxy (Toxiproxy {VERSION} API) listening on {server.url}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
    finally:
        await server.stop()
    _say("fault proxy stopped")
    return 0


def run(listen: str, config: Path | None = None, loop: str = "auto") -> int:
    """Parse `listen` and serve; `loop` "auto" uses uvloop when installed (it cuts proxy overhead)."""
    host, port = parse_api_listen(listen)
    FaultProxyServer(host, port)  # refuse a non-loopback address before starting a loop
    document = None
    if config is not None:
        try:
            document = (config.read_bytes(), str(config))
        except OSError as exc:
            raise FaultProxyConfigError(f"cannot read proxy config {config}: {exc.strerror or exc}") from None
    if loop == "asyncio":
        return asyncio.run(serve(host, port, document))
    try:
        import uvloop
    except ImportError:  # plain asyncio works, just slower
        if loop == "uvloop":
            raise FaultProxyConfigError("--loop uvloop: uvloop is not installed") from None
        return asyncio.run(serve(host, port, document))
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(serve(host, port, document))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options shared by ``python -m chaos.proxy`` and ``meshctl chaos proxy``."""
    parser.add_argument("--listen", default=f"127.0.0.1:{DEFAULT_PORT}", metavar="HOST:PORT",
                        help="API address, loopback only (default 127.0.0.1:%(default)s; port 0 = any free)")
    parser.add_argument("--config", type=Path, default=None, metavar="FILE",
                        help="JSON list of proxies to create at start (Toxiproxy's -config format)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos.proxy", description=__doc__)
    add_arguments(parser)
    parser.add_argument("--log-level", default="WARNING", help="logging level (default WARNING)")
    parser.add_argument("--loop", choices=("auto", "uvloop", "asyncio"), default="auto",
                        help="event loop (default auto: uvloop when installed)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return run(args.listen, args.config, args.loop)
    except FaultProxyConfigError as exc:
        print(f"fault proxy: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
