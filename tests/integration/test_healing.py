"""The self-healing loop end to end with real processes.

nats-server, `python -m control_plane` (healing loop on: scrape every 250 ms, 10 s window, dwell
and cooldown shortened to 2 s for test time), the edge Envoy and three sidecar Envoys over ADS, and
three small upstream processes standing in for the model servers. Predictions go through the edge
at 100/s while upstreams are SIGKILLed, restarted, toggled and slowed down.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import msgspec
import nats
import pytest

from control_plane.intent import SERVICES
from data_plane.contracts.events import HealthEvent
from tests.integration.healing_mesh import HealingMesh, http_json

pytestmark = pytest.mark.integration
DWELL_S = 2.0
HEALING_ENV = {"MESH_HEALING_DWELL_S": str(DWELL_S), "MESH_HEALING_COOLDOWN_S": "2"}
ALL_NODES = {"edge", *(f"sidecar-{s}" for s in SERVICES)}
TXN = {"amount": 1500.0, "merchant_category": 7, "hour_of_day": 2, "day_of_week": 6,
       "distance_from_home": 150.0, "distance_from_last_txn": 80.0, "is_foreign": 1,
       "velocity_last_1h": 5, "velocity_last_24h": 12, "avg_amount_last_7d": 200.0, "card_age_days": 15}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HealingMesh]:
    m = HealingMesh(tmp_path_factory.mktemp("healing") / "mesh", healing_env=HEALING_ENV).start()
    try:
        yield m
    finally:
        m.stop()


@asynccontextmanager
async def load(mesh: HealingMesh, rate: float = 100.0) -> AsyncIterator[list[tuple[float, int, str]]]:
    """Open-loop predictions through the edge at `rate`/s; yields the (time, status, model_type) list."""
    answers: list[tuple[float, int, str]] = []
    stop = asyncio.Event()
    url = mesh.s.edge_url + "/api/v1/predict"

    async def one(session: aiohttp.ClientSession) -> None:
        try:
            async with session.post(url, json=TXN) as r:
                body = await r.json(content_type=None)
                answers.append((time.time(), r.status, body.get("model_type", "?")))
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            answers.append((time.time(), 0, type(exc).__name__))

    async def drive() -> None:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256),
                                         timeout=aiohttp.ClientTimeout(total=10)) as session:
            tasks: set[asyncio.Task[None]] = set()
            start, n = time.monotonic(), 0
            while not stop.is_set():
                task = asyncio.create_task(one(session))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                n += 1
                await asyncio.sleep(max(0.0, n / rate - (time.monotonic() - start)))
            await asyncio.gather(*tasks)

    driver = asyncio.create_task(drive())
    try:
        yield answers
    finally:
        stop.set()
        await driver


async def api(mesh: HealingMesh, path: str) -> Any:
    """GET on the operator API off the event loop (the load generator shares the loop)."""
    code, body = await asyncio.to_thread(http_json, "GET", mesh.s.operator_url + path)
    assert code == 200, body
    return body


async def wait_decision(mesh: HealingMesh, since: int, service: str, action: str,
                        within: float) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        body = await api(mesh, f"/api/v1/decisions?since={since}&limit=1000")
        for d in body["decisions"]:
            if d["actor"] == "reconciler" and d["action"] == action and d["reason"].startswith(service + ":"):
                return d  # type: ignore[no-any-return]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no reconciler {action} of {service} within {within}s; control-plane log:\n"
                         f"{mesh.log_tail('control-plane')}")


async def wait_state(mesh: HealingMesh, service: str, state: str, ejected: bool, within: float) -> None:
    deadline = time.monotonic() + within
    view: Any = None
    while time.monotonic() < deadline:
        view = (await api(mesh, "/api/v1/health/services"))["services"][service]
        if view["state"] == state and view["ejected_in_intent"] == ejected:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{service} is not {state} (ejected={ejected}) after {within}s: {view}")


async def last_seq(mesh: HealingMesh) -> int:
    return int((await api(mesh, "/api/v1/decisions?limit=1"))["last_seq"])


def reconciler_decisions(decisions: list[dict[str, Any]], service: str) -> list[dict[str, Any]]:
    return [d for d in decisions if d["actor"] == "reconciler" and d["reason"].startswith(service + ":")]


def report(name: str, numbers: dict[str, Any]) -> None:
    """Measured numbers go to the test output (`pytest -s`)."""
    print(f"\n{name}: {json.dumps(numbers)}")


# ---- the primary dies under load ------------------------------------------------------------------
async def test_killed_primary_loses_its_weight_within_a_second_and_gets_it_back(mesh: HealingMesh) -> None:
    for svc in SERVICES:
        await wait_state(mesh, svc, "healthy", False, 15)
    since = await last_seq(mesh)
    nc = await nats.connect(mesh.s.nats_url)
    events: list[HealthEvent] = []

    async def on_event(msg: Any) -> None:
        events.append(msgspec.json.decode(msg.data, type=HealthEvent))

    await nc.subscribe("mesh.health.>", cb=on_event)
    await nc.flush()
    try:
        async with load(mesh) as answers:
            await asyncio.sleep(2.0)
            killed_at = mesh.kill_upstream("xgboost")
            eject = await wait_decision(mesh, since, "xgboost", "eject", 5.0)
            await asyncio.sleep(1.5)
        split = await asyncio.to_thread(mesh.edge_split)
        kill_to_ack = eject["ts"] - killed_at
        detected = eject["numbers"]["detected_at"] - killed_at
        assert kill_to_ack <= 1.0, eject
        assert eject["acked"] is True and eject["nodes"] == dict.fromkeys(ALL_NODES, "ack"), eject
        assert eject["rule"] in ("unreachable", "envoy_ejected", "seed_error_rate"), eject
        assert 0 < detected < kill_to_ack
        assert split == {"chain-pytorch": 10000}
        # 0 client errors: every answer a 200 from a model tier, none the conservative default.
        outcomes = Counter((status, kind) for _, status, kind in answers)
        assert set(outcomes) <= {(200, "xgboost"), (200, "pytorch")}, outcomes
        assert all(kind == "pytorch" for t, _, kind in answers if t > eject["ts"] + 0.1)
        await nc.flush()
        await asyncio.sleep(0.3)
        (trigger,) = [e for e in events if e.id in eject["trigger_ids"]]
        assert trigger.service == "xgboost" and not trigger.healthy and eject["rule"] in trigger.reason

        since = eject["seq"]
        async with load(mesh) as answers:
            await asyncio.to_thread(mesh.start_upstream, "xgboost")
            up_at = time.time()
            restore = await wait_decision(mesh, since, "xgboost", "restore", 20.0)
            await asyncio.sleep(1.0)
        # up_at is taken once the port answers our poll, a little after the loop's first good probe
        assert restore["ts"] - up_at >= DWELL_S - 0.3, (restore, up_at)
        assert restore["rule"] == "recovered" and restore["acked"] is True
        assert await asyncio.to_thread(mesh.edge_split) == {"chain-xgboost": 8000, "chain-pytorch": 2000}
        assert any(kind == "xgboost" for t, _, kind in answers if t > restore["ts"] + 0.2)
        assert {status for _, status, _ in answers} == {200}
        assert any(e.service == "xgboost" and e.healthy and e.id in restore["trigger_ids"] for e in events)
    finally:
        await nc.drain()
    report("kill_to_ack", {"kill_to_all_envoys_acked_s": round(kill_to_ack, 4),
                           "kill_to_detected_s": round(detected, 4), "rule": eject["rule"],
                           "restore_after_up_s": round(restore["ts"] - up_at, 3),
                           "answers_during_kill": sum(outcomes.values())})


# ---- flapping --------------------------------------------------------------------------------------
async def test_flapping_upstream_changes_the_weights_no_faster_than_the_rate_limit(mesh: HealingMesh) -> None:
    await wait_state(mesh, "pytorch", "healthy", False, 15)
    since = await last_seq(mesh)
    async with load(mesh) as answers:
        started = time.time()
        for i in range(10):  # down 2 s, up 2 s, ... for 20 s; it ends up
            phase_start = time.monotonic()
            if i % 2 == 0:
                mesh.kill_upstream("pytorch")
            else:
                await asyncio.to_thread(mesh.start_upstream, "pytorch")
            await asyncio.sleep(max(0.0, 2.0 - (time.monotonic() - phase_start)))
        ended = time.time()
    changes = [d for d in reconciler_decisions(mesh.decisions(since), "pytorch") if d["ts"] <= ended]
    health = mesh.health()
    limit = health["config"]["governor"]
    assert 1 <= len(changes) <= limit["burst"] + limit["refill_per_minute"] * (ended - started) / 60 + 1e-9
    assert changes[0]["action"] == "eject" and changes[0]["acked"] is True
    assert {status for _, status, _ in answers} == {200}
    defaults = sum(1 for _, _, kind in answers if kind == "conservative_default")
    assert defaults == 0, Counter(kind for _, _, kind in answers)
    await wait_state(mesh, "pytorch", "healthy", False, 20)
    report("flapping", {"toggles": 10, "period_s": 2.0, "weight_changes_in_20s": len(changes),
                        "allowed_per_minute": limit["burst"] + limit["refill_per_minute"],
                        "suppressed": health["suppressed"]})


# ---- slow service: seed p95 rule ----------------------------------------------------------------------
async def test_slow_service_is_ejected_by_the_seed_p95_rule(mesh: HealingMesh) -> None:
    await wait_state(mesh, "pytorch", "healthy", False, 20)
    since = await last_seq(mesh)
    try:
        async with load(mesh) as answers:
            await asyncio.sleep(1.0)
            await asyncio.to_thread(mesh.control, "pytorch", delay_ms=600)
            slowed_at = time.time()
            # Envoy merges latency histograms at its stats flush (5 s by default): up to one flush.
            eject = await wait_decision(mesh, since, "pytorch", "eject", 20.0)
    finally:
        await asyncio.to_thread(mesh.control, "pytorch", delay_ms=0)
    assert eject["rule"] == "seed_p95", eject
    assert eject["numbers"]["p95_ms"] > 500 and eject["numbers"]["latency_samples"] >= 20
    assert eject["numbers"]["error_rate"] < 0.1 and eject["acked"] is True
    assert {status for _, status, _ in answers} == {200}
    report("slow_p95", {"slowed_to_acked_s": round(eject["ts"] - slowed_at, 3),
                        "p95_ms": eject["numbers"]["p95_ms"]})


# ---- operator routes ----------------------------------------------------------------------------------
async def test_traffic_summary_and_health_services_report_live_numbers(mesh: HealingMesh) -> None:
    async with load(mesh) as answers:
        await asyncio.sleep(5.0)
        summary = await api(mesh, "/api/v1/traffic/summary?window=4")
        via_edge = await asyncio.to_thread(http_json, "GET", mesh.s.edge_url + "/api/v1/health/services")
    sent_rps = len(answers) / 5.0
    assert summary["available"] and summary["window_s"] == 4.0 and summary["edge"]["reachable"]
    assert summary["rps"] == pytest.approx(sent_rps, rel=0.35), (summary["rps"], sent_rps)
    assert summary["error_rate"] == 0.0 and summary["fallback_share"] == 0.0
    assert summary["fraud_share"] == pytest.approx(0.1, abs=0.05)  # the upstreams flag every tenth
    assert summary["clusters"]["xgboost"]["rq_total"] > 0 and summary["clusters"]["xgboost"]["ejected"] == 0
    history = summary["history"]
    assert len(history) >= 3 and all(b["ts"] - a["ts"] == pytest.approx(2.0, abs=0.6)
                                     for a, b in zip(history[-3:], history[-2:], strict=False))
    fields = {"ts", "rps", "p50_ms", "p99_ms", "error_rate", "fallback_share", "fraud_share"}
    assert fields <= set(history[-1])
    code, body = via_edge
    assert code == 200 and set(body["services"]) == set(SERVICES)
    assert body["services"]["xgboost"]["signal"]["requests"] > 0
    url = mesh.s.operator_url + "/api/v1/traffic/summary?window=1"
    code, bad = await asyncio.to_thread(http_json, "GET", url)
    assert code == 400 and bad["field"] == "window" and bad["rule"] == "range"
    metrics = await asyncio.to_thread(http_json, "GET", mesh.s.operator_url + "/metrics")
    assert 'mesh_healing_changes_total{action="eject"' in str(metrics[1])
