"""Drift statistics on numpy/scipy: PSI, two-sample KS, chi-square goodness of fit, Benjamini-Hochberg.

Pure functions, no state. The windowed detector (`drift.py`) combines them into a decision.

PSI (population stability index) over the bins of the reference::

    PSI = sum_i (a_i - e_i) * ln(a_i / e_i),   a_i = max(actual_i, eps), e_i = max(expected_i, eps)

`expected_i` / `actual_i` are the reference / window proportions in bin i, `eps` = 1e-4 stands in
for an empty bin (no renormalisation after clipping: the clip only touches bins that are empty,
and their share of the sum is negligible). Seed levels: < 0.1 none, [0.1, 0.2) monitor,
>= 0.2 retrain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

PSI_EPS = 1e-4
PSI_MONITOR = 0.1
PSI_RETRAIN = 0.2
MIN_EXPECTED = 5.0  # chi-square: merge categories until every expected count reaches this

LEVELS = ("none", "monitor", "retrain")


def psi_level(value: float) -> str:
    """The seed's PSI level: < 0.1 none, 0.1-0.2 monitor, >= 0.2 retrain."""
    if value >= PSI_RETRAIN:
        return "retrain"
    if value >= PSI_MONITOR:
        return "monitor"
    return "none"


def worst_level(levels: Sequence[str]) -> str:
    """The most severe of `levels` ("none" for an empty sequence)."""
    return max(levels, key=LEVELS.index, default="none")


# ---- PSI --------------------------------------------------------------------------------------------
def psi(expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray,
        eps: float = PSI_EPS) -> float:
    """PSI between two proportion vectors over the same bins (formula in the module docstring)."""
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if e.shape != a.shape or e.ndim != 1 or e.size == 0:
        raise ValueError(f"expected and actual must be 1-D and the same length (got {e.shape}, {a.shape})")
    e = np.maximum(e, eps)
    a = np.maximum(a, eps)
    return float(np.sum((a - e) * np.log(a / e)))


def bin_counts(values: np.ndarray, cut_points: np.ndarray) -> np.ndarray:
    """Counts per bin for inner `cut_points` c_1 < ... < c_{k-1} (k bins, outer bins open-ended).

    Bin i holds c_i < v <= c_{i+1}: the rule of `data_plane.reference_stats` (a value equal to a
    cut point belongs to the bin below it, which matters for integer features with ties). A window
    value beyond the reference's range lands in the first or last bin instead of being lost.
    """
    idx = np.searchsorted(cut_points, values, side="left")
    return np.bincount(idx, minlength=cut_points.size + 1)


def binned_psi(expected: np.ndarray, cut_points: np.ndarray, values: np.ndarray,
               eps: float = PSI_EPS) -> float:
    """PSI of `values` against reference proportions `expected` over bins cut at `cut_points`."""
    if values.size == 0:
        raise ValueError("cannot compute PSI of an empty window")
    counts = bin_counts(values, cut_points)
    return psi(expected, counts / values.size, eps)


def category_counts(values: np.ndarray, categories: np.ndarray) -> tuple[np.ndarray, int]:
    """Counts of `values` per reference category, and how many values fall in no category."""
    order = np.argsort(categories)
    cats = categories[order]
    pos = np.searchsorted(cats, values)
    pos_clipped = np.minimum(pos, cats.size - 1)
    known = cats[pos_clipped] == values
    counts_sorted = np.bincount(pos_clipped[known], minlength=cats.size)
    counts = np.empty_like(counts_sorted)
    counts[order] = counts_sorted
    return counts, int(values.size - known.sum())


def categorical_psi(frequencies: np.ndarray, counts: np.ndarray, unseen: int, eps: float = PSI_EPS) -> float:
    """PSI over reference categories plus one bin for categories the reference never saw."""
    n = counts.sum() + unseen
    if n == 0:
        raise ValueError("cannot compute PSI of an empty window")
    expected = np.append(frequencies / frequencies.sum(), 0.0)
    actual = np.append(counts, unseen) / n
    return psi(expected, actual, eps)


# ---- Kolmogorov-Smirnov -----------------------------------------------------------------------------
@dataclass(frozen=True)
class TestResult:
    statistic: float
    p_value: float
    dof: int = 0  # chi-square degrees of freedom after merging (0 for KS)


def ks_2samp(window: np.ndarray, reference_sorted: np.ndarray, reference_n: int | None = None) -> TestResult:
    """Two-sided two-sample KS test; `reference_sorted` must be sorted ascending.

    Statistic: max |F_window - F_ref| evaluated at every observed value (ties handled by
    `searchsorted(side="right")`, so it equals scipy's). p-value: the asymptotic Smirnov form scipy
    uses for large samples, `kstwo.sf(D, round(n*m/(n+m)))`; windows are >= a few hundred rows and
    the reference sample thousands, where it matches scipy's exact p-value closely. With ties
    (integer features) the test is conservative: fewer false alarms, slightly less power.

    `reference_n`: when the sorted sample is a *quantile* sample of a larger reference (evenly
    spaced order statistics: its ECDF is the full reference's within 1/m), m is the full
    reference's size; otherwise (a random sample) m is the sample's own size.
    """
    n = window.size
    m = reference_n if reference_n is not None else reference_sorted.size
    if n == 0 or reference_sorted.size == 0:
        raise ValueError("KS needs two non-empty samples")
    w = np.sort(window)
    grid = np.concatenate([w, reference_sorted])
    cdf_window = np.searchsorted(w, grid, side="right") / n
    cdf_ref = np.searchsorted(reference_sorted, grid, side="right") / reference_sorted.size
    d = float(np.max(np.abs(cdf_window - cdf_ref)))
    big, small = max(n, m), min(n, m)
    en = big * small / (big + small)
    p = float(np.clip(stats.kstwo.sf(d, np.round(en)), 0.0, 1.0))
    return TestResult(d, p)


# ---- chi-square -------------------------------------------------------------------------------------
def merge_sparse(observed: np.ndarray, expected: np.ndarray, unseen: int = 0,
                 min_expected: float = MIN_EXPECTED) -> tuple[np.ndarray, np.ndarray]:
    """Pool categories so every expected count is >= `min_expected` (the chi-square rule of thumb).

    All categories below the limit go into one pooled bin; categories the reference never saw
    (expected 0, `unseen` observed) join it; if the pool is still below the limit, the next
    smallest categories join until it is not. Returns (observed, expected) after pooling.
    """
    order = np.argsort(expected, kind="stable")
    obs, exp = observed[order].astype(np.float64), expected[order].astype(np.float64)
    sparse = int(np.searchsorted(exp, min_expected, side="left"))  # count with exp < limit
    pool_o, pool_e = float(unseen) + obs[:sparse].sum(), exp[:sparse].sum()
    k = sparse
    if (pool_o > 0 or sparse > 0) and pool_e < min_expected:
        while k < exp.size and pool_e < min_expected:
            pool_o += obs[k]
            pool_e += exp[k]
            k += 1
    rest_o, rest_e = obs[k:], exp[k:]
    if pool_o > 0 or pool_e > 0:
        rest_o, rest_e = np.append(rest_o, pool_o), np.append(rest_e, pool_e)
    return rest_o, rest_e


def chi_square_gof(observed: np.ndarray, expected_freq: np.ndarray, unseen: int = 0,
                   min_expected: float = MIN_EXPECTED, reference_n: int | None = None) -> TestResult:
    """Chi-square goodness of fit of window counts against reference frequencies.

    Expected count = n * frequency (n = window size incl. `unseen`), sparse categories merged
    (`merge_sparse`). Fewer than two bins after merging leaves nothing to test: p = 1.

    `reference_n`: the frequencies were estimated from N reference rows, so window-minus-reference
    proportions vary by (1/n + 1/N) instead of 1/n; the statistic is divided by (1 + n/N) to stay
    chi-square distributed (without it a 2,000-row window against a 40,000-row reference rejects
    ~5 % more often than alpha). None: the frequencies are taken as exact (plain scipy chisquare).
    """
    n = float(observed.sum() + unseen)
    if n == 0:
        raise ValueError("chi-square needs a non-empty window")
    freq = np.asarray(expected_freq, dtype=np.float64)
    obs, exp = merge_sparse(np.asarray(observed), n * freq / freq.sum(), unseen, min_expected)
    dof = obs.size - 1
    if dof < 1:
        return TestResult(0.0, 1.0, 0)
    stat = float(np.sum((obs - exp) ** 2 / exp))
    if reference_n:
        stat /= 1.0 + n / reference_n
    return TestResult(stat, float(stats.chi2.sf(stat, dof)), dof)


# ---- multiple testing -------------------------------------------------------------------------------
def benjamini_hochberg(p_values: Sequence[float] | np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Benjamini-Hochberg step-up at FDR `alpha`: (rejected mask, BH-adjusted p-values).

    Sort p ascending; the largest k with p_(k) <= k * alpha / m rejects hypotheses 1..k.
    Adjusted p_(i) = min_{j >= i} m * p_(j) / j, capped at 1 (reject iff adjusted <= alpha).
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError("p_values must be 1-D")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1) (got {alpha})")
    m = p.size
    if m == 0:
        return np.zeros(0, dtype=bool), np.zeros(0)
    if np.any((p < 0) | (p > 1)) or np.any(np.isnan(p)):
        raise ValueError("p-values must lie in [0, 1]")
    order = np.argsort(p, kind="stable")
    ranked = p[order]
    ranks = np.arange(1, m + 1)
    below = np.flatnonzero(ranked <= ranks * alpha / m)
    rejected = np.zeros(m, dtype=bool)
    if below.size:
        rejected[order[: below[-1] + 1]] = True
    adj_sorted = np.minimum.accumulate((m * ranked / ranks)[::-1])[::-1]
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(adj_sorted, 1.0)
    return rejected, adjusted
