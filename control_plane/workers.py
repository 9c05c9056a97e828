"""`python -m control_plane.workers`: the drift detector and the retrain worker, until SIGTERM/SIGINT.

They run outside the control-plane process on purpose: training takes seconds of CPU, and the xDS
server and the canary's clock must never wait for it. `meshctl up` starts this process (service
`workers`) once a model is registered. Settings: MESH_* env vars; retrain knobs MESH_RETRAIN_*,
gates MESH_GATE_*, drift window MESH_DRIFT_WINDOW (records per window, default 2000).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys

from control_plane.healing.drift_service import DriftService
from control_plane.healing.retrain import RetrainWorker
from data_plane.eventbus import EventBus
from data_plane.settings import Settings

log = logging.getLogger("control_plane.workers")


def _drift_service(settings: Settings, bus: EventBus) -> DriftService:
    window = int(os.environ.get("MESH_DRIFT_WINDOW", "2000"))
    min_window = int(os.environ.get("MESH_DRIFT_MIN_WINDOW", str(min(500, window))))
    max_age = float(os.environ.get("MESH_DRIFT_MAX_WINDOW_AGE_S", "300"))
    return DriftService(settings, bus=bus, window_size=window, min_window=min_window,
                        max_window_age_s=max_age)


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
        await stop.wait()
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
