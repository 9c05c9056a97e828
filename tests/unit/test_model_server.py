"""The model server app on the heuristic kind (no ML needed): the seed API, validation, batch,
OIP v2, fallback_reason, readiness, metrics, admin guards and the NATS-down path."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from data_plane.contracts.schema import FEATURE_NAMES, PREDICTION_FIELDS
from data_plane.netutil import free_port
from data_plane.settings import Settings
from model_servers.app import context_of, create_app
from model_servers.heuristic import score

SEED_BODY: dict[str, Any] = {
    "amount": 1500.00, "merchant_category": 7, "hour_of_day": 2, "day_of_week": 6,
    "distance_from_home": 150.0, "distance_from_last_txn": 80.0, "is_foreign": 1,
    "velocity_last_1h": 5, "velocity_last_24h": 12, "avg_amount_last_7d": 200.0, "card_age_days": 15,
}
SEED_ROW = [SEED_BODY[n] for n in FEATURE_NAMES]


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[TestClient]:
    # NATS at a port nobody listens on: the server must serve regardless (and count drops).
    app = create_app("heuristic", settings, nats_url=f"nats://127.0.0.1:{free_port()}",
                     log_buffer=2, log_batch_records=1)
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        yield c


async def _predict(client: TestClient, body: Any, **headers: str) -> tuple[int, dict[str, Any]]:
    resp = await client.post("/api/v1/predict", json=body, headers=headers)
    return resp.status, await resp.json()


# ---- the seed API -------------------------------------------------------------------------------
async def test_seed_example_returns_exactly_the_seed_fields(client: TestClient) -> None:
    status, body = await _predict(client, SEED_BODY)
    assert status == 200
    assert tuple(body) == PREDICTION_FIELDS
    assert body["model_version"] == "heuristic_v1"
    assert body["model_type"] == "heuristic" and body["routed_to"] == "heuristic"
    assert body["fallback_reason"] is None
    assert body["is_fraud"] is True
    assert body["fraud_probability"] == round(score(SEED_ROW), 6)
    assert 0 <= body["latency_ms"] < 1000


async def test_is_fraud_follows_the_settings_threshold(settings: Settings) -> None:
    from dataclasses import replace

    strict = replace(settings, fraud_threshold=0.99)
    app = create_app("heuristic", strict, nats_url=None)
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        status, body = await _predict(c, SEED_BODY)
    assert status == 200 and body["fraud_probability"] < 0.99 and body["is_fraud"] is False


async def test_a_generated_request_id_is_echoed_a_given_one_is_not_needed(client: TestClient) -> None:
    resp = await client.post("/api/v1/predict", json=SEED_BODY)
    assert len(resp.headers["x-request-id"]) == 32
    resp = await client.post("/api/v1/predict", json=SEED_BODY, headers={"x-request-id": "abc"})
    assert resp.status == 200


@pytest.mark.parametrize(("intended", "reason"), [
    ("xgboost", "ml_models_unavailable"),
    ("pytorch-challenger", "ml_models_unavailable"),
    ("heuristic", None),
    ("not-a-cluster", None),  # a direct caller cannot mint reasons
])
async def test_fallback_reason_comes_from_x_mesh_intended(client: TestClient, intended: str,
                                                          reason: str | None) -> None:
    status, body = await _predict(client, SEED_BODY, **{"x-mesh-intended": intended})
    assert status == 200 and body["fallback_reason"] == reason


async def test_wrong_content_type_is_still_read_as_json(client: TestClient) -> None:
    import json

    resp = await client.post("/api/v1/predict", data=json.dumps(SEED_BODY),
                             headers={"Content-Type": "text/plain"})
    assert resp.status == 200


# ---- validation ---------------------------------------------------------------------------------
def _with(**changes: Any) -> dict[str, Any]:
    return {**SEED_BODY, **changes}


def _without(name: str) -> dict[str, Any]:
    return {k: v for k, v in SEED_BODY.items() if k != name}


@pytest.mark.parametrize(("raw", "status", "field", "rule"), [
    (b"", 400, "$body", "json"),
    (b"not json", 400, "$body", "json"),
    (b"\xff\xfe\x00garbage", 400, "$body", "json"),
    (b"[1, 2, 3]", 400, "$body", "type"),
    (b'"a string"', 400, "$body", "type"),
    (b'{"amount": NaN}', 400, "$body", "finite"),
])
async def test_malformed_bodies_are_400_naming_the_body(client: TestClient, raw: bytes, status: int,
                                                       field: str, rule: str) -> None:
    resp = await client.post("/api/v1/predict", data=raw, headers={"Content-Type": "application/json"})
    body = await resp.json()
    assert resp.status == status
    assert (body["error"], body["field"], body["rule"]) == ("validation_error", field, rule)


@pytest.mark.parametrize(("payload", "field", "rule"), [
    (_without("hour_of_day"), "hour_of_day", "required"),
    (_with(hour_of_day=24), "hour_of_day", "range"),
    (_with(amount=-5), "amount", "range"),
    (_with(amount="12"), "amount", "type"),
    (_with(merchant_category=2.5), "merchant_category", "type"),
    (_with(is_foreign=True), "is_foreign", "type"),
    (_with(colour="red"), "colour", "unknown_field"),
    (_with(card_id="x" * 65), "card_id", "type"),
])
async def test_field_rule_violations_are_422_naming_field_and_rule(client: TestClient, payload: Any,
                                                                  field: str, rule: str) -> None:
    status, body = await _predict(client, payload)
    assert status == 422
    assert (body["field"], body["rule"]) == (field, rule)
    assert field in body["message"]


async def test_an_infinite_number_is_422_finite(client: TestClient) -> None:
    raw = b'{"amount": 1e999' + b"".join(
        f', "{k}": {v}'.encode() for k, v in SEED_BODY.items() if k != "amount") + b"}"
    resp = await client.post("/api/v1/predict", data=raw)
    body = await resp.json()
    assert resp.status == 422 and (body["field"], body["rule"]) == ("amount", "finite")


async def test_a_body_over_one_mebibyte_is_413_json(client: TestClient) -> None:
    resp = await client.post("/api/v1/predict", data=b"[" + b"1," * 600_000 + b"1]")
    body = await resp.json()
    assert resp.status == 413 and body["rule"] == "max_size"


async def test_unknown_paths_and_methods_are_json(client: TestClient) -> None:
    resp = await client.get("/nope")
    assert resp.status == 404 and "no endpoint" in (await resp.json())["error"]
    resp = await client.get("/api/v1/predict")
    assert resp.status == 405 and resp.headers["Allow"] == "POST"
    assert "POST" in (await resp.json())["error"]


# ---- batch --------------------------------------------------------------------------------------
async def test_batch_scores_good_items_and_reports_bad_ones(client: TestClient) -> None:
    items = [SEED_BODY, _with(hour_of_day=99), "not an object", _with(amount=10.0, hour_of_day=13)]
    resp = await client.post("/api/v1/predict/batch", json={"transactions": items},
                             headers={"x-mesh-intended": "pytorch"})
    body = await resp.json()
    assert resp.status == 200
    assert (body["count"], body["succeeded"], body["failed"]) == (4, 2, 2)
    assert [r["index"] for r in body["results"]] == [0, 1, 2, 3]
    assert [r["status"] for r in body["results"]] == [200, 422, 400, 200]
    first = body["results"][0]["prediction"]
    assert tuple(first) == PREDICTION_FIELDS and first["fallback_reason"] == "ml_models_unavailable"
    assert body["results"][1]["error"]["field"] == "hour_of_day"
    assert body["results"][2]["error"]["field"] == "$body"
    assert body["results"][3]["prediction"]["is_fraud"] is False


@pytest.mark.parametrize(("payload", "status", "field", "rule"), [
    ({}, 422, "transactions", "required"),
    ({"transactions": 5}, 422, "transactions", "type"),
    ({"transactions": []}, 422, "transactions", "size"),
    ({"transactions": [SEED_BODY] * 1001}, 422, "transactions", "size"),
    ({"transactions": [SEED_BODY], "extra": 1}, 422, "extra", "unknown_field"),
    ([SEED_BODY], 400, "$body", "type"),
])
async def test_batch_envelope_errors(client: TestClient, payload: Any, status: int, field: str,
                                     rule: str) -> None:
    resp = await client.post("/api/v1/predict/batch", json=payload)
    body = await resp.json()
    assert resp.status == status and (body["field"], body["rule"]) == (field, rule)


async def test_batch_of_malformed_json_is_400(client: TestClient) -> None:
    resp = await client.post("/api/v1/predict/batch", data=b'{"transactions": [')
    assert resp.status == 400 and (await resp.json())["field"] == "$body"


# ---- OIP v2 -------------------------------------------------------------------------------------
async def test_oip_health_and_metadata(client: TestClient) -> None:
    assert await (await client.get("/v2/health/live")).json() == {"live": True}
    resp = await client.get("/v2/health/ready")
    assert resp.status == 200 and await resp.json() == {"ready": True}
    meta = await (await client.get("/v2/models/heuristic")).json()
    assert meta["name"] == "heuristic" and meta["versions"] == ["1"]
    assert meta["inputs"][0]["shape"] == [-1, 11]
    assert meta["inputs"][0]["parameters"]["columns"] == list(FEATURE_NAMES)
    assert [o["name"] for o in meta["outputs"]] == ["fraud_probability", "is_fraud"]
    ready = await client.get("/v2/models/heuristic/ready")
    assert ready.status == 200 and (await ready.json())["ready"] is True
    assert (await client.get("/v2/models/heuristic/versions/1")).status == 200
    assert (await client.get("/v2/models/heuristic/versions/7")).status == 404
    missing = await client.get("/v2/models/catboost")
    assert missing.status == 404 and "catboost" in (await missing.json())["error"]
    assert (await (await client.get("/v2")).json())["name"] == "fraud-mesh-model-server"


async def test_oip_infer_with_one_n_by_11_tensor(client: TestClient) -> None:
    ordinary = [42.5, 3, 14, 2, 4.0, 1.5, 0, 1, 4, 55.0, 900]
    req = {"id": "req-1", "inputs": [{"name": "input-0", "shape": [2, 11], "datatype": "FP32",
                                      "data": [SEED_ROW, ordinary]}]}
    resp = await client.post("/v2/models/heuristic/infer", json=req)
    body = await resp.json()
    assert resp.status == 200
    assert body["model_name"] == "heuristic" and body["id"] == "req-1" and body["model_version"] == "1"
    out = {o["name"]: o for o in body["outputs"]}
    assert out["fraud_probability"]["shape"] == [2] and out["fraud_probability"]["datatype"] == "FP32"
    assert out["fraud_probability"]["data"] == [round(score(SEED_ROW), 6), round(score(ordinary), 6)]
    assert out["is_fraud"]["data"] == [True, False]


async def test_oip_infer_with_one_input_per_feature(client: TestClient) -> None:
    inputs = [{"name": n, "shape": [1], "datatype": "FP64" if isinstance(v, float) else "INT64",
               "data": [v]} for n, v in SEED_BODY.items()]
    resp = await client.post("/v2/models/heuristic/infer",
                             json={"inputs": inputs, "outputs": [{"name": "fraud_probability"}]})
    body = await resp.json()
    assert resp.status == 200
    assert [o["name"] for o in body["outputs"]] == ["fraud_probability"]
    assert body["outputs"][0]["data"] == [round(score(SEED_ROW), 6)]


@pytest.mark.parametrize(("inputs", "needle"), [
    ([{"name": "x", "shape": [1, 10], "datatype": "FP32", "data": SEED_ROW[:10]}], "[N, 11]"),
    ([{"name": "x", "shape": [2, 11], "datatype": "FP32", "data": SEED_ROW}], "needs 22 values"),
    ([{"name": "x", "shape": [1, 11], "datatype": "BYTES", "data": SEED_ROW}], "not supported"),
    ([{"name": "x", "shape": [1, 11], "datatype": "FP32", "data": [*SEED_ROW[:2], 25, *SEED_ROW[3:]]}],
     "row 0: hour_of_day must be an integer between 0 and 23 (got 25)"),
    ([{"name": "x", "shape": [1, 11], "datatype": "FP32", "data": [*SEED_ROW[:1], 7.5, *SEED_ROW[2:]]}],
     "merchant_category"),
    ([{"name": "x", "shape": [1, 11], "datatype": "FP32", "data": ["a", *SEED_ROW[1:]]}], "amount"),
    ([{"name": "amount", "shape": [1], "datatype": "FP32", "data": [1.0]},
      {"name": "hour_of_day", "shape": [1], "datatype": "INT64", "data": [1]}], "missing: merchant_category"),
])
async def test_oip_bad_input_is_400_naming_the_problem(client: TestClient, inputs: list[Any],
                                                       needle: str) -> None:
    resp = await client.post("/v2/models/heuristic/infer", json={"inputs": inputs})
    body = await resp.json()
    assert resp.status == 400 and set(body) == {"error"}
    assert needle in body["error"], body["error"]


async def test_oip_malformed_request_is_400(client: TestClient) -> None:
    for raw in (b"{", b'{"inputs": 3}', b"[]"):
        resp = await client.post("/v2/models/heuristic/infer", data=raw)
        assert resp.status == 400 and "error" in await resp.json()


# ---- readiness, shadow, admin, metrics ----------------------------------------------------------
async def test_health_and_ready(client: TestClient) -> None:
    health = await client.get("/health")
    assert health.status == 200 and (await health.json())["status"] == "ok"
    ready = await client.get("/ready")
    assert ready.status == 200 and (await ready.json())["model_version"] == "heuristic_v1"
    context_of(client.app).draining = True  # type: ignore[arg-type]
    ready = await client.get("/ready")
    assert ready.status == 503 and "draining" in (await ready.json())["error"]


async def test_mirrored_request_needs_a_challenger_the_rules_do_not_have(client: TestClient) -> None:
    status, body = await _predict(client, SEED_BODY, Host="heuristic-shadow:8003")
    assert status == 503 and body == {"error": "no challenger"}


async def test_admin_reload_is_refused_for_the_rules_and_for_relayed_callers(client: TestClient) -> None:
    resp = await client.post("/admin/reload", json={"slot": "champion", "version": "2"})
    assert resp.status == 400 and "fixed rules" in (await resp.json())["error"]
    resp = await client.post("/admin/reload", json={"slot": "champion"},
                             headers={"x-forwarded-for": "10.0.0.8"})
    assert resp.status == 403
    resp = await client.post("/admin/reload", json={"slot": "left"})
    assert resp.status == 400 and "slot must be" in (await resp.json())["error"]
    resp = await client.post("/admin/reload", data=b"{nope")
    assert resp.status == 400
    slots = await (await client.get("/admin/slots")).json()
    assert slots["slots"][0]["model_version"] == "heuristic_v1"


async def test_metrics_count_requests_classes_fallbacks_and_dropped_log_records(client: TestClient) -> None:
    for _ in range(5):
        await _predict(client, SEED_BODY, **{"x-mesh-intended": "xgboost"})
    await _predict(client, _with(hour_of_day=30))
    await asyncio.sleep(0.3)  # let the prediction log ship its batches into the (full) bus buffer
    text = await (await client.get("/metrics")).text()
    samples = _samples(text)
    base = {"kind": "heuristic", "slot": "champion"}
    assert samples[("model_server_requests_total", _key(base, model_version="heuristic_v1",
                                                        endpoint="predict", status="200"))] == 5
    assert samples[("model_server_requests_total", _key(base, model_version="none",
                                                        endpoint="predict", status="422"))] == 1
    assert samples[("model_server_predictions_total", _key(base, model_version="heuristic_v1",
                                                           prediction="fraud"))] == 5
    assert samples[("model_server_fallback_served_total",
                    _key({"kind": "heuristic"}, reason="ml_models_unavailable"))] == 5
    assert samples[("model_server_request_latency_seconds_count", _key(base, endpoint="predict"))] == 6
    assert samples[("model_server_in_flight_requests", _key({"kind": "heuristic"}))] == 0
    assert samples[("model_server_model_info", _key(base, model_version="heuristic_v1"))] == 1
    # NATS is down and the bus keeps 2 batches of 1 record: the other 3 records were dropped.
    records = "model_server_prediction_log_records_total"
    assert samples[(records, _key({"kind": "heuristic"}, outcome="queued"))] == 2
    assert samples[(records, _key({"kind": "heuristic"}, outcome="dropped"))] == 3
    assert samples[("model_server_prediction_log_batches_total",
                    _key({"kind": "heuristic"}, outcome="dropped"))] == 3


def _key(base: dict[str, str], **labels: str) -> frozenset[tuple[str, str]]:
    return frozenset({**base, **labels}.items())


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_the_heuristic_server_imports_no_ml_package(tmp_path: Any) -> None:
    """Serve a real request in a fresh interpreter, then look at what got imported."""
    code = f"""
import asyncio, sys
from aiohttp.test_utils import TestClient, TestServer
from data_plane.settings import Settings
from model_servers.app import create_app
async def main():
    app = create_app("heuristic", Settings(home=__import__("pathlib").Path({str(tmp_path)!r})),
                     nats_url=None)
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        r = await c.post("/api/v1/predict", json={SEED_BODY!r})
        assert r.status == 200, await r.text()
        r = await c.post("/v2/models/heuristic/infer", json={{"inputs": [{{"name": "x",
            "shape": [1, 11], "datatype": "FP32", "data": {SEED_ROW!r}}}]}})
        assert r.status == 200, await r.text()
asyncio.run(main())
bad = [m for m in ("numpy", "onnxruntime", "mlflow", "torch", "xgboost", "pandas") if m in sys.modules]
print(bad)
sys.exit(1 if bad else 0)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
