"""Live traffic numbers for `GET /api/v1/traffic/summary` from the edge Envoy's counters.

`TrafficTracker` keeps one cumulative sample every `interval_s` (2 s) for `points` intervals
(300: 10 min); a summary over `window` seconds is the difference between the newest sample and the
one `window` seconds before it, and `history` is one point per consecutive pair.

Definitions (all over predict traffic through the edge):
- `requests`, `rps`: edge downstream requests minus those the `operator` cluster served.
- `p50_ms`, `p99_ms`: edge downstream request time (client's view, retries and failover included),
  with the operator cluster's upstream times taken out bucket by bucket. Envoy refreshes
  histograms when it flushes stats (bootstrap `stats_flush_interval`), so they lag by up to that.
- `error_rate`: share of requests the client got a 5xx for (Envoy turns "no upstream could answer"
  into a 200 conservative default, so this stays near 0 while the failover chain works).
- `upstream_error_rate`: failed attempts / attempts on the model clusters (what the edge saw).
- `fallback_share`: answers from the heuristic tier or the conservative default, over all answers.
  Conservative defaults are the 502/503/504 a route's target (a chain) ended with (the edge's
  local reply mapping and custom-response filter turn them into a 200); heuristic answers are the
  heuristic hosts' successes.
- `fraud_share`: share of answers flagged fraud: the model servers' champion-slot prediction
  counters (`model_server_predictions_total`) plus the conservative defaults (always fraud); None
  when no model server's /metrics answered.
- `clusters`: per model cluster `rq_total`, `rq_5xx` (failed attempts), `rps`, `timeouts`,
  `ejected` (hosts out now), `ejections` (new ejections in the window).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from control_plane.healing.envoy_admin import Histogram, counter_delta
from control_plane.healing.signals import EdgeSample

OPERATOR_CLUSTER = "operator"
HEURISTIC = "heuristic"


@dataclass(frozen=True)
class TrafficSample:
    edge: EdgeSample
    # model server /metrics URL -> cumulative (fraud, legit) champion-slot predictions; servers
    # that did not answer are absent
    models: Mapping[str, tuple[int, int]] = field(default_factory=dict)


def _fraud_counts(new: TrafficSample, old: TrafficSample | None) -> tuple[int, int] | None:
    """(fraud, legit) predictions between two samples, over the servers present in both."""
    if not new.models:
        return None
    fraud = legit = 0
    for url, (f_new, l_new) in new.models.items():
        before = old.models.get(url) if old is not None else None
        if before is None:
            if old is not None:
                continue  # the server was not seen at the window's start: no baseline
            before = (0, 0)
        if f_new < before[0] or l_new < before[1]:  # it restarted: its counters began again
            before = (0, 0)
        fraud, legit = fraud + f_new - before[0], legit + l_new - before[1]
    return fraud, legit


def _route_clusters(counters: Mapping[str, int]) -> set[str]:
    """Clusters a route names (they carry upstream_rq_completed), minus the operator's."""
    out = set()
    for name in counters:
        if name.startswith("cluster.") and name.endswith(".upstream_rq_completed"):
            cluster = name[len("cluster."):-len(".upstream_rq_completed")]
            if cluster != OPERATOR_CLUSTER and cluster != "xds":
                out.add(cluster)
    return out


def _sum_delta(new: Mapping[str, int], old: Mapping[str, int] | None, names: Sequence[str]) -> int:
    return sum(counter_delta(new, old, n) for n in names)


def _hist_delta(new: EdgeSample, old: EdgeSample | None, name: str) -> Histogram | None:
    h = new.histograms.get(name)
    if h is None:
        return None
    return h.minus(old.histograms.get(name) if old is not None else None)


def _client_latency(new: EdgeSample, old: EdgeSample | None, prefix: str) -> Histogram | None:
    down = _hist_delta(new, old, f"http.{prefix}.downstream_rq_time")
    if down is None:
        return None
    op = _hist_delta(new, old, f"cluster.{OPERATOR_CLUSTER}.upstream_rq_time")
    if op is None or op.bounds != down.bounds:
        return down
    counts = [max(0, a - b) for a, b in zip(down.counts, op.counts, strict=True)]
    for i in range(1, len(counts)):
        counts[i] = max(counts[i], counts[i - 1])
    return Histogram(down.bounds, tuple(counts))


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def _rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def traffic_numbers(new: TrafficSample, old: TrafficSample | None, prefix: str = "edge") -> dict[str, Any]:
    """The summary numbers between two samples (old None: since Envoy started)."""
    n, o = new.edge, old.edge if old is not None else None
    c_new, c_old = n.counters, o.counters if o is not None else None
    span = n.mono - o.mono if o is not None else 0.0
    requests = max(0, counter_delta(c_new, c_old, f"http.{prefix}.downstream_rq_completed")
                   - counter_delta(c_new, c_old, f"cluster.{OPERATOR_CLUSTER}.upstream_rq_completed"))
    client_5xx = max(0, counter_delta(c_new, c_old, f"http.{prefix}.downstream_rq_5xx")
                     - counter_delta(c_new, c_old, f"cluster.{OPERATOR_CLUSTER}.upstream_rq_5xx"))
    routes = sorted(_route_clusters(c_new))
    answers = _sum_delta(c_new, c_old, [f"cluster.{r}.upstream_rq_completed" for r in routes])
    # A route target (chain) that ended in 502/503/504 (its own or Envoy's local reply) was turned
    # into the conservative default (local_reply_config / custom-response filter); a 500 passes.
    defaults = _sum_delta(c_new, c_old, [f"cluster.{r}.upstream_rq_{code}" for r in routes
                                         for code in (502, 503, 504)])
    retries = _sum_delta(c_new, c_old, [f"cluster.{r}.upstream_rq_retry" for r in routes])
    clusters: dict[str, dict[str, Any]] = {}
    attempts = failed = 0
    for name, host in sorted(n.hosts.items()):
        before = o.hosts.get(name) if o is not None else None
        base = before if before is not None and before.attempts <= host.attempts else None
        rq = host.attempts - (base.attempts if base else 0)
        err = max(0, host.error - (base.error if base else 0))
        attempts, failed = attempts + rq, failed + err
        clusters[name] = {
            "rq_total": rq, "rq_5xx": err, "rps": _rounded(_ratio(rq, span), 2),
            "timeouts": max(0, host.timeout - (base.timeout if base else 0)),
            "ejected": 1 if host.ejected else 0,
            "ejections": counter_delta(c_new, c_old,
                                       f"cluster.{name}.outlier_detection.ejections_enforced_total"),
        }
    heuristic = clusters.get(HEURISTIC, {})
    heuristic_answers = heuristic.get("rq_total", 0) - heuristic.get("rq_5xx", 0)
    latency = _client_latency(n, o, prefix)
    counts = _fraud_counts(new, old)
    fraud_share = _ratio(counts[0] + defaults, counts[0] + counts[1] + defaults) if counts else None
    return {
        "span_s": round(span, 3),
        "requests": requests,
        "rps": _rounded(_ratio(requests, span), 2),
        "p50_ms": _rounded(latency.quantile(0.50) if latency else None, 3),
        "p99_ms": _rounded(latency.quantile(0.99) if latency else None, 3),
        "latency_samples": latency.total if latency else 0,
        "error_rate": _rounded(_ratio(client_5xx, requests)),
        "upstream_error_rate": _rounded(_ratio(failed, attempts)),
        "fallback_share": _rounded(_ratio(max(0, heuristic_answers) + defaults, answers)),
        "fallback": {"heuristic": max(0, heuristic_answers), "conservative_default": defaults},
        "fraud_share": _rounded(fraud_share),
        "retries": retries,
        "ejected": sum(c["ejected"] for c in clusters.values()),
        "clusters": clusters,
    }


HISTORY_FIELDS = ("rps", "p50_ms", "p99_ms", "error_rate", "upstream_error_rate", "fallback_share",
                  "fraud_share", "ejected", "requests")


def parse_prediction_counts(text: str) -> tuple[int, int]:
    """(fraud, legit) champion-slot predictions from a model server's Prometheus text."""
    fraud = legit = 0
    for line in text.splitlines():
        if not line.startswith("model_server_predictions_total{"):
            continue
        labels, _, value = line.rpartition("} ")
        if 'slot="champion"' not in labels:
            continue
        try:
            count = int(float(value))
        except ValueError:
            continue
        if 'prediction="fraud"' in labels:
            fraud += count
        elif 'prediction="legit"' in labels:
            legit += count
    return fraud, legit


class TrafficTracker:
    """One sample per `interval_s` (from the collector's latest edge sample), `points` kept."""

    def __init__(self, metrics_urls: Sequence[str] = (), *, interval_s: float = 2.0, points: int = 300,
                 timeout_s: float = 0.5, http_prefix: str = "edge") -> None:
        self.metrics_urls = list(metrics_urls)
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.http_prefix = http_prefix
        self.samples: deque[TrafficSample] = deque(maxlen=points + 1)
        self.history: deque[dict[str, Any]] = deque(maxlen=points)
        self._session: aiohttp.ClientSession | None = None
        self._last_edge: EdgeSample | None = None  # the scrape the newest sample came from

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def tick(self, edge: EdgeSample | None) -> None:
        """Take a sample now from the collector's latest edge sample (skipped without one)."""
        if edge is None or edge is self._last_edge:
            return
        self._last_edge = edge
        self.add(TrafficSample(edge, await self._model_counts()))

    def add(self, sample: TrafficSample) -> None:
        previous = self.samples[-1] if self.samples else None
        self.samples.append(self._slim(sample))
        if previous is not None:
            numbers = traffic_numbers(sample, previous, self.http_prefix)
            point = {"ts": round(sample.edge.wall, 3), **{k: numbers[k] for k in HISTORY_FIELDS}}
            self.history.append(point)

    def _slim(self, sample: TrafficSample) -> TrafficSample:
        """The sample as kept for `points` intervals: only the two histograms the numbers read.

        A scrape holds every cluster's latency histogram (~20 buckets each, ~25 KB a sample); kept
        whole for 10 minutes that was ~8 MB of control-plane growth in the soak's first 10 minutes.
        """
        keep = (f"http.{self.http_prefix}.downstream_rq_time", f"cluster.{OPERATOR_CLUSTER}.upstream_rq_time")
        edge = sample.edge
        histograms = {k: edge.histograms[k] for k in keep if k in edge.histograms}
        slim = EdgeSample(edge.mono, edge.wall, edge.hosts, edge.counters, histograms)
        return TrafficSample(slim, sample.models)

    def summary(self, window_s: float) -> dict[str, Any]:
        """The numbers over the last `window_s` seconds plus the whole history."""
        if not self.samples:
            return {"window_s": window_s, "available": False, "history": []}
        newest = self.samples[-1]
        oldest = newest
        for s in reversed(self.samples):
            oldest = s
            if newest.edge.mono - s.edge.mono >= window_s - 1e-6:
                break
        numbers = traffic_numbers(newest, oldest if oldest is not newest else None, self.http_prefix)
        if oldest is newest:  # a single sample: no rates yet
            numbers.update(rps=None, requests=0)
        return {"window_s": window_s, "available": True, "as_of": round(newest.edge.wall, 3),
                "age_s": round(time.time() - newest.edge.wall, 3), **numbers,
                "history": list(self.history)}

    async def _model_counts(self) -> dict[str, tuple[int, int]]:
        if not self.metrics_urls:
            return {}
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                                                  connector=aiohttp.TCPConnector(force_close=True))
        texts = await asyncio.gather(*(self._get(u) for u in self.metrics_urls))
        return {url: parse_prediction_counts(text)
                for url, text in zip(self.metrics_urls, texts, strict=True) if text is not None}

    async def _get(self, url: str) -> str | None:
        assert self._session is not None
        try:
            async with self._session.get(url) as r:
                return await r.text() if r.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, OSError, UnicodeDecodeError):
            return None
