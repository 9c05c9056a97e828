"""What every handler of one model server shares: kind, slots, metrics, the prediction log, and
the routing facts a request carries (which slot it came in on, shadow or not, fallback or not).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from aiohttp import web

from data_plane.settings import Settings
from model_servers.batching import MicroBatcher
from model_servers.metrics import ServerMetrics
from model_servers.prediction_log import PredictionLog
from model_servers.slots import CHALLENGER, CHAMPION, Model, ModelSlots

HEURISTIC = "heuristic"
KINDS = ("xgboost", "pytorch", HEURISTIC)
ML_KINDS = ("xgboost", "pytorch")
# The clusters Envoy may name in x-mesh-intended. Anything else is ignored: a client talking to a
# server directly must not be able to mint fallback reasons (or metric label values).
KNOWN_CLUSTERS = frozenset((*KINDS, *(f"{k}-challenger" for k in ML_KINDS)))
# Envoy appends this to the Host/:authority of a mirrored request (before the port on some
# versions, at the very end on others): that is how a server knows a request is shadow traffic.
SHADOW_SUFFIX = "-shadow"
HEURISTIC_FALLBACK_REASON = "ml_models_unavailable"
JSON = "application/json"


def is_shadow_host(host: str | None) -> bool:
    """True for the Host header of a request Envoy mirrored (`x-shadow`, `x-shadow:8101`)."""
    if not host:
        return False
    if host.endswith(SHADOW_SUFFIX):
        return True
    name, sep, _port = host.rpartition(":")
    return bool(sep) and name.endswith(SHADOW_SUFFIX)


@dataclass
class ServerContext:
    kind: str
    settings: Settings
    slots: ModelSlots
    metrics: ServerMetrics
    plog: PredictionLog
    challenger_ports: set[int] = field(default_factory=set)
    batcher: MicroBatcher | None = None  # ML kinds: coalesce one-row calls per loop tick
    draining: bool = False
    started_at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        self.threshold = self.settings.fraud_threshold
        # Cluster names this server answers for as itself (x-mesh-intended values).
        self.cluster = {CHAMPION: self.kind, CHALLENGER: f"{self.kind}-challenger"}

    def threshold_of(self, model: Model) -> float:
        """The model's own decision threshold (F1-best on validation, recorded in the registry)
        when it has one, else MESH_FRAUD_THRESHOLD: the gates and the canary judged a version at
        its own threshold, so serving must decide at the same one."""
        own = getattr(model, "threshold", None)
        return float(own) if own is not None else self.threshold

    def slot_of(self, request: web.Request) -> str:
        """The slot a request addresses: the challenger listener's port, else the champion."""
        if self.challenger_ports:
            transport = request.transport
            sockname = transport.get_extra_info("sockname") if transport is not None else None
            if sockname and sockname[1] in self.challenger_ports:
                return CHALLENGER
        return CHAMPION

    def model_for(self, slot: str) -> Model | None:
        if slot == CHAMPION:
            return self.slots.champion.model
        challenger = self.slots.challenger
        return challenger.model if challenger is not None else None

    def fallback_reason(self, intended: str | None, slot: str) -> str | None:
        """`<intended>_unavailable` when Envoy meant another cluster; the rules say
        `ml_models_unavailable`; None when this server is the one Envoy meant (or nobody said)."""
        if not intended or intended not in KNOWN_CLUSTERS:
            return None
        if self.kind == HEURISTIC:
            return None if intended == HEURISTIC else HEURISTIC_FALLBACK_REASON
        if intended == self.cluster[slot]:
            return None
        return f"{intended}_unavailable"

    def unavailable_message(self, slot: str) -> str:
        if slot == CHALLENGER:
            return "no challenger"
        err = self.slots.champion.last_error
        return f"model not loaded: {err}" if err else "model not loaded yet"
