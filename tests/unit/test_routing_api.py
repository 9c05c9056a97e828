"""`POST/DELETE /api/v1/shadow` and `/api/v1/overrides` on a real ControlPlane (no Envoy attached)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from control_plane.operator_api import create_app, load_or_create_token
from control_plane.routing_api import RoutingControls
from data_plane.settings import Settings
from tests.unit.cp_fixtures import control_plane


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[tuple[TestClient, dict[str, str]]]:
    cp = control_plane(settings)
    token = load_or_create_token(cp.settings.operator_token_file)
    await cp.start()
    client = TestClient(TestServer(create_app(cp, token, routes=RoutingControls(cp).routes())))
    await client.start_server()
    try:
        yield client, {"Authorization": f"Bearer {token}"}
    finally:
        await client.close()
        await cp.stop(grace=0.1)


async def intent(client: TestClient) -> dict[str, Any]:
    body: dict[str, Any] = await (await client.get("/api/v1/status")).json()
    return body["intent"]


async def test_shadow_set_and_cleared_with_decisions(api: tuple[TestClient, dict[str, str]]) -> None:
    client, auth = api
    resp = await client.post("/api/v1/shadow", json={"model": "xgboost", "fraction": 0.25}, headers=auth)
    assert resp.status in (200, 202), await resp.text()
    body = await resp.json()
    assert body["decision"]["action"] == "set_shadow" and body["decision"]["actor"] == "operator"
    assert (await intent(client))["shadow"] == {"model": "xgboost", "fraction": 0.25, "version": None}

    resp = await client.delete("/api/v1/shadow", headers=auth)
    assert resp.status in (200, 202)
    assert (await intent(client))["shadow"] is None
    ledger = await (await client.get("/api/v1/decisions")).json()
    assert [d["action"] for d in ledger["decisions"]][-2:] == ["set_shadow", "clear_shadow"]


@pytest.mark.parametrize(("body", "status", "field", "rule"), [
    ({"model": "heuristic", "fraction": 0.5}, 422, "model", "unknown_model"),
    ({"model": "xgboost", "fraction": 1.5}, 422, "fraction", "range"),
    ({"model": "xgboost", "fraction": 0}, 422, "fraction", "range"),
    ({"model": "xgboost", "fraction": "half"}, 422, "fraction", "type"),
    ({"model": "xgboost", "fraction": True}, 422, "fraction", "type"),
    ({"model": "xgboost"}, 422, "fraction", "required"),
    ({"model": "xgboost", "fraction": 0.5, "extra": 1}, 422, "extra", "unknown_field"),
    ([1, 2], 400, "$body", "type"),
])
async def test_bad_shadow_requests_name_the_field(api: tuple[TestClient, dict[str, str]], body: Any,
                                                  status: int, field: str, rule: str) -> None:
    client, auth = api
    before = await intent(client)
    resp = await client.post("/api/v1/shadow", json=body, headers=auth)
    assert resp.status == status
    err = await resp.json()
    assert (err["field"], err["rule"]) == (field, rule) and err["message"]
    assert await intent(client) == before


async def test_malformed_json_and_missing_token(api: tuple[TestClient, dict[str, str]]) -> None:
    client, auth = api
    resp = await client.post("/api/v1/shadow", data=b"{not json", headers=auth)
    assert resp.status == 400 and (await resp.json())["rule"] == "json"
    resp = await client.post("/api/v1/shadow", json={"model": "xgboost", "fraction": 0.5})
    assert resp.status == 401
    resp = await client.delete("/api/v1/overrides/xgboost", headers={"Authorization": "Bearer nope"})
    assert resp.status == 401
    assert (await intent(client))["shadow"] is None


async def test_override_set_and_cleared(api: tuple[TestClient, dict[str, str]]) -> None:
    client, auth = api
    resp = await client.post("/api/v1/overrides", headers=auth,
                             json={"cluster": "xgboost-challenger", "host": "127.0.0.1", "port": 9000})
    assert resp.status in (200, 202), await resp.text()
    assert (await intent(client))["overrides"] == {"xgboost-challenger": {"host": "127.0.0.1", "port": 9000}}
    resp = await client.delete("/api/v1/overrides/xgboost-challenger", headers=auth)
    assert resp.status in (200, 202)
    assert (await intent(client))["overrides"] == {}


@pytest.mark.parametrize(("body", "field", "rule"), [
    ({"cluster": "chain-xgboost", "host": "127.0.0.1", "port": 9000}, "cluster", "unknown_cluster"),
    ({"cluster": "xgboost", "host": "http://localhost", "port": 9000}, "host", "host"),
    ({"cluster": "xgboost", "host": "10.0.0.1:80", "port": 9000}, "host", "host"),
    ({"cluster": "xgboost", "host": "127.0.0.1", "port": 70000}, "port", "range"),
    ({"cluster": "xgboost", "host": "127.0.0.1", "port": "9000"}, "port", "range"),
    ({"cluster": "xgboost", "port": 9000}, "host", "required"),
])
async def test_bad_overrides_name_the_field(api: tuple[TestClient, dict[str, str]], body: dict[str, Any],
                                            field: str, rule: str) -> None:
    client, auth = api
    resp = await client.post("/api/v1/overrides", json=body, headers=auth)
    assert resp.status == 422
    err = await resp.json()
    assert (err["field"], err["rule"]) == (field, rule)
    resp = await client.delete("/api/v1/overrides/nope", headers=auth)
    assert resp.status == 422 and (await resp.json())["field"] == "cluster"
