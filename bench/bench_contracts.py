"""Validation + serialisation cost of one request, by library (the choice behind schema.py).

Each candidate decodes the seed request, enforces the same ranges, and encodes the seed response.
Goal (issue: foundation): <= 20 us per request for the chosen library.
"""

from __future__ import annotations

import json
import math
import timeit
from typing import Annotated

import msgspec
import orjson
import pydantic

from bench._report import write_report
from data_plane.contracts.schema import FEATURES, Prediction, encode, parse_transaction

REQUEST = json.dumps({
    "amount": 1500.00, "merchant_category": 7, "hour_of_day": 2, "day_of_week": 6,
    "distance_from_home": 150.0, "distance_from_last_txn": 80.0, "is_foreign": 1,
    "velocity_last_1h": 5, "velocity_last_24h": 12, "avg_amount_last_7d": 200.0,
    "card_age_days": 15}).encode()
RESPONSE = dict(fraud_probability=0.874532, is_fraud=True, model_version="xgboost_v1",
                model_type="xgboost", latency_ms=0.21, routed_to="xgboost", fallback_reason=None)

_fields = {f.name: (Annotated[f.kind, pydantic.Field(ge=f.minimum, le=f.maximum, strict=f.kind is int)],
                    ...) for f in FEATURES}
PydTxn = pydantic.create_model("PydTxn", __config__=pydantic.ConfigDict(extra="forbid",
                                                                         allow_inf_nan=False), **_fields)


class PydPrediction(pydantic.BaseModel):
    fraud_probability: float
    is_fraud: bool
    model_version: str
    model_type: str
    latency_ms: float
    routed_to: str
    fallback_reason: str | None = None


def run_msgspec() -> bytes:
    parse_transaction(REQUEST)
    return encode(Prediction(**RESPONSE))


def run_pydantic() -> bytes:
    PydTxn.model_validate_json(REQUEST)
    return PydPrediction(**RESPONSE).model_dump_json().encode()


def run_stdlib() -> bytes:
    d = json.loads(REQUEST)
    if not isinstance(d, dict) or set(d) != {f.name for f in FEATURES}:
        raise ValueError("fields")
    for f in FEATURES:
        v = d[f.name]
        wrong_int = f.kind is int and not isinstance(v, int)
        if isinstance(v, bool) or not isinstance(v, int | float) or wrong_int:
            raise ValueError(f.name)
        if not (math.isfinite(v) and f.minimum <= v <= f.maximum):
            raise ValueError(f.name)
    return json.dumps(RESPONSE).encode()


def run_orjson_manual() -> bytes:
    d = orjson.loads(REQUEST)
    for f in FEATURES:
        v = d[f.name]
        if not f.minimum <= v <= f.maximum:
            raise ValueError(f.name)
    return orjson.dumps(RESPONSE)


def main(number: int = 50_000) -> None:
    rows = []
    candidates = [("msgspec (chosen)", run_msgspec), ("pydantic v2", run_pydantic),
                  ("orjson + ranges only (partial)", run_orjson_manual),
                  ("stdlib json + manual", run_stdlib)]
    for name, fn in candidates:
        best = min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6
        rows.append({"library": name, "us_per_request": round(best, 2)})
    ref = rows[0]["us_per_request"]
    for r in rows:
        r["ratio_vs_msgspec"] = round(r["us_per_request"] / ref, 2)
    write_report("contracts", rows, {"goal": "<= 20 us per request (validation + serialisation)",
                                     "msgspec_meets_goal": ref <= 20, "pydantic": pydantic.VERSION,
                                     "msgspec": msgspec.__version__})


if __name__ == "__main__":
    main()
