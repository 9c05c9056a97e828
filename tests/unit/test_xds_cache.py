"""Snapshot cache, the ADS stream rules (nonces, ACK/NACK, ordering), and the grpc.aio server.

The stream rules are driven with DiscoveryRequest messages directly; the server is exercised
over real gRPC on 127.0.0.1 with the fake ADS client the benchmark uses.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.rpc import status_pb2

from bench.fake_ads_client import FakeEnvoy, channel
from control_plane.intent import Endpoint, RoutingIntent
from control_plane.topology import Topology
from control_plane.xds import AdsServer, SnapshotCache, build_snapshots
from control_plane.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE
from control_plane.xds.stream import AdsStream, StreamError
from data_plane.settings import Settings

TOPO = Topology.from_settings(Settings(sidecars=False))


def snap(version: int, **intent: object):
    return build_snapshots(RoutingIntent(**intent), TOPO, version)["edge"]  # type: ignore[arg-type]


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def on_push(self, *args: object) -> None:
        self.events.append(("push", *args))

    def on_ack(self, *args: object) -> None:
        self.events.append(("ack", *args))

    def on_nack(self, *args: object) -> None:
        self.events.append(("nack", *args))

    def of(self, kind: str) -> list[tuple]:
        return [e for e in self.events if e[0] == kind]


def req(type_url: str, version: str = "", nonce: str = "", names: tuple[str, ...] = (), node: str = "",
        error: str | None = None) -> discovery_pb2.DiscoveryRequest:
    r = discovery_pb2.DiscoveryRequest(type_url=type_url, version_info=version, response_nonce=nonce,
                                       resource_names=list(names))
    if node:
        r.node.CopyFrom(base_pb2.Node(id=node))
    if error:
        r.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
    return r


def parse(raw: list[bytes]) -> list[discovery_pb2.DiscoveryResponse]:
    return [discovery_pb2.DiscoveryResponse.FromString(b) for b in raw]


def connect(cache: SnapshotCache, rec: Recorder
            ) -> tuple[AdsStream, dict[str, discovery_pb2.DiscoveryResponse]]:
    """An edge-like subscription: CDS, EDS (all clusters), LDS, RDS, each ACKed."""
    stream = AdsStream(1, cache, rec)
    last: dict[str, discovery_pb2.DiscoveryResponse] = {}
    eds_names = tuple(sorted(cache.snapshot("edge").endpoints))  # type: ignore[union-attr]
    for type_url, names in ((CLUSTER, ()), (ENDPOINT, eds_names), (LISTENER, ()), (ROUTE, ("edge-routes",))):
        (resp,) = parse(stream.on_request(req(type_url, names=names, node="edge")))
        assert stream.on_request(req(type_url, resp.version_info, resp.nonce, names)) == []
        last[type_url] = resp
    return stream, last


# ---- stream rules ---------------------------------------------------------------------------------
def test_first_request_must_name_the_node() -> None:
    with pytest.raises(StreamError, match=r"node\.id"):
        AdsStream(1, SnapshotCache()).on_request(req(CLUSTER))


def test_subscribe_ack_and_status() -> None:
    cache, rec = SnapshotCache(), Recorder()
    cache.set_snapshot("edge", snap(1))
    stream, last = connect(cache, rec)
    assert [r.version_info for r in last.values()] == ["1"] * 4
    assert len({r.nonce for r in last.values()}) == 4
    assert len(last[ENDPOINT].resources) == 5 and len(last[ROUTE].resources) == 1
    status = cache.node_status()["edge"]
    assert status.connected and status.acked_version == "1" and status.state("1") == "ack"
    assert [e[2] for e in rec.of("ack")] == [CLUSTER, ENDPOINT, LISTENER, ROUTE]
    assert all(e[5] >= 0 for e in rec.of("ack"))  # latency_ms
    # A repeated ACK (same nonce) is settled once only.
    stream.on_request(req(ROUTE, "1", last[ROUTE].nonce, ("edge-routes",)))
    assert len(rec.of("ack")) == 4


def test_eds_answers_only_the_names_asked_for() -> None:
    cache = SnapshotCache()
    cache.set_snapshot("edge", snap(1))
    stream = AdsStream(1, cache)
    stream.on_request(req(CLUSTER, node="edge"))
    (resp,) = parse(stream.on_request(req(ENDPOINT, names=("xgboost", "heuristic"))))
    assert len(resp.resources) == 2
    (more,) = parse(stream.on_request(req(ENDPOINT, "1", resp.nonce, ("xgboost", "heuristic", "pytorch"))))
    assert len(more.resources) == 3


def test_new_version_sends_only_changed_types_and_counts_the_rest_as_running() -> None:
    cache, rec = SnapshotCache(), Recorder()
    cache.set_snapshot("edge", snap(1))
    stream, _ = connect(cache, rec)
    cache.set_snapshot("edge", snap(2, weights={"xgboost": 0.5, "pytorch": 0.5}))
    pushed = parse(stream.on_snapshot_change())
    assert [(r.type_url, r.version_info) for r in pushed] == [(ROUTE, "2")]
    assert cache.state_of("edge", "2") == "pending"
    stream.on_request(req(ROUTE, "2", pushed[0].nonce, ("edge-routes",)))
    assert cache.state_of("edge", "2") == "ack"
    assert cache.node_status()["edge"].acked == {"cds": "2", "eds": "2", "lds": "2", "rds": "2"}


def test_cluster_push_is_followed_by_endpoints_in_xds_order() -> None:
    cache = SnapshotCache()
    cache.set_snapshot("edge", snap(1))
    stream, _ = connect(cache, Recorder())
    from control_plane.xds.clusters import BuildOptions

    changed = build_snapshots(RoutingIntent(weights={"pytorch": 1.0}), TOPO, 2,
                              BuildOptions(connect_timeout_s=0.5, predict_max_body=1000))["edge"]
    cache.set_snapshot("edge", changed)
    assert [r.type_url for r in parse(stream.on_snapshot_change())] == [CLUSTER, ENDPOINT, LISTENER, ROUTE]


def test_endpoint_override_pushes_eds_only() -> None:
    cache = SnapshotCache()
    cache.set_snapshot("edge", snap(1))
    stream, _ = connect(cache, Recorder())
    cache.set_snapshot("edge", snap(2, overrides={"xgboost": Endpoint(host="127.0.0.1", port=1234)}))
    assert [r.type_url for r in parse(stream.on_snapshot_change())] == [ENDPOINT]


def test_nack_is_recorded_once_and_not_resent() -> None:
    cache, rec = SnapshotCache(), Recorder()
    cache.set_snapshot("edge", snap(1))
    stream, _ = connect(cache, rec)
    cache.set_snapshot("edge", snap(2, weights={"pytorch": 1.0}))
    (bad,) = parse(stream.on_snapshot_change())
    nack = req(ROUTE, "1", bad.nonce, ("edge-routes",), error="route: unknown field")
    assert stream.on_request(nack) == []
    assert stream.on_request(nack) == []  # Envoy repeating itself changes nothing
    assert rec.of("nack") == [("nack", "edge", ROUTE, "2", bad.nonce, "route: unknown field")]
    status = cache.node_status()["edge"]
    assert status.nacked_version == "2" and status.error_detail == "route: unknown field"
    assert status.state("2") == "nack" and status.acked["rds"] == "1"
    # The same (rejected) content under a newer version is not sent again, and counts as NACKed.
    cache.set_snapshot("edge", snap(3, weights={"pytorch": 1.0}))
    assert stream.on_snapshot_change() == []
    assert cache.state_of("edge", "3") == "nack"
    # New content goes out normally.
    cache.set_snapshot("edge", snap(4, weights={"xgboost": 1.0}))
    (good,) = parse(stream.on_snapshot_change())
    stream.on_request(req(ROUTE, "4", good.nonce, ("edge-routes",)))
    assert cache.state_of("edge", "4") == "ack" and cache.node_status()["edge"].nacked == {}


def test_reconnecting_node_is_not_sent_what_it_rejected() -> None:
    cache = SnapshotCache()
    cache.set_snapshot("edge", snap(1))
    stream, _ = connect(cache, Recorder())
    cache.set_snapshot("edge", snap(2, weights={"pytorch": 1.0}))
    (bad,) = parse(stream.on_snapshot_change())
    stream.on_request(req(ROUTE, "1", bad.nonce, ("edge-routes",), error="no"))
    stream.close()
    again = AdsStream(2, cache)
    again.on_request(req(CLUSTER, "1", node="edge"))
    assert again.on_request(req(ROUTE, "1", names=("edge-routes",))) == []  # keeps its last good
    fresh = AdsStream(3, cache)  # a restarted Envoy has nothing: it gets the current snapshot
    fresh.on_request(req(CLUSTER, node="edge"))
    assert len(fresh.on_request(req(ROUTE, names=("edge-routes",)))) == 1


def test_stale_nonce_settles_but_does_not_resubscribe() -> None:
    cache = SnapshotCache()
    cache.set_snapshot("edge", snap(1))
    stream, last = connect(cache, Recorder())
    cache.set_snapshot("edge", snap(2, weights={"pytorch": 1.0}))
    (v2,) = parse(stream.on_snapshot_change())
    # A request echoing the older RDS nonce with different names is ignored.
    assert stream.on_request(req(ROUTE, "1", last[ROUTE].nonce, ("other",))) == []
    assert stream.on_request(req(ROUTE, "2", v2.nonce, ("edge-routes",))) == []


def test_a_nonce_from_another_server_is_a_fresh_subscription() -> None:
    cache = SnapshotCache()
    cache.set_snapshot("edge", snap(3))
    stream = AdsStream(1, cache)
    (resp,) = parse(stream.on_request(req(CLUSTER, "2", "old-server-7", node="edge")))
    assert resp.version_info == "3"


async def test_wait_acked_reports_pending_then_ack() -> None:
    cache = SnapshotCache()
    cache.set_snapshot("edge", snap(1))
    assert await cache.wait_acked("1", timeout=0.05) == {"edge": "pending"}
    stream = AdsStream(1, cache)
    (cds,) = parse(stream.on_request(req(CLUSTER, node="edge")))
    (lds,) = parse(stream.on_request(req(LISTENER)))
    waiting = asyncio.create_task(cache.wait_acked(1, ["edge"], timeout=5))
    await asyncio.sleep(0.01)
    stream.on_request(req(CLUSTER, "1", cds.nonce))
    assert not waiting.done()
    stream.on_request(req(LISTENER, "1", lds.nonce))
    assert await waiting == {"edge": "ack"}
    assert await cache.wait_acked("1", ["edge", "ghost"], timeout=0.01) == {"edge": "ack", "ghost": "pending"}


# ---- the gRPC server -----------------------------------------------------------------------------
async def _until(predicate) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + 5.0
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)


async def test_server_pushes_to_fake_envoys_and_stops_cleanly(caplog: pytest.LogCaptureFixture) -> None:
    cache, rec = SnapshotCache(), Recorder()
    server = AdsServer(cache, rec)
    port = await server.start("127.0.0.1", 0)
    for i in range(3):
        cache.set_snapshot(f"n{i}", snap(1))
    stop = asyncio.Event()
    envoys = [FakeEnvoy(f"n{i}") for i in range(3)]
    channels = [channel(f"127.0.0.1:{port}") for _ in envoys]
    tasks = [asyncio.create_task(e.run(c, stop)) for e, c in zip(envoys, channels, strict=True)]
    try:
        assert await cache.wait_acked("1", timeout=5) == {"n0": "ack", "n1": "ack", "n2": "ack"}
        assert all(e.types[ENDPOINT].resources == 5 and e.types[ROUTE].resources == 1 for e in envoys)
        for i in range(3):
            cache.set_snapshot(f"n{i}", snap(2, weights={"pytorch": 1.0}))
        assert set((await cache.wait_acked("2", timeout=5)).values()) == {"ack"}
        assert server.streams == 3
        with caplog.at_level(logging.WARNING):
            await server.stop(1.0)
            await asyncio.wait_for(asyncio.gather(*tasks), 5)
        assert [e.status for e in envoys] == [grpc.StatusCode.OK] * 3  # ended cleanly, not cancelled
        assert not [r for r in caplog.records if r.exc_info or "Cancelled" in r.getMessage()]
        await _until(lambda: not any(s.connected for s in cache.node_status().values()))
    finally:
        stop.set()
        await server.stop(0)
        for c in channels:
            await c.close()


async def test_port_in_use_is_an_error_and_delta_is_unimplemented() -> None:
    server = AdsServer(SnapshotCache())
    port = await server.start("127.0.0.1", 0)
    try:
        with pytest.raises(OSError, match=str(port)):
            await AdsServer(SnapshotCache()).start("127.0.0.1", port)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(ch).DeltaAggregatedResources(
                iter([discovery_pb2.DeltaDiscoveryRequest(type_url=CLUSTER)]))
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in call:
                    pass
            assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        await server.stop(0)
