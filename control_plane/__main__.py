"""`python -m control_plane`: the ADS server and the operator API until SIGTERM/SIGINT.

Settings come from MESH_* env vars (meshctl up sets MESH_HOME and every MESH_PORT_*). NATS may be
down: events are then dropped and counted, and everything else works.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Iterable

from aiohttp import web

from control_plane.app import ControlPlane
from control_plane.components import (
    COMPONENTS,
    Component,
    ComponentFactory,
    build_components,
    component_routes,
    start_components,
    stop_components,
)
from control_plane.operator_api import create_app, load_or_create_token
from data_plane.contracts.errors import MeshError
from data_plane.settings import Settings

log = logging.getLogger("control_plane")


def _healing(cp: ControlPlane) -> Component | None:
    """The self-healing loop (signals -> reconciler -> apply) and its read routes; MESH_HEALING=0: off."""
    from control_plane.healing.component import healing_component

    return healing_component(cp)


# Run besides the registered COMPONENTS when no factories are given (lazy imports: no cycles).
EXTRA_COMPONENTS: tuple[ComponentFactory, ...] = (_healing,)


async def serve(settings: Settings, stop: asyncio.Event | None = None,
                factories: Iterable[ComponentFactory] = ()) -> None:
    """Run until `stop` is set (or SIGTERM/SIGINT arrive), then shut down cleanly.

    `factories` replace the registered COMPONENTS (tests); empty means the registered ones.
    """
    settings.ensure_home()
    token = load_or_create_token(settings.operator_token_file)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    handled = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
    try:
        await _serve(settings, token, stop, factories)
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)


async def _serve(settings: Settings, token: str, stop: asyncio.Event,
                 factories: Iterable[ComponentFactory]) -> None:
    cp = ControlPlane(settings)
    components = build_components(cp, tuple(factories) or (*COMPONENTS, *EXTRA_COMPONENTS))
    runner = web.AppRunner(create_app(cp, token, routes=component_routes(components)),
                           access_log=None, handle_signals=False)
    await runner.setup()
    started: list[Component] = []
    cp_started = False
    try:
        # The operator port first: a clash fails here, before ADS or any state is touched.
        await web.TCPSite(runner, settings.bind_host, settings.ports.operator, reuse_address=True).start()
        await cp.start()
        cp_started = True
        started = await start_components(components)
        log.info("operator API on http://%s:%s", settings.host, settings.ports.operator)
        await stop.wait()
        log.info("stopping")
    finally:
        await runner.cleanup()  # no new operator requests while the rest shuts down
        await stop_components(started)
        if cp_started:
            await cp.stop()
            log.info("stopped (events published %d, dropped %d)", cp.bus.published, cp.bus.dropped)


def main() -> int:
    settings = Settings.from_env()
    logging.basicConfig(level=settings.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        asyncio.run(serve(settings))
    except MeshError as exc:
        log.error("%s", exc)
        return 1
    except OSError as exc:
        # Typically a port already in use: name it and the variable that moves it.
        log.error("cannot start: %s (ports: ADS %s = MESH_PORT_ADS, operator %s = MESH_PORT_OPERATOR)",
                  exc, settings.ports.ads, settings.ports.operator)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
