"""The latest DriftReport per model, for the operator API: `GET /api/v1/drift`.

The drift detector runs in the `workers` process (`control_plane.workers`) and publishes one
`DriftReport` per window on `mesh.drift.<model>`; this component subscribes on its own core NATS
connection and keeps the newest report of each model (by the report's own `ts`, so a late,
older message never hides a newer one). Connecting is retried in the background until NATS
answers; after that nats-py reconnects and re-subscribes by itself when NATS comes back.

Answer: `{"drift": {model: DriftReport}, "nats_connected": bool, "received": n}`; a model with no
report yet is absent (the detector needs a full window first). MESH_DRIFT_REPORTS=0 turns it off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web

from data_plane import envconfig
from data_plane.contracts.events import DriftReport
from data_plane.eventbus import connect_forever

if TYPE_CHECKING:
    from control_plane.app import ControlPlane

log = logging.getLogger(__name__)
DRIFT_SUBJECT = "mesh.drift.*"
_decode = msgspec.json.Decoder(DriftReport).decode


class DriftReports:
    """The cache (no I/O): newest report per model."""

    def __init__(self) -> None:
        self.latest: dict[str, DriftReport] = {}
        self.received = 0
        self.undecodable = 0

    def add(self, data: bytes) -> DriftReport | None:
        """Decode one `mesh.drift.<model>` payload and keep it if it is the model's newest."""
        try:
            report = _decode(data)
        except msgspec.MsgspecError:
            self.undecodable += 1
            return None
        self.received += 1
        old = self.latest.get(report.model)
        if old is None or report.ts >= old.ts:
            self.latest[report.model] = report
        return report

    def view(self) -> dict[str, Any]:
        return {model: msgspec.to_builtins(r) for model, r in sorted(self.latest.items())}


class DriftReportsComponent:
    """Subscribes to `mesh.drift.*` and serves `GET /api/v1/drift` (module docstring)."""

    name = "drift-reports"

    def __init__(self, nats_url: str) -> None:
        self.nats_url = nats_url
        self.reports = DriftReports()
        self._nc: Any = None
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._subscribe(), name="drift-reports-nats")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._nc.close(), 2)

    @property
    def connected(self) -> bool:
        return bool(self._nc is not None and self._nc.is_connected)

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/api/v1/drift", self.drift)]

    async def drift(self, request: web.Request) -> web.Response:
        return web.json_response({"drift": self.reports.view(), "nats_connected": self.connected,
                                  "received": self.reports.received})

    async def _subscribe(self) -> None:
        self._nc = await connect_forever(self.nats_url, "drift-reports")
        await self._nc.subscribe(DRIFT_SUBJECT, cb=self._on_report)
        self.subscribed.set()

    async def _on_report(self, msg: Any) -> None:
        self.reports.add(msg.data)


def drift_reports_component(cp: ControlPlane) -> DriftReportsComponent | None:
    """Component factory (see control_plane.components); MESH_DRIFT_REPORTS=0 turns it off."""
    if not envconfig.switch(None, "MESH_DRIFT_REPORTS"):
        return None
    return DriftReportsComponent(cp.settings.nats_url)
