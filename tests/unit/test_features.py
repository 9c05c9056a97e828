"""Shared feature engineering: the batch and one-row paths agree, the flags mean what they say."""

from __future__ import annotations

import time

import numpy as np
import pytest

from data_plane.features import (
    DERIVED_NAMES,
    ENGINEERED_NAMES,
    N_ENGINEERED,
    engineer,
    engineer_one,
)
from data_plane.synthetic import generate


def _row(**over: float) -> list[float]:
    row = {"amount": 100.0, "merchant_category": 2, "hour_of_day": 14, "day_of_week": 3,
           "distance_from_home": 5.0, "distance_from_last_txn": 2.0, "is_foreign": 0,
           "velocity_last_1h": 1, "velocity_last_24h": 4, "avg_amount_last_7d": 50.0,
           "card_age_days": 700}
    row.update(over)
    return list(row.values())


def test_names_and_shape():
    assert len(ENGINEERED_NAMES) == N_ENGINEERED == 11 + len(DERIVED_NAMES)
    assert len(set(ENGINEERED_NAMES)) == N_ENGINEERED
    out = engineer(generate(100, seed=0).features)
    assert out.shape == (100, N_ENGINEERED) and out.dtype == np.float32
    assert np.isfinite(out).all()


def test_raw_features_pass_through():
    raw = generate(500, seed=1).features
    np.testing.assert_array_equal(engineer(raw)[:, :11], raw.astype(np.float32))


def test_one_row_path_equals_batch_path():
    raw = generate(5_000, seed=2).features
    batch = engineer(raw)
    one = np.array([engineer_one(r) for r in raw.tolist()], dtype=np.float32)
    np.testing.assert_allclose(one, batch, rtol=1e-6, atol=0)
    # the serving path writes into a float32 buffer: the same cast as the batch path
    assert (one == batch).mean() > 0.999


@pytest.mark.parametrize(("hour", "night"), [(23, 1), (0, 1), (3, 1), (5, 1), (6, 0), (12, 0), (22, 0)])
def test_night_flag(hour, night):
    out = engineer(np.array([_row(hour_of_day=hour)]))[0]
    assert out[ENGINEERED_NAMES.index("is_night")] == night
    assert engineer_one(_row(hour_of_day=hour))[ENGINEERED_NAMES.index("is_night")] == night


def test_derived_values():
    out = dict(zip(ENGINEERED_NAMES, engineer_one(_row(card_age_days=10, velocity_last_1h=6,
                                                        velocity_last_24h=24)), strict=True))
    assert out["log_amount"] == pytest.approx(np.log1p(100.0))
    assert out["log_amount_ratio"] == pytest.approx(np.log(101.0 / 51.0))
    assert out["velocity_ratio"] == pytest.approx(3.0)
    assert out["is_young_card"] == 1.0
    assert engineer_one(_row())[ENGINEERED_NAMES.index("is_young_card")] == 0.0


def test_extreme_but_valid_values_stay_finite():
    extreme = np.array([_row(amount=10_000_000.0, avg_amount_last_7d=0.0, distance_from_home=40_075.0,
                             velocity_last_1h=10_000, velocity_last_24h=100_000, card_age_days=0),
                        _row(amount=0.0, card_age_days=36_500)])
    assert np.isfinite(engineer(extreme)).all()


def test_wrong_shape_is_a_clear_error():
    with pytest.raises(ValueError, match=r"shape \(n, 11\)"):
        engineer(np.zeros((3, 10)))
    assert engineer(np.array(_row())).shape == (1, N_ENGINEERED)  # one flat row is accepted


def test_one_row_is_cheap():
    row = _row()
    for _ in range(1000):
        engineer_one(row)
    n = 20_000
    start = time.perf_counter()
    for _ in range(n):
        engineer_one(row)
    per_row_us = (time.perf_counter() - start) / n * 1e6
    # ~1 us measured; a loose bound so a busy shared machine does not flake
    assert per_row_us < 25, f"engineer_one takes {per_row_us:.1f} us per row"
