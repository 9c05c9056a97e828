"""Every prediction goes to NATS as a PredictionRecord, in PredictionBatch messages.

The request path only appends a record to a list (O(1), no I/O, no await). A batch ships when it
reaches `batch_records` or every `flush_interval` seconds, into the EventBus's bounded buffer;
the bus publishes in the background. While NATS is away the bus keeps what fits and the rest is
dropped and counted (`model_server_prediction_log_records_total{outcome="dropped"}`): predictions
are never delayed or failed for the log's sake.

Primary traffic goes to `mesh.predictions.<kind>`, mirrored traffic to `mesh.shadow.<kind>`; both
are in the JetStream stream PREDICTIONS when it exists (see `model_events.ensure_streams`).
Without the stream, core NATS subscribers still receive them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid

from data_plane.contracts import subjects
from data_plane.contracts.events import PredictionBatch, PredictionRecord
from data_plane.eventbus import EventBus
from model_servers.metrics import ServerMetrics

log = logging.getLogger(__name__)


class PredictionLog:
    """Batches prediction records for one model kind onto an EventBus (or drops them if none)."""

    def __init__(self, bus: EventBus | None, kind: str, metrics: ServerMetrics,
                 batch_records: int = 256, flush_interval: float = 0.05) -> None:
        self.bus = bus
        self.kind = kind
        self.metrics = metrics
        self.batch_records = batch_records
        self.flush_interval = flush_interval
        self._subjects = (subjects.predictions(kind), subjects.shadow(kind))
        self._pending: list[list[PredictionRecord]] = [[], []]  # [primary, shadow]
        # Record ids: unique per process without a uuid4 per record (that costs ~2 us).
        self._id_prefix = uuid.uuid4().hex[:12] + "-"
        self._ids = itertools.count(1)
        self._task: asyncio.Task[None] | None = None

    def next_id(self) -> str:
        return self._id_prefix + str(next(self._ids))

    def add(self, record: PredictionRecord) -> None:
        """Queue one record. Never blocks, never raises."""
        pending = self._pending[1 if record.shadow else 0]
        pending.append(record)
        if len(pending) >= self.batch_records:
            self._ship(1 if record.shadow else 0)

    def _ship(self, which: int) -> None:
        records = self._pending[which]
        if not records:
            return
        self._pending[which] = []
        n = len(records)
        bus = self.bus
        if bus is None:
            self.metrics.records_dropped(n)
            return
        before = bus.dropped
        bus.publish(self._subjects[which], PredictionBatch(records=records))
        # EventBus.publish drops (and counts) synchronously when its buffer is full.
        if bus.dropped != before:
            self.metrics.records_dropped(n)
        else:
            self.metrics.records_queued(n)

    def flush(self) -> None:
        """Ship whatever is pending now."""
        self._ship(0)
        self._ship(1)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"prediction-log-{self.kind}")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            try:
                self.flush()
            except Exception:  # a log bug must never stop the flusher
                log.exception("prediction log flush failed")

    async def close(self) -> None:
        """Stop the timer and ship what is pending (the bus flushes it on its own close)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.flush()
