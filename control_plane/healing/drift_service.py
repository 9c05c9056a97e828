"""DriftService: prediction batches from NATS in, one DriftReport per window out on mesh.drift.<model>.

- Input: `mesh.predictions.>` (PredictionBatch JSON). Only champion-slot, non-shadow records
  count: shadow and canary (challenger-slot) predictions come from another model version.
  With the JetStream stream PREDICTIONS present it reads through a durable pull consumer
  (`durable`, explicit acks, new messages only on first creation), so a restarted service
  resumes where it stopped; without it, a core NATS subscription, switched to JetStream as soon
  as the stream appears (batch ids dedupe the overlap).
- Reference: the champion's reference statistics per model, from `reference_lookup(model)`
  (default: the MLflow registry's `champion` alias). It is looked up again when records carry
  another model version (at most every `refresh_interval_s`) or when a model event arrives; the
  old detector's partial window is evaluated first if it is large enough.
- Output: each report is published with the EventBus (never blocks) and kept: `latest()`.
- A window older than `max_window_age_s` is evaluated early once it holds `min_window` records,
  so a quiet model still gets reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from control_plane.healing.drift import DEFAULT_ALPHA, DEFAULT_MIN_WINDOW, DEFAULT_WINDOW, DriftDetector
from data_plane.contracts import subjects
from data_plane.contracts.errors import MeshError
from data_plane.contracts.events import DriftReport, PredictionBatch
from data_plane.eventbus import EventBus, connect_forever
from data_plane.settings import Settings

log = logging.getLogger(__name__)

PREDICTIONS_SUBJECT = "mesh.predictions.>"
PREDICTIONS_STREAM = "PREDICTIONS"
MODEL_EVENTS = (subjects.MODEL_PROMOTED, subjects.MODEL_ROLLED_BACK, subjects.MODEL_REGISTERED)
_decode_batch = msgspec.json.Decoder(PredictionBatch).decode


@dataclass(frozen=True)
class ChampionReference:
    """What the detector compares against: the champion's label (as records carry it) and stats."""

    model_version: str  # e.g. "xgboost_v3"
    stats: Mapping[str, Any]


ReferenceLookup = Callable[[str], ChampionReference | None]  # may block: called in a thread


def registry_lookup(settings: Settings) -> ReferenceLookup:
    """The champion's reference stats from the MLflow registry (None for unregistered models)."""
    from data_plane.contracts.errors import ModelNotFoundError
    from data_plane.registry import MODEL_NAMES, Registry

    registry = Registry(settings)

    def lookup(model: str) -> ChampionReference | None:
        if model not in MODEL_NAMES:  # the heuristic has no training data to drift from
            return None
        try:
            loaded = registry.fetch(model, "champion")
        except ModelNotFoundError:
            return None
        return ChampionReference(loaded.label, loaded.reference_stats)

    return lookup


class DriftService:
    """Feeds a DriftDetector per model from NATS and publishes its reports (module docstring)."""

    def __init__(self, settings: Settings | None = None, *, nats_url: str | None = None,
                 reference_lookup: ReferenceLookup | None = None, bus: EventBus | None = None,
                 window_size: int = DEFAULT_WINDOW, min_window: int = DEFAULT_MIN_WINDOW,
                 alpha: float = DEFAULT_ALPHA, advisory_features: Iterable[str] = (),
                 max_window_age_s: float | None = 300.0, refresh_interval_s: float = 10.0,
                 durable: str = "drift-detector",
                 on_report: Callable[[DriftReport], None] | None = None) -> None:
        if settings is None and (nats_url is None or reference_lookup is None):
            raise MeshError("DriftService needs settings, or both nats_url and reference_lookup")
        self.nats_url = nats_url or settings.nats_url  # type: ignore[union-attr]
        self.lookup = reference_lookup or registry_lookup(settings)  # type: ignore[arg-type]
        self._own_bus = bus is None
        self.bus = bus or EventBus(self.nats_url, "drift-detector")
        self.detector_args: dict[str, Any] = {
            "window_size": window_size, "min_window": min_window, "alpha": alpha,
            "advisory_features": tuple(advisory_features)}
        self.max_window_age_s = max_window_age_s
        self.refresh_interval_s = refresh_interval_s
        self.durable = durable
        self.on_report = on_report
        self.mode = "starting"  # starting | core | jetstream
        self.counters = {"batches": 0, "records": 0, "reports": 0, "decode_errors": 0,
                         "duplicates": 0, "not_champion": 0, "no_reference": 0, "lookup_errors": 0}
        self._detectors: dict[str, DriftDetector] = {}
        self._latest: dict[str, DriftReport] = {}
        self._looked_up: dict[str, float] = {}  # model -> monotonic time of its last lookup
        self._seen: deque[str] = deque(maxlen=4096)
        self._seen_set: set[str] = set()
        self._nc: Any = None
        self._core_sub: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._lock = asyncio.Lock()  # one batch at a time: detectors are not re-entrant
        self._ready = asyncio.Event()

    # ---- public ---------------------------------------------------------------------------------
    def latest(self) -> dict[str, DriftReport]:
        """The most recent report per model (for the operator API)."""
        return dict(self._latest)

    def status(self) -> dict[str, Any]:
        """Counters and per-model window progress (JSON-friendly)."""
        models = {m: {"model_version": d.model_version, "pending": d.pending, "window_size": d.window_size,
                      "windows": d.windows, "accepted": d.accepted, "skipped": dict(d.skipped)}
                  for m, d in self._detectors.items()}
        return {"mode": self.mode, **self.counters, "models": models}

    async def start(self) -> None:
        """Connect (retrying in the background) and start consuming."""
        if self._own_bus:
            await self.bus.start()
        self._tasks.append(asyncio.create_task(self._run(), name="drift-consume"))
        if self.max_window_age_s:
            self._tasks.append(asyncio.create_task(self._age_loop(), name="drift-age"))

    async def wait_ready(self) -> None:
        """Wait until the service is subscribed (core or JetStream); wrap in a timeout."""
        await self._ready.wait()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.drain()
        if self._own_bus:
            await self.bus.close()

    async def handle_batch(self, data: bytes) -> list[DriftReport]:
        """Process one PredictionBatch payload; returns the reports it completed."""
        try:
            batch = _decode_batch(data)
        except msgspec.MsgspecError:
            self.counters["decode_errors"] += 1
            return []
        async with self._lock:
            if batch.id in self._seen_set:
                self.counters["duplicates"] += 1
                return []
            self._remember(batch.id)
            self.counters["batches"] += 1
            reports = []
            for rec in batch.records:
                self.counters["records"] += 1
                if rec.shadow or rec.slot != "champion":  # shadow and canary traffic: other models
                    self.counters["not_champion"] += 1
                    continue
                det = self._detectors.get(rec.model)
                if det is None or det.model_version != rec.model_version:
                    det = await self._refresh(rec.model, rec.model_version)
                    if det is None:
                        self.counters["no_reference"] += 1
                        continue
                report = det.add(rec)
                if report is not None:
                    reports.append(report)
                    self._emit(report)
            return reports

    # ---- reference lookup -------------------------------------------------------------------------
    async def _refresh(self, model: str, seen_version: str, force: bool = False) -> DriftDetector | None:
        """The detector for `model`, looked up again when due; None while there is no reference."""
        det = self._detectors.get(model)
        now = time.monotonic()
        last = self._looked_up.get(model)
        if not force and last is not None and now - last < self.refresh_interval_s:
            return det  # not due: a mismatched version is skipped (counted) by the detector
        self._looked_up[model] = now
        try:
            ref = await asyncio.to_thread(self.lookup, model)
        except Exception as exc:  # registry down: keep the old detector, try again later
            self.counters["lookup_errors"] += 1
            log.warning("drift: reference lookup for %s failed: %s", model, exc)
            return det
        if ref is None:
            return det
        if det is not None and det.model_version == ref.model_version:
            return det
        if det is not None:
            report = det.flush()
            if report is not None:
                self._emit(report)
        try:
            det = DriftDetector(ref.stats, model, ref.model_version, **self.detector_args)
        except MeshError as exc:
            self.counters["lookup_errors"] += 1
            log.error("drift: %s %s has unusable reference stats: %s", model, ref.model_version, exc)
            self._detectors.pop(model, None)
            return None
        self._detectors[model] = det
        log.info("drift: watching %s %s (saw %s)", model, ref.model_version, seen_version)
        return det

    # ---- NATS -------------------------------------------------------------------------------------
    async def _run(self) -> None:
        if self._nc is None:
            self._nc = await connect_forever(self.nats_url, "drift-detector")
        for subject in MODEL_EVENTS:
            await self._nc.subscribe(subject, cb=self._on_model_event)
        while True:
            psub = await self._jetstream_subscription()
            if psub is None:
                if self._core_sub is None:
                    self._core_sub = await self._nc.subscribe(PREDICTIONS_SUBJECT, cb=self._on_core)
                    self.mode = "core"
                    self._ready.set()
                await asyncio.sleep(self.refresh_interval_s)  # look for the stream again later
                continue
            if self._core_sub is not None:
                with contextlib.suppress(Exception):
                    await self._core_sub.unsubscribe()
                self._core_sub = None
            self.mode = "jetstream"
            self._ready.set()
            await self._consume(psub)

    async def _jetstream_subscription(self) -> Any:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        js = self._nc.jetstream()
        try:
            await js.stream_info(PREDICTIONS_STREAM)
        except Exception:  # no stream, or JetStream disabled
            return None
        config = ConsumerConfig(deliver_policy=DeliverPolicy.NEW, ack_policy=AckPolicy.EXPLICIT,
                                ack_wait=30, max_ack_pending=10_000)
        try:
            return await js.pull_subscribe(PREDICTIONS_SUBJECT, durable=self.durable,
                                           stream=PREDICTIONS_STREAM, config=config)
        except Exception as exc:
            log.warning("drift: cannot create the durable consumer %s: %s", self.durable, exc)
            return None

    async def _consume(self, psub: Any) -> None:
        """Fetch and process until the consumer fails for good (then the caller re-subscribes)."""
        from nats.errors import TimeoutError as NatsTimeout

        failures = 0
        while failures < 5:
            try:
                msgs = await psub.fetch(batch=64, timeout=1.0)
            except (TimeoutError, NatsTimeout):
                continue
            except Exception as exc:  # disconnected, consumer deleted, stream gone
                failures += 1
                log.debug("drift: fetch failed (%d): %s", failures, exc)
                await asyncio.sleep(0.5 * failures)
                continue
            failures = 0
            for msg in msgs:
                await self.handle_batch(msg.data)
                with contextlib.suppress(Exception):
                    await msg.ack()
        with contextlib.suppress(Exception):
            await psub.unsubscribe()

    async def _on_core(self, msg: Any) -> None:
        await self.handle_batch(msg.data)

    async def _on_model_event(self, msg: Any) -> None:
        # A promotion or rollback moves `champion`: look the reference up again on the next record.
        self._looked_up.clear()

    # ---- helpers ----------------------------------------------------------------------------------
    async def _age_loop(self) -> None:
        assert self.max_window_age_s
        period = max(0.05, min(5.0, self.max_window_age_s / 4))
        while True:
            await asyncio.sleep(period)
            async with self._lock:
                now = time.monotonic()
                for det in list(self._detectors.values()):
                    started = det.window_started
                    if started is not None and now - started >= self.max_window_age_s:
                        report = det.flush()
                        if report is not None:
                            self._emit(report)

    def _emit(self, report: DriftReport) -> None:
        self._latest[report.model] = report
        self.counters["reports"] += 1
        self.bus.publish(subjects.drift(report.model), report)
        if self.on_report is not None:
            try:
                self.on_report(report)
            except Exception:
                log.exception("drift: on_report callback failed")
        if report.level != "none":
            log.info("drift %s %s: %s (max PSI %.3f)", report.model, report.model_version, report.level,
                     report.max_psi)

    def _remember(self, batch_id: str) -> None:
        if len(self._seen) == self._seen.maxlen:
            self._seen_set.discard(self._seen[0])
        self._seen.append(batch_id)
        self._seen_set.add(batch_id)
