"""Where things listen and where they are dialled: derived from Settings so the builders stay pure.

Two kinds of address (docs/operations.md, configuration reference):
- bind: what the Envoy listeners the control plane configures listen on (`bind_host`, from
  MESH_BIND_HOST or MESH_HOST): 127.0.0.1 on one machine, 0.0.0.0 in a pod or a container;
- advertised: what an Envoy dials to reach a service (`ServiceAddr.host`, `operator_host`, ...,
  from MESH_HOST_<NAME>): 127.0.0.1 on one machine, a Service name in Kubernetes.
"""

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
    host: str = "127.0.0.1"  # where others dial the server and its sidecar (advertised)
    local_host: str = "127.0.0.1"  # what the sidecar dials for the server beside it

    @property
    def cluster(self) -> str:
        return self.service if self.slot == "champion" else f"{self.service}-challenger"


@dataclass(frozen=True)
class Topology:
    host: str  # the advertised default (127.0.0.1 locally); probes without a host of their own use it
    edge_port: int
    edge_admin_port: int
    operator_port: int
    services: tuple[ServiceAddr, ...]
    sidecars: bool
    # "" means `host` (tests build topologies by hand with one address for everything).
    bind_host: str = ""  # Envoy listeners (edge, sidecar ingress) listen here
    operator_host: str = ""  # the edge's `operator` cluster dials the control plane here
    edge_host: str = ""  # the edge's API and admin, for those who scrape it (the healing loop)

    def __post_init__(self) -> None:
        for name in ("bind_host", "operator_host", "edge_host"):
            if not getattr(self, name):
                object.__setattr__(self, name, self.host)

    @classmethod
    def from_settings(cls, s: Settings) -> Topology:
        p = s.ports
        local = s.advertised_host("sidecar_local")

        def addr(service: str, slot: str, server: int, sidecar: int | None, admin: int | None) -> ServiceAddr:
            return ServiceAddr(service, slot, server, sidecar, admin, s.advertised_host(service), local)

        svcs = (
            addr("xgboost", "champion", p.xgboost, p.sidecar_xgboost, p.sidecar_admin_xgboost),
            addr("pytorch", "champion", p.pytorch, p.sidecar_pytorch, p.sidecar_admin_pytorch),
            addr("heuristic", "champion", p.heuristic, p.sidecar_heuristic, p.sidecar_admin_heuristic),
            addr("xgboost", "challenger", p.xgboost_challenger, p.sidecar_xgboost_challenger, None),
            addr("pytorch", "challenger", p.pytorch_challenger, p.sidecar_pytorch_challenger, None),
        )
        return cls(s.advertised_default, p.edge, p.edge_admin, p.operator, svcs, s.sidecars,
                   bind_host=s.bind_host, operator_host=s.advertised_host("operator"),
                   edge_host=s.advertised_host("edge"))

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

    def upstream(self, cluster: str) -> tuple[str, int]:
        """(host, port) the edge dials for `cluster`: its advertised host, sidecar or server port."""
        return self.service(cluster).host, self.upstream_port(cluster)
