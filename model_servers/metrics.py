"""Prometheus metrics of one model server, in a registry of its own (one per app, so tests and
several apps in one process never share counters).

Names (all carry `kind`, the server's model kind):
- `model_server_request_latency_seconds{kind,slot,endpoint}`: histogram of handler time;
- `model_server_requests_total{kind,slot,model_version,endpoint,status}`: requests by outcome;
- `model_server_predictions_total{kind,slot,model_version,prediction}`: prediction = fraud|legit;
- `model_server_fallback_served_total{kind,reason}`: answers given for another cluster
  (`x-mesh-intended` named a different one);
- `model_server_prediction_log_records_total{kind,outcome}`: prediction records queued for NATS
  or dropped because the bounded buffer was full (NATS away);
- `model_server_prediction_log_batches_total{kind,outcome}`: batches the event bus published
  or dropped;
- `model_server_in_flight_requests{kind}`: requests being handled now;
- `model_server_model_info{kind,slot,model_version}`: 1 for the model each slot serves;
- `model_server_model_swaps_total{kind,slot,outcome}`: hot swaps done or failed;
- `model_server_model_calls_total{kind}` / `model_server_model_call_rows_total{kind}`: ML kinds'
  one-row predictions, micro-batched: rows / calls is the mean batch.

Why not prometheus_client's Counter/Histogram on the hot path: each update takes a lock and a
label lookup (~1-2 us, several per request, measured as ~8 % of a request's CPU). The server
runs its handlers on one event loop thread, so the per-request numbers are plain ints in dicts,
turned into metric families only when Prometheus scrapes.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Scoring takes tens of microseconds; the buckets resolve that and still show slow outliers.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                   0.5, 1.0, 2.5)


class _Histogram:
    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)  # last = above the largest bucket
        self.total = 0.0

    def cumulative(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, n in zip((*map(str, LATENCY_BUCKETS), "+Inf"), self.counts, strict=True):
            running += n
            out.append((bound, float(running)))
        return out


def _single(name: str, doc: str, kind: str, value: float) -> CounterMetricFamily:
    fam = CounterMetricFamily(name, doc, labels=["kind"])
    fam.add_metric([kind], value)
    return fam


class _HotPathCollector(Collector):
    """Exposes the ServerMetrics' plain counters at scrape time."""

    def __init__(self, m: ServerMetrics) -> None:
        self._m = m

    def collect(self) -> Iterable[Metric]:
        m, kind = self._m, self._m.kind
        lat = HistogramMetricFamily("model_server_request_latency_seconds",
                                    "Time spent in the request handler",
                                    labels=["kind", "slot", "endpoint"])
        for (slot, endpoint), h in list(m.latency.items()):
            lat.add_metric([kind, slot, endpoint], h.cumulative(), h.total)
        yield lat
        req = CounterMetricFamily("model_server_requests", "Requests handled, by outcome",
                                  labels=["kind", "slot", "model_version", "endpoint", "status"])
        for (slot, endpoint, mv, status), n in list(m.requests.items()):
            req.add_metric([kind, slot, mv, endpoint, str(status)], n)
        yield req
        pred = CounterMetricFamily("model_server_predictions", "Predictions made, by class",
                                   labels=["kind", "slot", "model_version", "prediction"])
        for (slot, mv, fraud), n in list(m.predictions.items()):
            pred.add_metric([kind, slot, mv, "fraud" if fraud else "legit"], n)
        yield pred
        fb = CounterMetricFamily("model_server_fallback_served",
                                 "Predictions served for a cluster Envoy could not reach",
                                 labels=["kind", "reason"])
        for reason, n in list(m.fallbacks.items()):
            fb.add_metric([kind, reason], n)
        yield fb
        rec = CounterMetricFamily("model_server_prediction_log_records",
                                  "Prediction records queued for NATS or dropped (buffer full)",
                                  labels=["kind", "outcome"])
        rec.add_metric([kind, "queued"], m.records_queued_n)
        rec.add_metric([kind, "dropped"], m.records_dropped_n)
        yield rec
        if m.bus_counts is not None:
            published, dropped = m.bus_counts()
            bat = CounterMetricFamily("model_server_prediction_log_batches",
                                      "Prediction batches the event bus published / dropped",
                                      labels=["kind", "outcome"])
            bat.add_metric([kind, "published"], published)
            bat.add_metric([kind, "dropped"], dropped)
            yield bat
        if m.batch_counts is not None:
            calls, rows = m.batch_counts()
            yield _single("model_server_model_calls", "Model calls made for one-row predictions "
                          "(micro-batched: several requests per call)", kind, calls)
            yield _single("model_server_model_call_rows", "Rows scored by those calls", kind, rows)
        inflight = GaugeMetricFamily("model_server_in_flight_requests", "Requests being handled now",
                                     labels=["kind"])
        inflight.add_metric([kind], m.in_flight_now)
        yield inflight


class ServerMetrics:
    """All metrics of one model server app. Hot-path methods are called on the event loop only."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.registry = CollectorRegistry(auto_describe=True)
        self.latency: dict[tuple[str, str], _Histogram] = {}
        self.requests: dict[tuple[str, str, str, int], int] = {}
        self.predictions: dict[tuple[str, str, bool], int] = {}
        self.fallbacks: dict[str, int] = {}
        self.records_queued_n = 0
        self.records_dropped_n = 0
        self.in_flight_now = 0
        self.bus_counts: Callable[[], tuple[int, int]] | None = None
        self.batch_counts: Callable[[], tuple[int, int]] | None = None
        self.registry.register(_HotPathCollector(self))
        # Rare events: plain prometheus_client metrics are fine here.
        self.model_info = Gauge("model_server_model_info", "1 for the model version a slot serves",
                                ["kind", "slot", "model_version"], registry=self.registry)
        self.swaps = Counter("model_server_model_swaps", "Model hot swaps by outcome",
                             ["kind", "slot", "outcome"], registry=self.registry)

    # ---- hot path ----------------------------------------------------------------------------
    def enter(self) -> None:
        self.in_flight_now += 1

    def leave(self) -> None:
        self.in_flight_now -= 1

    def observe(self, slot: str, endpoint: str, model_version: str, status: int, seconds: float) -> None:
        """Record one handled request: its outcome and how long the handler took."""
        key = (slot, endpoint, model_version, status)
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        h = self.latency.get((slot, endpoint))
        if h is None:
            h = self.latency[(slot, endpoint)] = _Histogram()
        h.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        h.total += seconds

    def predicted(self, slot: str, model_version: str, is_fraud: bool, n: int = 1) -> None:
        """Count predictions by class."""
        key = (slot, model_version, is_fraud)
        self.predictions[key] = self.predictions.get(key, 0) + n

    def fallback_served(self, reason: str) -> None:
        self.fallbacks[reason] = self.fallbacks.get(reason, 0) + 1

    def records_queued(self, n: int) -> None:
        self.records_queued_n += n

    def records_dropped(self, n: int) -> None:
        self.records_dropped_n += n

    # ---- model lifecycle ---------------------------------------------------------------------
    def model_loaded(self, slot: str, model_version: str | None, previous: str | None) -> None:
        """Point `model_info` at the slot's new version."""
        if previous is not None:
            try:
                self.model_info.remove(self.kind, slot, previous)
            except KeyError:
                pass
        if model_version is not None:
            self.model_info.labels(self.kind, slot, model_version).set(1)

    def swap(self, slot: str, outcome: str) -> None:
        self.swaps.labels(self.kind, slot, outcome).inc()

    def watch_bus(self, read: Callable[[], tuple[int, int]]) -> None:
        """Expose the event bus's (published, dropped) batch counters."""
        self.bus_counts = read

    def watch_batcher(self, read: Callable[[], tuple[int, int]]) -> None:
        """Expose the micro-batcher's (model calls, rows scored) counters."""
        self.batch_counts = read

    def render(self) -> bytes:
        """The Prometheus text exposition of this server's registry."""
        return generate_latest(self.registry)
