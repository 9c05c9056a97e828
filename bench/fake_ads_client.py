"""Simulated Envoys speaking the real ADS protocol (grpc.aio), for benchmarks and protocol tests.

Each `FakeEnvoy` opens one StreamAggregatedResources call and behaves like Envoy 1.40 does:
it subscribes to CDS and LDS (wildcard), then to EDS for the EDS clusters it received and to
RDS for the route configs its listeners name; it ACKs each response by echoing the nonce with
the new version_info, or NACKs (error_detail, old version) when told to reject a version.

Run many in one process (`python -m bench.fake_ads_client --target 127.0.0.1:18000 --count 250
--prefix bench- --start 0`): it runs until SIGTERM/SIGINT or stdin closes, then prints one JSON
line with its totals.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.rpc import status_pb2

CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"


@dataclass
class TypeState:
    version: str = ""  # last accepted version_info
    nonce: str = ""  # last response nonce seen
    names: list[str] = field(default_factory=list)
    resources: int = 0


@dataclass
class FakeEnvoy:
    """One simulated Envoy node on one ADS stream."""

    node_id: str
    reject: Callable[[discovery_pb2.DiscoveryResponse], str | None] = lambda resp: None
    types: dict[str, TypeState] = field(
        default_factory=lambda: {t: TypeState() for t in (CDS, EDS, LDS, RDS)})
    responses: int = 0
    acks: int = 0
    nacks: int = 0
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    received: asyncio.Event = field(default_factory=asyncio.Event)
    status: grpc.StatusCode | None = None

    def _request(self, type_url: str, error: str | None = None, nonce: str | None = None
                 ) -> discovery_pb2.DiscoveryRequest:
        st = self.types[type_url]
        req = discovery_pb2.DiscoveryRequest(type_url=type_url, version_info=st.version,
                                             response_nonce=st.nonce if nonce is None else nonce,
                                             resource_names=st.names)
        if error is not None:
            req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))  # INVALID_ARGUMENT
        return req

    def _on_response(self, resp: discovery_pb2.DiscoveryResponse, out: asyncio.Queue) -> None:
        self.responses += 1
        st = self.types.get(resp.type_url)
        if st is None:
            return
        st.nonce = resp.nonce
        error = self.reject(resp)
        if error is not None:
            self.nacks += 1
            out.put_nowait(self._request(resp.type_url, error=error))
            self.received.set()
            return
        st.version, st.resources = resp.version_info, len(resp.resources)
        follow: tuple[str, list[str]] | None = None
        if resp.type_url == CDS:
            follow = (EDS, sorted(_eds_names(resp)))
        elif resp.type_url == LDS:
            follow = (RDS, sorted(_route_names(resp)))
        if follow is not None and follow[1] != self.types[follow[0]].names:
            # Like Envoy: subscribe to the new names first, then ACK the response that named them.
            self.types[follow[0]].names = follow[1]
            out.put_nowait(self._request(follow[0]))
        self.acks += 1
        out.put_nowait(self._request(resp.type_url))
        self.received.set()

    async def run(self, channel: grpc.aio.Channel, stop: asyncio.Event) -> None:
        """Stream until `stop` is set or the server ends the call."""
        out: asyncio.Queue[discovery_pb2.DiscoveryRequest | None] = asyncio.Queue()
        node = base_pb2.Node(id=self.node_id, cluster="bench")
        first = discovery_pb2.DiscoveryRequest(type_url=CDS, node=node)
        out.put_nowait(first)
        out.put_nowait(self._request(LDS))

        async def requests() -> AsyncIterator[discovery_pb2.DiscoveryRequest]:
            while True:
                item = await out.get()
                if item is None:
                    return
                yield item

        call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources(requests())
        self.connected.set()

        async def reader() -> None:
            async for resp in call:
                self._on_response(resp, out)

        read = asyncio.create_task(reader())
        halt = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({read, halt}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            out.put_nowait(None)
            halt.cancel()
            if not read.done():
                call.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await read
            with contextlib.suppress(Exception):
                self.status = await call.code()


def _eds_names(resp: discovery_pb2.DiscoveryResponse) -> set[str]:
    names = set()
    for item in resp.resources:
        cluster = cluster_pb2.Cluster()
        item.Unpack(cluster)
        if cluster.HasField("type") and cluster.type == cluster_pb2.Cluster.EDS:
            names.add(cluster.eds_cluster_config.service_name or cluster.name)
    return names


def _route_names(resp: discovery_pb2.DiscoveryResponse) -> set[str]:
    names = set()
    for item in resp.resources:
        listener = listener_pb2.Listener()
        item.Unpack(listener)
        for chain in listener.filter_chains:
            for f in chain.filters:
                hcm = hcm_pb2.HttpConnectionManager()
                if f.typed_config.Unpack(hcm) and hcm.HasField("rds"):
                    names.add(hcm.rds.route_config_name)
    return names


def channel(target: str) -> grpc.aio.Channel:
    """A channel with its own connection (like a separate Envoy), not a shared subchannel."""
    return grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])


async def run_fleet(target: str, node_ids: list[str], stop: asyncio.Event) -> list[FakeEnvoy]:
    """Run one FakeEnvoy per node id (each on its own connection) until `stop` is set."""
    envoys = [FakeEnvoy(n) for n in node_ids]
    channels = [channel(target) for _ in envoys]
    try:
        await asyncio.gather(*(e.run(c, stop) for e, c in zip(envoys, channels, strict=True)))
    finally:
        await asyncio.gather(*(c.close() for c in channels))
    return envoys


async def _main(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def watch_stdin() -> None:  # the parent closes our stdin to stop us
        await asyncio.to_thread(sys.stdin.read)
        stop.set()

    watcher = asyncio.create_task(watch_stdin())
    nodes = [f"{args.prefix}{i:05d}" for i in range(args.start, args.start + args.count)]
    started = time.process_time()
    envoys = await run_fleet(args.target, nodes, stop)
    watcher.cancel()
    print(json.dumps({"streams": len(envoys), "responses": sum(e.responses for e in envoys),
                      "acks": sum(e.acks for e in envoys), "nacks": sum(e.nacks for e in envoys),
                      "cpu_s": round(time.process_time() - started, 3)}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--target", required=True, help="ADS server host:port")
    p.add_argument("--count", type=int, default=250, help="streams (simulated Envoys) in this process")
    p.add_argument("--start", type=int, default=0, help="index of the first node id")
    p.add_argument("--prefix", default="bench-", help="node id prefix")
    asyncio.run(_main(p.parse_args()))


if __name__ == "__main__":
    main()
