"""Delayed ground truth for generated traffic: own request ids, and `Label` events after a delay.

With labels on, every request carries an `x-request-id` the generator made (`<run>-<n>`); the edge
keeps it (HCM `preserve_external_request_id`), so the model server logs the prediction under it.
When a request is answered (2xx), its true label (the synthetic generator knows it) goes into a
`LabelFeed` and is published on `mesh.labels` once `delay_s` has passed, like a chargeback
arriving later. Publishing goes through `EventBus` (bounded, never blocks the sender); labels
still pending when the run ends are published as they come due (`finish()`), or dropped and
counted if the caller stops waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from data_plane.contracts import subjects
from data_plane.contracts.events import Label
from data_plane.eventbus import EventBus
from data_plane.load.payloads import Payload, _payload
from data_plane.load.targets import MAX_CARDS, LoadTargetError
from data_plane.synthetic import LabelFeed

MAX_LABEL_DELAY_S = 24 * 3600.0
# Labelled runs feed the retrain worker: every request should be a fresh row, since repeated rows
# make its training set duplicates and put training rows into its holdout (16,384 = 3.4 min at 80/s).
LABELLED_PAYLOADS = 16_384
_TICK_S = 0.1
Send = Callable[[int, str | None], Awaitable[tuple[int, bytes]]]


def labelled_payloads(seed: int = 0, scenario: str | None = None, cards: int = 0,
                      count: int = LABELLED_PAYLOADS) -> tuple[list[Payload], list[bool]]:
    """Like `synthetic_payloads`, plus each body's true label (the generator's ground truth)."""
    from data_plane.synthetic import SCENARIOS, iter_labelled

    if scenario is not None and scenario not in SCENARIOS:
        raise LoadTargetError(f"--scenario {scenario!r} is unknown; choose one of: {', '.join(SCENARIOS)}")
    if not 0 <= cards <= MAX_CARDS:
        raise LoadTargetError(f"--cards must be between 0 and {MAX_CARDS} (got {cards})")
    if count < 1:
        raise LoadTargetError(f"payload count must be at least 1 (got {count})")
    pairs = list(itertools.islice(iter_labelled(seed, scenario, cards=cards), count))
    return [_payload(b, with_card_header=cards > 0) for b, _ in pairs], [bool(y) for _, y in pairs]


class LabelSender:
    """Names each request and publishes its true label `delay_s` after it was answered."""

    def __init__(self, truths: Sequence[bool], bus: EventBus, delay_s: float,
                 run_id: str | None = None) -> None:
        if not 0 <= delay_s <= MAX_LABEL_DELAY_S:
            raise LoadTargetError(f"--label-delay must be between 0 and {MAX_LABEL_DELAY_S:g} s "
                                  f"(got {delay_s:g})")
        self.truths = list(truths)
        self.bus = bus
        self.delay_s = delay_s
        self.run_id = run_id or f"load-{uuid.uuid4().hex[:12]}"
        self.feed = LabelFeed(delay_s=delay_s)
        self._numbers = itertools.count(1)
        self._task: asyncio.Task[None] | None = None
        self.answered = 0
        self.published = 0

    def wrap(self, send: Send) -> Callable[[int], Awaitable[tuple[int, bytes]]]:
        """A send function for the engine: the request gets its id; a 2xx answer queues its label."""
        async def labelled(index: int) -> tuple[int, bytes]:
            rid = f"{self.run_id}-{next(self._numbers)}"
            status, body = await send(index, rid)
            if 200 <= status < 300:
                self.answered += 1
                self.feed.add(rid, self.truths[index % len(self.truths)], time.time())
            return status, body
        return labelled

    async def start(self) -> None:
        """Start the bus (the sender owns it) and the publisher of due labels."""
        await self.bus.start()
        self._task = asyncio.create_task(self._publish_due(), name="label-sender")

    def publish_due(self, now: float | None = None) -> int:
        """Publish every label whose delay has passed; returns how many."""
        due = self.feed.due(time.time() if now is None else now)
        for label in due:
            self.bus.publish(subjects.LABELS, Label(request_id=label.request_id, is_fraud=label.is_fraud))
        self.published += len(due)
        return len(due)

    async def _publish_due(self) -> None:
        while True:
            self.publish_due()
            await asyncio.sleep(_TICK_S)

    @property
    def pending(self) -> int:
        return len(self.feed)

    async def finish(self, keep_waiting: Callable[[], bool] = lambda: True,
                     limit_s: float | None = None) -> None:
        """Publish what is pending as it comes due (while `keep_waiting()`, at most `limit_s`,
        default the delay), then drain the bus. Labels left over are dropped (see `dropped`)."""
        deadline = time.monotonic() + (self.delay_s + 1.0 if limit_s is None else limit_s)
        while self.pending and keep_waiting() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(_TICK_S)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.publish_due()
        # A short run may end before the bus has connected: give it a moment to deliver.
        connect_by = time.monotonic() + 2.0
        while not self.bus.connected and time.monotonic() < connect_by:  # noqa: ASYNC110 - nats-py state
            await asyncio.sleep(_TICK_S)
        await self.bus.close()

    @property
    def dropped(self) -> int:
        """Labels never handed to NATS: still pending at the end, or dropped by the bus."""
        return self.pending + self.bus.dropped

    def summary(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "delay_s": self.delay_s, "answered": self.answered,
                "published": self.published, "pending": self.pending,
                "bus_published": self.bus.published, "bus_dropped": self.bus.dropped}
