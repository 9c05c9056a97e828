"""The operator API over aiohttp's test client, on a real ControlPlane (ADS up, no Envoy attached)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from control_plane.operator_api import create_app, load_or_create_token
from data_plane.settings import Settings
from tests.unit.cp_fixtures import builder_dropping_cluster, control_plane

TOKEN_HEADER = "Authorization"


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[tuple[TestClient, str]]:
    cp = control_plane(settings, build=builder_dropping_cluster("heuristic", when_weight=0.25))
    token = load_or_create_token(cp.settings.operator_token_file)
    await cp.start()
    client = TestClient(TestServer(create_app(cp, token)))
    await client.start_server()
    try:
        yield client, token
    finally:
        await client.close()
        await cp.stop(grace=0.1)


def auth(token: str) -> dict[str, str]:
    return {TOKEN_HEADER: f"Bearer {token}"}


async def snapshot_of_state(client: TestClient) -> tuple[Any, Any, Any]:
    status = await (await client.get("/api/v1/status")).json()
    ledger = await (await client.get("/api/v1/decisions")).json()
    return status["intent"], status["version"], ledger["last_seq"]


async def test_status_shape(api: tuple[TestClient, str]) -> None:
    client, _ = api
    resp = await client.get("/api/v1/status")
    assert resp.status == 200
    body = await resp.json()
    assert body["intent"]["weights"] == {"xgboost": 0.8, "pytorch": 0.2}
    assert body["effective_weights"] == pytest.approx({"xgboost": 0.8, "pytorch": 0.2})
    assert body["version"] == 1 and body["frozen"] is False
    assert set(body["nodes"]) == {"edge", "sidecar-xgboost", "sidecar-pytorch", "sidecar-heuristic"}
    edge = body["nodes"]["edge"]
    assert edge["connected"] is False and edge["state"] == "pending" and edge["error"] is None
    assert {"nats", "edge", "xgboost", "pytorch", "heuristic"} <= set(body["services"])
    assert body["services"]["xgboost"]["healthy"] is False  # nothing listens on its port
    health = await (await client.get("/health")).json()
    assert health["status"] == "ok" and health["services"]["edge"] == "down"


@pytest.mark.parametrize("header", [None, "Bearer wrong-token", "Basic abc", "Bearer"])
async def test_writes_without_the_token_are_401_and_change_nothing(api: tuple[TestClient, str],
                                                                   header: str | None) -> None:
    client, _ = api
    before = await snapshot_of_state(client)
    headers = {TOKEN_HEADER: header} if header else {}
    for path, body in (("/api/v1/traffic", {"xgboost": 0.5, "pytorch": 0.5}), ("/api/v1/freeze", None)):
        resp = await client.post(path, json=body, headers=headers)
        assert resp.status == 401
        err = await resp.json()
        assert err["error"] == "unauthorized" and err["field"] == "Authorization"
        assert resp.headers["WWW-Authenticate"] == "Bearer"
    assert await snapshot_of_state(client) == before


async def test_traffic_change_is_applied_and_recorded(api: tuple[TestClient, str]) -> None:
    client, token = api
    resp = await client.post("/api/v1/traffic", json={"xgboost": 0.5, "pytorch": 0.5}, headers=auth(token))
    assert resp.status == 200
    body = await resp.json()
    assert body["weights"] == {"xgboost": 0.5, "pytorch": 0.5} and body["version"] == "2"
    assert body["acked"] is None and body["nodes"] == {}  # no Envoy connected to ask
    decision = body["decision"]
    assert decision["seq"] == 2 and decision["actor"] == "operator" and decision["action"] == "set_weights"
    assert decision["numbers"] == {"xgboost": 0.5, "pytorch": 0.5}
    intent, version, last_seq = await snapshot_of_state(client)
    assert intent["weights"] == {"xgboost": 0.5, "pytorch": 0.5} and version == 2 and last_seq == 2


@pytest.mark.parametrize(("body", "field", "rule"), [
    ({"xgboost": 1.5, "pytorch": -0.5}, "xgboost", "range"),
    ({"xgboost": "0.5", "pytorch": 0.5}, "xgboost", "type"),
    ({"xgboost": True, "pytorch": 0.0}, "xgboost", "type"),
    ({"xgboost": 0.5, "lightgbm": 0.5}, "lightgbm", "unknown_service"),
    ({"xgboost": 0.5, "pytorch": 0.4}, "$body", "sum"),
    ([0.5, 0.5], "$body", "type"),
    ({}, "$body", "type"),
])
async def test_bad_weights_are_422_naming_field_and_rule(api: tuple[TestClient, str], body: Any,
                                                         field: str, rule: str) -> None:
    client, token = api
    before = await snapshot_of_state(client)
    resp = await client.post("/api/v1/traffic", json=body, headers=auth(token))
    assert resp.status == 422
    err = await resp.json()
    assert (err["error"], err["field"], err["rule"]) == ("validation_error", field, rule)
    assert err["message"]
    assert await snapshot_of_state(client) == before


@pytest.mark.parametrize(("raw", "status", "rule"), [
    (b"not json", 400, "json"),
    (b'{"xgboost": ', 400, "json"),
    (b"\xff\xfe", 400, "json"),
    (b"", 422, "required"),
    (b"x" * 100_000, 413, "max_size"),
])
async def test_malformed_bodies_get_json_errors(api: tuple[TestClient, str], raw: bytes, status: int,
                                                rule: str) -> None:
    client, token = api
    resp = await client.post("/api/v1/traffic", data=raw, headers={**auth(token),
                                                                   "Content-Type": "application/json"})
    assert resp.status == status
    err = await resp.json()
    assert err["field"] == "$body" and err["rule"] == rule


async def test_inconsistent_snapshot_is_refused_and_nothing_changes(api: tuple[TestClient, str]) -> None:
    client, token = api
    before = await snapshot_of_state(client)
    resp = await client.post("/api/v1/traffic", json={"xgboost": 0.25, "pytorch": 0.75}, headers=auth(token))
    assert resp.status == 422
    err = await resp.json()
    assert err["error"] == "snapshot_refused" and err["rule"] == "snapshot_consistency"
    assert "heuristic" in err["message"] and "Nothing was changed" in err["message"]
    assert await snapshot_of_state(client) == before
    metrics = await (await client.get("/metrics")).text()
    assert "mesh_intent_changes_refused_total 1.0" in metrics


async def test_freeze_and_unfreeze(api: tuple[TestClient, str]) -> None:
    client, token = api
    resp = await client.post("/api/v1/freeze", json={"reason": "incident 42"}, headers=auth(token))
    assert resp.status == 200
    body = await resp.json()
    assert body["frozen"] is True and body["decision"]["action"] == "freeze"
    assert body["decision"]["reason"] == "incident 42"
    resp = await client.post("/api/v1/freeze", json={"reason": 42}, headers=auth(token))
    assert resp.status == 422 and (await resp.json())["field"] == "reason"
    resp = await client.post("/api/v1/unfreeze", headers=auth(token))  # body optional
    assert resp.status == 200 and (await resp.json())["frozen"] is False


async def test_decisions_paging_and_bad_query(api: tuple[TestClient, str]) -> None:
    client, token = api
    for weights in ({"xgboost": 0.6, "pytorch": 0.4}, {"xgboost": 0.7, "pytorch": 0.3}):
        assert (await client.post("/api/v1/traffic", json=weights, headers=auth(token))).status == 200
    page = await (await client.get("/api/v1/decisions?since=1&limit=1")).json()
    assert [d["seq"] for d in page["decisions"]] == [2] and page["next_since"] == 2
    assert page["last_seq"] == 3
    for query, field, rule in (("since=abc", "since", "integer"), ("limit=0", "limit", "range"),
                               ("since=-1", "since", "range"), ("limit=5000", "limit", "range")):
        resp = await client.get(f"/api/v1/decisions?{query}")
        assert resp.status == 400
        err = await resp.json()
        assert (err["field"], err["rule"]) == (field, rule)


async def test_metrics_and_unknown_paths(api: tuple[TestClient, str]) -> None:
    client, token = api
    await client.post("/api/v1/traffic", json={"xgboost": 0.5, "pytorch": 0.5}, headers=auth(token))
    resp = await client.get("/metrics")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
    text = await resp.text()
    assert 'mesh_decisions_total{action="set_weights",actor="operator"} 1.0' in text
    assert "mesh_xds_snapshot_version 2.0" in text
    assert 'mesh_xds_node_connected{node="edge"} 0.0' in text
    for name in ("mesh_xds_push_ack_seconds histogram", "mesh_xds_nacks_total counter"):
        assert f"# TYPE {name}" in text
    resp = await client.get("/api/v1/nope")
    assert resp.status == 404 and (await resp.json())["error"] == "not_found"
    resp = await client.get("/api/v1/traffic")
    assert resp.status == 405 and "error" in await resp.json()


async def test_token_file_is_private_stable_and_never_logged(settings: Settings,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    path = settings.operator_token_file
    token = load_or_create_token(path)
    assert len(token) >= 32 and path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_token(path) == token
    path.chmod(0o644)
    assert load_or_create_token(path) == token and path.stat().st_mode & 0o777 == 0o600
    cp = control_plane(settings)
    await cp.start()
    client = TestClient(TestServer(create_app(cp, token)))
    await client.start_server()
    try:
        await client.post("/api/v1/traffic", json={"xgboost": 0.5, "pytorch": 0.5}, headers=auth(token))
        await client.post("/api/v1/traffic", json={"xgboost": 0.5}, headers=auth("not-" + token))
    finally:
        await client.close()
        await cp.stop(grace=0.1)
    assert all(token not in rec.getMessage() for rec in caplog.records)


async def test_deeply_nested_json_is_a_400_not_a_crash(api: tuple[TestClient, str]) -> None:
    client, token = api
    resp = await client.post("/api/v1/traffic", data=b"[" * 30_000 + b"]" * 30_000, headers=auth(token))
    assert resp.status == 400 and (await resp.json())["rule"] == "json"


async def test_component_routes_sit_behind_the_same_token(settings: Settings) -> None:
    calls: list[str] = []

    async def retrain(request: web.Request) -> web.Response:
        calls.append(request.method)
        return web.json_response({"request_id": "r1"}, status=202)

    cp = control_plane(settings)
    token = load_or_create_token(cp.settings.operator_token_file)
    await cp.start()
    client = TestClient(TestServer(create_app(cp, token, routes=[web.post("/api/v1/retrain", retrain)])))
    await client.start_server()
    try:
        assert (await client.post("/api/v1/retrain", json={})).status == 401
        assert calls == []
        assert (await client.post("/api/v1/retrain", json={}, headers=auth(token))).status == 202
        assert calls == ["POST"]
    finally:
        await client.close()
        await cp.stop(grace=0.1)
