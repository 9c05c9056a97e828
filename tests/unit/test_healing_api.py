"""The healing component's operator routes on a real ControlPlane (aiohttp test client, no Envoy):
health/services, traffic/summary (window rules), and the hold/release chaos lock behind the token."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from control_plane.healing.component import HealingComponent, healing_component
from control_plane.healing.config import HealingConfig
from control_plane.intent import SERVICES
from control_plane.operator_api import create_app, load_or_create_token
from data_plane.settings import Settings
from tests.unit.cp_fixtures import control_plane


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[tuple[TestClient, str, HealingComponent]]:
    cp = control_plane(settings)
    token = load_or_create_token(cp.settings.operator_token_file)
    await cp.start()
    healing = HealingComponent(cp, HealingConfig(scrape_interval_s=0.05, probe_timeout_s=0.1,
                                                 admin_timeout_s=0.1))
    client = TestClient(TestServer(create_app(cp, token, routes=healing.routes())))
    await client.start_server()
    try:
        yield client, token, healing
    finally:
        await client.close()
        await healing.stop()
        await cp.stop(grace=0.1)


Api = tuple[TestClient, str, HealingComponent]


async def test_health_services_before_and_after_a_round(api: Api) -> None:
    client, _, healing = api
    body = await (await client.get("/api/v1/health/services")).json()
    assert set(body["services"]) == set(SERVICES) and body["rounds"] == 0
    assert all(s["state"] == "unknown" and s["signal"] is None for s in body["services"].values())
    assert body["config"]["policy"]["sick_error_rate"] == 0.1 and body["held"] is None
    await healing.reconciler.step()  # nothing listens on the mesh's ports: no edge, probes refused
    body = await (await client.get("/api/v1/health/services")).json()
    xgb = body["services"]["xgboost"]
    assert xgb["state"] == "unknown" and xgb["signal"]["probe_kind"] == "refused"  # never seen up
    assert body["edge"]["reachable"] is False and body["edge"]["error"] and body["applied"] == 0


async def test_traffic_summary_without_an_edge_and_window_rules(api: Api) -> None:
    client, _, _ = api
    resp = await client.get("/api/v1/traffic/summary")
    body = await resp.json()
    assert resp.status == 200 and body["available"] is False and body["window_s"] == 60.0
    assert body["history"] == [] and body["edge"]["reachable"] is False
    for raw, rule in (("abc", "integer"), ("1", "range"), ("601", "range")):
        resp = await client.get(f"/api/v1/traffic/summary?window={raw}")
        err = await resp.json()
        assert resp.status == 400 and (err["field"], err["rule"]) == ("window", rule)


async def test_hold_and_release_need_the_token(api: Api) -> None:
    client, token, healing = api
    assert (await client.post("/api/v1/healing/hold", json={"reason": "x"})).status == 401
    auth = {"Authorization": f"Bearer {token}"}
    resp = await client.post("/api/v1/healing/hold", json={"reason": "chaos run 7"}, headers=auth)
    assert resp.status == 200 and (await resp.json()) == {"held": "chaos run 7"}
    assert healing.reconciler.hold_reason == "chaos run 7"
    assert (await (await client.get("/api/v1/health/services")).json())["held"] == "chaos run 7"
    bad = await client.post("/api/v1/healing/hold", json={"reason": 5}, headers=auth)
    assert bad.status == 422 and (await bad.json())["field"] == "reason"
    assert (await client.post("/api/v1/healing/hold", data=b"{", headers=auth)).status == 400
    resp = await client.post("/api/v1/healing/release", headers=auth)
    assert resp.status == 200 and healing.reconciler.hold_reason is None


async def test_factory_honours_mesh_healing_off(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    cp = control_plane(settings)
    monkeypatch.setenv("MESH_HEALING", "0")
    assert healing_component(cp) is None
    monkeypatch.setenv("MESH_HEALING", "1")
    monkeypatch.setenv("MESH_HEALING_DWELL_S", "7")
    component = healing_component(cp)
    assert component is not None and component.config.policy.dwell_s == 7.0
