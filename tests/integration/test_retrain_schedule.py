"""Scheduled retraining on a real nats-server: with MESH_RETRAIN_SCHEDULE_S=1 a run starts within
its interval and ends in a ledger Decision (here: no labels yet, so `insufficient_labels`)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

import msgspec
import pytest

from control_plane.healing.retrain import RETRAIN_DECISION, RetrainConfig, RetrainWorker
from control_plane.streams import ensure_streams
from data_plane.contracts.events import Decision
from data_plane.netutil import free_port
from data_plane.procs import nats_server
from data_plane.settings import Settings

pytestmark = pytest.mark.integration


async def test_scheduled_run_starts_within_its_interval(settings: Settings, tmp_path: Path) -> None:
    import nats

    port, monitor = free_port(), free_port()
    server = nats_server(port, monitor, tmp_path / "js", tmp_path / "nats.log").start()
    try:
        server.wait_port("127.0.0.1", port)
        s = replace(settings, nats_url_override=f"nats://127.0.0.1:{port}")
        nc = await nats.connect(s.nats_url)
        await ensure_streams(nc)
        decisions: list[Decision] = []

        async def on_decision(msg) -> None:  # type: ignore[no-untyped-def]
            decisions.append(msgspec.json.decode(msg.data, type=Decision))

        await nc.subscribe(RETRAIN_DECISION, cb=on_decision)
        worker = RetrainWorker(s, RetrainConfig(schedule_s=1.0, label_wait_s=0.3, label_poll_s=0.1,
                                                cooldown_s=3600))
        await worker.start()
        started = time.monotonic()
        try:
            while len(decisions) < 2:
                assert time.monotonic() - started < 15, decisions
                await asyncio.sleep(0.05)
            first_run_s = time.monotonic() - started
            await asyncio.sleep(1.5)  # the next interval: refused by the shared cooldown
        finally:
            await worker.stop()
            await nc.close()
        assert first_run_s < 1.0 + 0.3 + 3  # due after 1 s, gives up after 0.3 s of label wait
        kinds = {d.reason.split(":")[0] for d in decisions[:2]}
        assert kinds == {"xgboost", "pytorch"}
        assert all(d.rule == "insufficient_labels" and d.trigger_ids[0].startswith("schedule-")
                   for d in decisions[:2])
        assert any(d.rule == "retrain_budget" and "schedule trigger" in d.reason for d in decisions[2:])
    finally:
        server.stop()
