"""Reference statistics and the PSI binning shared with the drift detector."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data_plane.contracts.schema import FEATURE_NAMES
from data_plane.reference_stats import (
    CATEGORICAL,
    bin_proportions,
    compute_reference_stats,
    feature_psi,
    psi,
    quantile_edges,
    score_psi,
)
from data_plane.synthetic import generate


@pytest.fixture(scope="module")
def stats():
    ds = generate(20_000, seed=0)
    scores = np.clip(ds.labels * 0.8 + np.random.default_rng(0).random(len(ds)) * 0.2, 0, 1)
    return compute_reference_stats(ds.features, scores)


def test_shape_of_the_statistics(stats):
    json.dumps(stats)  # JSON-serialisable as stored in the registry
    assert stats["n"] == 20_000 and set(stats["features"]) == set(FEATURE_NAMES)
    amount = stats["features"]["amount"]
    assert amount["kind"] == "numeric" and len(amount["edges"]) == 9
    assert len(amount["proportions"]) == 10 and sum(amount["proportions"]) == pytest.approx(1.0)
    assert all(p == pytest.approx(0.1, abs=0.01) for p in amount["proportions"])
    assert len(amount["sample"]) == 5000
    merchant = stats["features"]["merchant_category"]
    assert merchant["kind"] == "categorical" and merchant["categories"] == list(range(10))
    assert sum(merchant["frequencies"]) == pytest.approx(1.0)
    assert set(CATEGORICAL) == {"merchant_category", "hour_of_day", "day_of_week", "is_foreign"}
    scores = stats["scores"]
    assert scores["quantiles"]["levels"][0] == 0.0 and scores["quantiles"]["levels"][-1] == 1.0
    assert len(scores["proportions"]) == len(scores["edges"]) + 1


def test_ties_collapse_bins_and_the_rule_is_right_closed():
    values = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 2], dtype=float)
    edges = quantile_edges(values)
    assert edges == sorted(set(edges)) and len(edges) < 9
    props = bin_proportions(np.array([0.0, 1.0, 1.5, 99.0]), [0.0, 1.0])
    np.testing.assert_allclose(props, [0.25, 0.25, 0.5])


def test_psi_basics():
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    assert psi([0.5, 0.5], [0.9, 0.1]) > 0.2
    assert np.isfinite(psi([0.5, 0.5, 0.0], [0.4, 0.4, 0.2]))  # empty reference bin stays finite


def test_feature_and_score_psi_detect_shift(stats):
    same = generate(20_000, seed=1)
    assert feature_psi(stats["features"]["amount"], same.features[:, 0]) < 0.02
    assert feature_psi(stats["features"]["amount"], same.features[:, 0] * 3) > 0.2
    assert feature_psi(stats["features"]["is_foreign"], np.ones(100)) > 0.2
    assert score_psi(stats, np.full(1000, 0.99)) > 0.2


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="shape"):
        compute_reference_stats(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="empty"):
        compute_reference_stats(np.zeros((0, 11)))
    with pytest.raises(ValueError, match="score distribution"):
        score_psi(compute_reference_stats(generate(100, seed=0).features), np.zeros(3))
