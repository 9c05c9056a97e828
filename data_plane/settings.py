"""One typed settings object: every port, path and knob, from MESH_* env vars, local defaults."""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _default_home() -> Path:
    return REPO_ROOT / ".mesh"


@dataclass(frozen=True)
class Ports:
    """Default local ports (all bound on 127.0.0.1). Override with MESH_PORT_<NAME>."""

    edge: int = 8000
    edge_admin: int = 9901
    xgboost: int = 8001
    pytorch: int = 8002
    heuristic: int = 8003
    # A model server serves its challenger slot on a second port (see docs/decisions).
    xgboost_challenger: int = 8101
    pytorch_challenger: int = 8102
    # Sidecar Envoy listeners (one per model server) and their admin ports.
    sidecar_xgboost: int = 8011
    sidecar_pytorch: int = 8012
    sidecar_heuristic: int = 8013
    sidecar_xgboost_challenger: int = 8111
    sidecar_pytorch_challenger: int = 8112
    sidecar_admin_xgboost: int = 9911
    sidecar_admin_pytorch: int = 9912
    sidecar_admin_heuristic: int = 9913
    ads: int = 18000
    operator: int = 8100
    nats: int = 4222
    nats_monitor: int = 8222
    chaos_api: int = 8474
    prometheus: int = 9090


# Bind addresses that mean "every interface": fine to listen on, never an address to dial.
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})  # noqa: S104 - recognised, never bound here
_DNS_NAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")


@dataclass(frozen=True)
class Hosts:
    """Advertised addresses: where other processes dial each service. Override with MESH_HOST_<NAME>.

    None means the local default (`Settings.advertised_default`: MESH_HOST, or 127.0.0.1 when
    MESH_HOST is a wildcard bind address). An IP address or a DNS name (in Kubernetes a Service
    name such as `xgboost.fraud-mesh.svc.cluster.local`); the control plane turns a name into a
    DNS-resolved Envoy cluster. Ports stay `MESH_PORT_<NAME>`.
    """

    # A model server's pod/host: its own listeners and its sidecar's (champion and challenger).
    xgboost: str | None = None
    pytorch: str | None = None
    heuristic: str | None = None
    # What a sidecar dials for the model server beside it (its `local-<service>` clusters).
    sidecar_local: str | None = None
    operator: str | None = None  # the control plane's operator API (the edge's `operator` cluster)
    edge: str | None = None  # the edge Envoy: its API and admin (the healing loop scrapes it)
    chaos_api: str | None = None  # the fault proxy: its API and the proxies it opens


@dataclass(frozen=True)
class Settings:
    """Where state lives and how the mesh is wired. Build with `Settings.from_env()`."""

    home: Path = field(default_factory=_default_home)
    host: str = "127.0.0.1"
    ports: Ports = field(default_factory=Ports)
    sidecars: bool = True
    # Routing defaults (seed 000: 80/20 XGBoost primary, PyTorch canary).
    default_weights: tuple[tuple[str, float], ...] = (("xgboost", 0.8), ("pytorch", 0.2))
    fraud_threshold: float = 0.5
    log_level: str = "INFO"
    # Containers and hosts beyond one machine point at shared services by URL.
    nats_url_override: str | None = None
    nats_user: str | None = None
    nats_password: str | None = None
    # Where processes and the Envoy listeners the control plane configures listen (MESH_BIND_HOST);
    # None: MESH_HOST. Separate from the addresses others dial (`hosts`, MESH_HOST_<NAME>).
    bind_host_override: str | None = None
    hosts: Hosts = field(default_factory=Hosts)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        home = Path(env.get("MESH_HOME", str(_default_home()))).expanduser().resolve()
        port_over = {}
        for f in fields(Ports):
            key = f"MESH_PORT_{f.name.upper()}"
            if key in env:
                port_over[f.name] = _parse_port(key, env[key])
        s = cls(home=home, ports=replace(Ports(), **port_over))
        if "MESH_SIDECARS" in env:
            s = replace(s, sidecars=env["MESH_SIDECARS"].lower() not in ("0", "false", "no", "off"))
        if "MESH_FRAUD_THRESHOLD" in env:
            s = replace(s, fraud_threshold=float(env["MESH_FRAUD_THRESHOLD"]))
        if "MESH_HOST" in env:
            s = replace(s, host=env["MESH_HOST"])
        if env.get("MESH_NATS_URL"):
            s = replace(s, nats_url_override=env["MESH_NATS_URL"])
        if env.get("MESH_NATS_USER"):
            s = replace(s, nats_user=env["MESH_NATS_USER"], nats_password=env.get("MESH_NATS_PASSWORD"))
        if "MESH_LOG_LEVEL" in env:
            s = replace(s, log_level=env["MESH_LOG_LEVEL"].upper())
        if env.get("MESH_BIND_HOST"):
            s = replace(s, bind_host_override=_parse_bind_host("MESH_BIND_HOST", env["MESH_BIND_HOST"]))
        host_over = {}
        for f in fields(Hosts):
            key = f"MESH_HOST_{f.name.upper()}"
            if env.get(key):
                host_over[f.name] = _parse_advertised_host(key, env[key])
        if host_over:
            s = replace(s, hosts=replace(Hosts(), **host_over))
        return s

    # ---- addresses --------------------------------------------------------------------------
    @property
    def bind_host(self) -> str:
        """What this mesh's listeners bind: MESH_BIND_HOST, else MESH_HOST (0.0.0.0 in a pod)."""
        return self.bind_host_override or self.host

    @property
    def advertised_default(self) -> str:
        """The address to dial a service with no MESH_HOST_<NAME>: MESH_HOST, unless that is a
        wildcard bind address (0.0.0.0, ::), which is never dialled: then the loopback."""
        return "127.0.0.1" if self.host in WILDCARD_HOSTS else self.host

    def advertised_host(self, name: str) -> str:
        """Where others dial service `name` (a `Hosts` field: xgboost, operator, edge, ...)."""
        if name not in _HOST_FIELDS:
            raise KeyError(f"{name!r} is not a service with an advertised host; use one of "
                           f"{', '.join(sorted(_HOST_FIELDS))}")
        return getattr(self.hosts, name) or self.advertised_default

    # ---- paths under MESH_HOME -------------------------------------------------
    @property
    def mlflow_db(self) -> Path:
        return self.home / "mlflow" / "mlflow.db"

    @property
    def mlflow_tracking_uri(self) -> str:
        return f"sqlite:///{self.mlflow_db}"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.home / "mlflow" / "artifacts"

    @property
    def state_dir(self) -> Path:
        return self.home / "state"

    @property
    def run_dir(self) -> Path:
        """pid files and service records."""
        return self.home / "run"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def envoy_dir(self) -> Path:
        """Rendered Envoy bootstraps."""
        return self.home / "envoy"

    @property
    def jetstream_dir(self) -> Path:
        return self.home / "jetstream"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def operator_token_file(self) -> Path:
        return self.home / "operator-token"

    @property
    def nats_url(self) -> str:
        if self.nats_url_override:
            return self.nats_url_override
        auth = f"{self.nats_user}:{self.nats_password}@" if self.nats_user else ""
        return f"nats://{auth}{self.host}:{self.ports.nats}"

    @property
    def operator_url(self) -> str:
        return f"http://{self.host}:{self.ports.operator}"

    @property
    def edge_url(self) -> str:
        return f"http://{self.host}:{self.ports.edge}"

    def ensure_home(self) -> None:
        """Create the state folders; raise StateDirError with a fix when that is impossible."""
        from data_plane.contracts.errors import StateDirError

        try:
            for d in (self.home, self.state_dir, self.run_dir, self.log_dir, self.envoy_dir,
                      self.mlflow_artifacts, self.data_dir):
                d.mkdir(parents=True, exist_ok=True)
            probe = self.home / ".write-probe"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise StateDirError(
                f"cannot write the state folder {self.home}: {exc.strerror or exc}. "
                "Free some space or point MESH_HOME at a writable folder."
            ) from exc


def _parse_port(key: str, raw: str) -> int:
    from data_plane.contracts.errors import ConfigError

    try:
        port = int(raw)
    except ValueError:
        raise ConfigError(f"{key}={raw!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{key}={port} is outside 0-65535")
    return port


_HOST_FIELDS = frozenset(f.name for f in fields(Hosts))


def is_ip_address(host: str) -> bool:
    """True for an IPv4/IPv6 literal (Envoy takes it as is), False for a name it must resolve."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def is_dns_name(host: str) -> bool:
    """True for a syntactically valid DNS host name (labels of letters, digits and hyphens)."""
    return bool(_DNS_NAME.match(host)) and not is_ip_address(host)


def _parse_bind_host(key: str, raw: str) -> str:
    from data_plane.contracts.errors import ConfigError

    host = raw.strip()
    if not is_ip_address(host):
        raise ConfigError(f"{key}={raw!r} must be an IP address to listen on, such as 127.0.0.1 or 0.0.0.0")
    return host


def _parse_advertised_host(key: str, raw: str) -> str:
    from data_plane.contracts.errors import ConfigError

    host = raw.strip()
    if host in WILDCARD_HOSTS:
        raise ConfigError(f"{key}={raw!r} is a bind address, not one to dial; name the host others connect "
                          "to (an IP address or a DNS name such as xgboost.fraud-mesh.svc.cluster.local)")
    if not (is_ip_address(host) or is_dns_name(host)):
        raise ConfigError(f"{key}={raw!r} must be an IP address or a DNS name, without scheme or port "
                          "(e.g. 127.0.0.1 or xgboost.fraud-mesh.svc.cluster.local)")
    return host
