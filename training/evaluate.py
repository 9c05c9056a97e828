"""Model quality on an out-of-time holdout: the numbers every gate and report uses.

`split_out_of_time` cuts a time-ordered dataset into train / validation / holdout; the holdout is
the latest 20 % by timestamp, so a model is judged on data from after everything it saw.
`choose_threshold` picks the F1-best decision threshold on the validation split; `evaluate`
applies a given threshold on the holdout (never tuned on it).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from data_plane.synthetic import Dataset

HOLDOUT_FRACTION = 0.2
VALIDATION_FRACTION = 0.1
METRIC_NAMES = ("auc", "pr_auc", "f1", "precision", "recall", "brier", "recall_at_1pct_fpr", "threshold")


class Splits(NamedTuple):
    train: Dataset
    validation: Dataset
    holdout: Dataset


def split_out_of_time(ds: Dataset, holdout: float = HOLDOUT_FRACTION,
                      validation: float = VALIDATION_FRACTION) -> Splits:
    """Time-ordered train / validation / holdout (holdout = the latest `holdout` share)."""
    if not np.all(np.diff(ds.timestamps) >= 0):
        order = np.argsort(ds.timestamps, kind="stable")
        ds = Dataset(ds.features[order], ds.labels[order], ds.timestamps[order], ds.seed, ds.scenario)
    n = len(ds)
    h = n - round(n * holdout)
    v = h - round(n * validation)
    splits = Splits(ds.slice(0, v), ds.slice(v, h), ds.slice(h, n))
    for name, part in zip(Splits._fields, splits, strict=True):
        if len(part) == 0 or part.labels.min() == part.labels.max():
            raise ValueError(f"the {name} split of {n} rows has a single class; generate more rows "
                             "(at least a few thousand at a 2 % fraud rate)")
    return splits


def choose_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The score threshold with the best F1 (ties: the higher threshold)."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(labels, scores)
    p, r = precision[:-1], recall[:-1]
    f1 = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0.0)
    best = np.flatnonzero(f1 == f1.max())[-1]
    return float(thresholds[best])


def recall_at_fpr(labels: np.ndarray, scores: np.ndarray, max_fpr: float = 0.01) -> float:
    """The highest recall reachable while flagging at most `max_fpr` of genuine transactions."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(labels, scores)
    ok = fpr <= max_fpr
    return float(tpr[ok].max()) if ok.any() else 0.0


def evaluate(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """AUC, PR-AUC, F1, precision, recall (at `threshold`), Brier and recall at 1 % FPR."""
    from sklearn.metrics import (
        average_precision_score,
        brier_score_loss,
        f1_score,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    y = np.asarray(labels).astype(int)
    s = np.asarray(scores, dtype=np.float64)
    pred = (s >= threshold).astype(int)
    return {
        "auc": float(roc_auc_score(y, s)),
        "pr_auc": float(average_precision_score(y, s)),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "precision": float(precision_score(y, pred, zero_division=0)),
        "recall": float(recall_score(y, pred, zero_division=0)),
        "brier": float(brier_score_loss(y, s)),
        "recall_at_1pct_fpr": recall_at_fpr(y, s, 0.01),
        "threshold": float(threshold),
        "n": float(y.size),
        "positives": float(y.sum()),
    }
