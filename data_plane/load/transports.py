"""How the load engine puts a request on the wire: aiohttp, or a lean HTTP/1.1 keep-alive client.

Both keep a pool of keep-alive connections and turn every failure into a `RequestFailed` whose
`kind` is one of results.CONNECT / TIMEOUT / DISCONNECTED / PROTOCOL.

- ``http1`` (the default for http:// targets): requests pre-built as bytes (request line,
  headers, body) written straight to an asyncio transport, responses parsed just enough (status,
  Content-Length, chunked or close-delimited body, Connection). ~55-110 us of CPU per request on
  this machine against ~140-300 us for aiohttp (bench/bench_loadgen.py): on a 2-core box where the
  generator shares the CPU with the mesh it measures, that decides whether 2-3k rps hold their
  schedule. Plain http only.
- ``aiohttp``: the full client (https, and a second opinion when in doubt).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from data_plane.load.payloads import Payload
from data_plane.load.results import CONNECT, DISCONNECTED, PROTOCOL, TIMEOUT
from data_plane.load.targets import LoadTargetError

TRANSPORTS = ("aiohttp", "http1")


class RequestFailed(Exception):
    """A request got no usable HTTP response; `kind` says why."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class Transport(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def send(self, index: int, request_id: str | None = None) -> tuple[int, bytes]:
        """POST payload `index` (with `x-request-id: request_id` when given); return (status, body)
        or raise RequestFailed."""
        ...


def make_transport(name: str, url: str, payloads: Sequence[Payload], pool: int, timeout: float) -> Transport:
    """The transport called `name` for `url`, with `payloads` prepared for it."""
    if name == "aiohttp":
        return AiohttpTransport(url, payloads, pool, timeout)
    if name == "http1":
        return Http1Transport(url, payloads, pool, timeout)
    raise LoadTargetError(f"--transport must be one of {', '.join(TRANSPORTS)} (got {name!r})")


class AiohttpTransport:
    """aiohttp ClientSession with a keep-alive TCPConnector sized to the outstanding cap."""

    def __init__(self, url: str, payloads: Sequence[Payload], pool: int, timeout: float) -> None:
        # Pre-built per request: a parsed URL and header multidicts spare aiohttp the conversion.
        self._url = URL(url)
        self._prepared = [(p.body, CIMultiDict(p.headers)) for p in payloads]
        self._pool, self._timeout = pool, timeout
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(limit=self._pool, limit_per_host=0, ttl_dns_cache=300,
                                         keepalive_timeout=30)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=self._timeout),
            auto_decompress=False, skip_auto_headers=("User-Agent",))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(self, index: int, request_id: str | None = None) -> tuple[int, bytes]:
        body, headers = self._prepared[index]
        if request_id is not None:
            headers = headers.copy()
            headers["x-request-id"] = request_id
        assert self._session is not None
        try:
            async with self._session.post(self._url, data=body, headers=headers) as resp:
                return resp.status, await resp.read()
        except TimeoutError:  # aiohttp's ServerTimeoutError is a TimeoutError too
            raise RequestFailed(TIMEOUT) from None
        except aiohttp.ClientConnectorError:
            raise RequestFailed(CONNECT) from None
        except aiohttp.ServerDisconnectedError:
            raise RequestFailed(DISCONNECTED) from None
        except (aiohttp.ClientError, OSError):
            raise RequestFailed(PROTOCOL) from None


class _Connection(asyncio.Protocol):
    """One keep-alive connection: at most one request in flight (no pipelining)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.reusable = True
        self._buf = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._buf += data
        try:
            parsed = _parse_response(self._buf, eof=False)
        except ValueError:
            self._fail(RequestFailed(PROTOCOL))
            return
        if parsed is not None:
            self._finish(parsed)

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        if self.waiter is None or self.waiter.done():
            return
        try:  # a response delimited by the close itself (no length, not chunked)
            parsed = _parse_response(self._buf, eof=True) if self._buf else None
        except ValueError:
            parsed = None
        if parsed is not None:
            self._finish(parsed)
        else:
            self._fail(RequestFailed(DISCONNECTED))

    def _finish(self, parsed: tuple[int, bytes, int, bool]) -> None:
        status, body, used, keep_alive = parsed
        del self._buf[:used]
        if self._buf or not keep_alive:
            self.reusable = False  # bytes nobody asked for, or the server said close
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((status, body))
        else:
            self.reusable = False  # an answer with no request waiting: the stream is out of step

    def _fail(self, exc: Exception) -> None:
        self.reusable = False
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.close()


class Http1Transport:
    """A lean HTTP/1.1 client: pre-built request bytes, LIFO pool of idle keep-alive connections."""

    def __init__(self, url: str, payloads: Sequence[Payload], pool: int, timeout: float) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http":
            raise LoadTargetError("--transport http1 speaks plain http only; use --transport aiohttp "
                                  f"for {parts.scheme}:// targets")
        self._host = (parts.hostname or "127.0.0.1").strip("[]")
        self._port = parts.port or 80
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host_header = parts.netloc.rsplit("@", 1)[-1]
        self._requests = [_build_request(path, host_header, p) for p in payloads]
        self._pool, self._timeout = pool, timeout
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()

    async def close(self) -> None:
        for conn in list(self._all):
            if conn.transport is not None:
                conn.transport.close()
        self._idle.clear()
        self._all.clear()

    async def send(self, index: int, request_id: str | None = None) -> tuple[int, bytes]:
        loop = self._loop
        assert loop is not None
        deadline = loop.time() + self._timeout
        conn = self._idle_connection() or await self._connect(deadline)
        waiter: asyncio.Future[tuple[int, bytes]] = loop.create_future()
        conn.waiter = waiter
        assert conn.transport is not None
        request = self._requests[index]
        if request_id is not None:  # the header goes right after the request line
            line_end = request.index(b"\r\n") + 2
            request = b"".join((request[:line_end], b"x-request-id: ", request_id.encode("latin-1"),
                                b"\r\n", request[line_end:]))
        conn.transport.write(request)
        timer = loop.call_at(deadline, _expire, conn, waiter)
        try:
            result = await waiter
        except asyncio.CancelledError:
            conn.reusable = False
            conn.transport.close()
            raise
        finally:
            timer.cancel()
            if conn.reusable and len(self._idle) < self._pool:
                self._idle.append(conn)
            else:
                self._all.discard(conn)
                if conn.transport is not None and not conn.transport.is_closing():
                    conn.transport.close()
        return result

    def _idle_connection(self) -> _Connection | None:
        while self._idle:
            conn = self._idle.pop()
            if conn.reusable and conn.transport is not None and not conn.transport.is_closing():
                return conn
            self._all.discard(conn)  # the server closed it while it sat idle
        return None

    async def _connect(self, deadline: float) -> _Connection:
        assert self._loop is not None
        try:
            async with asyncio.timeout_at(deadline):
                _, conn = await self._loop.create_connection(_Connection, self._host, self._port)
        except TimeoutError:
            raise RequestFailed(TIMEOUT) from None
        except OSError:
            raise RequestFailed(CONNECT) from None
        self._all.add(conn)
        return conn


def _expire(conn: _Connection, waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        conn._fail(RequestFailed(TIMEOUT))


def _build_request(path: str, host: str, payload: Payload) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(payload.body)}"]
    lines += [f"{k}: {v}" for k, v in payload.headers.items()
              if k.lower() not in ("host", "content-length", "connection")]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload.body


def _parse_response(buf: bytearray, *, eof: bool) -> tuple[int, bytes, int, bool] | None:
    """(status, body, bytes used, keep-alive) once `buf` holds a whole response, else None.

    Raises ValueError on a malformed response.
    """
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        if len(buf) > 65536:
            raise ValueError("response header too long")
        return None
    head = bytes(buf[:head_end]).lower()
    if not head.startswith(b"http/1."):
        raise ValueError("not an HTTP/1.x response")
    status = int(head[9:12])
    connection = _header(head, b"connection")
    if head.startswith(b"http/1.0"):
        keep_alive = connection is not None and b"keep-alive" in connection
    else:
        keep_alive = connection is None or b"close" not in connection
    raw_length = _header(head, b"content-length")
    length = int(raw_length) if raw_length is not None else None
    chunked = b"chunked" in (_header(head, b"transfer-encoding") or b"")
    start = head_end + 4
    if status < 200 or status in (204, 304):
        return status, b"", start, keep_alive
    if chunked:
        return _parse_chunked(buf, start, status, keep_alive)
    if length is not None:
        end = start + length
        return (status, bytes(buf[start:end]), end, keep_alive) if len(buf) >= end else None
    # Neither length nor chunked: the body runs until the server closes the connection.
    return (status, bytes(buf[start:]), len(buf), False) if eof else None


def _header(head: bytes, name: bytes) -> bytes | None:
    """The value of header `name` in a lower-cased header block (first occurrence), or None."""
    at = head.find(b"\r\n" + name + b":")
    if at < 0:
        return None
    at += len(name) + 3
    end = head.find(b"\r\n", at)
    return head[at:end if end >= 0 else len(head)].strip()


def _parse_chunked(buf: bytearray, pos: int, status: int,
                   keep_alive: bool) -> tuple[int, bytes, int, bool] | None:
    body = bytearray()
    while True:
        line_end = buf.find(b"\r\n", pos)
        if line_end < 0:
            return None
        size = int(bytes(buf[pos:line_end]).split(b";", 1)[0], 16)
        pos = line_end + 2
        if size == 0:
            trailer_end = buf.find(b"\r\n", pos)
            while trailer_end > pos:  # skip trailer headers up to the empty line
                pos = trailer_end + 2
                trailer_end = buf.find(b"\r\n", pos)
            if trailer_end < 0:
                return None
            return status, bytes(body), trailer_end + 2, keep_alive
        if len(buf) < pos + size + 2:
            return None
        body += buf[pos:pos + size]
        pos += size + 2
