"""Operator routes of the canary component: reads answer, bad input is a field-named 4xx."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from control_plane.healing.canary_component import CanaryComponent
from control_plane.operator_api import create_app, load_or_create_token
from data_plane.settings import Settings
from tests.unit.cp_fixtures import control_plane


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[tuple[TestClient, dict[str, str]]]:
    cp = control_plane(settings)
    token = load_or_create_token(cp.settings.operator_token_file)
    await cp.start()
    component = CanaryComponent(cp)
    client = TestClient(TestServer(create_app(cp, token, routes=component.routes())))
    await client.start_server()
    try:
        yield client, {"Authorization": f"Bearer {token}"}
    finally:
        await client.close()
        await component.actions.close()
        await cp.stop(grace=0.1)


async def test_reads_on_an_empty_registry(api):
    client, _ = api
    models = await (await client.get("/api/v1/models")).json()
    assert models["models"]["xgboost"] == {"versions": [], "champion": None, "challenger": None,
                                           "pinned": None}
    canary = await (await client.get("/api/v1/canary")).json()
    assert canary["canary"]["pytorch"]["phase"] == "idle"


@pytest.mark.parametrize(("method", "path", "body", "status", "field", "rule"), [
    ("post", "/api/v1/retrain", {"model": "lightgbm"}, 422, "model", "unknown_model"),
    ("post", "/api/v1/retrain", {"reason": "x"}, 422, "model", "required"),
    ("post", "/api/v1/retrain", {"model": "xgboost", "why": 1}, 422, "why", "unknown_field"),
    ("post", "/api/v1/canary/promote", {"model": "xgboost"}, 422, "model", "no_active_canary"),
    ("post", "/api/v1/canary/rollback", {"model": "xgboost", "reason": 3}, 422, "reason", "type"),
    ("post", "/api/v1/models/heuristic/pin", {"version": "1"}, 422, "kind", "unknown_model"),
    ("post", "/api/v1/models/xgboost/pin", {"version": "v1"}, 422, "version", "type"),
])
async def test_bad_input_names_the_field_and_rule(api, method, path, body, status, field, rule):
    client, auth = api
    resp = await getattr(client, method)(path, json=body, headers=auth)
    got = await resp.json()
    assert (resp.status, got["field"], got["rule"]) == (status, field, rule), got


async def test_writes_need_the_token_and_retrain_needs_nats(api):
    client, auth = api
    assert (await client.post("/api/v1/retrain", json={"model": "xgboost"})).status == 401
    resp = await client.post("/api/v1/retrain", json={"model": "xgboost"}, headers=auth)
    assert resp.status == 503 and (await resp.json())["message"].startswith("NATS is not reachable")


async def test_a_running_chaos_experiment_holds_promotions_and_its_end_releases_them(settings):
    from control_plane.healing.canary_component import CHAOS_HOLD

    cp = control_plane(settings)
    component = CanaryComponent(cp)
    try:
        component._follow_chaos_lock(True)
        assert component.controller.hold_reason == CHAOS_HOLD
        component._follow_chaos_lock(False)
        assert component.controller.hold_reason is None
        # An operator's own hold is not released by the end of an experiment.
        component.controller.hold("incident 42")
        component._follow_chaos_lock(False)
        assert component.controller.hold_reason == "incident 42"
    finally:
        await component.actions.close()
