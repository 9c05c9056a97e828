"""Statistics of an A/B comparison between model versions (pure functions, no I/O).

- Fraud-rate difference between two arms: Pearson's chi-square on the 2x2 table
  [[flagged_a, not_flagged_a], [flagged_b, not_flagged_b]] via `scipy.stats.chi2_contingency`
  (its default Yates continuity correction for 2x2 tables).
- Precision and recall with 95 % Wilson score intervals (good coverage at small n and at rates near
  0 or 1, where the normal approximation fails; fraud is rare, so recall's n is small).
- F1 with a 95 % percentile-bootstrap interval: the labelled rows are resampled with replacement,
  which is the same as drawing the four confusion-matrix counts from a multinomial with the
  observed cell proportions (vectorised, 1,000 replicates, fixed seed so an answer is repeatable).
  F1 has no simple closed-form variance; the delta method would need the same cell covariances
  and is poor at small n.
- Score-distribution PSI of one arm against another (the binning of data_plane.reference_stats).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from data_plane.reference_stats import bin_proportions, psi, quantile_edges

Z95 = 1.959963984540054
BOOTSTRAP_REPLICATES = 1000


@dataclass(frozen=True)
class ChiSquare:
    chi2: float
    p_value: float
    dof: int


def fraud_rate_test(flagged_a: int, total_a: int, flagged_b: int, total_b: int) -> ChiSquare | None:
    """Chi-square test of equal predicted-fraud rates; None when the table is degenerate (an
    empty arm, or no arm flags anything / every arm flags everything: no difference to test)."""
    from scipy.stats import chi2_contingency

    table = np.array([[flagged_a, total_a - flagged_a], [flagged_b, total_b - flagged_b]], dtype=np.int64)
    if (table < 0).any() or (table.sum(axis=0) == 0).any() or (table.sum(axis=1) == 0).any():
        return None
    chi2, p, dof, _ = chi2_contingency(table)
    return ChiSquare(float(chi2), float(p), int(dof))


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval for a binomial proportion; None for n = 0."""
    if n <= 0:
        return None
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def f1_score(tp: int, fp: int, fn: int) -> float | None:
    denom = 2 * tp + fp + fn
    return 2 * tp / denom if denom else None


def f1_bootstrap_ci(tp: int, fp: int, fn: int, tn: int, *, replicates: int = BOOTSTRAP_REPLICATES,
                    seed: int = 0) -> tuple[float, float] | None:
    """95 % percentile-bootstrap interval of F1 (module docstring); None without positives."""
    n = tp + fp + fn + tn
    if n == 0 or 2 * tp + fp + fn == 0:
        return None
    rng = np.random.default_rng(seed)
    cells = rng.multinomial(n, np.array([tp, fp, fn, tn], dtype=np.float64) / n, size=replicates)
    denom = 2 * cells[:, 0] + cells[:, 1] + cells[:, 2]
    f1 = np.divide(2 * cells[:, 0], denom, out=np.zeros(replicates), where=denom > 0)
    lo, hi = np.quantile(f1, [0.025, 0.975])
    return float(lo), float(hi)


def confusion(predicted: Sequence[bool], actual: Sequence[bool]) -> tuple[int, int, int, int]:
    """(tp, fp, fn, tn)."""
    p = np.asarray(predicted, dtype=bool)
    a = np.asarray(actual, dtype=bool)
    return (int((p & a).sum()), int((p & ~a).sum()), int((~p & a).sum()), int((~p & ~a).sum()))


def labelled_metrics(tp: int, fp: int, fn: int, tn: int) -> dict[str, Any]:
    """Precision/recall (Wilson 95 %) and F1 (bootstrap 95 %) from a confusion matrix."""
    def prop(k: int, n: int) -> dict[str, Any]:
        ci = wilson(k, n)
        return {"value": k / n if n else None, "n": n, "ci95": list(ci) if ci else None, "method": "wilson"}

    f1_ci = f1_bootstrap_ci(tp, fp, fn, tn)
    return {"n": tp + fp + fn + tn, "tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "precision": prop(tp, tp + fp), "recall": prop(tp, tp + fn),
            "f1": {"value": f1_score(tp, fp, fn), "ci95": list(f1_ci) if f1_ci else None,
                   "method": f"bootstrap ({BOOTSTRAP_REPLICATES} replicates)"}}


def percentiles(values: Sequence[float] | np.ndarray,
                levels: Sequence[float] = (50, 95, 99)) -> dict[str, float]:
    """{"p50": .., "p95": .., "p99": ..} (linear interpolation); {} for no values."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return {}
    qs = np.percentile(v, list(levels))
    return {f"p{level:g}": float(q) for level, q in zip(levels, qs, strict=True)}


def score_psi(reference: np.ndarray, live: np.ndarray) -> float | None:
    """PSI of `live` scores against `reference` scores (decile edges of the reference)."""
    if reference.size == 0 or live.size == 0:
        return None
    edges = quantile_edges(reference)
    return float(psi(bin_proportions(reference, edges), bin_proportions(live, edges)))
