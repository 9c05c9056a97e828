"""`meshctl challenger register`: put a deliberately degraded challenger through the canary.

    meshctl challenger register --degraded shuffled-labels [--kind xgboost] [--rows 5000] [--seed 5]
                                [--no-announce] [--json]

Good challengers come from the retrain worker (drift, schedule, `POST /api/v1/retrain`) or
`meshctl train`; this command exists to prove the other half of the canary: a challenger that
must be rolled back. It trains `--kind` on a degraded data set, registers it in the MLflow
registry under the alias `challenger` and, unless `--no-announce`, publishes `ModelRegistered`
on `mesh.model.registered`, exactly as the retrain worker does, so the canary controller loads
it into the challenger slot and starts shadowing it. The `bad-canary-rollback` chaos experiment
runs it.

Degradations:
- `shuffled-labels` ("wrong"): the labels of a seeded synthetic set are permuted, so the model
  learns noise; it scores, fast, and disagrees with the truth (the canary's label F1 or
  agreement verdict rolls it back).
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from typing import Any

from data_plane.contracts.errors import ConfigError, MeshError
from data_plane.settings import Settings
from meshctl.output import emit_json, table

DEGRADATIONS = {"shuffled-labels": "labels permuted at random: the model learns noise (wrong answers)"}
KINDS = ("xgboost", "pytorch")
MIN_ROWS, MAX_ROWS = 5_000, 200_000
ANNOUNCE_TIMEOUT_S = 5.0
TRIGGER_PREFIX = "operator:degraded-"  # the ModelRegistered trigger id: the ledger names the origin


class AnnounceError(MeshError):
    """The challenger is registered but the ModelRegistered event could not be published."""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("challenger", help="register a degraded challenger (canary rollback drills)",
                              description="Challenger drills for the canary. See `meshctl challenger "
                                          "register --help`.")
    sub = p.add_subparsers(dest="challenger_command", metavar="CHALLENGER_COMMAND")
    r = sub.add_parser(
        "register", help="train a degraded model, register it as `challenger` and announce it",
        description="Train a model on a degraded data set, register it in MLflow under the alias "
                    "`challenger` and publish ModelRegistered on mesh.model.registered (as the retrain "
                    "worker does): the canary controller shadows it and should roll it back. "
                    "Degradations: " + "; ".join(f"{k}: {v}" for k, v in DEGRADATIONS.items()))
    r.add_argument("--degraded", required=True, choices=sorted(DEGRADATIONS), help="how the model is bad")
    r.add_argument("--kind", choices=KINDS, default="xgboost", help="model kind (default xgboost)")
    r.add_argument("--rows", type=int, default=5_000, help="synthetic rows to train on (default 5000)")
    r.add_argument("--seed", type=int, default=5, help="data and training seed (default 5)")
    r.add_argument("--no-announce", action="store_true",
                   help="register only; do not publish ModelRegistered (the canary will not start)")
    r.add_argument("--json", action="store_true", help="print the result as JSON")
    r.set_defaults(func=run_register)

    def _usage(args: argparse.Namespace) -> int:
        p.print_help()
        return 2

    p.set_defaults(func=_usage)


def run_register(args: argparse.Namespace) -> int:
    """Train, register as `challenger`, announce; prints the version and the model's holdout metrics."""
    if not MIN_ROWS <= args.rows <= MAX_ROWS:
        raise ConfigError(f"--rows must be between {MIN_ROWS:,} and {MAX_ROWS:,} (got {args.rows:,})")
    settings = Settings.from_env()
    started = time.perf_counter()
    result = register_degraded(settings, args.kind, args.degraded, rows=args.rows, seed=args.seed)
    if not args.no_announce:
        announce(settings, args.kind, result["version"], result["trigger_id"], result["metrics"])
        result["announced_at"] = time.time()
    result["announced"] = not args.no_announce
    result["total_s"] = round(time.perf_counter() - started, 3)
    if args.json:
        emit_json(result)
    else:
        m = result["metrics"]
        print(table(["model", "alias", "degraded", "auc", "f1", "train s", "announced"],
                    [[result["label"], "challenger", args.degraded, m.get("auc"), m.get("f1"),
                      result["train_s"], result["announced"]]]))
    return 0


def register_degraded(settings: Settings, kind: str, degradation: str, *, rows: int = 5_000,
                      seed: int = 5) -> dict[str, Any]:
    """Train `kind` on the degraded data set and register it as `challenger`; returns what was made."""
    import numpy as np

    from data_plane.registry import Registry
    from data_plane.synthetic import Dataset, generate
    from training.pipeline import register_trained, train_one

    if degradation not in DEGRADATIONS:
        raise ConfigError(f"--degraded must be one of {', '.join(DEGRADATIONS)} (got {degradation!r})")
    registry = Registry(settings)
    # Importing MLflow and opening its database take longer than training the model on a busy box:
    # overlap them (training uses one core), as `meshctl train` does.
    aliases: dict[str, Any] = {}
    reading = threading.Thread(target=_read_aliases, args=(registry, kind, aliases), daemon=True,
                               name="registry-aliases")
    reading.start()
    good = generate(rows, seed=seed)
    labels = np.random.default_rng(seed).permutation(good.labels)
    data = Dataset(good.features, labels, good.timestamps, seed, degradation)
    t = time.perf_counter()
    trained = train_one(kind, data, seed=seed, workdir=settings.home / "data" / f"challenger-{degradation}")
    train_s = time.perf_counter() - t
    try:
        reading.join()
        if "error" in aliases:
            raise aliases["error"]
        champion = aliases["found"].get("champion")
        if champion is None:
            raise ConfigError(f"{kind} has no champion to compare a challenger with; run `meshctl train` "
                              "first")
        mv = register_trained(registry, trained, data.fingerprint(), alias="challenger")
    finally:
        trained.cleanup()
    return {"kind": kind, "version": str(mv.version), "label": f"{kind}_v{mv.version}",
            "degraded": degradation, "champion": champion,
            "metrics": {k: float(v) for k, v in trained.metrics.items()}, "train_s": round(train_s, 3),
            "registered_at": time.time(), "trigger_id": f"{TRIGGER_PREFIX}{degradation}"}


def _read_aliases(registry: Any, kind: str, out: dict[str, Any]) -> None:
    try:
        out["found"] = registry.aliases(kind)
    except Exception as exc:  # re-raised in the caller's thread, with its own message
        out["error"] = exc


def announce(settings: Settings, kind: str, version: str, trigger_id: str, metrics: dict[str, float]) -> None:
    """Publish ModelRegistered(alias challenger) on mesh.model.registered, as the retrain worker does."""
    import msgspec

    from data_plane.contracts import subjects
    from data_plane.contracts.events import ModelRegistered

    event = ModelRegistered(model=kind, version=version, alias="challenger", metrics=metrics,
                            trigger_id=trigger_id)

    async def publish() -> None:
        import nats

        async def quiet(exc: Exception) -> None:
            return None

        # bounded: nats-py may keep retrying a refused first connection
        connecting = nats.connect(settings.nats_url, connect_timeout=2, max_reconnect_attempts=0,
                                  allow_reconnect=False, error_cb=quiet, name="meshctl-challenger")
        nc = await asyncio.wait_for(connecting, ANNOUNCE_TIMEOUT_S)
        try:
            await nc.publish(subjects.MODEL_REGISTERED, msgspec.json.encode(event))
            await nc.flush(timeout=5)
        finally:
            await nc.close()

    try:
        asyncio.run(publish())
    except Exception as exc:
        why = str(exc) or f"no answer within {ANNOUNCE_TIMEOUT_S:g} s"
        raise AnnounceError(f"{kind}_v{version} is registered as challenger, but ModelRegistered could not "
                            f"be published on {settings.nats_url} ({why}); start NATS (`meshctl up`) and "
                            "register again") from None
