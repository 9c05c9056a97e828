"""Health signals from real Envoy 1.40 admin output (captured: tests/data/healing/capture.py).

Scenarios captured from a real edge Envoy with sidecars: steady 80/20 traffic, the xgboost server
SIGKILLed under load, pytorch answering after 600 ms, every upstream dead.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from control_plane.healing.envoy_admin import (
    STATS_FILTER,
    Histogram,
    HostStats,
    counter_delta,
    parse_clusters,
    parse_stats,
    stats_query,
    sum_hosts,
)
from control_plane.healing.health_rules import HealthPolicy, evaluate
from control_plane.healing.signals import (
    EdgeSample,
    ProbeResult,
    SignalCollector,
    SignalWindow,
    latency_stat,
    probe_urls,
    window_signal,
)
from control_plane.healing.traffic import (
    TrafficSample,
    TrafficTracker,
    parse_prediction_counts,
    traffic_numbers,
)
from control_plane.topology import Topology
from data_plane.netutil import free_port
from data_plane.settings import Settings

DATA = Path(__file__).resolve().parents[1] / "data" / "healing"
META = json.loads((DATA / "meta.json").read_text())
MODEL_CLUSTERS = ["xgboost", "pytorch", "heuristic", "xgboost-challenger", "pytorch-challenger"]


def load(name: str) -> dict[str, Any]:
    return json.loads((DATA / name).read_text())  # type: ignore[no-any-return]


def sample(scenario: str, part: str, mono: float) -> EdgeSample:
    hosts = {n: sum_hosts(h) for n, h in parse_clusters(load(f"{scenario}_{part}_clusters.json"),
                                                         MODEL_CLUSTERS).items()}
    counters, hists = parse_stats(load(f"{scenario}_{part}_stats.json"))
    return EdgeSample(mono, 1_700_000_000.0 + mono, hosts, counters, hists)


def scenario_window(scenario: str) -> tuple[SignalWindow, EdgeSample]:
    span = META["scenarios"][scenario]["span_s"]
    start, end = sample(scenario, "start", 100.0), sample(scenario, "end", 100.0 + span)
    window = SignalWindow(window_s=60.0)
    window.add(start)
    window.add(end)
    return window, end


OK = [ProbeResult("http://127.0.0.1:1/ready", True, "ok")]


# ---- parsing -------------------------------------------------------------------------------------
def test_clusters_json_gives_per_host_counters_and_the_ejection() -> None:
    hosts = parse_clusters(load("killed_end_clusters.json"), MODEL_CLUSTERS)
    assert set(hosts) == set(MODEL_CLUSTERS)  # only the clusters asked for (not xds, operator, chains)
    (xgb,) = hosts["xgboost"]
    assert xgb.ejected and not xgb.unhealthy
    assert xgb.success == 329 and xgb.error == 87 and xgb.attempts == 416
    (pytorch,) = hosts["pytorch"]
    assert not pytorch.ejected and pytorch.error == 0 and pytorch.success == 471
    assert re.fullmatch(r"127\.0\.0\.1:\d+", xgb.address)


def test_sum_hosts_is_ejected_only_when_every_host_is() -> None:
    a, b = HostStats("a:1", success=5, error=1, ejected=True), HostStats("b:2", success=3, error=0)
    both = sum_hosts([a, b])
    assert (both.success, both.error, both.ejected) == (8, 1, False)
    assert sum_hosts([a]).ejected and not sum_hosts([]).ejected


def test_stats_json_gives_counters_and_cumulative_histograms() -> None:
    counters, hists = parse_stats(load("all_down_end_stats.json"))
    assert counters["cluster.chain-xgboost.upstream_rq_503"] == 320
    assert counters["cluster.chain-pytorch.upstream_rq_503"] == 80
    assert "cluster.xgboost.outlier_detection.ejections_enforced_total" in counters
    h = hists["cluster.chain-pytorch.upstream_rq_time"]
    assert h.bounds[:4] == (0.5, 1.0, 5.0, 10.0) and h.total == 211
    assert list(h.counts) == sorted(h.counts)  # cumulative


def test_every_captured_name_matches_the_stats_filter() -> None:
    # Envoy applied the filter (RE2, partial match); Python's re agrees on these names.
    assert stats_query()["filter"] == META["stats_query"]["filter"]
    pattern = re.compile(STATS_FILTER.replace("{prefix}", "edge"))
    counters, hists = parse_stats(load("slow_end_stats.json"))
    assert all(pattern.search(name) for name in [*counters, *hists])
    assert not pattern.search("cluster.xgboost.upstream_cx_total")
    assert not pattern.search("cluster.chain-xgboost.external.upstream_rq_time")


def test_text_stats_and_junk_entries_are_skipped() -> None:
    counters, hists = parse_stats({"stats": [
        {"name": "x.version_text", "value": "7"}, {"name": "a", "value": 3},
        {"name": "b", "value": True}, "junk", {"histograms": "nope"}]})
    assert counters == {"a": 3} and hists == {}


# ---- histograms ----------------------------------------------------------------------------------
def test_quantile_interpolates_inside_the_bucket() -> None:
    h = Histogram((10.0, 100.0, 500.0, 1000.0), (50, 90, 94, 100))
    assert h.quantile(0.5) == pytest.approx(10.0)
    assert h.quantile(0.7) == pytest.approx(10 + 90 * 20 / 40)
    assert h.quantile(0.94) == pytest.approx(500.0)  # exactly at a bound: not above it
    assert h.quantile(0.95) == pytest.approx(500 + 500 * 1 / 6)
    assert Histogram((1.0,), (0,)).quantile(0.5) is None


def test_histogram_difference_and_reset() -> None:
    old = Histogram((10.0, 100.0), (5, 8))
    new = Histogram((10.0, 100.0), (6, 20))
    assert new.minus(old).counts == (1, 12)
    assert old.minus(new) is old  # fewer samples than before: Envoy restarted, count from zero
    assert new.minus(None) is new
    assert new.plus(old).counts == (11, 28)


def test_counter_delta_survives_an_envoy_restart() -> None:
    assert counter_delta({"a": 10}, {"a": 4}, "a") == 6
    assert counter_delta({"a": 3}, {"a": 40}, "a") == 3
    assert counter_delta({"a": 3}, None, "a") == 3 and counter_delta({}, {"a": 1}, "a") == 0


# ---- window signals from the captures --------------------------------------------------------------
def test_steady_traffic_is_good_evidence() -> None:
    window, end = scenario_window("steady")
    sig = window_signal("xgboost", window, end, OK, 0, 0.0)
    assert sig.requests == 329 and sig.errors == 0 and sig.error_rate == 0.0
    assert sig.p95_ms is not None and sig.p95_ms < 250 and sig.latency_samples == 329
    assert sig.ejected is False and sig.reachable is True
    assert evaluate(sig, HealthPolicy(), seen_up=True).verdict == "good"


def test_killed_server_is_ejected_and_fails_the_seed_error_rule() -> None:
    window, end = scenario_window("killed")
    sig = window_signal("xgboost", window, end, OK, 0, 0.0)
    assert sig.ejected is True and sig.requests == 87 and sig.errors == 87 and sig.error_rate == 1.0
    assert evaluate(sig, HealthPolicy(), seen_up=True).rule == "envoy_ejected"
    # Without having seen it up, the seed rule still fires on the window's evidence.
    assert evaluate(sig, HealthPolicy(), seen_up=False).rule == "seed_error_rate"
    other = window_signal("pytorch", window, end, OK, 0, 0.0)
    assert other.errors == 0 and evaluate(other, HealthPolicy(), seen_up=True).verdict == "good"


def test_slow_server_fails_the_seed_p95_rule() -> None:
    window, end = scenario_window("slow")
    sig = window_signal("pytorch", window, end, OK, 0, 0.0)
    assert sig.latency_samples == 71 and sig.p95_ms is not None and 500 < sig.p95_ms <= 1000
    assert sig.error_rate == 0.0
    ev = evaluate(sig, HealthPolicy(), seen_up=True)
    assert ev.rule == "seed_p95" and "> 500 ms" in ev.reason
    assert latency_stat("pytorch") == "cluster.chain-pytorch.upstream_rq_time"
    assert latency_stat("heuristic") == "cluster.heuristic.upstream_rq_time"


def test_window_keeps_one_sample_before_its_start() -> None:
    window = SignalWindow(window_s=10.0)
    for t in range(0, 30):
        window.add(EdgeSample(float(t), float(t), {}, {}, {}))
    bounds = window.bounds()
    assert bounds is not None and bounds[0].mono == 19.0 and bounds[1].mono == 29.0


def test_failed_probe_names_the_worst_outcome() -> None:
    window, end = scenario_window("steady")
    probes = [ProbeResult("http://a/ready", False, "timeout", "slow"),
              ProbeResult("http://b/ready", False, "refused", "Connect call failed")]
    sig = window_signal("xgboost", window, end, probes, 3, 0.0)
    assert sig.reachable is False and sig.probe_kind == "refused" and sig.probe_failures == 3
    assert sig.probe_error == "http://b/ready: Connect call failed"
    assert window_signal("xgboost", SignalWindow(10.0), None, [], 0, 0.0).reachable is None


# ---- traffic numbers from the captures --------------------------------------------------------------
def test_traffic_numbers_for_steady_and_all_down() -> None:
    span = META["scenarios"]["steady"]["span_s"]
    steady = traffic_numbers(TrafficSample(sample("steady", "end", span)),
                             TrafficSample(sample("steady", "start", 0.0)))
    assert steady["requests"] == 400 and steady["rps"] == pytest.approx(400 / span, rel=1e-3)
    assert steady["fallback_share"] == 0.0 and steady["error_rate"] == 0.0
    assert steady["clusters"]["xgboost"]["rq_total"] == 329
    assert steady["clusters"]["pytorch"]["rq_total"] == 71
    assert steady["p50_ms"] is not None and steady["p50_ms"] < steady["p99_ms"] < 250

    down = traffic_numbers(TrafficSample(sample("all_down", "end", 10.0)),
                           TrafficSample(sample("all_down", "start", 0.0)))
    assert down["requests"] == 400 and down["fallback"] == {"heuristic": 0, "conservative_default": 400}
    assert down["fallback_share"] == 1.0 and down["error_rate"] == 0.0  # defaults are 200s
    assert down["upstream_error_rate"] == 1.0 and down["retries"] > 0


async def test_the_tracker_keeps_slim_samples_with_the_same_numbers() -> None:
    span = META["scenarios"]["steady"]["span_s"]
    start, end = sample("steady", "start", 0.0), sample("steady", "end", span)
    full = traffic_numbers(TrafficSample(end), TrafficSample(start))
    tracker = TrafficTracker(points=10)
    await tracker.tick(start)
    await tracker.tick(start)  # the same scrape twice is one sample
    await tracker.tick(end)
    assert len(tracker.samples) == 2 and len(end.histograms) > 2
    assert all(len(s.edge.histograms) <= 2 for s in tracker.samples)  # client latency only
    summary = tracker.summary(window_s=span)
    assert {k: summary[k] for k in full if k != "clusters"} == {k: full[k] for k in full if k != "clusters"}
    assert summary["clusters"] == full["clusters"]


def test_fraud_share_counts_defaults_as_fraud_and_skips_servers_without_a_baseline() -> None:
    old = TrafficSample(sample("all_down", "start", 0.0), {"a": (10, 90)})
    new = TrafficSample(sample("all_down", "end", 10.0), {"a": (20, 180), "b": (500, 500)})
    numbers = traffic_numbers(new, old)
    assert numbers["fraud_share"] == pytest.approx((10 + 400) / (100 + 400), abs=1e-4)
    restarted = TrafficSample(sample("all_down", "end", 10.0), {"a": (1, 9)})
    assert traffic_numbers(restarted, old)["fraud_share"] == pytest.approx((1 + 400) / (10 + 400), abs=1e-4)


def test_prediction_counters_are_read_from_model_server_metrics() -> None:
    text = "\n".join([
        "# TYPE model_server_predictions_total counter",
        'model_server_predictions_total{kind="xgboost",slot="champion",model_version="xgboost_v3",'
        'prediction="fraud"} 12.0',
        'model_server_predictions_total{kind="xgboost",slot="champion",model_version="xgboost_v3",'
        'prediction="legit"} 488.0',
        'model_server_predictions_total{kind="xgboost",slot="challenger",model_version="xgboost_v4",'
        'prediction="fraud"} 7.0',
        "model_server_predictions_total{broken",
    ])
    assert parse_prediction_counts(text) == (12, 488)


# ---- the collector against HTTP servers ----------------------------------------------------------------
async def _serve(app: web.Application, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


def _topology(settings: Settings) -> Topology:
    from dataclasses import fields, replace

    from data_plane.settings import Ports

    ports = replace(Ports(), **{f.name: free_port() for f in fields(Ports)})
    return Topology.from_settings(replace(settings, ports=ports))


async def test_collector_reads_the_edge_admin_and_classifies_probes(settings: Settings) -> None:
    """Replays the captured admin documents over HTTP; probes hit servers that are up, 503, slow, gone."""
    topo = _topology(settings)
    asked: list[dict[str, str]] = []

    async def clusters(request: web.Request) -> web.Response:
        assert request.query["format"] == "json"
        return web.json_response(load("killed_end_clusters.json"))

    async def stats(request: web.Request) -> web.Response:
        asked.append(dict(request.query))
        return web.json_response(load("killed_end_stats.json"))

    async def ready(request: web.Request) -> web.Response:
        return web.json_response({"ready": True})

    async def not_ready(request: web.Request) -> web.Response:
        return web.json_response({"ready": False}, status=503)

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1.0)
        return web.json_response({"ready": True})

    admin = web.Application()
    admin.router.add_get("/clusters", clusters)
    admin.router.add_get("/stats", stats)
    runners = [await _serve(admin, topo.edge_admin_port)]
    # xgboost: server ready, sidecar too slow; pytorch: server 503, sidecar ready; heuristic: gone.
    for port, handler in ((topo.service("xgboost").server_port, ready),
                          (topo.service("xgboost").sidecar_admin_port, slow),
                          (topo.service("pytorch").server_port, not_ready),
                          (topo.service("pytorch").sidecar_admin_port, ready)):
        app = web.Application()
        app.router.add_get("/ready", handler)
        runners.append(await _serve(app, port or 0))
    collector = SignalCollector(topo, probe_timeout_s=0.2)
    try:
        first = await collector.collect()
        second = await collector.collect()
    finally:
        await collector.close()
        for r in runners:
            await r.cleanup()
    assert asked[0] == stats_query()
    assert probe_urls(topo)["xgboost"] == [f"http://127.0.0.1:{topo.service('xgboost').server_port}/ready",
                                           f"http://127.0.0.1:{topo.service('xgboost').sidecar_admin_port}/ready"]
    xgb = second["xgboost"]
    assert xgb.edge_seen and xgb.ejected is True
    assert xgb.requests == 0  # the same document twice: nothing happened in between
    assert xgb.reachable is False and xgb.probe_kind == "timeout" and xgb.probe_failures == 2
    assert first["pytorch"].probe_kind == "not_ready" and "HTTP 503" in (first["pytorch"].probe_error or "")
    assert first["heuristic"].probe_kind == "refused" and first["heuristic"].probe_failures == 1
    assert collector.latest is not None and collector.edge_error is None


async def test_collector_without_an_edge_still_probes(settings: Settings) -> None:
    topo = _topology(settings)
    collector = SignalCollector(topo, admin_timeout_s=0.2, probe_timeout_s=0.2)
    try:
        signals = await collector.collect()
    finally:
        await collector.close()
    assert collector.latest is None and collector.edge_error
    assert all(not s.edge_seen and s.ejected is None and s.reachable is False for s in signals.values())
