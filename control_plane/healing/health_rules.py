"""The healing loop's decision logic: pure, clock injected, no I/O (unit-tested with a fake clock).

Per service, a state machine over `ServiceSignal`s:

- **sick** at once when any rule fires (first match names the rule):
  `unreachable` — a probe was refused or answered not-ready (one round is enough: that is a fact),
  or timed out `timeout_failures` rounds in a row (a busy machine can miss one probe);
  `envoy_ejected` — Envoy's outlier detection has every host of the service out;
  `seed_error_rate` — error rate > 10 % over the window with >= `min_requests` attempts;
  `seed_p95` — p95 > 500 ms over the window with >= `min_requests` timed answers (seed 000's
  auto-rollback rule).
  The first two only count once the service has been seen up since the loop started: a service
  that was never started (a partial mesh) is `unknown`, not sick, and nothing is moved for it.
- **healthy** again only after the evidence has been *good* without a break for `dwell_s`:
  reachable, not ejected, and (fewer than `min_requests` attempts, or error rate < 2 % and p95 <
  250 ms). Between the two threshold pairs nothing changes (hysteresis band).

`ChangeGovernor` limits what the reconciler may do about it: after a change of a service, no
other change of that service for `cooldown_s`; and a token bucket per service (`burst` tokens,
`refill_per_minute`), so in any 60 s a service changes at most `burst + refill_per_minute` times.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from control_plane.healing.signals import ServiceSignal
from data_plane.contracts.errors import ConfigError

Clock = Callable[[], float]
HEALTHY, SICK, UNKNOWN = "healthy", "sick", "unknown"
RECOVERED = "recovered"


@dataclass(frozen=True)
class HealthPolicy:
    """Thresholds: sick above the seed's, healthy only below the lower pair for `dwell_s`."""

    sick_error_rate: float = 0.10
    sick_p95_ms: float = 500.0
    healthy_error_rate: float = 0.02
    healthy_p95_ms: float = 250.0
    min_requests: int = 20
    dwell_s: float = 5.0
    timeout_failures: int = 2

    def __post_init__(self) -> None:
        for name in ("sick_error_rate", "healthy_error_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0 or math.isnan(value):
                raise ConfigError(f"healing policy: {name}={value} must be between 0 and 1")
        for name in ("sick_p95_ms", "healthy_p95_ms", "dwell_s"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"healing policy: {name}={getattr(self, name)} must be >= 0")
        if self.healthy_error_rate > self.sick_error_rate or self.healthy_p95_ms > self.sick_p95_ms:
            raise ConfigError("healing policy: the healthy thresholds must not be above the sick ones "
                              f"(errors {self.healthy_error_rate} vs {self.sick_error_rate}, p95 "
                              f"{self.healthy_p95_ms} vs {self.sick_p95_ms} ms)")
        if self.min_requests < 1 or self.timeout_failures < 1:
            raise ConfigError("healing policy: min_requests and timeout_failures must be >= 1")


@dataclass(frozen=True)
class Evidence:
    verdict: str  # sick | good | neutral
    rule: str | None = None
    reason: str = ""


def evaluate(sig: ServiceSignal, policy: HealthPolicy, seen_up: bool) -> Evidence:
    """What one round says about a service, by the rules in the module docstring."""
    definite = sig.probe_kind in ("refused", "not_ready") or sig.probe_failures >= policy.timeout_failures
    if seen_up and sig.reachable is False and definite:
        return Evidence("sick", "unreachable",
                        f"unreachable ({sig.probe_error}; "
                        f"{sig.probe_failures} failed probe round(s) in a row)")
    if seen_up and sig.ejected:
        return Evidence("sick", "envoy_ejected",
                        f"Envoy's outlier detection ejected it "
                        f"({sig.errors} failed of {sig.requests} attempts in {sig.window_s:g}s)")
    enough = sig.requests >= policy.min_requests
    if enough and sig.error_rate is not None and sig.error_rate > policy.sick_error_rate:
        return Evidence("sick", "seed_error_rate",
                        f"error rate {sig.error_rate:.1%} > {policy.sick_error_rate:.0%} "
                        f"({sig.errors}/{sig.requests} in {sig.window_s:g}s)")
    timed = sig.latency_samples >= policy.min_requests
    if timed and sig.p95_ms is not None and sig.p95_ms > policy.sick_p95_ms:
        return Evidence("sick", "seed_p95",
                        f"p95 {sig.p95_ms:.0f} ms > {policy.sick_p95_ms:.0f} ms "
                        f"({sig.latency_samples} answers in {sig.window_s:g}s)")
    if sig.reachable is False or sig.ejected:
        return Evidence("neutral", None, "not reachable or ejected (never seen up)" if not seen_up
                        else "a probe failed once (waiting for another round)")
    errors_ok = not enough or sig.error_rate is None or sig.error_rate < policy.healthy_error_rate
    latency_ok = not timed or sig.p95_ms is None or sig.p95_ms < policy.healthy_p95_ms
    if errors_ok and latency_ok:
        return Evidence("good")
    return Evidence("neutral", None, "between the sick and healthy thresholds")


@dataclass
class ServiceHealth:
    """The judged state of one service (mutable; owned by HealthJudge)."""

    service: str
    state: str
    since: float  # clock time of the last state change
    seen_up: bool = False
    good_since: float | None = None
    rule: str | None = None
    reason: str = ""
    signal: ServiceSignal | None = None
    event_id: str | None = None  # the HealthEvent that announced the current state


@dataclass(frozen=True)
class Transition:
    service: str
    before: str
    after: str
    rule: str
    reason: str
    signal: ServiceSignal


class HealthJudge:
    """Turns each round's signals into per-service states (see the module docstring)."""

    def __init__(self, policy: HealthPolicy, services: Iterable[str], clock: Clock,
                 initially_sick: Iterable[str] = ()) -> None:
        self.policy = policy
        self.clock = clock
        now = clock()
        sick = set(initially_sick)
        # A service that a previous run ejected starts sick: it must earn its way back (dwell).
        self.services = {s: ServiceHealth(s, SICK if s in sick else UNKNOWN, now, seen_up=False,
                                          rule="ejected_at_start" if s in sick else None)
                         for s in services}

    def observe(self, sig: ServiceSignal) -> Transition | None:
        """Feed one signal; returns the transition when the state changed."""
        h = self.services[sig.service]
        now = self.clock()
        h.signal = sig
        if sig.reachable or (sig.reachable is None and sig.requests > sig.errors):
            h.seen_up = True
        ev = evaluate(sig, self.policy, h.seen_up)
        if ev.verdict == "sick":
            h.good_since = None
            if h.state != SICK:
                return self._move(h, SICK, ev.rule or "sick", ev.reason, sig, now)
            h.rule, h.reason = ev.rule, ev.reason  # still sick: keep the freshest evidence
            return None
        if ev.verdict != "good":
            h.good_since = None
            return None
        if h.state == UNKNOWN:
            if h.seen_up:
                return self._move(h, HEALTHY, "seen_up", "answers its probes", sig, now)
            return None
        if h.state == SICK:
            if h.good_since is None:
                h.good_since = now
            if now - h.good_since >= self.policy.dwell_s:
                return self._move(h, HEALTHY, RECOVERED, _recovered_reason(sig, now - h.good_since,
                                                                          self.policy), sig, now)
        return None

    def _move(self, h: ServiceHealth, state: str, rule: str, reason: str, sig: ServiceSignal,
              now: float) -> Transition:
        before = h.state
        h.state, h.since, h.rule, h.reason = state, now, rule, reason
        h.good_since = None
        return Transition(h.service, before, state, rule, reason, sig)


def _recovered_reason(sig: ServiceSignal, held: float, policy: HealthPolicy) -> str:
    rate = "no traffic" if sig.error_rate is None else f"error rate {sig.error_rate:.1%}"
    p95 = "" if sig.p95_ms is None else f", p95 {sig.p95_ms:.0f} ms"
    return (f"healthy for {held:.1f}s (dwell {policy.dwell_s:g}s): reachable, not "
            f"ejected, {rate}{p95} (below {policy.healthy_error_rate:.0%} / "
            f"{policy.healthy_p95_ms:.0f} ms)")


@dataclass(frozen=True)
class GovernorPolicy:
    """Anti-flapping limits per service: a cooldown after each change and a token bucket."""

    cooldown_s: float = 3.0
    burst: int = 2
    refill_per_minute: float = 2.0

    def __post_init__(self) -> None:
        if self.cooldown_s < 0 or self.burst < 1 or self.refill_per_minute < 0:
            raise ConfigError("healing governor: cooldown_s >= 0, burst >= 1 and refill_per_minute >= 0 "
                              f"are required (got {self.cooldown_s}, {self.burst}, "
                              f"{self.refill_per_minute})")

    @property
    def max_per_minute(self) -> float:
        """The most changes of one service in any 60 s window."""
        return self.burst + self.refill_per_minute


@dataclass
class TokenBucket:
    capacity: float
    refill_per_s: float
    tokens: float
    updated: float

    def _refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + max(0.0, now - self.updated) * self.refill_per_s)
        self.updated = now

    def available(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= 1.0 - 1e-9

    def take(self, now: float) -> None:
        self._refill(now)
        self.tokens -= 1.0


@dataclass
class ChangeGovernor:
    """May this service change now? Cooldown since its last change, then its token bucket."""

    policy: GovernorPolicy
    clock: Clock
    last_change: dict[str, float] = field(default_factory=dict)
    buckets: dict[str, TokenBucket] = field(default_factory=dict)

    def _bucket(self, service: str, now: float) -> TokenBucket:
        if service not in self.buckets:
            self.buckets[service] = TokenBucket(self.policy.burst, self.policy.refill_per_minute / 60.0,
                                                self.policy.burst, now)
        return self.buckets[service]

    def check(self, service: str) -> str | None:
        """None when a change is allowed now, else why not."""
        now = self.clock()
        last = self.last_change.get(service)
        if last is not None and now - last < self.policy.cooldown_s:
            return f"cooldown: changed {now - last:.1f}s ago (cooldown {self.policy.cooldown_s:g}s)"
        if not self._bucket(service, now).available(now):
            return (f"rate limit: at most {self.policy.max_per_minute:g} changes per minute "
                    f"(burst {self.policy.burst}, {self.policy.refill_per_minute:g}/min)")
        return None

    def record(self, service: str) -> None:
        now = self.clock()
        self.last_change[service] = now
        self._bucket(service, now).take(now)


@dataclass(frozen=True)
class Proposal:
    """One change the reconciler wants: eject or restore a service."""

    service: str
    action: str  # eject | restore
    rule: str
    reason: str
    blocked: str | None = None  # why the plan itself holds it back


NO_ALTERNATIVE = "no_alternative"


def plan(health: Mapping[str, ServiceHealth], ejected: Iterable[str],
         weights: Mapping[str, float]) -> list[Proposal]:
    """Desired vs actual: eject sick services that carry weight, restore healthy ejected ones.

    Level-triggered: a change that was held back (cooldown, frozen) is proposed again next round.
    An ejection is held back when no other weighted service would be left that is not ejected and
    not sick: `RoutingIntent.effective_weights()` then falls back to the operator's weights anyway,
    so the change would move nothing (an outage of every model, or a mesh being stopped).
    A sick service whose evidence is good again (recovering: `good_since` set, waiting out the
    dwell) is not ejected: an ejection held back while it was down (no alternative, cooldown) must
    not fire on stale evidence once it is back (seen in a chaos run: a restarted primary ejected
    0.2 s before its recovery completed, which spent the rate limit the next real fault needed).
    """
    out = []
    current = set(ejected)
    for name, h in sorted(health.items()):
        recovering = h.good_since is not None
        if h.state == SICK and not recovering and name not in current and weights.get(name, 0.0) > 0.0:
            others = [n for n, w in weights.items() if w > 0.0 and n != name and n not in current
                      and (n not in health or health[n].state != SICK)]
            blocked = None if others else (f"{NO_ALTERNATIVE}: every other weighted service is sick or "
                                           "ejected, so ejecting would move no traffic")
            out.append(Proposal(name, "eject", h.rule or "sick", h.reason, blocked))
        elif h.state == HEALTHY and name in current:
            out.append(Proposal(name, "restore", h.rule or RECOVERED, h.reason))
    return out
