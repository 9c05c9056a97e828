"""`POST /api/v1/predict` and `POST /api/v1/predict/batch`: the hot path.

Per request: read the body, validate it with msgspec (`parse_transaction`), pick the slot (the
listener's port; mirrored requests always go to the challenger), score on the event loop
(microseconds; a thread hop would cost more): ML models through the micro-batcher (requests of
the same loop tick share one ONNX Runtime call, see `batching.py`; a lone request uses
`predict_one`), the rules directly. Answer the seed's exact Prediction and append a
PredictionRecord to the in-process log.

Batch: `{"transactions": [...]}` with 1 to MAX_BATCH items; each item is validated on its own
and scored together in one vectorised call; an invalid item gets its own error entry and does
not fail the others. Item i is logged with request id `<x-request-id>:<i>`.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from typing import Any

import msgspec
from aiohttp import web

from data_plane.contracts.errors import ValidationError
from data_plane.contracts.events import PredictionRecord
from data_plane.contracts.schema import Prediction, Transaction, error_status, parse_transaction
from model_servers.context import JSON, SHADOW_SUFFIX, ServerContext, is_shadow_host
from model_servers.slots import CHALLENGER, CHAMPION, Model

log = logging.getLogger(__name__)

MAX_BATCH = 1000
MAX_BODY_BYTES = 1024 * 1024  # aiohttp client_max_size: 1,000 seed transactions fit in ~300 KiB
REQUEST_ID_MAX = 128
CARD_ID_MAX = 64
ENDPOINT_ONE = "predict"
ENDPOINT_BATCH = "predict_batch"

_encode = msgspec.json.Encoder().encode


class _BatchBody(msgspec.Struct, forbid_unknown_fields=True):
    transactions: list[msgspec.Raw]


_decode_batch = msgspec.json.Decoder(_BatchBody).decode


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None,
                  close: bool = False) -> web.Response:
    """A JSON response from any msgspec-encodable payload (`close`: end the keep-alive connection)."""
    resp = web.Response(body=_encode(payload), status=status, content_type=JSON, headers=headers)
    if close:
        resp.force_close()
    return resp


def too_large_error(exc: web.HTTPRequestEntityTooLarge) -> dict[str, str]:
    return {"error": "payload_too_large", "field": "$body", "rule": "max_size",
            "message": f"the request body is larger than {MAX_BODY_BYTES} bytes; "
                       f"send at most {MAX_BATCH} transactions per batch"}


class RequestIds:
    """Request ids for requests that came without `x-request-id` (Envoy always sends one): a
    random per-process prefix and a counter, unique without a uuid4 per request."""

    def __init__(self) -> None:
        self._prefix = uuid.uuid4().hex[:16]
        self._n = itertools.count(1)

    def new(self) -> str:
        return f"{self._prefix}{next(self._n):016x}"


_ids = RequestIds()


def request_id_of(request: web.Request) -> str:
    rid = request.headers.get("x-request-id")
    return rid[:REQUEST_ID_MAX] if rid else _ids.new()


class PredictHandlers:
    """The two prediction endpoints of one server."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.kind = ctx.kind
        self.metrics = ctx.metrics
        self.plog = ctx.plog
        self.ids = _ids

    async def predict(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        ctx, metrics = self.ctx, self.metrics
        metrics.in_flight_now += 1
        slot = CHAMPION
        try:
            headers = request.headers
            host = headers.get("Host")
            shadow = host is not None and SHADOW_SUFFIX in host and is_shadow_host(host)
            slot = CHALLENGER if shadow else ctx.slot_of(request)
            try:
                txn = _parse_one(await request.read())
            except ValidationError as err:
                return self._rejected(err, slot, ENDPOINT_ONE, started)
            except web.HTTPRequestEntityTooLarge as exc:
                return self._too_large(exc, slot, ENDPOINT_ONE, started)
            model = ctx.model_for(slot)
            if model is None:
                return self._unavailable(slot, ENDPOINT_ONE, started)
            features = txn.features()
            try:
                batcher = ctx.batcher
                p = await batcher.score(model, features) if batcher else model.predict_one(features)
            except Exception as exc:  # a broken model must fail over (Envoy retries), not 500
                return self._scoring_failed(exc, model, slot, ENDPOINT_ONE, started)
            is_fraud = p >= ctx.threshold_of(model)
            intended = headers.get("x-mesh-intended")
            reason = None if shadow else ctx.fallback_reason(intended, slot)
            rid = headers.get("x-request-id")
            generated = not rid
            rid = self.ids.new() if generated else rid[:REQUEST_ID_MAX]  # type: ignore[index]
            latency_ms = (time.perf_counter() - started) * 1000.0
            mv = model.model_version
            body_out = _encode(Prediction(round(p, 6), is_fraud, mv, self.kind, round(latency_ms, 3),
                                          self.kind, reason))
            self.plog.add(PredictionRecord(
                id=self.plog.next_id(), ts=time.time(), request_id=rid, model=self.kind,
                model_version=mv, slot=slot, features=list(features), score=p, is_fraud=is_fraud,
                latency_ms=latency_ms, shadow=shadow, intended=intended,
                card_id=txn.card_id or _card_header(headers)))
            if reason is not None:
                metrics.fallback_served(reason)
            metrics.predicted(slot, mv, is_fraud)
            metrics.observe(slot, ENDPOINT_ONE, mv, 200, time.perf_counter() - started)
            # Envoy sends an id and knows it: echo only ids the caller has not seen.
            resp = web.Response(body=body_out, content_type=JSON,
                                headers={"x-request-id": rid} if generated else None)
            if ctx.draining:  # shutting down: tell keep-alive peers to reconnect elsewhere
                resp.force_close()
            return resp
        except Exception:  # never a traceback to a client; Envoy fails over on the 500
            log.exception("prediction failed")
            metrics.observe(slot, ENDPOINT_ONE, "none", 500, time.perf_counter() - started)
            return json_response({"error": "internal error; see the model server log"}, 500)
        finally:
            metrics.in_flight_now -= 1

    async def predict_batch(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        ctx, metrics = self.ctx, self.metrics
        metrics.in_flight_now += 1
        slot = CHAMPION
        try:
            shadow = is_shadow_host(request.headers.get("Host"))
            slot = CHALLENGER if shadow else ctx.slot_of(request)
            try:
                items = _parse_batch(await request.read())
            except ValidationError as err:
                return self._rejected(err, slot, ENDPOINT_BATCH, started)
            except web.HTTPRequestEntityTooLarge as exc:
                return self._too_large(exc, slot, ENDPOINT_BATCH, started)
            model = ctx.model_for(slot)
            if model is None:
                return self._unavailable(slot, ENDPOINT_BATCH, started)
            return self._score_batch(request, items, model, slot, shadow, started)
        except Exception:
            log.exception("batch prediction failed")
            metrics.observe(slot, ENDPOINT_BATCH, "none", 500, time.perf_counter() - started)
            return json_response({"error": "internal error; see the model server log"}, 500)
        finally:
            metrics.in_flight_now -= 1

    def _score_batch(self, request: web.Request, items: list[Transaction | ValidationError],
                     model: Model, slot: str, shadow: bool, started: float) -> web.Response:
        ctx, metrics = self.ctx, self.metrics
        valid = [(i, t) for i, t in enumerate(items) if isinstance(t, Transaction)]
        rows = [t.features() for _, t in valid]
        try:
            scores = model.predict_many(rows) if rows else []
        except Exception as exc:
            return self._scoring_failed(exc, model, slot, ENDPOINT_BATCH, started)
        headers = request.headers
        intended = headers.get("x-mesh-intended")
        reason = None if shadow else ctx.fallback_reason(intended, slot)
        rid = request_id_of(request)
        card_header = _card_header(headers)
        latency_ms = (time.perf_counter() - started) * 1000.0
        mv = model.model_version
        results: list[dict[str, Any]] = [{}] * len(items)
        now = time.time()
        fraud = 0
        threshold = ctx.threshold_of(model)
        for (i, txn), row, p in zip(valid, rows, scores, strict=True):
            is_fraud = p >= threshold
            fraud += is_fraud
            results[i] = {"index": i, "status": 200, "prediction": Prediction(
                round(p, 6), is_fraud, mv, self.kind, round(latency_ms, 3), self.kind, reason)}
            self.plog.add(PredictionRecord(
                id=self.plog.next_id(), ts=now, request_id=f"{rid}:{i}", model=self.kind,
                model_version=mv, slot=slot, features=list(row), score=p, is_fraud=is_fraud,
                latency_ms=latency_ms, shadow=shadow, intended=intended, card_id=txn.card_id or card_header))
        for i, item in enumerate(items):
            if isinstance(item, ValidationError):
                results[i] = {"index": i, "status": error_status(item), "error": item.to_dict()}
        if reason is not None and valid:
            metrics.fallback_served(reason)
        if fraud:
            metrics.predicted(slot, mv, True, fraud)
        if len(valid) - fraud:
            metrics.predicted(slot, mv, False, len(valid) - fraud)
        metrics.observe(slot, ENDPOINT_BATCH, mv, 200, time.perf_counter() - started)
        payload = {"results": results, "count": len(items), "succeeded": len(valid),
                   "failed": len(items) - len(valid), "model_version": mv, "model_type": self.kind,
                   "routed_to": self.kind, "fallback_reason": reason,
                   "latency_ms": round(latency_ms, 3)}
        return json_response(payload, headers={"x-request-id": rid}, close=ctx.draining)

    # ---- refusals ------------------------------------------------------------------------------
    def _rejected(self, err: ValidationError, slot: str, endpoint: str, started: float) -> web.Response:
        status = error_status(err)
        self.metrics.observe(slot, endpoint, "none", status, time.perf_counter() - started)
        return json_response(err.to_dict(), status)

    def _too_large(self, exc: web.HTTPRequestEntityTooLarge, slot: str, endpoint: str,
                   started: float) -> web.Response:
        self.metrics.observe(slot, endpoint, "none", 413, time.perf_counter() - started)
        return json_response(too_large_error(exc), 413)

    def _unavailable(self, slot: str, endpoint: str, started: float) -> web.Response:
        self.metrics.observe(slot, endpoint, "none", 503, time.perf_counter() - started)
        return json_response({"error": self.ctx.unavailable_message(slot)}, 503)

    def _scoring_failed(self, exc: Exception, model: Model, slot: str, endpoint: str,
                        started: float) -> web.Response:
        self.metrics.observe(slot, endpoint, model.model_version, 503, time.perf_counter() - started)
        return json_response({"error": f"{model.model_version} failed to score: {exc}"}, 503)


def _card_header(headers: Any) -> str | None:
    card = headers.get("card-id")
    return card[:CARD_ID_MAX] if card else None


def _parse_one(body: bytes) -> Transaction:
    """parse_transaction, where msgspec's UnicodeDecodeError (a non-UTF-8 object key) is the 400 it
    should be: as a 500 it failed over through every tier and got every host ejected."""
    try:
        return parse_transaction(body)
    except UnicodeDecodeError:
        raise ValidationError("$body", "json", "the request body is not valid UTF-8") from None
    except RecursionError:
        raise ValidationError("$body", "json", "the request body is nested too deeply") from None


def _parse_batch(body: bytes) -> list[Transaction | ValidationError]:
    """Validate the envelope (errors raise) and each item (errors become list entries)."""
    try:
        envelope = _decode_batch(body)
    except msgspec.ValidationError as exc:
        msg = str(exc)
        if msg.startswith("Object missing required field"):
            raise ValidationError("transactions", "required",
                                  'send {"transactions": [ ...transactions... ]}') from None
        if msg.startswith("Object contains unknown field"):
            name = msg.split("`")[1]
            raise ValidationError(name, "unknown_field",
                                  f"{name} is not a known field; the batch body has only "
                                  "`transactions`") from None
        if "`$.transactions`" in msg:
            raise ValidationError("transactions", "type",
                                  "transactions must be an array of transaction objects") from None
        raise ValidationError("$body", "type", 'the request body must be a JSON object '
                              '{"transactions": [...]}') from None
    except RecursionError:  # e.g. an item of 20k nested arrays: msgspec recurses into Raw items
        raise ValidationError("$body", "json", "the request body is nested too deeply") from None
    except (msgspec.DecodeError, UnicodeDecodeError):  # msgspec raises the latter for a non-UTF-8 key
        try:
            _parse_one(body)  # reuse its explanation of malformed JSON
        except ValidationError as err:
            if err.field == "$body":
                raise
        raise ValidationError("$body", "json", "the request body is not valid JSON") from None
    raws = envelope.transactions
    if not 1 <= len(raws) <= MAX_BATCH:
        raise ValidationError("transactions", "size",
                              f"transactions must hold 1 to {MAX_BATCH} items (got {len(raws)})")
    out: list[Transaction | ValidationError] = []
    for raw in raws:
        try:
            out.append(_parse_one(bytes(raw)))
        except ValidationError as err:
            out.append(err)
    return out
