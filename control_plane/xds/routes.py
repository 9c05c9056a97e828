"""Edge route builders: the weighted split over failover chains, retries, mirroring, body limits."""

from __future__ import annotations

from dataclasses import dataclass

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.buffer.v3 import buffer_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.extensions.retry.priority.previous_priorities.v3 import previous_priorities_config_pb2
from envoy.type.matcher.v3 import string_pb2
from envoy.type.v3 import percent_pb2

from control_plane.intent import MODELS, RoutingIntent
from control_plane.xds.clusters import BuildOptions
from control_plane.xds.fallback import CUSTOM_RESPONSE_FILTER, custom_response_filter
from control_plane.xds.resources import pack, seconds, u32

EDGE_ROUTE_CONFIG = "edge-routes"
PREDICT_PATH = "/api/v1/predict"
BATCH_PATH = "/api/v1/predict/batch"
OPERATOR_CLUSTER = "operator"
INTENDED_HEADER = "x-mesh-intended"
STICKY_HEADER = "card-id"
BUFFER_FILTER = "envoy.filters.http.buffer"
RETRY_ON = "5xx,reset,connect-failure,refused-stream,retriable-status-codes"
WEIGHT_SCALE = 10_000  # weights are integers: basis points


def chain_name(service: str, challenger: bool = False) -> str:
    """`chain-xgboost`, `chain-pytorch-challenger`, ... (the route's target clusters)."""
    return f"chain-{service}-challenger" if challenger else f"chain-{service}"


def chain_tiers(service: str, challenger: bool = False) -> list[str]:
    """Failover order of a chain: the model, the other model, then the heuristic."""
    others = [m for m in MODELS if m != service]
    tiers = [service, *others, "heuristic"]
    return [f"{service}-challenger", *tiers] if challenger else tiers


@dataclass(frozen=True)
class WeightedTarget:
    cluster: str  # the chain (or plain cluster) the route sends to
    intended: str  # value of x-mesh-intended
    weight: int  # basis points


def _target(service: str) -> tuple[str, str]:
    if service in MODELS:
        return chain_name(service), service
    if service == "heuristic":
        return "heuristic", "heuristic"  # the last tier needs no chain of its own
    raise ValueError(f"weights: {service!r} is not a routable service; use one of "
                     f"{', '.join((*MODELS, 'heuristic'))}")


def _to_basis_points(shares: list[tuple[str, str, float]]) -> list[WeightedTarget]:
    """Largest-remainder rounding so the integer weights sum to exactly WEIGHT_SCALE."""
    raw = [(c, i, s * WEIGHT_SCALE) for c, i, s in shares]
    floors = [int(v) for _, _, v in raw]
    short = WEIGHT_SCALE - sum(floors)
    order = sorted(range(len(raw)), key=lambda k: raw[k][2] - floors[k], reverse=True)
    for k in order[:max(0, short)]:
        floors[k] += 1
    return [WeightedTarget(c, i, w) for (c, i, _), w in zip(raw, floors, strict=True) if w > 0]


def weighted_targets(intent: RoutingIntent) -> list[WeightedTarget]:
    """The split of live traffic: champion chains, plus the canary's share when one runs.

    The canary's weight is taken from the champions in proportion to their weights.
    """
    canary_share = 0.0
    if intent.canary is not None:
        if intent.canary.model not in MODELS:
            raise ValueError(f"canary.model: {intent.canary.model!r} has no challenger slot; "
                             f"use one of {', '.join(MODELS)}")
        if not 0.0 <= intent.canary.weight <= 1.0:
            raise ValueError(f"canary.weight: {intent.canary.weight} must be between 0 and 1")
        canary_share = intent.canary.weight
    shares = [(*_target(svc), w * (1.0 - canary_share))
              for svc, w in sorted(intent.effective_weights().items())]
    if intent.canary is not None and canary_share > 0:
        m = intent.canary.model
        shares.append((chain_name(m, challenger=True), f"{m}-challenger", canary_share))
    targets = _to_basis_points([s for s in shares if s[2] > 0])
    return targets or [WeightedTarget(chain_name(MODELS[0]), MODELS[0], WEIGHT_SCALE)]


def retry_policy(per_try_timeout_s: float, opts: BuildOptions) -> rc.RetryPolicy:
    """Retries that walk down the chain: each retry skips the priorities (tiers) already tried."""
    return rc.RetryPolicy(
        retry_on=RETRY_ON,
        retriable_status_codes=[503],
        num_retries=u32(opts.num_retries),
        per_try_timeout=seconds(per_try_timeout_s),
        retry_priority=rc.RetryPolicy.RetryPriority(
            name="envoy.retry_priorities.previous_priorities",
            typed_config=pack(previous_priorities_config_pb2.PreviousPrioritiesConfig(update_frequency=1))),
        retry_host_predicate=[rc.RetryPolicy.RetryHostPredicate(
            name="envoy.retry_host_predicates.previous_hosts",
            typed_config=pack(previous_hosts_pb2.PreviousHostsPredicate()))],
        host_selection_retry_max_attempts=3,
        retry_back_off=rc.RetryPolicy.RetryBackOff(base_interval=seconds(opts.retry_base_interval_s),
                                                   max_interval=seconds(opts.retry_max_interval_s)))


def mirror_policies(intent: RoutingIntent) -> list[rc.RouteAction.RequestMirrorPolicy]:
    """Shadow traffic to the challenger slot; Envoy discards the mirror's answer."""
    shadow = intent.shadow
    if shadow is None or shadow.fraction <= 0:
        return []
    if shadow.model not in MODELS:
        raise ValueError(f"shadow.model: {shadow.model!r} has no challenger slot; "
                         f"use one of {', '.join(MODELS)}")
    if shadow.fraction > 1.0:
        raise ValueError(f"shadow.fraction: {shadow.fraction} must be between 0 and 1")
    fraction = percent_pb2.FractionalPercent(numerator=round(shadow.fraction * 1_000_000),
                                             denominator=percent_pb2.FractionalPercent.MILLION)
    return [rc.RouteAction.RequestMirrorPolicy(
        cluster=f"{shadow.model}-challenger",
        runtime_fraction=base_pb2.RuntimeFractionalPercent(
            default_value=fraction, runtime_key=f"mesh.shadow.{shadow.model}"))]


def _intended_header(value: str) -> base_pb2.HeaderValueOption:
    # Overwrite: a client must not be able to claim a different intended target.
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=INTENDED_HEADER, value=value),
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD)


def predict_action(intent: RoutingIntent, per_try_timeout_s: float, timeout_s: float,
                   opts: BuildOptions) -> rc.RouteAction:
    """Weighted chains + retries + mirroring (+ sticky hashing on `card-id` when asked)."""
    weighted = rc.WeightedCluster(clusters=[
        rc.WeightedCluster.ClusterWeight(name=t.cluster, weight=u32(t.weight),
                                         request_headers_to_add=[_intended_header(t.intended)])
        for t in weighted_targets(intent)])
    action = rc.RouteAction(weighted_clusters=weighted, timeout=seconds(timeout_s),
                            retry_policy=retry_policy(per_try_timeout_s, opts),
                            request_mirror_policies=mirror_policies(intent))
    if intent.sticky:
        # The hash of card-id picks the weighted cluster, so one card keeps its model while
        # the weights stand; requests without the header are split at random.
        action.weighted_clusters.use_hash_policy.value = True
        action.hash_policy.append(rc.RouteAction.HashPolicy(
            header=rc.RouteAction.HashPolicy.Header(header_name=STICKY_HEADER)))
    return action


def _post(path: str) -> rc.RouteMatch:
    return rc.RouteMatch(path=path, headers=[rc.HeaderMatcher(
        name=":method", string_match=string_pb2.StringMatcher(exact="POST"))])


def _predict_filters(max_bytes: int) -> dict[str, object]:
    """Per-route filter config: the body cap, and the conservative default for upstream failures."""
    cap = buffer_pb2.BufferPerRoute(buffer=buffer_pb2.Buffer(max_request_bytes=u32(max_bytes)))
    return {BUFFER_FILTER: pack(cap),
            CUSTOM_RESPONSE_FILTER: pack(custom_response_filter(enabled=True))}


def predict_routes(intent: RoutingIntent, opts: BuildOptions) -> list[rc.Route]:
    """`POST /api/v1/predict/batch` and `POST /api/v1/predict` (most specific first)."""
    batch = rc.Route(name="predict-batch", match=_post(BATCH_PATH),
                     route=predict_action(intent, opts.batch_per_try_timeout_s,
                                          opts.batch_route_timeout_s, opts),
                     typed_per_filter_config=_predict_filters(opts.batch_max_body))
    single = rc.Route(name="predict", match=_post(PREDICT_PATH),
                      route=predict_action(intent, opts.per_try_timeout_s, opts.route_timeout_s, opts),
                      typed_per_filter_config=_predict_filters(opts.predict_max_body))
    return [batch, single]


def operator_route(opts: BuildOptions) -> rc.Route:
    """Everything else (`/health`, `/metrics`, the rest of `/api/v1/`) is the operator API's."""
    return rc.Route(name="operator", match=rc.RouteMatch(prefix="/"),
                    route=rc.RouteAction(cluster=OPERATOR_CLUSTER, timeout=seconds(opts.operator_timeout_s)))


def edge_route_config(intent: RoutingIntent, opts: BuildOptions) -> route_pb2.RouteConfiguration:
    """The edge's RDS resource."""
    vhost = rc.VirtualHost(name="mesh", domains=["*"],
                           routes=[*predict_routes(intent, opts), operator_route(opts)])
    return route_pb2.RouteConfiguration(name=EDGE_ROUTE_CONFIG, virtual_hosts=[vhost])


def sidecar_route_config(name: str, cluster: str, opts: BuildOptions) -> route_pb2.RouteConfiguration:
    """A sidecar's inline routes: everything to its local server, no retries (the edge retries)."""
    vhost = rc.VirtualHost(name=name, domains=["*"], routes=[rc.Route(
        match=rc.RouteMatch(prefix="/"),
        route=rc.RouteAction(cluster=cluster, timeout=seconds(opts.sidecar_route_timeout_s)))])
    return route_pb2.RouteConfiguration(name=name, virtual_hosts=[vhost])


def route_clusters(config: route_pb2.RouteConfiguration) -> set[str]:
    """Every cluster a route configuration can send to (targets and mirrors)."""
    names: set[str] = set()
    for vhost in config.virtual_hosts:
        for route in vhost.routes:
            if not route.HasField("route"):
                continue
            action = route.route
            if action.cluster:
                names.add(action.cluster)
            names.update(w.name for w in action.weighted_clusters.clusters)
            names.update(m.cluster for m in action.request_mirror_policies)
    return names
