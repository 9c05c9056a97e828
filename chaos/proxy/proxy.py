"""One named TCP proxy: a loopback listener, its open connections and its toxics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from typing import Any

from chaos.proxy.addresses import canonical_listen, format_addr, resolve_listen
from chaos.proxy.chain import ToxicChain
from chaos.proxy.connection import Connection
from chaos.proxy.errors import ProxyStartError

log = logging.getLogger(__name__)


class Proxy:
    """Toxiproxy's Proxy: ``listen`` is the bound address once started (port 0 becomes real)."""

    def __init__(self, name: str, listen: str, upstream: str, rng: random.Random | None = None) -> None:
        self.name = name
        self.listen = listen
        self.upstream = upstream
        self.enabled = False
        self.rng = rng or random.Random()
        self.toxics = ToxicChain(self)
        self.connections: set[Connection] = set()
        # Serialises start/stop/update and toxic changes, as Toxiproxy's proxy and collection locks do.
        self.lock = asyncio.Lock()
        self._server: asyncio.Server | None = None

    def to_json(self) -> dict[str, Any]:
        # Toxiproxy 2.12 also serialises its proxy's exported (empty-looking) logger as "Logger": {};
        # kept so a proxy object is byte-for-byte the shape clients have seen from the real server.
        return {"name": self.name, "listen": self.listen, "upstream": self.upstream,
                "enabled": self.enabled, "Logger": {}, "toxics": self.toxics.to_json()}

    async def differs(self, listen: str, upstream: str) -> bool:
        """Would (listen, upstream) need a restart? Host names are resolved first (Toxiproxy 2.12)."""
        if upstream != self.upstream:
            return True
        return listen != self.listen and await canonical_listen(listen) != self.listen

    async def start(self) -> None:
        async with self.lock:
            await self._start()

    async def stop(self) -> None:
        async with self.lock:
            await self._stop()

    async def update(self, listen: str, upstream: str, enabled: bool) -> None:
        """Apply a ``PATCH /proxies/{name}``: restart when the address changes, then (en|dis)able."""
        async with self.lock:
            if await self.differs(listen, upstream):
                await self._stop()
                self.listen, self.upstream = listen, upstream
            if enabled and not self.enabled:
                await self._start()
            elif not enabled and self.enabled:
                await self._stop()

    async def reset(self) -> None:
        """Enable the proxy and remove all its toxics (``POST /reset``)."""
        async with self.lock:
            await self._start()
            await self.toxics.reset()

    async def _start(self) -> None:
        if self.enabled:
            return
        host, port = await resolve_listen(self.listen)
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: Connection(self).client, host, port, reuse_address=True, backlog=1024)
        except OSError as exc:
            # Go's wording, e.g. "listen tcp 127.0.0.1:8474: bind: address already in use".
            reason = f"bind: {os.strerror(exc.errno).lower()}" if exc.errno else str(exc)
            raise ProxyStartError(f"listen tcp {format_addr(host, port)}: {reason}") from None
        bound = self._server.sockets[0].getsockname()
        self.listen = format_addr(bound[0], bound[1])
        self.enabled = True
        log.info("proxy %s listening on %s -> %s", self.name, self.listen, self.upstream)

    async def _stop(self) -> None:
        """Close the listener and every open connection."""
        if not self.enabled or self._server is None:
            self.enabled = False
            return
        self.enabled = False
        server, self._server = self._server, None
        server.close()
        for conn in list(self.connections):
            conn.abort()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 2.0)
        log.info("proxy %s stopped", self.name)
