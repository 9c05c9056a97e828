"""The experiment's own client traffic: a bounded open-loop load through the edge Envoy.

It runs data_plane.load's engine on an event loop in a background thread (Chaos Toolkit activities
are plain blocking calls) and keeps one small record per answer with its wall-clock time, so probes
can ask "error rate / p99 / who answered, between these two instants" for any window of the run.
With `label_delay_s`, it is `meshctl load --labels`: every request carries its own id and its true
label goes to `mesh.labels` that long after the answer (the retrain worker and the canary's label
verdict need them).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import msgspec

from data_plane.eventbus import EventBus
from data_plane.load import LoadEngine, LoadPlan, synthetic_payloads
from data_plane.load.labels import LabelSender, labelled_payloads
from data_plane.load.results import CANCELLED, Tally

MAX_RECORDS = 600_000  # at the 500 rps cap: 20 minutes of answers
LABEL_FINISH_S = 5.0  # a stopped labelled load publishes what comes due within this long, drops the rest


class _Reply(msgspec.Struct):
    routed_to: str | None = None
    model_type: str | None = None
    model_version: str | None = None
    fallback_reason: str | None = None


_decode = msgspec.json.Decoder(_Reply).decode


@dataclass(frozen=True)
class Answer:
    """One request's outcome: when it ended, whether the client saw success, and who answered."""

    at: float  # time.time() when it completed
    ok: bool  # a 2xx with a decodable body
    status: int  # 0 when no HTTP answer came (refused, reset, timeout)
    latency_ms: float
    model_type: str
    routed_to: str
    fallback_reason: str
    model_version: str = "none"


class RecordingTally(Tally):
    """The engine's tally, plus one timestamped `Answer` per completed request."""

    def __init__(self) -> None:
        super().__init__()
        self.answers: deque[Answer] = deque(maxlen=MAX_RECORDS)

    def response(self, status: int, body: bytes, latency_ns: int) -> None:
        super().response(status, body, latency_ns)
        reply = _Reply()
        ok = 200 <= status < 300
        if ok:
            try:
                reply = _decode(body)
            except msgspec.DecodeError:
                ok = False
        self.answers.append(Answer(time.time(), ok, status, latency_ns / 1e6, reply.model_type or "none",
                                   reply.routed_to or "none", reply.fallback_reason or "none",
                                   reply.model_version or "none"))

    def error(self, kind: str) -> None:
        super().error(kind)
        if kind != CANCELLED:  # requests cut short by our own stop are not the mesh's fault
            self.answers.append(Answer(time.time(), False, 0, 0.0, f"error:{kind}", "none", "none"))


@dataclass(frozen=True)
class Window:
    """What the client saw in one time window."""

    requests: int
    errors: int
    p50_ms: float
    p99_ms: float
    model_types: dict[str, int]
    routed_to: dict[str, int]
    fallback_reasons: dict[str, int]
    model_versions: dict[str, int] = field(default_factory=dict)

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "errors": self.errors, "error_rate": round(self.error_rate, 6),
                "p50_ms": round(self.p50_ms, 3), "p99_ms": round(self.p99_ms, 3),
                "model_types": self.model_types, "model_versions": self.model_versions,
                "routed_to": self.routed_to, "fallback_reasons": self.fallback_reasons}


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, max(0, round(q / 100.0 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


class BackgroundLoad:
    """One load run in its own thread; `window()` summarises any slice of it, live."""

    def __init__(self, url: str, rate: float, duration_s: float, *, scenario: str | None = None,
                 seed: int = 0, timeout_s: float = 5.0, label_delay_s: float | None = None,
                 nats_url: str | None = None) -> None:
        self.plan = LoadPlan(url=url, rate=rate, duration=duration_s, timeout=timeout_s)
        self.scenario = scenario
        self.seed = seed
        if label_delay_s is not None and not nats_url:
            raise ValueError("labels need the NATS URL they are published to")
        self.label_delay_s = label_delay_s
        self.nats_url = nats_url
        self.labels: LabelSender | None = None
        self.tally = RecordingTally()
        self.started_at = 0.0
        self._engine: LoadEngine | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self.result: dict[str, Any] | None = None
        self.failure: str | None = None

    def start(self) -> None:
        if self.label_delay_s is None:
            payloads = synthetic_payloads(seed=self.seed, scenario=self.scenario, count=2_000)
        else:
            assert self.nats_url is not None
            payloads, truths = labelled_payloads(seed=self.seed, scenario=self.scenario)
            self.labels = LabelSender(truths, EventBus(self.nats_url, "chaos-load-labels"),
                                      delay_s=self.label_delay_s)
        self._engine = LoadEngine(self.plan, payloads, labels=self.labels)
        self._engine.tally = self.tally  # same counters, plus the per-answer records
        self._thread = threading.Thread(target=self._main, name="chaos-load", daemon=True)
        self.started_at = time.time()
        self._thread.start()
        self._ready.wait(5.0)

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._ready.set()
        assert self._engine is not None
        try:
            self.result = loop.run_until_complete(self._run(self._engine)).to_dict()
        except Exception as exc:  # reported by the probes, never raised into a thread's void
            self.failure = f"{type(exc).__name__}: {exc}"
        finally:
            loop.close()

    async def _run(self, engine: LoadEngine) -> Any:
        if self.labels is None:
            return await engine.run()
        await self.labels.start()
        try:
            return await engine.run()
        finally:  # labels still due when the run ends are published as they come due (bounded)
            await self.labels.finish(limit_s=min(self.labels.delay_s + 1.0, LABEL_FINISH_S))

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        """End the run now (in-flight requests get the engine's grace) and wait for the thread."""
        if self._engine is not None and self._loop is not None and self.running:
            with contextlib.suppress(RuntimeError):  # the loop closed between the check and the call
                self._loop.call_soon_threadsafe(self._engine.stop)
        if self._thread is not None:
            self._thread.join(timeout + (LABEL_FINISH_S + 1.0 if self.labels is not None else 0.0))

    def window(self, start: float | None = None, end: float | None = None) -> Window:
        """What the client saw between wall-clock `start` and `end` (None: open-ended)."""
        lo = start if start is not None else 0.0
        hi = end if end is not None else float("inf")
        picked = [a for a in list(self.tally.answers) if lo <= a.at <= hi]
        lat = sorted(a.latency_ms for a in picked if a.status)
        return Window(
            requests=len(picked), errors=sum(1 for a in picked if not a.ok),
            p50_ms=_percentile(lat, 50.0), p99_ms=_percentile(lat, 99.0),
            model_types=dict(Counter(a.model_type for a in picked)),
            routed_to=dict(Counter(a.routed_to for a in picked)),
            fallback_reasons=dict(Counter(a.fallback_reason for a in picked)),
            model_versions=dict(Counter(a.model_version for a in picked)))

    def stop_when_done(self, timeout: float) -> None:
        """Wait for the planned duration to finish (then stop, if it overran `timeout`)."""
        if self._thread is not None:
            self._thread.join(timeout)
        self.stop()
