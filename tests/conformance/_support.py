"""Helpers for the Toxiproxy conformance suite: a plain HTTP client, local upstreams, socket probes.

Nothing here knows whether the server under test is Toxiproxy or the project's fault proxy.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        # Toxiproxy serves error bodies as text/plain, so parse the text, whatever the type says.
        return json.loads(self.body.decode())


@dataclass
class Api:
    """Minimal Toxiproxy API client on urllib (no third-party HTTP stack in the way)."""

    url: str
    user_agent: str = "toxiproxy-conformance/1"

    def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None,
             headers: dict[str, str] | None = None) -> Reply:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        hdrs = {"User-Agent": self.user_agent, **(headers or {})}
        if data is not None:
            hdrs.setdefault("Content-Type", "application/json")
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return Reply(resp.status, resp.read(), dict(resp.headers))
        except urllib.error.HTTPError as err:
            return Reply(err.code, err.read(), dict(err.headers))

    def get(self, path: str) -> Reply:
        return self.call("GET", path)

    def post(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return self.call("POST", path, body, **kw)

    def patch(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return self.call("PATCH", path, body, **kw)

    def delete(self, path: str) -> Reply:
        return self.call("DELETE", path)


@dataclass
class Upstreams:
    """Small TCP/HTTP servers on a background event loop, so tests can use blocking sockets.

    echo: echoes bytes; banner: sends ``banner\\n`` on connect, then echoes; bye: sends ``bye\\n``
    and closes; http: ``GET /`` answers ``ok`` (keep-alive).
    """

    bind: str = "127.0.0.1"
    ports: dict[str, int] = field(default_factory=dict)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None

    def start(self) -> None:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._open())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="conformance-upstreams", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("upstream servers did not start")

    async def _open(self) -> None:
        self._servers = []
        for name, handler in (("echo", _echo), ("banner", _banner), ("bye", _bye)):
            server = await asyncio.start_server(handler, self.bind, 0)
            self._servers.append(server)
            self.ports[name] = server.sockets[0].getsockname()[1]
        app = web.Application()
        app.router.add_get("/", _ok)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.bind, 0)
        await site.start()
        self.ports["http"] = int(self._runner.addresses[0][1])

    async def _close(self) -> None:
        for server in self._servers:
            server.close()
        await self._runner.cleanup()

    def stop(self) -> None:
        assert self._loop is not None and self._thread is not None
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _pump(reader, writer)


async def _banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"banner\n")
    await _pump(reader, writer)


async def _bye(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"bye\n")
    await writer.drain()
    writer.close()


async def _ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def add_toxic(api: Api, proxy: str, **toxic: Any) -> dict[str, Any]:
    """Create a toxic and return its JSON (asserting Toxiproxy's 200)."""
    reply = api.post(f"/proxies/{proxy}/toxics", toxic)
    assert reply.status == 200, reply.body
    return reply.json()


# ---- socket probes --------------------------------------------------------------------------------

def port_of(listen: str) -> int:
    """The port of a Toxiproxy ``listen`` value (``127.0.0.1:1234``, ``[::]:1234``)."""
    return int(listen.rsplit(":", 1)[1])


def connect(host: str, port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exactly(sock: socket.socket, n: int, timeout: float = 5.0) -> bytes:
    """Read `n` bytes (fewer if the peer closes first)."""
    sock.settimeout(timeout)
    buf = b""
    while len(buf) < n:
        part = sock.recv(n - len(buf))
        if not part:
            break
        buf += part
    return buf


def round_trip(sock: socket.socket, payload: bytes, timeout: float = 5.0) -> tuple[float, bytes]:
    """(seconds, reply) for sending `payload` to an echo upstream and reading it all back."""
    start = time.monotonic()
    sock.sendall(payload)
    reply = recv_exactly(sock, len(payload), timeout)
    return time.monotonic() - start, reply


@dataclass
class Outcome:
    """How a socket ended when read until it stopped: 'eof', 'reset' or 'open' (timed out)."""

    data: bytes
    how: str
    after: float
    reads: int


def read_until_closed(sock: socket.socket, timeout: float) -> Outcome:
    """Read until EOF, reset or `timeout` seconds of waiting; counts the reads that returned data."""
    start = time.monotonic()
    data, reads = b"", 0
    while True:
        left = timeout - (time.monotonic() - start)
        if left <= 0:
            return Outcome(data, "open", time.monotonic() - start, reads)
        sock.settimeout(left)
        try:
            part = sock.recv(65536)
        except TimeoutError:
            return Outcome(data, "open", time.monotonic() - start, reads)
        except ConnectionResetError:
            return Outcome(data, "reset", time.monotonic() - start, reads)
        if not part:
            return Outcome(data, "eof", time.monotonic() - start, reads)
        data += part
        reads += 1


def refuses(host: str, port: int) -> bool:
    """True when nothing accepts connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return False
    except OSError:
        return True
