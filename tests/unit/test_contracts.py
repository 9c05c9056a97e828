"""The public request schema: the seed example passes, every bad-input class names its field."""

from __future__ import annotations

import json

import msgspec
import pytest

from data_plane.contracts import events, subjects
from data_plane.contracts.errors import ValidationError
from data_plane.contracts.schema import (
    FEATURE_NAMES,
    PREDICTION_FIELDS,
    Prediction,
    encode,
    error_status,
    parse_transaction,
)

SEED_EXAMPLE = {
    "amount": 1500.00, "merchant_category": 7, "hour_of_day": 2, "day_of_week": 6,
    "distance_from_home": 150.0, "distance_from_last_txn": 80.0, "is_foreign": 1,
    "velocity_last_1h": 5, "velocity_last_24h": 12, "avg_amount_last_7d": 200.0,
    "card_age_days": 15,
}


def body(**changes: object) -> bytes:
    d = dict(SEED_EXAMPLE)
    for k, v in changes.items():
        if v is ...:
            d.pop(k)
        else:
            d[k] = v
    return json.dumps(d).encode()


def rejects(raw: bytes) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        parse_transaction(raw)
    return info.value


def test_seed_example_is_accepted_in_model_order() -> None:
    txn = parse_transaction(json.dumps(SEED_EXAMPLE).encode())
    assert txn.features() == tuple(float(SEED_EXAMPLE[n]) for n in FEATURE_NAMES)
    assert txn.card_id is None


def test_integer_amounts_are_accepted_for_float_fields() -> None:
    assert parse_transaction(body(amount=1500)).amount == 1500.0


@pytest.mark.parametrize("name", FEATURE_NAMES)
def test_each_missing_field_is_named(name: str) -> None:
    err = rejects(body(**{name: ...}))
    assert (err.field, err.rule) == (name, "required")
    assert error_status(err) == 422


@pytest.mark.parametrize(("name", "value"), [
    ("merchant_category", 10), ("merchant_category", -1), ("hour_of_day", 24),
    ("day_of_week", 7), ("is_foreign", 2), ("amount", -0.01), ("distance_from_home", -1),
    ("velocity_last_1h", -3), ("card_age_days", -1), ("amount", 1e12),
])
def test_out_of_range_values_name_field_and_range(name: str, value: float) -> None:
    err = rejects(body(**{name: value}))
    assert (err.field, err.rule) == (name, "range")
    assert name in err.message and ("between" in err.message or "0 or 1" in err.message)


@pytest.mark.parametrize(("name", "value"), [
    ("hour_of_day", "2"), ("hour_of_day", 2.5), ("is_foreign", True), ("amount", "1500"),
    ("amount", None), ("velocity_last_24h", [1]), ("merchant_category", {"a": 1}),
])
def test_wrong_types_name_field_and_type(name: str, value: object) -> None:
    err = rejects(body(**{name: value}))
    assert (err.field, err.rule) == (name, "type")


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_literals_are_refused(literal: bytes) -> None:
    raw = json.dumps(SEED_EXAMPLE).encode().replace(b"1500.0", literal)
    err = rejects(raw)
    assert err.rule == "finite" and error_status(err) == 400


def test_overflowing_number_is_refused_as_not_finite_or_out_of_range() -> None:
    raw = json.dumps(SEED_EXAMPLE).encode().replace(b"1500.0", b"1e999")
    err = rejects(raw)
    assert (err.field, err.rule) == ("amount", "finite")


@pytest.mark.parametrize("raw", [b"[]", b"123", b'"x"', b"null", b"[1,2]"])
def test_non_object_bodies_are_400(raw: bytes) -> None:
    err = rejects(raw)
    assert err.field == "$body" and error_status(err) == 400


@pytest.mark.parametrize("raw", [b"", b"{", b"{'amount': 1}", b"\xff\xfe\x00"])
def test_malformed_bodies_are_400_with_a_reason(raw: bytes) -> None:
    err = rejects(raw)
    assert err.field == "$body" and err.rule == "json" and error_status(err) == 400


def test_unknown_fields_are_rejected_by_policy() -> None:
    err = rejects(body(amout=3))
    assert (err.field, err.rule) == ("amout", "unknown_field")
    assert "allowed fields" in err.message


def test_card_id_is_the_one_optional_field() -> None:
    assert parse_transaction(body(card_id="card-42")).card_id == "card-42"
    assert rejects(body(card_id=42)).field == "card_id"
    assert rejects(body(card_id="x" * 65)).field == "card_id"


def test_error_body_shape() -> None:
    err = rejects(body(hour_of_day=99))
    assert set(err.to_dict()) == {"error", "field", "rule", "message"}


def test_prediction_has_exactly_the_seed_fields() -> None:
    assert PREDICTION_FIELDS == ("fraud_probability", "is_fraud", "model_version", "model_type",
                                 "latency_ms", "routed_to", "fallback_reason")
    out = json.loads(encode(Prediction(0.87, True, "xgboost_v1", "xgboost", 1.5, "xgboost")))
    assert out["fallback_reason"] is None and out["is_fraud"] is True


def test_events_are_versioned_and_round_trip() -> None:
    rec = events.PredictionRecord(request_id="r1", model="xgboost", model_version="xgboost_v1",
                                  slot="champion", features=[1.0] * 11, score=0.1,
                                  is_fraud=False, latency_ms=0.2)
    raw = encode(events.PredictionBatch(records=[rec]))
    back = msgspec.json.decode(raw, type=events.PredictionBatch)
    assert back.v == events.SCHEMA_VERSION and back.records[0].request_id == "r1"
    # Older consumers ignore fields they do not know.
    newer = json.loads(raw)
    newer["added_later"] = 1
    assert msgspec.json.decode(json.dumps(newer), type=events.PredictionBatch).records


def test_subject_helpers() -> None:
    assert subjects.predictions("xgboost") == "mesh.predictions.xgboost"
    assert subjects.xds("nacked") == "mesh.xds.nacked"
    with pytest.raises(ValueError, match="unknown xDS event"):
        subjects.xds("bogus")


def test_invalid_utf8_inside_a_key_is_a_400_not_a_crash() -> None:
    err = rejects(b'{"merc\xfehant_category": 7}')
    assert (err.field, err.rule) == ("$body", "json") and "UTF-8" in err.message
