"""RetrainWorker: a drift report (or an operator request) in, a gated `challenger` (or a reasoned no) out.

Triggers: a `DriftReport` with level `retrain` on `mesh.drift.<kind>`, `RetrainRequested` on
`mesh.retrain.requested` (operator, `POST /api/v1/retrain`), and a schedule
(`MESH_RETRAIN_SCHEDULE_S` seconds per kind, 0 = off; reason `schedule`, rationed like drift).
Drift and scheduled triggers are rationed: at most
`budget_per_hour` runs per kind per rolling hour and `cooldown_s` between two runs of one kind;
an operator request skips the cooldown but not a run already in progress.

One run (stages published as `RetrainProgress` on `mesh.retrain.progress`):
1. collect: recent logged features of the kind joined with delayed labels (`retrain_data`).
   Not enough labels (`min_labelled` rows with `min_positives` frauds)? Wait for the label feed,
   publishing "waiting for labels: n/min", for at most `label_wait_s`; then give up. Never generate
   rows of the drifted distribution: that would be training on the answer.
2. train: `training.pipeline.train_one` on recent (minus holdout) + a reference sample, in a thread.
3. evaluate: candidate and champion scored on the same out-of-time holdout (grown towards
   `min_holdout_positives` frauds), compared paired by bootstrap; ONNX one-row p99; `retrain_gates`.
4. register (only now, one registry call) as `challenger` and publish `ModelRegistered` on
   `mesh.model.registered` with the metrics and the trigger id. A worker killed before this step
   leaves nothing in the registry.
Every outcome is a `Decision` (actor `retrain`) published on `mesh.retrain.decision`; the control
plane appends it to its ledger (the ledger has one writer).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from control_plane.healing.paired_stats import compare_on_holdout
from control_plane.healing.retrain_data import (
    RecentRows,
    fetch_recent,
    holdout_fraction_for,
    reference_sample,
    split_recent,
    training_set,
)
from control_plane.healing.retrain_gates import GateConfig, GateVerdict, judge_candidate
from data_plane import envconfig
from data_plane.contracts import subjects
from data_plane.contracts.events import (
    Decision,
    DriftReport,
    ModelRegistered,
    RetrainProgress,
    RetrainRequested,
)
from data_plane.eventbus import EventBus, connect_forever
from data_plane.settings import Settings

log = logging.getLogger(__name__)

RETRAIN_DECISION = subjects.RETRAIN_DECISION
PREFIX = "MESH_RETRAIN_"
Clock = Callable[[], float]


@dataclass(frozen=True)
class RetrainConfig:
    lookback_s: float = 900.0
    min_labelled: int = 2000
    min_positives: int = 30
    holdout_fraction: float = 0.25
    min_holdout_positives: int = 20  # grow the holdout (latest rows) until it holds this many frauds
    max_holdout_fraction: float = 0.5
    reference_rows: int = 20_000
    # Reference rows per recent training row (at least 5,000): keeps the drifted rows a third of the
    # training set by default, so what changed is learnt, not drowned by the old distribution.
    reference_per_recent: float = 2.0
    budget_per_hour: int = 3
    cooldown_s: float = 300.0
    label_wait_s: float = 300.0
    label_poll_s: float = 5.0
    latency_rows: int = 2000
    seed: int = 0
    schedule_s: float = 0.0  # scheduled retraining per kind every this many seconds; 0 = off
    gates: GateConfig = field(default_factory=GateConfig)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RetrainConfig:
        """`MESH_RETRAIN_<FIELD>` overrides (e.g. MESH_RETRAIN_COOLDOWN_S=5); gates: MESH_GATE_*."""
        return cls(**envconfig.overrides(cls, PREFIX, env, skip=("gates",)), gates=GateConfig.from_env(env))


class RetrainBudget:
    """At most `per_hour` runs per kind in any rolling hour, `cooldown_s` apart (fake-clock friendly)."""

    def __init__(self, per_hour: int, cooldown_s: float, clock: Clock = time.monotonic) -> None:
        self.per_hour, self.cooldown_s, self.clock = per_hour, cooldown_s, clock
        self._runs: dict[str, deque[float]] = {}

    def refusal(self, kind: str, *, operator: bool = False) -> str | None:
        """Why a run of `kind` may not start now (None: it may)."""
        now = self.clock()
        runs = self._runs.setdefault(kind, deque())
        while runs and now - runs[0] >= 3600:
            runs.popleft()
        if not operator and runs and now - runs[-1] < self.cooldown_s:
            return f"cooldown: last run {now - runs[-1]:.0f}s ago (< {self.cooldown_s:g}s)"
        if len(runs) >= self.per_hour:
            return f"budget: {len(runs)} runs in the last hour (max {self.per_hour})"
        return None

    def record(self, kind: str) -> None:
        self._runs.setdefault(kind, deque()).append(self.clock())


def onnx_p99_ms(onnx_path: Path, rows: np.ndarray) -> float:
    """p99 of one-row ONNX scoring (the serving path's call) over `rows`, in ms."""
    from data_plane.scoring import OnnxScorer

    scorer = OnnxScorer(onnx_path)
    for row in rows[:50]:  # warm-up
        scorer.predict_one(row.tolist())
    times = []
    for row in rows:
        values = row.tolist()
        t = time.perf_counter()
        scorer.predict_one(values)
        times.append(time.perf_counter() - t)
    return float(np.percentile(np.asarray(times) * 1000.0, 99))


@dataclass(frozen=True)
class ChampionScores:
    """The champion's scores on the holdout, at its own registry threshold."""

    version: str
    scores: np.ndarray
    threshold: float
    metrics: dict[str, float]
    params: dict[str, str]


def score_champion(settings: Settings, kind: str, holdout_x: np.ndarray, holdout_y: np.ndarray
                   ) -> ChampionScores | None:
    """The champion's holdout scores and metrics at its own threshold, or None without one."""
    from data_plane.contracts.errors import ModelNotFoundError
    from data_plane.registry import Registry
    from data_plane.scoring import OnnxScorer
    from training.evaluate import evaluate

    try:
        loaded = Registry(settings).fetch(kind, "champion")
    except ModelNotFoundError:
        return None
    scores = OnnxScorer(loaded.onnx_path).predict(holdout_x)
    threshold = loaded.threshold if loaded.threshold is not None else settings.fraud_threshold
    return ChampionScores(loaded.version, scores, float(threshold), evaluate(holdout_y, scores, threshold),
                          dict(loaded.params))


def _champion_reference(settings: Settings, kind: str) -> dict[str, Any] | None:
    """The champion's training-set reference statistics (drift check of the new training data)."""
    from data_plane.contracts.errors import MeshError
    from data_plane.registry import Registry

    try:
        return dict(Registry(settings).fetch(kind, "champion").reference_stats or {}) or None
    except MeshError:
        return None


@dataclass
class RunOutcome:
    kind: str
    registered_version: str | None
    verdict: GateVerdict | None
    reason: str
    numbers: dict[str, float] = field(default_factory=dict)
    detail: str | None = None  # the ledger reason when `reason` is a rule name (dataset_rejected)


class RetrainWorker:
    """Consumes triggers from NATS and runs one retrain per kind at a time (module docstring)."""

    def __init__(self, settings: Settings, config: RetrainConfig | None = None,
                 bus: EventBus | None = None, clock: Clock = time.monotonic) -> None:
        self.settings = settings
        self.config = config or RetrainConfig.from_env()
        self.bus = bus or EventBus(settings.nats_url, "retrain-worker")
        self._own_bus = bus is None
        self.budget = RetrainBudget(self.config.budget_per_hour, self.config.cooldown_s, clock)
        self.running: dict[str, asyncio.Task[RunOutcome]] = {}
        self.outcomes: list[RunOutcome] = []
        self._nc: Any = None
        self._subs: list[Any] = []
        self._last_progress = 0.0
        self.clock = clock
        self._next_due: dict[str, float] = {}
        self._schedule_task: asyncio.Task[None] | None = None

    # ---- wiring -----------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._own_bus:
            await self.bus.start()
        # meshctl starts NATS first, but a restart may race it
        self._nc = await connect_forever(self.settings.nats_url, "retrain-worker", connect_timeout=2)
        self._subs = [await self._nc.subscribe("mesh.drift.*", cb=self._on_drift),
                      await self._nc.subscribe(subjects.RETRAIN_REQUESTED, cb=self._on_request)]
        if self.config.schedule_s > 0:
            self._schedule_task = asyncio.create_task(self._schedule_loop(), name="retrain-schedule")

    async def stop(self) -> None:
        if self._schedule_task is not None:
            self._schedule_task.cancel()
        for task in self.running.values():
            task.cancel()
        if self.running:
            await asyncio.wait(list(self.running.values()), timeout=5)
        if self._nc is not None:
            try:
                await self._nc.drain()
            except Exception as exc:
                log.debug("retrain: nats drain: %s", exc)
        if self._own_bus:
            await self.bus.close()

    async def _on_drift(self, msg: Any) -> None:
        try:
            report = msgspec.json.decode(msg.data, type=DriftReport)
        except msgspec.MsgspecError:
            return
        if report.level == "retrain":
            self.trigger(report.model, "drift", report.id, numbers={"max_psi": report.max_psi})

    async def _on_request(self, msg: Any) -> None:
        try:
            req = msgspec.json.decode(msg.data, type=RetrainRequested)
        except msgspec.MsgspecError:
            return
        self.trigger(req.model, req.reason or "operator", req.id, operator=req.reason != "drift")

    # ---- schedule ---------------------------------------------------------------------------------
    def due_scheduled(self) -> list[str]:
        """Kinds whose scheduled run is due now (the first is one interval after the first call);
        each due kind's next run is one interval later, whether or not the budget lets it run."""
        from data_plane.registry import MODEL_NAMES

        every = self.config.schedule_s
        if every <= 0:
            return []
        now = self.clock()
        due = []
        for kind in MODEL_NAMES:
            if now >= self._next_due.setdefault(kind, now + every):
                due.append(kind)
                self._next_due[kind] = now + every
        return due

    async def _schedule_loop(self) -> None:
        self.due_scheduled()  # arms the first deadline
        tick = min(5.0, max(0.05, self.config.schedule_s / 10))
        while True:
            await asyncio.sleep(tick)
            for kind in self.due_scheduled():
                # same budget, cooldown, gates and ledger as a drift trigger
                self.trigger(kind, "schedule", f"schedule-{kind}-{int(time.time())}")

    # ---- triggering -------------------------------------------------------------------------------
    def trigger(self, kind: str, reason: str, trigger_id: str, *, operator: bool = False,
                numbers: Mapping[str, float] | None = None) -> bool:
        """Start a run for `kind` unless one runs or the budget refuses (then a ledger entry says why)."""
        from data_plane.registry import MODEL_NAMES

        if kind not in MODEL_NAMES:
            return False
        if kind in self.running:
            return False  # a report per window while a run is busy: not worth a ledger line each
        refusal = self.budget.refusal(kind, operator=operator)
        if refusal is not None:
            self._decide(kind, "retrain_skipped", "retrain_budget", f"{reason} trigger for {kind} "
                         f"not acted on: {refusal}", trigger_id, dict(numbers or {}))
            return False
        self.budget.record(kind)
        task = asyncio.create_task(self.run(kind, reason, trigger_id), name=f"retrain-{kind}")
        self.running[kind] = task
        task.add_done_callback(lambda _t: self.running.pop(kind, None))
        return True

    # ---- one run ----------------------------------------------------------------------------------
    async def run(self, kind: str, reason: str, trigger_id: str) -> RunOutcome:
        """collect -> train -> evaluate -> register (see the module docstring)."""
        started = time.monotonic()
        try:
            recent = await self._collect(kind)
            if recent is None:
                return self._finish(RunOutcome(kind, None, None, "insufficient_labels"), trigger_id,
                                    f"gave up after {self.config.label_wait_s:g}s: too few labelled "
                                    "recent rows")
            outcome = await asyncio.to_thread(self._train_and_judge, kind, recent, trigger_id)
        except asyncio.CancelledError:
            self._progress(kind, "cancelled", 1.0, "worker stopped; nothing registered")
            raise
        except Exception as exc:
            log.exception("retrain of %s failed", kind)
            return self._finish(RunOutcome(kind, None, None, "error"), trigger_id, f"failed: {exc}")
        outcome.numbers["duration_s"] = time.monotonic() - started
        if outcome.registered_version is not None:
            self.bus.publish(subjects.MODEL_REGISTERED, ModelRegistered(
                model=kind, version=outcome.registered_version, alias="challenger",
                metrics={k: v for k, v in outcome.numbers.items()}, trigger_id=trigger_id))
        return self._finish(outcome, trigger_id, outcome.detail or outcome.reason)

    async def _collect(self, kind: str) -> RecentRows | None:
        c = self.config
        deadline = time.monotonic() + c.label_wait_s
        while True:
            self._progress(kind, "collect", 0.0, "reading recent predictions and labels")
            recent = await fetch_recent(self._nc, kind, c.lookback_s, time.time())
            if len(recent) >= c.min_labelled and recent.positives >= c.min_positives:
                self._progress(kind, "collect", 1.0, f"{len(recent)} labelled rows "
                               f"({recent.positives} fraud) of {recent.predictions_seen} predictions")
                return recent
            self._progress(kind, "collect", min(1.0, len(recent) / c.min_labelled),
                           f"waiting for labels: {len(recent)}/{c.min_labelled} rows, "
                           f"{recent.positives}/{c.min_positives} fraud")
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(c.label_poll_s)

    def _train_and_judge(self, kind: str, recent: RecentRows, trigger_id: str) -> RunOutcome:
        """Blocking part (a worker thread): train, evaluate, gate, register."""
        import tempfile

        from training.evaluate import evaluate
        from training.pipeline import register_trained, train_one
        from training.validate import validate_dataset

        c = self.config
        fraction = holdout_fraction_for(recent.labels, c.holdout_fraction, c.min_holdout_positives,
                                        c.max_holdout_fraction)
        recent_train, holdout = split_recent(recent, fraction)
        champ = score_champion(self.settings, kind, holdout.features, holdout.labels)
        params = champ.params if champ else {}
        wanted = max(5000, int(c.reference_per_recent * len(recent_train)))
        reference = reference_sample(params, min(c.reference_rows, wanted), c.seed)
        data = training_set(recent_train, reference, c.seed)
        report = validate_dataset(data, _champion_reference(self.settings, kind) if champ else None)
        self._progress(kind, "validate", 1.0, report.render().splitlines()[0])
        if not report.passed:
            failed = "; ".join(f"{c.name} {c.value if c.value is None else round(c.value, 6)} "
                               f"(limit {c.limit}{', ' + c.detail if c.detail else ''})"
                               for c in report.failed)
            return RunOutcome(kind, None, None, "dataset_rejected",
                              {"train_rows": float(len(data)), "checks_failed": float(len(report.failed))},
                              detail=f"training data refused: {failed}")
        self._progress(kind, "train", 0.0, f"{len(data)} rows ({len(recent_train)} recent)")
        with tempfile.TemporaryDirectory(prefix=f"retrain-{kind}-", dir=self.settings.data_dir) as tmp:
            trained = train_one(kind, data, seed=c.seed, workdir=Path(tmp), validate=False,
                                progress=lambda stage, f: self._progress(kind, "train", f, stage))
            self._progress(kind, "evaluate", 0.0, f"holdout of {len(holdout)} recent rows")
            from data_plane.scoring import OnnxScorer

            cand_scores = OnnxScorer(trained.onnx_path).predict(holdout.features)
            cand = evaluate(holdout.labels, cand_scores, trained.metrics["threshold"])
            g = c.gates
            comparison = compare_on_holdout(
                holdout.labels, cand_scores, trained.metrics["threshold"],
                champ.scores if champ else None, champ.threshold if champ else None,
                rounds=g.bootstrap_rounds, seed=g.bootstrap_seed, confidence=g.confidence)
            p99 = onnx_p99_ms(trained.onnx_path, holdout.features[: c.latency_rows])
            verdict = judge_candidate(comparison, p99, g)
            numbers = {**{f"candidate_{k}": v for k, v in cand.items()},
                       **({f"champion_{k}": v for k, v in champ.metrics.items()} if champ else {}),
                       **verdict.numbers(), "recent_rows": float(len(recent)),
                       "holdout_rows": float(len(holdout)), "holdout_fraction": fraction,
                       "train_rows": float(len(data)),
                       "candidate_validation_brier": trained.metrics.get("brier", float("nan"))}
            self._progress(kind, "evaluate", 1.0, verdict.summary())
            if not verdict.passed:
                return RunOutcome(kind, None, verdict, f"candidate rejected: {verdict.summary()}", numbers)
            self._progress(kind, "register", 0.0, "registering as challenger")
            # Holdout metrics are what the canary and the console should see for this version.
            trained.metrics.update({k: v for k, v in cand.items()})
            from data_plane.registry import Registry

            mv = register_trained(Registry(self.settings), trained, data.fingerprint(), alias="challenger")
            self._progress(kind, "register", 1.0, f"{mv.label} is the challenger")
            return RunOutcome(kind, mv.version, verdict, f"{mv.label} registered as challenger: "
                              f"{verdict.summary()}", {**numbers, "version": float(mv.version)})

    # ---- reporting --------------------------------------------------------------------------------
    def _finish(self, outcome: RunOutcome, trigger_id: str, reason: str) -> RunOutcome:
        self.outcomes.append(outcome)
        action = "register_challenger" if outcome.registered_version else "retrain_rejected"
        rule = "retrain_gates" if outcome.verdict is not None else outcome.reason
        self._progress(outcome.kind, "done", 1.0, reason)
        self._decide(outcome.kind, action, rule, reason, trigger_id, outcome.numbers)
        log.info("retrain %s: %s", outcome.kind, reason)
        return outcome

    def _decide(self, kind: str, action: str, rule: str, reason: str, trigger_id: str,
                numbers: Mapping[str, float]) -> None:
        self.bus.publish(RETRAIN_DECISION, Decision(
            actor="retrain", action=action, rule=rule, reason=f"{kind}: {reason}"[:1000],
            trigger_ids=[trigger_id], numbers={k: float(v) for k, v in numbers.items()}))

    def _progress(self, kind: str, stage: str, fraction: float, message: str) -> None:
        # Called from the training thread too: EventBus.publish only appends to a deque. The
        # trainers report every boosting round / epoch: at most one of those per 0.5 s goes out.
        now = time.monotonic()
        if stage == "train" and 0.0 < fraction < 1.0 and now - self._last_progress < 0.5:
            return
        self._last_progress = now
        self.bus.publish(subjects.RETRAIN_PROGRESS, RetrainProgress(model=kind, stage=stage,
                                                                    fraction=float(fraction),
                                                                    message=message[:500]))
