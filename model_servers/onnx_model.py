"""Registry-backed models for the ML servers (xgboost, pytorch): MLflow version -> ONNX scorer.

Imported only by ML servers (and only inside a worker thread at first load), so the heuristic
server never imports numpy, onnxruntime or MLflow.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from data_plane.features import N_ENGINEERED, engineer_one
from data_plane.registry import Registry
from data_plane.scoring import OnnxScorer
from data_plane.settings import Settings

# Up to this many rows, engineering row by row in Python beats numpy's per-call overhead.
SMALL_BATCH = 64


class OnnxModel:
    """One registered model version, compiled to ONNX, scored by ONNX Runtime."""

    platform = "onnxruntime"

    def __init__(self, kind: str, version: str, scorer: OnnxScorer, threshold: float | None = None) -> None:
        self.kind = kind
        self.version = version
        self.threshold = threshold  # the registry's F1-best threshold; None: the server's default
        self.model_version = f"{kind}_v{version}"
        self._scorer = scorer
        # Bound once: the hot path calls it per request.
        self.predict_one = scorer.predict_one
        # Micro-batches reuse one buffer: scoring runs on the event loop thread only.
        self._small = np.zeros((SMALL_BATCH, N_ENGINEERED), dtype=np.float32)

    def predict_many(self, rows: Sequence[Sequence[float]]) -> list[float]:
        """Score rows in one call: a few rows (a micro-batch) are engineered row by row into a
        pre-allocated buffer; many rows (batch and OIP requests) go through numpy at once."""
        n = len(rows)
        if n == 0:
            return []
        if n <= SMALL_BATCH:
            buf = self._small
            for i, row in enumerate(rows):
                buf[i] = engineer_one(row)
            scores: Any = self._scorer.predict_engineered(buf[:n])
        else:
            scores = self._scorer.predict(np.asarray(rows, dtype=np.float64))
        return [float(s) for s in scores.tolist()]


class RegistrySource:
    """Locates and opens versions of one model kind in the MLflow registry."""

    def __init__(self, settings: Settings, kind: str) -> None:
        self.kind = kind
        self._registry = Registry(settings)

    def locate(self, ref: str) -> Any:
        """The registry's LoadedModel for an alias or version (ModelNotFoundError if none)."""
        return self._registry.fetch(self.kind, ref)

    def open(self, located: Any) -> OnnxModel:
        """An ONNX Runtime session for a located version."""
        return OnnxModel(self.kind, str(located.version), OnnxScorer(located.onnx_path), located.threshold)
