"""Background load from the operator API: `POST /api/v1/load/start|stop`, `GET /api/v1/load`.

The console's start/stop-load action and `make run`'s gentle demo traffic use it. The load goes
through the edge Envoy like any client's; the engine is data_plane.load (open loop, bounded).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from data_plane.contracts.errors import MalformedInputError, ValidationError
from data_plane.load import LoadEngine, LoadPlan, synthetic_payloads
from data_plane.load.payloads import scenario_names
from data_plane.load.targets import MAX_DURATION_S, LoadTargetError

if TYPE_CHECKING:
    from control_plane.app import ControlPlane

log = logging.getLogger(__name__)

MAX_RATE = 2_000.0  # the operator API runs in the control plane: keep its CPU for xDS
MAX_DURATION = 7 * 24 * 3600.0  # run back to back in engine-sized pieces
DEFAULT_RATE = 20.0
DEFAULT_DURATION = 3600.0


class BackgroundLoad:
    """At most one load run at a time, started and stopped over the operator API."""

    name = "load"

    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp
        self.url = f"{cp.settings.edge_url}/api/v1/predict"
        self._engine: LoadEngine | None = None
        self._task: asyncio.Task[Any] | None = None
        self._spec: dict[str, Any] = {}
        self._done: dict[str, int] = {"sent": 0, "ok": 0, "errors": 0}
        self._stopping = False
        self._last: dict[str, Any] | None = None

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        await self.stop_load()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def begin(self, rate: float, duration: float, scenario: str | None, seed: int = 0) -> dict[str, Any]:
        if self.running:
            raise web.HTTPConflict(text="a load run is already going; stop it first")
        # Check the plan now so a bad request fails here, not in the background.
        LoadPlan(url=self.url, rate=rate, duration=min(duration, MAX_DURATION_S))
        payloads = synthetic_payloads(seed=seed, scenario=scenario, count=2_000)
        self._spec = {"rate": rate, "duration": duration, "scenario": scenario,
                      "started_at": time.time()}
        self._done = {"sent": 0, "ok": 0, "errors": 0}
        self._stopping = False
        self._task = asyncio.create_task(self._run(rate, duration, payloads))
        return self.status()

    async def _run(self, rate: float, duration: float, payloads: list[Any]) -> None:
        """Runs of at most MAX_DURATION_S (the engine's bound) back to back until `duration`."""
        deadline = time.monotonic() + duration
        try:
            while not self._stopping and (left := deadline - time.monotonic()) >= 1.0:
                plan = LoadPlan(url=self.url, rate=rate, duration=min(left, MAX_DURATION_S))
                self._engine = LoadEngine(plan, payloads)
                result = await self._engine.run()
                self._last = result.to_dict()
                p = self._engine.snapshot()
                for key, value in (("sent", p.sent), ("ok", p.ok), ("errors", p.errors)):
                    self._done[key] += value
                self._engine = None
        except Exception:  # a failed run must not take the control plane down
            log.exception("background load failed")

    async def stop_load(self) -> dict[str, Any]:
        self._stopping = True
        if self.running:
            if self._engine is not None:
                self._engine.stop()
            assert self._task is not None
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._task), timeout=5.0)
        return self.status()

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"running": self.running, **self._spec, **self._done}
        if self._engine is not None:
            p = self._engine.snapshot()
            out.update(sent=self._done["sent"] + p.sent, ok=self._done["ok"] + p.ok,
                       errors=self._done["errors"] + p.errors, rps=round(p.rps, 1),
                       p99_ms=round(p.p99_ms, 3))
        if self._spec:
            out["elapsed_s"] = round(time.time() - self._spec["started_at"], 1)
        if self._last is not None and not self.running:
            out["last_result"] = self._last
        return out

    # ---- HTTP ------------------------------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        return [web.get("/api/v1/load", self._get), web.post("/api/v1/load/start", self._start),
                web.post("/api/v1/load/stop", self._stop)]

    async def _get(self, request: web.Request) -> web.Response:
        return web.json_response(self.status())

    async def _start(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        rate = _number(body, "rate", DEFAULT_RATE, 0.1, MAX_RATE)
        duration = _number(body, "duration", DEFAULT_DURATION, 1.0, MAX_DURATION)
        scenario = body.get("scenario")
        if scenario is not None and scenario not in scenario_names():
            raise ValidationError("scenario", "one_of",
                                  f"scenario must be null or one of {', '.join(scenario_names())}")
        try:
            status = self.begin(rate, duration, scenario)
        except LoadTargetError as exc:
            raise ValidationError("$body", "load", str(exc)) from None
        return web.json_response(status, status=202)

    async def _stop(self, request: web.Request) -> web.Response:
        return web.json_response(await self.stop_load())


async def _json_object(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise MalformedInputError("$body", "json", "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise MalformedInputError("$body", "type", 'send a JSON object, e.g. {"rate": 50, "duration": 600}')
    return body


def _number(body: dict[str, Any], name: str, default: float, lo: float, hi: float) -> float:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise ValidationError(name, "type", f"{name} must be a number between {lo:g} and {hi:g}")
    if not lo <= value <= hi:
        raise ValidationError(name, "range", f"{name} must be between {lo:g} and {hi:g} (got {value:g})")
    return float(value)


def factory(cp: ControlPlane) -> BackgroundLoad:
    return BackgroundLoad(cp)
