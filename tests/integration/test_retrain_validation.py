"""The retrain worker validates its training data first: a corrupted live feed becomes a ledger
Decision (`dataset_rejected`, with the failed checks and numbers) and nothing is trained."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest

from control_plane.healing.retrain import RETRAIN_DECISION, RetrainConfig, RetrainWorker
from data_plane.contracts import subjects
from data_plane.contracts.events import Decision, Label, PredictionBatch, PredictionRecord, RetrainProgress
from data_plane.registry import Registry
from data_plane.synthetic import generate
from tests.integration.test_retrain_worker import collect, mesh  # noqa: F401 - the fixture

pytestmark = pytest.mark.integration
_enc = msgspec.json.Encoder()


async def test_out_of_range_live_features_are_refused_as_a_decision(mesh):  # noqa: F811
    s, nc = mesh
    decisions = await collect(nc, RETRAIN_DECISION, Decision)
    progress = await collect(nc, subjects.RETRAIN_PROGRESS, RetrainProgress)
    ds = generate(2500, seed=21)
    x = ds.features.copy()
    x[:, 2] = 30  # hour_of_day 30: an upstream bug, every recent row
    js = nc.jetstream()
    now = time.time()
    for start in range(0, len(ds), 256):
        recs = [PredictionRecord(request_id=f"bad-{i}", model="xgboost", model_version="xgboost_v1",
                                 slot="champion", features=x[i].tolist(), score=0.0, is_fraud=False,
                                 latency_ms=1.0, ts=now + i * 1e-3)
                for i in range(start, min(len(ds), start + 256))]
        await js.publish(subjects.predictions("xgboost"), _enc.encode(PredictionBatch(records=recs)))
    for i in range(len(ds)):
        label = Label(request_id=f"bad-{i}", is_fraud=bool(ds.labels[i]))
        await nc.publish(subjects.LABELS, _enc.encode(label))
    await nc.flush()
    worker = RetrainWorker(s, RetrainConfig(min_labelled=2000, min_positives=0, label_wait_s=5,
                                            label_poll_s=0.3))
    await worker.start()
    try:
        assert worker.trigger("xgboost", "operator", "op-1", operator=True)
        outcome = await asyncio.wait_for(worker.running["xgboost"], 120)
        await asyncio.sleep(0.5)
    finally:
        await worker.stop()
    assert outcome.registered_version is None and outcome.reason == "dataset_rejected"
    (decision,) = decisions
    assert decision.action == "retrain_rejected" and decision.rule == "dataset_rejected"
    assert "range" in decision.reason and "hour_of_day" in decision.reason
    assert decision.numbers["checks_failed"] >= 1 and decision.trigger_ids == ["op-1"]
    assert not any(p.stage == "train" for p in progress)  # nothing was trained
    assert "challenger" not in Registry(s).aliases("xgboost")
