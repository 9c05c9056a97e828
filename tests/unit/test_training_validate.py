"""Training-data validation: a corrupted dataset is refused with a report naming each failed check."""

from __future__ import annotations

import numpy as np
import pytest

from data_plane.reference_stats import compute_reference_stats
from data_plane.synthetic import Dataset, generate
from training.pipeline import train_one
from training.validate import DatasetRejected, require_valid, validate_dataset


@pytest.fixture(scope="module")
def good() -> Dataset:
    return generate(5000, seed=3)


def test_a_good_dataset_passes_every_check(good: Dataset) -> None:
    stats = compute_reference_stats(generate(5000, seed=4).features)
    report = require_valid(good, stats)
    assert report.passed and {c.name for c in report.checks} == {
        "schema", "rows", "non_finite", "range", "duplicates", "label_rate", "drift"}
    drift = next(c for c in report.checks if c.name == "drift")
    assert drift.value is not None and drift.value < 0.05


def test_a_corrupted_dataset_is_refused_with_the_numbers(good: Dataset) -> None:
    x = good.features.copy()
    x[:50, 0] = np.nan                    # 1 % NaN amounts
    x[50:60, 2] = 31                      # hour_of_day out of range
    x[60:65, 1] = 2.5                     # merchant_category not an integer
    x[1000:1500] = x[2000:2500]           # 500 duplicated rows ...
    y = np.zeros(len(good), dtype=np.int8)  # ... and no fraud at all
    y[1000:1500] = y[2000:2500]
    bad = Dataset(x, y, good.timestamps)
    with pytest.raises(DatasetRejected) as exc:
        require_valid(bad)
    report = exc.value.report
    failed = {c.name: c for c in report.failed}
    assert set(failed) == {"non_finite", "range", "duplicates", "label_rate"}
    assert failed["non_finite"].value == pytest.approx(0.01) and "amount: 50" in failed["non_finite"].detail
    assert failed["range"].value == pytest.approx(15 / 5000)
    assert "hour_of_day: 10" in failed["range"].detail and "merchant_category: 5" in failed["range"].detail
    assert failed["duplicates"].value == pytest.approx(0.1, abs=0.001)
    assert failed["label_rate"].value == 0.0
    message = str(exc.value)
    assert message.startswith("refusing to train on this dataset (non_finite, range, duplicates, label_rate)")
    assert "FAIL label_rate: 0 (limit 0.001..0.5); 0 fraud of 5000" in message
    assert "PASS rows: 5000" in message


def test_a_unit_change_fails_the_drift_check_but_a_real_scenario_does_not(good: Dataset) -> None:
    stats = compute_reference_stats(good.features)
    cents = Dataset(good.features * np.array([100.0] + [1.0] * 10), good.labels, good.timestamps)
    report = validate_dataset(cents, stats)
    (drift,) = report.failed
    assert drift.name == "drift" and drift.value > 3 and "amount" in drift.detail
    assert validate_dataset(generate(5000, seed=5, scenario="merchant_mix"), stats).passed


def test_wrong_shapes_fail_the_schema_check_only() -> None:
    bad = Dataset(np.zeros((10, 9)), np.array([0, 1, 2] + [0] * 7), np.zeros(10))
    report = validate_dataset(bad)
    assert [c.name for c in report.checks] == ["schema"] and not report.passed
    assert "(n, 11)" in report.checks[0].detail


def test_train_one_refuses_before_training(good: Dataset, tmp_path) -> None:  # type: ignore[no-untyped-def]
    y = np.zeros(len(good), dtype=np.int8)
    with pytest.raises(DatasetRejected, match="label_rate"):
        train_one("xgboost", Dataset(good.features, y, good.timestamps), workdir=tmp_path / "w")
    assert not (tmp_path / "w").exists()  # refused before even the work folder was made
