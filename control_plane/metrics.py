"""Prometheus metrics of the control plane, in a registry of its own (one per ControlPlane)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Push -> ACK on real Envoys is 1-10 ms; the tail up to seconds shows overload or a stuck node.
_ACK_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ControlPlaneMetrics:
    """Push->ACK latency, NACKs, decisions, snapshot version and per-node connection state."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.push_ack_seconds = Histogram(
            "mesh_xds_push_ack_seconds", "Time from pushing a resource to a node until it ACKed it",
            ["node", "type"], buckets=_ACK_BUCKETS, registry=r)
        self.pushes = Counter("mesh_xds_pushes_total", "xDS responses sent", ["node", "type"], registry=r)
        self.nacks = Counter("mesh_xds_nacks_total", "xDS responses an Envoy rejected", ["node", "type"],
                             registry=r)
        self.decisions = Counter("mesh_decisions_total", "Decisions recorded in the ledger",
                                 ["actor", "action"], registry=r)
        self.refused = Counter("mesh_intent_changes_refused_total",
                               "Intent changes refused before any push (inconsistent snapshot)", registry=r)
        self.snapshot_version = Gauge("mesh_xds_snapshot_version", "Newest snapshot version handed out",
                                      registry=r)
        self.last_good_version = Gauge("mesh_xds_last_good_version",
                                       "Newest snapshot version every connected Envoy ACKed", registry=r)
        self.node_connected = Gauge("mesh_xds_node_connected", "1 while the node holds an ADS stream",
                                    ["node"], registry=r)
        self.events_dropped = Gauge("mesh_events_dropped", "Events the bus dropped (NATS down or full)",
                                    registry=r)
        self.events_published = Gauge("mesh_events_published", "Events the bus published", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
