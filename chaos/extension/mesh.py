"""How the extension reaches the mesh: loopback HTTP (operator API, Envoy admin, fault proxy),
the service records `meshctl up` writes under settings.run_dir, and process signals.

chaos may import only data_plane, so the records are read as plain JSON here (the format is
meshctl.lifecycle's: {"home", "services": {name: {pid, start_ticks, argv, ports, probes, log, ...}}}).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from data_plane.contracts.errors import MeshError
from data_plane.settings import REPO_ROOT, Ports, Settings

HTTP_TIMEOUT_S = 2.0


class ChaosActionError(MeshError):
    """An action or probe could not do what the experiment asked (the message says why)."""


# ---- HTTP -----------------------------------------------------------------------------------------
def http_json(method: str, url: str, body: Any = None, token: str | None = None,
              timeout: float = HTTP_TIMEOUT_S) -> tuple[int, Any]:
    """One loopback request; returns (status, parsed JSON or text). Connection failure -> (0, reason)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - loopback targets only
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(getattr(exc, "reason", exc))
    text = raw.decode(errors="replace")
    try:
        return status, json.loads(text) if text.strip() else None
    except ValueError:
        return status, text


def operator_token(settings: Settings) -> str:
    try:
        return settings.operator_token_file.read_text().strip()
    except OSError as exc:
        raise ChaosActionError(f"cannot read the operator token {settings.operator_token_file} "
                               f"({exc.strerror or exc}); is the mesh up (`meshctl up`)?") from None


def operator(settings: Settings, method: str, path: str, body: Any = None) -> Any:
    """Call the operator API (writes carry the token); a failure raises with the answer's message."""
    token = operator_token(settings) if method != "GET" else None
    status, answer = http_json(method, settings.operator_url + path, body, token)
    if not 200 <= status < 300:
        detail = answer.get("message") if isinstance(answer, dict) else answer
        raise ChaosActionError(f"operator API {method} {path} -> {status or 'unreachable'}: {detail}")
    return answer


def proxy_api_url(settings: Settings) -> str:
    return f"http://{settings.host}:{settings.ports.chaos_api}"


def edge_admin(settings: Settings, path: str) -> str:
    """Text of an edge Envoy admin page ('' when the admin does not answer)."""
    status, answer = http_json("GET", f"http://{settings.host}:{settings.ports.edge_admin}{path}")
    return answer if status == 200 and isinstance(answer, str) else ""


def ejected_hosts(settings: Settings) -> dict[str, list[str]]:
    """Per edge cluster, the hosts outlier detection (or active health) has taken out right now."""
    out: dict[str, list[str]] = {}
    for line in edge_admin(settings, "/clusters").splitlines():
        parts = line.split("::")
        if len(parts) == 4 and parts[2] == "health_flags" and parts[3] != "healthy":
            out.setdefault(parts[0], []).append(f"{parts[1]} ({parts[3]})")
    return out


# ---- service records and processes ------------------------------------------------------------
@dataclass(frozen=True)
class ServiceRecord:
    name: str
    pid: int
    start_ticks: int
    ports: dict[str, int]


def load_records(settings: Settings) -> dict[str, ServiceRecord]:
    path = settings.run_dir / "services.json"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ChaosActionError(f"{path} is unreadable ({exc})") from None
    return {name: ServiceRecord(name, int(r["pid"]), int(r.get("start_ticks", 0)), dict(r.get("ports", {})))
            for name, r in raw.get("services", {}).items()}


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2:].split()


def alive(rec: ServiceRecord) -> bool:
    """The recorded process runs (not a zombie) and is the one recorded (not a reused pid)."""
    st = _stat(rec.pid)
    if st is None or st[0] in ("Z", "X"):
        return False
    return not rec.start_ticks or int(st[19]) == rec.start_ticks


def record_of(settings: Settings, name: str) -> ServiceRecord:
    records = load_records(settings)
    if name not in records:
        raise ChaosActionError(f"no service {name!r} in {settings.run_dir / 'services.json'}; "
                               f"recorded: {', '.join(sorted(records)) or 'none'} (is the mesh up?)")
    return records[name]


def signal_service(settings: Settings, name: str, sig: signal.Signals) -> int:
    """Send `sig` to a service's process group (each service leads its own group). Returns the pid."""
    rec = record_of(settings, name)
    if not alive(rec):
        raise ChaosActionError(f"{name} (pid {rec.pid}) is not running; nothing to signal")
    os.killpg(rec.pid, sig)
    return rec.pid


def wait_dead(settings: Settings, name: str, timeout: float = 10.0) -> bool:
    rec = record_of(settings, name)
    deadline = time.monotonic() + timeout
    while alive(rec) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(rec)


def child_env(settings: Settings) -> dict[str, str]:
    """The env `meshctl up` needs to agree with this mesh on home and ports."""
    env = dict(os.environ)
    env.update({"MESH_HOME": str(settings.home), "MESH_HOST": settings.host,
                "MESH_SIDECARS": "1" if settings.sidecars else "0", "PYTHONUNBUFFERED": "1"})
    for f in fields(Ports):
        env[f"MESH_PORT_{f.name.upper()}"] = str(getattr(settings.ports, f.name))
    return env


def start_services(settings: Settings, names: list[str], timeout: float = 120.0) -> str:
    """`meshctl up --detach --only NAMES`: restarts what is not running, keeps what is."""
    cmd = [sys.executable, "-m", "meshctl", "up", "--detach", "--only", ",".join(names)]
    try:
        proc = subprocess.run(cmd, env=child_env(settings), cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise ChaosActionError(f"restarting {', '.join(names)} took over {timeout:.0f}s") from None
    if proc.returncode != 0:
        raise ChaosActionError(f"restarting {', '.join(names)} failed (exit {proc.returncode}): "
                               f"{(proc.stderr or proc.stdout)[-800:]}")
    return proc.stdout


def cluster_endpoint(settings: Settings, cluster: str) -> tuple[str, int]:
    """Where the edge's cluster normally points: the sidecar listener, or the server without sidecars."""
    base = cluster.replace("-", "_")
    field = f"sidecar_{base}" if settings.sidecars else base
    if not hasattr(settings.ports, field):
        raise ChaosActionError(f"unknown cluster {cluster!r}; use xgboost, pytorch, heuristic, "
                               "xgboost-challenger or pytorch-challenger")
    return settings.host, int(getattr(settings.ports, field))
