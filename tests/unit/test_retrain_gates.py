"""Retrain gates (seed 001/002 numbers), the retrain budget, and the features-labels join."""

from __future__ import annotations

import msgspec
import pytest

from control_plane.healing.retrain import RetrainBudget, RetrainConfig
from control_plane.healing.retrain_data import join_labelled, split_recent, training_set
from control_plane.healing.retrain_gates import GateConfig, f1_improvement_pct, judge_candidate
from data_plane.contracts.events import Label, PredictionBatch, PredictionRecord
from data_plane.synthetic import generate

CHAMPION = {"f1": 0.80, "auc": 0.97, "brier": 0.010, "recall_at_1pct_fpr": 0.75}


def cand(**kw: float) -> dict[str, float]:
    return {**CHAMPION, **kw}


def test_two_percent_f1_improvement_passes_and_one_percent_fails():
    ok = judge_candidate(cand(f1=0.80 * 1.021), CHAMPION, 0.05)
    assert ok.passed, ok.summary()
    low = judge_candidate(cand(f1=0.80 * 1.01), CHAMPION, 0.05)
    assert not low.passed and [g.name for g in low.failed] == ["f1_improvement_pct"]
    assert low.numbers()["f1_improvement_pct"] == pytest.approx(1.0)
    assert low.numbers()["f1_improvement_pct_limit"] == 2.0


def test_collapsed_champion_waives_the_improvement_rule_but_not_the_floors():
    drifted = {**CHAMPION, "f1": 0.40}
    assert judge_candidate(cand(f1=0.75), drifted, 0.05).passed
    below_floor = judge_candidate(cand(f1=0.65), drifted, 0.05)
    assert [g.name for g in below_floor.failed] == ["f1"]


def test_brier_auc_recall_and_latency_gates():
    v = judge_candidate(cand(f1=0.9, brier=0.0201, auc=0.84, recall_at_1pct_fpr=0.70), CHAMPION, 1.5)
    assert {g.name for g in v.failed} == {"brier_degradation", "auc", "recall_at_1pct_fpr_drop",
                                          "latency_p99_ms"}
    assert judge_candidate(cand(f1=0.9, brier=0.0199, recall_at_1pct_fpr=0.74), CHAMPION, 0.9).passed


def test_recall_drop_of_one_holdout_fraud_is_not_evidence():
    # 15 frauds in the holdout: recall moves in steps of 1/15 = 0.067; one case less is noise.
    one = judge_candidate(cand(f1=0.9, recall_at_1pct_fpr=0.75 - 1 / 15, positives=15), CHAMPION, 0.05)
    assert one.passed, one.summary()
    two = judge_candidate(cand(f1=0.9, recall_at_1pct_fpr=0.75 - 2 / 15, positives=15), CHAMPION, 0.05)
    assert [g.name for g in two.failed] == ["recall_at_1pct_fpr_drop"]
    many = judge_candidate(cand(f1=0.9, recall_at_1pct_fpr=0.72, positives=1000), CHAMPION, 0.05)
    assert [g.name for g in many.failed] == ["recall_at_1pct_fpr_drop"]  # 0.02 rules at 1,000 frauds


def test_no_champion_judges_absolute_floors_only():
    v = judge_candidate(cand(f1=0.71, auc=0.86), None, 0.1)
    assert v.passed and {g.name for g in v.gates} == {"auc", "f1", "latency_p99_ms"}


def test_improvement_pct_and_env_overrides():
    assert f1_improvement_pct(0.5, 0.0) == 100.0
    assert f1_improvement_pct(0.84, 0.80) == pytest.approx(5.0)
    assert GateConfig.from_env({"MESH_GATE_MAX_P99_MS": "2.5"}).max_p99_ms == 2.5
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
