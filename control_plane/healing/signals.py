"""Health signals per service: the edge Envoy's admin + model-server probes over a sliding window.

One `SignalCollector.collect()` round (every `scrape_interval_s`, 250 ms by default) fetches, at
once and each under its own short timeout:
- edge admin `/clusters?format=json` (per-host counters, outlier ejection) and the filtered
  `/stats` (histograms: the service's chain `upstream_rq_time`; counters for the traffic summary);
- each service's `/ready` on its model server and, with sidecars, its sidecar's admin `/ready`.

Edge samples are kept for `window_s` (10 s); a service's error rate and p95 are the differences
between the newest sample and the oldest one inside the window (counter deltas, histogram bucket
deltas), so they describe the last `window_s` seconds, not the process's lifetime. A killed server
shows at the next round as a refused probe and, under traffic, as connect failures and an Envoy
ejection: detection takes one scrape interval, not a window.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp

from control_plane.healing.envoy_admin import (
    Histogram,
    HostStats,
    parse_clusters,
    parse_stats,
    stats_query,
    sum_hosts,
)
from control_plane.intent import MODELS, SERVICES
from control_plane.topology import Topology


@dataclass(frozen=True)
class EdgeSample:
    """One scrape of the edge admin: cumulative numbers at `mono` (monotonic) / `wall` (epoch)."""

    mono: float
    wall: float
    hosts: dict[str, HostStats]  # model cluster -> its hosts added up
    counters: dict[str, int]
    histograms: dict[str, Histogram]


@dataclass(frozen=True)
class ProbeResult:
    url: str
    ok: bool
    kind: str  # ok | refused | timeout | not_ready | error
    detail: str | None = None


@dataclass(frozen=True)
class ServiceSignal:
    """What the loop knows about one service now; None means "no evidence" (not "fine")."""

    service: str
    ts: float  # epoch seconds of the round
    window_s: float  # span the rates cover (shorter than configured right after start)
    requests: int  # attempts the edge made to the service in the window
    errors: int  # failed attempts (5xx, connect failures, timeouts)
    error_rate: float | None
    p95_ms: float | None  # of the service's chain as the edge timed it
    latency_samples: int
    ejected: bool | None  # Envoy's outlier detection has every host of the cluster out
    reachable: bool | None  # every probe (server /ready, sidecar /ready) answered 200
    probe_kind: str | None  # worst probe outcome: refused | timeout | not_ready | error
    probe_error: str | None
    probe_failures: int  # consecutive rounds with a failed probe
    edge_seen: bool  # the edge admin answered this round

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("error_rate", "p95_ms"):
            if out[key] is not None:
                out[key] = round(out[key], 4)
        return out


@dataclass
class SignalWindow:
    """Edge samples of the last `window_s` seconds (pure: no I/O, time comes with the samples)."""

    window_s: float
    samples: deque[EdgeSample] = field(default_factory=deque)

    def add(self, sample: EdgeSample) -> None:
        self.samples.append(sample)
        # Keep one sample at or before the window's start so the delta spans the whole window.
        while len(self.samples) > 2 and self.samples[1].mono <= sample.mono - self.window_s:
            self.samples.popleft()

    def bounds(self) -> tuple[EdgeSample, EdgeSample] | None:
        if len(self.samples) < 2:
            return None
        return self.samples[0], self.samples[-1]

    def reset(self) -> None:
        self.samples.clear()


def latency_stat(service: str) -> str:
    """The histogram that times a service at the edge: its chain's (the route target) for models."""
    cluster = f"chain-{service}" if service in MODELS else service
    return f"cluster.{cluster}.upstream_rq_time"


def window_signal(service: str, window: SignalWindow, latest: EdgeSample | None,
                  probe: Sequence[ProbeResult], probe_failures: int, now_wall: float) -> ServiceSignal:
    """Pure: one service's signal from the edge window and this round's probes."""
    requests = errors = samples = 0
    error_rate = p95 = None
    span = 0.0
    bounds = window.bounds()
    if bounds is not None:
        old, new = bounds
        span = new.mono - old.mono
        h_new, h_old = new.hosts.get(service), old.hosts.get(service)
        if h_new is not None:
            # No older sample, or fewer attempts than before (Envoy restarted): count from zero.
            base = h_old if h_old is not None and h_old.attempts <= h_new.attempts else None
            requests = h_new.attempts - (base.attempts if base else 0)
            errors = max(0, h_new.error - (base.error if base else 0))
            error_rate = errors / requests if requests > 0 else None
        hist = new.histograms.get(latency_stat(service))
        if hist is not None:
            delta = hist.minus(old.histograms.get(latency_stat(service)))
            samples = delta.total
            p95 = delta.quantile(0.95)
    ejected = None
    if latest is not None and service in latest.hosts:
        ejected = latest.hosts[service].ejected
    failed = [p for p in probe if not p.ok]
    worst = min(failed, key=lambda p: _PROBE_ORDER.get(p.kind, 9)) if failed else None
    return ServiceSignal(
        service=service, ts=now_wall, window_s=round(span, 3), requests=requests, errors=errors,
        error_rate=error_rate, p95_ms=p95, latency_samples=samples, ejected=ejected,
        reachable=None if not probe else not failed, probe_kind=worst.kind if worst else None,
        probe_error=f"{worst.url}: {worst.detail or worst.kind}" if worst else None,
        probe_failures=probe_failures, edge_seen=latest is not None)


_PROBE_ORDER = {"refused": 0, "not_ready": 1, "timeout": 2, "error": 3}


def probe_urls(topo: Topology) -> dict[str, list[str]]:
    """service -> its readiness URLs: the model server's /ready and, with sidecars, the sidecar's."""
    out: dict[str, list[str]] = {}
    for svc in SERVICES:
        addr = topo.service(svc)
        urls = [f"http://{addr.host}:{addr.server_port}/ready"]
        if topo.sidecars and addr.sidecar_admin_port:
            urls.append(f"http://{addr.host}:{addr.sidecar_admin_port}/ready")
        out[svc] = urls
    return out


class SignalCollector:
    """Scrapes the edge admin and probes the services; keeps the window; never waits long.

    Every request has its own timeout (`admin_timeout_s`, `probe_timeout_s`), and a round runs them
    concurrently, so a round takes at most the larger of the two.
    """

    def __init__(self, topo: Topology, *, window_s: float = 10.0, probe_timeout_s: float = 0.3,
                 admin_timeout_s: float = 0.5, http_prefix: str = "edge",
                 services: Sequence[str] = SERVICES, urls: Mapping[str, list[str]] | None = None) -> None:
        self.topo = topo
        self.services = tuple(services)
        self.admin_url = f"http://{topo.edge_host}:{topo.edge_admin_port}"
        self.urls = dict(urls) if urls is not None else probe_urls(topo)
        self.window = SignalWindow(window_s)
        self.probe_timeout_s = probe_timeout_s
        self.admin_timeout_s = admin_timeout_s
        self.http_prefix = http_prefix
        self.latest: EdgeSample | None = None
        self.edge_error: str | None = None
        self.rounds = 0
        self._failures = {s: 0 for s in self.services}
        self._clusters = [svc.cluster for svc in topo.services]
        self._admin: aiohttp.ClientSession | None = None
        self._probes: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        # Probes open a fresh connection each time: a pooled keep-alive connection to a server that
        # restarted would fail once and look like an outage. The admin keeps its connection.
        self._admin = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.admin_timeout_s),
            connector=aiohttp.TCPConnector(limit=4))
        self._probes = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.probe_timeout_s),
            connector=aiohttp.TCPConnector(force_close=True, limit=32))

    async def close(self) -> None:
        for session in (self._admin, self._probes):
            if session is not None:
                await session.close()
        self._admin = self._probes = None

    async def collect(self) -> dict[str, ServiceSignal]:
        """One round: scrape + probe concurrently, update the window, one signal per service."""
        if self._admin is None or self._probes is None:
            await self.start()
        targets = [(svc, url) for svc in self.services for url in self.urls.get(svc, ())]
        # gather: all at once, and a cancelled round (shutdown) cancels every request in it
        edge = self._scrape_edge()
        sample, results = await asyncio.gather(edge, asyncio.gather(*(self._probe(u) for _, u in targets)))
        probes: dict[str, list[ProbeResult]] = {svc: [] for svc in self.services}
        for (svc, _), result in zip(targets, results, strict=True):
            probes[svc].append(result)
        self.rounds += 1
        self.latest = sample
        if sample is not None:
            self.window.add(sample)
        now = time.time()
        out = {}
        for svc in self.services:
            failed = any(not p.ok for p in probes[svc])
            self._failures[svc] = self._failures[svc] + 1 if failed else 0
            out[svc] = window_signal(svc, self.window, sample, probes[svc], self._failures[svc], now)
        return out

    async def _scrape_edge(self) -> EdgeSample | None:
        assert self._admin is not None
        try:
            async with self._admin.get(self.admin_url + "/clusters", params={"format": "json"}) as r:
                clusters_doc = await r.json(content_type=None) if r.status == 200 else None
            async with self._admin.get(self.admin_url + "/stats", params=stats_query(self.http_prefix)) as r:
                stats_doc = await r.json(content_type=None) if r.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            self.edge_error = _describe(exc)
            return None
        if not isinstance(clusters_doc, dict) or not isinstance(stats_doc, dict):
            self.edge_error = "the edge admin answered without JSON"
            return None
        self.edge_error = None
        hosts = {name: sum_hosts(h) for name, h in parse_clusters(clusters_doc, self._clusters).items()}
        counters, histograms = parse_stats(stats_doc)
        return EdgeSample(time.monotonic(), time.time(), hosts, counters, histograms)

    async def _probe(self, url: str) -> ProbeResult:
        assert self._probes is not None
        try:
            async with self._probes.get(url) as r:
                await r.read()
                if r.status == 200:
                    return ProbeResult(url, True, "ok")
                return ProbeResult(url, False, "not_ready", f"HTTP {r.status}")
        except aiohttp.ClientConnectorError as exc:
            refused = isinstance(exc.os_error, ConnectionRefusedError)
            return ProbeResult(url, False, "refused" if refused else "error", _describe(exc))
        except TimeoutError:
            return ProbeResult(url, False, "timeout", f"no answer within {self.probe_timeout_s:g}s")
        except (aiohttp.ClientError, OSError) as exc:
            return ProbeResult(url, False, "error", _describe(exc))


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}"[:200] if text else type(exc).__name__
