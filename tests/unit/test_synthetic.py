"""The synthetic transaction generator: schema fidelity, fraud realism, determinism, drift, labels."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from data_plane.contracts.schema import FEATURE_NAMES, FEATURES, parse_transaction
from data_plane.reference_stats import compute_reference_stats, psi_by_feature
from data_plane.synthetic import (
    DEFAULT_START_TS,
    IDX,
    SCENARIO_FEATURES,
    SCENARIOS,
    LabelFeed,
    generate,
    iter_labelled,
    iter_transactions,
)

ROWS = 50_000


@pytest.fixture(scope="module")
def base():
    return generate(ROWS, seed=0)


@pytest.fixture(scope="module")
def reference(base):
    return compute_reference_stats(base.features)


def test_shapes_types_and_ascending_timestamps(base):
    assert base.features.shape == (ROWS, 11) and base.features.dtype == np.float64
    assert base.labels.shape == (ROWS,) and base.labels.dtype == np.int8
    assert base.timestamps.shape == (ROWS,) and base.timestamps.dtype == np.float64
    assert np.all(np.diff(base.timestamps) > 0) and base.timestamps[0] > DEFAULT_START_TS


def test_every_feature_inside_its_documented_range_and_ints_are_ints(base):
    for i, spec in enumerate(FEATURES):
        col = base.features[:, i]
        assert col.min() >= spec.minimum and col.max() <= spec.maximum, spec.name
        if spec.kind is int:
            assert np.all(col == np.floor(col)), f"{spec.name} has non-integer values"
    # the categorical features use their whole domain
    assert set(np.unique(base.features[:, IDX["merchant_category"]])) == set(range(10))
    assert set(np.unique(base.features[:, IDX["hour_of_day"]])) == set(range(24))
    assert set(np.unique(base.features[:, IDX["is_foreign"]])) == {0, 1}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fraud_rate_is_about_two_percent(seed):
    rate = generate(ROWS, seed=seed).fraud_rate
    assert 0.015 <= rate <= 0.025


def test_fraud_rate_is_a_knob():
    assert 0.09 <= generate(20_000, seed=3, fraud_rate=0.1).fraud_rate <= 0.11


def test_same_seed_same_bytes_other_seed_other_data():
    a, b, c = generate(5_000, seed=7), generate(5_000, seed=7), generate(5_000, seed=8)
    assert a.fingerprint() == b.fingerprint()
    np.testing.assert_array_equal(a.features, b.features)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.fingerprint() != c.fingerprint()
    assert len(a.fingerprint()) == 64


def test_fraud_looks_like_fraud_but_overlaps(base):
    x, fraud = base.features, base.labels == 1
    genuine = ~fraud
    ratio = x[:, IDX["amount"]] / x[:, IDX["avg_amount_last_7d"]]
    night = np.isin(x[:, IDX["hour_of_day"]], [23, 0, 1, 2, 3, 4, 5])
    assert np.median(ratio[fraud]) > 2 * np.median(ratio[genuine])
    assert night[fraud].mean() > 3 * night[genuine].mean()
    assert x[fraud, IDX["is_foreign"]].mean() > 5 * x[genuine, IDX["is_foreign"]].mean()
    home = x[:, IDX["distance_from_home"]]
    assert np.median(home[fraud]) > 3 * np.median(home[genuine])
    assert x[fraud, IDX["velocity_last_1h"]].mean() > 3 * x[genuine, IDX["velocity_last_1h"]].mean()
    assert np.median(x[fraud, IDX["card_age_days"]]) < np.median(x[genuine, IDX["card_age_days"]])
    risky = np.isin(x[:, IDX["merchant_category"]], [7, 8, 9])
    assert risky[fraud].mean() > 2 * risky[genuine].mean()
    # not trivially separable: many fraud rows are daytime and domestic, like genuine traffic
    assert (~night[fraud] & (x[fraud, IDX["is_foreign"]] == 0)).mean() > 0.15


def test_rows_are_valid_request_bodies(base):
    for body in base.slice(0, 300).request_bodies():
        txn = parse_transaction(json.dumps(body).encode())
        assert txn.features() == tuple(body[name] for name in FEATURE_NAMES)


def test_to_frame_and_slice(base):
    part = base.slice(100, 200)
    assert len(part) == 100 and part.timestamps[0] == base.timestamps[100]
    frame = part.to_frame()
    assert list(frame.columns) == [*FEATURE_NAMES, "is_fraud", "timestamp"]
    assert str(frame["merchant_category"].dtype) == "int64" and str(frame["amount"].dtype) == "float64"
    assert frame["is_fraud"].sum() == part.labels.sum()


def test_unknown_scenario_and_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown scenario 'nope'; known: covariate_shift"):
        generate(10, scenario="nope")
    with pytest.raises(ValueError, match="rows"):
        generate(-1)
    with pytest.raises(ValueError, match="fraud_rate"):
        generate(10, fraud_rate=1.5)


def test_without_drift_every_feature_is_stable(reference):
    psi = psi_by_feature(reference, generate(ROWS, seed=1).features)
    assert max(psi.values()) < 0.02, psi


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_scenario_moves_only_its_intended_features(scenario, reference):
    drifted = generate(ROWS, seed=1, scenario=scenario)
    psi = psi_by_feature(reference, drifted.features)
    intended = SCENARIO_FEATURES[scenario]
    for name, value in psi.items():
        if name in intended:
            assert value >= 0.2, f"{scenario} should move {name}: PSI {value:.3f}"
        else:
            assert value < 0.1, f"{scenario} should leave {name} alone: PSI {value:.3f}"


def test_scenario_edits_the_same_seeded_rows():
    base = generate(5_000, seed=4)
    shifted = generate(5_000, seed=4, scenario="covariate_shift")
    untouched = [IDX[n] for n in FEATURE_NAMES if n not in SCENARIO_FEATURES["covariate_shift"]]
    np.testing.assert_array_equal(base.features[:, untouched], shifted.features[:, untouched])
    assert shifted.features[:, IDX["amount"]].mean() > 1.5 * base.features[:, IDX["amount"]].mean()


def test_new_fraud_pattern_is_small_daytime_domestic_high_velocity_fraud():
    base = generate(ROWS, seed=5)
    drifted = generate(ROWS, seed=5, scenario="new_fraud_pattern")
    new = (drifted.labels == 1) & (base.labels == 0)
    x = drifted.features[new]
    assert new.mean() > 0.2
    assert np.all(x[:, IDX["amount"]] <= 5.0) and x[:, IDX["velocity_last_1h"]].min() >= 8
    assert x[:, IDX["is_foreign"]].mean() < 0.05
    assert np.isin(x[:, IDX["hour_of_day"]], range(8, 21)).mean() > 0.7


def test_stream_yields_valid_bodies_deterministically():
    first = list(itertools.islice(iter_transactions(seed=3), 5000))
    again = list(itertools.islice(iter_transactions(seed=3), 5000))
    assert first == again
    assert first != list(itertools.islice(iter_transactions(seed=4), 5000))
    assert all("card_id" not in b for b in first)
    for body in first[:200]:
        parse_transaction(json.dumps(body).encode())
    with_cards = list(itertools.islice(iter_transactions(seed=3, cards=10), 500))
    assert {b["card_id"] for b in with_cards} <= {f"card-{i:06d}" for i in range(10)}
    parse_transaction(json.dumps(with_cards[0]).encode())


def test_labelled_stream_carries_truth_and_scenarios():
    plain = [y for _, y in itertools.islice(iter_labelled(seed=1), 20_000)]
    attack = [y for _, y in itertools.islice(iter_labelled(seed=1, scenario="new_fraud_pattern"), 20_000)]
    assert 0.01 < np.mean(plain) < 0.03 and np.mean(attack) > 0.2


def test_label_feed_releases_after_the_delay_in_order():
    feed = LabelFeed(delay_s=10.0)
    feed.add("r1", 1, now=100.0)
    feed.add("r2", 0, now=101.0, features=[1.0] * 11)
    assert feed.due(109.9) == [] and len(feed) == 2
    out = feed.due(111.0)
    assert [(d.request_id, d.is_fraud) for d in out] == [("r1", True), ("r2", False)]
    assert out[1].features == (1.0,) * 11 and out[0].produced_at == 100.0
    assert feed.due(1e9) == [] and len(feed) == 0


def test_label_feed_jitter_is_bounded_and_memory_is_bounded():
    feed = LabelFeed(delay_s=5.0, jitter_s=5.0, seed=1)
    due_at = [feed.add(f"r{i}", i % 2, now=0.0) for i in range(200)]
    assert min(due_at) >= 5.0 and max(due_at) <= 10.0 and len(set(due_at)) > 100
    assert len(feed.due(7.5)) + len(feed.due(10.0)) == 200
    small = LabelFeed(delay_s=1.0, max_pending=3)
    for i in range(5):
        small.add(f"r{i}", 0, now=float(i))
    assert len(small) == 3 and small.dropped == 2
    assert [d.request_id for d in small.due(100.0)] == ["r2", "r3", "r4"]
    with pytest.raises(ValueError):
        LabelFeed(delay_s=-1)
