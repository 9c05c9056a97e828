"""NATS subject names: the event contract's addresses. Payload types live in `events`."""

from __future__ import annotations

PREFIX = "mesh"

PREDICTIONS = "mesh.predictions.{model}"  # one PredictionRecord batch per publish, primary traffic
SHADOW = "mesh.shadow.{model}"  # predictions made on mirrored (shadow) traffic
LABELS = "mesh.labels"  # delayed ground truth (chargebacks)
HEALTH = "mesh.health.{service}"
DRIFT = "mesh.drift.{model}"
RETRAIN_REQUESTED = "mesh.retrain.requested"
RETRAIN_PROGRESS = "mesh.retrain.progress"
# Decisions from the retrain worker; the control plane (the ledger's one writer) appends them.
RETRAIN_DECISION = "mesh.retrain.decision"
MODEL_REGISTERED = "mesh.model.registered"
MODEL_PROMOTED = "mesh.model.promoted"
MODEL_ROLLED_BACK = "mesh.model.rolled_back"
CANARY = "mesh.canary.{event}"
XDS = "mesh.xds.{event}"  # pushed | acked | nacked
DECISIONS = "mesh.decisions"
CHAOS = "mesh.chaos.{event}"

# JetStream streams for what must survive restarts (name -> subjects).
STREAMS: dict[str, tuple[str, ...]] = {
    "PREDICTIONS": ("mesh.predictions.>", "mesh.shadow.>"),
    "LABELS": ("mesh.labels",),
    "DECISIONS": ("mesh.decisions",),
}


def predictions(model: str) -> str:
    return PREDICTIONS.format(model=model)


def shadow(model: str) -> str:
    return SHADOW.format(model=model)


def health(service: str) -> str:
    return HEALTH.format(service=service)


def drift(model: str) -> str:
    return DRIFT.format(model=model)


def canary(event: str) -> str:
    return CANARY.format(event=event)


def xds(event: str) -> str:
    if event not in ("pushed", "acked", "nacked"):
        raise ValueError(f"unknown xDS event {event!r}")
    return XDS.format(event=event)


def chaos(event: str) -> str:
    return CHAOS.format(event=event)
