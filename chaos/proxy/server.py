"""`FaultProxyServer`: the Toxiproxy-compatible API plus every proxy it manages, in one event loop."""

from __future__ import annotations

import ipaddress
import logging
from types import TracebackType

from aiohttp import web

from chaos.proxy.addresses import format_addr
from chaos.proxy.api import build_app
from chaos.proxy.collection import ProxyCollection
from chaos.proxy.errors import ApiError, FaultProxyConfigError
from chaos.proxy.jsonbody import decode_body
from data_plane.netutil import is_loopback_host as is_loopback

log = logging.getLogger(__name__)

DEFAULT_PORT = 8474


class FaultProxyServer:
    """Serves the Toxiproxy 2.12 HTTP API on a loopback address (port 0 picks a free port).

    Use ``await start()`` / ``await stop()`` or ``async with``. After start, `port` and `url` are
    the bound ones. Stopping closes every proxy listener and connection.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
        if not is_loopback(host):
            raise FaultProxyConfigError(
                f"the fault proxy API must listen on a loopback address, not {host!r}: it can open "
                "TCP listeners and reshape traffic, so it is never exposed; use 127.0.0.1")
        if not 0 <= port <= 65535:
            raise FaultProxyConfigError(f"API port {port} is out of range 0-65535")
        self.host = "127.0.0.1" if host.lower().startswith("localhost") else host
        self.port = port
        self.collection = ProxyCollection()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        runner = web.AppRunner(build_app(self.collection), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise FaultProxyConfigError(
                f"cannot listen on {format_addr(self.host, self.port)}: {exc.strerror or exc}; is another "
                "fault proxy or Toxiproxy running there? Stop it, or pick another port "
                "(e.g. --listen 127.0.0.1:0 for a free one)") from None
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        log.info("fault proxy API on %s", self.url)

    async def stop(self) -> None:
        if self._runner is None:
            return
        await self.collection.close()
        await self._runner.cleanup()
        self._runner = None

    async def populate(self, raw: bytes, source: str) -> int:
        """Create the proxies of a Toxiproxy ``-config`` JSON document; returns how many."""
        try:
            proxies, err = await self.collection.populate(decode_body(raw))
        except ApiError as exc:
            raise FaultProxyConfigError(f"proxy config {source} is invalid: {exc.message}") from None
        if err is not None:
            raise FaultProxyConfigError(f"proxy config {source}: {err.message}")
        return len(proxies)

    async def __aenter__(self) -> FaultProxyServer:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()


def parse_api_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``:PORT``) for the API; a FaultProxyConfigError says what is wrong."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit():
        raise FaultProxyConfigError(f"--listen {value!r} must be HOST:PORT, e.g. 127.0.0.1:8474")
    host = host.strip("[]") or "127.0.0.1"
    try:
        if ipaddress.ip_address(host).is_unspecified:
            raise FaultProxyConfigError(
                f"--listen {value!r}: the fault proxy API binds only loopback; use 127.0.0.1:{port_text}")
    except ValueError:
        pass
    return host, int(port_text)
