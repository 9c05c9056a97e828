"""Scheduled retraining (MESH_RETRAIN_SCHEDULE_S): due once per interval per kind, on a fake clock,
and rationed by the same budget as drift triggers."""

from __future__ import annotations

from control_plane.healing.retrain import RetrainBudget, RetrainConfig, RetrainWorker
from data_plane.eventbus import EventBus
from data_plane.settings import Settings


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _worker(settings: Settings, clock: FakeClock, schedule_s: float) -> RetrainWorker:
    bus = EventBus("nats://127.0.0.1:1", "test")  # never started: nothing is published
    return RetrainWorker(settings, RetrainConfig(schedule_s=schedule_s), bus=bus, clock=clock)


def test_schedule_fires_once_per_interval_for_every_kind(settings: Settings) -> None:
    clock = FakeClock()
    worker = _worker(settings, clock, 600)
    assert worker.due_scheduled() == []  # arms the first deadline
    clock.now += 599
    assert worker.due_scheduled() == []
    clock.now += 1
    assert worker.due_scheduled() == ["xgboost", "pytorch"]
    assert worker.due_scheduled() == []  # not twice in one interval
    clock.now += 600
    assert worker.due_scheduled() == ["xgboost", "pytorch"]


def test_schedule_off_by_default_and_read_from_the_environment(settings: Settings) -> None:
    assert _worker(settings, FakeClock(), 0).due_scheduled() == []
    assert RetrainConfig.from_env({}).schedule_s == 0
    assert RetrainConfig.from_env({"MESH_RETRAIN_SCHEDULE_S": "3600"}).schedule_s == 3600.0


def test_scheduled_runs_share_the_drift_budget_and_cooldown() -> None:
    clock = FakeClock()
    budget = RetrainBudget(per_hour=2, cooldown_s=300, clock=clock)
    budget.record("xgboost")  # a drift-triggered run
    clock.now += 100
    assert "cooldown" in (budget.refusal("xgboost") or "")  # a scheduled trigger now is refused
    clock.now += 250
    assert budget.refusal("xgboost") is None
    budget.record("xgboost")
    clock.now += 400
    assert "budget" in (budget.refusal("xgboost") or "")
