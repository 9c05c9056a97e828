"""`python -m control_plane.workers`: the drift detector and the retrain worker, until SIGTERM/SIGINT.

They run outside the control-plane process on purpose: training takes seconds of CPU, and the xDS
server and the canary's clock must never wait for it. `meshctl up` starts this process (service
`workers`) once a model is registered. Settings: MESH_* env vars; retrain knobs MESH_RETRAIN_*,
gates MESH_GATE_*, drift window MESH_DRIFT_WINDOW (records per window, default 2000).

The process has no listener: it writes its counters (drift service status, retrain runs) to
`run/workers-status.json` every MESH_WORKERS_STATUS_S seconds (default 2), replaced atomically, so
`meshctl` and recovery tests can read them (e.g. no reprocessing storm after a NATS outage).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping
from typing import Any

import msgspec

from control_plane.healing.drift_service import DriftService
from control_plane.healing.retrain import RetrainWorker
from data_plane import envconfig
from data_plane.eventbus import EventBus
from data_plane.settings import Settings

log = logging.getLogger("control_plane.workers")
STATUS_FILE = "workers-status.json"


def drift_knobs(env: Mapping[str, str] | None = None) -> dict[str, int | float]:
    """MESH_DRIFT_* variable -> value (window rows, the smallest window judged, oldest window age)."""
    window = envconfig.number(env, "MESH_DRIFT_WINDOW", 2000, "int")
    return {"MESH_DRIFT_WINDOW": window,
            "MESH_DRIFT_MIN_WINDOW": envconfig.number(env, "MESH_DRIFT_MIN_WINDOW", min(500, window), "int"),
            "MESH_DRIFT_MAX_WINDOW_AGE_S": envconfig.number(env, "MESH_DRIFT_MAX_WINDOW_AGE_S", 300.0)}


def _drift_service(settings: Settings, bus: EventBus) -> DriftService:
    knobs = drift_knobs()
    return DriftService(settings, bus=bus, window_size=int(knobs["MESH_DRIFT_WINDOW"]),
                        min_window=int(knobs["MESH_DRIFT_MIN_WINDOW"]),
                        max_window_age_s=float(knobs["MESH_DRIFT_MAX_WINDOW_AGE_S"]))


def workers_status(drift: DriftService, retrain: RetrainWorker) -> dict[str, Any]:
    """The counters the status file carries (JSON-friendly)."""
    return {"pid": os.getpid(), "ts": time.time(), "drift": drift.status(),
            "retrain": {"running": sorted(retrain.running),
                        "outcomes": [{"kind": o.kind, "reason": o.reason, "version": o.registered_version}
                                     for o in retrain.outcomes[-20:]]}}


async def _write_status(settings: Settings, drift: DriftService, retrain: RetrainWorker,
                        period: float) -> None:
    from control_plane.store import atomic_write

    path = settings.run_dir / STATUS_FILE
    while True:
        try:
            body = msgspec.json.encode(workers_status(drift, retrain))
            await asyncio.to_thread(atomic_write, path, body)
        except OSError as exc:  # a full disk must not stop drift detection
            log.warning("cannot write %s: %s", path, exc)
        await asyncio.sleep(period)


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run both workers on one event bus until `stop` is set or a signal arrives."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    bus = EventBus(settings.nats_url, "workers")
    await bus.start()
    drift = _drift_service(settings, bus)
    retrain = RetrainWorker(settings, bus=bus)
    try:
        await drift.start()
        await retrain.start()
        log.info("workers up: drift detector and retrain worker")
        period = float(envconfig.number(None, "MESH_WORKERS_STATUS_S", 2.0))
        status = asyncio.create_task(_write_status(settings, drift, retrain, period), name="status")
        await stop.wait()
        status.cancel()
    finally:
        await retrain.stop()
        await drift.close()
        await bus.close()


def main() -> int:
    settings = Settings.from_env()
    logging.basicConfig(level=settings.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
