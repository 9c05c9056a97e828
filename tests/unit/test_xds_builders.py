"""Builders and snapshots: intent + topology -> Envoy protos, consistency, serialise-once."""

from __future__ import annotations

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.buffer.v3 import buffer_pb2
from envoy.service.discovery.v3 import discovery_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from control_plane.intent import Canary, Endpoint, RoutingIntent, Shadow
from control_plane.topology import Topology
from control_plane.xds import InconsistentSnapshotError, Snapshot, SnapshotCache, build_snapshots
from control_plane.xds.clusters import aggregate_tiers, eds_service_name
from control_plane.xds.listeners import http_connection_manager
from control_plane.xds.resources import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, ROUTE, unpack
from control_plane.xds.routes import route_clusters, weighted_targets
from control_plane.xds.snapshot import response_bytes
from data_plane.contracts.errors import MeshError
from data_plane.settings import Settings

TOPO = Topology.from_settings(Settings())
SEED_FIELDS = {"fraud_probability", "is_fraud", "model_version", "model_type", "latency_ms", "routed_to",
               "fallback_reason"}


def edge(intent: RoutingIntent | None = None, version: int = 1) -> Snapshot:
    return build_snapshots(intent or RoutingIntent(), TOPO, version)["edge"]


def predict_route(snap: Snapshot, name: str = "predict") -> rc.Route:
    routes = snap.routes["edge-routes"].virtual_hosts[0].routes
    return next(r for r in routes if r.name == name)


def split(snap: Snapshot) -> dict[str, tuple[int, str]]:
    return {c.name: (c.weight.value, c.request_headers_to_add[0].header.value)
            for c in predict_route(snap).route.weighted_clusters.clusters}


def test_nodes_and_resource_names_follow_the_design() -> None:
    snaps = build_snapshots(RoutingIntent(), TOPO, 7)
    assert set(snaps) == {"edge", "sidecar-xgboost", "sidecar-pytorch", "sidecar-heuristic"}
    e = snaps["edge"]
    assert e.version == "7"
    assert set(e.clusters) == {"xgboost", "pytorch", "heuristic", "xgboost-challenger", "pytorch-challenger",
                               "chain-xgboost", "chain-pytorch", "chain-xgboost-challenger",
                               "chain-pytorch-challenger", "operator"}
    assert set(e.endpoints) == {"xgboost", "pytorch", "heuristic", "xgboost-challenger", "pytorch-challenger"}
    assert aggregate_tiers(e.clusters["chain-xgboost"]) == ["xgboost", "pytorch", "heuristic"]
    assert aggregate_tiers(e.clusters["chain-pytorch"]) == ["pytorch", "xgboost", "heuristic"]
    assert aggregate_tiers(e.clusters["chain-pytorch-challenger"]) == [
        "pytorch-challenger", "pytorch", "xgboost", "heuristic"]
    assert e.listeners["edge"].address.socket_address.port_value == TOPO.edge_port
    assert e.clusters["operator"].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address \
        .socket_address.port_value == TOPO.operator_port
    assert set(snaps["sidecar-xgboost"].listeners) == {"ingress", "ingress-challenger"}
    assert set(snaps["sidecar-xgboost"].clusters) == {"local-xgboost", "local-xgboost-challenger"}
    assert set(snaps["sidecar-heuristic"].listeners) == {"ingress"}


def test_sidecars_off_builds_only_the_edge_pointing_at_servers() -> None:
    topo = Topology.from_settings(Settings(sidecars=False))
    snaps = build_snapshots(RoutingIntent(), topo, 1)
    assert set(snaps) == {"edge"}
    port = snaps["edge"].endpoints["xgboost"].endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert port.port_value == topo.service("xgboost").server_port


def test_default_split_is_80_20_with_intended_headers() -> None:
    assert split(edge()) == {"chain-xgboost": (8000, "xgboost"), "chain-pytorch": (2000, "pytorch")}


def test_canary_weight_is_taken_proportionally_from_the_champions() -> None:
    snap = edge(RoutingIntent(canary=Canary(model="xgboost", weight=0.1)))
    assert split(snap) == {"chain-xgboost": (7200, "xgboost"), "chain-pytorch": (1800, "pytorch"),
                           "chain-xgboost-challenger": (1000, "xgboost-challenger")}


def test_ejected_service_gets_no_weight() -> None:
    assert split(edge(RoutingIntent(ejected=["xgboost"]))) == {"chain-pytorch": (10000, "pytorch")}


@settings(max_examples=60, deadline=None)
@given(w=st.floats(0, 1), canary=st.one_of(st.none(), st.floats(0, 1)))
def test_weights_always_sum_to_the_scale(w: float, canary: float | None) -> None:
    intent = RoutingIntent(weights={"xgboost": w, "pytorch": 1 - w},
                           canary=Canary(model="pytorch", weight=canary) if canary is not None else None)
    targets = weighted_targets(intent)
    assert sum(t.weight for t in targets) == 10_000
    if canary is not None and canary < 1:
        xgb = next((t.weight for t in targets if t.cluster == "chain-xgboost"), 0)
        assert abs(xgb - w * (1 - canary) * 10_000) <= 1


@pytest.mark.parametrize(("intent", "field"), [
    (RoutingIntent(weights={"lightgbm": 1.0}), "weights"),
    (RoutingIntent(canary=Canary(model="heuristic", weight=0.1)), "canary.model"),
    (RoutingIntent(canary=Canary(model="xgboost", weight=1.5)), "canary.weight"),
    (RoutingIntent(shadow=Shadow(model="nope", fraction=0.5)), "shadow.model"),
    (RoutingIntent(overrides={"nope": Endpoint(host="127.0.0.1", port=1)}), "overrides"),
    (RoutingIntent(overrides={"xgboost": Endpoint(host="http://x:1", port=1)}), "overrides.xgboost.host"),
])
def test_unbuildable_intent_raises_value_error_naming_the_field(intent: RoutingIntent, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        edge(intent)


def test_retry_policy_walks_down_the_chain() -> None:
    policy = predict_route(edge()).route.retry_policy
    assert set(policy.retry_on.split(",")) >= {"5xx", "reset", "connect-failure", "refused-stream"}
    assert policy.num_retries.value == 3 and policy.per_try_timeout.ToMilliseconds() > 0
    assert policy.retry_priority.name == "envoy.retry_priorities.previous_priorities"
    assert [p.name for p in policy.retry_host_predicate] == ["envoy.retry_host_predicates.previous_hosts"]


def test_model_clusters_eject_fast_and_never_panic() -> None:
    snap = edge()
    for name in ("xgboost", "pytorch", "heuristic", "xgboost-challenger", "pytorch-challenger"):
        c = snap.clusters[name]
        assert c.type == cluster_pb2.Cluster.EDS and eds_service_name(c) == name
        assert c.outlier_detection.max_ejection_percent.value == 100
        assert c.outlier_detection.consecutive_5xx.value > 0
        assert c.outlier_detection.enforcing_consecutive_gateway_failure.value == 100
        assert c.common_lb_config.healthy_panic_threshold.value == 0
    for name in ("chain-xgboost", "chain-pytorch"):
        # Far above Envoy's default of 3 concurrent retries (ARCHITECTURE.md: 1.4 % fell through).
        assert snap.clusters[name].circuit_breakers.thresholds[0].max_retries.value >= 1000


def test_shadow_mirrors_a_runtime_fraction_to_the_challenger() -> None:
    route = predict_route(edge(RoutingIntent(shadow=Shadow(model="pytorch", fraction=0.25))))
    (mirror,) = route.route.request_mirror_policies
    assert mirror.cluster == "pytorch-challenger"
    assert mirror.runtime_fraction.default_value.numerator == 250_000
    assert mirror.runtime_fraction.runtime_key == "mesh.shadow.pytorch"
    assert not predict_route(edge()).route.request_mirror_policies


def test_sticky_intent_hashes_card_id() -> None:
    action = predict_route(edge(RoutingIntent(sticky=True))).route
    assert action.weighted_clusters.use_hash_policy.value is True
    assert action.hash_policy[0].header.header_name == "card-id"
    plain = predict_route(edge(RoutingIntent(sticky=False))).route
    assert not plain.hash_policy and not plain.weighted_clusters.use_hash_policy.value


def test_overrides_repoint_one_cluster_only() -> None:
    snap = edge(RoutingIntent(overrides={"pytorch": Endpoint(host="127.0.0.2", port=9999)}))
    sa = snap.endpoints["pytorch"].endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert (sa.address, sa.port_value) == ("127.0.0.2", 9999)
    other = snap.endpoints["xgboost"].endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert other.port_value == TOPO.upstream_port("xgboost")


def test_conservative_default_and_body_limits_on_the_edge_listener() -> None:
    hcm = http_connection_manager(edge().listeners["edge"])
    assert hcm is not None and hcm.rds.route_config_name == "edge-routes"
    first = hcm.local_reply_config.mappers[0]
    assert first.status_code.value == 200
    flags = set(first.filter.and_filter.filters[1].response_flag_filter.flags)
    assert flags >= {"UH", "UF", "UO", "NR", "URX"}
    body = first.body_format_override
    assert body.content_type == "application/json"
    fields = dict(body.json_format.fields.items())
    assert set(fields) == SEED_FIELDS
    assert fields["model_type"].string_value == "conservative_default" and fields["is_fraud"].bool_value
    assert fields["fraud_probability"].number_value == 1.0
    assert fields["fallback_reason"].string_value == "all_services_unavailable"
    listener_cap = unpack(hcm.http_filters[0].typed_config, buffer_pb2.Buffer)
    assert listener_cap.max_request_bytes.value == 64 * 1024
    batch = predict_route(edge(), "predict-batch").typed_per_filter_config["envoy.filters.http.buffer"]
    assert unpack(batch, buffer_pb2.BufferPerRoute).buffer.max_request_bytes.value == 1024 * 1024


def test_envoys_own_refusals_answer_in_the_api_error_shape() -> None:
    hcm = http_connection_manager(edge().listeners["edge"])
    assert hcm is not None
    refusals = {m.filter.status_code_filter.comparison.value.default_value: m
                for m in hcm.local_reply_config.mappers if m.filter.HasField("status_code_filter")}
    assert set(refusals) == {413, 408}
    for status, rule in ((413, "max_bytes"), (408, "timeout")):
        body = refusals[status].body_format_override
        fields = dict(body.json_format.fields.items())
        assert body.content_type == "application/json" and not refusals[status].HasField("status_code")
        assert (fields["error"].string_value, fields["field"].string_value, fields["rule"].string_value) == (
            "validation_error", "$body", rule)
        assert fields["message"].string_value


def test_predict_routes_turn_upstream_failures_into_the_default() -> None:
    from envoy.extensions.filters.http.custom_response.v3 import custom_response_pb2
    from envoy.extensions.http.custom_response.local_response_policy.v3 import local_response_policy_pb2

    hcm = http_connection_manager(edge().listeners["edge"])
    assert hcm is not None
    names = [f.name for f in hcm.http_filters]
    assert names == ["envoy.filters.http.buffer", "envoy.filters.http.custom_response",
                     "envoy.filters.http.router"]
    listener_level = unpack(hcm.http_filters[1].typed_config, custom_response_pb2.CustomResponse)
    assert not listener_level.HasField("custom_response_matcher")  # a no-op off the predict routes
    for name in ("predict", "predict-batch"):
        per_route = unpack(predict_route(edge(), name).typed_per_filter_config[
            "envoy.filters.http.custom_response"], custom_response_pb2.CustomResponse)
        (field,) = per_route.custom_response_matcher.matcher_list.matchers
        codes = [p.single_predicate.value_match.exact for p in field.predicate.or_matcher.predicate]
        assert codes == ["502", "503", "504"]
        policy = unpack(field.on_match.action.typed_config, local_response_policy_pb2.LocalResponsePolicy)
        assert policy.status_code.value == 200
        assert set(policy.body_format.json_format.fields) == SEED_FIELDS


def test_everything_else_goes_to_the_operator() -> None:
    routes = edge().routes["edge-routes"].virtual_hosts[0].routes
    assert routes[-1].match.prefix == "/" and routes[-1].route.cluster == "operator"
    assert [r.match.path for r in routes[:2]] == ["/api/v1/predict/batch", "/api/v1/predict"]


def test_sidecar_circuit_breakers_shed_instead_of_queueing() -> None:
    side = build_snapshots(RoutingIntent(), TOPO, 1)["sidecar-pytorch"]
    local = side.clusters["local-pytorch"]
    limits = local.circuit_breakers.thresholds[0]
    assert 0 < limits.max_pending_requests.value <= 128 and 0 < limits.max_connections.value <= 256
    sa = local.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert sa.port_value == TOPO.service("pytorch").server_port
    hcm = http_connection_manager(side.listeners["ingress"])
    assert hcm is not None and route_clusters(hcm.route_config) == {"local-pytorch"}
    assert side.listeners["ingress"].address.socket_address.port_value == TOPO.service("pytorch").sidecar_port


# ---- consistency ----------------------------------------------------------------------------------
def _without(snap: Snapshot, type_url: str, name: str) -> Snapshot:
    parts = {t: [m for n, m in snap.resources(t).items() if not (t == type_url and n == name)]
             for t in PUSH_ORDER}
    return Snapshot(snap.version, parts[CLUSTER], parts[ENDPOINT], parts[LISTENER], parts[ROUTE])


@pytest.mark.parametrize(("type_url", "name", "message"), [
    (CLUSTER, "chain-xgboost", "routes to missing cluster 'chain-xgboost'"),
    (CLUSTER, "heuristic", "aggregate cluster 'chain-xgboost' names missing cluster 'heuristic'"),
    (ENDPOINT, "pytorch", "EDS cluster 'pytorch' has no ClusterLoadAssignment 'pytorch'"),
    (ROUTE, "edge-routes", "listener 'edge' uses missing route config 'edge-routes'"),
    (CLUSTER, "pytorch-challenger", "missing cluster 'pytorch-challenger'"),
])
def test_consistency_errors_name_the_dangling_reference(type_url: str, name: str, message: str) -> None:
    broken = _without(edge(RoutingIntent(shadow=Shadow(model="pytorch", fraction=0.1))), type_url, name)
    assert any(message in e for e in broken.consistency_errors()), broken.consistency_errors()
    with pytest.raises(InconsistentSnapshotError) as info:
        SnapshotCache().set_snapshot("edge", broken)
    assert isinstance(info.value, MeshError) and isinstance(info.value, ValueError)
    assert message in str(info.value)


def test_duplicate_names_are_inconsistent() -> None:
    snap = edge()
    dup = Snapshot(1, [*snap.clusters.values(), snap.clusters["xgboost"]], snap.endpoints.values(),
                   snap.listeners.values(), snap.routes.values())
    assert dup.consistency_errors() == ["cds resource 'xgboost' appears twice"]


def test_every_built_snapshot_is_consistent() -> None:
    intent = RoutingIntent(canary=Canary(model="pytorch", weight=0.2),
                           shadow=Shadow(model="xgboost", fraction=1))
    for snap in build_snapshots(intent, TOPO, 3).values():
        assert snap.consistency_errors() == []


# ---- serialisation --------------------------------------------------------------------------------
def test_each_type_is_serialised_once_and_framed_with_a_nonce() -> None:
    snap = edge(version=12)
    first = snap.payload(CLUSTER)
    assert snap.payload(CLUSTER) is first and snap.packed(CLUSTER) is snap.packed(CLUSTER)
    resp = discovery_pb2.DiscoveryResponse.FromString(response_bytes(first, "17-3"))
    assert (resp.version_info, resp.nonce, resp.type_url) == ("12", "17-3", CLUSTER)
    assert len(resp.resources) == len(snap.clusters) == first.count
    subset = discovery_pb2.DiscoveryResponse.FromString(
        response_bytes(snap.payload(ENDPOINT, frozenset({"xgboost", "nope"})), "n"))
    assert [r.type_url.rsplit(".", 1)[-1] for r in subset.resources] == ["ClusterLoadAssignment"]


def test_digest_ignores_the_version_and_tracks_content() -> None:
    a, b = edge(version=1), edge(version=2)
    assert all(a.digest(t) == b.digest(t) for t in PUSH_ORDER)
    c = edge(RoutingIntent(weights={"xgboost": 0.5, "pytorch": 0.5}), version=3)
    assert c.digest(ROUTE) != a.digest(ROUTE)
    assert [c.digest(t) == a.digest(t) for t in (CLUSTER, ENDPOINT, LISTENER)] == [True, True, True]
