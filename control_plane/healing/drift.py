"""Windowed drift detection: live prediction records vs the champion's training reference.

`DriftDetector` collects the primary (non-shadow) records of one model version into tumbling
windows and turns each full window into a `DriftReport`. `DriftService` (drift_service.py, also
importable from here) feeds it from NATS and publishes the reports.

Decision rule (docs/decisions/003-drift-decision-rule.md)
---------------------------------------------------------
Per window, for each of the 11 raw features and for the model's scores:

1. effect size: PSI against the reference (quantile bins; category frequencies for
   merchant_category, hour_of_day, day_of_week, is_foreign);
2. evidence: a p-value, two-sample KS against the reference sample for numeric columns (and the
   scores), chi-square goodness of fit against the reference frequencies for categorical ones;
3. Benjamini-Hochberg at FDR `alpha` across the 12 p-values of the window ("rejected").

Level of a column:
- ``retrain``: rejected AND PSI >= 0.2 (a shift that is both real and large);
- ``monitor``: PSI >= 0.1, or rejected alone (real but small, or large but not yet certain);
- ``none``: otherwise.
The window's level is the worst column level; features named in `advisory_features` are capped
at ``monitor`` (for columns expected to move, e.g. a time-of-day feature on a diurnal stream).

Why both: PSI alone is noisy on small windows (its null mean is ~ (bins - 1) / n) and a test
alone flags tiny, harmless shifts on large windows. Requiring both keeps a no-drift window from
saying "retrain" (bench: 0 of 400 null windows) while a shift with PSI >= 0.2 is overwhelmingly
significant at any window >= a few hundred rows, so it fires on the first full window after the
change (the window that straddles the change may need one more: delay <= 2 windows).
Persistence (e.g. two retrain windows in a row before acting) is left to the reconciler's
hysteresis, so this detector reports each window on its own evidence.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from control_plane.healing import drift_stats as ds
from control_plane.healing.drift_reference import FeatureReference, ReferenceProfile
from data_plane.contracts.events import DriftReport, FeatureDrift, PredictionRecord
from data_plane.contracts.schema import FEATURE_NAMES

N_FEATURES = len(FEATURE_NAMES)
DEFAULT_WINDOW = 2000
DEFAULT_MIN_WINDOW = 500
DEFAULT_ALPHA = 0.01


def column_level(psi: float, rejected: bool) -> str:
    """The decision rule for one column (see the module docstring)."""
    if rejected and psi >= ds.PSI_RETRAIN:
        return "retrain"
    if rejected or psi >= ds.PSI_MONITOR:
        return "monitor"
    return "none"


class DriftDetector:
    """Tumbling-window drift detector for one model version (not thread-safe; one per model).

    `add()` returns a DriftReport each time `window_size` accepted records have arrived;
    `flush()` evaluates a partial window of at least `min_window` records (a quiet period).
    Records that are shadow traffic, of another model or version, or malformed are skipped and
    counted in `skipped` (a dict reason -> count).
    """

    def __init__(self, reference_stats: Mapping[str, Any] | ReferenceProfile, model: str,
                 model_version: str, window_size: int = DEFAULT_WINDOW,
                 min_window: int = DEFAULT_MIN_WINDOW, alpha: float = DEFAULT_ALPHA,
                 advisory_features: Iterable[str] = ()) -> None:
        if window_size < 2:
            raise ValueError(f"window_size must be >= 2 (got {window_size})")
        if not 2 <= min_window <= window_size:
            raise ValueError(f"min_window must be in [2, window_size={window_size}] (got {min_window})")
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1) (got {alpha})")
        unknown = set(advisory_features) - set(FEATURE_NAMES)
        if unknown:
            raise ValueError(f"advisory_features: unknown feature(s) {sorted(unknown)}; "
                             f"known: {', '.join(FEATURE_NAMES)}")
        self.profile = (reference_stats if isinstance(reference_stats, ReferenceProfile)
                        else ReferenceProfile.from_stats(reference_stats))
        self.model = model
        self.model_version = model_version
        self.window_size = window_size
        self.min_window = min_window
        self.alpha = alpha
        self.advisory = frozenset(advisory_features)
        self._x = np.empty((window_size, N_FEATURES))
        self._s = np.empty(window_size)
        self._n = 0
        self.window_started: float | None = None  # monotonic time of the window's first record
        self.accepted = 0
        self.windows = 0
        self.skipped: dict[str, int] = {}

    @property
    def pending(self) -> int:
        """Records in the current, not yet evaluated window."""
        return self._n

    def add(self, record: PredictionRecord) -> DriftReport | None:
        """Take one record; a report when it completes a window, else None."""
        reason = self._reject_reason(record)
        if reason:
            self.skipped[reason] = self.skipped.get(reason, 0) + 1
            return None
        if self._n == 0:
            self.window_started = time.monotonic()
        self._x[self._n] = record.features
        self._s[self._n] = record.score
        self._n += 1
        self.accepted += 1
        return self._take_report() if self._n == self.window_size else None

    def add_many(self, records: Iterable[PredictionRecord]) -> list[DriftReport]:
        """Take records in order; the reports of every window they complete."""
        return [r for r in map(self.add, records) if r is not None]

    def add_rows(self, features: np.ndarray, scores: np.ndarray) -> list[DriftReport]:
        """Bulk path for benchmarks and replays: rows (n, 11) and their scores, already filtered."""
        x = np.asarray(features, dtype=np.float64)
        s = np.asarray(scores, dtype=np.float64).ravel()
        if x.ndim != 2 or x.shape[1] != N_FEATURES or s.shape[0] != x.shape[0]:
            raise ValueError(f"expected features (n, {N_FEATURES}) and scores (n,), got {x.shape}, {s.shape}")
        reports = []
        i = 0
        while i < x.shape[0]:
            if self._n == 0:
                self.window_started = time.monotonic()
            take = min(self.window_size - self._n, x.shape[0] - i)
            self._x[self._n:self._n + take] = x[i:i + take]
            self._s[self._n:self._n + take] = s[i:i + take]
            self._n += take
            self.accepted += take
            i += take
            if self._n == self.window_size:
                reports.append(self._take_report())
        return reports

    def flush(self) -> DriftReport | None:
        """Evaluate the partial window if it holds >= min_window records (else keep collecting)."""
        return self._take_report() if self._n >= self.min_window else None

    def evaluate(self, features: np.ndarray, scores: np.ndarray | None) -> DriftReport:
        """The report for one window (rows (n, 11), scores (n,) or None) against the reference."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != N_FEATURES or x.shape[0] == 0:
            raise ValueError(f"expected a non-empty window of shape (n, {N_FEATURES}), got {x.shape}")
        columns = [(ref, x[:, i]) for i, ref in enumerate(self.profile.features)]
        if scores is not None and self.profile.score is not None:
            columns.append((self.profile.score, np.asarray(scores, dtype=np.float64)))
        measured = [_measure(ref, values) for ref, values in columns]
        rejected, _ = ds.benjamini_hochberg([p for _, p, _ in measured], self.alpha)
        features_out = []
        levels = []
        score_psi = None
        for (ref, _), (value, p, test), rej in zip(columns, measured, rejected, strict=True):
            level = column_level(value, bool(rej))
            if ref.name in self.advisory and level == "retrain":
                level = "monitor"
            levels.append(level)
            if ref is self.profile.score:
                score_psi = value
            else:
                features_out.append(FeatureDrift(feature=ref.name, psi=value, p_value=p, test=test,
                                                 level=level, rejected=bool(rej)))
        self.windows += 1
        return DriftReport(model=self.model, model_version=self.model_version, window_size=x.shape[0],
                           level=ds.worst_level(levels), features=features_out, score_psi=score_psi,
                           max_psi=max(f.psi for f in features_out))

    def _take_report(self) -> DriftReport:
        n = self._n
        report = self.evaluate(self._x[:n], self._s[:n])
        self._n = 0
        self.window_started = None
        return report

    def _reject_reason(self, record: PredictionRecord) -> str | None:
        if record.shadow:
            return "shadow"
        if record.model != self.model:
            return "other_model"
        if record.model_version != self.model_version:
            return "other_version"
        if len(record.features) != N_FEATURES:
            return "bad_features"
        if not (np.all(np.isfinite(record.features)) and np.isfinite(record.score)):
            return "not_finite"
        return None


def _measure(ref: FeatureReference, values: np.ndarray) -> tuple[float, float, str]:
    """(PSI, p-value, test name) of one column of a window against its reference."""
    if ref.test == "chi2":
        assert ref.categories is not None and ref.frequencies is not None
        counts, unseen = ds.category_counts(values, ref.categories)
        value = ds.categorical_psi(ref.frequencies, counts, unseen)
        test = ds.chi_square_gof(counts, ref.frequencies, unseen, reference_n=ref.reference_n)
        return value, test.p_value, "chi2"
    value = ds.binned_psi(ref.proportions, ref.cut_points, values)
    return value, ds.ks_2samp(values, ref.sample_sorted, ref.reference_n).p_value, "ks"


def __getattr__(name: str) -> Any:
    # DriftService lives in drift_service.py (it needs NATS); re-exported here lazily so importing
    # the detector alone never imports nats.
    if name == "DriftService":
        from control_plane.healing.drift_service import DriftService

        return DriftService
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
