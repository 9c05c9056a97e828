"""The healing loop's decisions with a fake clock: seed thresholds, hysteresis, dwell, cooldown,
the token bucket, flapping, frozen and held automation; then the Reconciler on a real ControlPlane
(real apply path, state, ledger) fed scripted signals."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import msgspec
import pytest

from control_plane.app import ControlPlane
from control_plane.healing.config import HealingConfig
from control_plane.healing.health_rules import (
    HEALTHY,
    SICK,
    UNKNOWN,
    ChangeGovernor,
    GovernorPolicy,
    HealthJudge,
    HealthPolicy,
    evaluate,
    plan,
)
from control_plane.healing.reconciler import Reconciler, decision_numbers, with_ejected
from control_plane.healing.signals import ServiceSignal
from control_plane.intent import SERVICES, RoutingIntent
from data_plane.contracts.errors import ConfigError
from data_plane.contracts.events import HealthEvent
from data_plane.eventbus import EventBus
from data_plane.settings import Settings
from tests.unit.cp_fixtures import control_plane


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


def sig(service: str = "xgboost", *, requests: int = 100, errors: int = 0, p95: float | None = 10.0,
        samples: int | None = None, ejected: bool | None = False, reachable: bool | None = True,
        kind: str | None = None, failures: int = 0) -> ServiceSignal:
    return ServiceSignal(
        service=service, ts=1_700_000_000.0, window_s=10.0, requests=requests, errors=errors,
        error_rate=errors / requests if requests else None, p95_ms=p95,
        latency_samples=requests if samples is None else samples, ejected=ejected, reachable=reachable,
        probe_kind=kind, probe_error=f"http://127.0.0.1:1/ready: {kind}" if kind else None,
        probe_failures=failures, edge_seen=True)


def down(service: str = "xgboost", failures: int = 1) -> ServiceSignal:
    """A killed server: probe refused, Envoy ejected it, its few attempts failed."""
    return sig(service, requests=5, errors=5, p95=None, samples=0, ejected=True, reachable=False,
               kind="refused", failures=failures)


def idle(service: str = "xgboost") -> ServiceSignal:
    """Up, but no traffic (its weight is 0)."""
    return sig(service, requests=0, p95=None, samples=0)


POLICY = HealthPolicy()


# ---- rules -------------------------------------------------------------------------------------
def test_seed_error_rate_rule_is_strictly_above_ten_percent_with_enough_requests() -> None:
    assert evaluate(sig(errors=10), POLICY, True).verdict == "neutral"  # 10 % is not > 10 %
    ev = evaluate(sig(errors=11), POLICY, True)
    assert (ev.verdict, ev.rule) == ("sick", "seed_error_rate") and "11.0% > 10%" in ev.reason
    assert evaluate(sig(requests=19, errors=19), POLICY, True).verdict == "good"  # too few to judge
    assert evaluate(sig(requests=20, errors=3), POLICY, True).rule == "seed_error_rate"


def test_seed_p95_rule_is_strictly_above_500_ms_with_enough_samples() -> None:
    assert evaluate(sig(p95=500.0), POLICY, True).verdict == "neutral"
    ev = evaluate(sig(p95=500.1), POLICY, True)
    assert (ev.verdict, ev.rule) == ("sick", "seed_p95")
    assert evaluate(sig(p95=900.0, samples=19), POLICY, True).verdict == "good"


def test_good_needs_both_lower_thresholds() -> None:
    assert evaluate(sig(errors=1, p95=249.0), POLICY, True).verdict == "good"
    assert evaluate(sig(errors=2, p95=10.0), POLICY, True).verdict == "neutral"  # 2 % is not < 2 %
    assert evaluate(sig(p95=250.0), POLICY, True).verdict == "neutral"


def test_unreachable_needs_a_definite_failure_or_repeated_timeouts() -> None:
    assert evaluate(down(), POLICY, True).rule == "unreachable"
    assert evaluate(sig(reachable=False, kind="not_ready", failures=1), POLICY, True).rule == "unreachable"
    once = sig(reachable=False, kind="timeout", failures=1)
    assert evaluate(once, POLICY, True).verdict == "neutral"
    assert evaluate(replace(once, probe_failures=2), POLICY, True).rule == "unreachable"
    assert evaluate(sig(ejected=True), POLICY, True).rule == "envoy_ejected"


def test_never_seen_up_is_not_sick_without_traffic_evidence() -> None:
    assert evaluate(down(), POLICY, seen_up=False).verdict == "neutral"
    assert evaluate(sig(requests=50, errors=50, reachable=False, kind="refused", ejected=True), POLICY,
                    seen_up=False).rule == "seed_error_rate"


def test_policy_rejects_inverted_thresholds() -> None:
    with pytest.raises(ConfigError, match="healthy thresholds"):
        HealthPolicy(healthy_error_rate=0.2)
    with pytest.raises(ConfigError, match="sick_error_rate"):
        HealthPolicy(sick_error_rate=1.5)
    with pytest.raises(ConfigError):
        GovernorPolicy(burst=0)


# ---- the judge -----------------------------------------------------------------------------------
def test_unknown_until_seen_up_then_sick_at_once_and_healthy_only_after_the_dwell() -> None:
    clock = FakeClock()
    judge = HealthJudge(POLICY, ["xgboost"], clock)
    assert judge.observe(down()) is None and judge.services["xgboost"].state == UNKNOWN
    t = judge.observe(idle())
    assert t is not None and (t.before, t.after, t.rule) == (UNKNOWN, HEALTHY, "seen_up")
    t = judge.observe(down())
    assert t is not None and (t.after, t.rule) == (SICK, "unreachable")

    clock.advance(0.25)
    assert judge.observe(idle()) is None  # good evidence: the dwell starts now
    for _ in range(int(POLICY.dwell_s / 0.25) - 1):  # good, but not for long enough
        clock.advance(0.25)
        assert judge.observe(idle()) is None
    assert judge.services["xgboost"].state == SICK
    clock.advance(0.25)
    t = judge.observe(idle())
    assert t is not None and (t.after, t.rule) == (HEALTHY, "recovered")
    assert "dwell 5s" in t.reason


def test_a_bad_round_restarts_the_dwell() -> None:
    clock = FakeClock()
    judge = HealthJudge(POLICY, ["xgboost"], clock, initially_sick=["xgboost"])
    assert judge.services["xgboost"].state == SICK  # ejected by an earlier run: earn the way back
    judge.observe(idle())
    clock.advance(4.0)
    judge.observe(sig(errors=5))  # 5 %: inside the hysteresis band -> the dwell starts over
    clock.advance(4.0)
    assert judge.observe(idle()) is None
    clock.advance(4.9)
    assert judge.observe(idle()) is None
    clock.advance(0.2)
    assert judge.observe(idle()) is not None


def test_hysteresis_band_keeps_either_state() -> None:
    clock = FakeClock()
    judge = HealthJudge(POLICY, ["xgboost"], clock)
    judge.observe(idle())
    for _ in range(100):
        clock.advance(0.25)
        assert judge.observe(sig(errors=5, p95=300.0)) is None  # 5 %, 300 ms: neither
    assert judge.services["xgboost"].state == HEALTHY
    judge.observe(sig(errors=20))
    for _ in range(100):
        clock.advance(0.25)
        assert judge.observe(sig(errors=5, p95=300.0)) is None
    assert judge.services["xgboost"].state == SICK


# ---- governor --------------------------------------------------------------------------------------
def test_cooldown_then_token_bucket() -> None:
    clock = FakeClock()
    gov = ChangeGovernor(GovernorPolicy(cooldown_s=3.0, burst=2, refill_per_minute=2.0), clock)
    assert gov.check("xgboost") is None
    gov.record("xgboost")
    assert (gov.check("xgboost") or "").startswith("cooldown")
    assert gov.check("pytorch") is None  # per service
    clock.advance(3.0)
    gov.record("xgboost")
    clock.advance(3.0)
    assert (gov.check("xgboost") or "").startswith("rate limit")  # burst of 2 spent
    clock.advance(24.0)  # 30 s after the first: one token back
    assert gov.check("xgboost") is None


def test_token_bucket_allows_at_most_burst_plus_refill_in_any_minute() -> None:
    clock = FakeClock()
    policy = GovernorPolicy(cooldown_s=0.0, burst=2, refill_per_minute=2.0)
    gov = ChangeGovernor(policy, clock)
    times = []
    for _ in range(int(300 / 0.25)):  # try every 250 ms for 5 minutes
        if gov.check("x") is None:
            gov.record("x")
            times.append(clock())
        clock.advance(0.25)
    worst = max(sum(1 for t in times if start <= t < start + 60.0) for start in times)
    assert worst <= policy.max_per_minute == 4
    assert len(times) == 2 + 9  # the burst, then one per 30 s


# ---- plan ---------------------------------------------------------------------------------------
def _judged(states: dict[str, str]) -> dict[str, Any]:
    clock = FakeClock()
    judge = HealthJudge(POLICY, list(states), clock)
    for name, state in states.items():
        judge.services[name].state = state
        judge.services[name].rule = "unreachable" if state == SICK else None
    return judge.services


def test_plan_ejects_weighted_sick_services_and_restores_healthy_ones() -> None:
    weights = {"xgboost": 0.8, "pytorch": 0.2}
    proposals = plan(_judged({"xgboost": SICK, "pytorch": HEALTHY, "heuristic": SICK}), [], weights)
    assert [(p.service, p.action, p.rule, p.blocked) for p in proposals] == [
        ("xgboost", "eject", "unreachable", None)]  # the heuristic carries no weight: nothing to move
    proposals = plan(_judged({"xgboost": HEALTHY, "pytorch": HEALTHY}), ["xgboost"], weights)
    assert [(p.service, p.action) for p in proposals] == [("xgboost", "restore")]
    assert plan(_judged({"xgboost": UNKNOWN, "pytorch": HEALTHY}), ["xgboost"], weights) == []


def test_plan_holds_an_ejection_that_would_leave_no_alternative() -> None:
    weights = {"xgboost": 0.8, "pytorch": 0.2}
    proposals = plan(_judged({"xgboost": SICK, "pytorch": SICK}), [], weights)
    assert {p.service for p in proposals} == {"xgboost", "pytorch"}
    assert all(p.blocked and p.blocked.startswith("no_alternative") for p in proposals)
    (only,) = plan(_judged({"xgboost": SICK, "pytorch": HEALTHY}), [], {"xgboost": 1.0})
    assert only.blocked  # 100 % xgboost: ejecting it changes nothing (effective weights fall back)


def test_a_held_ejection_does_not_fire_once_the_service_is_recovering() -> None:
    weights = {"xgboost": 0.8, "pytorch": 0.2}
    judged = _judged({"xgboost": SICK, "pytorch": HEALTHY})
    judged["xgboost"].good_since = 100.0  # answering well again, waiting out the dwell
    assert plan(judged, [], weights) == []
    judged["xgboost"].good_since = None  # bad evidence again: the ejection is back on the table
    assert [(p.service, p.action) for p in plan(judged, [], weights)] == [("xgboost", "eject")]


# ---- flapping -------------------------------------------------------------------------------------
def simulate_flapping(policy: HealthPolicy, governor: GovernorPolicy, seconds: float = 60.0,
                      toggle_s: float = 2.0, tick_s: float = 0.25) -> tuple[list[tuple[float, str]], int]:
    """A server that dies and comes back every `toggle_s`, judged every `tick_s`; the reconciler's
    rules applied to an in-memory intent. Returns the changes (time, action) and the held ones."""
    clock = FakeClock(0.0)
    judge = HealthJudge(policy, ["xgboost", "pytorch"], clock)
    gov = ChangeGovernor(governor, clock)
    ejected: set[str] = set()
    changes, held = [], 0
    judge.observe(idle())
    judge.observe(idle("pytorch"))
    while clock() < seconds:
        up = int(clock() / toggle_s) % 2 == 1  # down first
        judge.observe(idle() if up else down())
        judge.observe(sig("pytorch"))
        for p in plan(judge.services, ejected, {"xgboost": 0.8, "pytorch": 0.2}):
            if p.blocked or gov.check(p.service) is not None:
                held += 1
                continue
            gov.record(p.service)
            (ejected.add if p.action == "eject" else ejected.discard)(p.service)
            changes.append((clock(), p.action))
        clock.advance(tick_s)
    return changes, held


def test_flapping_every_two_seconds_for_a_minute_makes_at_most_four_changes() -> None:
    changes, _ = simulate_flapping(HealthPolicy(), GovernorPolicy())
    assert len(changes) <= 4
    assert changes == [(0.0, "eject")]  # the dwell (5 s) never completes in 2 s up-phases


def test_rate_limit_binds_when_the_dwell_is_short() -> None:
    policy = HealthPolicy(dwell_s=0.5)
    changes, held = simulate_flapping(policy, GovernorPolicy(cooldown_s=0.0))
    worst = max(sum(1 for t, _ in changes if start <= t < start + 60.0) for start, _ in changes)
    # eject, restore (the burst), the next eject waits for a token at 30 s, the next restore for 60 s
    assert worst <= 4 and [a for _, a in changes] == ["eject", "restore", "eject"] and held > 0
    unlimited = GovernorPolicy(cooldown_s=0.0, burst=1000, refill_per_minute=1000)
    no_limit, _ = simulate_flapping(policy, unlimited)
    assert len(no_limit) >= 25  # what the limit prevented


# ---- the Reconciler on a real ControlPlane ----------------------------------------------------------
class RecordingBus(EventBus):
    def __init__(self, settings: Settings) -> None:
        super().__init__(settings.nats_url, "test")
        self.events: list[tuple[str, Any]] = []

    def publish(self, subject: str, event: Any) -> None:
        self.events.append((subject, event))
        super().publish(subject, event)


class ScriptedSignals:
    """Stands in for the SignalCollector's I/O: each round returns what the test put in `now`."""

    services = SERVICES
    latest = None
    edge_error = "scripted"

    def __init__(self) -> None:
        self.now = {s: idle(s) for s in SERVICES}

    async def collect(self) -> dict[str, ServiceSignal]:
        return dict(self.now)


async def _reconciler(settings: Settings, **config: Any) -> tuple[ControlPlane, Reconciler, ScriptedSignals,
                                                                 FakeClock, RecordingBus]:
    bus = RecordingBus(settings)
    cp = control_plane(settings, bus=bus)
    await cp.start()
    clock, signals = FakeClock(), ScriptedSignals()
    rec = Reconciler(cp, signals, HealingConfig(**config), clock=clock)  # type: ignore[arg-type]
    return cp, rec, signals, clock, bus


def health_events(bus: RecordingBus, service: str) -> list[HealthEvent]:
    return [e for subj, e in bus.events if subj == f"mesh.health.{service}"]


async def test_kill_ejects_through_apply_with_evidence_then_restores_after_dwell(settings: Settings) -> None:
    cp, rec, signals, clock, bus = await _reconciler(settings, policy=HealthPolicy(dwell_s=2.0),
                                                     governor=GovernorPolicy(cooldown_s=1.0))
    try:
        assert await rec.step() == []
        assert {n: h.state for n, h in rec.judge.services.items()} == dict.fromkeys(SERVICES, HEALTHY)
        signals.now["xgboost"] = down()
        clock.advance(0.25)
        (decision,) = await rec.step()
        assert (decision.actor, decision.action, decision.rule) == ("reconciler", "eject", "unreachable")
        assert decision.reason.startswith("xgboost: unreachable (http://127.0.0.1:1/ready: refused")
        assert cp.store.intent.ejected == ["xgboost"]
        assert cp.store.intent.effective_weights() == {"xgboost": 0.0, "pytorch": 1.0}
        sick_event = health_events(bus, "xgboost")[-1]
        assert not sick_event.healthy and sick_event.reason.startswith("unreachable:")
        assert decision.trigger_ids == [sick_event.id]
        assert decision.numbers["requests"] == 5 and decision.numbers["error_rate"] == 1.0
        assert decision.numbers["reachable"] == 0.0 and decision.numbers["ejected"] == 1.0
        assert decision.numbers["sick_error_rate"] == 0.1 and decision.numbers["window_s"] == 10.0
        assert "detected_at" in decision.numbers and "p95_ms" not in decision.numbers  # no evidence: absent
        assert cp.ledger.get(decision.seq) is not None

        signals.now["xgboost"] = idle()  # restarted; no traffic while ejected
        for _ in range(8):  # 2 s of good rounds: the dwell is not over until the 9th
            clock.advance(0.25)
            assert await rec.step() == []
        clock.advance(0.25)
        (restore,) = await rec.step()
        assert (restore.action, restore.rule) == ("restore", "recovered")
        assert cp.store.intent.ejected == [] and "dwell 2s" in restore.reason
        assert restore.trigger_ids == [health_events(bus, "xgboost")[-1].id]
        view = rec.services_view()
        assert view["services"]["xgboost"]["state"] == HEALTHY and view["applied"] == 2
        assert view["services"]["xgboost"]["signal"]["requests"] == 0
    finally:
        await cp.stop(grace=0.1)


async def test_frozen_intent_is_judged_but_not_changed(settings: Settings) -> None:
    cp, rec, signals, clock, _ = await _reconciler(settings)
    try:
        await rec.step()
        await cp.apply({"frozen": True}, actor="operator", rule="operator_request", reason="incident")
        seq = cp.ledger.last_seq
        signals.now["xgboost"] = down()
        for _ in range(8):
            clock.advance(0.25)
            assert await rec.step() == []
        assert rec.judge.services["xgboost"].state == SICK and cp.store.intent.ejected == []
        assert rec.suppressed == {"frozen": 8} and cp.ledger.last_seq == seq
        await cp.apply({"frozen": False}, actor="operator", rule="operator_request", reason="over")
        clock.advance(0.25)
        (decision,) = await rec.step()  # level-triggered: the held change happens now
        assert decision.action == "eject"
    finally:
        await cp.stop(grace=0.1)


async def test_hold_suppresses_and_cooldown_defers(settings: Settings) -> None:
    cp, rec, signals, clock, _ = await _reconciler(settings, policy=HealthPolicy(dwell_s=0.5),
                                                   governor=GovernorPolicy(cooldown_s=3.0))
    try:
        await rec.step()
        rec.hold("chaos experiment primary-killed")
        signals.now["xgboost"] = down()
        clock.advance(0.25)
        assert await rec.step() == [] and rec.suppressed == {"held": 1}
        assert rec.services_view()["held"] == "chaos experiment primary-killed"
        rec.release()
        assert len(await rec.step()) == 1
        signals.now["xgboost"] = idle()
        clock.advance(1.0)
        await rec.step()  # good since now
        clock.advance(0.5)
        assert await rec.step() == [] and rec.suppressed.get("cooldown") == 1  # healthy, but 1.5 s < 3 s
        clock.advance(1.5)
        (restore,) = await rec.step()
        assert restore.action == "restore"
    finally:
        await cp.stop(grace=0.1)


async def test_heartbeats_are_published_at_a_low_rate(settings: Settings) -> None:
    cp, rec, _, clock, bus = await _reconciler(settings, heartbeat_s=10.0)
    try:
        for _ in range(80):  # 20 s
            await rec.step()
            clock.advance(0.25)
        per_service = {s: len(health_events(bus, s)) for s in SERVICES}
        assert per_service == dict.fromkeys(SERVICES, 2)  # seen up at 0 s, heartbeat at 10 s
        assert all(e.healthy for s in SERVICES for e in health_events(bus, s))
        assert isinstance(msgspec.json.encode(health_events(bus, "xgboost")[0]), bytes)
    finally:
        await cp.stop(grace=0.1)


def test_with_ejected_touches_nothing_else() -> None:
    intent = RoutingIntent(weights={"xgboost": 0.7, "pytorch": 0.3}, ejected=["pytorch"], frozen=False)
    after = with_ejected("xgboost", True)(intent)
    assert after.ejected == ["pytorch", "xgboost"] and after.weights == intent.weights
    assert with_ejected("pytorch", False)(after).ejected == ["xgboost"]
    assert decision_numbers(None, HealingConfig())["dwell_s"] == 5.0


def test_config_from_env_names_the_bad_variable() -> None:
    config = HealingConfig.from_env({"MESH_HEALING_SCRAPE_S": "0.1", "MESH_HEALING_DWELL_S": "2",
                                     "MESH_HEALING_BURST": "3", "MESH_HEALING_MIN_REQUESTS": "50"})
    assert config.scrape_interval_s == 0.1 and config.policy.dwell_s == 2.0
    assert config.governor.burst == 3 and config.policy.min_requests == 50 and config.enabled
    assert not HealingConfig.from_env({"MESH_HEALING": "0"}).enabled
    with pytest.raises(ConfigError, match="MESH_HEALING_WINDOW_S='ten' must be a number"):
        HealingConfig.from_env({"MESH_HEALING_WINDOW_S": "ten"})
    with pytest.raises(ConfigError, match=r"MESH_HEALING_BURST='1\.5' must be an integer"):
        HealingConfig.from_env({"MESH_HEALING_BURST": "1.5"})
    with pytest.raises(ConfigError, match=r"MESH_HEALING_SCRAPE_S=0\.0 must be a positive"):
        HealingConfig.from_env({"MESH_HEALING_SCRAPE_S": "0"})
