"""Shared by the drift tests: a fixed score function standing in for a model, and records."""

from __future__ import annotations

import numpy as np

from data_plane.contracts.events import PredictionRecord
from data_plane.features import engineer


def toy_scores(raw: np.ndarray) -> np.ndarray:
    """A fixed logistic score of engineered features (unit tests have no trained model)."""
    e = engineer(raw).astype(np.float64)
    z = (-6 + 1.2 * e[:, 12] + 1.5 * e[:, 13] + 0.02 * e[:, 14] + 0.8 * e[:, 6] + 0.5 * e[:, 16]
         + 1.5 * e[:, 18])
    return 1.0 / (1.0 + np.exp(-z))


def records(raw: np.ndarray, model: str = "xgboost", model_version: str = "xgboost_v1",
            shadow: bool = False, prefix: str = "r") -> list[PredictionRecord]:
    """PredictionRecords for rows of raw features, scored with `toy_scores`."""
    scores = toy_scores(raw)
    return [PredictionRecord(request_id=f"{prefix}{i}", model=model, model_version=model_version,
                             slot="champion", features=row, score=float(s), is_fraud=bool(s >= 0.5),
                             latency_ms=1.0, shadow=shadow)
            for i, (row, s) in enumerate(zip(raw.tolist(), scores.tolist(), strict=True))]
