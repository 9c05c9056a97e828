"""Envoy admin output -> plain numbers. Pure parsing, no I/O (the collector does the fetching).

Two documents of the edge Envoy's admin are read:

- `/clusters?format=json`: per host of every cluster, the host counters (`rq_success`, `rq_error`,
  `rq_timeout`, `cx_connect_fail`, `rq_active`) and health flags (`failed_outlier_check` while
  outlier detection ejects it). On the edge, these per-host numbers are the only per-*service*
  request counts: the router charges response codes and `upstream_rq_time` to the cluster the route
  named, i.e. the aggregate failover chain (`chain-xgboost`), not to the tier that answered.
  `rq_error` counts 5xx answers, connect failures and timeouts (every failed attempt).
- `/stats?format=json&histogram_buckets=cumulative&filter=...`: counters and gauges (`{"name",
  "value"}` entries; text stats such as `version_text` are skipped) and histograms with cumulative
  bucket counts (`{"histograms": [{"name", "buckets": [{"upper_bound", "cumulative"}]}]}`).

Envoy merges histograms into the admin view only when it flushes stats (`stats_flush_interval`,
5 s unless the bootstrap says otherwise), so latency numbers lag by up to one flush; counters and
the per-host numbers are live.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# Counters, gauges and histograms the healing loop and the traffic summary read; everything else
# stays in Envoy (the unfiltered edge /stats is ~170 KB, this is a few KB). RE2, partial match.
STATS_FILTER = (
    r"^cluster\.[^.]+\.(upstream_rq_(2xx|4xx|5xx|500|502|503|504|completed|retry|time)"
    r"|upstream_cx_none_healthy"
    r"|outlier_detection\.ejections_(active|enforced_total))$"
    r"|^http\.{prefix}\.downstream_rq_(2xx|4xx|5xx|completed|time)$"
)


def stats_query(http_prefix: str = "edge") -> dict[str, str]:
    """Query parameters of the filtered `/stats` request for the listener's HCM `stat_prefix`."""
    return {"format": "json", "histogram_buckets": "cumulative",
            "filter": STATS_FILTER.replace("{prefix}", http_prefix)}


@dataclass(frozen=True)
class Histogram:
    """Cumulative bucket counts of one Envoy histogram (values in ms for *_time stats)."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]  # samples <= bounds[i], cumulative

    @property
    def total(self) -> int:
        return self.counts[-1] if self.counts else 0

    def minus(self, older: Histogram | None) -> Histogram:
        """The samples recorded since `older` (itself when older is missing, reset or incompatible)."""
        if older is None or older.bounds != self.bounds or older.total > self.total:
            return self
        diff = [max(0, a - b) for a, b in zip(self.counts, older.counts, strict=True)]
        for i in range(1, len(diff)):  # keep it cumulative if a bucket went backwards
            diff[i] = max(diff[i], diff[i - 1])
        return Histogram(self.bounds, tuple(diff))

    def plus(self, other: Histogram | None) -> Histogram:
        if other is None or other.bounds != self.bounds:
            return self
        return Histogram(self.bounds, tuple(a + b for a, b in zip(self.counts, other.counts, strict=True)))

    def quantile(self, q: float) -> float | None:
        """The q-quantile (0..1), linear inside its bucket; None without samples.

        The threshold 500 ms (seed rule) and 250 ms (recovery) are bucket bounds of Envoy's default
        histogram, so "p95 > 500" is decided exactly by which bucket the rank falls in.
        """
        n = self.total
        if n <= 0:
            return None
        rank = q * n
        prev_bound, prev_count = 0.0, 0
        for bound, count in zip(self.bounds, self.counts, strict=True):
            if count >= rank and count > prev_count:
                return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
            prev_bound, prev_count = bound, count
        return self.bounds[-1]


@dataclass(frozen=True)
class HostStats:
    """One upstream host of a cluster, as `/clusters?format=json` reports it."""

    address: str
    success: int = 0
    error: int = 0
    timeout: int = 0
    connect_fail: int = 0
    active: int = 0
    ejected: bool = False  # failed_outlier_check: outlier detection has it out of rotation
    unhealthy: bool = False  # any other failure flag (EDS unhealthy, active health check)

    @property
    def attempts(self) -> int:
        """Attempts that ended (a connect failure counts: rq_error includes it)."""
        return self.success + self.error


_HOST_FAILURE_FLAGS = ("failed_active_health_check", "failed_eds_health", "active_hc_timeout",
                       "excluded_via_immediate_hc_fail")


def _int(value: Any) -> int:
    # /clusters JSON renders uint64 as strings and omits zero values.
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _address(host: Mapping[str, Any]) -> str:
    sock = (host.get("address") or {}).get("socket_address") or {}
    return f"{sock.get('address', '?')}:{sock.get('port_value', '?')}"


def parse_host(host: Mapping[str, Any]) -> HostStats:
    stats = {s.get("name"): _int(s.get("value")) for s in host.get("stats") or () if isinstance(s, dict)}
    health = host.get("health_status") or {}
    eds = health.get("eds_health_status", "HEALTHY")
    return HostStats(
        address=_address(host), success=stats.get("rq_success", 0), error=stats.get("rq_error", 0),
        timeout=stats.get("rq_timeout", 0), connect_fail=stats.get("cx_connect_fail", 0),
        active=stats.get("rq_active", 0), ejected=bool(health.get("failed_outlier_check")),
        unhealthy=any(bool(health.get(f)) for f in _HOST_FAILURE_FLAGS) or eds not in ("HEALTHY", None))


def parse_clusters(doc: Mapping[str, Any], names: Iterable[str] | None = None) -> dict[str, list[HostStats]]:
    """cluster name -> its hosts, from `/clusters?format=json` (only `names` when given)."""
    wanted = set(names) if names is not None else None
    out: dict[str, list[HostStats]] = {}
    for cluster in doc.get("cluster_statuses") or ():
        name = cluster.get("name")
        if not isinstance(name, str) or (wanted is not None and name not in wanted):
            continue
        out[name] = [parse_host(h) for h in cluster.get("host_statuses") or () if isinstance(h, dict)]
    return out


def parse_stats(doc: Mapping[str, Any]) -> tuple[dict[str, int], dict[str, Histogram]]:
    """(counters and gauges, histograms) from `/stats?format=json&histogram_buckets=cumulative`."""
    counters: dict[str, int] = {}
    histograms: dict[str, Histogram] = {}
    for entry in doc.get("stats") or ():
        if not isinstance(entry, dict):
            continue
        if "histograms" in entry:
            for h in entry["histograms"] if isinstance(entry["histograms"], list) else ():
                parsed = _histogram(h)
                if parsed is not None:
                    histograms[h["name"]] = parsed
            continue
        name, value = entry.get("name"), entry.get("value")
        if isinstance(name, str) and isinstance(value, int) and not isinstance(value, bool):
            counters[name] = value
    return counters, histograms


def _histogram(h: Any) -> Histogram | None:
    if not isinstance(h, dict) or not isinstance(h.get("name"), str):
        return None
    buckets = [b for b in h.get("buckets") or () if isinstance(b, dict) and "upper_bound" in b]
    if not buckets:
        return None
    buckets.sort(key=lambda b: float(b["upper_bound"]))
    return Histogram(tuple(float(b["upper_bound"]) for b in buckets),
                     tuple(_int(b.get("cumulative")) for b in buckets))


def counter_delta(new: Mapping[str, int], old: Mapping[str, int] | None, name: str) -> int:
    """Growth of a counter between two samples; a counter that went down means Envoy restarted."""
    now = new.get(name, 0)
    before = old.get(name, 0) if old is not None else 0
    return now - before if now >= before else now


def sum_hosts(hosts: Iterable[HostStats]) -> HostStats:
    """One cluster's hosts added up (ejected/unhealthy: every host is)."""
    hosts = list(hosts)
    return HostStats(
        address=",".join(h.address for h in hosts), success=sum(h.success for h in hosts),
        error=sum(h.error for h in hosts), timeout=sum(h.timeout for h in hosts),
        connect_fail=sum(h.connect_fail for h in hosts), active=sum(h.active for h in hosts),
        ejected=bool(hosts) and all(h.ejected for h in hosts),
        unhealthy=bool(hosts) and all(h.unhealthy or h.ejected for h in hosts))
