"""Bootstrap confidence intervals for two fraud models judged on the same labelled rows.

The retrain gates and the canary compare a challenger with the champion on a few hundred to a few
thousand labelled live rows at ~2 % fraud: 5-20 frauds. A difference of point estimates there is
mostly noise (one fraud moves recall by 1/positives), so every comparison here is *paired* (both
models scored the same rows, so their shared luck cancels) and comes with a percentile bootstrap
interval of the difference; the callers act only on what the interval excludes.

- `compare_on_holdout`: retrain gates. Stratified bootstrap (positives and negatives resampled
  separately, so every replicate keeps the holdout's class counts: ROC-type metrics are conditional
  on them) of F1 at each model's own threshold, Brier, recall at `max_fpr` and AUC, for each model
  and for the candidate-minus-champion difference, all from the same replicates.
- `f1_difference`: canary label verdict. Multinomial bootstrap over the confusion cells: paired
  (shadow: the same requests, 8 cells of label x challenger flag x champion flag) or independent
  (canary steps: each arm's own requests, 4 cells each). Exact for F1 and O(rounds), whatever n.

Fixed seeds: the same evidence always gets the same verdict (the ledger can be replayed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

HOLDOUT_METRICS = ("f1", "brier", "recall_at_1pct_fpr", "auc")


@dataclass(frozen=True)
class Estimate:
    """A point estimate and its bootstrap interval [lo, hi]."""

    point: float
    lo: float
    hi: float

    def render(self, signed: bool = False, digits: int = 3) -> str:
        f = f"{'+' if signed else ''}.{digits}f"
        return f"{self.point:{f}} [{self.lo:{f}}, {self.hi:{f}}]"

    def negated(self) -> Estimate:
        return Estimate(-self.point, -self.hi, -self.lo)


def interval(point: float, replicates: np.ndarray, confidence: float) -> Estimate:
    """Percentile interval of `replicates` at `confidence` (two-sided) around `point`."""
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(replicates, [tail, 1.0 - tail])
    return Estimate(float(point), float(lo), float(hi))


def f1_from_counts(tp: np.ndarray | float, fp: np.ndarray | float, fn: np.ndarray | float) -> np.ndarray:
    """F1 = 2tp / (2tp + fp + fn), 0 where nothing was flagged and nothing was missed."""
    tp, fp, fn = (np.asarray(v, dtype=np.float64) for v in (tp, fp, fn))
    den = 2 * tp + fp + fn
    return np.where(den > 0, 2 * tp / np.maximum(den, 1e-300), 0.0)


def recall_at_fpr(positive_scores: np.ndarray, negative_scores: np.ndarray, max_fpr: float = 0.01) -> float:
    """Highest recall while flagging at most `max_fpr` of negatives (= sklearn's ROC reading).

    A threshold may flag k = floor(max_fpr * negatives) negatives, so it must lie above the
    (k+1)-th highest negative score: recall = share of positives strictly above that score."""
    neg = np.sort(np.asarray(negative_scores, dtype=np.float64))
    k = _allowed_false_positives(neg.size, max_fpr)
    if k >= neg.size:
        return 1.0 if np.size(positive_scores) else 0.0
    return float(np.mean(np.asarray(positive_scores) > neg[neg.size - 1 - k]))


def _allowed_false_positives(negatives: int, max_fpr: float) -> int:
    return int(np.floor(max_fpr * negatives + 1e-9))


@dataclass(frozen=True)
class HoldoutComparison:
    """Per-metric estimates for the candidate, the champion (if any) and candidate - champion."""

    n: int
    positives: int
    rounds: int
    confidence: float
    candidate: dict[str, Estimate]
    champion: dict[str, Estimate] = field(default_factory=dict)
    difference: dict[str, Estimate] = field(default_factory=dict)


class _Scored:
    """One model's scores split by class, and its own decision threshold."""

    def __init__(self, scores: np.ndarray, y: np.ndarray, threshold: float) -> None:
        s = np.asarray(scores, dtype=np.float64)
        self.pos, self.neg, self.threshold = s[y], s[~y], float(threshold)
        # AUC per replicate without sorting: negatives by rank, and where each positive falls.
        self.neg_rank = np.empty(self.neg.size, dtype=np.int64)
        self.neg_rank[np.argsort(self.neg, kind="stable")] = np.arange(self.neg.size)
        ordered = np.sort(self.neg)
        self.below = np.searchsorted(ordered, self.pos, side="left")
        self.at_or_below = np.searchsorted(ordered, self.pos, side="right")

    def metrics(self, ip: np.ndarray, ineg: np.ndarray, k: int) -> dict[str, np.ndarray]:
        """Metrics per replicate; `ip`/`ineg`: (replicates, class size) resampled row indices."""
        sp, sn = self.pos[ip], self.neg[ineg]
        n_pos, n_neg = sp.shape[1], sn.shape[1]
        tp = (sp >= self.threshold).sum(axis=1)
        fp = (sn >= self.threshold).sum(axis=1)
        sn.sort(axis=1)
        recall = (np.ones(len(sp)) if k >= n_neg
                  else (sp > sn[:, n_neg - 1 - k, None]).mean(axis=1))
        return {"f1": f1_from_counts(tp, fp, n_pos - tp),
                "brier": (((1.0 - sp) ** 2).sum(axis=1) + (sn ** 2).sum(axis=1)) / (n_pos + n_neg),
                "recall_at_1pct_fpr": recall,
                "auc": self._auc(ip, ineg)}

    def _auc(self, ip: np.ndarray, ineg: np.ndarray) -> np.ndarray:
        """Mann-Whitney AUC per replicate from resampled-negative counts by score rank."""
        b, n_neg = ineg.shape
        flat = (self.neg_rank[ineg] + np.arange(b)[:, None] * n_neg).ravel()
        cum = np.zeros((b, n_neg + 1))
        cum[:, 1:] = np.bincount(flat, minlength=b * n_neg).reshape(b, n_neg).cumsum(axis=1)
        # resampled negatives strictly below each original positive, plus half the ties
        won = cum[:, self.below] + 0.5 * (cum[:, self.at_or_below] - cum[:, self.below])
        return np.take_along_axis(won, ip, axis=1).sum(axis=1) / (ip.shape[1] * n_neg)


def compare_on_holdout(labels: np.ndarray, candidate_scores: np.ndarray, candidate_threshold: float,
                       champion_scores: np.ndarray | None = None, champion_threshold: float | None = None,
                       *, rounds: int = 2000, seed: int = 0, confidence: float = 0.95,
                       max_fpr: float = 0.01) -> HoldoutComparison:
    """Stratified paired bootstrap of the holdout metrics (module docstring)."""
    y = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"the holdout needs both classes (got {n_pos} positives, {n_neg} negatives)")
    models = [_Scored(candidate_scores, y, candidate_threshold)]
    if champion_scores is not None:
        models.append(_Scored(champion_scores, y, champion_threshold if champion_threshold is not None
                              else 0.5))
    k = _allowed_false_positives(n_neg, max_fpr)
    whole = [m.metrics(np.arange(n_pos)[None, :], np.arange(n_neg)[None, :], k) for m in models]
    rng = np.random.default_rng(seed)
    reps: list[dict[str, list[np.ndarray]]] = [{name: [] for name in HOLDOUT_METRICS} for _ in models]
    block = max(1, min(rounds, 2_000_000 // (n_pos + n_neg)))  # bounded memory on big holdouts
    done = 0
    while done < rounds:
        b = min(block, rounds - done)
        ip, ineg = rng.integers(0, n_pos, (b, n_pos)), rng.integers(0, n_neg, (b, n_neg))
        for model, store in zip(models, reps, strict=True):
            for name, values in model.metrics(ip, ineg, k).items():
                store[name].append(values)
        done += b
    arrays = [{name: np.concatenate(v) for name, v in store.items()} for store in reps]

    def estimates(i: int) -> dict[str, Estimate]:
        return {name: interval(float(whole[i][name][0]), arrays[i][name], confidence)
                for name in HOLDOUT_METRICS}

    out = HoldoutComparison(n_pos + n_neg, n_pos, rounds, confidence, estimates(0))
    if len(models) == 2:
        out.champion.update(estimates(1))
        out.difference.update({name: interval(float(whole[0][name][0] - whole[1][name][0]),
                                              arrays[0][name] - arrays[1][name], confidence)
                               for name in HOLDOUT_METRICS})
    return out


# ---- canary: F1 of served decisions ------------------------------------------------------------------
@dataclass(frozen=True)
class F1Difference:
    """Challenger F1 - champion F1 with its interval, and what it was computed on."""

    challenger_f1: float
    champion_f1: float
    difference: Estimate
    paired: bool
    n: int  # labelled rows (paired: requests both arms scored; else the challenger's)
    positives: int


def _confusion(y: np.ndarray, flag: np.ndarray) -> np.ndarray:
    """Counts of the cells (tp, fp, fn, tn)."""
    return np.array([np.sum(y & flag), np.sum(~y & flag), np.sum(y & ~flag), np.sum(~y & ~flag)])


def _f1_of_cells(cells: np.ndarray) -> np.ndarray:
    return f1_from_counts(cells[..., 0], cells[..., 1], cells[..., 2])


def f1_difference(challenger: tuple[Sequence[bool], Sequence[bool]],
                  champion: tuple[Sequence[bool], Sequence[bool]], *, paired: bool,
                  rounds: int = 4000, seed: int = 0, confidence: float = 0.95) -> F1Difference:
    """Bootstrap interval of challenger F1 - champion F1 from (labels, flags) of each arm.

    `paired`: both tuples describe the same requests in the same order (labels equal), resampled
    together; otherwise each arm is resampled on its own."""
    yc, fc = (np.asarray(v, dtype=bool) for v in challenger)
    yp, fp = (np.asarray(v, dtype=bool) for v in champion)
    rng = np.random.default_rng(seed)
    cc, cp = _confusion(yc, fc), _confusion(yp, fp)
    if paired:
        if not np.array_equal(yc, yp):
            raise ValueError("paired comparison needs the same labelled requests in both arms")
        # 8 cells: label x challenger flag x champion flag.
        cell = yc.astype(int) * 4 + fc.astype(int) * 2 + fp.astype(int)
        counts = np.bincount(cell, minlength=8)
        draws = rng.multinomial(len(yc), counts / max(1, len(yc)), size=rounds)
        y1, c1, p1 = (np.arange(8) >> 2) & 1, (np.arange(8) >> 1) & 1, np.arange(8) & 1

        def cells(flag: np.ndarray) -> np.ndarray:
            masks = [(y1 == 1) & (flag == 1), (y1 == 0) & (flag == 1), (y1 == 1) & (flag == 0)]
            return np.stack([draws[:, m].sum(axis=1) for m in masks], axis=1)

        diffs = _f1_of_cells(cells(c1)) - _f1_of_cells(cells(p1))
    else:
        dc = rng.multinomial(len(yc), cc / max(1, len(yc)), size=rounds)
        dp = rng.multinomial(len(yp), cp / max(1, len(yp)), size=rounds)
        diffs = _f1_of_cells(dc) - _f1_of_cells(dp)
    f1c, f1p = float(_f1_of_cells(cc)), float(_f1_of_cells(cp))
    return F1Difference(f1c, f1p, interval(f1c - f1p, diffs, confidence), paired, len(yc), int(yc.sum()))
