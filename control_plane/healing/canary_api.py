"""Operator routes for models, pins, retrain and the canary (mounted by the canary component).

    GET    /api/v1/models                    per kind: versions, champion, challenger, pinned
    POST   /api/v1/models/{kind}/pin         {"version": "3"}: champion slot serves 3; intent.pins
    DELETE /api/v1/models/{kind}/pin         champion slot follows the `champion` alias again
    POST   /api/v1/retrain                   {"model": "xgboost", "reason": "..."} -> 202 {"request_id"}
    GET    /api/v1/canary                    per model: phase, step, weight, verdicts
    POST   /api/v1/canary/promote            {"model": "xgboost"}: promote now (operator)
    POST   /api/v1/canary/rollback           {"model": "xgboost", "reason": "..."}: roll back now

Bad input is a 4xx naming the field and the rule (same middleware as the rest of the API).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web

from control_plane.intent import MODELS, RoutingIntent
from control_plane.operator_api import _change_response
from control_plane.routing_api import _object
from data_plane.contracts import subjects
from data_plane.contracts.errors import ModelNotFoundError, ValidationError
from data_plane.contracts.events import Decision, RetrainRequested

if TYPE_CHECKING:
    from control_plane.healing.canary_component import CanaryComponent


def _kind(value: Any, field: str = "model") -> str:
    if value not in MODELS:
        raise ValidationError(field, "unknown_model", f"{field} must be one of {', '.join(MODELS)}")
    return str(value)


def _reason(body: dict[str, Any], default: str) -> str:
    reason = body.get("reason", default)
    if reason is None:
        return default
    if not isinstance(reason, str):
        raise ValidationError("reason", "type", "reason must be a string")
    return reason[:500] or default


class CanaryRoutes:
    def __init__(self, component: CanaryComponent) -> None:
        self.component = component
        self.cp = component.cp
        self.controller = component.controller

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/api/v1/models", self.models),
                web.post("/api/v1/models/{kind}/pin", self.pin),
                web.delete("/api/v1/models/{kind}/pin", self.unpin),
                web.post("/api/v1/retrain", self.retrain),
                web.get("/api/v1/canary", self.canary),
                web.post("/api/v1/canary/promote", self.promote),
                web.post("/api/v1/canary/rollback", self.rollback)]

    async def models(self, request: web.Request) -> web.Response:
        registry = self.component.actions.registry
        pins = self.cp.store.intent.pins
        out: dict[str, Any] = {}
        for kind in MODELS:
            versions = await asyncio.to_thread(registry.list_versions, kind)
            aliases = {a: v.version for v in versions for a in v.aliases}
            out[kind] = {"versions": [{"version": v.version, "label": v.label, "aliases": list(v.aliases),
                                       "metrics": v.metrics, "created_at": v.created_at} for v in versions],
                         "champion": aliases.get("champion"), "challenger": aliases.get("challenger"),
                         "pinned": pins.get(kind)}
        return web.json_response({"models": out})

    async def _resolve(self, kind: str, version: Any) -> str:
        if isinstance(version, int) and not isinstance(version, bool):
            version = str(version)
        if not isinstance(version, str) or not version.isdigit():
            raise ValidationError("version", "type", 'version must be a registry version number, e.g. "3"')
        try:
            await asyncio.to_thread(self.component.actions.registry.resolve, kind, version)
        except ModelNotFoundError:
            raise web.HTTPNotFound(text=f"{kind} has no version {version}; GET /api/v1/models lists "
                                   "them") from None
        return version

    async def pin(self, request: web.Request) -> web.Response:
        kind = _kind(request.match_info["kind"], "kind")
        body = await _object(request, ("version",))
        version = await self._resolve(kind, body["version"])
        await self.component.actions.reload_slot(kind, "champion", version)

        def change(intent: RoutingIntent) -> RoutingIntent:
            return msgspec.structs.replace(intent, pins={**intent.pins, kind: version})

        decision = await self.cp.apply(change, actor="operator", action="pin", rule="operator_request",
                                       reason=f"operator pinned {kind}'s champion slot to {kind}_v{version}",
                                       numbers={"version": float(version)})
        return _change_response(self.cp, decision)

    async def unpin(self, request: web.Request) -> web.Response:
        kind = _kind(request.match_info["kind"], "kind")
        await self.component.actions.reload_slot(kind, "champion", "champion")

        def change(intent: RoutingIntent) -> RoutingIntent:
            return msgspec.structs.replace(intent, pins={k: v for k, v in intent.pins.items() if k != kind})

        decision = await self.cp.apply(change, actor="operator", action="unpin", rule="operator_request",
                                       reason=f"operator unpinned {kind}: its champion slot follows the "
                                              "champion alias")
        return _change_response(self.cp, decision)

    async def retrain(self, request: web.Request) -> web.Response:
        body = await _retrain_body(request)
        kind = _kind(body["model"])
        text = _reason(body, "operator request")
        event = RetrainRequested(model=kind, reason="operator")
        await self.component.publish_raw(subjects.RETRAIN_REQUESTED, msgspec.json.encode(event))
        self.cp.ledger.append(Decision(actor="operator", action="retrain_requested", rule="operator_request",
                                       reason=f"operator asked to retrain {kind}: {text}",
                                       trigger_ids=[event.id]))
        return web.json_response({"request_id": event.id, "model": kind}, status=202)

    async def canary(self, request: web.Request) -> web.Response:
        runs = self.controller.runs
        out = {kind: (runs[kind].view() if kind in runs else {"model": kind, "phase": "idle", "step": -1,
                                                               "weight": 0.0, "verdicts": []})
               for kind in MODELS}
        return web.json_response({"canary": out, "held": self.controller.hold_reason})

    async def promote(self, request: web.Request) -> web.Response:
        body = await _retrain_body(request, allowed=("model", "reason"))
        kind = _kind(body["model"])
        decision = await self.controller.promote(kind, _reason(body, "operator promoted"),
                                                 rule="operator_request", actor="operator")
        return _change_response(self.cp, decision)

    async def rollback(self, request: web.Request) -> web.Response:
        body = await _retrain_body(request, allowed=("model", "reason"))
        kind = _kind(body["model"])
        decision = await self.controller.rollback(kind, _reason(body, "operator rolled back"),
                                                  rule="operator_request", actor="operator")
        return _change_response(self.cp, decision)


async def _retrain_body(request: web.Request,
                        allowed: tuple[str, ...] = ("model", "reason")) -> dict[str, Any]:
    """A JSON object with `model` (required) and only the `allowed` fields."""
    import json

    from control_plane.operator_api import BadRequest

    raw = await request.read()
    if not raw.strip():
        raise ValidationError("$body", "required", 'send a JSON object, e.g. {"model": "xgboost"}')
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BadRequest("$body", "json", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("$body", "type", 'send a JSON object, e.g. {"model": "xgboost"}')
    for key in body:
        if key not in allowed:
            raise ValidationError(key, "unknown_field", f"{key} is not a field of this request; use "
                                  f"{', '.join(allowed)}")
    if "model" not in body:
        raise ValidationError("model", "required", "model is required")
    return body
