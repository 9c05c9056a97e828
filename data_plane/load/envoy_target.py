"""A minimal Envoy bootstrap for calibrating the load generator against a real Envoy.

Routes on one listener: ``/direct`` answers from Envoy itself (``direct_response`` with a
seed-shaped body: the cheapest possible answer, a ceiling reference), ``/dead`` goes to a
cluster with nothing behind it (Envoy's own 503), and everything else is proxied to an upstream
(e.g. the calibration target). Used by the load generator's tests and bench/bench_loadgen.py.
"""

from __future__ import annotations

import json

DIRECT_BODY = json.dumps({"fraud_probability": 0.1, "is_fraud": False, "model_version": "direct_v0",
                          "model_type": "direct", "latency_ms": 0.0, "routed_to": "envoy-direct",
                          "fallback_reason": None}, separators=(",", ":"))


def _cluster(name: str, port: int) -> dict:
    return {"name": name, "type": "STATIC", "connect_timeout": "0.25s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                             "port_value": port}}}}]}]}}


def bootstrap(listen_port: int, admin_port: int, upstream_port: int, dead_port: int) -> dict:
    """The bootstrap as a dict (write it as JSON; Envoy reads JSON as YAML)."""
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
                 ".HttpConnectionManager",
        "stat_prefix": "calibration",
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
            {"match": {"path": "/direct"},
             "direct_response": {"status": 200, "body": {"inline_string": DIRECT_BODY}},
             "response_headers_to_add": [{"header": {"key": "content-type",
                                                     "value": "application/json"}}]},
            {"match": {"path": "/dead"}, "route": {"cluster": "dead"}},
            {"match": {"prefix": "/"}, "route": {"cluster": "upstream"}},
        ]}]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
    }
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{"name": "calibration", "address": {"socket_address": {
                "address": "127.0.0.1", "port_value": listen_port}},
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                "typed_config": hcm}]}]}],
            "clusters": [_cluster("upstream", upstream_port), _cluster("dead", dead_port)],
        },
    }
