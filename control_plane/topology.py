"""Where things listen: derived from Settings so the builders stay pure functions."""

from __future__ import annotations

from dataclasses import dataclass

from data_plane.settings import Settings


@dataclass(frozen=True)
class ServiceAddr:
    service: str  # xgboost | pytorch | heuristic
    slot: str  # champion | challenger
    server_port: int  # the model server's own listener
    sidecar_port: int | None  # the sidecar Envoy listener in front of it
    sidecar_admin_port: int | None

    @property
    def cluster(self) -> str:
        return self.service if self.slot == "champion" else f"{self.service}-challenger"


@dataclass(frozen=True)
class Topology:
    host: str
    edge_port: int
    edge_admin_port: int
    operator_port: int
    services: tuple[ServiceAddr, ...]
    sidecars: bool

    @classmethod
    def from_settings(cls, s: Settings) -> Topology:
        p = s.ports
        svcs = (
            ServiceAddr("xgboost", "champion", p.xgboost, p.sidecar_xgboost, p.sidecar_admin_xgboost),
            ServiceAddr("pytorch", "champion", p.pytorch, p.sidecar_pytorch, p.sidecar_admin_pytorch),
            ServiceAddr("heuristic", "champion", p.heuristic, p.sidecar_heuristic,
                        p.sidecar_admin_heuristic),
            ServiceAddr("xgboost", "challenger", p.xgboost_challenger,
                        p.sidecar_xgboost_challenger, None),
            ServiceAddr("pytorch", "challenger", p.pytorch_challenger,
                        p.sidecar_pytorch_challenger, None),
        )
        return cls(s.host, p.edge, p.edge_admin, p.operator, svcs, s.sidecars)

    def service(self, cluster: str) -> ServiceAddr:
        for svc in self.services:
            if svc.cluster == cluster:
                return svc
        raise KeyError(cluster)

    def upstream_port(self, cluster: str) -> int:
        """Port the edge sends `cluster` traffic to: the sidecar if enabled, else the server."""
        svc = self.service(cluster)
        if self.sidecars and svc.sidecar_port is not None:
            return svc.sidecar_port
        return svc.server_port
