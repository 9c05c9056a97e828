"""CanaryController state machine on a real ControlPlane (no Envoys), a fake clock and fed evidence."""

from __future__ import annotations

from typing import Any

import pytest

from control_plane.app import IntentFrozenError
from control_plane.healing.canary import CanaryController
from control_plane.healing.canary_analysis import (
    CanaryConfig,
    Evidence,
    Observation,
    PhaseRules,
    judge,
    mann_whitney_slower,
)
from data_plane.contracts.events import PredictionRecord
from tests.unit.cp_fixtures import control_plane

CFG = CanaryConfig(shadow=PhaseRules(min_samples=50, min_duration_s=1.0, timeout_s=60.0, label_wait_s=2.0),
                   step=PhaseRules(min_samples=20, min_duration_s=5.0, timeout_s=60.0),
                   min_label_samples=200)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class RecordingActions:
    """The mesh side effects, recorded (model servers, registry and NATS are not part of this test)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.attempts = 0
        self.errors = 0
        self.aliases = {"champion": "1", "challenger": "2"}

    async def reload_slot(self, kind: str, slot: str, version: str) -> None:
        self.calls.append(("reload", kind, slot, version))

    async def set_alias(self, kind: str, alias: str, version: str) -> str | None:
        prev = self.aliases.get(alias)
        self.aliases[alias] = version
        return prev

    async def delete_alias(self, kind: str, alias: str) -> None:
        self.aliases.pop(alias, None)

    async def challenger_counters(self, kind: str) -> tuple[int, int]:
        return self.attempts, self.errors

    def publish(self, subject: str, event: Any) -> None:
        self.calls.append(("publish", subject, getattr(event, "phase", None)))


@pytest.fixture
async def cp(settings):
    plane = control_plane(settings)
    await plane.start()
    try:
        yield plane
    finally:
        await plane.stop(grace=0.1)


def feed(ctl: CanaryController, n: int, *, shadow: bool, start: int = 0, challenger_wrong: bool = False,
         latency: float = 2.0) -> None:
    """n requests: champion record + (shadow or canary) challenger record; fraud every 10th."""
    for i in range(start, start + n):
        rid, fraud = f"r{i}", i % 10 == 0
        ctl.observe_record(PredictionRecord(request_id=rid, model="xgboost", model_version="xgboost_v1",
                                            slot="champion", features=[], score=0.9 if fraud else 0.1,
                                            is_fraud=fraud, latency_ms=latency))
        ch_fraud = (not fraud) if challenger_wrong else fraud
        ctl.observe_record(PredictionRecord(request_id=rid + ("" if shadow else "c"), model="xgboost",
                                            model_version="xgboost_v2", slot="challenger", features=[],
                                            score=0.9 if ch_fraud else 0.1, is_fraud=ch_fraud,
                                            latency_ms=latency, shadow=shadow))
        ctl.observe_label(rid, fraud)


async def test_shadow_pass_then_steps_then_promote(cp):
    clock, actions = Clock(), RecordingActions()
    ctl = CanaryController(cp, actions, CFG, clock)
    run = await ctl.on_registered("xgboost", "2", "drift-1")
    assert run.phase == "shadow" and cp.store.intent.shadow.model == "xgboost"
    assert ("reload", "xgboost", "challenger", "2") in actions.calls
    feed(ctl, 100, shadow=True)
    await ctl.tick()  # not yet min_duration
    assert run.phase == "shadow"
    clock.t += 3
    await ctl.tick()  # agreement 100 %, labels < 200 after label_wait -> proxy pass
    assert run.phase == "canary" and run.weight == pytest.approx(0.10)
    assert cp.store.intent.canary.weight == pytest.approx(0.10) and cp.store.intent.shadow is None
    for weight in (0.25, 0.50, 1.00):
        feed(ctl, 30, shadow=False)
        clock.t += 6
        await ctl.tick()
        assert run.weight == pytest.approx(weight)
    feed(ctl, 30, shadow=False)
    clock.t += 6
    await ctl.tick()
    assert run.phase == "promoted"
    assert cp.store.intent.canary is None and actions.aliases == {"champion": "2"}
    assert ("reload", "xgboost", "champion", "champion") in actions.calls
    canary_decisions = [d for d in cp.ledger.read(limit=100) if d.actor == "canary"]
    assert [d.action for d in canary_decisions] == ["load_challenger", "canary_shadow", "canary_step",
                                                    "canary_step", "canary_step", "canary_step", "promote"]


async def test_error_rate_rolls_back_before_50_percent(cp):
    clock, actions = Clock(), RecordingActions()
    ctl = CanaryController(cp, actions, CFG, clock)
    run = await ctl.on_registered("xgboost", "2", None)
    feed(ctl, 100, shadow=True)
    clock.t += 3
    await ctl.tick()
    assert run.weight == pytest.approx(0.10)
    actions.attempts, actions.errors = 100, 15  # 15 % of the challenger's attempts fail
    await ctl.tick()
    assert run.phase == "rolled_back" and run.weight == 0.0
    assert cp.store.intent.canary is None and "challenger" not in actions.aliases
    last = cp.ledger.read(limit=100)[-1]
    assert last.action == "rollback" and last.rule == "error_rate" and last.numbers["error_rate"] == 0.15


async def test_labels_overrule_agreement_and_reject_a_wrong_challenger(cp):
    clock, actions = Clock(), RecordingActions()
    ctl = CanaryController(cp, actions, CFG, clock)
    run = await ctl.on_registered("xgboost", "2", None)
    feed(ctl, 300, shadow=True, challenger_wrong=True)
    clock.t += 3
    await ctl.tick()
    assert run.phase == "rolled_back"
    assert run.verdicts[-1]["rule"] == "label_f1" and run.verdicts[-1]["numbers"]["challenger_f1"] == 0.0


async def test_frozen_intent_makes_no_moves(cp):
    clock, actions = Clock(), RecordingActions()
    await cp.apply({"frozen": True}, actor="operator", rule="test", reason="freeze")
    ctl = CanaryController(cp, actions, CFG, clock)
    run = await ctl.on_registered("xgboost", "2", None)
    assert run.phase == "pending" and run.blocked and cp.store.intent.shadow is None
    assert actions.calls == []
    with pytest.raises(IntentFrozenError):
        await cp.apply({"shadow": None}, actor="canary", rule="t", reason="t")
    await cp.apply({"frozen": False}, actor="operator", rule="test", reason="unfreeze")
    await ctl.tick()
    assert run.phase == "shadow"


async def test_hold_stops_every_move(cp):
    clock, actions = Clock(), RecordingActions()
    ctl = CanaryController(cp, actions, CFG, clock)
    ctl.hold("chaos experiment")
    run = await ctl.on_registered("xgboost", "2", None)
    assert run.phase == "pending" and run.blocked == "held: chaos experiment"
    ctl.release()
    await ctl.tick()
    assert run.phase == "shadow"


def test_mann_whitney_flags_a_slower_challenger_only_beyond_the_gap():
    champion = [10.0 + (i % 7) * 0.5 for i in range(200)]
    slower = [x + 20.0 for x in champion]
    p, gap = mann_whitney_slower(slower, champion)
    assert p < 1e-10 and gap == pytest.approx(20.0)
    p_same, gap_same = mann_whitney_slower(champion, champion)
    assert p_same > 0.4 and gap_same == 0.0
    ev = Evidence(champion={f"a{i}": Observation(0.1, False, v) for i, v in enumerate(champion)},
                  challenger={f"b{i}": Observation(0.1, False, v) for i, v in enumerate(slower)})
    verdict = judge(ev, CFG.step, CFG, 10.0, shadow=False)
    assert verdict.result == "fail" and verdict.rule == "latency_mann_whitney"
    # Significant but tiny (1 ms < 5 ms gap): not a failure.
    ev.challenger = {f"b{i}": Observation(0.1, False, v + 1.0) for i, v in enumerate(champion)}
    assert judge(ev, CFG.step, CFG, 10.0, shadow=False).result == "pass"


def test_p95_over_500ms_fails_and_no_traffic_times_out():
    ev = Evidence(challenger={f"b{i}": Observation(0.1, False, 600.0) for i in range(50)})
    assert judge(ev, CFG.step, CFG, 1.0, shadow=False).rule == "p95_latency"
    empty = Evidence()
    assert judge(empty, CFG.step, CFG, 10.0, shadow=False).result == "wait"
    assert judge(empty, CFG.step, CFG, 61.0, shadow=False).rule == "insufficient_evidence"


async def test_a_tick_during_the_slot_reload_does_not_start_the_run_twice(cp):
    """on_registered awaits the challenger reload; the tick loop must not start the same run again."""
    import asyncio

    class SlowReload(RecordingActions):
        async def reload_slot(self, kind: str, slot: str, version: str) -> None:
            await asyncio.sleep(0.05)
            await super().reload_slot(kind, slot, version)

    actions = SlowReload()
    ctl = CanaryController(cp, actions, CFG, Clock())
    starting = asyncio.create_task(ctl.on_registered("xgboost", "2", "drift-1"))
    await asyncio.sleep(0.01)  # on_registered is inside reload_slot now
    await ctl.tick()
    run = await starting
    await ctl.tick()
    assert run.phase == "shadow"
    assert [c for c in actions.calls if c[0] == "reload"] == [("reload", "xgboost", "challenger", "2")]
    actions_seen = [d.action for d in cp.ledger.read(limit=100) if d.actor == "canary"]
    assert actions_seen == ["load_challenger", "canary_shadow"]


def labelled_shadow(frauds: int, rows: int, champion_caught: int, challenger_caught: int) -> Evidence:
    """Shadow evidence: both arms scored the same `rows` labelled requests; each catches the first
    `*_caught` of the `frauds` frauds and raises no false alarm."""
    ev = Evidence()
    fraud_ids = [f"r{i}" for i in range(0, rows, rows // frauds)][:frauds]
    for i in range(rows):
        rid = f"r{i}"
        y = rid in fraud_ids
        rank = fraud_ids.index(rid) if y else -1
        flag_champion, flag_challenger = 0 <= rank < champion_caught, 0 <= rank < challenger_caught
        ev.champion[rid] = Observation(0.9 if flag_champion else 0.1, flag_champion, 2.0)
        ev.challenger[rid] = Observation(0.9 if flag_challenger else 0.1, flag_challenger, 2.0)
        ev.labels[rid] = y
    return ev


def test_label_verdict_passes_a_point_estimate_loss_that_is_one_request_of_noise():
    # 10 frauds in 300 requests: champion catches 8 (F1 0.889), challenger 7 (F1 0.824). The old
    # rule (point F1 below the champion's by > 0.05) rolled this back; paired, the difference
    # rests on a single request, so the interval reaches 0 and the challenger passes.
    verdict = judge(labelled_shadow(10, 300, 8, 7), CFG.shadow, CFG, 5.0, shadow=True)
    assert verdict.result == "pass" and verdict.rule == "label_f1", verdict.reason
    n = verdict.numbers
    assert n["label_f1_diff"] == pytest.approx(14 / 17 - 16 / 18) and n["label_f1_diff_ci_hi"] == 0.0
    assert (n["label_n"], n["label_positives"], n["label_paired"]) == (300, 10, 1.0)
    assert "not significantly worse" in verdict.reason and "paired bootstrap" in verdict.reason


def test_label_verdict_rolls_back_a_significantly_worse_challenger():
    verdict = judge(labelled_shadow(10, 300, 8, 1), CFG.shadow, CFG, 5.0, shadow=True)
    assert verdict.result == "fail" and verdict.rule == "label_f1", verdict.reason
    assert verdict.numbers["label_f1_diff_ci_hi"] < -CFG.f1_tolerance
    assert "significantly worse" in verdict.reason


def test_label_verdict_needs_200_paired_labels_and_5_frauds():
    few_rows = labelled_shadow(10, 150, 8, 1)  # 150 < MIN_SAMPLES_FOR_DECISION labelled requests
    assert judge(few_rows, CFG.shadow, CFG, 5.0, shadow=True).rule != "label_f1"
    few_frauds = labelled_shadow(4, 300, 4, 0)
    assert judge(few_frauds, CFG.shadow, CFG, 5.0, shadow=True).rule != "label_f1"


def test_canary_steps_compare_the_arms_independently():
    ev = labelled_shadow(10, 600, 8, 8)
    # a canary step: each arm answered its own requests (no request id in both)
    ev.challenger = {f"c{rid}": o for rid, o in list(ev.challenger.items())[:300]}
    ev.labels.update({f"c{rid}": ev.labels[rid] for rid in list(ev.labels)[:300]})
    verdict = judge(ev, CFG.step, CFG, 10.0, shadow=False)
    assert verdict.rule == "label_f1" and verdict.numbers["label_paired"] == 0.0, verdict.reason
    assert verdict.result == "pass"
