"""A real ControlPlane on free ports (ADS on port 0, NATS pointed at a closed port) for unit tests."""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

from control_plane.app import ControlPlane
from control_plane.intent import RoutingIntent
from control_plane.topology import Topology
from control_plane.xds import Snapshot, build_snapshots
from data_plane.netutil import free_port
from data_plane.settings import Ports, Settings


def isolated_settings(settings: Settings) -> Settings:
    """Every port free (nothing of another mesh gets probed); ADS on an OS-chosen port."""
    ports = replace(Ports(), **{f.name: free_port() for f in fields(Ports)})
    return replace(settings, ports=replace(ports, ads=0))


def control_plane(settings: Settings, **kw: Any) -> ControlPlane:
    return ControlPlane(isolated_settings(settings) if settings.ports.ads else settings,
                        ack_timeout=0.3, **kw)


def builder_dropping_cluster(cluster: str, when_weight: float) -> Any:
    """The real builders, except the edge snapshot loses `cluster` when xgboost has `when_weight`:
    a builder bug that leaves the failover chains naming a missing cluster."""
    def build(intent: RoutingIntent, topo: Topology, version: int) -> dict[str, Snapshot]:
        snaps = dict(build_snapshots(intent, topo, version))
        if intent.weights.get("xgboost") == when_weight:
            edge = snaps["edge"]
            snaps["edge"] = Snapshot(version, [c for n, c in edge.clusters.items() if n != cluster],
                                     edge.endpoints.values(), edge.listeners.values(),
                                     edge.routes.values())
        return snaps
    return build
