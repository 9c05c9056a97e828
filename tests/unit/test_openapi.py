"""docs/openapi.yaml stays consistent with the code: the predict schema is data_plane.contracts.schema."""

from __future__ import annotations

from pathlib import Path

import yaml

from data_plane.contracts.schema import CARD_ID_MAX, FEATURES, PREDICTION_FIELDS

SPEC = yaml.safe_load((Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml").read_text())
SCHEMAS = SPEC["components"]["schemas"]


def test_the_public_paths_and_methods_are_described() -> None:
    paths = {p: set(ops) for p, ops in SPEC["paths"].items()}
    assert SPEC["openapi"].startswith("3.1")
    assert paths == {"/api/v1/predict": {"post"}, "/api/v1/predict/batch": {"post"}, "/health": {"get"},
                     "/api/v1/status": {"get"}, "/api/v1/traffic": {"post"}, "/api/v1/decisions": {"get"},
                     "/metrics": {"get"}}
    predict = SPEC["paths"]["/api/v1/predict"]["post"]
    assert {"200", "400", "413", "422"} <= set(predict["responses"])
    assert SPEC["paths"]["/api/v1/traffic"]["post"]["security"] == [{"operatorToken": []}]


def test_predict_request_schema_equals_the_contract() -> None:
    txn = SCHEMAS["Transaction"]
    assert txn["additionalProperties"] is False
    assert txn["required"] == [f.name for f in FEATURES]
    assert list(txn["properties"]) == [*(f.name for f in FEATURES), "card_id"]
    for f in FEATURES:
        prop = txn["properties"][f.name]
        assert prop["type"] == ("integer" if f.kind is int else "number"), f.name
        assert (prop["minimum"], prop["maximum"]) == (f.minimum, f.maximum), f.name
    assert txn["properties"]["card_id"] == {**txn["properties"]["card_id"], "type": "string",
                                            "maxLength": CARD_ID_MAX}


def test_prediction_schema_is_the_seed_response() -> None:
    pred = SCHEMAS["Prediction"]
    assert pred["required"] == list(PREDICTION_FIELDS) == list(pred["properties"])
    assert pred["additionalProperties"] is False
