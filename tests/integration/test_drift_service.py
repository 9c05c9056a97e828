"""DriftService on a real nats-server: prediction batches in, DriftReports out on mesh.drift.<model>."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgspec
import pytest

from control_plane.healing.drift_service import (
    PREDICTIONS_STREAM,
    ChampionReference,
    DriftService,
    registry_lookup,
)
from data_plane.contracts import subjects
from data_plane.contracts.events import DriftReport, PredictionBatch, PredictionRecord
from data_plane.netutil import free_port
from data_plane.procs import ManagedProcess, nats_server
from data_plane.reference_stats import compute_reference_stats
from data_plane.settings import Settings
from data_plane.synthetic import SCENARIO_FEATURES, generate
from tests.drift_support import records, toy_scores

pytestmark = pytest.mark.integration

WINDOW = 1000
_enc = msgspec.json.Encoder()


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    train = generate(40_000, seed=1)
    return compute_reference_stats(train.features, toy_scores(train.features))


@pytest.fixture
async def nats_url(tmp_path: Path) -> AsyncIterator[str]:
    port, monitor = free_port(), free_port()
    server: ManagedProcess = nats_server(port, monitor, tmp_path / "js", tmp_path / "nats.log").start()
    try:
        server.wait_port("127.0.0.1", port)
        yield f"nats://127.0.0.1:{port}"
    finally:
        server.stop()


def service(url: str, reference: dict[str, Any], **kw: Any) -> DriftService:
    def lookup(model: str) -> ChampionReference | None:
        return ChampionReference("xgboost_v1", reference) if model == "xgboost" else None

    return DriftService(nats_url=url, reference_lookup=lookup, window_size=WINDOW, min_window=500,
                        refresh_interval_s=0.5, **kw)


async def publish(nc: Any, recs: list[PredictionRecord], js: Any = None, size: int = 100) -> None:
    for i in range(0, len(recs), size):
        data = _enc.encode(PredictionBatch(records=recs[i:i + size]))
        if js is not None:
            await js.publish(subjects.predictions("xgboost"), data)
        else:
            await nc.publish(subjects.predictions("xgboost"), data)
    await nc.flush()


async def reports_on(nc: Any) -> asyncio.Queue[DriftReport]:
    got: asyncio.Queue[DriftReport] = asyncio.Queue()

    async def on_msg(msg: Any) -> None:
        await got.put(msgspec.json.decode(msg.data, type=DriftReport))

    await nc.subscribe(subjects.drift("xgboost"), cb=on_msg)
    await nc.flush()
    return got


async def test_core_nats_null_then_drift_window(nats_url: str, reference: dict[str, Any]) -> None:
    import nats

    nc = await nats.connect(nats_url)
    got = await reports_on(nc)
    svc = service(nats_url, reference)
    await svc.start()
    try:
        await asyncio.wait_for(svc.wait_ready(), 10)
        assert svc.mode == "core"  # no PREDICTIONS stream on this server
        null = records(generate(WINDOW, seed=300).features)
        shadow = records(generate(300, seed=301, scenario="merchant_mix").features, shadow=True, prefix="s")
        heuristic = records(generate(50, seed=302).features, model="heuristic", model_version="heuristic_v1")
        await publish(nc, shadow + heuristic + null)
        first = await asyncio.wait_for(got.get(), 10)
        assert first.level in ("none", "monitor") and first.window_size == WINDOW
        assert first.model == "xgboost" and first.model_version == "xgboost_v1"

        drifted = records(generate(WINDOW, seed=303, scenario="covariate_shift").features, prefix="d")
        await publish(nc, drifted)
        second = await asyncio.wait_for(got.get(), 10)
        assert second.level == "retrain"
        assert {f.feature for f in second.features if f.level == "retrain"} == set(
            SCENARIO_FEATURES["covariate_shift"])
        assert second.score_psi is not None and second.score_psi >= 0.2
        assert svc.latest()["xgboost"].id == second.id
        status = svc.status()
        assert status["not_champion"] == 300 and status["no_reference"] == 50
        assert status["models"]["xgboost"]["windows"] == 2
    finally:
        await svc.close()
        await nc.drain()


async def test_jetstream_durable_consumer_resumes_after_restart(nats_url: str,
                                                                reference: dict[str, Any]) -> None:
    import nats

    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await js.add_stream(name=PREDICTIONS_STREAM, subjects=list(subjects.STREAMS[PREDICTIONS_STREAM]))
    got = await reports_on(nc)
    svc = service(nats_url, reference, durable="drift-test")
    await svc.start()
    await asyncio.wait_for(svc.wait_ready(), 10)
    assert svc.mode == "jetstream"
    await svc.close()

    # Published while no detector runs: the durable consumer keeps them for the next one.
    await publish(nc, records(generate(WINDOW, seed=400, scenario="merchant_mix").features), js=js)
    svc = service(nats_url, reference, durable="drift-test")
    await svc.start()
    try:
        report = await asyncio.wait_for(got.get(), 15)
        assert report.level == "retrain"
        assert [f.feature for f in report.features if f.level == "retrain"] == ["merchant_category"]
        info = await js.consumer_info(PREDICTIONS_STREAM, "drift-test")
        for _ in range(50):  # acks are sent right after processing
            if info.num_ack_pending == 0:
                break
            await asyncio.sleep(0.1)
            info = await js.consumer_info(PREDICTIONS_STREAM, "drift-test")
        assert info.num_ack_pending == 0 and info.num_pending == 0
    finally:
        await svc.close()
        await nc.drain()


async def test_partial_window_is_reported_when_traffic_goes_quiet(nats_url: str,
                                                                  reference: dict[str, Any]) -> None:
    import nats

    nc = await nats.connect(nats_url)
    got = await reports_on(nc)
    svc = service(nats_url, reference, max_window_age_s=0.5)
    await svc.start()
    try:
        await asyncio.wait_for(svc.wait_ready(), 10)
        await publish(nc, records(generate(600, seed=500).features))  # >= min_window, < window
        report = await asyncio.wait_for(got.get(), 10)
        assert report.window_size == 600
        await nc.publish(subjects.predictions("xgboost"), b"{not json")
        await nc.flush()
        for _ in range(50):
            if svc.status()["decode_errors"]:
                break
            await asyncio.sleep(0.05)
        assert svc.status()["decode_errors"] == 1
    finally:
        await svc.close()
        await nc.drain()


async def test_champion_reference_from_the_registry_end_to_end(nats_url: str, settings: Settings,
                                                              tmp_path: Path) -> None:
    """Real model, real MLflow registry, real NATS: the service finds the champion's reference."""
    import nats

    from data_plane.registry import Registry
    from data_plane.scoring import OnnxScorer
    from training.pipeline import register_trained, train_one

    data = generate(8_000, seed=21)
    trained = train_one("xgboost", data, workdir=tmp_path / "train", params={"n_estimators": 60})
    mv = register_trained(Registry(settings), trained, data.fingerprint(), alias="champion")
    lookup = registry_lookup(settings)
    champion = lookup("xgboost")
    assert champion is not None and champion.model_version == mv.label
    assert champion.stats["n"] == trained.reference_stats["n"]
    assert lookup("heuristic") is None and lookup("pytorch") is None  # nothing to drift from

    scorer = OnnxScorer(trained.onnx_path)
    live = generate(WINDOW, seed=22, scenario="new_fraud_pattern").features
    scores = scorer.predict(live)
    recs = [PredictionRecord(request_id=f"e{i}", model="xgboost", model_version=mv.label, slot="champion",
                             features=row, score=float(s), is_fraud=bool(s >= 0.5), latency_ms=1.0)
            for i, (row, s) in enumerate(zip(live.tolist(), scores.tolist(), strict=True))]
    nc = await nats.connect(nats_url)
    got = await reports_on(nc)
    svc = DriftService(replace(settings, nats_url_override=nats_url), window_size=WINDOW, min_window=500)
    await svc.start()
    try:
        await asyncio.wait_for(svc.wait_ready(), 10)
        await publish(nc, recs)
        report = await asyncio.wait_for(got.get(), 30)
        assert report.model_version == mv.label and report.level == "retrain"
        assert {f.feature for f in report.features if f.level == "retrain"} <= set(
            SCENARIO_FEATURES["new_fraud_pattern"])
    finally:
        await svc.close()
        await nc.drain()
        trained.cleanup()
