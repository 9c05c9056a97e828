"""The ADS gRPC server (grpc.aio, state of the world): one stream per Envoy node.

The protocol rules live in stream.py; this module moves bytes. Responses are pre-serialised
by the snapshot (once per version), so the handler yields bytes and gRPC sends them as they are.
`stop()` ends every stream with an OK status first, so Envoy sees a clean close (it reconnects
with backoff and keeps serving its last config) and grpc.aio logs no CancelledError.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from control_plane.xds.cache import SnapshotCache
from control_plane.xds.stream import AdsStream, StreamError

log = logging.getLogger(__name__)

SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
_STOP = object()  # the server is stopping: end the stream cleanly
_EOF = object()  # the peer closed its side


def _server_options() -> list[tuple[str, Any]]:
    return [
        ("grpc.so_reuseport", 0),  # a second server on a busy port must fail, not share it
        # Envoy pings idle ADS connections (bootstrap keepalive); never GOAWAY it for that.
        ("grpc.http2.min_ping_interval_without_data_ms", 1000),
        ("grpc.http2.max_ping_strikes", 0),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.max_receive_message_length", 16 * 1024 * 1024),
        ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ]


class _Servicer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    """Only the SotW method is served; Delta answers UNIMPLEMENTED (the base class does that)."""


class AdsServer:
    """Serves `cache` over ADS. `callbacks` is any object with some XdsCallbacks methods."""

    def __init__(self, cache: SnapshotCache, callbacks: Any = None) -> None:
        self.cache = cache
        self.callbacks = callbacks
        self.port: int | None = None
        self.host: str | None = None
        self._server: grpc.aio.Server | None = None
        self._queues: dict[int, asyncio.Queue[Any]] = {}
        self._ids = itertools.count(1)
        self._stopping = False
        self._idle = asyncio.Event()

    @property
    def streams(self) -> int:
        """Open ADS streams."""
        return len(self._queues)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Bind host:port (0: any free port) and serve; returns the bound port."""
        server = grpc.aio.server(options=_server_options())
        handler = grpc.method_handlers_generic_handler(SERVICE, {
            "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self._stream, request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
                response_serializer=None),  # responses are already bytes
            "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self._delta, request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
                response_serializer=None),
        })
        server.add_generic_rpc_handlers((handler,))
        try:
            bound = server.add_insecure_port(f"{host}:{port}")
        except RuntimeError as exc:
            raise OSError(f"cannot listen for ADS on {host}:{port}: {exc}") from exc
        if bound == 0:
            raise OSError(f"cannot listen for ADS on {host}:{port} (in use?)")
        await server.start()
        self._server, self.host, self.port, self._stopping = server, host, bound, False
        log.info("ADS server listening on %s:%d", host, bound)
        return bound

    async def stop(self, grace: float = 1.0) -> None:
        """End every stream cleanly (status OK), then stop the server within `grace` seconds."""
        if self._server is None:
            return
        self._stopping = True
        for queue in list(self._queues.values()):
            queue.put_nowait(_STOP)
        if self._queues:
            self._idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout=grace)
        await self._server.stop(grace)
        self._server = None
        log.info("ADS server on %s:%s stopped", self.host, self.port)

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    async def _delta(self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                            "delta xDS is not served; configure ads_config.api_type: GRPC")

    async def _stream(self, request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest],
                      context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        """One ADS stream. Requests are handled as they arrive (an ACK costs no task switch);
        snapshot changes are decided inside set_snapshot; this loop only writes the results."""
        stream_id = next(self._ids)
        if self._stopping:
            return
        outbox: asyncio.Queue[Any] = asyncio.Queue()
        self._queues[stream_id] = outbox
        stream = AdsStream(stream_id, self.cache, self.callbacks)
        unwatch: list[Callable[[], None]] = []

        def wake() -> None:
            try:
                for response in stream.on_snapshot_change():
                    outbox.put_nowait(response)
            except Exception:  # never let one stream break set_snapshot for the others
                log.exception("ADS stream %d (%s): push failed", stream_id, stream.node)
                outbox.put_nowait(_EOF)

        def handle(request: discovery_pb2.DiscoveryRequest) -> None:
            first = stream.node is None
            for response in stream.on_request(request):
                outbox.put_nowait(response)
            if first and stream.node is not None:
                unwatch.append(self.cache.watch(stream.node, wake))

        async def read() -> None:
            try:
                async for request in request_iterator:
                    try:
                        handle(request)
                    except StreamError:
                        raise
                    except Exception:  # a bug here must end this stream, loudly, not the server
                        log.exception("ADS stream %d (%s): request failed", stream_id, stream.node)
                        outbox.put_nowait(_EOF)
                        return
                outbox.put_nowait(_EOF)
            except StreamError as exc:
                outbox.put_nowait(exc)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the peer went away mid-read
                log.debug("ADS stream %d (%s) read ended: %r", stream_id, stream.node, exc)
                outbox.put_nowait(_EOF)

        reader = asyncio.create_task(read())
        try:
            while True:
                item = await outbox.get()
                if type(item) is bytes:
                    yield item
                elif isinstance(item, StreamError):
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(item))
                    return
                else:
                    break  # _STOP (server stopping) or _EOF (peer closed)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            self._queues.pop(stream_id, None)
            for stop_watching in unwatch:
                stop_watching()
            stream.close()
            if not self._queues:
                self._idle.set()
