"""RoutingIntent: the desired state of the mesh, which the xDS builders turn into Envoy config.

Operators and the healing loop change the intent; the control plane persists it (see
`control_plane.store`) and publishes a new snapshot. Pure data, no I/O here.
"""

from __future__ import annotations

import msgspec

MODELS = ("xgboost", "pytorch")  # ML model kinds; each has a champion and a challenger slot
SERVICES = ("xgboost", "pytorch", "heuristic")
SLOTS = ("champion", "challenger")


class Canary(msgspec.Struct, kw_only=True):
    """A challenger of `model` takes `weight` of live traffic (0..1), in sticky mode by card."""

    model: str
    weight: float
    version: str | None = None


class Shadow(msgspec.Struct, kw_only=True):
    """Mirror `fraction` (0..1) of live traffic to the challenger of `model`."""

    model: str
    fraction: float
    version: str | None = None


class Endpoint(msgspec.Struct, kw_only=True):
    host: str
    port: int


class RoutingIntent(msgspec.Struct, kw_only=True):
    # Champion weights by service kind; need not sum to 1 (normalised when built).
    weights: dict[str, float] = msgspec.field(default_factory=lambda: {"xgboost": 0.8,
                                                                       "pytorch": 0.2})
    canary: Canary | None = None
    shadow: Shadow | None = None
    # Services the healing loop took out of rotation (weight forced to 0 until restored).
    ejected: list[str] = msgspec.field(default_factory=list)
    # Version pins: model kind -> registry version the champion slot must serve.
    pins: dict[str, str] = msgspec.field(default_factory=dict)
    # When true, automation (reconciler, canary) proposes nothing; operator actions still apply.
    frozen: bool = False
    # Cluster name -> endpoint override (chaos re-points a cluster through a fault proxy).
    overrides: dict[str, Endpoint] = msgspec.field(default_factory=dict)
    # Sticky assignment: route by a hash of the card_id header when present.
    sticky: bool = True

    def effective_weights(self) -> dict[str, float]:
        """Champion weights after ejections, normalised to sum 1 (all zero -> primary chain)."""
        w = {k: (0.0 if k in self.ejected else max(0.0, v)) for k, v in self.weights.items()}
        total = sum(w.values())
        if total <= 0:
            # Everyone ejected: keep routing by the operator's weights; the failover chain and
            # the conservative default take it from there.
            w = {k: max(0.0, v) for k, v in self.weights.items()}
            total = sum(w.values()) or 1.0
        return {k: v / total for k, v in w.items()}


def validate_weights(weights: dict[str, float]) -> dict[str, float]:
    """Check an operator's weights: known services, numbers in [0, 1], sum 1 (+-0.001)."""
    from data_plane.contracts.errors import ValidationError

    if not isinstance(weights, dict) or not weights:
        raise ValidationError("$body", "type",
                              'send a JSON object of weights, e.g. {"xgboost": 0.8, "pytorch": 0.2}')
    for name, value in weights.items():
        if name not in MODELS:
            raise ValidationError(name, "unknown_service",
                                  f"{name} is not a routable model; use one of {', '.join(MODELS)}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValidationError(name, "type", f"{name} weight must be a number between 0 and 1")
        if not 0.0 <= float(value) <= 1.0 or value != value:
            raise ValidationError(name, "range", f"{name} weight must be between 0 and 1")
    total = sum(float(v) for v in weights.values())
    if abs(total - 1.0) > 1e-3:
        raise ValidationError("$body", "sum", f"weights must sum to 1 (got {total:g})")
    return {k: float(v) for k, v in weights.items()}
