"""Cluster and endpoint builders: model clusters (EDS), failover chains (aggregate), static ones.

Plain functions from names, ports and `BuildOptions` to Envoy protos; no I/O.

Hosts: an IP address is pushed as is (EDS endpoints, STATIC clusters), exactly as on one machine.
A DNS name (a Kubernetes Service, a compose service) makes the cluster STRICT_DNS: Envoy resolves
the name itself (IPv4 first, re-resolved every 5 s) and keeps one host per address it gets, so a
headless Service spreads traffic, outlier detection and ejection over its pods.
"""

from __future__ import annotations

from dataclasses import dataclass

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.extensions.clusters.aggregate.v3 import cluster_pb2 as aggregate_pb2
from envoy.type.v3 import percent_pb2

from control_plane.xds.resources import pack, seconds, u32
from data_plane.settings import is_dns_name, is_ip_address

AGGREGATE_CLUSTER_TYPE = "envoy.clusters.aggregate"


@dataclass(frozen=True)
class BuildOptions:
    """Tunables of the generated config. Defaults suit the local mesh; tests shorten some."""

    connect_timeout_s: float = 0.25
    # Outlier detection: eject a host after this many consecutive 5xx / gateway errors.
    consecutive_errors: int = 3
    outlier_interval_s: float = 1.0
    base_ejection_s: float = 2.0
    max_ejection_s: float = 30.0
    # Edge retries walk down the failover chain (one retry per tier after the first).
    num_retries: int = 3
    per_try_timeout_s: float = 1.0
    route_timeout_s: float = 5.0
    batch_per_try_timeout_s: float = 5.0
    batch_route_timeout_s: float = 20.0
    operator_timeout_s: float = 60.0
    retry_base_interval_s: float = 0.005
    retry_max_interval_s: float = 0.05
    # Concurrent-retry ceiling on the chains; Envoy's default of 3 lets requests fall through
    # to the conservative default when a primary dies under load (ARCHITECTURE.md).
    max_retries_in_flight: int = 10_000
    edge_max_requests: int = 10_000
    # Request bodies above these sizes get 413 (documented API limits).
    predict_max_body: int = 64 * 1024
    batch_max_body: int = 1024 * 1024
    # Sidecar load shedding: at most this many requests in flight to the server, this many
    # queued; beyond that the sidecar answers 503 at once (the edge then fails over).
    sidecar_max_connections: int = 64
    sidecar_max_pending: int = 64
    sidecar_max_requests: int = 128
    sidecar_route_timeout_s: float = 20.0


def ads_config_source() -> config_source_pb2.ConfigSource:
    """Config source pointing at the ADS stream (V3 everywhere, as Envoy 1.40 requires)."""
    return config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource(),
                                          resource_api_version=config_source_pb2.V3)


def socket_address(host: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=host, port_value=port))


def resolved_by_dns(host: str, where: str = "") -> bool:
    """True when `host` is a DNS name (its cluster is STRICT_DNS), False for an IP address.

    Raises ValueError, prefixed with `where`, for anything else (a URL, a host:port, "")."""
    if is_ip_address(host):
        return False
    if is_dns_name(host):
        return True
    prefix = f"{where}: " if where else ""
    raise ValueError(f"{prefix}host {host!r} must be an IP address or a DNS name (no scheme, no port)")


def load_assignment(cluster: str, host: str, port: int,
                    allow_dns: bool = False) -> endpoint_pb2.ClusterLoadAssignment:
    """One endpoint for `cluster`: an EDS resource (IP only), or inline for STATIC/STRICT_DNS ones."""
    if not is_ip_address(host) and not (allow_dns and is_dns_name(host)):
        need = "an IP address or a DNS name" if allow_dns else \
            "an IP address (EDS endpoints are not resolved by DNS)"
        raise ValueError(f"endpoint of cluster {cluster!r}: host {host!r} must be {need}")
    if not 0 < port < 65536:
        raise ValueError(f"endpoint of cluster {cluster!r}: port {port} is outside 1-65535")
    lb_endpoint = endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(address=socket_address(host, port)))
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=cluster,
        endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[lb_endpoint])])


def _thresholds(max_connections: int, max_pending: int, max_requests: int,
                max_retries: int) -> circuit_breaker_pb2.CircuitBreakers:
    return circuit_breaker_pb2.CircuitBreakers(thresholds=[circuit_breaker_pb2.CircuitBreakers.Thresholds(
        priority=base_pb2.DEFAULT, max_connections=u32(max_connections),
        max_pending_requests=u32(max_pending), max_requests=u32(max_requests),
        max_retries=u32(max_retries))])


def _no_panic() -> cluster_pb2.Cluster.CommonLbConfig:
    # Threshold 0: never "panic" (route to ejected hosts); an all-ejected cluster fails over.
    return cluster_pb2.Cluster.CommonLbConfig(healthy_panic_threshold=percent_pb2.Percent(value=0.0))


def outlier_detection(opts: BuildOptions) -> outlier_detection_pb2.OutlierDetection:
    """Eject fast on consecutive 5xx or gateway errors (connect failures count as 503)."""
    return outlier_detection_pb2.OutlierDetection(
        consecutive_5xx=u32(opts.consecutive_errors),
        consecutive_gateway_failure=u32(opts.consecutive_errors),
        enforcing_consecutive_5xx=u32(100),
        enforcing_consecutive_gateway_failure=u32(100),
        interval=seconds(opts.outlier_interval_s),
        base_ejection_time=seconds(opts.base_ejection_s),
        max_ejection_time=seconds(opts.max_ejection_s),
        max_ejection_percent=u32(100))


def _dns(cluster: cluster_pb2.Cluster, host: str, port: int) -> cluster_pb2.Cluster:
    """Make `cluster` resolve `host` itself (STRICT_DNS: one Envoy host per address returned)."""
    cluster.type = cluster_pb2.Cluster.STRICT_DNS
    # IPv4 when the name has it (`localhost` resolves to ::1 first on many hosts), else IPv6.
    cluster.dns_lookup_family = cluster_pb2.Cluster.V4_PREFERRED
    cluster.load_assignment.CopyFrom(load_assignment(cluster.name, host, port, allow_dns=True))
    return cluster


def model_cluster(name: str, opts: BuildOptions,
                  dns_endpoint: tuple[str, int] | None = None) -> cluster_pb2.Cluster:
    """A cluster for one model slot, with outlier detection and no panic routing.

    EDS (the control plane pushes the endpoint) unless `dns_endpoint` names a (DNS name, port):
    then STRICT_DNS on that name, every address it resolves to being one host of the cluster.
    """
    cluster = cluster_pb2.Cluster(
        name=name,
        connect_timeout=seconds(opts.connect_timeout_s),
        lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
        outlier_detection=outlier_detection(opts),
        common_lb_config=_no_panic(),
        circuit_breakers=_thresholds(opts.edge_max_requests, opts.edge_max_requests,
                                     opts.edge_max_requests, opts.max_retries_in_flight))
    if dns_endpoint is not None:
        return _dns(cluster, *dns_endpoint)
    cluster.type = cluster_pb2.Cluster.EDS
    cluster.eds_cluster_config.CopyFrom(cluster_pb2.Cluster.EdsClusterConfig(
        eds_config=ads_config_source(), service_name=name))
    return cluster


def aggregate_cluster(name: str, tiers: list[str], opts: BuildOptions) -> cluster_pb2.Cluster:
    """A failover chain: Envoy tries `tiers` in order (each tier is one priority level)."""
    return cluster_pb2.Cluster(
        name=name,
        connect_timeout=seconds(opts.connect_timeout_s),
        lb_policy=cluster_pb2.Cluster.CLUSTER_PROVIDED,
        cluster_type=cluster_pb2.Cluster.CustomClusterType(
            name=AGGREGATE_CLUSTER_TYPE, typed_config=pack(aggregate_pb2.ClusterConfig(clusters=tiers))),
        common_lb_config=_no_panic(),
        circuit_breakers=_thresholds(opts.edge_max_requests, opts.edge_max_requests,
                                     opts.edge_max_requests, opts.max_retries_in_flight))


def static_cluster(name: str, host: str, port: int, opts: BuildOptions,
                   breakers: circuit_breaker_pb2.CircuitBreakers | None = None) -> cluster_pb2.Cluster:
    """A cluster with a fixed endpoint (the operator API, a sidecar's local server).

    STATIC for an IP address, STRICT_DNS for a DNS name (e.g. the control plane's Service)."""
    cluster = cluster_pb2.Cluster(
        name=name, connect_timeout=seconds(opts.connect_timeout_s), lb_policy=cluster_pb2.Cluster.ROUND_ROBIN)
    if resolved_by_dns(host, f"cluster {name!r}"):
        _dns(cluster, host, port)
    else:
        cluster.type = cluster_pb2.Cluster.STATIC
        cluster.load_assignment.CopyFrom(load_assignment(name, host, port))
    if breakers is not None:
        cluster.circuit_breakers.CopyFrom(breakers)
    return cluster


def sidecar_local_cluster(name: str, host: str, port: int, opts: BuildOptions) -> cluster_pb2.Cluster:
    """The sidecar's cluster for its own server: small limits so overload sheds with a fast 503."""
    breakers = _thresholds(opts.sidecar_max_connections, opts.sidecar_max_pending,
                           opts.sidecar_max_requests, max_retries=3)
    return static_cluster(name, host, port, opts, breakers)


def eds_service_name(cluster: cluster_pb2.Cluster) -> str | None:
    """The ClusterLoadAssignment name an EDS cluster waits for, or None for other kinds."""
    if cluster.HasField("type") and cluster.type == cluster_pb2.Cluster.EDS:
        return cluster.eds_cluster_config.service_name or cluster.name
    return None


def aggregate_tiers(cluster: cluster_pb2.Cluster) -> list[str]:
    """The child clusters of an aggregate cluster ([] for any other kind)."""
    if not cluster.HasField("cluster_type") or cluster.cluster_type.name != AGGREGATE_CLUSTER_TYPE:
        return []
    config = aggregate_pb2.ClusterConfig()
    cluster.cluster_type.typed_config.Unpack(config)
    return list(config.clusters)
