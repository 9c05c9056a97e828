"""A/B statistics against scipy/statsmodels-free reference values, and the bounded window."""

from __future__ import annotations

import math

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from scipy.stats import binomtest, chi2_contingency

from control_plane import ab_stats
from control_plane.ab_component import ABCollector, ABConfig, ABWindow
from data_plane.contracts.events import Label, PredictionRecord


def test_chi_square_matches_scipy_on_a_known_table() -> None:
    # arm A flags 30 of 1,000, arm B 55 of 1,000
    got = ab_stats.fraud_rate_test(30, 1000, 55, 1000)
    chi2, p, dof, _ = chi2_contingency([[30, 970], [55, 945]])
    assert got is not None and got.dof == dof == 1
    assert got.chi2 == pytest.approx(chi2) and got.p_value == pytest.approx(p)
    assert 0.005 < got.p_value < 0.01  # Yates-corrected: chi2 = 7.06
    assert ab_stats.fraud_rate_test(0, 100, 0, 100) is None  # nobody flagged: nothing to test
    assert ab_stats.fraud_rate_test(3, 10, 0, 0) is None  # an empty arm


def test_wilson_interval_matches_scipy() -> None:
    for k, n in [(0, 10), (7, 20), (45, 50), (1, 1)]:
        ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        lo, hi = ab_stats.wilson(k, n)
        assert (lo, hi) == pytest.approx((ci.low, ci.high), abs=1e-9)
    assert ab_stats.wilson(0, 0) is None


def test_labelled_metrics_and_f1_bootstrap_interval() -> None:
    m = ab_stats.labelled_metrics(tp=40, fp=10, fn=20, tn=930)
    assert m["precision"]["value"] == pytest.approx(0.8) and m["recall"]["value"] == pytest.approx(40 / 60)
    f1 = 2 * 0.8 * (40 / 60) / (0.8 + 40 / 60)
    assert m["f1"]["value"] == pytest.approx(f1)
    lo, hi = m["f1"]["ci95"]
    assert lo < f1 < hi and 0.05 < hi - lo < 0.3  # n = 1,000 with 60 positives: a few points wide
    # the same data twice as large gives a narrower interval
    lo2, hi2 = ab_stats.labelled_metrics(80, 20, 40, 1860)["f1"]["ci95"]
    assert hi2 - lo2 < hi - lo
    assert ab_stats.labelled_metrics(0, 0, 0, 50)["f1"]["ci95"] is None
    assert ab_stats.confusion([True, True, False, False], [True, False, True, False]) == (1, 1, 1, 1)


def test_percentiles_and_score_psi() -> None:
    p = ab_stats.percentiles(np.arange(1, 101, dtype=float))
    assert p["p50"] == pytest.approx(50.5) and p["p99"] == pytest.approx(99.01)
    rng = np.random.default_rng(1)
    ref = rng.beta(1, 20, 5000)
    assert ab_stats.score_psi(ref, rng.beta(1, 20, 5000)) < 0.02
    assert ab_stats.score_psi(ref, rng.beta(2, 5, 5000)) > 1.0
    assert ab_stats.score_psi(ref, np.array([])) is None


def _rec(i: int, version: str, is_fraud: bool, ts: float, score: float = 0.1, slot: str = "champion",
         shadow: bool = False) -> PredictionRecord:
    return PredictionRecord(request_id=f"r{i}", model=version.split("_")[0], model_version=version, slot=slot,
                            features=[0.0] * 11, score=score, is_fraud=is_fraud, latency_ms=1.0 + i % 10,
                            ts=ts, shadow=shadow)


def test_window_joins_labels_either_order_expires_and_stays_bounded() -> None:
    now = [1000.0]
    w = ABWindow(ABConfig(window_s=60, label_window_s=120, max_records=50), clock=lambda: now[0])
    w.add_label(Label(request_id="r1", is_fraud=True))  # the label beats its prediction
    w.add_record(_rec(1, "xgboost_v1", True, now[0]))
    w.add_record(_rec(2, "xgboost_v1", False, now[0]))
    w.add_record(_rec(3, "xgboost_v1", False, now[0], shadow=True))  # shadow: ignored
    w.add_label(Label(request_id="r2", is_fraud=True))
    snap = w.snapshot()
    arm = snap["arms"]["xgboost_v1"]
    assert arm["count"] == 2 and arm["labelled"]["tp"] == 1 and arm["labelled"]["fn"] == 1
    assert snap["labels_joined"] == 2 and snap["awaiting_labels"] == 0
    now[0] += 61  # predictions leave the window, labelled outcomes stay (longer window)
    snap = w.snapshot()
    assert snap["records_in_window"] == 0 and snap["arms"]["xgboost_v1"]["labelled"]["n"] == 2
    for i in range(200):
        w.add_record(_rec(100 + i, "pytorch_v2", False, now[0]))
    assert len(w.records) == 50 and len(w.awaiting) == 50


def test_window_compares_the_two_largest_arms_and_exports_gauges() -> None:
    now = 5000.0
    w = ABWindow(ABConfig(), clock=lambda: now)
    for i in range(1000):
        w.add_record(_rec(i, "xgboost_v3", i % 1000 < 30, now, score=0.9 if i < 30 else 0.05))
        w.add_record(_rec(10_000 + i, "pytorch_v1", i < 55, now, score=0.8 if i < 55 else 0.1,
                          slot="challenger"))
    w.add_record(_rec(99_999, "heuristic_v1", False, now))
    snap = w.snapshot()
    cmp = snap["comparison"]
    assert set(cmp["arms"]) == {"xgboost_v3", "pytorch_v1"} and cmp["enough_samples"]
    assert cmp["p_value"] == pytest.approx(chi2_contingency([[30, 970], [55, 945]])[1])
    assert cmp["significant_at_0_01"]
    assert snap["champion"] == "xgboost_v3" and snap["arms"]["xgboost_v3"]["score_psi_vs_champion"] == 0.0
    assert snap["arms"]["pytorch_v1"]["fraud_rate"] == pytest.approx(0.055)
    assert snap["arms"]["pytorch_v1"]["latency_ms"]["p50"] == pytest.approx(5.5)
    reg = CollectorRegistry()
    reg.register(ABCollector(w))
    text = generate_latest(reg).decode()
    assert 'mesh_ab_p_value{arm_a="pytorch_v1",arm_b="xgboost_v3"}' in text
    assert 'mesh_ab_predicted_fraud_rate{version="pytorch_v1",window="60s"} 0.055' in text
    assert 'mesh_ab_min_arm_samples{arm_a="pytorch_v1",arm_b="xgboost_v3"} 1000.0' in text
    assert 'mesh_ab_score_psi{version="pytorch_v1"}' in text
    value = float(text.split('mesh_ab_confidence_mean{version="xgboost_v3",window="window"} ')[1].split()[0])
    assert math.isclose(value, (30 * 0.9 + 970 * 0.95) / 1000)
