"""Listener builders: the edge (HCM over RDS, body limits, the conservative default) and sidecars."""

from __future__ import annotations

from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.buffer.v3 import buffer_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from control_plane.xds.clusters import BuildOptions, ads_config_source, socket_address
from control_plane.xds.fallback import CUSTOM_RESPONSE_FILTER, custom_response_filter, local_reply_config
from control_plane.xds.resources import pack, seconds, u32
from control_plane.xds.routes import BUFFER_FILTER, EDGE_ROUTE_CONFIG

HCM_FILTER = "envoy.filters.network.http_connection_manager"
ROUTER_FILTER = "envoy.filters.http.router"
EDGE_LISTENER = "edge"

def _listener(name: str, host: str, port: int, hcm: hcm_pb2.HttpConnectionManager) -> listener_pb2.Listener:
    chain = listener_components_pb2.FilterChain(filters=[listener_components_pb2.Filter(
        name=HCM_FILTER, typed_config=pack(hcm))])
    return listener_pb2.Listener(name=name, address=socket_address(host, port), filter_chains=[chain])


def _router() -> hcm_pb2.HttpFilter:
    return hcm_pb2.HttpFilter(name=ROUTER_FILTER, typed_config=pack(router_pb2.Router()))


def edge_listener(host: str, port: int, opts: BuildOptions) -> listener_pb2.Listener:
    """The public API listener: routes come over RDS; bodies are buffered (for retries) and capped;
    Envoy's own failures and a last tier's 502/503/504 on the predict routes become the
    conservative default (the predict routes switch the custom-response filter on)."""
    # The listener-wide cap is the predict limit; the batch route raises it per route.
    body_cap = hcm_pb2.HttpFilter(name=BUFFER_FILTER, typed_config=pack(
        buffer_pb2.Buffer(max_request_bytes=u32(opts.predict_max_body))))
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix="edge",
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        rds=hcm_pb2.Rds(config_source=ads_config_source(), route_config_name=EDGE_ROUTE_CONFIG),
        http_filters=[body_cap, hcm_pb2.HttpFilter(name=CUSTOM_RESPONSE_FILTER,
                                                   typed_config=pack(custom_response_filter())),
                      _router()],
        local_reply_config=local_reply_config(),
        # A client trickling headers or body is cut off with 408 (no timeout: held for ever).
        request_timeout=seconds(10.0),
        # A client's own x-request-id is the prediction's id (delayed labels join on it): keep it
        # even when Envoy treats the request as external (use_remote_address in compose).
        preserve_external_request_id=True)
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
