"""Render an Envoy bootstrap (envoy/edge.yaml or envoy/sidecar.yaml) for one node."""

from __future__ import annotations

import ipaddress
import os
import subprocess
from pathlib import Path
from string import Template

from data_plane.contracts.errors import ConfigError, MeshError

TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "envoy"
ROLES = ("edge", "sidecar")


def template_path(role: str) -> Path:
    """The bootstrap template of `role` (`edge` or `sidecar`)."""
    if role not in ROLES:
        raise ConfigError(f"bootstrap role {role!r} is unknown; use one of {', '.join(ROLES)}")
    return TEMPLATE_DIR / f"{role}.yaml"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _check_port(name: str, port: int) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigError(f"{name}={port!r} is not a port number (1-65535)")


def render_bootstrap(role: str, node_id: str, admin_port: int, ads_host: str, ads_port: int,
                     out_path: Path, admin_host: str = "127.0.0.1", node_cluster: str | None = None) -> Path:
    """Write the bootstrap of node `node_id` to `out_path` and return it.

    The node's cluster is `node_cluster` (default: the template's role). The control plane serves
    a node the snapshot of its id, else the one of its cluster: replicas of one Envoy take
    distinct ids and the shared snapshot key as cluster (e.g. id `edge-2`, cluster `edge`).
    Admin listens on `admin_host` (127.0.0.1; an IP address);
    the `xds` cluster speaks HTTP/2 to the ADS server at ads_host:ads_port. `ads_host` may be a
    host name (e.g. a compose service), which makes the `xds` cluster STRICT_DNS.
    """
    if not node_id or any(c.isspace() for c in node_id) or ":" in node_id:
        raise ConfigError(f"node id {node_id!r} must be a non-empty word (e.g. edge, sidecar-xgboost)")
    node_cluster = role if node_cluster is None else node_cluster
    if not node_cluster or any(c.isspace() for c in node_cluster) or ":" in node_cluster:
        raise ConfigError(f"node cluster {node_cluster!r} must be a non-empty word (e.g. edge)")
    _check_port("admin_port", admin_port)
    _check_port("ads_port", ads_port)
    if not _is_ip(admin_host):
        raise ConfigError(f"admin_host={admin_host!r} must be an IP address such as 127.0.0.1")
    if not ads_host or not all(c.isalnum() or c in ".-_:" for c in ads_host):
        raise ConfigError(f"ads_host={ads_host!r} must be an IP address or a host name")
    text = Template(template_path(role).read_text()).substitute(
        node_id=node_id, node_cluster=node_cluster, admin_host=admin_host, admin_port=admin_port,
        ads_host=ads_host, ads_port=ads_port, xds_cluster_type="STATIC" if _is_ip(ads_host) else "STRICT_DNS")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(out_path)  # atomic: a starting Envoy never reads half a file
    return out_path


def validate_bootstrap(path: Path, envoy_bin: str | None = None, timeout: float = 60.0) -> str:
    """Run `envoy --mode validate -c path`; return its output, raise MeshError when Envoy refuses it."""
    if envoy_bin is None:
        from data_plane.procs import venv_bin

        envoy_bin = venv_bin("envoy")
    proc = subprocess.run([envoy_bin, "--mode", "validate", "-c", str(path), "-l", "error",
                           "--disable-hot-restart"], capture_output=True, text=True, timeout=timeout,
                          check=False)
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        raise MeshError(f"Envoy rejected the bootstrap {path}: {output[-2000:]}")
    return output
