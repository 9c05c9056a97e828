"""Listener builders: the edge (HCM over RDS, body limits, the conservative default) and sidecars."""

from __future__ import annotations

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import substitution_format_string_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.buffer.v3 import buffer_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import struct_pb2

from control_plane.xds.clusters import BuildOptions, ads_config_source, socket_address
from control_plane.xds.resources import pack, u32
from control_plane.xds.routes import BUFFER_FILTER, EDGE_ROUTE_CONFIG, PREDICT_PATH

HCM_FILTER = "envoy.filters.network.http_connection_manager"
ROUTER_FILTER = "envoy.filters.http.router"
EDGE_LISTENER = "edge"

# Envoy's own failures (no healthy / reachable upstream, overflow, no cluster, retries spent)
# become the conservative default; timeouts get their own reason.
UNAVAILABLE_FLAGS = ("UH", "UF", "UO", "NR", "NC", "URX", "UC", "UR", "LR")
TIMEOUT_FLAGS = ("UT",)


def conservative_default_body(reason: str) -> struct_pb2.Struct:
    """The seed's response schema, flagged as fraud; latency_ms is Envoy's own duration."""
    body = struct_pb2.Struct()
    body.update({
        "fraud_probability": 1.0,
        "is_fraud": True,
        "model_version": "conservative_default",
        "model_type": "conservative_default",
        "latency_ms": "%DURATION%",  # a single command keeps its type: a number
        "routed_to": "edge",
        "fallback_reason": reason,
    })
    return body


def _default_mapper(flags: tuple[str, ...], reason: str) -> hcm_pb2.ResponseMapper:
    on_predict = accesslog_pb2.AccessLogFilter(header_filter=accesslog_pb2.HeaderFilter(
        header=rc.HeaderMatcher(name=":path", string_match=string_pb2.StringMatcher(prefix=PREDICT_PATH))))
    flagged = accesslog_pb2.AccessLogFilter(
        response_flag_filter=accesslog_pb2.ResponseFlagFilter(flags=list(flags)))
    both = accesslog_pb2.AndFilter(filters=[on_predict, flagged])
    return hcm_pb2.ResponseMapper(
        filter=accesslog_pb2.AccessLogFilter(and_filter=both),
        status_code=u32(200),
        body_format_override=substitution_format_string_pb2.SubstitutionFormatString(
            json_format=conservative_default_body(reason), content_type="application/json"))


def local_reply_config() -> hcm_pb2.LocalReplyConfig:
    """Envoy's own 503/504 on the predict routes -> 200 with the conservative default."""
    return hcm_pb2.LocalReplyConfig(mappers=[
        _default_mapper(UNAVAILABLE_FLAGS, "all_services_unavailable"),
        _default_mapper(TIMEOUT_FLAGS, "all_services_timed_out"),
    ])


def _listener(name: str, host: str, port: int, hcm: hcm_pb2.HttpConnectionManager) -> listener_pb2.Listener:
    chain = listener_components_pb2.FilterChain(filters=[listener_components_pb2.Filter(
        name=HCM_FILTER, typed_config=pack(hcm))])
    return listener_pb2.Listener(name=name, address=socket_address(host, port), filter_chains=[chain])


def _router() -> hcm_pb2.HttpFilter:
    return hcm_pb2.HttpFilter(name=ROUTER_FILTER, typed_config=pack(router_pb2.Router()))


def edge_listener(host: str, port: int, opts: BuildOptions) -> listener_pb2.Listener:
    """The public API listener: routes come over RDS; bodies are buffered (for retries) and capped."""
    # The listener-wide cap is the predict limit; the batch route raises it per route.
    body_cap = hcm_pb2.HttpFilter(name=BUFFER_FILTER, typed_config=pack(
        buffer_pb2.Buffer(max_request_bytes=u32(opts.predict_max_body))))
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix="edge",
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        rds=hcm_pb2.Rds(config_source=ads_config_source(), route_config_name=EDGE_ROUTE_CONFIG),
        http_filters=[body_cap, _router()],
        local_reply_config=local_reply_config())
    return _listener(EDGE_LISTENER, host, port, hcm)


def sidecar_listener(name: str, host: str, port: int,
                     routes: route_pb2.RouteConfiguration) -> listener_pb2.Listener:
    """A sidecar's inbound listener with inline routes to its local server."""
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=name.replace("-", "_"),
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        route_config=routes,
        http_filters=[_router()])
    return _listener(name, host, port, hcm)


def http_connection_manager(listener: listener_pb2.Listener) -> hcm_pb2.HttpConnectionManager | None:
    """The HCM of a listener's first filter chain, or None when it has none."""
    for chain in listener.filter_chains:
        for f in chain.filters:
            if f.name == HCM_FILTER or f.typed_config.type_url.endswith("HttpConnectionManager"):
                hcm = hcm_pb2.HttpConnectionManager()
                f.typed_config.Unpack(hcm)
                return hcm
    return None
