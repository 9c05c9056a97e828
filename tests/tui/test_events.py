"""The event log: one line per mesh event, counters for prediction traffic, NATS loss and return."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec
import nats
import pytest

from data_plane.contracts import subjects
from data_plane.contracts.events import (
    CanaryEvent,
    ChaosEvent,
    Decision,
    DriftReport,
    HealthEvent,
    PredictionBatch,
    PredictionRecord,
    XdsEvent,
)
from data_plane.netutil import free_port
from data_plane.procs import ManagedProcess, nats_server
from tests.tui.conftest import console, loaded, main_text, text_of, wait_until
from tests.tui.fake_api import FakeOperatorAPI
from tui.events import EventFeed, NatsEventSource, describe_event

T = 1767225600.0


def enc(event: msgspec.Struct) -> bytes:
    return msgspec.json.encode(event)


@pytest.mark.parametrize(("subject", "event", "expected"), [
    (subjects.health("xgboost"),
     HealthEvent(ts=T, service="xgboost", healthy=False, reason="5 consecutive 5xx", error_rate=0.12,
                 p95_ms=640.0, ejected=True),
     "xgboost UNHEALTHY: 5 consecutive 5xx (errors 12.0%, p95 640 ms, ejected)"),
    (subjects.drift("xgboost"),
     DriftReport(ts=T, model="xgboost", model_version="xgboost_v3", window_size=2000, level="retrain",
                 features=[], max_psi=0.312),
     "drift xgboost_v3: retrain, max PSI 0.312 over 2000 rows"),
    (subjects.DECISIONS,
     Decision(ts=T, seq=7, actor="reconciler", action="eject", rule="health_failures",
              reason="xgboost failed 5 checks", xds_version="43", acked=True),
     "decision #7 reconciler eject -> v43 ack: xgboost failed 5 checks"),
    (subjects.xds("nacked"),
     XdsEvent(ts=T, node="edge", type_url="type.googleapis.com/envoy.config.cluster.v3.Cluster",
              version="44", nonce="n1", error="bad cluster"),
     "edge nacked Cluster v44: bad cluster"),
    (subjects.canary("step"),
     CanaryEvent(ts=T, model="xgboost", version="4", phase="canary", weight=0.25, verdict="pass",
                 reason="errors ok"),
     "canary xgboost v4 canary 25%: pass errors ok"),
    (subjects.chaos("step"), ChaosEvent(ts=T, experiment="primary-killed", phase="step",
                                        detail="kill -9 xgboost"),
     "chaos primary-killed step: kill -9 xgboost"),
])
def test_each_event_kind_reads_as_one_line(subject: str, event: msgspec.Struct, expected: str) -> None:
    line = describe_event(subject, enc(event))
    assert line.text == expected
    assert line.ts == "00:00:00"
    assert line.subject == subject


def test_prediction_traffic_is_counted_not_listed_and_junk_is_shown_raw() -> None:
    feed = EventFeed()
    record = PredictionRecord(request_id="r", model="xgboost", model_version="xgboost_v3", slot="champion",
                              features=[0.0] * 11, score=0.1, is_fraud=False, latency_ms=1.0)
    batch = PredictionBatch(records=[record])
    feed.event(subjects.predictions("xgboost"), enc(batch))
    feed.event(subjects.shadow("xgboost"), enc(batch))
    feed.event("mesh.labels", b"{}")
    feed.event("mesh.unknown.thing", b"\xff\xfe")
    assert dict(feed.counts) == {"predictions": 1, "shadow": 1, "labels": 1}
    lines = feed.drain()
    assert [(x.subject, x.text) for x in lines] == [("mesh.unknown.thing", "2 bytes (not JSON)")]


@pytest.fixture
def nats_ports(tmp_path: Path) -> Iterator[tuple[int, int, Path]]:
    yield free_port(), free_port(), tmp_path / "nats"


def start_nats(port: int, monitor: int, store: Path) -> ManagedProcess:
    proc = nats_server(port, monitor, store, store / "nats.log").start()
    proc.wait_port("127.0.0.1", port, timeout=10)
    return proc


def log_text(app: object) -> str:
    log = app.main.query_one("#event-log")  # type: ignore[attr-defined]
    return "\n".join(strip.text for strip in log.lines)


async def publish(url: str, subject: str, event: msgspec.Struct) -> None:
    nc = await nats.connect(url, connect_timeout=2)
    try:
        await nc.publish(subject, enc(event))
        await nc.flush()
    finally:
        await nc.close()


@pytest.mark.integration
async def test_live_events_from_a_real_nats_survive_it_going_away(
        fake_api: FakeOperatorAPI, token_file: Path, nats_ports: tuple[int, int, Path]) -> None:
    port, monitor, store = nats_ports
    url = f"nats://127.0.0.1:{port}"
    app = console(fake_api.url, token_file, events=NatsEventSource(url, retry_s=0.2))
    server = None
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            await loaded(pilot)
            # NATS is not up yet: the console says so and keeps trying.
            await wait_until(pilot, lambda: "NATS disconnected" in main_text(app, "#connection"),
                             what="the disconnected state")
            server = start_nats(port, monitor, store)
            await wait_until(pilot, lambda: "● NATS" in main_text(app, "#connection"), within=10,
                             what="the first connection")
            await pilot.press("6")
            await publish(url, subjects.health("pytorch"), HealthEvent(
                service="pytorch", healthy=False, reason="connection refused", ejected=True))
            await publish(url, subjects.predictions("xgboost"), PredictionBatch(records=[]))
            expected = "pytorch UNHEALTHY: connection refused (ejected)"
            await wait_until(pilot, lambda: expected in log_text(app), what="the health event in the log")
            await wait_until(pilot, lambda: "counted: predictions 1" in text_of(
                app.main.query_one("#feed-head")), what="the prediction counter")

            server.stop()
            await wait_until(pilot, lambda: "NATS disconnected" in main_text(app, "#connection"),
                             what="the lost connection")
            server = start_nats(port, monitor, store)
            await wait_until(pilot, lambda: "● NATS" in main_text(app, "#connection"), within=10,
                             what="the reconnection")
            await publish(url, subjects.DECISIONS, Decision(
                seq=8, actor="reconciler", action="restore", rule="healthy_again", reason="pytorch is back"))
            await wait_until(pilot, lambda: "decision #8 reconciler restore" in log_text(app),
                             what="an event after the reconnection")
            assert not app.internal_errors
    finally:
        if server is not None:
            server.stop()
