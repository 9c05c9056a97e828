"""The windowed drift detector on the synthetic generator: quiet on honest nulls, fast on drift."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from control_plane.healing.drift import DriftDetector, column_level
from control_plane.healing.drift_reference import ReferenceProfile, ReferenceStatsError
from data_plane.contracts.events import PredictionRecord
from data_plane.contracts.schema import FEATURE_NAMES
from data_plane.reference_stats import compute_reference_stats
from data_plane.synthetic import SCENARIO_FEATURES, SCENARIOS, generate
from tests.drift_support import toy_scores

WINDOW = 2000
REFERENCE_SEED = 1


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    train = generate(40_000, seed=REFERENCE_SEED)  # training-size reference
    return compute_reference_stats(train.features, toy_scores(train.features))


def detector(reference: dict[str, Any], **kw: Any) -> DriftDetector:
    return DriftDetector(reference, "xgboost", "xgboost_v1", window_size=kw.pop("window_size", WINDOW), **kw)


def test_null_windows_never_say_retrain(reference: dict[str, Any]) -> None:
    det = detector(reference)
    levels = []
    for seed in range(100, 160):  # seeds the reference never used: honest nulls
        window = generate(WINDOW, seed=seed)
        report = det.evaluate(window.features, toy_scores(window.features))
        levels.append(report.level)
        assert report.max_psi < 0.1, f"seed {seed}: a null window's PSI reached {report.max_psi:.3f}"
        assert report.score_psi is not None and report.score_psi < 0.1
    assert "retrain" not in levels
    assert levels.count("monitor") <= 6, levels  # significance alone, at alpha=0.01 over 12 tests


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_each_scenario_retrains_within_two_windows_on_its_features(
        reference: dict[str, Any], scenario: str) -> None:
    det = detector(reference)
    before = generate(3 * WINDOW, seed=500)
    # Drift starts 70 % into a window: that window is mostly old traffic, the next is all new.
    change = 2 * WINDOW + int(0.7 * WINDOW)
    after = generate(3 * WINDOW, seed=501, scenario=scenario)
    rows = np.vstack([before.features[:change], after.features])
    reports = det.add_rows(rows, toy_scores(rows))
    pre = reports[:2]
    post = reports[2:]
    assert all(r.level != "retrain" for r in pre)
    first = next(i for i, r in enumerate(post) if r.level == "retrain")
    assert first + 1 <= 2, f"{scenario}: retrain only in window {first + 1} after the change"
    full = post[1]  # the first window made entirely of drifted traffic
    flagged = {f.feature for f in full.features if f.level == "retrain"}
    assert flagged == set(SCENARIO_FEATURES[scenario])
    for f in full.features:
        if f.feature in flagged:
            assert f.psi >= 0.2 and f.rejected and f.p_value < 1e-6
        else:
            assert f.psi < 0.1


def test_records_path_windows_and_skips(reference: dict[str, Any]) -> None:
    det = detector(reference, window_size=600, min_window=300)
    data = generate(700, seed=42)
    scores = toy_scores(data.features)

    def record(i: int, **kw: Any) -> PredictionRecord:
        fields = {"request_id": f"r{i}", "model": "xgboost", "model_version": "xgboost_v1",
                  "slot": "champion", "features": data.features[i].tolist(), "score": float(scores[i]),
                  "is_fraud": False, "latency_ms": 1.0, **kw}
        return PredictionRecord(**fields)

    assert det.add(record(0, shadow=True)) is None
    assert det.add(record(1, model_version="xgboost_v2")) is None
    assert det.add(record(2, model="pytorch")) is None
    assert det.add(record(3, features=[1.0, 2.0])) is None
    assert det.skipped == {"shadow": 1, "other_version": 1, "other_model": 1, "bad_features": 1}
    reports = det.add_many(record(i) for i in range(4, 604))
    assert len(reports) == 1 and reports[0].window_size == 600 and det.pending == 0
    assert reports[0].model == "xgboost" and reports[0].model_version == "xgboost_v1"
    assert [f.feature for f in reports[0].features] == list(FEATURE_NAMES)
    det.add_many(record(i) for i in range(604, 700))
    assert det.flush() is None  # 96 < min_window: keep collecting
    assert det.pending == 96


def test_report_fields_name_the_test_per_feature(reference: dict[str, Any]) -> None:
    window = generate(WINDOW, seed=7, scenario="merchant_mix")
    report = detector(reference).evaluate(window.features, toy_scores(window.features))
    tests = {f.feature: f.test for f in report.features}
    assert {k for k, v in tests.items() if v == "chi2"} == {
        "merchant_category", "hour_of_day", "day_of_week", "is_foreign"}
    assert report.level == "retrain"
    assert report.max_psi == max(f.psi for f in report.features)


def test_advisory_features_are_capped_at_monitor(reference: dict[str, Any]) -> None:
    window = generate(WINDOW, seed=7, scenario="merchant_mix")
    det = detector(reference, advisory_features=["merchant_category"])
    report = det.evaluate(window.features, toy_scores(window.features))
    assert report.level == "monitor"
    with pytest.raises(ValueError, match="unknown feature"):
        detector(reference, advisory_features=["amout"])


@pytest.mark.parametrize(("psi", "rejected", "level"), [
    (0.05, False, "none"), (0.15, False, "monitor"), (0.05, True, "monitor"),
    (0.5, False, "monitor"), (0.2, True, "retrain"),
])
def test_decision_rule_needs_both_significance_and_effect_size(psi: float, rejected: bool,
                                                               level: str) -> None:
    assert column_level(psi, rejected) == level


def test_bad_reference_stats_name_the_field(reference: dict[str, Any]) -> None:
    broken = {**reference, "features": {k: v for k, v in reference["features"].items() if k != "amount"}}
    with pytest.raises(ReferenceStatsError, match=r"features\.amount is missing"):
        ReferenceProfile.from_stats(broken)
    entry = dict(reference["features"]["card_age_days"])
    entry["proportions"] = entry["proportions"][:-1]
    broken = {**reference, "features": {**reference["features"], "card_age_days": entry}}
    with pytest.raises(ReferenceStatsError, match="card_age_days has"):
        ReferenceProfile.from_stats(broken)
    with pytest.raises(ReferenceStatsError, match="'features' is missing"):
        ReferenceProfile.from_stats({"n": 3})


def test_detector_arguments_are_checked(reference: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="min_window"):
        detector(reference, window_size=100, min_window=200)
    with pytest.raises(ValueError, match="alpha"):
        detector(reference, alpha=1.5)
