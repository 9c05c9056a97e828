"""Routing intent + topology + version -> one Snapshot per Envoy node (pure functions).

Nodes: `edge` (the public API) and `sidecar-<service>` (one per model server). These are roles:
several Envoys may share one (Kubernetes replicas: node id = pod name, node.cluster = the role;
cache.py serves them the role's snapshot). Resource names follow docs/design.md; the pieces live
in clusters.py, routes.py and listeners.py.

Addresses come from the Topology: listeners bind `topo.bind_host`; upstreams are dialled at their
advertised hosts. An IP host keeps a model cluster on EDS (the endpoint is pushed, as on one
machine); a DNS name makes it STRICT_DNS with the name inline, and it gets no EDS resource.

Documented limits: a `POST /api/v1/predict` body above 64 KiB and a batch body above 1 MiB get
413 from the edge (`BuildOptions.predict_max_body` / `batch_max_body`).
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2

from control_plane.intent import MODELS, SERVICES, RoutingIntent
from control_plane.topology import ServiceAddr, Topology
from control_plane.xds.clusters import (
    BuildOptions,
    aggregate_cluster,
    load_assignment,
    model_cluster,
    resolved_by_dns,
    sidecar_local_cluster,
    static_cluster,
)
from control_plane.xds.listeners import edge_listener, sidecar_listener
from control_plane.xds.routes import (
    OPERATOR_CLUSTER,
    chain_name,
    chain_tiers,
    edge_route_config,
    sidecar_route_config,
)
from control_plane.xds.snapshot import Snapshot

EDGE_NODE = "edge"


def sidecar_node(service: str) -> str:
    """Node id of the sidecar Envoy in front of `service`'s server."""
    return f"sidecar-{service}"


def node_ids(topo: Topology) -> list[str]:
    """Every node the builders produce a snapshot for."""
    return [EDGE_NODE, *(sidecar_node(s) for s in SERVICES)] if topo.sidecars else [EDGE_NODE]


def model_cluster_names(topo: Topology) -> list[str]:
    """`xgboost`, `pytorch`, `heuristic`, `xgboost-challenger`, `pytorch-challenger`."""
    return [svc.cluster for svc in topo.services]


def _check_overrides(intent: RoutingIntent, topo: Topology) -> None:
    known = set(model_cluster_names(topo))
    for name in intent.overrides:
        if name not in known:
            raise ValueError(f"overrides: {name!r} is not a model cluster; "
                             f"use one of {', '.join(sorted(known))}")


def _upstreams(intent: RoutingIntent, topo: Topology) -> dict[str, tuple[str, int]]:
    """(host, port) the edge dials per model cluster: an override's, else the topology's."""
    _check_overrides(intent, topo)
    out = {}
    for name in model_cluster_names(topo):
        override = intent.overrides.get(name)
        if override is not None:
            resolved_by_dns(override.host, f"overrides.{name}.host")  # refuse garbage, naming the field
            out[name] = (override.host, override.port)
        else:
            out[name] = topo.upstream(name)
    return out


def edge_endpoints(intent: RoutingIntent, topo: Topology) -> list[endpoint_pb2.ClusterLoadAssignment]:
    """EDS for every model cluster whose host is an IP address (the sidecar or server port,
    unless an override re-points it); clusters on a DNS name carry their endpoint inline."""
    return [load_assignment(name, host, port) for name, (host, port) in _upstreams(intent, topo).items()
            if not resolved_by_dns(host)]


def edge_clusters(topo: Topology, opts: BuildOptions,
                  intent: RoutingIntent | None = None) -> list[cluster_pb2.Cluster]:
    """Model clusters (EDS, or STRICT_DNS on a DNS host), their failover chains (aggregate) and
    the operator API (static)."""
    upstreams = _upstreams(intent or RoutingIntent(), topo)
    clusters = [model_cluster(name, opts, dns_endpoint=(host, port) if resolved_by_dns(host) else None)
                for name, (host, port) in upstreams.items()]
    for model in MODELS:
        clusters.append(aggregate_cluster(chain_name(model), chain_tiers(model), opts))
        clusters.append(aggregate_cluster(chain_name(model, challenger=True),
                                          chain_tiers(model, challenger=True), opts))
    clusters.append(static_cluster(OPERATOR_CLUSTER, topo.operator_host, topo.operator_port, opts))
    return clusters


def edge_snapshot(intent: RoutingIntent, topo: Topology, version: int | str,
                  opts: BuildOptions | None = None) -> Snapshot:
    """The edge node's listener, routes, clusters and endpoints."""
    opts = opts or BuildOptions()
    return Snapshot(version, clusters=edge_clusters(topo, opts, intent),
                    endpoints=edge_endpoints(intent, topo),
                    listeners=[edge_listener(topo.bind_host, topo.edge_port, opts)],
                    routes=[edge_route_config(intent, opts)])


def _slots(topo: Topology, service: str) -> list[ServiceAddr]:
    return [s for s in topo.services if s.service == service and s.sidecar_port is not None]


def sidecar_snapshot(service: str, topo: Topology, version: int | str,
                     opts: BuildOptions | None = None) -> Snapshot:
    """A sidecar: `ingress` -> `local-<service>`, and `ingress-challenger` when the service has one."""
    opts = opts or BuildOptions()
    clusters, listeners = [], []
    for slot in _slots(topo, service):
        assert slot.sidecar_port is not None
        suffix = "" if slot.slot == "champion" else "-challenger"
        local = f"local-{service}{suffix}"
        clusters.append(sidecar_local_cluster(local, slot.local_host, slot.server_port, opts))
        listener = f"ingress{suffix}"
        listeners.append(sidecar_listener(listener, topo.bind_host, slot.sidecar_port,
                                          sidecar_route_config(f"{listener}-{service}", local, opts)))
    return Snapshot(version, clusters=clusters, listeners=listeners)


def build_snapshots(intent: RoutingIntent, topo: Topology, version: int | str,
                    opts: BuildOptions | None = None) -> dict[str, Snapshot]:
    """One consistent Snapshot per node id for `intent` at `version`.

    Raises ValueError naming the intent field when the intent cannot be built (unknown service,
    weight out of range, override host that is neither an IP address nor a DNS name).
    """
    opts = opts or BuildOptions()
    snapshots = {EDGE_NODE: edge_snapshot(intent, topo, version, opts)}
    if topo.sidecars:
        for service in SERVICES:
            snapshots[sidecar_node(service)] = sidecar_snapshot(service, topo, version, opts)
    for node, snap in snapshots.items():
        snap.check_consistency(node)
    return snapshots
