"""Event payload types published on NATS. Versioned: every payload carries `v`.

Compatibility rule: adding an optional field keeps `v`; removing or retyping a field bumps it.
Decoders ignore unknown fields so an older consumer reads a newer producer's events.
"""

from __future__ import annotations

import time
import uuid

import msgspec

SCHEMA_VERSION = 1


def new_id() -> str:
    return uuid.uuid4().hex


def now() -> float:
    return time.time()


class Event(msgspec.Struct, kw_only=True):
    v: int = SCHEMA_VERSION
    id: str = msgspec.field(default_factory=new_id)
    ts: float = msgspec.field(default_factory=now)


class PredictionRecord(Event, kw_only=True):
    """One scored request, primary or shadow. Joined with labels and shadow by request_id."""

    request_id: str
    model: str  # xgboost | pytorch | heuristic
    model_version: str
    slot: str  # champion | challenger
    features: list[float]
    score: float
    is_fraud: bool
    latency_ms: float
    shadow: bool = False
    intended: str | None = None  # the target Envoy meant (x-mesh-intended)
    card_id: str | None = None


class PredictionBatch(Event, kw_only=True):
    records: list[PredictionRecord]


class Label(Event, kw_only=True):
    """Delayed ground truth for a request (a chargeback or a confirmed-genuine outcome)."""

    request_id: str
    is_fraud: bool
    features: list[float] | None = None


class HealthEvent(Event, kw_only=True):
    service: str
    healthy: bool
    reason: str
    error_rate: float | None = None
    p95_ms: float | None = None
    ejected: bool | None = None


class FeatureDrift(msgspec.Struct, kw_only=True):
    feature: str
    psi: float
    p_value: float
    test: str  # ks | chi2
    level: str  # none | monitor | retrain
    rejected: bool  # significant after Benjamini-Hochberg


class DriftReport(Event, kw_only=True):
    model: str
    model_version: str
    window_size: int
    level: str  # none | monitor | retrain
    features: list[FeatureDrift]
    score_psi: float | None = None
    score_p_value: float | None = None
    score_level: str | None = None
    max_psi: float = 0.0


class RetrainRequested(Event, kw_only=True):
    model: str
    reason: str  # drift | operator | schedule
    trigger_id: str | None = None


class RetrainProgress(Event, kw_only=True):
    model: str
    stage: str
    fraction: float
    message: str = ""


class ModelRegistered(Event, kw_only=True):
    model: str  # registry name, e.g. fraud-xgboost
    version: str
    alias: str
    metrics: dict[str, float] = {}
    trigger_id: str | None = None


class ModelAliasMoved(Event, kw_only=True):
    model: str
    version: str
    alias: str
    previous_version: str | None = None
    reason: str = ""


class CanaryEvent(Event, kw_only=True):
    model: str
    version: str
    phase: str  # shadow | canary | promoted | rolled_back
    weight: float
    verdict: str  # pass | fail | wait
    reason: str = ""
    numbers: dict[str, float] = {}


class XdsEvent(Event, kw_only=True):
    node: str
    type_url: str
    version: str
    nonce: str
    latency_ms: float | None = None
    error: str | None = None


class Decision(Event, kw_only=True):
    """A ledger entry: what was done, why, on which evidence, and what Envoy made of it."""

    seq: int = 0
    actor: str  # reconciler | canary | operator | retrain | chaos | control_plane | envoy
    action: str
    rule: str
    reason: str
    trigger_ids: list[str] = []
    numbers: dict[str, float] = {}
    xds_version: str | None = None
    acked: bool | None = None
    nodes: dict[str, str] = {}  # node -> ack | nack | pending


class ChaosEvent(Event, kw_only=True):
    experiment: str
    phase: str  # started | step | deviated | rolled_back | finished | aborted
    detail: str = ""
    status: str | None = None


def decoder(kind: type[msgspec.Struct]) -> msgspec.json.Decoder:
    return msgspec.json.Decoder(kind)
