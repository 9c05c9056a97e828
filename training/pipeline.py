"""Train, evaluate, export, parity-check and register the fraud models.

- `train_one(kind, dataset)` does everything but registering: out-of-time split, fit, threshold
  on validation, metrics on the holdout, native + ONNX files, parity check, reference statistics.
  The retrain worker calls it on fresh data and decides itself whether and how to register.
- `register_trained(registry, trained, ...)` stores a `TrainedModel` as a new registry version.
- `train_all(settings, rows, seed)` is `meshctl train`: generate, train both kinds, register each
  as `champion` when its model has no champion yet, else as `challenger`.

Progress: every long step calls ``progress(stage, fraction)`` (fraction in [0, 1]); stages are
``generate``, ``<kind>:train``, ``<kind>:export``, ``<kind>:parity``, ``registry:open`` (waiting for
MLflow, which opens in the background meanwhile), ``<kind>:register``.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from data_plane.features import FEATURE_SET_VERSION, engineer
from data_plane.reference_stats import compute_reference_stats
from data_plane.registry import MODEL_NAMES, ModelVersion, Registry
from data_plane.scoring import OnnxScorer
from data_plane.settings import Settings
from data_plane.synthetic import GENERATOR_VERSION, Dataset, generate
from training import export, mlp, xgb
from training.evaluate import choose_threshold, evaluate, split_out_of_time
from training.validate import require_valid

ProgressFn = Callable[[str, float], None]
KINDS: tuple[str, ...] = tuple(MODEL_NAMES)
# One thread for both trainers: on this project's shared 2-core machine a second thread made
# fitting 2x slower, up to 5x under load (OpenMP/intra-op spin-waits when the cores are busy),
# for identical models (measured: MLP 1.9 s vs 4.0 s; XGBoost 0.7 s vs 1.7 s on 50k rows).
TRAIN_THREADS = 1


def _quiet(stage: str, fraction: float) -> None:
    return None


@dataclass
class TrainedModel:
    """A trained, exported and parity-checked model, not yet registered."""

    kind: str
    onnx_path: Path
    native_path: Path
    params: dict[str, Any]
    metrics: dict[str, float]  # on the out-of-time holdout (threshold chosen on validation)
    reference_stats: dict[str, Any]
    parity_max_abs_diff: float
    timings: dict[str, float]
    workdir: Path
    native: Any = field(default=None, repr=False)  # xgboost.Booster or the torch module

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


@dataclass
class ModelReport:
    kind: str
    version: str
    label: str
    alias: str | None
    metrics: dict[str, float]
    timings: dict[str, float]
    parity_max_abs_diff: float


@dataclass
class TrainReport:
    rows: int
    seed: int
    fingerprint: str
    fraud_rate: float
    models: list[ModelReport]
    timings: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "seed": self.seed, "fingerprint": self.fingerprint,
                "fraud_rate": self.fraud_rate, "timings": self.timings,
                "models": [m.__dict__ for m in self.models]}


def train_one(kind: str, dataset: Dataset, *, seed: int = 0, workdir: Path | None = None,
              progress: ProgressFn | None = None, params: dict[str, Any] | None = None,
              threads: int = TRAIN_THREADS, validate: bool = True,
              reference_stats: dict[str, Any] | None = None) -> TrainedModel:
    """Train one model kind on `dataset` (time-ordered) and export it; see the module docstring.

    The dataset is validated first (`training.validate`; drift against `reference_stats`, the
    previous training set's, when given): a bad one raises `DatasetRejected` before any training.
    `validate=False` only for a caller that has just validated the same dataset."""
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; known: {', '.join(KINDS)}")
    if validate:
        require_valid(dataset, reference_stats)
    report = progress or _quiet
    folder = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix=f"train-{kind}-"))
    folder.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    splits = split_out_of_time(dataset)
    x_tr, x_va, x_ho = (engineer(s.features) for s in splits)
    y_tr, y_va, y_ho = (s.labels for s in splits)

    t = time.perf_counter()
    report(f"{kind}:train", 0.0)
    on_progress = lambda f: report(f"{kind}:train", f)  # noqa: E731
    if kind == "xgboost":
        xr = xgb.train_xgboost(x_tr, y_tr, x_va, y_va, seed=seed, params=params, threads=threads,
                               progress=on_progress)
        native, model_params = xr.booster, {**xr.params, "best_iteration": xr.best_iteration}
        predict: Callable[[np.ndarray], np.ndarray] = lambda x: xgb.predict_native(native, x, threads)  # noqa: E731
    else:
        mr = mlp.train_mlp(x_tr, y_tr, x_va, y_va, seed=seed, params=params, threads=threads,
                           progress=on_progress)
        native, model_params = mr.model, {**mr.params, "best_epoch": mr.best_epoch}
        predict = lambda x: mlp.predict_native(native, x)  # noqa: E731
    timings["train_s"] = time.perf_counter() - t

    threshold = choose_threshold(y_va, predict(x_va))
    holdout_scores = predict(x_ho)
    metrics = evaluate(y_ho, holdout_scores, threshold)

    t = time.perf_counter()
    report(f"{kind}:export", 0.0)
    if kind == "xgboost":
        native_path = xgb.save_native(native, folder)
        onnx_path = export.export_xgboost(native, folder / "model.onnx")
    else:
        native_path = mlp.save_native(mr, folder)
        onnx_path = export.export_mlp(native, folder / "model.onnx")
    report(f"{kind}:export", 1.0)
    timings["export_s"] = time.perf_counter() - t

    t = time.perf_counter()
    report(f"{kind}:parity", 0.0)
    parity = export.check_parity(onnx_path, x_ho, holdout_scores)
    reference = Dataset(np.concatenate([splits.validation.features, splits.holdout.features]),
                        np.concatenate([y_va, y_ho]),
                        np.concatenate([splits.validation.timestamps, splits.holdout.timestamps]))
    ref_scores = OnnxScorer(onnx_path).predict(reference.features)
    stats = compute_reference_stats(reference.features, ref_scores, seed=seed)
    report(f"{kind}:parity", 1.0)
    timings["parity_s"] = time.perf_counter() - t

    all_params = {**model_params, "kind": kind, "rows": len(dataset), "seed": seed,
                  "train_rows": len(splits.train), "validation_rows": len(splits.validation),
                  "holdout_rows": len(splits.holdout), "feature_set_version": FEATURE_SET_VERSION,
                  "generator_version": GENERATOR_VERSION, "scenario": dataset.scenario or "none"}
    return TrainedModel(kind, onnx_path, native_path, all_params, metrics, stats, parity, timings,
                        folder, native)


def register_trained(registry: Registry, trained: TrainedModel, dataset_fingerprint: str,
                     alias: str | None = None, progress: ProgressFn | None = None) -> ModelVersion:
    """Store a trained model as the next registry version of its kind (optionally aliased)."""
    report = progress or _quiet
    report(f"{trained.kind}:register", 0.0)
    t = time.perf_counter()
    metrics = {**trained.metrics, "parity_max_abs_diff": trained.parity_max_abs_diff,
               **{k: v for k, v in trained.timings.items()}}
    mv = registry.register(trained.kind, trained.onnx_path, trained.native_path, trained.params, metrics,
                           dataset_fingerprint, trained.reference_stats, alias=alias)
    trained.timings["register_s"] = time.perf_counter() - t
    report(f"{trained.kind}:register", 1.0)
    return mv


def train_all(settings: Settings, rows: int = 50_000, seed: int = 0, progress: ProgressFn | None = None,
              kinds: tuple[str, ...] = KINDS, scenario: str | None = None,
              threads: int = TRAIN_THREADS) -> TrainReport:
    """`meshctl train`: generate `rows`, train every kind, register (champion if none yet)."""
    report = progress or _quiet
    started = time.perf_counter()
    settings.ensure_home()
    report("generate", 0.0)
    t = time.perf_counter()
    dataset = generate(rows, seed=seed, scenario=scenario)
    fingerprint = dataset.fingerprint()
    report("generate", 1.0)
    timings = {"generate_s": time.perf_counter() - t}
    report("validate", 0.0)
    require_valid(dataset)  # fails closed before the registry or any model is touched
    report("validate", 1.0)
    registry = Registry(settings)
    # Importing MLflow and opening (or creating) its database takes seconds: overlap it with
    # training the first model, which leaves the second core free (TRAIN_THREADS = 1).
    warming = threading.Thread(target=registry.warm, name="registry-warm", daemon=True)
    warming.start()
    models: list[ModelReport] = []
    has_champion: dict[str, bool] | None = None
    with tempfile.TemporaryDirectory(prefix="train-", dir=settings.data_dir) as tmp:
        for kind in kinds:
            trained = train_one(kind, dataset, seed=seed, workdir=Path(tmp) / kind, progress=progress,
                                threads=threads, validate=False)
            if has_champion is None:
                report("registry:open", 0.0)
                t = time.perf_counter()
                warming.join()
                has_champion = {k: "champion" in registry.aliases(k) for k in kinds}
                timings["registry_open_wait_s"] = time.perf_counter() - t
                report("registry:open", 1.0)
            alias = "challenger" if has_champion[kind] else "champion"
            mv = register_trained(registry, trained, fingerprint, alias=alias, progress=progress)
            models.append(ModelReport(kind, mv.version, mv.label, alias, trained.metrics,
                                      trained.timings, trained.parity_max_abs_diff))
    timings["total_s"] = time.perf_counter() - started
    return TrainReport(rows, seed, fingerprint, dataset.fraud_rate, models, timings)
