"""Open Inference Protocol (KServe v2) REST endpoints.

    GET  /v2                                   server metadata
    GET  /v2/health/live | /v2/health/ready    {"live": true} / {"ready": bool} (503 when not)
    GET  /v2/models/{name}[/versions/{v}]      model metadata
    GET  /v2/models/{name}[/versions/{v}]/ready
    POST /v2/models/{name}[/versions/{v}]/infer

Model names: the kind (`xgboost`) or its registry name (`fraud-xgboost`) address the slot of the
listener the request came in on; `<kind>-challenger` addresses the challenger slot explicitly.
A `/versions/{v}` path must name the version the slot serves (404 otherwise).

Inputs, two layouts (datatype FP32, FP64, INT32 or INT64; `data` flat row-major or nested):
  1. one tensor, any name, shape [N, 11], columns in the schema's feature order;
  2. eleven tensors named after the features (`amount`, ..., `card_age_days`), shape [N] or
     [N, 1] each.
N is 1 to 1,000. Every value must be finite and inside its feature's range (integer features
need integral values). Outputs: `fraud_probability` (FP32, [N]) and `is_fraud` (BOOL, [N]); the
request's `outputs` list may select either. Errors: 400 `{"error": "..."}` naming the input, row
and feature; 404 for an unknown model or version; 503 when the slot has no model.
"""

from __future__ import annotations

import math
import time
from typing import Any

import msgspec
from aiohttp import web

from data_plane.contracts.events import PredictionRecord
from data_plane.contracts.schema import FEATURE_NAMES, FEATURES, describe_rule
from model_servers.context import ServerContext, is_shadow_host
from model_servers.predict import MAX_BATCH, json_response, request_id_of, too_large_error
from model_servers.slots import CHALLENGER, Model

ENDPOINT = "oip_infer"
DATATYPES = ("FP32", "FP64", "INT32", "INT64")
OUTPUTS = ("fraud_probability", "is_fraud")
N_FEATURES = len(FEATURES)
SERVER_NAME = "fraud-mesh-model-server"
PROTOCOL_VERSION = "2"


class InferInput(msgspec.Struct):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]
    parameters: dict[str, Any] | None = None


class RequestedOutput(msgspec.Struct):
    name: str
    parameters: dict[str, Any] | None = None


class InferRequest(msgspec.Struct):
    inputs: list[InferInput]
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[RequestedOutput] | None = None


_decode_infer = msgspec.json.Decoder(InferRequest).decode


class OipError(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _flatten(data: list[Any]) -> list[Any]:
    if not data or not isinstance(data[0], list):
        return data
    out: list[Any] = []
    stack = [data]
    while stack:  # iterative: a deeply nested body must not hit the recursion limit
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            out.append(item)
    return out


def _check_tensor(t: InferInput) -> list[Any]:
    if t.datatype not in DATATYPES:
        raise OipError(f"input {t.name!r}: datatype {t.datatype!r} is not supported; "
                       f"use one of {', '.join(DATATYPES)}")
    if any(d < 0 for d in t.shape):
        raise OipError(f"input {t.name!r}: shape {t.shape} has a negative dimension")
    data = _flatten(t.data)
    expected = math.prod(t.shape)
    if len(data) != expected:
        raise OipError(f"input {t.name!r}: shape {t.shape} needs {expected} values, data has {len(data)}")
    return data


def _value(v: Any, tensor: str, row: int, col: int) -> float:
    spec = FEATURES[col]
    bad = isinstance(v, bool) or not isinstance(v, int | float)
    if not bad:
        fv = float(v)
        bad = (not math.isfinite(fv) or not spec.minimum <= fv <= spec.maximum
               or (spec.kind is int and not fv.is_integer()))
    if bad:
        got = msgspec.json.encode(v).decode()[:40]
        raise OipError(f"input {tensor!r} row {row}: {describe_rule(spec.name)} (got {got})")
    return fv


def parse_rows(req: InferRequest) -> list[tuple[float, ...]]:
    """The [N, 11] feature rows of an infer request, validated (OipError names what is wrong)."""
    inputs = req.inputs
    if len(inputs) == 1:
        t = inputs[0]
        data = _check_tensor(t)
        if len(t.shape) != 2 or t.shape[1] != N_FEATURES:
            raise OipError(f"input {t.name!r}: shape must be [N, {N_FEATURES}] (got {t.shape}); or "
                           f"send {N_FEATURES} inputs named after the features")
        n = t.shape[0]
        _check_rows(n)
        return [tuple(_value(data[r * N_FEATURES + c], t.name, r, c) for c in range(N_FEATURES))
                for r in range(n)]
    by_name = {t.name: t for t in inputs}
    missing = [f for f in FEATURE_NAMES if f not in by_name]
    if len(inputs) != N_FEATURES or missing:
        raise OipError(f"send one input of shape [N, {N_FEATURES}], or {N_FEATURES} inputs named "
                       f"{', '.join(FEATURE_NAMES)}" + (f" (missing: {', '.join(missing)})"
                                                        if len(inputs) > 1 else ""))
    columns = []
    rows: int | None = None
    for name in FEATURE_NAMES:
        t = by_name[name]
        data = _check_tensor(t)
        if not (len(t.shape) == 1 or (len(t.shape) == 2 and t.shape[1] == 1)):
            raise OipError(f"input {name!r}: shape must be [N] or [N, 1] (got {t.shape})")
        if rows is None:
            rows = t.shape[0]
        elif t.shape[0] != rows:
            raise OipError(f"input {name!r}: has {t.shape[0]} rows, {FEATURE_NAMES[0]!r} has {rows}")
        columns.append(data)
    assert rows is not None
    _check_rows(rows)
    return [tuple(_value(columns[c][r], FEATURE_NAMES[c], r, c) for c in range(N_FEATURES))
            for r in range(rows)]


def _check_rows(n: int) -> None:
    if not 1 <= n <= MAX_BATCH:
        raise OipError(f"N must be between 1 and {MAX_BATCH} rows (got {n})")


class OipHandlers:
    """The v2 endpoints of one server."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        registry_name = f"fraud-{ctx.kind}"
        self.names = {ctx.kind: None, registry_name: None, f"{ctx.kind}-challenger": CHALLENGER}

    def routes(self) -> list[web.RouteDef]:
        r: list[web.RouteDef] = [
            web.get("/v2", self.server_metadata),
            web.get("/v2/health/live", self.live),
            web.get("/v2/health/ready", self.ready),
        ]
        for base in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
            r += [web.get(base, self.model_metadata), web.get(base + "/ready", self.model_ready),
                  web.post(base + "/infer", self.infer)]
        return r

    async def server_metadata(self, request: web.Request) -> web.Response:
        return json_response({"name": SERVER_NAME, "version": PROTOCOL_VERSION, "extensions": []})

    async def live(self, request: web.Request) -> web.Response:
        return json_response({"live": True})

    async def ready(self, request: web.Request) -> web.Response:
        ready = self.ctx.model_for(self.ctx.slot_of(request)) is not None and not self.ctx.draining
        return json_response({"ready": ready}, 200 if ready else 503)

    def _resolve(self, request: web.Request) -> tuple[str, str, Model | None]:
        name = request.match_info["name"]
        if name not in self.names:
            raise OipError(f"Model with name {name} does not exist.", 404)
        slot = self.names[name] or self.ctx.slot_of(request)
        if is_shadow_host(request.headers.get("Host")):
            slot = CHALLENGER
        model = self.ctx.model_for(slot)
        version = request.match_info.get("version")
        if version is not None and (model is None or model.version != version):
            serving = model.version if model else "nothing"
            raise OipError(f"Model {name} version {version} is not loaded (serving {serving}).", 404)
        return name, slot, model

    async def model_metadata(self, request: web.Request) -> web.Response:
        try:
            name, _slot, model = self._resolve(request)
        except OipError as exc:
            return json_response({"error": str(exc)}, exc.status)
        return json_response({
            "name": name,
            "versions": [model.version] if model else [],
            "platform": model.platform if model else "",
            "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, N_FEATURES],
                        "parameters": {"columns": list(FEATURE_NAMES)}}],
            "outputs": [{"name": "fraud_probability", "datatype": "FP32", "shape": [-1]},
                        {"name": "is_fraud", "datatype": "BOOL", "shape": [-1]}],
        })

    async def model_ready(self, request: web.Request) -> web.Response:
        try:
            name, _slot, model = self._resolve(request)
        except OipError as exc:
            return json_response({"error": str(exc)}, exc.status)
        ready = model is not None and not self.ctx.draining
        return json_response({"name": name, "ready": ready}, 200 if ready else 503)

    async def infer(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        ctx = self.ctx
        ctx.metrics.enter()
        slot = ctx.slot_of(request)
        try:
            name, slot, model = self._resolve(request)
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge as exc:
                return json_response({"error": too_large_error(exc)["message"]}, 413)
            try:
                req = _decode_infer(body)
            except msgspec.MsgspecError as exc:
                raise OipError(f"invalid inference request: {exc}") from None
            rows = parse_rows(req)
            wanted = [o.name for o in req.outputs] if req.outputs else list(OUTPUTS)
            unknown = [w for w in wanted if w not in OUTPUTS]
            if unknown:
                raise OipError(f"unknown output {unknown[0]!r}; outputs are {', '.join(OUTPUTS)}")
            if model is None:
                raise OipError(ctx.unavailable_message(slot), 503)
            try:
                scores = model.predict_many(rows)
            except Exception as exc:
                raise OipError(f"{model.model_version} failed to score: {exc}", 503) from None
            return self._answer(request, req, name, slot, model, rows, scores, wanted, started)
        except OipError as exc:
            ctx.metrics.observe(slot, ENDPOINT, "none", exc.status, time.perf_counter() - started)
            return json_response({"error": str(exc)}, exc.status)
        finally:
            ctx.metrics.leave()

    def _answer(self, request: web.Request, req: InferRequest, name: str, slot: str, model: Model,
                rows: list[tuple[float, ...]], scores: list[float], wanted: list[str],
                started: float) -> web.Response:
        ctx = self.ctx
        shadow = is_shadow_host(request.headers.get("Host"))
        intended = request.headers.get("x-mesh-intended")
        rid = request_id_of(request)
        latency_ms = (time.perf_counter() - started) * 1000.0
        threshold = ctx.threshold_of(model)
        flags = [s >= threshold for s in scores]
        now = time.time()
        mv = model.model_version
        for i, (row, p, f) in enumerate(zip(rows, scores, flags, strict=True)):
            ctx.plog.add(PredictionRecord(
                id=ctx.plog.next_id(), ts=now, request_id=f"{rid}:{i}", model=ctx.kind,
                model_version=mv, slot=slot, features=list(row), score=p, is_fraud=f,
                latency_ms=latency_ms, shadow=shadow, intended=intended))
        fraud = sum(flags)
        if fraud:
            ctx.metrics.predicted(slot, mv, True, fraud)
        if len(flags) - fraud:
            ctx.metrics.predicted(slot, mv, False, len(flags) - fraud)
        outputs = []
        if "fraud_probability" in wanted:
            outputs.append({"name": "fraud_probability", "datatype": "FP32", "shape": [len(scores)],
                            "data": [round(s, 6) for s in scores]})
        if "is_fraud" in wanted:
            outputs.append({"name": "is_fraud", "datatype": "BOOL", "shape": [len(flags)],
                            "data": flags})
        ctx.metrics.observe(slot, ENDPOINT, mv, 200, time.perf_counter() - started)
        return json_response({"model_name": name, "model_version": model.version,
                              "id": req.id or rid, "outputs": outputs},
                             headers={"x-request-id": rid})
