"""Registry set-up for the data-plane tests, in one process (MLflow is imported and opened once).

    MESH_HOME=... python -m tests.integration.dp_train [--rows 6000]

Champions of both kinds (`train_all`, small data: fast), then a second, smaller xgboost trained
on other data as the xgboost `challenger` (the shadow and hot-swap tests need a second version).
Prints the registered labels as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys

from data_plane.registry import Registry
from data_plane.settings import Settings
from data_plane.synthetic import generate
from training.pipeline import register_trained, train_all, train_one


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.integration.dp_train")
    p.add_argument("--rows", type=int, default=6000)
    args = p.parse_args(argv)
    settings = Settings.from_env()
    report = train_all(settings, rows=args.rows)
    data = generate(4000, seed=1)
    challenger = train_one("xgboost", data, seed=1, params={"n_estimators": 80})
    try:
        mv = register_trained(Registry(settings), challenger, data.fingerprint(), alias="challenger")
    finally:
        challenger.cleanup()
    print(json.dumps({"champions": [m.label for m in report.models], "challenger": mv.label,
                      "total_s": round(report.timings["total_s"], 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
