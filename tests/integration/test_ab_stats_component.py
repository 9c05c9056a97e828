"""The A/B statistics component fed over a real nats-server: PredictionBatch and Label messages in,
`GET /api/v1/ab-stats` and the control plane's /metrics out."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from scipy.stats import chi2_contingency

from control_plane.ab_component import ABConfig, ABStatsComponent
from data_plane.contracts import subjects
from data_plane.contracts.events import Label, PredictionBatch, PredictionRecord
from data_plane.eventbus import EventBus
from data_plane.netutil import free_port
from data_plane.procs import nats_server
from data_plane.settings import Settings
from tests.unit.cp_fixtures import control_plane

pytestmark = pytest.mark.integration


def _records(version: str, slot: str, n: int, flagged: int) -> list[PredictionRecord]:
    return [PredictionRecord(request_id=f"{version}-{i}", model=version.split("_")[0], model_version=version,
                             slot=slot, features=[0.0] * 11, score=0.9 if i < flagged else 0.05,
                             is_fraud=i < flagged, latency_ms=2.0 + i % 7) for i in range(n)]


async def test_predictions_and_labels_over_nats_become_ab_stats_and_gauges(
        settings: Settings, tmp_path: Path) -> None:
    port, monitor = free_port(), free_port()
    server = nats_server(port, monitor, tmp_path / "js", tmp_path / "nats.log").start()
    bus = None
    component = None
    try:
        server.wait_port("127.0.0.1", port)
        url = f"nats://127.0.0.1:{port}"
        cp = control_plane(dataclasses.replace(settings, nats_url_override=url))
        component = ABStatsComponent(cp, ABConfig(window_s=600, max_records=10_000))
        await component.start()
        app = web.Application()
        app.add_routes(component.routes())
        async with TestClient(TestServer(app)) as client:
            deadline = asyncio.get_running_loop().time() + 10
            while not (await (await client.get("/api/v1/ab-stats")).json())["nats_connected"]:
                assert asyncio.get_running_loop().time() < deadline, "component never reached NATS"
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)  # subscriptions are made right after the connect
            bus = EventBus(url, "ab-test", flush_interval=0.01)
            await bus.start()
            champ = _records("xgboost_v3", "champion", 1000, 30)
            chall = _records("pytorch_v1", "challenger", 1000, 55)
            for i in range(0, 1000, 250):
                bus.publish(subjects.predictions("xgboost"), PredictionBatch(records=champ[i:i + 250]))
                bus.publish(subjects.predictions("pytorch"), PredictionBatch(records=chall[i:i + 250]))
            # shadow traffic is not an arm
            shadow = _records("xgboost_v4", "challenger", 50, 0)
            bus.publish(subjects.shadow("xgboost"), PredictionBatch(records=shadow))
            # labels for the champion: the first 40 are fraud (30 flagged of them + 10 missed)
            for i in range(200):
                bus.publish(subjects.LABELS, Label(request_id=f"xgboost_v3-{i}", is_fraud=i < 40))
            deadline = asyncio.get_running_loop().time() + 10
            while True:
                stats = await (await client.get("/api/v1/ab-stats")).json()
                if stats["records_seen"] >= 2000 and stats["labels_joined"] >= 200:
                    break
                assert asyncio.get_running_loop().time() < deadline, stats
                await asyncio.sleep(0.05)
        arms = stats["arms"]
        assert set(arms) == {"xgboost_v3", "pytorch_v1"}
        assert arms["xgboost_v3"]["count"] == 1000 and arms["xgboost_v3"]["fraud_rate"] == pytest.approx(0.03)
        assert arms["pytorch_v1"]["latency_ms"]["p50"] == pytest.approx(5.0)
        cmp = stats["comparison"]
        assert cmp["p_value"] == pytest.approx(chi2_contingency([[55, 945], [30, 970]])[1])
        assert cmp["significant_at_0_01"] is True
        lab = arms["xgboost_v3"]["labelled"]
        assert (lab["tp"], lab["fp"], lab["fn"], lab["tn"]) == (30, 0, 10, 160)
        assert lab["recall"]["value"] == pytest.approx(0.75)
        lo, hi = lab["recall"]["ci95"]
        assert lo < 0.75 < hi and lab["f1"]["ci95"][0] < lab["f1"]["value"] < lab["f1"]["ci95"][1]
        assert arms["pytorch_v1"]["labelled"] is None
        metrics = cp.metrics.render().decode()
        assert 'mesh_ab_p_value{arm_a="pytorch_v1",arm_b="xgboost_v3"}' in metrics
        assert 'mesh_ab_predicted_fraud_rate{version="xgboost_v3",window="300s"} 0.03' in metrics
        assert "mesh_xds_snapshot_version" in metrics  # the control plane's own metrics still there
    finally:
        if bus is not None:
            await bus.close()
        if component is not None:
            await component.stop()
        server.stop()
