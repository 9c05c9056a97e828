"""The fault proxy in-process (plain asyncio loop, loopback sockets): policies and data integrity."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import pytest

from chaos.proxy import FaultProxyConfigError, FaultProxyServer, ListenAddressError
from chaos.proxy.addresses import resolve_listen, split_host_port
from chaos.proxy.link import HIGH_WATER
from chaos.proxy.server import parse_api_listen
from chaos.proxy.toxics import Direction

# ---- address policy ------------------------------------------------------------------------------

@pytest.mark.parametrize("host", ["10.0.0.5", "0.0.0.0", "example.com", "::"])
def test_api_refuses_non_loopback_hosts(host):
    with pytest.raises(FaultProxyConfigError, match="loopback"):
        FaultProxyServer(host, 8474)


def test_api_accepts_loopback_and_checks_the_port():
    assert FaultProxyServer("localhost", 0).host == "127.0.0.1"
    assert FaultProxyServer("::1", 0).url == "http://[::1]:0"
    with pytest.raises(FaultProxyConfigError, match="out of range"):
        FaultProxyServer("127.0.0.1", 70000)


@pytest.mark.parametrize("value", ["8474", "127.0.0.1", "127.0.0.1:http", "0.0.0.0:8474"])
def test_cli_listen_values_are_checked(value):
    with pytest.raises(FaultProxyConfigError):
        parse_api_listen(value)


def test_cli_listen_defaults_the_host_to_loopback():
    assert parse_api_listen(":9000") == ("127.0.0.1", 9000)


@pytest.mark.parametrize(("listen", "bound"), [
    ("", ("127.0.0.1", 0)),
    (":26000", ("127.0.0.1", 26000)),
    ("0.0.0.0:0", ("127.0.0.1", 0)),
    ("[::]:5", ("::1", 5)),
    ("localhost:7", ("127.0.0.1", 7)),
    ("127.0.0.2:8", ("127.0.0.2", 8)),
])
async def test_proxy_listen_addresses_bind_loopback(listen, bound):
    assert await resolve_listen(listen) == bound


@pytest.mark.parametrize("listen", ["10.1.2.3:80", "127.0.0.1", "a:b:c", "127.0.0.1:99999"])
async def test_bad_or_remote_proxy_listen_addresses_are_400(listen):
    with pytest.raises(ListenAddressError) as err:
        await resolve_listen(listen)
    assert err.value.status == 400


def test_split_host_port_reads_ipv6_brackets():
    assert split_host_port("[::1]:80") == ("::1", 80)
    assert split_host_port(":80") == ("", 80)


# ---- traffic, in-process ---------------------------------------------------------------------------

async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


@pytest.fixture
async def rig() -> AsyncIterator[tuple[FaultProxyServer, aiohttp.ClientSession, int]]:
    echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
    async with FaultProxyServer("127.0.0.1", 0) as server, aiohttp.ClientSession(server.url) as http:
        yield server, http, echo.sockets[0].getsockname()[1]
    echo.close()


async def _proxy(http: aiohttp.ClientSession, upstream_port: int) -> int:
    async with http.post("/proxies", json={"name": "p", "listen": "127.0.0.1:0",
                                           "upstream": f"127.0.0.1:{upstream_port}"}) as resp:
        assert resp.status == 201
        return int((await resp.json())["listen"].rsplit(":", 1)[1])


async def test_bytes_stay_whole_and_ordered_while_toxics_change_mid_stream(rig):
    _, http, echo_port = rig
    reader, writer = await asyncio.open_connection("127.0.0.1", await _proxy(http, echo_port))
    payload = bytes(i % 251 for i in range(3_000_000))
    received = bytearray()
    progress: list[int] = []  # bytes received when each toxic was added

    async def pump_in() -> None:
        for i in range(0, len(payload), 30_000):
            writer.write(payload[i:i + 30_000])
            await writer.drain()
            await asyncio.sleep(0.004)  # spread the stream over the whole churn

    async def pump_out() -> None:
        while len(received) < len(payload):
            received.extend(await reader.read(65536))

    async def churn() -> None:
        toxics = [{"name": "lat", "type": "latency", "attributes": {"latency": 2}},
                  {"name": "sl", "type": "slicer", "stream": "upstream",
                   "attributes": {"average_size": 4000, "delay": 10}},
                  {"name": "bw", "type": "bandwidth", "attributes": {"rate": 50_000}}]
        for _ in range(6):
            for t in toxics:
                await (await http.post("/proxies/p/toxics", json=t)).release()
                progress.append(len(received))
                await asyncio.sleep(0.01)
            await (await http.patch("/proxies/p/toxics/lat", json={"attributes": {"latency": 1}})).release()
            for t in reversed(toxics):
                await (await http.delete(f"/proxies/p/toxics/{t['name']}")).release()
                await asyncio.sleep(0.01)

    await asyncio.wait_for(asyncio.gather(pump_in(), pump_out(), churn()), 60)
    assert bytes(received) == payload
    assert sum(0 < n < len(payload) for n in progress) >= 5  # the changes really hit a live stream
    writer.close()


async def test_a_slow_toxic_bounds_what_the_proxy_buffers(rig):
    server, http, echo_port = rig
    port = await _proxy(http, echo_port)
    await (await http.post("/proxies/p/toxics", json={"type": "bandwidth",
                                                       "attributes": {"rate": 100}})).release()
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    sent = 0

    async def flood() -> None:
        nonlocal sent
        block = bytes(256 * 1024)
        while sent < 64 * 1024 * 1024:
            writer.write(block)
            await writer.drain()
            sent += len(block)

    flooding = asyncio.get_running_loop().create_task(flood())
    await asyncio.sleep(1.0)
    proxy = server.collection.get("p")
    (conn,) = proxy.connections
    assert conn.links[Direction.DOWNSTREAM].inflight <= HIGH_WATER + 512 * 1024
    assert sent < 32 * 1024 * 1024  # the client was slowed down, not buffered without limit
    flooding.cancel()
    writer.close()
    with contextlib.suppress(asyncio.CancelledError, ConnectionError):
        await flooding


async def test_stopping_the_server_closes_proxies_and_connections():
    echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
    server = FaultProxyServer("127.0.0.1", 0)
    await server.start()
    async with aiohttp.ClientSession(server.url) as http:
        port = await _proxy(http, echo.sockets[0].getsockname()[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"ping")
    assert await reader.readexactly(4) == b"ping"
    await server.stop()
    assert await asyncio.wait_for(reader.read(), 2) == b""
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
    echo.close()
