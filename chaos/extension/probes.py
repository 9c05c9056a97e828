"""Chaos Toolkit probes for the mesh (provider type "python", module "chaos.extension.probes").

Two kinds:
- measurements that return numbers (for steady-state tolerances, e.g. jsonpath `$.ok`);
- `expect_*` probes for the method: they wait up to a deadline for the mesh to react and raise
  `ActivityFailed` when it did not, so the runner reports the experiment as failed.
Marks (`actions.mark`) name instants: windows are "since mark X (until mark Y)".
"""

from __future__ import annotations

import time
from typing import Any

from chaoslib.exceptions import ActivityFailed

from chaos.extension import context
from chaos.extension.actions import ejection_counters
from chaos.extension.load import BackgroundLoad
from chaos.extension.mesh import ejected_hosts, http_json

__all__ = ["client_slo", "client_traffic", "current_weights", "envoy_ejections", "expect_client_errors_below",
           "expect_ejected", "expect_max_weight_changes", "expect_served_by", "expect_weights_moved",
           "ledger_entries", "traffic_summary"]

POLL_S = 0.05


def client_slo(max_error_rate: float = 0.001, max_p99_ms: float = 500.0, sample_s: float = 3.0,
               rate: float = 50.0, min_requests: int = 20) -> dict[str, Any]:
    """Steady state from a client's view: a short dedicated load; `ok` when both SLOs hold."""
    ctx = context.current()
    load = BackgroundLoad(f"{ctx.settings.edge_url}/api/v1/predict", rate, sample_s,
                          seed=ctx.seed + 10_000)
    load.start()
    load.stop_when_done(timeout=sample_s + 10.0)
    w = load.window(None, None)
    ok = (w.requests >= min_requests and w.error_rate <= max_error_rate and w.p99_ms <= max_p99_ms)
    return {"ok": ok, **w.to_dict(), "max_error_rate": max_error_rate, "max_p99_ms": max_p99_ms}


def client_traffic(since_mark: str | None = None, until_mark: str | None = None,
                   last_s: float | None = None) -> dict[str, Any]:
    """What the experiment's background load saw: requests, errors, p50/p99, who answered."""
    ctx = context.current()
    start = time.time() - last_s if last_s is not None else ctx.mark_time(since_mark)
    return ctx.window(start, ctx.mark_time(until_mark)).to_dict()


def expect_client_errors_below(max_error_rate: float = 0.001, since_mark: str | None = None,
                               until_mark: str | None = None, min_requests: int = 20) -> dict[str, Any]:
    """Client errors (no answer or non-2xx) in the window stay below `max_error_rate`."""
    w = client_traffic(since_mark, until_mark)
    if w["requests"] < min_requests:
        raise ActivityFailed(f"only {w['requests']} client requests in the window (need {min_requests})")
    if w["error_rate"] > max_error_rate:
        raise ActivityFailed(f"client error rate {w['error_rate']:.4%} > {max_error_rate:.4%} "
                             f"({w['errors']} of {w['requests']})")
    return w


def expect_served_by(model_types: list[str], min_share: float = 0.99, since_mark: str | None = None,
                     settle_s: float = 0.0, min_requests: int = 10) -> dict[str, Any]:
    """At least `min_share` of answers since the mark (+settle_s) came from these model types."""
    ctx = context.current()
    start = ctx.mark_time(since_mark)
    w = ctx.window((start or ctx.started_at) + settle_s, None)
    share = sum(v for k, v in w.model_types.items() if k in model_types) / w.requests if w.requests else 0.0
    out = {**w.to_dict(), "share": round(share, 6), "model_types_expected": model_types}
    if w.requests < min_requests:
        raise ActivityFailed(f"only {w.requests} answers to judge (need {min_requests})")
    if share < min_share:
        raise ActivityFailed(f"{share:.2%} of answers came from {', '.join(model_types)} "
                             f"(need {min_share:.2%}); seen: {w.model_types}")
    return out


def current_weights() -> dict[str, float]:
    """Effective champion weights from the operator API (/api/v1/status)."""
    ctx = context.current()
    status, body = http_json("GET", f"{ctx.settings.operator_url}/api/v1/status")
    if status != 200 or not isinstance(body, dict):
        raise ActivityFailed(f"operator status unavailable ({status}: {body})")
    return dict(body.get("effective_weights") or {})


def expect_weights_moved(away_from: str = "xgboost", within_ms: int = 1000, since_mark: str = "fault",
                         min_drop: float = 0.05) -> dict[str, Any]:
    """The effective weight of `away_from` dropped by `min_drop` within `within_ms` of the mark."""
    ctx = context.current()
    t0 = ctx.mark_time(since_mark) or ctx.started_at
    before = ctx.mark_weights.get(since_mark, {}).get(away_from, 1.0)
    deadline = t0 + within_ms / 1000
    seen: dict[str, float] = {}
    while True:
        try:
            seen = current_weights()
        except ActivityFailed:
            seen = {}
        if seen and seen.get(away_from, 0.0) <= before - min_drop:
            return {"moved_after_ms": round((time.time() - t0) * 1000, 1), "before": before, "now": seen}
        if time.time() > deadline:
            raise ActivityFailed(f"{away_from} weight did not drop from {before:.2f} within {within_ms} ms "
                                 f"(now {seen})")
        time.sleep(POLL_S)


def envoy_ejections() -> dict[str, list[str]]:
    """Edge hosts currently out of rotation, per cluster (edge admin /clusters health flags)."""
    return ejected_hosts(context.current().settings)


def expect_ejected(cluster: str = "xgboost", within_ms: int = 2000, since_mark: str = "fault",
                   or_rerouted: bool = False) -> dict[str, Any]:
    """The edge Envoy ejected `cluster`'s host (outlier detection) within `within_ms` of the mark.

    `or_rerouted`: the control plane's weight move counts too. Envoy ejects after a run of failed
    attempts; when the healing loop moved the cluster's weight to 0 first (its probe sees a killed
    server in ~0.25 s), no attempts reach the host any more and Envoy has nothing to eject on:
    traffic is off the host either way, which is what the experiment asks.
    """
    ctx = context.current()
    t0 = ctx.mark_time(since_mark) or ctx.started_at
    base = ctx.mark_ejections.get(since_mark, {}).get(cluster, 0)
    deadline = t0 + within_ms / 1000
    while True:
        now = ejection_counters(ctx.settings).get(cluster, 0)
        hosts = ejected_hosts(ctx.settings).get(cluster)
        if now > base or hosts:
            return {"ejected_after_ms": round((time.time() - t0) * 1000, 1), "ejections": now - base,
                    "hosts": hosts or [], "by": "edge outlier detection"}
        if or_rerouted and current_weights().get(cluster, 1.0) == 0.0:
            return {"ejected_after_ms": round((time.time() - t0) * 1000, 1), "ejections": 0, "hosts": [],
                    "by": "control plane (weight 0 before Envoy saw enough failures)"}
        if time.time() > deadline:
            raise ActivityFailed(f"the edge did not eject {cluster} within {within_ms} ms")
        time.sleep(POLL_S)


def ledger_entries(actor: str | None = None, limit: int = 500) -> list[dict[str, Any]]:
    """Decisions recorded since the experiment started (operator API /api/v1/decisions)."""
    ctx = context.current()
    since = ctx.ledger_seq or 0
    url = f"{ctx.settings.operator_url}/api/v1/decisions?since={since}&limit={limit}"
    status, body = http_json("GET", url)
    if status != 200 or not isinstance(body, dict):
        raise ActivityFailed(f"decisions unavailable ({status}: {body})")
    items = [d for d in body.get("decisions", []) if int(d.get("seq", 0)) > since]
    return [d for d in items if actor is None or d.get("actor") == actor]


def expect_max_weight_changes(max_per_minute: int = 4, actor: str = "reconciler") -> dict[str, Any]:
    """Anti-flapping: the automation changed routing at most `max_per_minute` times in any 60 s."""
    entries = ledger_entries(actor=actor)
    times = sorted(float(d.get("ts") or d.get("at") or 0) for d in entries)
    worst = 0
    for i, t in enumerate(times):
        worst = max(worst, sum(1 for u in times[i:] if u - t < 60.0))
    out = {"changes": len(entries), "worst_per_minute": worst,
           "actions": [f"{d.get('action')}: {d.get('reason', '')[:80]}" for d in entries]}
    if worst > max_per_minute:
        raise ActivityFailed(f"{worst} routing changes by {actor} within 60 s (allowed {max_per_minute})")
    return out


def traffic_summary(window: int = 60) -> dict[str, Any]:
    """The control plane's live edge numbers (/api/v1/traffic/summary), when it serves them."""
    ctx = context.current()
    status, body = http_json("GET", f"{ctx.settings.operator_url}/api/v1/traffic/summary?window={window}")
    if status != 200 or not isinstance(body, dict):
        raise ActivityFailed(f"traffic summary unavailable ({status})")
    return {k: v for k, v in body.items() if k != "history"}


def slo_met(value: dict[str, Any] | None = None) -> bool:
    """Tolerance for `client_slo`: its `ok` field (Chaos Toolkit passes the probe's output as `value`)."""
    return bool(isinstance(value, dict) and value.get("ok"))
