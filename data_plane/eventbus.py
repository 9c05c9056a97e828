"""Fire-and-forget NATS publishing that never blocks a request.

Producers call `publish()` (sync, O(1)); a background task flushes the bounded buffer in batches.
When NATS is down or the buffer is full, records are dropped and counted, never awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any

import msgspec

log = logging.getLogger(__name__)
_enc = msgspec.json.Encoder()


async def connect_forever(url: str, name: str, **options: Any) -> Any:
    """A NATS connection named `name`, retried (0.2 s doubling to 2 s) until the server answers.

    Every long-lived client of the mesh connects this way: the first connect is ours to retry (a
    process may start before NATS, or during an outage); after it nats-py reconnects on its own,
    forever. Its errors are logged at debug level: an outage is expected and counted elsewhere.
    `options` go to `nats.connect` (e.g. `connect_timeout`, `reconnected_cb`, `pending_size`).
    """
    import nats

    async def quiet(exc: Exception) -> None:
        log.debug("nats (%s): %s", name, exc)

    settings: dict[str, Any] = {"max_reconnect_attempts": -1, "reconnect_time_wait": 0.5,
                                "connect_timeout": 1, "allow_reconnect": True, "error_cb": quiet, **options}
    delay = 0.2
    while True:
        try:
            return await nats.connect(url, name=name, **settings)
        except Exception as exc:
            log.debug("nats connect failed (%s): %s", name, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


class EventBus:
    def __init__(self, url: str, name: str, max_buffer: int = 10_000,
                 flush_interval: float = 0.05, batch_size: int = 500) -> None:
        self.url = url
        self.name = name
        self.max_buffer = max_buffer
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self._buf: deque[tuple[str, bytes]] = deque()
        self._nc: Any = None
        self._task: asyncio.Task[None] | None = None
        self._connect_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.published = 0
        self.dropped = 0

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def start(self) -> None:
        self._connect_task = asyncio.create_task(self._connect_forever())
        self._task = asyncio.create_task(self._flush_loop())

    async def _connect_forever(self) -> None:
        self._nc = await connect_forever(self.url, self.name, pending_size=8 * 1024 * 1024)

    def publish(self, subject: str, event: Any) -> None:
        """Queue an event (a msgspec Struct, dict or bytes). Never blocks, never raises."""
        if len(self._buf) >= self.max_buffer:
            self.dropped += 1
            return
        data = event if isinstance(event, bytes) else _enc.encode(event)
        self._buf.append((subject, data))
        if len(self._buf) >= self.batch_size:
            self._wake.set()

    async def _flush_loop(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        if not self._buf:
            return
        if not self.connected:
            # Bounded buffer: keep what fits while NATS is away, drop the oldest beyond it.
            return
        nc = self._nc
        while self._buf:
            subject, data = self._buf.popleft()
            try:
                await nc.publish(subject, data)
                self.published += 1
            except Exception:
                self.dropped += 1
        with contextlib.suppress(Exception):
            await nc.flush(timeout=1)

    async def close(self) -> None:
        # nats-py's connect() can swallow a cancel, so never await a cancelled task unbounded.
        tasks = [t for t in (self._task, self._connect_task) if t]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        with contextlib.suppress(Exception):
            await self.flush()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.drain()
