"""The self-healing loop as a control-plane component: signals -> reconciler -> `cp.apply()`,
plus the live traffic tracker, and their two read-only operator routes:

- `GET /api/v1/health/services`: per service the judged state (healthy / sick / unknown), since
  when, the rule and reason, the last signal, and whether the intent has it ejected.
- `GET /api/v1/traffic/summary?window=60`: rps, p50/p99, error rate, fallback and fraud share,
  per-cluster numbers over the last `window` seconds (2-600), and `history` (one point per 2 s,
  last 10 min). See `control_plane.healing.traffic` for the definitions.
- `POST /api/v1/healing/hold` `{"reason": "..."}` / `POST /api/v1/healing/release` (operator
  token): the chaos lock; while held the reconciler still judges and publishes health events but
  changes nothing (visible as `held` in /api/v1/health/services).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web

from control_plane.healing.config import HealingConfig
from control_plane.healing.reconciler import Reconciler
from control_plane.healing.signals import SignalCollector
from control_plane.healing.traffic import TrafficTracker
from control_plane.intent import SERVICES
from control_plane.operator_api import BadRequest
from data_plane.contracts.errors import ValidationError

if TYPE_CHECKING:
    from control_plane.app import ControlPlane

log = logging.getLogger(__name__)
MAX_WINDOW_S = 600


class HealingComponent:
    """Owns the collector, the reconciler, the traffic tracker and their tasks."""

    name = "healing"

    def __init__(self, cp: ControlPlane, config: HealingConfig | None = None) -> None:
        self.cp = cp
        self.config = config or HealingConfig.from_env()
        c = self.config
        self.collector = SignalCollector(cp.topology, window_s=c.window_s, probe_timeout_s=c.probe_timeout_s,
                                         admin_timeout_s=c.admin_timeout_s)
        topo = cp.topology
        addrs = [topo.service(s) for s in SERVICES]
        metrics_urls = [f"http://{a.host}:{a.server_port}/metrics" for a in addrs]
        self.traffic = TrafficTracker(metrics_urls, interval_s=c.history_interval_s, points=c.history_points,
                                      timeout_s=c.admin_timeout_s)
        self.reconciler = Reconciler(cp, self.collector, c)
        self._tasks: list[asyncio.Task[Any]] = []

    async def start(self) -> None:
        await self.collector.start()
        self._tasks = [asyncio.create_task(self.reconciler.run(), name="healing-reconciler"),
                       asyncio.create_task(self._traffic_loop(), name="healing-traffic")]
        c = self.config
        log.info("healing loop: a round every %.2fs, window %gs, dwell %gs, cooldown %gs, <= %g changes "
                 "per service per minute", c.scrape_interval_s, c.window_s, c.policy.dwell_s,
                 c.governor.cooldown_s, c.governor.max_per_minute)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, timeout=2.0)
        self._tasks = []
        await self.collector.close()
        await self.traffic.close()

    async def _traffic_loop(self) -> None:
        while True:
            try:
                await self.traffic.tick(self.collector.latest)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("traffic sample failed")
            await asyncio.sleep(self.config.history_interval_s)

    # ---- operator routes ---------------------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        return [web.get("/api/v1/health/services", self.health_services),
                web.get("/api/v1/traffic/summary", self.traffic_summary),
                web.post("/api/v1/healing/hold", self.hold),
                web.post("/api/v1/healing/release", self.release)]

    async def hold(self, request: web.Request) -> web.Response:
        """The chaos lock: the reconciler judges but proposes nothing until released (token needed)."""
        body = await _json_body(request)
        reason = body.get("reason", "held by the operator") if isinstance(body, dict) else None
        if not isinstance(reason, str) or not reason.strip():
            raise ValidationError("reason", "type", 'send {"reason": "<why>"} (a non-empty string)')
        self.reconciler.hold(reason.strip()[:500])
        return web.json_response({"held": self.reconciler.hold_reason})

    async def release(self, request: web.Request) -> web.Response:
        self.reconciler.release()
        return web.json_response({"held": None})

    async def health_services(self, request: web.Request) -> web.Response:
        return web.json_response(self.reconciler.services_view())

    async def traffic_summary(self, request: web.Request) -> web.Response:
        window = _window(request)
        body = self.traffic.summary(float(window))
        body["edge"] = {"reachable": self.collector.latest is not None, "error": self.collector.edge_error}
        return web.json_response(body)


async def _json_body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BadRequest("$body", "json", "the body is not valid JSON") from None


def _window(request: web.Request) -> int:
    """`?window=` in seconds, 2..600 (default 60); anything else is a 400 naming the rule."""
    raw = request.query.get("window", "")
    if raw == "":
        return 60
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest("window", "integer", "window must be a whole number of seconds") from None
    if not 2 <= value <= MAX_WINDOW_S:
        raise BadRequest("window", "range", f"window must be between 2 and {MAX_WINDOW_S} seconds")
    return value


def healing_component(cp: ControlPlane) -> HealingComponent | None:
    """Component factory: the loop unless MESH_HEALING=0."""
    config = HealingConfig.from_env()
    if not config.enabled:
        log.info("healing loop off (MESH_HEALING=0)")
        return None
    return HealingComponent(cp, config)
