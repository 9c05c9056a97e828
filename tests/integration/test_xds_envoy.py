"""The xDS control plane against the real Envoy 1.40 binary.

One edge Envoy and one sidecar Envoy share an ADS server for the whole module; tiny aiohttp
upstreams (one per cluster) answer JSON naming themselves. Tests that break things (NACK,
control plane down, killed upstreams) restore what they broke, and the destructive ones run last.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from multidict import CIMultiDict

from control_plane.intent import Canary, RoutingIntent, Shadow
from control_plane.xds import (
    AdsServer,
    Snapshot,
    SnapshotCache,
    build_snapshots,
    render_bootstrap,
    validate_bootstrap,
)
from control_plane.xds.resources import CLUSTER, ROUTE
from data_plane.netutil import free_port
from data_plane.procs import ManagedProcess
from data_plane.settings import REPO_ROOT
from tests.integration.xds_harness import (
    BASE_ID,
    MODEL_CLUSTERS,
    SEED_FIELDS,
    Mesh,
    Recorder,
    Upstream,
    start_envoy,
    topologies,
)

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def mesh(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Mesh]:
    tmp = tmp_path_factory.mktemp("xds")
    topo, side_topo = topologies()
    upstreams = {c: Upstream(c, topo.service(c).server_port) for c in MODEL_CLUSTERS}
    upstreams["operator"] = Upstream("operator", topo.operator_port)
    upstreams["local-xgboost"] = Upstream("local-xgboost", side_topo.service("xgboost").server_port,
                                          delay=0.4)
    upstreams["local-xgboost-challenger"] = Upstream(
        "local-xgboost-challenger", side_topo.service("xgboost-challenger").server_port)
    for up in upstreams.values():
        await up.start()
    cache, recorder = SnapshotCache(), Recorder()
    server = AdsServer(cache, recorder)
    ads_port = await server.start("127.0.0.1", 0)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
    m = Mesh(topo, side_topo, upstreams, cache, server, ads_port, recorder, None, None, session)  # type: ignore[arg-type]
    m.publish(RoutingIntent())
    try:
        m.edge = await start_envoy("edge", "edge", topo.edge_admin_port, ads_port, tmp, BASE_ID,
                                    topo.edge_port)
        side = side_topo.service("xgboost")
        m.sidecar = await start_envoy("sidecar", "sidecar-xgboost", side.sidecar_admin_port or 0, ads_port,
                                       tmp, BASE_ID + 1, side.sidecar_port or 0)
        yield m
    finally:
        await session.close()
        await m.server.stop(0.5)
        for proc in (m.edge, m.sidecar):
            if proc is not None:
                proc.stop()
        for up in upstreams.values():
            await up.stop()


# ---- bootstraps ---------------------------------------------------------------------------------
@pytest.mark.asyncio(loop_scope="module")
async def test_rendered_bootstraps_pass_envoy_validate(tmp_path: Path) -> None:
    for role, node in (("edge", "edge"), ("sidecar", "sidecar-pytorch")):
        path = render_bootstrap(role, node, free_port(), "127.0.0.1", free_port(), tmp_path / f"{role}.yaml")
        text = path.read_text()
        assert f"id: {node}" in text and "resource_api_version: V3" in text
        assert "OK" in validate_bootstrap(path)
    # A compose-style bootstrap: the control plane by service name, admin reachable in the container.
    dns = render_bootstrap("edge", "edge", 9901, "control-plane", 18000, tmp_path / "compose.yaml",
                           admin_host="0.0.0.0")
    assert "type: STRICT_DNS" in dns.read_text()
    assert "OK" in validate_bootstrap(dns)


# ---- first contact --------------------------------------------------------------------------------
async def test_envoy_receives_every_type_and_serves(mesh: Mesh) -> None:
    version = str(mesh.version)
    assert await mesh.cache.wait_acked(version, timeout=10) == {"edge": "ack", "sidecar-xgboost": "ack"}
    status = mesh.cache.node_status()["edge"]
    assert status.connected and status.acked == {"cds": version, "eds": version, "lds": version,
                                                 "rds": version}
    dump = await mesh.config_dump()
    active = dump["ClustersConfigDump"]["dynamic_active_clusters"]
    clusters = {c["cluster"]["name"]: c["version_info"] for c in active}
    assert set(MODEL_CLUSTERS) | {"chain-xgboost", "chain-pytorch", "operator"} <= set(clusters)
    assert set(clusters.values()) == {version}
    assert [r["version_info"] for r in dump["RoutesConfigDump"]["dynamic_route_configs"]] == [version]
    assert dump["ListenersConfigDump"]["dynamic_listeners"][0]["active_state"]["version_info"] == version
    eds = {e["endpoint_config"]["cluster_name"]
           for e in dump["EndpointsConfigDump"]["dynamic_endpoint_configs"]}
    assert set(MODEL_CLUSTERS) <= eds

    code, _, body = await mesh.predict()
    assert code == 200 and body["routed_to"] in ("xgboost", "pytorch")
    assert body["intended"] == body["routed_to"]  # x-mesh-intended names the weighted target
    async with mesh.session.get(mesh.edge_url + "/health") as r:
        assert r.status == 200 and (await r.json())["routed_to"] == "operator"


# ---- routing ------------------------------------------------------------------------------------------
async def test_fifty_fifty_split_within_four_percent(mesh: Mesh) -> None:
    await mesh.publish_acked(RoutingIntent(weights={"xgboost": 0.5, "pytorch": 0.5}))
    results = await mesh.burst(2000, concurrency=32)
    assert all(code == 200 for code, _, _ in results)
    served = Counter(body["routed_to"] for _, _, body in results)
    share = served["xgboost"] / len(results)
    assert abs(share - 0.5) <= 0.04, served
    assert all(body["intended"] == body["routed_to"] for _, _, body in results)


async def test_weight_change_is_acked_and_visible_in_config_dump(mesh: Mesh) -> None:
    version = await mesh.publish_acked(RoutingIntent(weights={"xgboost": 0.9, "pytorch": 0.1}))
    route_acks = [a for a in mesh.recorder.acks if a[0] == "edge" and a[1] == ROUTE and a[2] == version]
    assert len(route_acks) == 1 and route_acks[0][3] < 2000
    dump = await mesh.config_dump()
    (routes,) = dump["RoutesConfigDump"]["dynamic_route_configs"]
    assert routes["version_info"] == version
    predict = routes["route_config"]["virtual_hosts"][0]["routes"][1]
    weights = {c["name"]: c["weight"] for c in predict["route"]["weighted_clusters"]["clusters"]}
    assert weights == {"chain-xgboost": 9000, "chain-pytorch": 1000}
    # Clusters did not change: not re-sent, yet the node counts as running them at this version.
    assert mesh.cache.node_status()["edge"].acked["cds"] == version


async def test_sticky_card_keeps_its_model(mesh: Mesh) -> None:
    await mesh.publish_acked(RoutingIntent(weights={"xgboost": 0.5, "pytorch": 0.5}))
    for card in ("c-1", "c-2", "c-3", "c-4", "c-5", "c-6"):
        results = await mesh.burst(12, concurrency=6, headers={"card-id": card})
        assert len({body["routed_to"] for _, _, body in results}) == 1, card


async def test_canary_share_and_shadow_mirror(mesh: Mesh) -> None:
    shadow_before = mesh.upstreams["xgboost-challenger"].hits["-shadow"]
    await mesh.publish_acked(RoutingIntent(weights={"xgboost": 1.0}, sticky=False,
                                           canary=Canary(model="pytorch", weight=0.3),
                                           shadow=Shadow(model="xgboost", fraction=1.0)))
    results = await mesh.burst(300)
    served = Counter(body["routed_to"] for _, _, body in results)
    assert set(served) == {"xgboost", "pytorch-challenger"}
    assert 0.2 <= served["pytorch-challenger"] / 300 <= 0.4, served
    assert all(body["intended"] == body["routed_to"] for _, _, body in results)
    deadline = time.monotonic() + 5
    while mesh.upstreams["xgboost-challenger"].hits["-shadow"] - shadow_before < 300:
        assert time.monotonic() < deadline, mesh.upstreams["xgboost-challenger"].hits
        await asyncio.sleep(0.05)
    assert mesh.upstreams["xgboost-challenger"].hits[""] == 0  # only mirrors reach it
    assert mesh.upstreams["xgboost-challenger"].last_host == f"127.0.0.1-shadow:{mesh.topo.edge_port}"


async def test_body_limits(mesh: Mesh) -> None:
    big = b'{"pad": "' + b"x" * (70 * 1024) + b'"}'
    assert (await mesh.predict(body=big))[0] == 413
    assert (await mesh.predict(path="/api/v1/predict/batch", body=big))[0] == 200
    huge = b'{"pad": "' + b"x" * (1100 * 1024) + b'"}'
    assert (await mesh.predict(path="/api/v1/predict/batch", body=huge))[0] == 413


# ---- sidecar ------------------------------------------------------------------------------------------
async def test_sidecar_serves_and_sheds_overload_fast(mesh: Mesh) -> None:
    side, chal = mesh.side_topo.service("xgboost"), mesh.side_topo.service("xgboost-challenger")
    assert mesh.cache.node_status()["sidecar-xgboost"].acked_version == str(mesh.version)
    url = f"http://127.0.0.1:{chal.sidecar_port}/api/v1/predict"
    async with mesh.session.post(url, data=b"{}") as r:
        assert r.status == 200 and (await r.json())["routed_to"] == "local-xgboost-challenger"

    async def timed() -> tuple[int, float, str | None]:
        started = time.monotonic()
        async with mesh.session.post(f"http://127.0.0.1:{side.sidecar_port}/api/v1/predict", data=b"{}") as r:
            await r.read()
            return r.status, time.monotonic() - started, r.headers.get("x-envoy-overloaded")

    results = await asyncio.gather(*(timed() for _ in range(12)))
    ok = [r for r in results if r[0] == 200]
    shed = [r for r in results if r[0] == 503]
    assert len(ok) + len(shed) == 12 and 1 <= len(ok) <= 3, results  # upstream takes 0.4 s each
    assert shed and all(r[1] < 0.3 and r[2] == "true" for r in shed), results


# ---- NACK -------------------------------------------------------------------------------------------
def _broken(snapshot: Snapshot) -> Snapshot:
    """The same snapshot, but xgboost's outlier detection says 101 %: valid for us, not for Envoy."""
    clusters = [type(c)() for c in snapshot.clusters.values()]
    for copy, original in zip(clusters, snapshot.clusters.values(), strict=True):
        copy.CopyFrom(original)
        if copy.name == "xgboost":
            copy.outlier_detection.max_ejection_percent.value = 101
    return Snapshot(snapshot.version, clusters, snapshot.endpoints.values(), snapshot.listeners.values(),
                    snapshot.routes.values())


async def test_nacked_version_is_reported_once_and_envoy_keeps_serving(mesh: Mesh) -> None:
    await mesh.publish_acked(RoutingIntent(weights={"xgboost": 1.0}))
    mesh.version += 1
    bad = str(mesh.version)
    snapshot = build_snapshots(RoutingIntent(weights={"xgboost": 1.0}), mesh.topo, bad)["edge"]
    mesh.cache.set_snapshot("edge", _broken(snapshot))
    assert await mesh.cache.wait_acked(bad, ["edge"], timeout=10) == {"edge": "nack"}
    status = mesh.cache.node_status()["edge"]
    assert status.nacked["cds"].version == bad and status.nacked_version == bad
    assert "max_ejection_percent" in status.error_detail and "xgboost" in status.error_detail
    await asyncio.sleep(1.0)  # a resend loop would show up as more pushes and NACKs by now
    assert [n for n in mesh.recorder.nacks if n[2] == bad] == [("edge", CLUSTER, bad, status.error_detail)]
    assert len([p for p in mesh.recorder.pushes if p[0] == "edge" and p[1] == CLUSTER and p[2] == bad]) == 1

    dump = await mesh.config_dump()
    active = dump["ClustersConfigDump"]["dynamic_active_clusters"]
    xgb = next(c for c in active if c["cluster"]["name"] == "xgboost")
    assert xgb["cluster"]["outlier_detection"]["max_ejection_percent"] == 100  # last good config
    assert dump["ClustersConfigDump"]["version_info"] not in (bad, "")  # last accepted, e.g. v1
    results = await mesh.burst(50)
    assert {(code, body["routed_to"]) for code, _, body in results} == {(200, "xgboost")}

    fixed = await mesh.publish_acked(RoutingIntent(weights={"xgboost": 1.0}))  # a new version goes out
    assert mesh.cache.node_status()["edge"].acked["cds"] == fixed


# ---- control plane down / restarted ---------------------------------------------------------------
async def test_traffic_survives_ads_down_and_envoy_takes_a_new_servers_version(
        mesh: Mesh, caplog: pytest.LogCaptureFixture) -> None:
    await mesh.publish_acked(RoutingIntent(weights={"xgboost": 0.5, "pytorch": 0.5}))
    with caplog.at_level(logging.WARNING):
        await mesh.server.stop(1.0)
    assert not [r for r in caplog.records if "CancelledError" in r.getMessage() or r.exc_info], caplog.text
    results = await mesh.burst(100)
    assert all(code == 200 for code, _, _ in results)

    mesh.cache, mesh.recorder = SnapshotCache(), Recorder()
    mesh.server = AdsServer(mesh.cache, mesh.recorder)
    mesh.version += 10  # a restarted control plane keeps versions monotonic
    assert await mesh.server.start("127.0.0.1", mesh.ads_port) == mesh.ads_port
    version = await mesh.publish_acked(RoutingIntent(weights={"pytorch": 1.0}))
    dump = await mesh.config_dump()
    assert dump["RoutesConfigDump"]["dynamic_route_configs"][0]["version_info"] == version
    results = await mesh.burst(40)
    assert {body["routed_to"] for _, _, body in results} == {"pytorch"}


# ---- failover (destructive: last) ------------------------------------------------------------------
def assert_conservative_default(code: int, headers: CIMultiDict, body: Any) -> None:
    assert code == 200 and headers.get("content-type") == "application/json", (code, headers, body)
    assert set(body) == SEED_FIELDS
    assert body | {"latency_ms": 0} == {
        "fraud_probability": 1.0, "is_fraud": True, "model_version": "conservative_default",
        "model_type": "conservative_default", "latency_ms": 0, "routed_to": "edge",
        "fallback_reason": "all_services_unavailable"}
    assert isinstance(body["latency_ms"], int | float) and body["latency_ms"] >= 0


async def test_every_tier_answering_503_gives_the_conservative_default(mesh: Mesh) -> None:
    # What the edge sees when sidecars are up but their model servers are down: each tier's
    # sidecar answers 503 itself. One request only, so no host is ejected.
    await mesh.publish_acked(RoutingIntent(weights={"xgboost": 1.0}, sticky=False))
    tiers = ("xgboost", "pytorch", "heuristic")
    before = {t: mesh.upstreams[t].hits[""] for t in tiers}
    for t in (*tiers, "operator"):
        mesh.upstreams[t].status = 503
    try:
        assert_conservative_default(*await mesh.predict())
        assert all(mesh.upstreams[t].hits[""] > before[t] for t in tiers)  # every tier was tried
        async with mesh.session.get(mesh.edge_url + "/health") as r:
            assert r.status == 503  # only the predict routes get the conservative default
    finally:
        for t in (*tiers, "operator"):
            mesh.upstreams[t].status = 200
    code, _, body = await mesh.predict()
    assert code == 200 and body["routed_to"] == "xgboost"


async def test_primary_killed_under_load_fails_over_without_errors(mesh: Mesh) -> None:
    await mesh.publish_acked(RoutingIntent(weights={"xgboost": 1.0}, sticky=False))
    xgb = mesh.upstreams["xgboost"]
    await xgb.stop()  # hand its port to a separate process that can be SIGKILLed
    proc = ManagedProcess("upstream:xgboost", [sys.executable, "-m", "tests.integration.xds_upstream",
                                               "--name", "xgboost", "--port", str(xgb.port)],
                          Path(tempfile.gettempdir()) / f"xds-upstream-{os.getpid()}.log", cwd=REPO_ROOT)
    proc.start()
    try:
        await asyncio.to_thread(proc.wait_port, "127.0.0.1", xgb.port, 20.0)
        quarter = asyncio.Event()
        load = asyncio.create_task(mesh.burst(800, concurrency=50, after=(200, quarter)))
        await quarter.wait()  # mid-load: 50 requests in flight lose their connections
        proc.signal(signal.SIGKILL)
        results = await load
        assert [code for code, _, _ in results if code != 200] == []
        served = Counter((body["routed_to"], body["intended"]) for _, _, body in results)
        assert set(served) <= {("xgboost", "xgboost"), ("pytorch", "xgboost")}, served
        assert served[("pytorch", "xgboost")] > 0 and served[("xgboost", "xgboost")] > 0, served
    finally:
        proc.stop()
        await xgb.start()


async def test_all_upstreams_down_gives_the_conservative_default(mesh: Mesh) -> None:
    for name in ("xgboost", "pytorch", "heuristic"):
        await mesh.upstreams[name].stop()
    try:
        for path in ("/api/v1/predict", "/api/v1/predict/batch"):
            assert_conservative_default(*await mesh.predict(path=path))
        async with mesh.session.get(mesh.edge_url + "/health") as r:
            assert r.status == 200  # the operator route is unaffected
    finally:
        for name in ("xgboost", "pytorch", "heuristic"):
            await mesh.upstreams[name].start()

