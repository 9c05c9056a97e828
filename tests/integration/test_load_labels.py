"""Delayed labels from the load generator: own request ids on the wire, Label events on real NATS."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web

from data_plane.contracts.events import Label
from data_plane.eventbus import EventBus
from data_plane.load import LoadEngine, LoadPlan
from data_plane.load.labels import LabelSender, labelled_payloads
from data_plane.load.targets import LoadTargetError
from data_plane.netutil import free_port
from data_plane.procs import ManagedProcess, nats_server
from data_plane.settings import REPO_ROOT

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("labels-nats")
    port = free_port()
    proc: ManagedProcess = nats_server(port, free_port(), home / "js", home / "nats.log").start()
    try:
        proc.wait_port("127.0.0.1", port)
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.stop()


class Server:
    """A tiny scoring stand-in that records the request ids it saw; every 7th request gets 503."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int, float]] = []  # (x-request-id, status, answered at)
        self.bodies: dict[str, bytes] = {}
        self.url = ""

    async def predict(self, request: web.Request) -> web.Response:
        body = await request.read()
        status = 503 if len(self.seen) % 7 == 6 else 200
        rid = request.headers.get("x-request-id", "")
        self.seen.append((rid, status, time.time()))
        self.bodies[rid] = body
        return web.json_response({"routed_to": "stub"}, status=status)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    s = Server()
    app = web.Application()
    app.router.add_post("/api/v1/predict", s.predict)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    s.url = f"http://127.0.0.1:{port}/api/v1/predict"
    yield s
    await runner.cleanup()


async def collect_labels(url: str, into: list[tuple[Label, float]]) -> Any:
    import nats as nats_client

    nc = await nats_client.connect(url)

    async def on_msg(msg: Any) -> None:
        into.append((msgspec.json.decode(msg.data, type=Label), time.time()))

    await nc.subscribe("mesh.labels", cb=on_msg)
    await nc.flush()
    return nc


@pytest.mark.parametrize("transport", ["aiohttp", "http1"])
async def test_each_answered_request_gets_its_true_label_after_the_delay(
        nats: str, server: Server, transport: str) -> None:
    payloads, truths = labelled_payloads(seed=3, count=50)
    delay = 0.6
    sender = LabelSender(truths, EventBus(nats, "test-labels"), delay_s=delay)
    labels: list[tuple[Label, float]] = []
    nc = await collect_labels(nats, labels)
    try:
        await sender.start()
        plan = LoadPlan(url=server.url, requests=120, concurrency=4, transport=transport)
        result = await LoadEngine(plan, payloads, labels=sender).run()
        await sender.finish()
        await asyncio.sleep(0.3)  # the last publishes cross NATS
    finally:
        await nc.close()

    assert result.responses == 120 and result.by_status["503"] == 120 // 7
    ids = [rid for rid, _, _ in server.seen]
    assert len(set(ids)) == 120 and all(rid.startswith(sender.run_id + "-") for rid in ids)
    answered = {rid: at for rid, status, at in server.seen if status == 200}
    got = {label.request_id: (label, at) for label, at in labels}
    assert set(got) == set(answered)  # a label per 2xx answer, none for the 503s
    assert sender.summary()["published"] == len(answered) == result.ok and sender.dropped == 0
    truth_of_body = {p.body: t for p, t in zip(payloads, truths, strict=True)}
    assert len(truth_of_body) == len(payloads)  # distinct bodies: the body tells the payload
    for rid, (label, at) in got.items():
        assert label.is_fraud is truth_of_body[server.bodies[rid]], rid
        assert at - answered[rid] >= delay - 0.05, (rid, at - answered[rid])


def test_out_of_range_delay_is_refused() -> None:
    with pytest.raises(LoadTargetError, match="--label-delay"):
        LabelSender([True], EventBus("nats://127.0.0.1:1", "x"), delay_s=-1)


async def test_cli_labels_json(nats: str, server: Server, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    env.update(MESH_HOME=str(tmp_path / "mesh"), MESH_PORT_NATS=nats.rsplit(":", 1)[1])
    labels: list[tuple[Label, float]] = []
    nc = await collect_labels(nats, labels)
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "meshctl", "load", "--url", server.url, "--requests", "40",
            "--concurrency", "2", "--labels", "--label-delay", "0.2", "--json", "--no-progress",
            env=env, cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        await asyncio.sleep(0.3)
    finally:
        await nc.close()
    assert proc.returncode == 0, err.decode()
    body = json.loads(out)
    summary = body["labels"]
    assert summary["published"] == summary["answered"] == body["ok"] == 40 - 40 // 7
    assert summary["pending"] == 0 and summary["bus_dropped"] == 0
    assert "request ids" in err.decode()
    assert {label.request_id for label, _ in labels} == {
        rid for rid, status, _ in server.seen if status == 200}
