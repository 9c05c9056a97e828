"""A model version's reference statistics, parsed once into arrays the drift detector can reuse.

The stored form is `data_plane.reference_stats.compute_reference_stats`'s JSON dict (artifact
``reference_stats.json`` of every registered version). Parsing checks every field the detector
needs and names the one that is missing or malformed, so a bad artifact fails at load time with
a message, not in the middle of a window.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from data_plane.contracts.errors import MeshError
from data_plane.contracts.schema import FEATURE_NAMES


class ReferenceStatsError(MeshError):
    """Reference statistics are missing a field the drift detector needs or hold a bad value."""


@dataclass(frozen=True)
class FeatureReference:
    """One column's reference: quantile bins for PSI, and what its test compares against.

    test = "ks": `sample_sorted` is the reference sample (two-sample KS).
    test = "chi2": `categories`/`frequencies` are the reference category frequencies; PSI is
    taken over the categories (plus a bin for unseen values), not over quantile bins.
    `reference_n` is the size the test may credit the reference with: for chi2 the training rows
    the frequencies come from; for ks the training rows only when the sample is a quantile sample
    (``sample_kind: "quantiles"``), else None (a random sample counts as its own size).
    """

    name: str
    test: str
    cut_points: np.ndarray
    proportions: np.ndarray
    sample_sorted: np.ndarray
    categories: np.ndarray | None = None
    frequencies: np.ndarray | None = None
    reference_n: int | None = None


@dataclass(frozen=True)
class ReferenceProfile:
    """All 11 raw features (FEATURE_NAMES order) and, when the stats hold one, the score column."""

    features: tuple[FeatureReference, ...]
    score: FeatureReference | None
    n: int

    @classmethod
    def from_stats(cls, stats: Mapping[str, Any]) -> ReferenceProfile:
        """Parse and check a reference-stats dict. Raises ReferenceStatsError naming the field."""
        if not isinstance(stats, Mapping):
            raise ReferenceStatsError("reference stats must be a JSON object")
        feats = stats.get("features")
        if not isinstance(feats, Mapping):
            raise ReferenceStatsError("reference stats: field 'features' is missing; re-register the "
                                      "model version with compute_reference_stats()")
        n = stats.get("n")
        n = int(n) if isinstance(n, int | float) and n > 0 else None
        kind = stats.get("sample_kind", "random")
        parsed = []
        for name in FEATURE_NAMES:
            entry = feats.get(name)
            if not isinstance(entry, Mapping):
                raise ReferenceStatsError(f"reference stats: features.{name} is missing")
            parsed.append(_feature(f"features.{name}", name, entry, n, kind))
        score = None
        if isinstance(stats.get("scores"), Mapping) and stats["scores"].get("sample"):
            score = _feature("scores", "score", {**stats["scores"], "kind": "numeric"}, n, kind)
        return cls(tuple(parsed), score, n or 0)


def _feature(path: str, name: str, entry: Mapping[str, Any], n: int | None,
             sample_kind: str) -> FeatureReference:
    sample_kind = entry.get("sample_kind", sample_kind)
    if sample_kind not in ("random", "quantiles"):
        raise ReferenceStatsError(f"reference stats: {path}.sample_kind must be random or quantiles "
                                  f"(got {sample_kind!r})")
    kind = entry.get("kind", "numeric")
    if kind not in ("numeric", "categorical"):
        raise ReferenceStatsError(f"reference stats: {path}.kind must be numeric or categorical "
                                  f"(got {kind!r})")
    cuts = _vector(path, entry, "edges", allow_empty=True)
    if np.any(np.diff(cuts) <= 0):
        raise ReferenceStatsError(f"reference stats: {path}.edges must be strictly increasing")
    props = _vector(path, entry, "proportions")
    if props.size != cuts.size + 1:
        raise ReferenceStatsError(f"reference stats: {path} has {cuts.size} edges, so "
                                  f"{cuts.size + 1} proportions are expected (got {props.size})")
    sample = np.sort(_vector(path, entry, "sample"))
    if kind == "numeric":
        ks_n = n if sample_kind == "quantiles" and n and n > sample.size else None
        return FeatureReference(name, "ks", cuts, props, sample, reference_n=ks_n)
    cats = _vector(path, entry, "categories")
    freq = _vector(path, entry, "frequencies")
    if cats.size != freq.size:
        raise ReferenceStatsError(f"reference stats: {path}.categories and .frequencies differ in length")
    if freq.sum() <= 0 or np.any(freq < 0):
        raise ReferenceStatsError(f"reference stats: {path}.frequencies must be >= 0 with a positive sum")
    return FeatureReference(name, "chi2", cuts, props, sample, cats, freq / freq.sum(), n)


def _vector(path: str, entry: Mapping[str, Any], key: str, allow_empty: bool = False) -> np.ndarray:
    raw = entry.get(key)
    if raw is None:
        raise ReferenceStatsError(f"reference stats: {path}.{key} is missing")
    try:
        arr = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError):
        raise ReferenceStatsError(f"reference stats: {path}.{key} must be a list of numbers") from None
    if arr.ndim != 1 or (arr.size == 0 and not allow_empty) or not np.all(np.isfinite(arr)):
        raise ReferenceStatsError(f"reference stats: {path}.{key} must be a non-empty list of finite numbers")
    return arr
