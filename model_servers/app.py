"""The model server application: `create_app(kind, settings)` builds one aiohttp app that serves
both slots of a model kind (the listener's port tells them apart, see `ServerContext.slot_of`).

Kinds: `xgboost` and `pytorch` serve registry models through ONNX Runtime (champion alias on the
kind's port, challenger alias on the second port); `heuristic` serves the rules and never imports
an ML package. Resources with a lifetime (event bus, prediction log, registry refresher, NATS
listener, loader thread) live in `cleanup_ctx`, so a test's client and `__main__` start and stop
them the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web

from data_plane.eventbus import EventBus
from data_plane.settings import Settings
from model_servers.admin import AdminHandlers
from model_servers.batching import MicroBatcher
from model_servers.context import HEURISTIC, KINDS, ServerContext
from model_servers.heuristic import HeuristicModel
from model_servers.metrics import ServerMetrics
from model_servers.model_events import ModelEventListener
from model_servers.oip import OipHandlers
from model_servers.predict import MAX_BODY_BYTES, PredictHandlers, json_response, too_large_error
from model_servers.prediction_log import PredictionLog
from model_servers.slots import Model, ModelSlots

log = logging.getLogger(__name__)

CTX = web.AppKey("model_server_context", ServerContext)
_EXTRAS = web.AppKey("model_server_extras", dict)
# When the champion is missing (nothing registered yet, registry busy), retry this often.
RETRY_LOAD_S = 2.0
_FROM_SETTINGS = "settings"


class LazyRegistrySource:
    """The registry source, imported on first use inside the loader thread: the ML stack (MLflow,
    numpy, onnxruntime) takes seconds to import and must not stall the event loop at startup."""

    def __init__(self, settings: Settings, kind: str) -> None:
        self.settings = settings
        self.kind = kind
        self._source: Any = None

    def _get(self) -> Any:
        if self._source is None:
            from model_servers.onnx_model import RegistrySource

            self._source = RegistrySource(self.settings, self.kind)
        return self._source

    def locate(self, ref: str) -> Any:
        return self._get().locate(ref)

    def open(self, located: Any) -> Model:
        model: Model = self._get().open(located)
        return model


class SlotRefresher:
    """Keeps alias-following slots current: at start, on NATS model events, on a slow poll."""

    def __init__(self, slots: ModelSlots, poll_s: float) -> None:
        self.slots = slots
        self.poll_s = poll_s
        self._wake = asyncio.Event()
        self.rounds = 0

    def poke(self) -> None:
        """Ask for a refresh soon (debounced: many pokes, one round)."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.slots.refresh()
            except Exception:  # a refresher that dies would leave the slots stale forever
                log.exception("%s slot refresh failed; retrying", self.slots.kind)
            self.rounds += 1
            missing = self.slots.champion.model is None
            timeout = RETRY_LOAD_S if missing else (self.poll_s or None)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)


def guarded(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
            ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Wrap a handler so every error a client can see is JSON, never a traceback. Used instead of
    a middleware: a middleware costs every request two extra coroutine layers (~5 % of a
    prediction's CPU); the prediction handlers catch their own errors."""

    async def call(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge as exc:
            return json_response(too_large_error(exc), 413)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return json_response({"error": exc.reason}, exc.status)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            return json_response({"error": "internal error; see the model server log"}, 500)

    call.__name__ = getattr(handler, "__name__", "handler")
    return call


async def _no_route(request: web.Request) -> web.Response:
    """JSON 404 / 405 for paths and methods no route serves (the catch-all route's handler)."""
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource.canonical == CATCH_ALL:
            continue
        match, methods = await resource.resolve(request)
        if match is None:
            allowed |= methods
    if allowed:
        return json_response({"error": f"{request.method} is not allowed on {request.path}; "
                                       f"use {', '.join(sorted(allowed))}"}, 405,
                             headers={"Allow": ",".join(sorted(allowed))})
    return json_response({"error": f"no endpoint {request.method} {request.path}"}, 404)


CATCH_ALL = "/{tail:.*}"


def create_app(kind: str, settings: Settings, *, slots: ModelSlots | None = None,
               nats_url: str | None = _FROM_SETTINGS, challenger_ports: tuple[int, ...] = (),
               log_buffer: int = 256, log_batch_records: int = 256, log_flush_s: float = 0.05,
               registry_poll_s: float = 30.0, ensure_stream: bool = True,
               micro_batch: bool = True) -> web.Application:
    """Build the model server app for `kind` (xgboost | pytorch | heuristic).

    nats_url: where prediction records and model events go (default: the settings'); None turns
    NATS off (records are counted as dropped). challenger_ports: local ports whose requests
    address the challenger slot. log_buffer: prediction batches kept while NATS is away.
    registry_poll_s: how often alias-following slots re-check the registry (0: events only).
    micro_batch: score the one-row requests of a loop tick in one model call (ML kinds only; the
    rules gain nothing from it).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; use one of {', '.join(KINDS)}")
    metrics = ServerMetrics(kind)
    loader: ThreadPoolExecutor | None = None
    if slots is None:
        if kind == HEURISTIC:
            slots = ModelSlots.fixed(HeuristicModel())
        else:
            # One loader thread: registry reads and model loads never run concurrently.
            loader = ThreadPoolExecutor(1, thread_name_prefix=f"{kind}-loader")
            slots = ModelSlots(kind, LazyRegistrySource(settings, kind), executor=loader)

    def on_swap(slot: str, outcome: str, current: str | None, previous: str | None) -> None:
        metrics.swap(slot, outcome)
        if outcome != "failed":
            metrics.model_loaded(slot, current, previous)

    slots.on_change = on_swap
    for s in slots.all():
        if s.model is not None:
            metrics.model_loaded(s.name, s.model.model_version, None)
    url = settings.nats_url if nats_url == _FROM_SETTINGS else nats_url
    plog = PredictionLog(None, kind, metrics, batch_records=log_batch_records, flush_interval=log_flush_s)
    batcher = MicroBatcher() if micro_batch and slots.has_registry else None
    if batcher is not None:
        metrics.watch_batcher(lambda: (batcher.calls, batcher.rows))
    ctx = ServerContext(kind, settings, slots, metrics, plog, challenger_ports=set(challenger_ports),
                        batcher=batcher)

    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[CTX] = ctx
    extras: dict[str, Any] = {"refresher": None, "listener": None, "bus": None}
    app[_EXTRAS] = extras
    predict = PredictHandlers(ctx)
    app.router.add_post("/api/v1/predict", predict.predict)
    app.router.add_post("/api/v1/predict/batch", predict.predict_batch)
    for route in (*AdminHandlers(ctx).routes(), *OipHandlers(ctx).routes()):
        app.router.add_route(route.method, route.path, guarded(route.handler))
    app.router.add_route("*", CATCH_ALL, guarded(_no_route))

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        bus = None
        if url:
            bus = EventBus(url, f"model-server-{kind}", max_buffer=log_buffer)
            await bus.start()
            metrics.watch_bus(lambda: (bus.published, bus.dropped))
        plog.bus = bus
        await plog.start()
        tasks: list[asyncio.Task[None]] = []
        refresher = None
        if slots.has_registry:
            refresher = SlotRefresher(slots, registry_poll_s)
            tasks.append(asyncio.create_task(refresher.run(), name=f"{kind}-slot-refresher"))
        listener = None
        if url:
            listener = ModelEventListener(url, kind, refresher.poke if refresher else None,
                                          model_names=(f"fraud-{kind}",), ensure_stream=ensure_stream)
            await listener.start()
        extras.update(refresher=refresher, listener=listener, bus=bus)
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if listener is not None:
                await listener.close()
            await plog.close()
            if bus is not None:
                await bus.close()
            if loader is not None:
                loader.shutdown(wait=False, cancel_futures=True)

    app.cleanup_ctx.append(lifetime)
    return app


def context_of(app: web.Application) -> ServerContext:
    """The ServerContext of an app made by `create_app`."""
    return app[CTX]


def extras_of(app: web.Application) -> dict[str, Any]:
    """The running app's refresher, NATS listener and event bus (None where disabled)."""
    return app[_EXTRAS]


__all__ = ["CTX", "context_of", "create_app", "extras_of"]
