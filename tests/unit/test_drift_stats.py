"""Drift statistics against scipy and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from control_plane.healing import drift_stats as ds


# ---- PSI --------------------------------------------------------------------------------------------
def test_psi_hand_computed_case() -> None:
    expected = [0.25, 0.25, 0.25, 0.25]
    actual = [0.10, 0.20, 0.30, 0.40]
    by_hand = ((0.10 - 0.25) * math.log(0.10 / 0.25) + (0.20 - 0.25) * math.log(0.20 / 0.25)
               + (0.30 - 0.25) * math.log(0.30 / 0.25) + (0.40 - 0.25) * math.log(0.40 / 0.25))
    assert ds.psi(expected, actual) == pytest.approx(by_hand, rel=1e-12)
    assert by_hand == pytest.approx(0.2282, abs=1e-4)  # 0.1374 + 0.0112 + 0.0091 + 0.0705
    assert ds.psi(expected, expected) == 0.0


def test_psi_empty_bin_uses_epsilon() -> None:
    value = ds.psi([0.5, 0.5, 0.0], [0.5, 0.4, 0.1])
    by_hand = (0.4 - 0.5) * math.log(0.4 / 0.5) + (0.1 - 1e-4) * math.log(0.1 / 1e-4)
    assert value == pytest.approx(by_hand, rel=1e-12)


def test_psi_rejects_mismatched_bins() -> None:
    with pytest.raises(ValueError, match="same length"):
        ds.psi([0.5, 0.5], [1.0])


@pytest.mark.parametrize(("value", "level"), [(0.0, "none"), (0.0999, "none"), (0.1, "monitor"),
                                              (0.1999, "monitor"), (0.2, "retrain"), (3.0, "retrain")])
def test_psi_levels_follow_the_seed(value: float, level: str) -> None:
    assert ds.psi_level(value) == level


def test_bin_counts_put_ties_in_the_lower_bin_and_keep_outliers() -> None:
    cuts = np.array([0.0, 1.0, 3.0])
    # bins: v <= 0 | 0 < v <= 1 | 1 < v <= 3 | v > 3
    counts = ds.bin_counts(np.array([-5.0, 0.0, 0.0, 0.5, 1.0, 2.0, 3.0, 3.5, 1e9]), cuts)
    assert counts.tolist() == [3, 2, 2, 2]


def test_bin_counts_agree_with_the_reference_stats_binning() -> None:
    reference_stats = pytest.importorskip("data_plane.reference_stats")
    rng = np.random.default_rng(1)
    for ref, window in ((rng.normal(size=10_000), rng.normal(0.3, 1, 2_000)),
                        (rng.poisson(0.4, 10_000).astype(float), rng.poisson(0.6, 2_000).astype(float))):
        cuts = np.asarray(reference_stats.quantile_edges(ref))
        ours = ds.bin_counts(window, cuts) / window.size
        np.testing.assert_allclose(ours, reference_stats.bin_proportions(window, cuts))


def test_binned_psi_of_a_shifted_sample_is_large_and_of_a_fresh_sample_small() -> None:
    rng = np.random.default_rng(2)
    ref = rng.lognormal(4, 0.8, 40_000)
    cuts = np.quantile(ref, np.linspace(0, 1, 11))[1:-1]
    expected = ds.bin_counts(ref, cuts) / ref.size
    assert ds.binned_psi(expected, cuts, rng.lognormal(4, 0.8, 2_000)) < 0.02
    assert ds.binned_psi(expected, cuts, rng.lognormal(4, 0.8, 2_000) * 1.9) > 0.2


def test_categorical_psi_counts_unseen_categories() -> None:
    cats = np.array([0.0, 1.0, 2.0])
    counts, unseen = ds.category_counts(np.array([2.0, 0.0, 0.0, 7.0, 1.0]), cats)
    assert counts.tolist() == [2, 1, 1] and unseen == 1
    value = ds.categorical_psi(np.array([0.5, 0.25, 0.25]), counts, unseen)
    a = np.array([0.4, 0.2, 0.2, 0.2])
    e = np.array([0.5, 0.25, 0.25, 1e-4])
    assert value == pytest.approx(float(np.sum((a - e) * np.log(a / e))))


# ---- KS ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("n", "m", "shift", "discrete"), [
    (1_000, 5_000, 0.0, False), (1_000, 5_000, 0.1, False), (400, 5_000, 0.3, False),
    (2_000, 3_000, 0.0, True), (2_000, 5_000, 0.2, True),
])
def test_ks_equals_scipy(n: int, m: int, shift: float, discrete: bool) -> None:
    rng = np.random.default_rng(n + m)
    if discrete:  # ties, like velocity counts
        window = rng.poisson(0.35 + shift, n).astype(float)
        ref = rng.poisson(0.35, m).astype(float)
    else:
        window = rng.normal(shift, 1, n)
        ref = rng.normal(0, 1, m)
    ours = ds.ks_2samp(window, np.sort(ref))
    asymp = stats.ks_2samp(window, ref, method="asymp")
    assert ours.statistic == pytest.approx(asymp.statistic, abs=1e-12)
    assert ours.p_value == pytest.approx(asymp.pvalue, rel=1e-9, abs=1e-300)
    # scipy's default (exact where it can) agrees closely at these sizes.
    assert ours.p_value == pytest.approx(stats.ks_2samp(window, ref).pvalue, abs=5e-3)


def test_ks_rejects_empty_samples() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        ds.ks_2samp(np.array([]), np.array([1.0]))


# ---- chi-square -------------------------------------------------------------------------------------
def test_chi_square_equals_scipy_when_nothing_is_sparse() -> None:
    observed = np.array([230, 190, 160, 120, 100, 80, 60, 30, 20, 10])
    freq = np.array([0.20, 0.16, 0.14, 0.12, 0.10, 0.08, 0.07, 0.06, 0.04, 0.03])
    ours = ds.chi_square_gof(observed, freq)
    ref = stats.chisquare(observed, observed.sum() * freq)
    assert ours.dof == 9
    assert ours.statistic == pytest.approx(ref.statistic, rel=1e-12)
    assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-9)


def test_chi_square_merges_sparse_categories_and_unseen_ones() -> None:
    # n = 100: expected 60, 30, 6, 3, 1 -> 3 and 1 are sparse; they pool to 4 < 5, so the next
    # smallest (6) joins: bins {60, 30, 10}. The unseen value joins the pool too.
    observed = np.array([55, 28, 8, 4, 2])
    freq = np.array([0.60, 0.30, 0.06, 0.03, 0.01])
    obs, exp = ds.merge_sparse(observed, 100 * freq, unseen=3)
    assert sorted(exp.tolist()) == pytest.approx([10.0, 30.0, 60.0])
    assert float(obs.sum()) == 100.0
    assert obs.tolist() == [28.0, 55.0, 17.0]
    ours = ds.chi_square_gof(observed, freq, unseen=3)
    ref = stats.chisquare([28, 55, 17], [30.0, 60.0, 10.0])
    assert ours.dof == 2
    assert ours.statistic == pytest.approx(ref.statistic)
    assert ours.p_value == pytest.approx(ref.pvalue)
    assert np.all(exp >= ds.MIN_EXPECTED)


def test_chi_square_with_a_single_bin_left_is_not_significant() -> None:
    result = ds.chi_square_gof(np.array([3, 1]), np.array([0.5, 0.5]))
    assert result.p_value == 1.0 and result.dof == 0


# ---- Benjamini-Hochberg -----------------------------------------------------------------------------
# Benjamini & Hochberg (1995), section 4: 15 p-values from a clinical trial, q = 0.05 rejects four.
BH_1995 = [0.0001, 0.0004, 0.0019, 0.0095, 0.0201, 0.0278, 0.0298, 0.0344, 0.0459,
           0.3240, 0.4262, 0.5719, 0.6528, 0.7590, 1.000]


def test_bh_textbook_example() -> None:
    rejected, adjusted = ds.benjamini_hochberg(BH_1995, 0.05)
    assert rejected.tolist() == [True] * 4 + [False] * 11
    # By hand: threshold k*0.05/15 at k=4 is 0.01333 >= 0.0095; at k=5..9 p_(k) exceeds k*0.00333.
    assert adjusted[3] == pytest.approx(0.0095 * 15 / 4)
    np.testing.assert_allclose(adjusted, stats.false_discovery_control(BH_1995, method="bh"))


def test_bh_is_step_up_and_order_free() -> None:
    # Sorted: 0.011 <= 1*0.05/3, 0.034 > 2*0.05/3, 0.04 <= 3*0.05/3. Step-up takes the largest k
    # that passes (3), so all three are rejected although the second alone fails its threshold.
    p = [0.04, 0.011, 0.034]
    rejected, adjusted = ds.benjamini_hochberg(p, 0.05)
    assert rejected.all()
    # By hand: m*p/rank = 0.033, 0.051, 0.04 -> running min from the top: 0.033, 0.04, 0.04.
    np.testing.assert_allclose(adjusted, [0.04, 0.033, 0.04])
    rejected, _ = ds.benjamini_hochberg([0.5, 0.2, 0.9], 0.05)
    assert not rejected.any()


def test_bh_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="alpha"):
        ds.benjamini_hochberg([0.1], 0.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ds.benjamini_hochberg([1.5], 0.05)


def test_ks_credits_a_quantile_sample_with_the_full_reference_size() -> None:
    rng = np.random.default_rng(5)
    window = rng.normal(0.05, 1, 2_000)
    full = np.sort(rng.normal(0, 1, 40_000))
    quantile_sample = full[((np.arange(5_000) + 0.5) * 40_000 / 5_000).astype(int)]
    ours = ds.ks_2samp(window, quantile_sample, reference_n=40_000)
    exact = stats.ks_2samp(window, full, method="asymp")
    assert ours.statistic == pytest.approx(exact.statistic, abs=1 / 5_000)
    assert ours.p_value == pytest.approx(exact.pvalue, rel=0.1)


def test_chi_square_reference_size_correction() -> None:
    observed = np.array([230, 190, 160, 120, 100, 80, 60, 30, 20, 10])
    freq = np.array([0.20, 0.16, 0.14, 0.12, 0.10, 0.08, 0.07, 0.06, 0.04, 0.03])
    plain = stats.chisquare(observed, observed.sum() * freq)
    corrected = ds.chi_square_gof(observed, freq, reference_n=40_000)
    by_hand = plain.statistic / (1 + 1_000 / 40_000)
    assert corrected.statistic == pytest.approx(by_hand)
    assert corrected.p_value == pytest.approx(stats.chi2.sf(by_hand, 9))
