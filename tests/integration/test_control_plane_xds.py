"""ControlPlane with a real edge Envoy and nats-server: ACKs, a NACK, the revert, the events."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from envoy.config.cluster.v3 import cluster_pb2

from control_plane.app import ControlPlane
from control_plane.intent import RoutingIntent
from control_plane.topology import Topology
from control_plane.xds import Snapshot, build_snapshots, render_bootstrap
from data_plane.contracts import subjects
from data_plane.contracts.events import Decision, XdsEvent
from data_plane.eventbus import EventBus
from data_plane.netutil import free_port
from data_plane.procs import ManagedProcess, envoy, nats_server
from data_plane.settings import Settings
from tests.unit.cp_fixtures import isolated_settings

pytestmark = pytest.mark.integration
POISON_WEIGHT = 0.35  # the builder below makes Envoy reject the snapshot for this xgboost weight


def builder_envoy_rejects(intent: RoutingIntent, topo: Topology, version: int) -> dict[str, Snapshot]:
    """The real builders, except that one weight yields a cluster Envoy's validation refuses
    (connect_timeout must be > 0): consistent for us, NACKed by Envoy."""
    snaps = dict(build_snapshots(intent, topo, version))
    if intent.weights.get("xgboost") == POISON_WEIGHT:
        edge = snaps["edge"]
        clusters = []
        for name, cluster in edge.clusters.items():
            if name == "xgboost":
                cluster = cluster_pb2.Cluster.FromString(cluster.SerializeToString())
                cluster.connect_timeout.FromSeconds(-1)
            clusters.append(cluster)
        snaps["edge"] = Snapshot(version, clusters, edge.endpoints.values(), edge.listeners.values(),
                                 edge.routes.values())
    return snaps


@dataclass
class Mesh:
    cp: ControlPlane
    settings: Settings
    events: list[tuple[str, bytes]]


@pytest.fixture
async def mesh(settings: Settings, tmp_path: Path) -> AsyncIterator[Mesh]:
    s = isolated_settings(settings)
    s = replace(s, ports=replace(s.ports, ads=free_port()))  # the bootstrap needs the real port
    nats_proc = nats_server(s.ports.nats, s.ports.nats_monitor, tmp_path / "js", tmp_path / "nats.log")
    nats_proc.start()
    procs: list[ManagedProcess] = [nats_proc]
    nc = None
    cp = ControlPlane(s, ack_timeout=3.0, bus=EventBus(s.nats_url, "cp-test", flush_interval=0.01),
                      build=builder_envoy_rejects)
    try:
        nats_proc.wait_port(s.host, s.ports.nats)
        events: list[tuple[str, bytes]] = []
        nc = await nats.connect(s.nats_url)

        async def on_msg(msg: Any) -> None:
            events.append((msg.subject, msg.data))

        await nc.subscribe("mesh.xds.>", cb=on_msg)
        await nc.subscribe(subjects.DECISIONS, cb=on_msg)
        await nc.flush()
        await cp.start()
        boot = render_bootstrap("edge", "edge", s.ports.edge_admin, s.host, s.ports.ads,
                                tmp_path / "edge.yaml")
        edge = envoy(boot, tmp_path / "edge.log")
        procs.append(edge.start())
        await asyncio.to_thread(edge.wait_port, s.host, s.ports.edge, 30)
        await wait_until(lambda: cp.cache.node_status()["edge"].state(str(cp.store.version)) == "ack",
                         15, "the edge to ACK the first snapshot")
        yield Mesh(cp, s, events)
    finally:
        await cp.stop(grace=0.2)
        if nc is not None:
            await nc.drain()
        for proc in reversed(procs):
            proc.stop(timeout=5)


async def wait_until(predicate: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {within}s waiting for {what}")


def edge_split(s: Settings) -> dict[str, int]:
    url = f"http://{s.host}:{s.ports.edge_admin}/config_dump?resource=dynamic_route_configs"
    with urllib.request.urlopen(url, timeout=5) as resp:
        dump = json.loads(resp.read())
    for config in dump["configs"]:
        for vhost in config["route_config"]["virtual_hosts"]:
            for route in vhost["routes"]:
                if route["match"].get("path") == "/api/v1/predict":
                    clusters = route["route"]["weighted_clusters"]["clusters"]
                    return {c["name"]: int(c["weight"]) for c in clusters}
    raise AssertionError("no predict route")


async def test_ack_then_nack_reverts_once_and_reports(mesh: Mesh) -> None:
    cp, s = mesh.cp, mesh.settings
    # The startup decision was recorded before any Envoy connected; the edge's ACK settles it later.
    resume = cp.ledger.get(1)
    assert resume is not None and resume.action == "resume"
    await wait_until(lambda: (d := cp.ledger.get(1)) is not None and d.acked is True, 5,
                     "the startup decision to be marked acked")
    assert cp.ledger.get(1).nodes == {"edge": "ack"}  # type: ignore[union-attr]
    good = await cp.apply({"weights": {"xgboost": 0.6, "pytorch": 0.4}}, actor="operator",
                          rule="operator_request", reason="split 60/40")
    assert good.acked is True and good.nodes == {"edge": "ack"}
    assert cp.store.last_good is not None and cp.store.last_good.version == int(good.xds_version or 0)
    assert edge_split(s) == {"chain-xgboost": 6000, "chain-pytorch": 4000}

    bad = await cp.apply({"weights": {"xgboost": POISON_WEIGHT, "pytorch": 1 - POISON_WEIGHT}},
                         actor="operator", rule="operator_request", reason="poisoned")
    assert bad.acked is False and bad.nodes == {"edge": "nack"}

    entries = cp.ledger.read(since_seq=good.seq)
    assert [(d.actor, d.action) for d in entries] == [
        ("envoy", "nack"), ("operator", "set_weights"), ("control_plane", "revert")]
    nack, _, revert = entries
    assert nack.xds_version == bad.xds_version and "positive duration" in nack.reason
    assert revert.acked is True and revert.trigger_ids == [bad.id]
    assert int(revert.xds_version or 0) > int(bad.xds_version or 0)
    assert cp.store.intent.weights == {"xgboost": 0.6, "pytorch": 0.4}
    assert cp.store.last_good is not None and cp.store.last_good.version == int(revert.xds_version or 0)
    await wait_until(lambda: edge_split(s) == {"chain-xgboost": 6000, "chain-pytorch": 4000}, 5,
                     "the edge to run the last good split")

    # The rejected content is not pushed again and again.
    pushes = cp.cache.node_status()["edge"].pushes
    await asyncio.sleep(1.0)
    assert cp.cache.node_status()["edge"].pushes == pushes
    status = cp.status()
    assert status["nodes"]["edge"]["state"] == "ack" and status["version"] == int(revert.xds_version or 0)

    metrics = cp.metrics.render().decode()
    assert 'mesh_xds_nacks_total{node="edge",type="cds"} 1.0' in metrics
    assert 'mesh_xds_push_ack_seconds_count{node="edge",type="cds"}' in metrics
    cp.refresh_metrics()
    assert 'mesh_xds_node_connected{node="edge"} 1.0' in cp.metrics.render().decode()

    await wait_until(lambda: any(subj == "mesh.xds.nacked" for subj, _ in mesh.events), 5, "NACK event")
    nacked = [msgspec.json.decode(d, type=XdsEvent) for subj, d in mesh.events if subj == "mesh.xds.nacked"]
    assert nacked[0].node == "edge" and nacked[0].version == bad.xds_version
    assert nacked[0].error and "positive duration" in nacked[0].error
    acked = [msgspec.json.decode(d, type=XdsEvent) for subj, d in mesh.events if subj == "mesh.xds.acked"]
    assert acked and all(e.latency_ms is not None and e.latency_ms >= 0 for e in acked)
    await wait_until(lambda: sum(subj == subjects.DECISIONS for subj, _ in mesh.events) >= 4, 5,
                     "decision events")
    seqs = {msgspec.json.decode(d, type=Decision).seq
            for subj, d in mesh.events if subj == subjects.DECISIONS}
    assert {good.seq, nack.seq, bad.seq, revert.seq} <= seqs
