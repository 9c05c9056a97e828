"""RetrainWorker on a real nats-server (JetStream) and a real MLflow registry: drifted live traffic
with delayed labels in the streams, a drift trigger, a gated challenger (or a reasoned refusal) out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgspec
import pytest

from control_plane.healing.retrain import RETRAIN_DECISION, RetrainConfig, RetrainWorker
from control_plane.streams import ensure_streams
from data_plane.contracts import subjects
from data_plane.contracts.events import Decision, Label, ModelRegistered, PredictionBatch, PredictionRecord
from data_plane.netutil import free_port
from data_plane.procs import ManagedProcess, nats_server
from data_plane.registry import Registry
from data_plane.settings import Settings
from data_plane.synthetic import generate
from training.pipeline import register_trained, train_one

pytestmark = pytest.mark.integration
_enc = msgspec.json.Encoder()


@pytest.fixture
async def mesh(settings: Settings, tmp_path: Path) -> AsyncIterator[tuple[Settings, Any]]:
    import nats

    port, monitor = free_port(), free_port()
    server: ManagedProcess = nats_server(port, monitor, tmp_path / "js", tmp_path / "nats.log").start()
    try:
        server.wait_port("127.0.0.1", port)
        s = replace(settings, nats_url_override=f"nats://127.0.0.1:{port}")
        nc = await nats.connect(s.nats_url)
        await ensure_streams(nc)
        champion = generate(10_000, seed=3)
        trained = train_one("xgboost", champion, seed=3, workdir=tmp_path / "champ")
        register_trained(Registry(s), trained, champion.fingerprint(), alias="champion")
        try:
            yield s, nc
        finally:
            await nc.close()
    finally:
        server.stop()


async def publish_live(nc: Any, rows: int, scenario: str, seed: int) -> None:
    """Live traffic as the model servers and the label feed would log it (features + labels)."""
    js = nc.jetstream()
    ds = generate(rows, seed=seed, scenario=scenario)
    now = time.time()
    for start in range(0, rows, 256):
        recs = [PredictionRecord(request_id=f"{seed}-{i}", model="xgboost", model_version="xgboost_v1",
                                 slot="champion", features=ds.features[i].tolist(), score=0.0,
                                 is_fraud=False, latency_ms=1.0, ts=now + i * 1e-3)
                for i in range(start, min(rows, start + 256))]
        await js.publish(subjects.predictions("xgboost"), _enc.encode(PredictionBatch(records=recs)))
    for i in range(rows):
        await nc.publish(subjects.LABELS, _enc.encode(Label(request_id=f"{seed}-{i}",
                                                            is_fraud=bool(ds.labels[i]))))
    await nc.flush()


async def collect(nc: Any, subject: str, kind: type) -> list[Any]:
    got: list[Any] = []

    async def cb(msg: Any) -> None:
        got.append(msgspec.json.decode(msg.data, type=kind))

    await nc.subscribe(subject, cb=cb)
    return got


async def test_drift_trigger_registers_a_gated_challenger(mesh):
    s, nc = mesh
    registered = await collect(nc, subjects.MODEL_REGISTERED, ModelRegistered)
    decisions = await collect(nc, RETRAIN_DECISION, Decision)
    await publish_live(nc, 12_000, "new_fraud_pattern", seed=11)
    worker = RetrainWorker(s, RetrainConfig(min_labelled=2000, label_wait_s=10, label_poll_s=0.5,
                                            reference_rows=8000))
    await worker.start()
    try:
        t0 = time.monotonic()
        assert worker.trigger("xgboost", "drift", "drift-report-1")
        outcome = await asyncio.wait_for(worker.running["xgboost"], 120)
        took = time.monotonic() - t0
        await asyncio.sleep(0.5)
    finally:
        await worker.stop()
    print(f"drift trigger -> challenger registered in {took:.1f}s: {outcome.reason}")
    assert outcome.registered_version == "2", outcome.reason
    assert Registry(s).aliases("xgboost") == {"champion": "1", "challenger": "2"}
    assert registered and registered[0].trigger_id == "drift-report-1"
    assert registered[0].metrics["candidate_f1"] >= 0.70
    assert decisions[-1].action == "register_challenger" and decisions[-1].trigger_ids == ["drift-report-1"]


async def test_too_few_labels_waits_then_gives_up_without_registering(mesh):
    s, nc = mesh
    decisions = await collect(nc, RETRAIN_DECISION, Decision)
    await publish_live(nc, 500, "covariate_shift", seed=12)
    worker = RetrainWorker(s, RetrainConfig(min_labelled=2000, label_wait_s=1.0, label_poll_s=0.3))
    await worker.start()
    try:
        worker.trigger("xgboost", "drift", "drift-report-2")
        outcome = await asyncio.wait_for(worker.running["xgboost"], 60)
        assert not worker.trigger("xgboost", "drift", "drift-report-3")  # cooldown
        await asyncio.sleep(0.5)
    finally:
        await worker.stop()
    assert outcome.registered_version is None and outcome.reason == "insufficient_labels"
    assert "challenger" not in Registry(s).aliases("xgboost")
    assert [d.rule for d in decisions] == ["insufficient_labels", "retrain_budget"]
