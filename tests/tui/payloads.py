"""Recorded operator-API answers (docs/operator-api.md; shapes as control_plane/operator_api.py sends).

Fixed timestamps (2026-01-01 UTC) and numbers keep snapshot tests deterministic. Every function
returns a fresh copy so a test may change what it got.
"""

from __future__ import annotations

import copy
import math
from typing import Any

T0 = 1767225600.0  # 2026-01-01 00:00:00 UTC
FEATURES = ("amount", "merchant_category", "hour_of_day", "day_of_week", "distance_from_home",
            "distance_from_last_txn", "is_foreign", "velocity_last_1h", "velocity_last_24h",
            "avg_amount_last_7d", "card_age_days")
CATEGORICAL = {"merchant_category", "hour_of_day", "day_of_week", "is_foreign"}


def _service(kind: str, url: str, ports: list[int], healthy: bool = True) -> dict[str, Any]:
    return {"kind": kind, "url": url, "ports": ports, "healthy": healthy, "status": 200 if healthy else None,
            "error": None if healthy else "Cannot connect to host 127.0.0.1:8003 ssl:default "
                                          "[Connect call failed ('127.0.0.1', 8003)]"}


def _node(connected: bool, acked: str | None, state: str, version: str = "42") -> dict[str, Any]:
    """One Envoy's xDS view, as `/api/v1/status` `nodes` sends it."""
    per_type = {t: acked for t in ("cds", "eds", "lds", "rds")}
    return {"connected": connected, "streams": 1 if connected else 0, "snapshot_version": version,
            "acked_version": acked, "acked": per_type, "envoy_versions": dict(per_type), "nacked": {},
            "nacked_version": None, "error_detail": None, "subscribed": ["cds", "eds", "lds", "rds"],
            "pushes": 4 * int(version), "acks": 4 * int(acked or 0), "nacks": 0, "state": state,
            "error": None}


_INTENT = {
    "weights": {"xgboost": 0.8, "pytorch": 0.2},
    "canary": {"model": "xgboost", "weight": 0.25, "version": "4"},
    "shadow": None,
    "ejected": ["heuristic"],
    "pins": {"pytorch": "2"},
    "frozen": False,
    "overrides": {},
    "sticky": True,
}

_STATUS = {
    "intent": _INTENT,
    "effective_weights": {"xgboost": 0.8, "pytorch": 0.2},
    "frozen": False,
    "version": 42,
    "last_good_version": 42,
    "nodes": {
        "edge": _node(True, "42", "ack"),
        "sidecar-heuristic": _node(False, "40", "pending"),
        "sidecar-pytorch": _node(True, "42", "ack"),
        "sidecar-xgboost": _node(True, "42", "ack"),
    },
    "ledger": {"last_seq": 6},
    "events": {"connected": True, "published": 18342, "dropped": 0},
    "ads": {"host": "127.0.0.1", "port": 18000},
    "services": {
        "nats": _service("nats", "http://127.0.0.1:8222/healthz", [4222, 8222]),
        "edge": _service("envoy", "http://127.0.0.1:9901/ready", [8000, 9901]),
        "xgboost": _service("model_server", "http://127.0.0.1:8001/ready", [8001, 8101]),
        "sidecar-xgboost": _service("envoy", "http://127.0.0.1:9911/ready", [8011, 9911]),
        "pytorch": _service("model_server", "http://127.0.0.1:8002/ready", [8002, 8102]),
        "sidecar-pytorch": _service("envoy", "http://127.0.0.1:9912/ready", [8012, 9912]),
        "heuristic": _service("model_server", "http://127.0.0.1:8003/ready", [8003], False),
        "sidecar-heuristic": _service("envoy", "http://127.0.0.1:9913/ready", [8013, 9913]),
    },
}


def _decision(seq: int, actor: str, action: str, rule: str, reason: str, *, version: int | None,
              acked: bool | None, nodes: dict[str, str] | None = None, trigger_ids: list[str] | None = None,
              numbers: dict[str, float] | None = None) -> dict[str, Any]:
    return {"v": 1, "id": f"d{seq:04d}", "ts": T0 + 60 * seq, "seq": seq, "actor": actor,
            "action": action, "rule": rule, "reason": reason, "trigger_ids": trigger_ids or [],
            "numbers": numbers or {}, "xds_version": None if version is None else str(version),
            "acked": acked, "nodes": nodes or {}}


_ALL_ACK = {"edge": "ack", "sidecar-heuristic": "ack", "sidecar-pytorch": "ack", "sidecar-xgboost": "ack"}
_DECISIONS = [
    _decision(1, "control_plane", "resume", "startup", "control plane started; the persisted intent "
              "was republished under a new version", version=37, acked=True, nodes=_ALL_ACK),
    _decision(2, "operator", "set_weights", "operator_request", "operator set the traffic split",
              version=38, acked=True, nodes=_ALL_ACK, numbers={"xgboost": 0.8, "pytorch": 0.2}),
    _decision(3, "retrain", "register_challenger", "drift_retrain", "drift level retrain on "
              "amount (PSI 0.31) for 2 windows; fraud-xgboost v4 registered as challenger",
              version=39, acked=True, nodes=_ALL_ACK, trigger_ids=["drift-7f3a"],
              numbers={"max_psi": 0.31, "windows": 2.0}),
    _decision(4, "reconciler", "eject", "health_failures", "heuristic failed 5 health checks in a "
              "row (connection refused)", version=40, acked=True, nodes=_ALL_ACK,
              trigger_ids=["health-91c2", "health-91c3"], numbers={"consecutive_failures": 5.0}),
    _decision(5, "canary", "canary_step", "canary_pass", "step 1 passed: error rate 0.1% <= 10%, "
              "p95 41 ms <= 500 ms; weight 10% -> 25%", version=41, acked=True, nodes=_ALL_ACK,
              trigger_ids=["d0003"], numbers={"error_rate": 0.001, "p95_ms": 41.0, "weight": 0.25}),
    _decision(6, "operator", "pin", "operator_request", "operator pinned pytorch to version 2",
              version=42, acked=None, nodes={"edge": "ack", "sidecar-heuristic": "pending",
                                             "sidecar-pytorch": "ack", "sidecar-xgboost": "ack"}),
]

_MODELS = {"models": {  # GET /api/v1/models (control_plane/healing/canary_api.py)
    "xgboost": {
        "versions": [
            {"version": "3", "label": "xgboost_v3", "aliases": ["champion"],
             "created_at": int(T0 * 1000) - 86_400_000,
             "metrics": {"auc": 0.981, "f1": 0.742, "brier": 0.0141}},
            {"version": "4", "label": "xgboost_v4", "aliases": ["challenger"],
             "created_at": int(T0 * 1000) + 180_000,
             "metrics": {"auc": 0.984, "f1": 0.761, "brier": 0.0137}},
        ],
        "champion": "3", "challenger": "4", "pinned": None,
    },
    "pytorch": {
        "versions": [
            {"version": "1", "label": "pytorch_v1", "aliases": [],
             "created_at": int(T0 * 1000) - 172_800_000,
             "metrics": {"auc": 0.962, "f1": 0.688, "brier": 0.0172}},
            {"version": "2", "label": "pytorch_v2", "aliases": ["champion"],
             "created_at": int(T0 * 1000) - 90_000_000,
             "metrics": {"auc": 0.973, "f1": 0.705, "brier": 0.0158}},
        ],
        "champion": "2", "challenger": None, "pinned": "2",
    },
}}

_CANARY = {  # GET /api/v1/canary (control_plane/healing/canary_api.py; step indexes the weight steps)
    "canary": {
        "xgboost": {"model": "xgboost", "version": "4", "phase": "canary", "step": 1, "weight": 0.25,
                    "blocked": None, "trigger_id": "drift-7f3a", "verdicts": [
                        {"phase": "shadow", "weight": 0.0, "result": "pass", "rule": "shadow_agreement",
                         "reason": "agreement 98.7% >= 95%", "numbers": {"agreement": 0.987}},
                        {"phase": "canary", "weight": 0.1, "result": "pass", "rule": "canary_pass",
                         "reason": "errors 0.1% <= 10%, p95 41 ms <= 500 ms",
                         "numbers": {"error_rate": 0.001, "p95_ms": 41.0}},
                        {"phase": "canary", "weight": 0.25, "result": "wait", "rule": "min_samples",
                         "reason": "120/200 labelled samples", "numbers": {"labelled": 120.0}}]},
        "pytorch": {"model": "pytorch", "phase": "idle", "step": -1, "weight": 0.0, "verdicts": []},
    },
    "held": None,
}


def _feature(name: str, psi: float, p_value: float, level: str) -> dict[str, Any]:
    return {"feature": name, "psi": psi, "p_value": p_value,
            "test": "chi2" if name in CATEGORICAL else "ks", "level": level, "rejected": level != "none"}


def _drift_report(model: str, version: str, shifted: dict[str, tuple[float, float, str]]) -> dict[str, Any]:
    feats = [_feature(n, *shifted.get(n, (0.01 + 0.002 * i, 0.4 + 0.05 * i, "none")))
             for i, n in enumerate(FEATURES)]
    worst = max(feats, key=lambda f: f["psi"])
    order = {"none": 0, "monitor": 1, "retrain": 2}
    level = max((f["level"] for f in feats), key=order.__getitem__)
    return {"v": 1, "id": f"drift-{model}", "ts": T0 + 400, "model": model,
            "model_version": f"{model}_v{version}", "window_size": 2000, "level": level,
            "features": feats, "score_psi": 0.041, "max_psi": worst["psi"]}


_DRIFT = {
    "xgboost": _drift_report("xgboost", "3", {"amount": (0.312, 1.2e-9, "retrain"),
                                              "distance_from_home": (0.134, 0.002, "monitor")}),
    "pytorch": _drift_report("pytorch", "2", {"velocity_last_1h": (0.118, 0.03, "monitor")}),
}


def _history(points: int = 60) -> list[dict[str, Any]]:
    """control_plane.healing.traffic HISTORY_FIELDS, one point per 2 s; a fault around point 40."""
    out = []
    for i in range(points):
        wave = math.sin(i / 6.0)
        fault = 40 <= i < 44
        rps = round(50 + 12 * wave, 2)
        out.append({"ts": T0 + 2 * i, "rps": rps,
                    "p50_ms": round(3.0 + 0.8 * wave, 3), "p99_ms": round(14 + 9 * max(0.0, wave), 3),
                    "error_rate": round(0.002 + (0.03 if fault else 0.0), 4),
                    "upstream_error_rate": round(0.004 + (0.4 if fault else 0.0), 4),
                    "fallback_share": round(0.01 + (0.2 if fault else 0.0), 4),
                    "fraud_share": round(0.021 + 0.004 * math.cos(i / 5.0), 4),
                    "ejected": 1 if fault else 0, "requests": int(rps * 2)})
    return out


def _cluster(rq: int, err: int, rps: float, ejected: int = 0) -> dict[str, Any]:
    return {"rq_total": rq, "rq_5xx": err, "rps": rps, "timeouts": 0, "ejected": ejected,
            "ejections": ejected}


_HISTORY = _history()
_TRAFFIC = {  # GET /api/v1/traffic/summary?window=60 (control_plane/healing/component.py)
    "window_s": 60.0, "available": True, "as_of": T0 + 118, "age_s": 0.8,
    "span_s": 60.0, "requests": 3078, "rps": 51.3, "p50_ms": 3.1, "p99_ms": 17.9,
    "latency_samples": 3078, "error_rate": 0.002, "upstream_error_rate": 0.004,
    "fallback_share": 0.01, "fallback": {"heuristic": 29, "conservative_default": 2},
    "fraud_share": 0.022, "retries": 4, "ejected": 1,
    "clusters": {"xgboost": _cluster(2292, 3, 38.2), "pytorch": _cluster(576, 0, 9.6),
                 "heuristic": _cluster(18, 0, 0.3, ejected=1)},
    "history": _HISTORY,
    "edge": {"reachable": True, "error": None},
}

_EXPERIMENTS = [
    {"name": "primary-killed", "title": "XGBoost server killed (kill -9)",
     "description": "kill the primary model server; expect failover within 1 s and no 5xx"},
    {"name": "latency-injection", "title": "500 ms latency on pytorch",
     "description": "a latency toxic on the pytorch sidecar; expect outlier ejection"},
    {"name": "nats-down", "title": "NATS stopped for 20 s",
     "description": "events are dropped and counted; scoring is unaffected"},
]

CHAOS_STEPS = ("steady-state before", "inject fault", "expect failover", "rollback",
               "steady-state after")

_LOAD = {"running": False, "sent": 0, "ok": 0, "errors": 0}  # GET /api/v1/load before any run


def _arm(count: int, flagged: int, p50: float, p95: float, p99: float, psi: float,
         labelled: dict[str, Any] | None) -> dict[str, Any]:
    return {"count": count, "flagged": flagged, "fraud_rate": flagged / count, "mean_score": 0.031,
            "mean_confidence": 0.962, "latency_ms": {"p50": p50, "p95": p95, "p99": p99},
            "score_psi_vs_champion": psi, "labelled": labelled}


def _labelled(tp: int, fp: int, fn: int, tn: int, precision: tuple[float, float, float],
              recall: tuple[float, float, float], f1: tuple[float, float, float]) -> dict[str, Any]:
    """As control_plane.ab_stats.labelled_metrics answers (numbers recorded from it)."""
    return {"n": tp + fp + fn + tn, "tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "precision": {"value": precision[0], "n": tp + fp, "ci95": list(precision[1:]),
                          "method": "wilson"},
            "recall": {"value": recall[0], "n": tp + fn, "ci95": list(recall[1:]), "method": "wilson"},
            "f1": {"value": f1[0], "ci95": list(f1[1:]), "method": "bootstrap (1000 replicates)"}}


_AB = {  # GET /api/v1/ab-stats (control_plane/ab_component.py): the 80/20 split with a 25 % canary
    "window_s": 900.0, "label_window_s": 3600.0, "champion": "xgboost_v3",
    "arms": {
        "pytorch_v2": _arm(461, 9, 3.4, 9.8, 16.2, 0.087, None),
        "xgboost_v3": _arm(1843, 41, 2.1, 6.3, 11.7, 0.0,
                           _labelled(22, 6, 5, 967, (0.7857, 0.6046, 0.8979), (0.8148, 0.6330, 0.9182),
                                     (0.8, 0.6664, 0.8980))),
        "xgboost_v4": _arm(767, 29, 2.3, 7.1, 12.9, 0.024,
                           _labelled(11, 4, 2, 383, (0.7333, 0.4805, 0.8910), (0.8462, 0.5777, 0.9567),
                                     (0.7857, 0.5556, 0.9286))),
    },
    "comparison": {"arms": ["xgboost_v3", "xgboost_v4"], "test": "chi2_contingency (fraud rate)",
                   "chi2": 4.4475, "p_value": 0.03495, "dof": 1, "min_samples_per_arm": 100,
                   "enough_samples": True, "significant_at_0_01": False},
    "records_in_window": 3071, "records_seen": 3071, "labels_seen": 1420, "labels_joined": 1400,
    "awaiting_labels": 1671, "nats_connected": True,
}


def status() -> dict[str, Any]:
    return copy.deepcopy(_STATUS)


def health() -> dict[str, Any]:
    services = {k: ("up" if v["healthy"] else "down") for k, v in _STATUS["services"].items()}
    return {"status": "ok", "control_plane": {"up": True, "snapshot_version": 42, "uptime_s": 812.4},
            "services": services}


def decisions() -> list[dict[str, Any]]:
    return copy.deepcopy(_DECISIONS)


def models() -> dict[str, Any]:
    return copy.deepcopy(_MODELS)


def canary() -> dict[str, Any]:
    return copy.deepcopy(_CANARY)


def drift() -> dict[str, Any]:
    return copy.deepcopy(_DRIFT)


def traffic() -> dict[str, Any]:
    return copy.deepcopy(_TRAFFIC)


def experiments() -> list[dict[str, Any]]:
    return copy.deepcopy(_EXPERIMENTS)


def load() -> dict[str, Any]:
    return copy.deepcopy(_LOAD)


def ab_stats() -> dict[str, Any]:
    return copy.deepcopy(_AB)
