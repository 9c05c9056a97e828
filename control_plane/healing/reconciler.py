"""The reconciler: health signals in, `ejected` changes out through `ControlPlane.apply()`.

Each round (`scrape_interval_s`): collect signals -> `HealthJudge` (sick / healthy with hysteresis
and dwell, `health_rules`) -> HealthEvents on `mesh.health.<service>` for transitions (and a
heartbeat every `heartbeat_s`) -> `plan()` (desired vs the intent's `ejected`) -> for each
proposal: suppressed while the intent is frozen or a hold (chaos lock) is on, deferred by the
governor's cooldown and token bucket, else applied as actor `reconciler` with the rule that fired,
the health event that triggered it and the numbers it saw, so the ledger answers "why".

Envoy's outlier detection protects requests the moment a server dies; the reconciler then moves
the weight so the dead tier stops being tried first at all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from control_plane.app import IntentFrozenError
from control_plane.healing.config import HealingConfig
from control_plane.healing.health_rules import (
    HEALTHY,
    SICK,
    UNKNOWN,
    ChangeGovernor,
    HealthJudge,
    Proposal,
    ServiceHealth,
    Transition,
    plan,
)
from control_plane.healing.signals import ServiceSignal, SignalCollector
from control_plane.intent import RoutingIntent
from data_plane.contracts import subjects
from data_plane.contracts.errors import MeshError
from data_plane.contracts.events import Decision, HealthEvent

if TYPE_CHECKING:
    from control_plane.app import ControlPlane

log = logging.getLogger(__name__)
ACTOR = "reconciler"
_DETECT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


class HealingMetrics:
    """Prometheus metrics of the loop, in the control plane's registry (its /metrics)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.sick = Gauge("mesh_service_sick", "1 while the healing loop judges the service sick",
                          ["service"], registry=registry)
        self.changes = Counter("mesh_healing_changes", "Ejections and restores the reconciler applied",
                               ["service", "action", "rule"], registry=registry)
        self.suppressed = Counter("mesh_healing_suppressed", "Proposals held back, by why",
                                  ["why"], registry=registry)
        self.detect_to_ack = Histogram("mesh_healing_detect_to_ack_seconds",
                                       "From the round that judged a service sick/healthy to the decision "
                                       "ACKed by the Envoys", buckets=_DETECT_BUCKETS, registry=registry)
        self.round_seconds = Gauge("mesh_healing_round_seconds", "Duration of the last healing round",
                                   registry=registry)


def _metrics_for(cp: ControlPlane) -> HealingMetrics:
    try:
        return HealingMetrics(cp.metrics.registry)
    except ValueError:  # a second loop on the same control plane (tests): keep its own registry
        return HealingMetrics(CollectorRegistry())


def with_ejected(service: str, ejected: bool) -> Callable[[RoutingIntent], RoutingIntent]:
    """The intent change: `service` added to (or removed from) `ejected`, nothing else touched."""
    def change(intent: RoutingIntent) -> RoutingIntent:
        names = set(intent.ejected)
        if ejected:
            names.add(service)
        else:
            names.discard(service)
        return msgspec.structs.replace(intent, ejected=sorted(names))
    return change


def decision_numbers(sig: ServiceSignal | None, config: HealingConfig) -> dict[str, float]:
    """The numbers a decision records: what the signal said and the thresholds it was judged by."""
    p = config.policy
    out: dict[str, float] = {"sick_error_rate": p.sick_error_rate, "sick_p95_ms": p.sick_p95_ms,
                             "healthy_error_rate": p.healthy_error_rate, "healthy_p95_ms": p.healthy_p95_ms,
                             "dwell_s": p.dwell_s, "min_requests": float(p.min_requests)}
    if sig is None:
        return out
    out.update(window_s=sig.window_s, requests=float(sig.requests), errors=float(sig.errors),
               latency_samples=float(sig.latency_samples), probe_failures=float(sig.probe_failures),
               detected_at=sig.ts)
    for name in ("error_rate", "p95_ms"):
        value = getattr(sig, name)
        if value is not None:
            out[name] = round(float(value), 6)
    if sig.ejected is not None:
        out["ejected"] = 1.0 if sig.ejected else 0.0
    if sig.reachable is not None:
        out["reachable"] = 1.0 if sig.reachable else 0.0
    return out


class Reconciler:
    """Runs the rounds; the judge and governor hold the logic, this class does the I/O."""

    def __init__(self, cp: ControlPlane, collector: SignalCollector, config: HealingConfig, *,
                 clock: Callable[[], float] = time.monotonic,
                 metrics: HealingMetrics | None = None) -> None:
        self.cp = cp
        self.collector = collector
        self.config = config
        self.clock = clock
        self.judge = HealthJudge(config.policy, collector.services, clock,
                                 initially_sick=cp.store.intent.ejected)
        self.governor = ChangeGovernor(config.governor, clock)
        self.metrics = metrics or _metrics_for(cp)
        self.hold_reason: str | None = None
        self.rounds = 0
        self.applied = 0
        self.suppressed: dict[str, int] = {}
        self.last_round_s: float | None = None
        self._last_event: dict[str, float] = {}
        self._last_suppression: dict[tuple[str, str], str] = {}

    # ---- chaos lock --------------------------------------------------------------------------
    def hold(self, reason: str) -> None:
        """Propose nothing until `release()` (a chaos experiment that must see the raw mesh)."""
        self.hold_reason = reason or "held"
        log.info("reconciler held: %s", self.hold_reason)

    def release(self) -> None:
        self.hold_reason = None
        log.info("reconciler released")

    # ---- the loop ----------------------------------------------------------------------------
    async def run(self) -> None:
        """Round after round until cancelled; a failing round is logged and the next one runs."""
        while True:
            started = self.clock()
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("healing round failed; the next round runs in %.2fs",
                              self.config.scrape_interval_s)
            self.last_round_s = self.clock() - started
            self.metrics.round_seconds.set(self.last_round_s)
            await asyncio.sleep(max(0.0, self.config.scrape_interval_s - self.last_round_s))

    async def step(self) -> list[Decision]:
        """One round: signals, judgement, events, decisions."""
        signals = await self.collector.collect()
        self.rounds += 1
        for sig in signals.values():
            transition = self.judge.observe(sig)
            if transition is not None:
                self._announce(transition)
        self._heartbeats()
        return await self.reconcile()

    async def reconcile(self) -> list[Decision]:
        """Apply what `plan()` proposes and the rules allow (frozen, hold, cooldown, rate limit)."""
        decisions = []
        intent = self.cp.store.intent
        for proposal in plan(self.judge.services, intent.ejected, intent.weights):
            why = self._blocked(proposal, intent)
            if why is not None:
                self._suppress(proposal, why)
                continue
            decision = await self._apply(proposal)
            if decision is not None:
                decisions.append(decision)
        return decisions

    def _blocked(self, p: Proposal, intent: RoutingIntent) -> str | None:
        if p.blocked is not None:
            return p.blocked
        if intent.frozen:
            return "frozen: the operator froze automation"
        if self.hold_reason is not None:
            return f"held: {self.hold_reason}"
        return self.governor.check(p.service)

    def _suppress(self, p: Proposal, why: str) -> None:
        kind = why.split(":", 1)[0]
        self.suppressed[kind] = self.suppressed.get(kind, 0) + 1
        self.metrics.suppressed.labels(kind).inc()
        key = (p.service, p.action)
        if self._last_suppression.get(key) != kind:  # once per reason, not every 250 ms
            self._last_suppression[key] = kind
            log.info("reconciler would %s %s (%s) but does not: %s", p.action, p.service, p.rule, why)

    async def _apply(self, p: Proposal) -> Decision | None:
        h = self.judge.services[p.service]
        self.governor.record(p.service)  # also on failure: a broken change is not retried at 4 Hz
        self._last_suppression.pop((p.service, p.action), None)
        try:
            decision = await self.cp.apply(
                with_ejected(p.service, p.action == "eject"), actor=ACTOR, action=p.action, rule=p.rule,
                reason=f"{p.service}: {p.reason}", trigger_ids=[h.event_id] if h.event_id else [],
                numbers=decision_numbers(h.signal, self.config))
        except IntentFrozenError:
            self._suppress(p, "frozen: the operator froze automation")
            return None
        except MeshError as exc:
            log.warning("reconciler could not %s %s: %s", p.action, p.service, exc)
            return None
        self.applied += 1
        self.metrics.changes.labels(p.service, p.action, p.rule).inc()
        if decision.acked and h.signal is not None:
            self.metrics.detect_to_ack.observe(max(0.0, decision.ts - h.signal.ts))
        log.info("reconciler %s %s (%s): %s -> version %s acked=%s", p.action, p.service, p.rule, p.reason,
                 decision.xds_version, decision.acked)
        return decision

    # ---- events ------------------------------------------------------------------------------
    def _announce(self, t: Transition) -> None:
        h = self.judge.services[t.service]
        event = self._event(h, f"{t.rule}: {t.reason}")
        h.event_id = event.id
        self.metrics.sick.labels(t.service).set(1 if t.after == SICK else 0)
        log.info("%s: %s -> %s (%s) %s", t.service, t.before, t.after, t.rule, t.reason)

    def _heartbeats(self) -> None:
        now = self.clock()
        for name, h in self.judge.services.items():
            if h.state == UNKNOWN or now - self._last_event.get(name, -1e18) < self.config.heartbeat_s:
                continue
            self._event(h, f"{h.rule or h.state}: {h.reason or 'no change'}")

    def _event(self, h: ServiceHealth, reason: str) -> HealthEvent:
        sig = h.signal
        event = HealthEvent(service=h.service, healthy=h.state == HEALTHY, reason=reason[:500],
                            error_rate=sig.error_rate if sig else None, p95_ms=sig.p95_ms if sig else None,
                            ejected=sig.ejected if sig else None)
        self.cp.bus.publish(subjects.health(h.service), event)
        self._last_event[h.service] = self.clock()
        return event

    # ---- reading -----------------------------------------------------------------------------
    def services_view(self) -> dict[str, Any]:
        """`GET /api/v1/health/services`: per service state, since, rule, signal, and the intent."""
        intent = self.cp.store.intent
        now_mono, now_wall = self.clock(), time.time()
        services = {}
        for name, h in self.judge.services.items():
            age = now_mono - h.since
            services[name] = {
                "state": h.state, "since": round(now_wall - age, 3), "for_s": round(age, 3),
                "rule": h.rule, "reason": h.reason, "seen_up": h.seen_up,
                "healthy_for_s": round(now_mono - h.good_since, 3) if h.good_since is not None else None,
                "ejected_in_intent": name in intent.ejected, "weight": intent.weights.get(name, 0.0),
                "effective_weight": intent.effective_weights().get(name, 0.0), "event_id": h.event_id,
                "signal": h.signal.to_dict() if h.signal else None,
            }
        return {
            "services": services, "frozen": intent.frozen, "held": self.hold_reason,
            "edge": {"reachable": self.collector.latest is not None, "error": self.collector.edge_error},
            "rounds": self.rounds, "applied": self.applied, "suppressed": dict(self.suppressed),
            "last_round_ms": round(self.last_round_s * 1000, 2) if self.last_round_s is not None else None,
            "config": self.config.to_dict(),
        }
