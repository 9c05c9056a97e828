"""Real training on 50k rows into a real MLflow sqlite registry, judged on fresh data.

Trains once per module (~15 s on 2 cores): both models, exported to ONNX, registered as
champions in a temporary MESH_HOME. Everything else reads that registry.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from data_plane.contracts.errors import ModelNotFoundError, RegistryError
from data_plane.features import engineer
from data_plane.reference_stats import psi_by_feature
from data_plane.registry import Registry
from data_plane.scoring import OnnxScorer
from data_plane.settings import Settings
from data_plane.synthetic import generate
from training import mlp, xgb
from training.pipeline import train_all

pytestmark = pytest.mark.integration

FRESH_SEED = 4242


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mesh")


@pytest.fixture(scope="module")
def settings(home: Path) -> Settings:
    s = Settings.from_env({"MESH_HOME": str(home)})
    s.ensure_home()
    return s


@pytest.fixture(scope="module")
def report(settings: Settings):
    stages: list[tuple[str, float]] = []
    result = train_all(settings, rows=50_000, seed=0, progress=lambda s, f: stages.append((s, f)))
    result.stages = stages  # type: ignore[attr-defined]
    return result


@pytest.fixture(scope="module")
def fresh():
    return generate(50_000, seed=FRESH_SEED)


@pytest.fixture(scope="module")
def champions(settings: Settings, report):
    registry = Registry(settings)
    return {kind: registry.fetch(kind, "champion") for kind in ("xgboost", "pytorch")}


def test_both_models_are_registered_as_champions(report, champions):
    assert [(m.kind, m.version, m.alias, m.label) for m in report.models] == [
        ("xgboost", "1", "champion", "xgboost_v1"), ("pytorch", "1", "champion", "pytorch_v1")]
    for kind, loaded in champions.items():
        assert loaded.version == "1" and loaded.label == f"{kind}_v1" and "champion" in loaded.aliases
        assert loaded.onnx_path.is_file() and loaded.native_path.is_file()
        assert loaded.fingerprint == report.fingerprint
        assert loaded.params["rows"] == "50000" and loaded.params["feature_set_version"] == "1"
        assert 0.0 < loaded.threshold < 1.0
        assert set(loaded.metrics) >= {"auc", "pr_auc", "f1", "precision", "recall", "brier",
                                       "recall_at_1pct_fpr", "threshold", "parity_max_abs_diff"}


def test_progress_covers_every_long_step(report):
    finished = {s for s, f in report.stages if f == 1.0}
    for stage in ("generate", "registry:open", "xgboost:train", "xgboost:export", "xgboost:parity",
                  "xgboost:register", "pytorch:train", "pytorch:register"):
        assert stage in finished
    assert any(0.0 < f < 1.0 for s, f in report.stages if s == "xgboost:train")


def test_holdout_metrics_are_reported(report):
    by_kind = {m.kind: m.metrics for m in report.models}
    assert by_kind["xgboost"]["auc"] >= 0.98 and by_kind["pytorch"]["auc"] >= 0.95
    for metrics in by_kind.values():
        assert metrics["n"] == 10_000  # the latest 20 % by time
        assert 0.0 < metrics["brier"] < 0.05 and metrics["recall_at_1pct_fpr"] > 0.5


def test_quality_on_a_fresh_dataset_from_another_seed(champions, fresh):
    xgb_auc = roc_auc_score(fresh.labels, OnnxScorer(champions["xgboost"].onnx_path).predict(fresh.features))
    mlp_auc = roc_auc_score(fresh.labels, OnnxScorer(champions["pytorch"].onnx_path).predict(fresh.features))
    assert xgb_auc >= 0.98, f"XGBoost AUC on fresh data {xgb_auc:.4f}"
    assert mlp_auc >= 0.95, f"MLP AUC on fresh data {mlp_auc:.4f}"


def test_onnx_scores_equal_native_scores_on_10k_rows(champions, fresh):
    rows = fresh.features[:10_000]
    x = engineer(rows)
    native = {"xgboost": xgb.predict_native(xgb.load_native(champions["xgboost"].native_path), x),
              "pytorch": mlp.predict_native(mlp.load_native(champions["pytorch"].native_path), x)}
    for kind, loaded in champions.items():
        onnx_scores = OnnxScorer(loaded.onnx_path).predict(rows)
        diff = np.max(np.abs(onnx_scores.astype(np.float64) - native[kind]))
        assert diff <= 1e-5, f"{kind}: ONNX differs from native by {diff:.2e}"


def test_one_row_path_matches_batch_and_is_thread_safe(champions, fresh):
    rows = fresh.features[:300]
    for loaded in champions.values():
        scorer = OnnxScorer(loaded.onnx_path)
        batch = scorer.predict(rows)
        one = np.array([scorer.predict_one(r) for r in rows.tolist()])
        np.testing.assert_allclose(one, batch, atol=1e-6)
        results: dict[int, list[float]] = {}

        def work(i: int, scorer: OnnxScorer = scorer, results: dict = results) -> None:
            results[i] = [scorer.predict_one(r) for r in rows.tolist()]

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for got in results.values():
            np.testing.assert_allclose(got, batch, atol=1e-6)
        assert scorer.metadata["kind"] == loaded.kind


def test_reference_statistics_are_stored_with_the_version(champions, fresh):
    stats = champions["xgboost"].reference_stats
    assert stats["n"] == 15_000 and "scores" in stats  # validation + holdout rows
    psi = psi_by_feature(stats, fresh.features)
    assert max(psi.values()) < 0.05
    drifted = generate(20_000, seed=FRESH_SEED, scenario="merchant_mix")
    assert psi_by_feature(stats, drifted.features)["merchant_category"] >= 0.2


def test_cli_retrain_registers_a_challenger(settings, report, monkeypatch, capsys):
    from meshctl.main import main

    monkeypatch.setenv("MESH_HOME", str(settings.home))
    assert main(["train", "--rows", "5000", "--seed", "1", "--kind", "xgboost", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(m["kind"], m["version"], m["alias"]) for m in out["models"]] == [("xgboost", "2", "challenger")]
    registry = Registry(settings)
    assert registry.aliases("xgboost") == {"champion": "1", "challenger": "2"}
    assert [v.version for v in registry.list_versions("xgboost")] == ["1", "2"]
    challenger = registry.fetch("xgboost", "challenger")
    assert challenger.label == "xgboost_v2" and challenger.fingerprint == out["fingerprint"]
    # promotion is an alias move; the cached copy of a version needs no MLflow
    registry.set_alias("xgboost", "champion", "2")
    registry.delete_alias("xgboost", "challenger")
    assert registry.resolve("xgboost", "champion").version == "2"
    assert registry.fetch("xgboost", 1).version == "1"
    registry.set_alias("xgboost", "champion", "1")


def test_cli_rejects_bad_arguments_with_a_fix(settings, monkeypatch, capsys):
    from meshctl.main import main

    monkeypatch.setenv("MESH_HOME", str(settings.home))
    assert main(["train", "--rows", "10"]) == 1
    assert "--rows must be between" in capsys.readouterr().err


def test_missing_models_and_aliases_say_what_to_do(settings, report, tmp_path):
    empty = Registry(Settings.from_env({"MESH_HOME": str(tmp_path / "empty")}))
    assert empty.is_empty() and empty.aliases("xgboost") == {} and empty.list_versions("pytorch") == []
    with pytest.raises(ModelNotFoundError, match=r"no model registered yet.*meshctl train"):
        empty.fetch("xgboost", "champion")
    assert not (tmp_path / "empty").exists()  # reading created nothing
    registry = Registry(settings)
    assert not registry.is_empty()
    with pytest.raises(ModelNotFoundError, match="no version 99"):
        registry.fetch("pytorch", "99")
    with pytest.raises(ModelNotFoundError, match="alias 'canary'"):
        registry.resolve("pytorch", "canary")
    with pytest.raises(ModelNotFoundError, match="unknown model kind 'lightgbm'"):
        registry.fetch("lightgbm", "champion")
    with pytest.raises(ModelNotFoundError):
        registry.set_alias("pytorch", "challenger", "42")
    with pytest.raises(RegistryError, match="does not exist"):
        registry.register("pytorch", tmp_path / "none.onnx", tmp_path / "none.pt", {}, {}, "fp", {})


def test_scorer_refuses_a_file_that_is_not_a_fraud_model(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(RegistryError, match="cannot load the ONNX model"):
        OnnxScorer(bad)


def test_envoy_protos_and_mlflow_registry_in_one_process(settings, report):
    # xds-protos overwrites some opentelemetry/google protos that MLflow's sqlite store needs
    # (docs: install MLflow after xds-protos); this process holds both and writes the registry.
    from envoy.config.cluster.v3 import cluster_pb2
    from envoy.service.discovery.v3 import discovery_pb2

    registry = Registry(settings)
    champion = registry.fetch("pytorch", "champion")
    registry.set_alias("pytorch", "challenger", champion.version)
    try:
        assert registry.aliases("pytorch") == {"champion": "1", "challenger": "1"}
        cluster = cluster_pb2.Cluster(name=champion.label)
        request = discovery_pb2.DiscoveryRequest(resource_names=[cluster.name])
        assert list(request.resource_names) == ["pytorch_v1"]
    finally:
        registry.delete_alias("pytorch", "challenger")
    assert "mlflow.store.tracking.sqlalchemy_store" in sys.modules
