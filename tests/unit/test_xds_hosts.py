"""Per-service addresses and per-replica node ids: settings -> topology -> Envoy protos -> cache.

On one machine every address is 127.0.0.1 and the config is what it always was (EDS endpoints,
STATIC clusters). In Kubernetes upstreams are Service names (STRICT_DNS clusters), listeners bind
0.0.0.0, and replicas of one Envoy role connect under their own node ids but share its snapshot.
"""

from __future__ import annotations

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2

from control_plane.intent import Endpoint, RoutingIntent
from control_plane.topology import Topology
from control_plane.xds import SnapshotCache, build_snapshots
from control_plane.xds.clusters import eds_service_name
from control_plane.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE
from control_plane.xds.stream import AdsStream
from data_plane.contracts.errors import ConfigError
from data_plane.settings import Hosts, Settings

NS = "fraud-mesh.svc.cluster.local"
K8S_ENV = {"MESH_HOST": "0.0.0.0", "MESH_HOST_XGBOOST": f"xgboost.{NS}", "MESH_HOST_PYTORCH": f"pytorch.{NS}",
           "MESH_HOST_HEURISTIC": f"heuristic.{NS}", "MESH_HOST_OPERATOR": f"control-plane.{NS}",
           "MESH_HOST_EDGE": f"edge.{NS}"}
LOCAL = Topology.from_settings(Settings())
K8S = Topology.from_settings(Settings.from_env(K8S_ENV))


def endpoint_of(cluster: cluster_pb2.Cluster) -> tuple[str, int]:
    (lb,) = cluster.load_assignment.endpoints[0].lb_endpoints
    sock = lb.endpoint.address.socket_address
    return sock.address, sock.port_value


# ---- settings ----------------------------------------------------------------------------------------
def test_local_defaults_bind_and_advertise_the_loopback() -> None:
    s = Settings.from_env({})
    assert s.bind_host == s.advertised_default == "127.0.0.1"
    names = ("xgboost", "operator", "edge", "sidecar_local", "chaos_api")
    assert {f: s.advertised_host(f) for f in names} == dict.fromkeys(names, "127.0.0.1")


def test_a_wildcard_mesh_host_is_bound_but_never_advertised() -> None:
    s = Settings.from_env(K8S_ENV)
    assert s.bind_host == "0.0.0.0"
    assert s.advertised_default == "127.0.0.1"  # what a co-located process dials
    assert s.advertised_host("xgboost") == f"xgboost.{NS}"
    assert s.advertised_host("sidecar_local") == "127.0.0.1"  # the server beside the sidecar, same pod
    assert Settings.from_env({"MESH_HOST": "127.0.0.1", "MESH_BIND_HOST": "0.0.0.0"}).bind_host == "0.0.0.0"


@pytest.mark.parametrize(("env", "message"), [
    ({"MESH_HOST_XGBOOST": "http://xgboost"}, "MESH_HOST_XGBOOST='http://xgboost' must be an IP address"),
    ({"MESH_HOST_EDGE": "edge:8000"}, "MESH_HOST_EDGE"),
    ({"MESH_HOST_OPERATOR": "0.0.0.0"}, "MESH_HOST_OPERATOR='0.0.0.0' is a bind address"),
    ({"MESH_BIND_HOST": "localhost"}, "MESH_BIND_HOST='localhost' must be an IP address"),
])
def test_bad_addresses_are_refused_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_every_hosts_field_is_an_environment_variable() -> None:
    from dataclasses import fields

    for f in fields(Hosts):
        s = Settings.from_env({f"MESH_HOST_{f.name.upper()}": "10.1.2.3"})
        assert s.advertised_host(f.name) == "10.1.2.3"
    with pytest.raises(KeyError, match="nats"):
        Settings().advertised_host("nats")


# ---- builders ----------------------------------------------------------------------------------------
def test_local_topology_keeps_eds_static_and_the_loopback() -> None:
    snaps = build_snapshots(RoutingIntent(), LOCAL, 1)
    edge = snaps["edge"]
    for name in ("xgboost", "pytorch", "heuristic", "xgboost-challenger", "pytorch-challenger"):
        assert edge.clusters[name].type == cluster_pb2.Cluster.EDS
        assert eds_service_name(edge.clusters[name]) == name
        (lb,) = edge.endpoints[name].endpoints[0].lb_endpoints
        assert lb.endpoint.address.socket_address.address == "127.0.0.1"
        assert lb.endpoint.address.socket_address.port_value == LOCAL.upstream_port(name)
    assert edge.clusters["operator"].type == cluster_pb2.Cluster.STATIC
    assert edge.listeners["edge"].address.socket_address.address == "127.0.0.1"
    side = snaps["sidecar-xgboost"]
    assert side.listeners["ingress"].address.socket_address.address == "127.0.0.1"
    assert side.clusters["local-xgboost"].type == cluster_pb2.Cluster.STATIC


def test_dns_hosts_become_strict_dns_clusters_with_the_name_and_port() -> None:
    snaps = build_snapshots(RoutingIntent(), K8S, 1)
    edge = snaps["edge"]
    for name in ("xgboost", "pytorch", "heuristic", "xgboost-challenger", "pytorch-challenger"):
        cluster = edge.clusters[name]
        service = name.split("-")[0]
        assert cluster.type == cluster_pb2.Cluster.STRICT_DNS, name
        assert cluster.dns_lookup_family == cluster_pb2.Cluster.V4_PREFERRED
        assert endpoint_of(cluster) == (f"{service}.{NS}", K8S.upstream_port(name))
        # What EDS clusters had stays: outlier detection, no panic routing, the big breakers.
        assert cluster.outlier_detection.consecutive_5xx.value == 3
        assert cluster.common_lb_config.healthy_panic_threshold.value == 0.0
        assert eds_service_name(cluster) is None
    assert set(edge.endpoints) == set()  # nothing left for EDS
    assert endpoint_of(edge.clusters["xgboost-challenger"]) == (f"xgboost.{NS}", 8111)  # the mirror target
    assert edge.clusters["operator"].type == cluster_pb2.Cluster.STRICT_DNS
    assert endpoint_of(edge.clusters["operator"]) == (f"control-plane.{NS}", 8100)
    assert edge.listeners["edge"].address.socket_address.address == "0.0.0.0"
    side = snaps["sidecar-pytorch"]
    assert {n: side.listeners[n].address.socket_address.address for n in side.listeners} == {
        "ingress": "0.0.0.0", "ingress-challenger": "0.0.0.0"}
    assert side.clusters["local-pytorch"].type == cluster_pb2.Cluster.STATIC
    assert endpoint_of(side.clusters["local-pytorch"]) == ("127.0.0.1", 8002)
    SnapshotCache().set_snapshot("edge", edge)  # consistent: no EDS cluster lacks its endpoints


def test_sidecars_off_send_the_edge_to_the_servers_at_their_hosts() -> None:
    topo = Topology.from_settings(Settings.from_env({**K8S_ENV, "MESH_SIDECARS": "off",
                                                     "MESH_HOST_PYTORCH": "10.0.0.7"}))
    edge = build_snapshots(RoutingIntent(), topo, 1)["edge"]
    assert endpoint_of(edge.clusters["xgboost"]) == (f"xgboost.{NS}", 8001)
    assert edge.clusters["pytorch"].type == cluster_pb2.Cluster.EDS  # an IP host stays on EDS
    (lb,) = edge.endpoints["pytorch"].endpoints[0].lb_endpoints
    assert (lb.endpoint.address.socket_address.address, lb.endpoint.address.socket_address.port_value) == \
        ("10.0.0.7", 8002)
    assert set(edge.endpoints) == {"pytorch", "pytorch-challenger"}


def test_overrides_take_an_ip_on_eds_or_a_name_on_dns() -> None:
    intent = RoutingIntent(overrides={"xgboost": Endpoint(host="10.9.9.9", port=9000),
                                      "pytorch": Endpoint(host="fault-proxy.chaos", port=9001)})
    local = build_snapshots(intent, LOCAL, 1)["edge"]
    assert local.clusters["pytorch"].type == cluster_pb2.Cluster.STRICT_DNS
    assert endpoint_of(local.clusters["pytorch"]) == ("fault-proxy.chaos", 9001)
    assert "pytorch" not in local.endpoints
    k8s = build_snapshots(intent, K8S, 1)["edge"]
    assert k8s.clusters["xgboost"].type == cluster_pb2.Cluster.EDS
    assert k8s.endpoints["xgboost"].endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address == \
        "10.9.9.9"


def test_a_weight_change_on_dns_clusters_is_still_one_route_push() -> None:
    one = build_snapshots(RoutingIntent(), K8S, 1)["edge"]
    two = build_snapshots(RoutingIntent(weights={"xgboost": 0.5, "pytorch": 0.5}), K8S, 2)["edge"]
    assert [t for t in (CLUSTER, ENDPOINT, LISTENER, ROUTE) if one.digest(t) != two.digest(t)] == [ROUTE]


# ---- one role, many node ids -------------------------------------------------------------------------
def req(type_url: str, version: str = "", nonce: str = "", names: tuple[str, ...] = (),
        node: base_pb2.Node | None = None) -> discovery_pb2.DiscoveryRequest:
    r = discovery_pb2.DiscoveryRequest(type_url=type_url, version_info=version, response_nonce=nonce,
                                       resource_names=list(names))
    if node is not None:
        r.node.CopyFrom(node)
    return r


def ack_all(stream: AdsStream, raw: list[bytes]) -> list[discovery_pb2.DiscoveryResponse]:
    out = [discovery_pb2.DiscoveryResponse.FromString(b) for b in raw]
    for resp in out:
        names = ("edge-routes",) if resp.type_url == ROUTE else ()
        stream.on_request(req(resp.type_url, resp.version_info, resp.nonce, names))
    return out


def replica(cache: SnapshotCache, stream_id: int, node_id: str, role: str) -> AdsStream:
    """A CDS + LDS + RDS subscriber (like an edge with DNS clusters only), ACKing what it gets."""
    stream = AdsStream(stream_id, cache)
    node = base_pb2.Node(id=node_id, cluster=role)
    ack_all(stream, stream.on_request(req(CLUSTER, node=node)))
    ack_all(stream, stream.on_request(req(LISTENER)))
    ack_all(stream, stream.on_request(req(ROUTE, names=("edge-routes",))))
    return stream


def test_replicas_of_a_role_share_its_snapshot_and_ack_under_their_own_ids() -> None:
    cache = SnapshotCache()
    cache.set_snapshot("edge", build_snapshots(RoutingIntent(), K8S, 1)["edge"])
    streams = [replica(cache, k, f"edge-7f9c-{k}", "edge") for k in range(3)]
    status = cache.node_status()
    assert set(status) == {"edge-7f9c-0", "edge-7f9c-1", "edge-7f9c-2"}  # the role is not a node
    assert all(st.served_as == st.role == "edge" and st.state("1") == "ack" for st in status.values())
    assert cache.replicas("edge") == ["edge-7f9c-0", "edge-7f9c-1", "edge-7f9c-2"]
    assert cache.snapshot("edge-7f9c-1") is cache.snapshot("edge")  # one object: serialised once

    cache.set_snapshot("edge", build_snapshots(RoutingIntent(weights={"pytorch": 1.0}), K8S, 2)["edge"])
    pushed = [ack_all(s, s.on_snapshot_change()) for s in streams[:2]]  # the third one lags
    assert [[(r.type_url, r.version_info) for r in p] for p in pushed] == [[(ROUTE, "2")]] * 2
    assert {n: cache.state_of(n, "2") for n in cache.replicas("edge")} == {
        "edge-7f9c-0": "ack", "edge-7f9c-1": "ack", "edge-7f9c-2": "pending"}
    assert ack_all(streams[2], streams[2].on_snapshot_change())
    assert all(cache.state_of(n, "2") == "ack" for n in cache.replicas("edge"))


async def test_wait_acked_defaults_to_the_connected_replicas_of_each_role() -> None:
    cache = SnapshotCache()
    cache.set_snapshot("edge", build_snapshots(RoutingIntent(), K8S, 1)["edge"])
    assert await cache.wait_acked("1", timeout=0) == {"edge": "pending"}  # nobody connected yet
    assert set(cache.node_status()) == {"edge"}
    replica(cache, 1, "edge-a", "edge")
    replica(cache, 2, "edge-b", "edge")
    assert await cache.wait_acked("1", timeout=0.1) == {"edge-a": "ack", "edge-b": "ack"}


def test_an_own_snapshot_wins_over_the_role_and_unknown_roles_get_nothing() -> None:
    cache = SnapshotCache()
    cache.set_snapshot("edge", build_snapshots(RoutingIntent(), K8S, 1)["edge"])
    special = build_snapshots(RoutingIntent(weights={"pytorch": 1.0}), K8S, 1)["edge"]
    cache.set_snapshot("edge-canary", special)
    replica(cache, 1, "edge-canary", "edge")
    assert cache.snapshot("edge-canary") is special and cache.node_status()["edge-canary"].served_as == \
        "edge-canary"
    stray = AdsStream(2, cache)
    assert stray.on_request(req(CLUSTER, node=base_pb2.Node(id="stray-1", cluster="sidecar"))) == []
    assert cache.node_status()["stray-1"].served_as is None


def test_a_replica_subscribed_before_its_role_had_a_snapshot_is_woken_by_it() -> None:
    cache = SnapshotCache()
    stream = AdsStream(1, cache)
    node = base_pb2.Node(id="sidecar-xgboost-5d-x", cluster="sidecar-xgboost")
    assert stream.on_request(req(CLUSTER, node=node)) == []
    woken: list[int] = []
    cache.watch("sidecar-xgboost-5d-x", lambda: woken.append(1))
    cache.set_snapshot("sidecar-xgboost", build_snapshots(RoutingIntent(), K8S, 1)["sidecar-xgboost"])
    assert woken == [1]
    (resp,) = [discovery_pb2.DiscoveryResponse.FromString(b) for b in stream.on_snapshot_change()]
    assert resp.type_url == CLUSTER and resp.version_info == "1" and len(resp.resources) == 2


def test_scaled_down_replicas_are_forgotten_after_a_while() -> None:
    cache = SnapshotCache(forget_after_s=0.0)
    cache.set_snapshot("edge", build_snapshots(RoutingIntent(), K8S, 1)["edge"])
    gone, stays = replica(cache, 1, "edge-old", "edge"), replica(cache, 2, "edge-new", "edge")
    gone.close()
    assert set(cache.node_status()) == {"edge-new"}
    stays.close()
    # Every replica gone: the role is listed again, disconnected (an alert can see it).
    assert {n: st.connected for n, st in cache.node_status().items()} == {"edge": False}
