"""Training cost per model on 50k synthetic rows, against a logistic-regression reference.

    .venv/bin/python -m bench.bench_training [--rows 50000] [--seed 0]

For each model: wall seconds to fit (1 thread by default), to export to ONNX, and to check parity; holdout
AUC (latest 20 % by time) and AUC on a fresh dataset from another seed. The reference is a
scikit-learn logistic regression on the same engineered features, fitted in the same run: the
machine is shared and noisy, so read the `fit_vs_logreg` ratio rather than absolute seconds.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._report import write_report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="trainer threads (default 1)")
    args = parser.parse_args(argv)

    import torch  # noqa: F401  (imported before any timer starts: fit_s is fitting only)
    import xgboost  # noqa: F401
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from data_plane.features import engineer
    from data_plane.scoring import OnnxScorer
    from data_plane.synthetic import generate
    from training.evaluate import split_out_of_time
    from training.pipeline import train_one

    t = time.perf_counter()
    data = generate(args.rows, seed=args.seed)
    generate_s = time.perf_counter() - t
    fresh = generate(50_000, seed=args.seed + 4242)
    splits = split_out_of_time(data)

    t = time.perf_counter()
    reference = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    reference.fit(engineer(splits.train.features), splits.train.labels)
    logreg_s = time.perf_counter() - t

    def logreg_auc(ds: Any) -> float:
        return round(roc_auc_score(ds.labels, reference.predict_proba(engineer(ds.features))[:, 1]), 4)

    rows: list[dict[str, Any]] = [{
        "model": "logreg (reference)", "fit_s": round(logreg_s, 2), "fit_vs_logreg": 1.0,
        "export_s": None, "parity_s": None, "holdout_auc": logreg_auc(splits.holdout),
        "fresh_auc": logreg_auc(fresh), "parity_max_abs": None,
    }]
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("xgboost", "pytorch"):
            trained = train_one(kind, data, seed=args.seed, workdir=Path(tmp) / kind, threads=args.threads)
            fresh_scores = OnnxScorer(trained.onnx_path).predict(fresh.features)
            rows.append({
                "model": kind, "fit_s": round(trained.timings["train_s"], 2),
                "fit_vs_logreg": round(trained.timings["train_s"] / logreg_s, 1),
                "export_s": round(trained.timings["export_s"], 2),
                "parity_s": round(trained.timings["parity_s"], 2),
                "holdout_auc": round(trained.metrics["auc"], 4),
                "fresh_auc": round(roc_auc_score(fresh.labels, fresh_scores), 4),
                "parity_max_abs": f"{trained.parity_max_abs_diff:.1e}",
            })
    write_report("training", rows, {
        "rows": args.rows, "seed": args.seed, "generate_s": round(generate_s, 3),
        "threads": args.threads,
        "fit_s": "fit only (libraries imported before timing); xgboost with early stopping",
    })


if __name__ == "__main__":
    main()
