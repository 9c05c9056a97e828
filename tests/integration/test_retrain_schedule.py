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
        first_run_s = None

        def runs() -> list[Decision]:
            return [d for d in decisions if d.rule == "insufficient_labels"]

        try:
            # One run per kind; they need not come first or together (on a busy box one kind's run
            # may end after the other kind's next interval was already refused by the cooldown).
            while {d.reason.split(":")[0] for d in runs()} != {"xgboost", "pytorch"}:
                assert time.monotonic() - started < 30, decisions
                if first_run_s is None and runs():
                    first_run_s = time.monotonic() - started
                await asyncio.sleep(0.05)
            first_run_s = first_run_s or time.monotonic() - started
            await asyncio.sleep(1.5)  # the next interval: refused by the shared cooldown
        finally:
            await worker.stop()
            await nc.close()
        assert first_run_s < 1.0 + 0.3 + 3  # due after 1 s, gives up after 0.3 s of label wait
        assert len(runs()) == 2 and all(d.trigger_ids[0].startswith("schedule-") for d in runs())
        assert any(d.rule == "retrain_budget" and "schedule trigger" in d.reason for d in decisions)
    finally:
        server.stop()
