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
  or dropped (read from the bus at scrape time);
- `model_server_in_flight_requests{kind}`: requests being handled now;
- `model_server_model_info{kind,slot,model_version}`: 1 for the model each slot serves;
- `model_server_model_swaps_total{kind,slot,outcome}`: hot swaps done or failed.
Hot-path children are cached so a request pays a dict lookup, not `labels()`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Scoring takes tens of microseconds; the buckets resolve that and still show slow outliers.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                   0.5, 1.0, 2.5)


class _BusCollector(Collector):
    """Reads the event bus's batch counters when Prometheus scrapes (they live in the bus)."""

    def __init__(self, kind: str, read: Callable[[], tuple[int, int]]) -> None:
        self._kind = kind
        self._read = read

    def collect(self) -> Iterable[Metric]:
        published, dropped = self._read()
        fam = CounterMetricFamily("model_server_prediction_log_batches",
                                  "Prediction batches the event bus published to / dropped before NATS",
                                  labels=["kind", "outcome"])
        fam.add_metric([self._kind, "published"], published)
        fam.add_metric([self._kind, "dropped"], dropped)
        yield fam


class ServerMetrics:
    """All metrics of one model server app."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.latency = Histogram("model_server_request_latency_seconds",
                                 "Time spent in the request handler",
                                 ["kind", "slot", "endpoint"], registry=r, buckets=LATENCY_BUCKETS)
        self.requests = Counter("model_server_requests", "Requests handled, by outcome",
                                ["kind", "slot", "model_version", "endpoint", "status"], registry=r)
        self.predictions = Counter("model_server_predictions", "Predictions made, by class",
                                   ["kind", "slot", "model_version", "prediction"], registry=r)
        self.fallback = Counter("model_server_fallback_served",
                                "Predictions served for a cluster Envoy could not reach",
                                ["kind", "reason"], registry=r)
        self.log_records = Counter("model_server_prediction_log_records",
                                   "Prediction records queued for NATS or dropped (buffer full)",
                                   ["kind", "outcome"], registry=r)
        self.in_flight = Gauge("model_server_in_flight_requests", "Requests being handled now",
                               ["kind"], registry=r)
        self.model_info = Gauge("model_server_model_info", "1 for the model version a slot serves",
                                ["kind", "slot", "model_version"], registry=r)
        self.swaps = Counter("model_server_model_swaps", "Model hot swaps by outcome",
                             ["kind", "slot", "outcome"], registry=r)
        self._in_flight_n = 0
        self.in_flight.labels(kind).set_function(lambda: self._in_flight_n)
        self._records_queued = self.log_records.labels(kind, "queued")
        self._records_dropped = self.log_records.labels(kind, "dropped")
        self._cache: dict[tuple[str, ...], object] = {}

    # ---- hot path ----------------------------------------------------------------------------
    def enter(self) -> None:
        self._in_flight_n += 1

    def leave(self) -> None:
        self._in_flight_n -= 1

    @property
    def in_flight_now(self) -> int:
        return self._in_flight_n

    def observe(self, slot: str, endpoint: str, model_version: str, status: int, seconds: float) -> None:
        """Record one handled request."""
        key = ("r", slot, endpoint, model_version, str(status))
        pair = self._cache.get(key)
        if pair is None:
            pair = (self.latency.labels(self.kind, slot, endpoint),
                    self.requests.labels(self.kind, slot, model_version, endpoint, str(status)))
            self._cache[key] = pair
        hist, count = pair  # type: ignore[misc]
        hist.observe(seconds)
        count.inc()

    def predicted(self, slot: str, model_version: str, is_fraud: bool, n: int = 1) -> None:
        """Count predictions by class."""
        key = ("p", slot, model_version, "fraud" if is_fraud else "legit")
        child = self._cache.get(key)
        if child is None:
            child = self.predictions.labels(self.kind, slot, model_version, key[3])
            self._cache[key] = child
        child.inc(n)  # type: ignore[attr-defined]

    def fallback_served(self, reason: str) -> None:
        key = ("f", reason)
        child = self._cache.get(key)
        if child is None:
            child = self.fallback.labels(self.kind, reason)
            self._cache[key] = child
        child.inc()  # type: ignore[attr-defined]

    def records_queued(self, n: int) -> None:
        self._records_queued.inc(n)

    def records_dropped(self, n: int) -> None:
        self._records_dropped.inc(n)

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
        self.registry.register(_BusCollector(self.kind, read))

    def render(self) -> bytes:
        """The Prometheus text exposition of this server's registry."""
        return generate_latest(self.registry)
