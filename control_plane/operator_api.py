"""The operator HTTP API (aiohttp, 127.0.0.1:settings.ports.operator; also reachable via the edge).

Reads are open; writes need `Authorization: Bearer <token>` (the token file is created at first start,
mode 0600). Every error is JSON `{error, field, rule, message}`; bad input never yields a 500.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web

from control_plane.app import IntentFrozenError, SnapshotRefusedError
from control_plane.intent import validate_weights
from data_plane.contracts.errors import MalformedInputError, StateDirError, ValidationError

if TYPE_CHECKING:
    from control_plane.app import ControlPlane

log = logging.getLogger(__name__)

CONTROL_PLANE: web.AppKey[ControlPlane] = web.AppKey("control_plane")
TOKEN = web.AppKey("operator_token", str)
MAX_BODY = 64 * 1024
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# ---- token ----------------------------------------------------------------------------
def load_or_create_token(path: Path) -> str:
    """The operator token: read it, or create it (url-safe random, mode 0600) on first start."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise StateDirError(f"cannot create the operator token {path}: {exc.strerror or exc}") from exc
    else:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    try:
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)  # a copied or restored file: keep it private to this user
        token = path.read_text().strip()
    except OSError as exc:
        raise StateDirError(f"cannot read the operator token {path}: {exc.strerror or exc}") from exc
    if not token:
        raise StateDirError(f"the operator token {path} is empty; delete it and restart the control "
                            "plane to create a new one")
    return token


# ---- error shape ------------------------------------------------------------------------
class BadRequest(MalformedInputError):
    """Malformed input (not JSON, not an integer): 400 rather than the 422 of a broken rule."""


def error_response(status: int, error: str, message: str, field: str | None = None,
                   rule: str | None = None, **extra: Any) -> web.Response:
    body = {"error": error, "field": field, "rule": rule, "message": message, **extra}
    return web.json_response(body, status=status)


def _validation(status: int, exc: ValidationError) -> web.Response:
    return web.json_response(exc.to_dict(), status=status)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes JSON; nothing leaks a traceback to the client."""
    try:
        return await handler(request)
    except MalformedInputError as exc:
        return _validation(400, exc)
    except SnapshotRefusedError as exc:
        return web.json_response(exc.to_dict(), status=422)
    except IntentFrozenError as exc:
        return error_response(409, "frozen", str(exc), field="frozen", rule="automation_frozen")
    except ValidationError as exc:
        return _validation(422, exc)
    except web.HTTPRequestEntityTooLarge:
        return error_response(413, "body_too_large", f"request bodies are limited to {MAX_BODY} bytes",
                              field="$body", rule="max_size")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, exc.reason.lower().replace(" ", "_"),
                              exc.text if exc.text and not exc.text.startswith(str(exc.status))
                              else exc.reason)
    except Exception:
        log.exception("operator API: %s %s failed", request.method, request.path)
        return error_response(500, "internal_error",
                              "the control plane failed to handle this request; see its log")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Writes need the operator's bearer token (constant-time compare; never logged)."""
    if request.method in WRITE_METHODS:
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        expected = request.app[TOKEN]
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                                 expected.encode()):
            resp = error_response(
                401, "unauthorized", "send the operator token as `Authorization: Bearer <token>`; "
                "it is in MESH_HOME/operator-token", field="Authorization", rule="bearer_token")
            resp.headers["WWW-Authenticate"] = "Bearer"
            return resp
    return await handler(request)


async def _read_json(request: web.Request, *, required: bool) -> Any:
    """The body as JSON, None when empty and optional; malformed -> 400 naming the rule."""
    raw = await request.read()
    if not raw.strip():
        if required:
            raise ValidationError("$body", "required", "send a JSON body")
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BadRequest("$body", "json", "the body is not valid JSON") from None


def _int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(name, "integer", f"{name} must be an integer") from None
    if not lo <= value <= hi:
        raise BadRequest(name, "range", f"{name} must be between {lo} and {hi}")
    return value


# ---- handlers ---------------------------------------------------------------------------
async def health(request: web.Request) -> web.Response:
    cp = request.app[CONTROL_PLANE]
    services = await cp.probe.probe()
    return web.json_response({
        "status": "ok",
        "control_plane": {"up": True, "snapshot_version": cp.store.version,
                          "uptime_s": round(time.monotonic() - cp.started_monotonic, 3)},
        "services": {name: ("up" if s["healthy"] else "down") for name, s in services.items()},
    })


async def status(request: web.Request) -> web.Response:
    cp = request.app[CONTROL_PLANE]
    body = cp.status()
    body["services"] = await cp.probe.probe()
    return web.json_response(body)


def _change_response(cp: ControlPlane, decision: Any) -> web.Response:
    intent = cp.store.intent
    body = {"status": "applied", "weights": intent.weights,
            "effective_weights": intent.effective_weights(), "frozen": intent.frozen,
            "version": decision.xds_version, "acked": decision.acked, "nodes": decision.nodes,
            "decision": msgspec.to_builtins(decision)}
    if decision.acked is False:
        body["status"] = "rejected_by_envoy"
        return web.json_response({"error": "rejected_by_envoy", "field": None, "rule": "envoy_ack",
                                  "message": "an Envoy rejected the new config; the last good one "
                                             "stays (see the decision ledger)", **body}, status=409)
    if decision.acked is None and any(v == "pending" for v in decision.nodes.values()):
        body["status"] = "accepted"  # persisted and pushed; some Envoys have not ACKed yet
        return web.json_response(body, status=202)
    return web.json_response(body)


async def set_traffic(request: web.Request) -> web.Response:
    """Seed 000: `{"xgboost": 0.5, "pytorch": 0.5}` sets the champion split."""
    cp = request.app[CONTROL_PLANE]
    body = await _read_json(request, required=True)
    weights = validate_weights(body)
    reason = request.headers.get("X-Mesh-Reason", "operator set the traffic split")[:500]
    decision = await cp.apply({"weights": weights}, actor="operator", action="set_weights",
                              rule="operator_request", reason=reason, numbers=weights)
    return _change_response(cp, decision)


async def _set_frozen(request: web.Request, frozen: bool) -> web.Response:
    cp = request.app[CONTROL_PLANE]
    body = await _read_json(request, required=False)
    reason = "operator froze automation" if frozen else "operator unfroze automation"
    if body is not None:
        if not isinstance(body, dict):
            raise ValidationError("$body", "type", 'send a JSON object, e.g. {"reason": "incident 42"}')
        given = body.get("reason")
        if given is not None and not isinstance(given, str):
            raise ValidationError("reason", "type", "reason must be a string")
        reason = (given or reason)[:500]
    decision = await cp.apply({"frozen": frozen}, actor="operator",
                              action="freeze" if frozen else "unfreeze", rule="operator_request",
                              reason=reason)
    return _change_response(cp, decision)


async def freeze(request: web.Request) -> web.Response:
    return await _set_frozen(request, True)


async def unfreeze(request: web.Request) -> web.Response:
    return await _set_frozen(request, False)


async def decisions(request: web.Request) -> web.Response:
    cp = request.app[CONTROL_PLANE]
    since = _int_param(request, "since", 0, 0, 2**62)
    limit = _int_param(request, "limit", 100, 1, 1000)
    items = cp.ledger.read(since_seq=since, limit=limit)
    return web.json_response({
        "decisions": [msgspec.to_builtins(d) for d in items],
        "next_since": items[-1].seq if items else since,
        "last_seq": cp.ledger.last_seq,
    })


async def metrics(request: web.Request) -> web.Response:
    cp = request.app[CONTROL_PLANE]
    cp.refresh_metrics()
    return web.Response(body=cp.metrics.render(), headers={"Content-Type": cp.metrics.content_type})


def create_app(cp: ControlPlane, token: str, routes: Iterable[web.RouteDef] = ()) -> web.Application:
    """The operator API bound to a ControlPlane; `routes` come from components (same auth, errors)."""
    app = web.Application(middlewares=[errors_middleware, auth_middleware], client_max_size=MAX_BODY)
    app[CONTROL_PLANE] = cp
    app[TOKEN] = token
    app.router.add_get("/health", health)
    app.router.add_get("/api/v1/status", status)
    app.router.add_post("/api/v1/traffic", set_traffic)
    app.router.add_get("/api/v1/decisions", decisions)
    app.router.add_post("/api/v1/freeze", freeze)
    app.router.add_post("/api/v1/unfreeze", unfreeze)
    app.router.add_get("/metrics", metrics)
    app.router.add_routes(list(routes))
    return app
