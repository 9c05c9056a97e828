"""Training-data validation: every training run checks its dataset first and fails closed.

Checks (each with its number and limit, all run so the report lists every problem at once):
- schema: features are an (n, 11) numeric array, labels n values in {0, 1}, timestamps n values;
- rows: at least `min_rows`;
- non_finite: share of rows with a NaN/inf feature (limit 0: a model cannot train on them);
- range: share of rows with a value outside `data_plane.contracts.schema.FEATURES` bounds or a
  non-integral value in an integer feature (limit 0: serving would reject those rows anyway);
- duplicates: share of rows repeating an earlier row (features and label), limit 1 %;
- label_rate: fraud share within [0.1 %, 50 %] (all-zero labels train a model that never flags);
- drift (only with the previous training set's reference statistics): the largest per-feature
  PSI (data_plane.reference_stats binning), limit 3.0. Retraining is *meant* to follow drift
  (the built-in scenarios reach PSI 0.5-1.2), so this only catches broken inputs such as a unit
  change (amount in cents: PSI about 8).
A failed check raises `DatasetRejected` (a MeshError) whose message is the readable report.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from data_plane.contracts.errors import MeshError
from data_plane.contracts.schema import FEATURES
from data_plane.reference_stats import psi_by_feature
from data_plane.synthetic import Dataset


@dataclass(frozen=True)
class ValidationLimits:
    min_rows: int = 1000
    max_non_finite_rate: float = 0.0
    max_out_of_range_rate: float = 0.0
    max_duplicate_rate: float = 0.01
    min_label_rate: float = 0.001
    max_label_rate: float = 0.5
    max_feature_psi: float = 3.0


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    value: float | None
    limit: str
    detail: str = ""


@dataclass
class ValidationReport:
    rows: int
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "passed": self.passed, "checks": [asdict(c) for c in self.checks]}

    def render(self) -> str:
        """One line per check: PASS/FAIL, name, value vs limit, detail."""
        lines = [f"training data validation: {self.rows} rows, "
                 f"{'passed' if self.passed else f'{len(self.failed)} check(s) failed'}"]
        for c in self.checks:
            value = "-" if c.value is None else f"{c.value:.6g}"
            lines.append(f"  {'PASS' if c.passed else 'FAIL'} {c.name}: {value} (limit {c.limit})"
                         + (f"; {c.detail}" if c.detail else ""))
        return "\n".join(lines)


class DatasetRejected(MeshError):
    """The training data failed validation; `report` says which checks with which numbers."""

    def __init__(self, report: ValidationReport) -> None:
        names = ", ".join(c.name for c in report.failed)
        super().__init__(f"refusing to train on this dataset ({names}). Fix the data or its source.\n"
                         + report.render())
        self.report = report


def validate_dataset(dataset: Dataset, reference_stats: Mapping[str, Any] | None = None,
                     limits: ValidationLimits | None = None) -> ValidationReport:
    """Run every check (module docstring) and return the report; raises nothing."""
    lim = limits or ValidationLimits()
    x = np.asarray(dataset.features)
    y = np.asarray(dataset.labels)
    n = int(y.shape[0]) if y.ndim else 0
    report = ValidationReport(rows=n)
    checks = report.checks
    schema_problems = _schema_problems(x, y, np.asarray(dataset.timestamps))
    checks.append(Check("schema", not schema_problems, None, "11 numeric features, 0/1 labels",
                        "; ".join(schema_problems)))
    if schema_problems:
        return report  # the other checks need the right shape
    x = x.astype(np.float64)
    checks.append(Check("rows", n >= lim.min_rows, float(n), f">= {lim.min_rows}"))
    finite = np.isfinite(x)
    bad_rows = ~finite.all(axis=1)
    nf_rate = float(bad_rows.mean()) if n else 0.0
    checks.append(Check("non_finite", nf_rate <= lim.max_non_finite_rate, nf_rate,
                        f"<= {lim.max_non_finite_rate:g}", _per_feature(~finite)))
    out = _out_of_range(x, finite)
    oor_rate = float(out.any(axis=1).mean()) if n else 0.0
    checks.append(Check("range", oor_rate <= lim.max_out_of_range_rate, oor_rate,
                        f"<= {lim.max_out_of_range_rate:g}", _per_feature(out)))
    dup_rate = _duplicate_rate(x, y)
    checks.append(Check("duplicates", dup_rate <= lim.max_duplicate_rate, dup_rate,
                        f"<= {lim.max_duplicate_rate:g}"))
    label_rate = float(y.mean()) if n else 0.0
    checks.append(Check("label_rate", lim.min_label_rate <= label_rate <= lim.max_label_rate, label_rate,
                        f"{lim.min_label_rate:g}..{lim.max_label_rate:g}", f"{int(y.sum())} fraud of {n}"))
    if reference_stats is not None and n:
        clean = x[~bad_rows]
        psi = psi_by_feature(reference_stats, clean) if len(clean) else {}
        worst = max(psi, key=lambda k: psi[k]) if psi else None
        value = psi[worst] if worst else None
        over = {k: round(v, 3) for k, v in sorted(psi.items(), key=lambda kv: -kv[1])
                if v > lim.max_feature_psi}
        checks.append(Check("drift", value is not None and value <= lim.max_feature_psi, value,
                            f"max PSI <= {lim.max_feature_psi:g}",
                            f"worst {worst}" + (f"; over the limit: {over}" if over else "")))
    return report


def require_valid(dataset: Dataset, reference_stats: Mapping[str, Any] | None = None,
                  limits: ValidationLimits | None = None) -> ValidationReport:
    """`validate_dataset`, raising `DatasetRejected` when any check fails."""
    report = validate_dataset(dataset, reference_stats, limits)
    if not report.passed:
        raise DatasetRejected(report)
    return report


def _schema_problems(x: np.ndarray, y: np.ndarray, ts: np.ndarray) -> list[str]:
    problems = []
    if x.ndim != 2 or x.shape[1] != len(FEATURES):
        problems.append(f"features have shape {x.shape}, expected (n, {len(FEATURES)})")
    elif not np.issubdtype(x.dtype, np.number):
        problems.append(f"features are {x.dtype}, not numbers")
    if y.ndim != 1 or (x.ndim == 2 and y.shape[0] != x.shape[0]):
        problems.append(f"labels have shape {y.shape}, expected ({x.shape[0] if x.ndim else '?'},)")
    elif y.size and not np.isin(y, (0, 1)).all():
        problems.append("labels hold values other than 0 and 1")
    if ts.shape != y.shape:
        problems.append(f"timestamps have shape {ts.shape}, labels {y.shape}")
    return problems


def _out_of_range(x: np.ndarray, finite: np.ndarray) -> np.ndarray:
    """Per-cell mask: finite but outside the feature's bounds, or non-integral for int features."""
    lo = np.array([f.minimum for f in FEATURES], dtype=np.float64)
    hi = np.array([f.maximum for f in FEATURES], dtype=np.float64)
    integral = np.array([f.kind is int for f in FEATURES])
    with np.errstate(invalid="ignore"):
        out = (x < lo) | (x > hi) | (integral & (x != np.round(x)))
    return out & finite


def _per_feature(mask: np.ndarray) -> str:
    counts = mask.sum(axis=0)
    return ", ".join(f"{f.name}: {int(c)}" for f, c in zip(FEATURES, counts, strict=True) if c)


def _duplicate_rate(x: np.ndarray, y: np.ndarray) -> float:
    if not len(y):
        return 0.0
    rows = np.ascontiguousarray(np.column_stack([np.nan_to_num(x, nan=-1.0), y]))
    unique = np.unique(rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))))
    return 1.0 - unique.shape[0] / rows.shape[0]
