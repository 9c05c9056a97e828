"""`meshctl up / status / down` with real nats-server, control plane and edge Envoy.

One mesh per module, free ports via MESH_PORT_*, a temp MESH_HOME. The story: up -> status ->
operator change through the edge -> Envoy ACKs it -> kill -9 the control plane -> Envoy keeps
serving -> restart -> same intent, higher version -> down leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from data_plane.settings import Settings
from meshctl.lifecycle import process_alive
from tests.mesh_support import free_port_env, http_json

pytestmark = pytest.mark.integration
CORE = "nats,control-plane,edge"
TXN = {"amount": 1500.0, "merchant_category": 7, "hour_of_day": 2, "day_of_week": 6,
       "distance_from_home": 150.0, "distance_from_last_txn": 80.0, "is_foreign": 1,
       "velocity_last_1h": 5, "velocity_last_24h": 12, "avg_amount_last_7d": 200.0, "card_age_days": 15}


@pytest.fixture(scope="module")
def mesh_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    home = tmp_path_factory.mktemp("lifecycle") / "mesh"
    env = {**os.environ, "MESH_HOME": str(home), **free_port_env()}
    yield env
    meshctl(env, "down", "--timeout", "5")  # whatever happened, leave nothing running


def meshctl(env: dict[str, str], *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meshctl", *args], env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def settings_of(env: dict[str, str]) -> Settings:
    return Settings.from_env(env)


http = http_json


def edge_versions(s: Settings) -> set[str]:
    """version_info of every dynamic resource in the edge Envoy's config dump."""
    _, dump = http("GET", f"http://{s.host}:{s.ports.edge_admin}/config_dump")
    versions: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "version_info" and isinstance(value, str) and value:
                    versions.add(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(dump)
    return versions


def edge_split(s: Settings) -> dict[str, int]:
    """The predict route's weighted clusters as the edge Envoy runs them."""
    _, dump = http("GET", f"http://{s.host}:{s.ports.edge_admin}/config_dump?resource=dynamic_route_configs")
    for config in dump["configs"]:
        for vhost in config["route_config"]["virtual_hosts"]:
            for route in vhost["routes"]:
                if route["match"].get("path") == "/api/v1/predict":
                    clusters = route["route"]["weighted_clusters"]["clusters"]
                    return {c["name"]: int(c["weight"]) for c in clusters}
    raise AssertionError("no /api/v1/predict route in the edge config")


def edge_xds_versions(s: Settings) -> dict[str, str]:
    """The version of the last accepted CDS/LDS/RDS update (Envoy's *.version_text stats).

    A re-sent resource whose content is unchanged keeps its old version in /config_dump, so the
    stats are what shows that Envoy accepted a newer version.
    """
    _, text = http("GET", f"http://{s.host}:{s.ports.edge_admin}/stats?filter=version_text")
    out = {}
    for line in str(text).splitlines():
        name, _, value = line.partition(": ")
        for kind in ("cluster_manager.cds", "listener_manager.lds", "rds.edge-routes"):
            if name.endswith(kind + ".version_text"):
                out[kind.split(".")[-1]] = value.strip().strip('"')
    return out


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def run_processes(home: Path) -> list[int]:
    """Pids whose command line or environment mentions MESH_HOME (psutil-free, via /proc)."""
    needle = str(home).encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry.name}/cmdline").read_bytes()
            environ = Path(f"/proc/{entry.name}/environ").read_bytes()
        except OSError:
            continue
        if needle in cmdline or b"MESH_HOME=" + needle + b"\0" in environ + b"\0":
            found.append(int(entry.name))
    return found


def test_a_taken_port_is_refused_naming_the_variable(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        env = {**os.environ, "MESH_HOME": str(tmp_path / "mesh"), **free_port_env(),
               "MESH_PORT_NATS": str(taken)}
        proc = meshctl(env, "up", "--detach", "--only", "nats")
    assert proc.returncode == 1
    assert f"port {taken}" in proc.stderr and "MESH_PORT_NATS" in proc.stderr
    assert not run_processes(tmp_path / "mesh")


def test_up_change_kill_restart_down(mesh_env: dict[str, str]) -> None:
    s = settings_of(mesh_env)
    up = meshctl(mesh_env, "up", "--detach", "--only", CORE)
    assert up.returncode == 0, up.stdout + up.stderr
    for name in ("nats", "control-plane", "edge"):
        assert f"{name}" in up.stdout and "ready in" in up.stdout

    status = json.loads(meshctl(mesh_env, "status", "--json").stdout)
    by_name = {svc["name"]: svc for svc in status["services"]}
    assert set(by_name) == {"nats", "control-plane", "edge"}
    assert all(svc["healthy"] and svc["running"] for svc in by_name.values()), by_name
    assert by_name["edge"]["ports"]["edge"] == s.ports.edge
    assert status["source"] == "operator_api"
    start_version = status["snapshot_version"]

    # Writes through the edge need the token; without it nothing changes.
    token = s.operator_token_file.read_text().strip()
    assert oct(s.operator_token_file.stat().st_mode & 0o777) == "0o600"
    code, body = http("POST", f"{s.edge_url}/api/v1/traffic", {"xgboost": 0.3, "pytorch": 0.7})
    assert code == 401 and body["field"] == "Authorization"
    code, body = http("POST", f"{s.edge_url}/api/v1/traffic", {"xgboost": 0.3, "pytorch": 0.7}, token)
    assert code == 200, body
    version = body["version"]
    assert int(version) > start_version
    assert body["acked"] is True and body["nodes"] == {"edge": "ack"}
    assert body["weights"] == {"xgboost": 0.3, "pytorch": 0.7}
    assert version in edge_versions(s)
    assert edge_split(s) == {"chain-xgboost": 3000, "chain-pytorch": 7000}

    # kill -9 the control plane: the edge keeps its last config and still answers.
    records = json.loads((s.run_dir / "services.json").read_text())["services"]
    cp_pid = records["control-plane"]["pid"]
    os.kill(cp_pid, signal.SIGKILL)
    wait_for(lambda: not process_alive(cp_pid), 10, "the control plane to die")
    code, body = http("POST", f"{s.edge_url}/api/v1/predict", TXN)
    assert code == 200, body
    assert body["model_type"] == "conservative_default" and body["is_fraud"] is True
    assert version in edge_versions(s)

    # Restart: only the dead service is started again; Envoy reconnects to a higher version.
    again = meshctl(mesh_env, "up", "--detach", "--only", CORE)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already running" in again.stdout and "control-plane" in again.stdout
    newer = wait_for(lambda: (v := edge_xds_versions(s)) and len(v) == 3
                     and all(int(x) > int(version) for x in v.values()) and v,
                     20, "the edge to accept a higher version")
    assert edge_split(s) == {"chain-xgboost": 3000, "chain-pytorch": 7000}
    code, st = http("GET", f"{s.edge_url}/api/v1/status")
    assert code == 200
    assert st["intent"]["weights"] == {"xgboost": 0.3, "pytorch": 0.7}
    assert st["version"] == int(newer["cds"]) > int(version)
    wait_for(lambda: http("GET", f"{s.operator_url}/api/v1/status")[1]["nodes"]["edge"]["state"] == "ack",
             10, "the edge node to report ack")

    down = meshctl(mesh_env, "down")
    assert down.returncode == 0, down.stderr
    assert not run_processes(s.home)
    assert not list(s.run_dir.glob("*.pid"))
    twice = meshctl(mesh_env, "down")
    assert twice.returncode == 0 and "nothing running" in twice.stdout


def test_foreground_up_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    home = tmp_path / "mesh"
    env = {**os.environ, "MESH_HOME": str(home), **free_port_env()}
    proc = subprocess.Popen([sys.executable, "-m", "meshctl", "up", "--only", "nats"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        lines = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "Ctrl-C stops it" in line or not line:
                break
        assert any("nats" in line and "ready in" in line for line in lines), lines
        assert run_processes(home)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0, out
        assert "stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            meshctl(env, "down")
    assert not run_processes(home)
    assert not (home / "run" / "services.json").exists()
