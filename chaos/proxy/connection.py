"""A proxied TCP connection: the client's socket, the upstream socket and a link each way.

Closing follows Toxiproxy: when one direction ends (its source sent FIN or failed), the link
flushes what its toxics hold, then fully closes its destination; that ends the other direction,
which flushes and closes the remaining socket. Disabling or deleting the proxy aborts both sockets.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from typing import TYPE_CHECKING, cast

from chaos.proxy.addresses import split_host_port
from chaos.proxy.link import HOLD_CONNECTING, HOLD_DEST_FULL, Link
from chaos.proxy.toxics import Direction

if TYPE_CHECKING:
    from chaos.proxy.proxy import Proxy

log = logging.getLogger(__name__)

_LINGER_RST = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST


class Endpoint(asyncio.Protocol):
    """One socket of a proxied connection (the client's or the upstream's)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.transport: asyncio.Transport | None = None
        self.inbound: Link | None = None  # the link that reads this socket
        self.outbound: Link | None = None  # the link that writes this socket
        self.holds = 0
        self.closing = False
        self.lost = False
        # uvloop may deliver reads before a pause requested in connection_made takes effect:
        # what arrives before the links exist waits here.
        self.early: list[bytes] = []
        self.early_eof = False

    # ---- asyncio callbacks -----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but implement it.
        self.transport = cast(asyncio.Transport, transport)
        self.hold_reading(HOLD_CONNECTING)  # nothing is read until both sockets and links exist
        self.conn.endpoint_made(self)

    def data_received(self, data: bytes) -> None:
        link = self.inbound
        if link is None:
            self.early.append(data)
        elif link.fast:  # the hot path: one call, no queue
            link.write(data)
        else:
            link.feed(data)

    def eof_received(self) -> bool:
        if self.inbound is not None:
            self.inbound.feed_eof()
        else:
            self.early_eof = True
        return True  # keep the socket open for the other direction; the link closes it

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._stop_writes()
        self.conn.endpoint_lost(self)

    def pause_writing(self) -> None:
        if self.outbound is not None:
            self.outbound.source.hold_reading(HOLD_DEST_FULL)

    def resume_writing(self) -> None:
        if self.outbound is not None:
            self.outbound.source.release_reading(HOLD_DEST_FULL)

    # ---- control ---------------------------------------------------------------------------------
    def hold_reading(self, reason: int) -> None:
        if not self.holds and not self.closing and self.transport is not None:
            self.transport.pause_reading()
        self.holds |= reason

    def release_reading(self, reason: int) -> None:
        if not self.holds & reason:
            return
        self.holds &= ~reason
        if not self.holds and not self.closing and self.transport is not None:
            self.transport.resume_reading()

    def _stop_writes(self) -> None:
        """From now on the link writing this socket discards its bytes."""
        self.closing = True
        if self.outbound is not None:
            self.outbound.dest_closed()

    def close(self) -> None:
        """Flush what is buffered, then close (FIN)."""
        if self.closing:
            return
        self._stop_writes()
        if self.transport is not None:
            self.transport.close()

    def abort(self, rst: bool = False) -> None:
        """Close now, dropping buffered data; with `rst`, the peer gets a TCP RST."""
        if self.lost or self.transport is None:
            return
        if rst:
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
                except OSError:  # already gone: nothing to reset
                    pass
        self._stop_writes()
        self.transport.abort()


class Connection:
    """Accepted client + dialed upstream, joined by an upstream and a downstream link."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.client = Endpoint(self)
        self.upstream: Endpoint | None = None
        self.links: dict[Direction, Link] = {}
        self._dialing: asyncio.Task[None] | None = None
        self.closed = False

    def endpoint_made(self, endpoint: Endpoint) -> None:
        if endpoint is self.client:
            self.proxy.connections.add(self)
            self._dialing = asyncio.get_running_loop().create_task(self._dial())

    async def _dial(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            host, port = split_host_port(self.proxy.upstream)
            _, upstream = await loop.create_connection(lambda: Endpoint(self), host or None, port)
        except (OSError, ValueError) as exc:
            log.warning("proxy %s: cannot reach upstream %s: %s", self.proxy.name, self.proxy.upstream, exc)
            self.client.close()
            return
        finally:
            self._dialing = None
        if self.closed or self.client.closing:
            upstream.abort()
            return
        self._join(upstream)

    def _join(self, upstream: Endpoint) -> None:
        self.upstream = upstream
        chains = self.proxy.toxics
        up = Link(self, Direction.UPSTREAM, self.client, upstream,
                  chains.chain(Direction.UPSTREAM), self.proxy.rng)
        down = Link(self, Direction.DOWNSTREAM, upstream, self.client,
                    chains.chain(Direction.DOWNSTREAM), self.proxy.rng)
        self.links = {Direction.UPSTREAM: up, Direction.DOWNSTREAM: down}
        self.client.inbound, self.client.outbound = up, down
        upstream.inbound, upstream.outbound = down, up
        for endpoint, link in ((self.client, up), (upstream, down)):
            for data in endpoint.early:
                link.feed(data)
            endpoint.early.clear()
            if endpoint.early_eof:
                link.feed_eof()
            endpoint.release_reading(HOLD_CONNECTING)

    def endpoint_lost(self, endpoint: Endpoint) -> None:
        if endpoint.inbound is not None:
            endpoint.inbound.feed_eof()  # flush to the other socket, then close it
        elif endpoint is self.client and self._dialing is not None:
            self._dialing.cancel()
        if self.client.lost and (self.upstream is None or self.upstream.lost):
            self._teardown()

    def _teardown(self) -> None:
        if self.closed:
            return
        self.closed = True
        for link in self.links.values():
            link.cancel()
        self.proxy.connections.discard(self)

    def abort(self) -> None:
        """Close both sockets now (the proxy was disabled or deleted)."""
        if self._dialing is not None:
            self._dialing.cancel()
        self.client.abort()
        if self.upstream is not None:
            self.upstream.abort()

    def reset(self) -> None:
        """Abort both sockets with TCP RST (the reset_peer toxic)."""
        self.client.abort(rst=True)
        if self.upstream is not None:
            self.upstream.abort(rst=True)
