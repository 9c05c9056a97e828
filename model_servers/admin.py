"""Health, readiness, metrics and the localhost-only admin endpoints.

    GET  /health          liveness: 200 while the process runs
    GET  /ready           200 when the slot of this listener has a model (and the server is not
                          draining); 503 JSON with the reason otherwise
    GET  /metrics         Prometheus text
    GET  /admin/slots     what each slot serves (version, alias or pin, last error)
    POST /admin/reload    {"slot": "champion"|"challenger", "version": "3"|"champion"|"challenger"|null,
                           "force": false}: reload a slot from the registry. A version number pins
                           the slot; an alias (or null: the slot's own alias) makes it follow the
                           alias again. 200 with the swap, 404 unknown version, 503 load failure.
Admin endpoints answer only direct loopback callers (the control plane on this host): a request
from another address, or one relayed by a proxy (x-forwarded-for / x-envoy-* headers), gets 403.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from model_servers.context import ServerContext
from model_servers.metrics import CONTENT_TYPE
from model_servers.predict import json_response
from model_servers.slots import SLOT_NAMES, SlotError

LOOPBACK = ("127.0.0.1", "::1")
PROXY_HEADERS = ("x-forwarded-for", "x-envoy-external-address", "x-envoy-internal")


class ReloadBody(msgspec.Struct, forbid_unknown_fields=True):
    slot: str = "champion"
    version: str | int | None = None
    force: bool = False


_decode_reload = msgspec.json.Decoder(ReloadBody).decode


class AdminHandlers:
    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/health", self.health),
            web.get("/ready", self.ready),
            web.get("/metrics", self.metrics),
            web.get("/admin/slots", self.slots),
            web.post("/admin/reload", self.reload),
        ]

    async def health(self, request: web.Request) -> web.Response:
        return json_response({"status": "ok", "kind": self.ctx.kind})

    async def ready(self, request: web.Request) -> web.Response:
        ctx = self.ctx
        slot = ctx.slot_of(request)
        model = ctx.model_for(slot)
        if ctx.draining:
            return json_response({"ready": False, "kind": ctx.kind, "slot": slot,
                                  "error": "draining: the server is shutting down"}, 503)
        if model is None:
            return json_response({"ready": False, "kind": ctx.kind, "slot": slot,
                                  "error": ctx.unavailable_message(slot)}, 503)
        return json_response({"ready": True, "kind": ctx.kind, "slot": slot,
                              "model_version": model.model_version})

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.ctx.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    def _refuse_remote(self, request: web.Request) -> web.Response | None:
        relayed = any(h in request.headers for h in PROXY_HEADERS)
        if request.remote not in LOOPBACK or relayed:
            return json_response({"error": "admin endpoints answer only direct calls from this "
                                           "host (the control plane); use meshctl"}, 403)
        return None

    async def slots(self, request: web.Request) -> web.Response:
        if (refused := self._refuse_remote(request)) is not None:
            return refused
        return json_response({"kind": self.ctx.kind, "slots": self.ctx.slots.describe()})

    async def reload(self, request: web.Request) -> web.Response:
        if (refused := self._refuse_remote(request)) is not None:
            return refused
        body = await request.read()
        try:
            req = _decode_reload(body) if body.strip() else ReloadBody()
        except msgspec.MsgspecError as exc:
            return json_response({"error": f'invalid reload request: {exc}; send {{"slot": '
                                           f'"champion"|"challenger", "version": "<n>"|"champion"|'
                                           f'"challenger"}}'}, 400)
        if req.slot not in SLOT_NAMES:
            return json_response({"error": f"slot must be one of {', '.join(SLOT_NAMES)} "
                                           f"(got {req.slot!r})"}, 400)
        version = None if req.version is None else str(req.version)
        if version is not None and not (version in SLOT_NAMES or version.isdigit()):
            return json_response({"error": "version must be a registry version number or an alias "
                                           f"(champion, challenger); got {version!r}"}, 400)
        try:
            result = await self.ctx.slots.load(req.slot, version, force=req.force)
        except SlotError as exc:
            return json_response({"error": str(exc)}, exc.status)
        return json_response(result.to_dict())
