"""Retrain gates on synthetic score arrays (good, equal, bad candidates; few and many frauds), the
retrain budget, the adaptive holdout and the features-labels join."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from control_plane.healing.paired_stats import compare_on_holdout
from control_plane.healing.retrain import RetrainBudget, RetrainConfig
from control_plane.healing.retrain_data import holdout_fraction_for, join_labelled, split_recent, training_set
from control_plane.healing.retrain_gates import GateConfig, f1_improvement_pct, judge_candidate
from data_plane.contracts.events import Label, PredictionBatch, PredictionRecord
from data_plane.synthetic import generate


def holdout(n: int, positives: int, seed: int = 0) -> np.ndarray:
    y = np.zeros(n, dtype=np.int8)
    y[np.random.default_rng(seed).choice(n, positives, replace=False)] = 1
    return y


def scores(y: np.ndarray, separation: float, seed: int, shift: float = 0.0) -> np.ndarray:
    """Probabilities whose logit separates the classes by `separation` (shift: miscalibration)."""
    logit = -4.0 + separation * y + np.random.default_rng(seed).normal(0, 1.0, y.size) + shift
    return 1 / (1 + np.exp(-logit))


def judge(y: np.ndarray, cand: np.ndarray, champ: np.ndarray | None, p99: float = 0.05,
          thresholds: tuple[float, float] = (0.5, 0.5), **config: float):
    comparison = compare_on_holdout(y, cand, thresholds[0], champ, thresholds[1], rounds=400)
    return judge_candidate(comparison, p99, GateConfig(**config))  # type: ignore[arg-type]


FEW = holdout(700, 14)  # a few minutes of live traffic at 2 % fraud
MANY = holdout(4000, 200)


def test_an_equal_or_better_candidate_passes_on_few_frauds_without_a_significant_gain():
    champ = scores(FEW, 4.5, seed=1)
    equal = judge(FEW, champ.copy(), champ)
    assert equal.passed, equal.summary()
    assert equal.numbers()["f1_not_worse_ci_hi"] == 0.0 and equal.numbers()["holdout_positives"] == 14
    improvement = next(g for g in equal.gates if g.name == "f1_improvement_pct")
    assert improvement.passed and "not judged: 14 holdout frauds < 50" in improvement.detail
    better = judge(FEW, scores(FEW, 6.0, seed=2), champ)
    assert better.passed and better.summary().startswith("all gates passed (F1 difference")


def test_a_useless_candidate_fails_on_evidence_even_with_few_frauds():
    champ = scores(FEW, 4.5, seed=1)
    shuffled = scores(np.random.default_rng(0).permutation(FEW), 4.5, seed=3)  # shuffled-label training
    v = judge(FEW, shuffled, champ)
    assert {"f1_not_worse", "auc", "f1", "recall_at_1pct_fpr_drop"} <= {g.name for g in v.failed}, v.summary()
    nums = v.numbers()
    assert nums["f1_not_worse_ci_hi"] < -0.02 and nums["auc_ci_hi"] < 0.85
    assert "significantly worse" in v.summary() and "14 frauds" in v.summary()


def test_one_fraud_less_is_not_evidence_but_many_are():
    champ = scores(FEW, 4.5, seed=1)
    cand = champ.copy()
    cand[np.flatnonzero(FEW)[0]] = 0.01  # the candidate misses one of 14 frauds
    assert judge(FEW, cand, champ).passed
    champ_many = scores(MANY, 4.5, seed=1)
    cand_many = champ_many.copy()
    cand_many[np.flatnonzero(MANY)[:40]] = 0.01  # 40 of 200 frauds missed: recall and F1 drop
    worse = judge(MANY, cand_many, champ_many)
    assert {"f1_not_worse", "recall_at_1pct_fpr_drop"} <= {g.name for g in worse.failed}, worse.summary()


def test_with_enough_frauds_the_seed_improvement_rule_applies_unless_the_champion_collapsed():
    champ = scores(MANY, 4.5, seed=1)
    same = judge(MANY, champ.copy(), champ)
    assert [g.name for g in same.failed] == ["f1_improvement_pct"]
    assert same.numbers()["f1_improvement_pct"] == 0.0 and same.numbers()["f1_improvement_pct_limit"] == 2.0
    assert judge(MANY, scores(MANY, 6.0, seed=2), champ).passed
    collapsed = scores(MANY, 3.0, seed=1)  # a drifted champion far below F1 0.70
    waived = judge(MANY, scores(MANY, 4.5, seed=2), collapsed)
    improvement = next(g for g in waived.gates if g.name == "f1_improvement_pct")
    assert waived.passed and "waived" in improvement.detail


def test_brier_fails_only_when_the_whole_interval_is_beyond_the_limit():
    champ = scores(MANY, 4.5, seed=1)
    inflated = scores(MANY, 4.5, seed=1, shift=2.5)  # same ranking and flags, every odds x12
    v = judge(MANY, inflated, champ, thresholds=(1 / (1 + np.exp(-2.5)), 0.5), min_f1_improvement_pct=-100)
    assert [g.name for g in v.failed] == ["brier_degradation"], v.summary()
    assert v.numbers()["brier_degradation_ci_lo"] > 0.01
    slight = scores(MANY, 4.5, seed=1, shift=0.3)
    assert judge(MANY, slight, champ, thresholds=(1 / (1 + np.exp(-0.3)), 0.5),
                 min_f1_improvement_pct=-100).passed


def test_floors_read_the_point_with_many_frauds_and_the_upper_bound_with_few():
    weak_many = scores(MANY, 4.0, seed=4)
    v = judge(MANY, weak_many, None)
    assert {g.name for g in v.gates} == {"auc", "f1", "latency_p99_ms"}
    assert [g.name for g in v.failed] == ["f1"] and v.numbers()["f1"] < 0.70
    weak_few = scores(FEW, 4.0, seed=1)
    few = judge(FEW, weak_few, None)
    f1_gate = next(g for g in few.gates if g.name == "f1")
    assert f1_gate.value < 0.70 <= f1_gate.interval.hi and few.passed, few.summary()
    assert [g.name for g in judge(FEW, weak_few, None, p99=1.5).failed] == ["latency_p99_ms"]


def test_holdout_grows_backwards_until_it_holds_enough_frauds():
    y = np.zeros(1000, dtype=np.int8)
    y[::50] = 1  # 20 frauds, one every 50 rows
    assert holdout_fraction_for(y, 0.25, 0, 0.5) == 0.25
    assert holdout_fraction_for(y, 0.25, 5, 0.5) == 0.25  # the latest 250 rows hold 5
    assert holdout_fraction_for(y, 0.25, 8, 0.5) == pytest.approx(0.40)  # 8th fraud from the end
    assert holdout_fraction_for(y, 0.25, 15, 0.5) == 0.5  # capped
    assert holdout_fraction_for(y, 0.25, 15, 0.1) == 0.25  # never below the base


def test_improvement_pct_and_env_overrides():
    assert f1_improvement_pct(0.5, 0.0) == 100.0
    assert f1_improvement_pct(0.84, 0.80) == pytest.approx(5.0)
    assert GateConfig.from_env({"MESH_GATE_MAX_P99_MS": "2.5"}).max_p99_ms == 2.5
    assert GateConfig.from_env({"MESH_GATE_MIN_POSITIVES_FOR_POINT": "30"}).min_positives_for_point == 30
    cfg = RetrainConfig.from_env({"MESH_RETRAIN_MIN_LABELLED": "500", "MESH_RETRAIN_COOLDOWN_S": "5"})
    assert cfg.min_labelled == 500 and cfg.cooldown_s == 5.0


def test_budget_cooldown_and_hourly_limit_with_a_fake_clock():
    now = [0.0]
    budget = RetrainBudget(per_hour=2, cooldown_s=300, clock=lambda: now[0])
    assert budget.refusal("xgboost") is None
    budget.record("xgboost")
    now[0] = 100
    assert budget.refusal("xgboost").startswith("cooldown")
    assert budget.refusal("xgboost", operator=True) is None  # operators skip the cooldown
    assert budget.refusal("pytorch") is None
    now[0] = 400
    budget.record("xgboost")
    now[0] = 800
    assert budget.refusal("xgboost").startswith("budget")
    now[0] = 3601
    assert budget.refusal("xgboost") is None


def _record(rid: str, ts: float, shadow: bool = False) -> PredictionRecord:
    return PredictionRecord(request_id=rid, model="xgboost", model_version="xgboost_v1", slot="champion",
                            features=[float(ts)] * 11, score=0.1, is_fraud=False, latency_ms=1.0,
                            shadow=shadow, ts=ts)


def test_join_keeps_labelled_live_rows_in_time_order_once_each():
    enc = msgspec.json.encode
    batches = [enc(PredictionBatch(records=[_record("a", 3), _record("b", 1), _record("c", 2, shadow=True)])),
               enc(PredictionBatch(records=[_record("a", 3), _record("d", 4)])), b"not json"]
    labels = [enc(Label(request_id="a", is_fraud=True)), enc(Label(request_id="b", is_fraud=False)),
              enc(Label(request_id="c", is_fraud=True))]
    recent = join_labelled(batches, labels, "xgboost")
    assert len(recent) == 2 and recent.positives == 1 and list(recent.timestamps) == [1.0, 3.0]
    assert recent.predictions_seen == 4  # a twice, b, d; the shadow record is not live traffic
    train, holdout = split_recent(recent, 0.5)
    assert list(holdout.timestamps) == [3.0] and list(train.timestamps) == [1.0]


def test_training_set_interleaves_reference_and_recent_rows():
    ref, recent = generate(300, seed=1), generate(100, seed=2, scenario="covariate_shift")
    ds = training_set(recent, ref, seed=0)
    assert len(ds) == 400 and ds.labels.sum() == ref.labels.sum() + recent.labels.sum()
    first_half = ds.features[:200]
    from_recent = sum(any((row == r).all() for r in recent.features) for row in first_half)
    assert 20 < from_recent < 80  # mixed, not recent rows last
