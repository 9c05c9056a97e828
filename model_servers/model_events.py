"""The model server's NATS listener: model lifecycle events in, the predictions stream ensured.

- Subscribes to `mesh.model.registered`, `mesh.model.promoted` and `mesh.model.rolled_back`;
  an event naming this server's model (kind, e.g. `xgboost`, or registry name `fraud-xgboost`)
  triggers `on_model_event()` (the app re-resolves its slots' aliases; debounced there).
- Ensures the JetStream stream PREDICTIONS (subjects from `contracts.subjects.STREAMS`) exists,
  creating it with modest limits only when missing, so whoever starts NATS may create it first
  with its own limits. Without JetStream (or the stream), prediction batches still reach core
  NATS subscribers.
Connection problems are retried forever in the background; nothing here touches the request path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import msgspec

from data_plane.contracts import subjects
from data_plane.eventbus import connect_forever

log = logging.getLogger(__name__)

MODEL_EVENT_SUBJECTS = (subjects.MODEL_REGISTERED, subjects.MODEL_PROMOTED, subjects.MODEL_ROLLED_BACK)
PREDICTIONS_STREAM = "PREDICTIONS"
# Limits used only when this server has to create the stream itself: a day or 512 MiB, oldest
# dropped first, so a long local run cannot fill the disk.
STREAM_MAX_AGE_S = 24 * 3600
STREAM_MAX_BYTES = 512 * 1024 * 1024


class _ModelEvent(msgspec.Struct):
    model: str = ""


_decode_event = msgspec.json.Decoder(_ModelEvent).decode


async def ensure_streams(nc: Any, names: tuple[str, ...] = (PREDICTIONS_STREAM,)) -> list[str]:
    """Create the named JetStream streams that do not exist yet; returns the ones created."""
    from nats.js.api import DiscardPolicy, StorageType
    from nats.js.errors import NotFoundError

    js = nc.jetstream()
    created = []
    for name in names:
        try:
            await js.stream_info(name)
            continue
        except NotFoundError:
            pass
        await js.add_stream(name=name, subjects=list(subjects.STREAMS[name]),
                            storage=StorageType.FILE, max_age=STREAM_MAX_AGE_S,
                            max_bytes=STREAM_MAX_BYTES, discard=DiscardPolicy.OLD)
        created.append(name)
        log.info("created JetStream stream %s (%s)", name, ", ".join(subjects.STREAMS[name]))
    return created


class ModelEventListener:
    """Background NATS client of one model server (kind)."""

    def __init__(self, url: str, kind: str, on_model_event: Callable[[], None] | None,
                 model_names: tuple[str, ...] = (), ensure_stream: bool = True) -> None:
        self.url = url
        self.kind = kind
        self.on_model_event = on_model_event
        self.model_names = {kind, *model_names}
        self.ensure_stream = ensure_stream
        self.events_seen = 0
        self.stream_ready = False
        self._nc: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"model-events-{self.kind}")

    async def _run(self) -> None:
        async def on_error(exc: Exception) -> None:
            log.debug("nats (model events %s): %s", self.kind, exc)

        async def on_reconnect() -> None:
            # A NATS restarted on an empty store has lost its streams: put ours back.
            await self._ensure()

        self._nc = await connect_forever(self.url, f"model-server-{self.kind}-control", error_cb=on_error,
                                         reconnected_cb=on_reconnect)
        if self.on_model_event is not None:
            for subject in MODEL_EVENT_SUBJECTS:
                await self._nc.subscribe(subject, cb=self._on_message)
        await self._ensure()

    async def _ensure(self) -> None:
        if not self.ensure_stream or self._nc is None:
            return
        try:
            await ensure_streams(self._nc)
            self.stream_ready = True
        except Exception as exc:  # JetStream disabled, or another creator raced us
            log.warning("could not ensure the JetStream stream %s: %s (core NATS publishing still "
                        "works)", PREDICTIONS_STREAM, exc)

    async def _on_message(self, msg: Any) -> None:
        try:
            model = _decode_event(msg.data).model
        except msgspec.MsgspecError:
            log.debug("ignoring malformed model event on %s", msg.subject)
            return
        if model in self.model_names and self.on_model_event is not None:
            self.events_seen += 1
            self.on_model_event()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.drain()
