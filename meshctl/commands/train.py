"""`meshctl train`: generate synthetic data, train the models, register them in MLflow.

    meshctl train [--rows 50000] [--seed 0] [--kind xgboost|pytorch|all] [--scenario NAME] [--json]

Each model becomes the `champion` of its registered name when it has none yet, else the
`challenger`. Progress goes to stderr; the metrics table (or JSON with --json) to stdout.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, TextIO

from data_plane.contracts.errors import ConfigError
from data_plane.settings import Settings
from meshctl.output import emit_json, table

MIN_ROWS = 5_000
MAX_ROWS = 5_000_000
KIND_CHOICES = ("xgboost", "pytorch", "all")
SCENARIO_HELP = "covariate_shift, merchant_mix, new_fraud_pattern"


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train", help="train the fraud models on synthetic data and register them in MLflow",
        description="Generate seeded synthetic transactions, train XGBoost and the PyTorch MLP, "
                    "evaluate on an out-of-time holdout (latest 20 %%), export to ONNX, check ONNX "
                    "parity and register each version (champion when none yet, else challenger).")
    p.add_argument("--rows", type=int, default=50_000, help="rows to generate (default 50000)")
    p.add_argument("--seed", type=int, default=0, help="generator and training seed (default 0)")
    p.add_argument("--kind", choices=KIND_CHOICES, default="all", help="which model(s) (default all)")
    p.add_argument("--scenario", default=None, help=f"train on drifted data: {SCENARIO_HELP}")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress on stderr")
    p.add_argument("--if-empty", action="store_true",
                   help="do nothing when a model is already registered (containers, make run)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from data_plane.synthetic import SCENARIOS
    from training.pipeline import KINDS, train_all

    if not MIN_ROWS <= args.rows <= MAX_ROWS:
        raise ConfigError(f"--rows must be between {MIN_ROWS:,} and {MAX_ROWS:,} (got {args.rows:,}): "
                          "fewer rows leave too few fraud cases for the holdout")
    if args.scenario is not None and args.scenario not in SCENARIOS:
        raise ConfigError(f"--scenario {args.scenario!r} is unknown; choose one of: {', '.join(SCENARIOS)}")
    if args.if_empty:
        from meshctl.commands.run import registry_empty

        if not registry_empty(Settings.from_env()):
            print("a model is already registered; nothing to train (--if-empty)", file=sys.stderr)
            return 0
    kinds = KINDS if args.kind == "all" else (args.kind,)
    progress = None if args.no_progress else StageProgress(sys.stderr)
    report = train_all(Settings.from_env(), rows=args.rows, seed=args.seed, progress=progress,
                       kinds=kinds, scenario=args.scenario)
    if progress:
        progress.finish()
    if args.json:
        emit_json(report.to_dict())
    else:
        print(render(report))
    return 0


class StageProgress:
    """Progress per stage: an updating bar on a terminal, one line per finished stage otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.started = time.perf_counter()
        self._stage: str | None = None
        self._stage_started = self.started

    def __call__(self, stage: str, fraction: float) -> None:
        now = time.perf_counter()
        if stage != self._stage:
            self._stage, self._stage_started = stage, now
        clock, took = now - self.started, now - self._stage_started
        if self.tty:
            bar = "#" * int(fraction * 20)
            self.stream.write(f"\r\x1b[K[{clock:6.1f} s] {stage:<18} [{bar:<20}] {fraction:4.0%}")
            if fraction >= 1.0:
                self.stream.write(f"  {took:.1f} s\n")
        elif fraction >= 1.0:
            self.stream.write(f"[{clock:6.1f} s] {stage} done in {took:.1f} s\n")
        self.stream.flush()

    def finish(self) -> None:
        self.stream.flush()


def render(report: Any) -> str:
    """Metrics per model (holdout = latest 20 % by time), then the dataset facts."""
    headers = ["model", "version", "alias", "auc", "pr_auc", "f1", "precision", "recall", "brier",
               "recall@1%fpr", "threshold", "train s", "parity"]
    rows = []
    for m in report.models:
        k = m.metrics
        rows.append([m.kind, m.label, m.alias, k["auc"], k["pr_auc"], k["f1"], k["precision"], k["recall"],
                     k["brier"], k["recall_at_1pct_fpr"], k["threshold"], round(m.timings["train_s"], 1),
                     f"{m.parity_max_abs_diff:.1e}"])
    facts = (f"data: {report.rows:,} rows, seed {report.seed}, fraud rate {report.fraud_rate:.2%}, "
             f"fingerprint {report.fingerprint[:12]}; total {report.timings['total_s']:.1f} s")
    return table(headers, rows) + "\n" + facts
