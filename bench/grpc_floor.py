"""The gRPC floor for the xDS benchmark: a bare grpc.aio bidi stream per client, no xDS logic.

The server writes one message of a given size to every stream; each client answers with a small
one (like an ACK). Per-message send->reply latency and server CPU per round show what Python
grpc.aio itself costs on this machine, measured in the same run as the xDS numbers.

Client processes: `python -m bench.grpc_floor --target 127.0.0.1:PORT --count 250` (stops when
stdin closes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

METHOD = "/bench.Echo/Stream"
REPLY = b"a" * 150  # about the size of an ACK DiscoveryRequest


class EchoFloor:
    """Server side: one queue per stream; `round()` sends to all and waits for every reply."""

    def __init__(self, message: bytes) -> None:
        self.message = message
        self.queues: list[asyncio.Queue[bytes | None]] = []
        self.sent_at: dict[int, float] = {}
        self.latencies: list[float] = []
        self.pending = 0
        self.done = asyncio.Event()

    async def handler(self, requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        sid = len(self.queues)
        self.queues.append(queue)

        async def read() -> None:
            async for _ in requests:
                started = self.sent_at.pop(sid, None)
                if started is None:
                    continue  # the hello
                self.latencies.append((time.perf_counter() - started) * 1000)
                self.pending -= 1
                if self.pending == 0:
                    self.done.set()

        reader = asyncio.create_task(read())
        try:
            while (item := await queue.get()) is not None:
                yield item
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    async def round(self) -> float:
        """One message to every stream; returns the server CPU ms it took until all replied."""
        self.done.clear()
        self.pending = len(self.queues)
        cpu0 = time.process_time()
        for sid, queue in enumerate(self.queues):
            self.sent_at[sid] = time.perf_counter()
            queue.put_nowait(self.message)
        await asyncio.wait_for(self.done.wait(), 60)
        return (time.process_time() - cpu0) * 1000


def _spawn_clients(port: int, counts: list[int]) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-m", "bench.grpc_floor", "--target", f"127.0.0.1:{port}",
                              "--count", str(n)], stdin=subprocess.PIPE) for n in counts]


async def measure(streams: int, procs: int, rounds: int, message: bytes) -> dict[str, Any]:
    """Run the floor with `streams` clients in `procs` processes; latency and CPU per round."""
    floor = EchoFloor(message)
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Echo", {
        "Stream": grpc.stream_stream_rpc_method_handler(floor.handler)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    per = [streams // procs + (1 if i < streams % procs else 0) for i in range(procs)]
    clients = _spawn_clients(port, per)
    try:
        deadline = time.monotonic() + 60
        while len(floor.queues) < streams:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(floor.queues)} of {streams} echo streams connected")
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        cpu = []
        for _ in range(rounds):
            cpu.append(await floor.round())
            await asyncio.sleep(0.02)
    finally:
        for queue in floor.queues:
            queue.put_nowait(None)
        await server.stop(0.5)
        for p in clients:
            with contextlib.suppress(Exception):
                p.communicate(timeout=15)
            if p.poll() is None:
                p.kill()
                p.wait()
    lat = sorted(floor.latencies)
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    return {"p50_push_ack_ms": lat[len(lat) // 2], "p99_push_ack_ms": p99,
            "cpu_ms_per_push": sorted(cpu)[len(cpu) // 2], "pushes": rounds, "responses_per_push": streams}


async def _client(target: str, count: int) -> None:
    stop = asyncio.Event()

    async def one() -> None:
        async with grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
            out: asyncio.Queue[bytes | None] = asyncio.Queue()
            out.put_nowait(b"hello")

            async def requests() -> AsyncIterator[bytes]:
                while (item := await out.get()) is not None:
                    yield item

            call = ch.stream_stream(METHOD)(requests())
            with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
                async for _ in call:
                    out.put_nowait(REPLY)
            out.put_nowait(None)

    async def watch_stdin() -> None:
        await asyncio.to_thread(sys.stdin.read)
        stop.set()

    watcher = asyncio.create_task(watch_stdin())
    await asyncio.gather(*(one() for _ in range(count)))
    watcher.cancel()


def main() -> None:
    p = argparse.ArgumentParser(description="bare grpc.aio echo clients (benchmark floor)")
    p.add_argument("--target", required=True)
    p.add_argument("--count", type=int, default=250)
    args = p.parse_args()
    asyncio.run(_client(args.target, args.count))


if __name__ == "__main__":
    main()
