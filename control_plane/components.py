"""Pieces that run inside the control-plane process next to the xDS core (drift, healing, canary...).

Adding one is one entry in `COMPONENTS`: a factory that gets the running `ControlPlane` and returns
an object with `name`, `async start()`, `async stop()` and, optionally, `routes()` (aiohttp
RouteDefs mounted on the operator API, behind the same token and error handling), or None when
the component does not apply to this mesh. Changes to routing go through `cp.apply(...)`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

from aiohttp import web

if TYPE_CHECKING:
    from control_plane.app import ControlPlane

log = logging.getLogger(__name__)


class Component(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


ComponentFactory = Callable[["ControlPlane"], "Component | None"]

def _background_load(cp: ControlPlane) -> Component:
    from control_plane.loadgen import BackgroundLoad

    return BackgroundLoad(cp)


def _routing_controls(cp: ControlPlane) -> Component:
    from control_plane.routing_api import routing_controls

    return routing_controls(cp)


def _canary(cp: ControlPlane) -> Component | None:
    from control_plane.healing.canary_component import canary_component

    return canary_component(cp)


def _chaos(cp: ControlPlane) -> Component:
    from control_plane.chaos_runs import chaos_component

    return chaos_component(cp)


def _ab_stats(cp: ControlPlane) -> Component | None:
    from control_plane.ab_component import ab_stats_component

    return ab_stats_component(cp)


def _drift_reports(cp: ControlPlane) -> Component | None:
    from control_plane.drift_reports import drift_reports_component

    return drift_reports_component(cp)


# One entry per component, started in this order after the xDS core, stopped in reverse.
# Factories import their module lazily so the operator API and components never import-cycle.
COMPONENTS: list[ComponentFactory] = [_background_load, _routing_controls, _canary, _chaos, _ab_stats,
                                      _drift_reports]


def build_components(cp: ControlPlane, factories: Iterable[ComponentFactory] = ()) -> list[Component]:
    """Instantiate the factories (default: COMPONENTS); a failing factory is logged and skipped."""
    out = []
    for factory in factories or COMPONENTS:
        try:
            component = factory(cp)
        except Exception:
            log.exception("component factory %r failed; the control plane runs without it", factory)
            continue
        if component is not None:
            out.append(component)
    return out


def component_routes(components: Iterable[Component]) -> list[web.RouteDef]:
    routes: list[web.RouteDef] = []
    for component in components:
        routes_of = getattr(component, "routes", None)
        if routes_of is not None:
            routes.extend(routes_of())
    return routes


async def start_components(components: list[Component]) -> list[Component]:
    """Start each; one that fails is logged and left out (the xDS core keeps serving)."""
    started = []
    for component in components:
        try:
            await component.start()
        except Exception:
            log.exception("component %s failed to start; running without it", component.name)
            continue
        started.append(component)
        log.info("component %s started", component.name)
    return started


async def stop_components(components: list[Component]) -> None:
    for component in reversed(components):
        try:
            await component.stop()
        except Exception:
            log.exception("component %s failed to stop cleanly", component.name)
