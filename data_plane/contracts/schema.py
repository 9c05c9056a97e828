"""The public request/response schema of `POST /api/v1/predict` (seed 000), with validation.

Validation policy (docs/decisions/002-request-validation.md):
- body must be a JSON object (else 400, field ``$body``);
- the 11 features are required; integers must be JSON integers; floats accept integers;
- every number must be finite and inside its documented range (else 422 naming field and rule);
- unknown fields are rejected (422, rule ``unknown_field``) so typos never go unnoticed; the only
  optional field is ``card_id`` (entity key for sticky A/B assignment).
msgspec was chosen by measurement (bench/bench_contracts.py): it does the checks in C.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec

from data_plane.contracts.errors import ValidationError


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    kind: type  # int or float
    minimum: float
    maximum: float
    description: str


# The 11 features, in model input order. Upper bounds reject absurd values before they reach a
# model (a 1e300 amount is a bug upstream, not a transaction).
FEATURES: tuple[FeatureSpec, ...] = (
    FeatureSpec("amount", float, 0.0, 10_000_000.0, "transaction amount (USD)"),
    FeatureSpec("merchant_category", int, 0, 9, "merchant category code"),
    FeatureSpec("hour_of_day", int, 0, 23, "hour of the transaction"),
    FeatureSpec("day_of_week", int, 0, 6, "day of week, 0 = Monday"),
    FeatureSpec("distance_from_home", float, 0.0, 40_075.0, "km from the cardholder's home"),
    FeatureSpec("distance_from_last_txn", float, 0.0, 40_075.0, "km from the previous transaction"),
    FeatureSpec("is_foreign", int, 0, 1, "international transaction (0/1)"),
    FeatureSpec("velocity_last_1h", int, 0, 10_000, "transactions in the last hour"),
    FeatureSpec("velocity_last_24h", int, 0, 100_000, "transactions in the last 24 hours"),
    FeatureSpec("avg_amount_last_7d", float, 0.0, 10_000_000.0, "7-day average amount (USD)"),
    FeatureSpec("card_age_days", int, 0, 36_500, "card age in days"),
)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
_SPEC = {f.name: f for f in FEATURES}
_FLOAT_FIELDS = tuple(f.name for f in FEATURES if f.kind is float)
CARD_ID_MAX = 64


def _c(spec: FeatureSpec) -> Any:
    return Annotated[spec.kind, msgspec.Meta(ge=spec.minimum, le=spec.maximum)]


class Transaction(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One transaction to score. Field order = model input order."""

    amount: _c(_SPEC["amount"])  # type: ignore[valid-type]
    merchant_category: _c(_SPEC["merchant_category"])  # type: ignore[valid-type]
    hour_of_day: _c(_SPEC["hour_of_day"])  # type: ignore[valid-type]
    day_of_week: _c(_SPEC["day_of_week"])  # type: ignore[valid-type]
    distance_from_home: _c(_SPEC["distance_from_home"])  # type: ignore[valid-type]
    distance_from_last_txn: _c(_SPEC["distance_from_last_txn"])  # type: ignore[valid-type]
    is_foreign: _c(_SPEC["is_foreign"])  # type: ignore[valid-type]
    velocity_last_1h: _c(_SPEC["velocity_last_1h"])  # type: ignore[valid-type]
    velocity_last_24h: _c(_SPEC["velocity_last_24h"])  # type: ignore[valid-type]
    avg_amount_last_7d: _c(_SPEC["avg_amount_last_7d"])  # type: ignore[valid-type]
    card_age_days: _c(_SPEC["card_age_days"])  # type: ignore[valid-type]
    card_id: Annotated[str, msgspec.Meta(max_length=CARD_ID_MAX)] | None = None

    def features(self) -> tuple[float, ...]:
        """The 11 raw features in model input order."""
        return (self.amount, self.merchant_category, self.hour_of_day, self.day_of_week,
                self.distance_from_home, self.distance_from_last_txn, self.is_foreign,
                self.velocity_last_1h, self.velocity_last_24h, self.avg_amount_last_7d,
                self.card_age_days)


class Prediction(msgspec.Struct, frozen=True):
    """The seed 000 response, field for field."""

    fraud_probability: float
    is_fraud: bool
    model_version: str
    model_type: str
    latency_ms: float
    routed_to: str
    fallback_reason: str | None = None


PREDICTION_FIELDS: tuple[str, ...] = Prediction.__struct_fields__

# Model types a response may carry.
MODEL_TYPES = ("xgboost", "pytorch", "heuristic", "conservative_default")

_decoder = msgspec.json.Decoder(Transaction)
_batch_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_encoder = msgspec.json.Encoder()
_AT = re.compile(r" - at `\$(?:\[(\d+)\])?\.?([A-Za-z_0-9]*)`")


def parse_transaction(body: bytes) -> Transaction:
    """Decode and validate one request body. Raises ValidationError naming field and rule."""
    try:
        txn = _decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise _explain(str(exc), body) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # msgspec raises the latter for a non-UTF-8 key
        raise _malformed(str(exc), body) from None
    # JSON has no NaN/Infinity literals, but 1e999 decodes to inf; ranges already exclude it
    # (inf > maximum), so only NaN could slip through a comparison: check floats explicitly.
    for name in _FLOAT_FIELDS:
        if math.isnan(getattr(txn, name)):
            raise ValidationError(name, "finite", f"{name} must be a finite number")
    return txn


def encode(obj: Any) -> bytes:
    """Serialise a response or event to JSON bytes."""
    return _encoder.encode(obj)


def describe_rule(name: str) -> str:
    spec = _SPEC[name]
    if spec.kind is int:
        if (spec.minimum, spec.maximum) == (0, 1):
            return f"{name} must be the integer 0 or 1"
        return f"{name} must be an integer between {spec.minimum:g} and {spec.maximum:g}"
    return f"{name} must be a finite number between {spec.minimum:g} and {spec.maximum:g}"


def _explain(msg: str, body: bytes) -> ValidationError:
    m = _AT.search(msg)
    field = (m.group(2) if m else "") or "$body"
    if msg.startswith("Object missing required field"):
        name = msg.split("`")[1]
        return ValidationError(name, "required", f"{name} is required ({describe_rule(name)})")
    if msg.startswith("Object contains unknown field"):
        name = msg.split("`")[1]
        allowed = ", ".join((*FEATURE_NAMES, "card_id"))
        return ValidationError(name, "unknown_field",
                               f"{name} is not a known field; allowed fields: {allowed}")
    if field == "$body":
        return ValidationError("$body", "type", "the request body must be a JSON object")
    if field == "card_id":
        return ValidationError("card_id", "type",
                               f"card_id must be a string of at most {CARD_ID_MAX} characters")
    if field in _SPEC:
        if msg.startswith("Number out of range"):  # e.g. 1e999: not representable as a double
            return ValidationError(field, "finite", describe_rule(field) + " (got an overflowing number)")
        rule = "type" if ", got " in msg else "range"
        got = _got(field, body)
        return ValidationError(field, rule, describe_rule(field) + (f" (got {got})" if got else ""))
    return ValidationError(field, "invalid", msg)


def _got(field: str, body: bytes) -> str:
    try:
        value = msgspec.json.decode(body).get(field)
    except Exception:
        return ""
    text = msgspec.json.encode(value).decode()
    return text if len(text) <= 40 else text[:37] + "..."


def _malformed(msg: str, body: bytes) -> ValidationError:
    if not body.strip():
        return ValidationError("$body", "json", "the request body is empty; send a JSON object")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return ValidationError("$body", "json", "the request body is not valid UTF-8")
    if b"NaN" in body or b"Infinity" in body:
        return ValidationError("$body", "finite",
                               "NaN and Infinity are not valid JSON numbers; send finite numbers")
    return ValidationError("$body", "json", f"the request body is not valid JSON ({msg})")


def is_malformed(err: ValidationError) -> bool:
    """True when the body is not a JSON object at all (HTTP 400); otherwise it is 422."""
    return err.field == "$body"


def error_status(err: ValidationError) -> int:
    return 400 if is_malformed(err) else 422
