"""Paired bootstrap statistics of the retrain gates and the canary, against sklearn/scipy and by hand."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from control_plane.healing.paired_stats import (
    Estimate,
    compare_on_holdout,
    f1_difference,
    f1_from_counts,
    recall_at_fpr,
)
from training.evaluate import evaluate
from training.evaluate import recall_at_fpr as sklearn_recall_at_fpr


def holdout(n: int, positives: int, seed: int, separation: float = 2.5) -> tuple[np.ndarray, np.ndarray]:
    """Labels (frauds spread over the rows) and scores in (0, 1) separating them by `separation`."""
    rng = np.random.default_rng(seed)
    y = np.zeros(n, dtype=np.int8)
    y[rng.choice(n, positives, replace=False)] = 1
    logit = -4.0 + separation * 1.6 * y + rng.normal(0, 1.0, n)
    return y, 1 / (1 + np.exp(-logit))


@pytest.mark.parametrize("seed", range(6))
def test_recall_at_fpr_equals_the_roc_curve_reading_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(150, 2500))
    y = (rng.random(n) < 0.05).astype(int)
    y[:2] = (0, 1)
    scores = np.round(rng.random(n) * 0.6 + 0.4 * y, 2)  # rounded: many ties across classes
    assert recall_at_fpr(scores[y == 1], scores[y == 0], 0.01) == pytest.approx(
        sklearn_recall_at_fpr(y, scores, 0.01))


def test_point_estimates_equal_training_evaluate_and_sklearn_auc():
    y, champ = holdout(900, 18, seed=1)
    _, cand = holdout(900, 18, seed=2, separation=3.0)
    cand = np.where(y == 1, np.maximum(cand, 0.05), cand)
    out = compare_on_holdout(y, cand, 0.4, champ, 0.3, rounds=200)
    for model, scores, threshold in (("candidate", cand, 0.4), ("champion", champ, 0.3)):
        expected = evaluate(y, scores, threshold)
        got = getattr(out, model)
        for name in ("f1", "brier", "recall_at_1pct_fpr", "auc"):
            assert got[name].point == pytest.approx(expected[name], abs=1e-12), (model, name)
            assert got[name].lo <= got[name].hi
    assert out.candidate["auc"].point == pytest.approx(roc_auc_score(y, cand))
    assert out.difference["f1"].point == pytest.approx(out.candidate["f1"].point - out.champion["f1"].point)
    assert (out.n, out.positives) == (900, 18)


def test_identical_models_have_a_zero_width_difference():
    y, s = holdout(600, 12, seed=3)
    out = compare_on_holdout(y, s, 0.5, s.copy(), 0.5, rounds=300)
    for name, est in out.difference.items():
        assert (est.point, est.lo, est.hi) == (0.0, 0.0, 0.0), name
    assert out.candidate["f1"].hi > out.candidate["f1"].lo  # the metric itself still varies


def test_brier_difference_interval_matches_the_stratified_normal_approximation():
    # The Brier difference is a mean of per-row differences; with classes resampled separately its
    # variance is sum over classes of (n_c / n)^2 var_c / n_c. At n = 3,000 the percentile interval
    # must sit at the mean +- 1.96 standard errors.
    y, champ = holdout(3000, 150, seed=4)
    _, cand = holdout(3000, 150, seed=5, separation=2.0)
    out = compare_on_holdout(y, cand, 0.5, champ, 0.5, rounds=1500, seed=1)
    d = (cand - y) ** 2 - (champ - y) ** 2
    se = np.sqrt(sum((np.sum(y == c) / y.size) ** 2 * d[y == c].var() / np.sum(y == c) for c in (0, 1)))
    est = out.difference["brier"]
    assert est.point == pytest.approx(d.mean())
    z = stats.norm.ppf(0.975)
    assert est.lo == pytest.approx(d.mean() - z * se, abs=0.12 * z * se)
    assert est.hi == pytest.approx(d.mean() + z * se, abs=0.12 * z * se)


def test_holdout_needs_both_classes():
    with pytest.raises(ValueError, match="both classes"):
        compare_on_holdout(np.zeros(10), np.zeros(10), 0.5)


def test_f1_from_counts_by_hand():
    assert f1_from_counts(8, 2, 2) == pytest.approx(0.8)
    assert f1_from_counts(0, 0, 0) == 0.0
    assert Estimate(0.1, -0.2, 0.3).negated() == Estimate(-0.1, -0.3, 0.2)


def _flags(y: np.ndarray, caught: int, false_alarms: int, seed: int) -> np.ndarray:
    """Flags catching the first `caught` frauds and raising `false_alarms` on random negatives."""
    flags = np.zeros(y.size, dtype=bool)
    flags[np.flatnonzero(y)[:caught]] = True
    flags[np.random.default_rng(seed).choice(np.flatnonzero(y == 0), false_alarms, replace=False)] = True
    return flags


def _f1_of_codes(codes: np.ndarray) -> float:
    """F1 of rows coded label * 2 + flag."""
    return float(f1_from_counts(np.sum(codes == 3), np.sum(codes == 1), np.sum(codes == 2)))


@pytest.mark.parametrize("paired", [True, False])
def test_f1_difference_interval_matches_scipy_bootstrap(paired):
    y = np.zeros(400, dtype=bool)
    y[::20] = True  # 20 frauds
    fc, fp = _flags(y, 15, 4, seed=1), _flags(y, 12, 6, seed=2)
    yi = y.astype(int)
    if paired:  # one sample of rows, each row carrying both arms' cells
        rows = (yi * 2 + fc) * 4 + (yi * 2 + fp)
        ref = stats.bootstrap((rows,), lambda r: _f1_of_codes(r // 4) - _f1_of_codes(r % 4),
                              vectorized=False, n_resamples=4000, method="percentile", random_state=4)
    else:  # two samples resampled independently
        ref = stats.bootstrap((yi * 2 + fc, yi * 2 + fp), lambda a, b: _f1_of_codes(a) - _f1_of_codes(b),
                              vectorized=False, n_resamples=4000, method="percentile", random_state=4)
    ours = f1_difference((y, fc), (y, fp), paired=paired, rounds=8000, seed=3)
    ci = ref.confidence_interval
    assert ours.difference.lo == pytest.approx(ci.low, abs=0.02)
    assert ours.difference.hi == pytest.approx(ci.high, abs=0.02)
    assert ours.difference.point == pytest.approx(_f1_of_codes(yi * 2 + fc) - _f1_of_codes(yi * 2 + fp))
    assert (ours.n, ours.positives, ours.paired) == (400, 20, paired)


def test_pairing_narrows_the_interval_when_both_arms_share_their_luck():
    y = np.zeros(300, dtype=bool)
    y[::30] = True  # 10 frauds
    champion = _flags(y, 8, 0, seed=1)
    challenger = champion.copy()
    challenger[np.flatnonzero(y)[7]] = False  # one fraud fewer: F1 0.889 -> 0.824
    paired = f1_difference((y, challenger), (y, champion), paired=True, seed=0)
    independent = f1_difference((y, challenger), (y, champion), paired=False, seed=0)
    assert paired.difference.point == pytest.approx(14 / 17 - 16 / 18)
    assert paired.difference.hi == 0.0  # the only discordant row can only make it worse
    assert paired.difference.hi - paired.difference.lo < 0.5 * (independent.difference.hi
                                                                 - independent.difference.lo)
    with pytest.raises(ValueError, match="same labelled requests"):
        f1_difference((y, challenger), (~y, champion), paired=True)
