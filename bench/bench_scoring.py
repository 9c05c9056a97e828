"""Per-row scoring cost: native models (xgboost, torch) vs ONNX Runtime, feature engineering included.

    .venv/bin/python -m bench.bench_scoring [--rows 20000] [--calls 3000]

Trains both models once on synthetic data (training/pipeline.train_one, no registry), then times
for each model, batch size 1 and 64: the native predict and the ONNX path that model servers use
(`OnnxScorer.predict_one` for one row, `OnnxScorer.predict` for a batch). Every timing includes
`data_plane.features` engineering from the 11 raw numbers. Reported: microseconds per row (median
of 7 repeats) and the ONNX/native ratio measured in the same run (the machine is shared and noisy;
compare ratios, not absolute numbers).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench._report import write_report

REPEATS = 7


def per_call_us(fn: Callable[[], Any], calls: int) -> float:
    """Median over REPEATS of the mean time per call, in microseconds."""
    for _ in range(min(calls, 200)):
        fn()
    samples = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="training rows (default 20000)")
    parser.add_argument("--calls", type=int, default=3000, help="calls per timing repeat (default 3000)")
    args = parser.parse_args(argv)

    import torch
    import xgboost as xgb_lib

    from data_plane.features import engineer, engineer_one
    from data_plane.scoring import INPUT_NAME, OUTPUT_NAME, OnnxScorer
    from data_plane.synthetic import generate
    from training.pipeline import train_one

    torch.set_num_threads(1)  # serving runs one thread per request, like ONNX Runtime here
    data = generate(args.rows, seed=0)
    rows = generate(64, seed=99).features
    one = rows[0].tolist()
    single = rows[:1]
    calls, batch_calls = args.calls, max(args.calls // 20, 50)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        models = {kind: train_one(kind, data, workdir=Path(tmp) / kind) for kind in ("xgboost", "pytorch")}
        booster, net = models["xgboost"].native, models["pytorch"].native
        booster.set_param({"nthread": 1})

        def xgb_native(x: np.ndarray) -> Any:
            return booster.inplace_predict(engineer(x))  # no DMatrix: xgboost's fastest path

        def xgb_native_dmatrix(x: np.ndarray) -> Any:
            return booster.predict(xgb_lib.DMatrix(engineer(x), nthread=1))

        def torch_native(x: np.ndarray) -> Any:
            with torch.no_grad():
                return net(torch.from_numpy(engineer(x))).numpy()

        natives = {"xgboost": xgb_native, "pytorch": torch_native}
        for kind in ("xgboost", "pytorch"):
            scorer = OnnxScorer(models[kind].onnx_path)
            session = scorer._session
            native = natives[kind]

            def plain_run(scorer: OnnxScorer = scorer, session: Any = session) -> Any:
                buf = np.asarray([engineer_one(one)], dtype=np.float32)
                return session.run([OUTPUT_NAME], {INPUT_NAME: buf})[0][0]

            timings = {
                "native b1": per_call_us(lambda native=native: native(single), calls // 3),
                "onnx b1": per_call_us(lambda scorer=scorer: scorer.predict_one(one), calls),
                "onnx b1 session.run": per_call_us(plain_run, calls),
                "native b64": per_call_us(lambda native=native: native(rows), batch_calls) / 64,
                "onnx b64": per_call_us(lambda scorer=scorer: scorer.predict(rows), batch_calls) / 64,
            }
            if kind == "xgboost":
                timings["native b1 DMatrix"] = per_call_us(lambda: xgb_native_dmatrix(single), calls // 10)
            for name, us in timings.items():
                engine, batch = name.split(" ", 1)
                ref = timings["native b64" if batch.startswith("b64") else "native b1"]
                results.append({"model": kind, "engine": engine, "batch": batch, "us_per_row": round(us, 2),
                                "ratio_vs_native": round(us / ref, 3)})
    fe_one = per_call_us(lambda: engineer_one(one), calls * 5)
    fe_batch = per_call_us(lambda: engineer(rows), batch_calls * 5) / 64
    for batch, us in (("b1 engineer_one", fe_one), ("b64 engineer", fe_batch)):
        results.append({"model": "-", "engine": "features", "batch": batch, "us_per_row": round(us, 2),
                        "ratio_vs_native": None})
    write_report("scoring", results, {
        "what": "us per row incl. feature engineering; median of 7 repeats; 1 thread everywhere",
        "onnx b1": "OnnxScorer.predict_one (I/O binding, preallocated buffers)",
        "onnx b1 session.run": "same model through a plain session.run (reference for the binding)",
        "native xgboost": "Booster.inplace_predict (b1 DMatrix row: Booster.predict on a new DMatrix)",
        "native pytorch": "torch.no_grad forward, torch.set_num_threads(1)",
        "training rows": args.rows,
    })


if __name__ == "__main__":
    main()
