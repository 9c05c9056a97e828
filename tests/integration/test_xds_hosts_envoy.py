"""Per-service hosts and per-replica node ids against real Envoy 1.40 and the real ADS server.

Two edge Envoys run as replicas of one role: node ids `edge-a` / `edge-b`, node.cluster `edge`,
the same bootstrap otherwise (their shared listener port works through SO_REUSEPORT, which Envoy
sets on listeners by default). The control plane holds one snapshot, keyed by the role.

Upstreams: xgboost answers on 127.0.0.2 only (Linux routes all of 127.0.0.0/8 to loopback) with
a decoy on 127.0.0.1 at the same port, so a request that reaches "xgboost" proves the advertised
host was dialled; pytorch is advertised as the DNS name `localhost` (a STRICT_DNS cluster).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from control_plane.intent import RoutingIntent
from control_plane.topology import ServiceAddr, Topology
from control_plane.xds import AdsServer, SnapshotCache, build_snapshots, render_bootstrap
from data_plane.netutil import free_port
from data_plane.procs import ManagedProcess, envoy
from tests.integration.xds_harness import BASE_ID

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]
REPLICAS = ("edge-a", "edge-b")


class Named:
    """A tiny HTTP upstream on one address that answers with its name."""

    def __init__(self, name: str, host: str, port: int = 0) -> None:
        self.name, self.host, self.port, self.hits = name, host, port, 0
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.hits += 1
        local = request.transport.get_extra_info("sockname")[0] if request.transport else None
        return web.json_response({"routed_to": self.name, "local": local})  # the address Envoy dialled

    async def start(self) -> Named:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, self.host, self.port).start()
        self.port = self.runner.addresses[0][1]  # the port the kernel chose (port 0)
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@dataclass
class Fleet:
    topo: Topology
    cache: SnapshotCache
    upstreams: dict[str, Named]
    admins: dict[str, int]
    session: aiohttp.ClientSession
    version: int = 0

    async def publish(self, intent: RoutingIntent) -> str:
        self.version += 1
        self.cache.set_snapshot("edge", build_snapshots(intent, self.topo, self.version)["edge"])
        return str(self.version)

    async def predict(self) -> dict[str, Any]:
        async with self.session.post(f"http://127.0.0.1:{self.topo.edge_port}/api/v1/predict",
                                     json={"amount": 1}) as r:
            assert r.status == 200
            return await r.json(content_type=None)

    async def admin(self, node: str, path: str) -> str:
        async with self.session.get(f"http://127.0.0.1:{self.admins[node]}{path}") as r:
            assert r.status == 200
            return await r.text()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fleet(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Fleet]:
    tmp = tmp_path_factory.mktemp("xds-hosts")
    xgb = await Named("xgboost", "127.0.0.2").start()
    ups = {"xgboost": xgb, "decoy": await Named("decoy-on-127.0.0.1", "127.0.0.1", xgb.port).start(),
           "pytorch": await Named("pytorch", "127.0.0.1").start(),
           "heuristic": await Named("heuristic", "127.0.0.1").start()}
    services = (ServiceAddr("xgboost", "champion", xgb.port, None, None, host="127.0.0.2"),
                ServiceAddr("pytorch", "champion", ups["pytorch"].port, None, None, host="localhost"),
                ServiceAddr("heuristic", "champion", ups["heuristic"].port, None, None),
                ServiceAddr("xgboost", "challenger", free_port(), None, None, host="127.0.0.2"),
                ServiceAddr("pytorch", "challenger", free_port(), None, None, host="localhost"))
    topo = Topology("127.0.0.1", free_port(), free_port(), free_port(), services, sidecars=False)
    cache = SnapshotCache()
    server = AdsServer(cache)
    ads_port = await server.start("127.0.0.1", 0)
    session = aiohttp.ClientSession()
    fleet = Fleet(topo, cache, ups, {n: free_port() for n in REPLICAS}, session)
    await fleet.publish(RoutingIntent(weights={"xgboost": 1.0, "pytorch": 0.0}))
    procs: list[ManagedProcess] = []
    try:
        for k, node in enumerate(REPLICAS):
            boot = render_bootstrap("edge", node, fleet.admins[node], "127.0.0.1", ads_port,
                                    tmp / f"{node}.yaml", node_cluster="edge")
            procs.append(envoy(boot, tmp / f"{node}.log", base_id=BASE_ID + 2 + k, concurrency=1).start())
        for proc, node in zip(procs, REPLICAS, strict=True):  # each admin: the listener port is shared
            await asyncio.to_thread(proc.wait_port, "127.0.0.1", fleet.admins[node], 20.0)
        yield fleet
    finally:
        await session.close()
        await server.stop(0.5)
        for proc in procs:
            proc.stop()
        for up in ups.values():
            await up.stop()


async def test_replicas_of_one_role_ack_the_same_version_under_their_own_ids(fleet: Fleet) -> None:
    version = str(fleet.version)
    assert await fleet.cache.wait_acked(version, REPLICAS, timeout=20) == {"edge-a": "ack", "edge-b": "ack"}
    # Both connected: waiting on the role now means waiting on both replicas.
    assert await fleet.cache.wait_acked(version, timeout=1) == {"edge-a": "ack", "edge-b": "ack"}
    status = fleet.cache.node_status()
    assert set(status) == set(REPLICAS)
    assert all(st.connected and st.role == st.served_as == "edge" for st in status.values())
    for node in REPLICAS:
        info = await fleet.admin(node, "/server_info")
        assert f'"id": "{node}"' in info and '"cluster": "edge"' in info

    version = await fleet.publish(RoutingIntent(weights={"xgboost": 0.5, "pytorch": 0.5}))
    assert await fleet.cache.wait_acked(version, timeout=10) == {"edge-a": "ack", "edge-b": "ack"}
    acked = {n: st.acked["rds"] for n, st in fleet.cache.node_status().items()}
    assert acked == dict.fromkeys(REPLICAS, version)


async def test_each_service_is_dialled_at_its_own_host(fleet: Fleet) -> None:
    version = await fleet.publish(RoutingIntent(weights={"xgboost": 1.0, "pytorch": 0.0}))
    assert await fleet.cache.wait_acked(version, timeout=10) == {"edge-a": "ack", "edge-b": "ack"}
    answers = [await fleet.predict() for _ in range(6)]
    assert {(a["routed_to"], a["local"]) for a in answers} == {("xgboost", "127.0.0.2")}
    assert fleet.upstreams["decoy"].hits == 0
    for node in REPLICAS:  # both replicas run the same clusters: EDS on the IP, DNS on the name
        clusters = await fleet.admin(node, "/clusters")
        assert f"xgboost::127.0.0.2:{fleet.upstreams['xgboost'].port}::cx_total" in clusters
        assert f"pytorch::127.0.0.1:{fleet.upstreams['pytorch'].port}::hostname::localhost" in clusters
        dump = await fleet.admin(node, "/config_dump?resource=dynamic_active_clusters")
        assert '"type": "STRICT_DNS"' in dump and '"address": "localhost"' in dump

    version = await fleet.publish(RoutingIntent(weights={"xgboost": 0.0, "pytorch": 1.0}))
    assert await fleet.cache.wait_acked(version, timeout=10) == {"edge-a": "ack", "edge-b": "ack"}
    answers = [await fleet.predict() for _ in range(6)]
    assert {a["routed_to"] for a in answers} == {"pytorch"}  # through `localhost`, resolved by Envoy
