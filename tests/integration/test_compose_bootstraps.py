"""The compose/k8s Envoy bootstraps (envoy/compose/) against a real control plane and real Envoys.

They find ADS by name (STRICT_DNS `control-plane:18000`). Here the name is `localhost` and the
ports are free ones; everything else is the checked-in file: node ids the control plane serves,
the xds cluster over HTTP/2 by DNS, and Envoy ACKing every resource type it is sent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from control_plane.app import ControlPlane
from data_plane.netutil import free_port
from data_plane.procs import ManagedProcess, envoy
from data_plane.settings import Settings
from tests.unit.cp_fixtures import isolated_settings

pytestmark = pytest.mark.integration
COMPOSE_DIR = Path(__file__).resolve().parents[2] / "envoy" / "compose"
NODES = ("edge", "sidecar-xgboost")


def localised(node: str, ads_port: int, admin_port: int, out: Path) -> Path:
    """The compose bootstrap of `node` with the control plane on localhost and free ports."""
    doc = yaml.safe_load((COMPOSE_DIR / f"{node}.yaml").read_text())
    doc["admin"]["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": admin_port}
    xds = next(c for c in doc["static_resources"]["clusters"] if c["name"] == "xds")
    assert xds["type"] in {"STRICT_DNS", "LOGICAL_DNS"}
    address = xds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert address["socket_address"]["address"] == "control-plane"
    address["socket_address"] = {"address": "localhost", "port_value": ads_port}
    path = out / f"{node}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
async def control_plane(settings: Settings) -> AsyncIterator[ControlPlane]:
    s = isolated_settings(settings)
    cp = ControlPlane(replace(s, ports=replace(s.ports, ads=free_port())), ack_timeout=3.0)
    await cp.start()
    try:
        yield cp
    finally:
        await cp.stop(grace=0.2)


async def test_compose_bootstraps_reach_the_control_plane_by_name_and_ack(
        control_plane: ControlPlane, tmp_path: Path) -> None:
    cp = control_plane
    procs: list[ManagedProcess] = []
    try:
        for node in NODES:
            boot = localised(node, cp.settings.ports.ads, free_port(), tmp_path)
            procs.append(envoy(boot, tmp_path / f"{node}.log", concurrency=1).start())
        version = str(cp.store.version)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status = cp.cache.node_status()
            if all(n in status and status[n].state(version) == "ack" for n in NODES):
                break
            await asyncio.sleep(0.1)
        status = cp.cache.node_status()
        logs = {n: (tmp_path / f"{n}.log").read_text()[-2000:] for n in NODES}
        for node in NODES:
            assert node in status and status[node].state(version) == "ack", f"{node}: {logs[node]}"
    finally:
        for proc in procs:
            proc.stop(timeout=5)
