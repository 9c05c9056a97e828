"""Operator routes for the two intent fields the traffic split does not cover: shadow and overrides.

    POST   /api/v1/shadow               {"model": "xgboost", "fraction": 0.5}  mirror 50 % of live
                                        traffic to xgboost's challenger slot (Envoy discards its answer)
    DELETE /api/v1/shadow               stop mirroring
    POST   /api/v1/overrides            {"cluster": "xgboost-challenger", "host": "127.0.0.1", "port": 9000}
                                        re-point one model cluster (e.g. through the fault proxy)
    DELETE /api/v1/overrides/{cluster}  back to the cluster's own endpoint

Mounted as a control-plane component (same token and error handling as the rest of the operator
API); every change goes through `cp.apply()` and answers the ledger decision like
`POST /api/v1/traffic`. Bad input is a 422 naming the field and the rule.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web

from control_plane.intent import MODELS, Endpoint, RoutingIntent
from control_plane.operator_api import BadRequest, _change_response
from data_plane.contracts.errors import ValidationError
from data_plane.settings import is_dns_name, is_ip_address

if TYPE_CHECKING:
    from control_plane.app import ControlPlane

SHADOW_FIELDS = ("model", "fraction")
OVERRIDE_FIELDS = ("cluster", "host", "port")


async def _object(request: web.Request, allowed: tuple[str, ...]) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        raise ValidationError("$body", "required", f"send a JSON object with {', '.join(allowed)}")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BadRequest("$body", "json", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("$body", "type", f"send a JSON object with {', '.join(allowed)}")
    for key in body:
        if key not in allowed:
            raise ValidationError(key, "unknown_field",
                                  f"{key} is not a field of this request; use {', '.join(allowed)}")
    for key in allowed:
        if key not in body:
            raise ValidationError(key, "required", f"{key} is required")
    return body


def parse_shadow(body: dict[str, Any]) -> dict[str, Any]:
    """Check `{"model", "fraction"}`; returns the intent's shadow value."""
    model, fraction = body["model"], body["fraction"]
    if model not in MODELS:
        raise ValidationError("model", "unknown_model",
                              f"model must be one of {', '.join(MODELS)} (a kind with a challenger slot)")
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not math.isfinite(fraction):
        raise ValidationError("fraction", "type", "fraction must be a number between 0 and 1")
    if not 0.0 < float(fraction) <= 1.0:
        raise ValidationError("fraction", "range", "fraction must be above 0 and at most 1 "
                              "(DELETE /api/v1/shadow stops mirroring)")
    return {"model": model, "fraction": float(fraction)}


def parse_override(body: dict[str, Any], clusters: list[str]) -> tuple[str, dict[str, Any]]:
    """Check `{"cluster", "host", "port"}`; returns (cluster, endpoint)."""
    cluster, host, port = body["cluster"], body["host"], body["port"]
    if cluster not in clusters:
        raise ValidationError("cluster", "unknown_cluster", f"cluster must be one of {', '.join(clusters)}")
    if not isinstance(host, str) or not (is_ip_address(host) or is_dns_name(host)):
        raise ValidationError("host", "host",
                              "host must be an IP address such as 127.0.0.1 or a DNS name such as "
                              "xgboost.fraud-mesh.svc.cluster.local (no scheme, no port)")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValidationError("port", "range", "port must be an integer between 1 and 65535")
    return cluster, {"host": host, "port": port}


class RoutingControls:
    """The component: no background work, only routes."""

    name = "routing-controls"

    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp
        self.clusters = [svc.cluster for svc in cp.topology.services]

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/api/v1/shadow", self.set_shadow),
                web.delete("/api/v1/shadow", self.clear_shadow),
                web.post("/api/v1/overrides", self.set_override),
                web.delete("/api/v1/overrides/{cluster}", self.clear_override)]

    async def set_shadow(self, request: web.Request) -> web.Response:
        shadow = parse_shadow(await _object(request, SHADOW_FIELDS))
        decision = await self.cp.apply({"shadow": shadow}, actor="operator", action="set_shadow",
                                       rule="operator_request",
                                       reason=f"operator mirrors {shadow['fraction']:g} of live traffic "
                                              f"to {shadow['model']}-challenger",
                                       numbers={"fraction": shadow["fraction"]})
        return _change_response(self.cp, decision)

    async def clear_shadow(self, request: web.Request) -> web.Response:
        decision = await self.cp.apply({"shadow": None}, actor="operator", action="clear_shadow",
                                       rule="operator_request", reason="operator stopped mirroring")
        return _change_response(self.cp, decision)

    async def set_override(self, request: web.Request) -> web.Response:
        cluster, endpoint = parse_override(await _object(request, OVERRIDE_FIELDS), self.clusters)

        def change(intent: RoutingIntent) -> RoutingIntent:  # under apply()'s lock: no lost update
            return msgspec.structs.replace(intent, overrides={**intent.overrides,
                                                              cluster: Endpoint(**endpoint)})

        decision = await self.cp.apply(change, actor="operator", action="set_override",
                                       rule="operator_request",
                                       reason=f"operator re-pointed {cluster} to "
                                              f"{endpoint['host']}:{endpoint['port']}")
        return _change_response(self.cp, decision)

    async def clear_override(self, request: web.Request) -> web.Response:
        cluster = request.match_info["cluster"]
        if cluster not in self.clusters:
            raise ValidationError("cluster", "unknown_cluster",
                                  f"cluster must be one of {', '.join(self.clusters)}")

        def change(intent: RoutingIntent) -> RoutingIntent:
            return msgspec.structs.replace(intent, overrides={k: v for k, v in intent.overrides.items()
                                                              if k != cluster})

        decision = await self.cp.apply(change, actor="operator", action="clear_override",
                                       rule="operator_request",
                                       reason=f"operator sent {cluster} back to its own endpoint")
        return _change_response(self.cp, decision)


def routing_controls(cp: ControlPlane) -> RoutingControls:
    """Component factory (see control_plane.components)."""
    return RoutingControls(cp)
