"""The rule-based scorer: transparent rules, probabilities in (0, 1), no ML imports."""

from __future__ import annotations

import math
import subprocess
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from data_plane.contracts.schema import FEATURES
from model_servers import heuristic
from model_servers.heuristic import HeuristicModel, explain, points, score

SEED = (1500.0, 7, 2, 6, 150.0, 80.0, 1, 5, 12, 200.0, 15)
ORDINARY = (42.5, 3, 14, 2, 4.0, 1.5, 0, 1, 4, 55.0, 900)


def _row(**changes: float) -> tuple[float, ...]:
    names = [f.name for f in FEATURES]
    row = list(ORDINARY)
    for k, v in changes.items():
        row[names.index(k)] = v
    return tuple(row)


def test_seed_example_trips_every_rule_and_scores_as_fraud() -> None:
    hits = {h.rule: h for h in explain(SEED)}
    assert set(hits) == {"amount_vs_7d_avg", "night", "foreign", "far_from_home", "far_from_last_txn",
                         "velocity_1h", "velocity_24h", "young_card"}
    assert "7.5x" in hits["amount_vs_7d_avg"].detail
    assert score(SEED) > 0.9


def test_ordinary_purchase_trips_nothing_and_scores_near_the_base_rate() -> None:
    assert explain(ORDINARY) == []
    assert score(ORDINARY) == 1 / (1 + math.exp(-heuristic.PRIOR))
    assert score(ORDINARY) < 0.02


def test_one_rule_alone_does_not_make_fraud() -> None:
    for change in ({"is_foreign": 1}, {"hour_of_day": 3}, {"card_age_days": 5},
                   {"velocity_last_1h": 6}, {"distance_from_home": 900.0}):
        assert score(_row(**change)) < 0.5, change


def test_tiers_pick_the_highest_threshold_reached() -> None:
    assert points(_row(amount=110.0)) == 0.7  # 2x the 55 average
    assert points(_row(amount=200.0)) == 1.4  # 3.6x
    assert points(_row(amount=300.0)) == 2.0  # 5.5x
    assert points(_row(card_age_days=29)) == 0.8
    assert points(_row(card_age_days=30)) == 0.3
    assert points(_row(card_age_days=90)) == 0.0


def test_zero_seven_day_average_compares_against_one_dollar() -> None:
    assert points(_row(avg_amount_last_7d=0.0, amount=0.5)) == 0.0
    assert points(_row(avg_amount_last_7d=0.0, amount=10.0)) == 2.0


def test_model_interface_matches_the_function() -> None:
    m = HeuristicModel()
    assert m.model_version == "heuristic_v1" and m.kind == "heuristic"
    assert m.predict_one(SEED) == score(SEED)
    assert m.predict_many([SEED, ORDINARY]) == [score(SEED), score(ORDINARY)]


_feature = [st.floats(f.minimum, f.maximum, allow_nan=False) if f.kind is float
            else st.integers(int(f.minimum), int(f.maximum)) for f in FEATURES]


@settings(max_examples=300, deadline=None)
@given(st.tuples(*_feature))
def test_any_valid_transaction_gets_a_probability_explained_by_its_rules(row: tuple) -> None:
    p = score(row)
    assert 0.0 < p < 1.0
    assert math.isclose(sum(h.points for h in explain(row)), points(row), abs_tol=1e-12)


@settings(max_examples=200, deadline=None)
@given(st.tuples(*_feature), st.floats(1.0, 50.0))
def test_a_larger_amount_never_lowers_the_score(row: tuple, factor: float) -> None:
    bigger = (min(row[0] * factor, FEATURES[0].maximum), *row[1:])
    assert score(bigger) >= score(row)


def test_the_rules_import_no_ml_package() -> None:
    code = ("import sys, model_servers.heuristic as h; h.score((1.0,)*11); "
            "bad = [m for m in ('numpy', 'onnxruntime', 'mlflow', 'torch', 'xgboost') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
