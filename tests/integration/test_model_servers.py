"""Real model server processes (`python -m model_servers --kind xgboost`) on free ports, scoring
real registry models (two small XGBoost versions trained once for this module), with a real
nats-server where events matter."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from data_plane.contracts import subjects
from data_plane.contracts.events import ModelAliasMoved, PredictionBatch
from data_plane.contracts.schema import FEATURE_NAMES, PREDICTION_FIELDS
from data_plane.netutil import free_port, port_open
from data_plane.procs import ManagedProcess, nats_server
from data_plane.settings import REPO_ROOT, Settings

pytestmark = pytest.mark.integration

SEED_BODY: dict[str, Any] = {
    "amount": 1500.00, "merchant_category": 7, "hour_of_day": 2, "day_of_week": 6,
    "distance_from_home": 150.0, "distance_from_last_txn": 80.0, "is_foreign": 1,
    "velocity_last_1h": 5, "velocity_last_24h": 12, "avg_amount_last_7d": 200.0, "card_age_days": 15,
}
SEED_RAW = json.dumps(SEED_BODY).encode()
HOST = "127.0.0.1"


@pytest.fixture(scope="module")
def registry_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A MESH_HOME whose registry holds fraud-xgboost v1 (champion) and v2 (challenger)."""
    from training.pipeline import train_all

    s = Settings(home=tmp_path_factory.mktemp("mesh"))
    first = train_all(s, rows=5000, seed=1, kinds=("xgboost",))
    second = train_all(s, rows=5000, seed=2, kinds=("xgboost",))
    assert [(m.version, m.alias) for m in (*first.models, *second.models)] == [
        ("1", "champion"), ("2", "challenger")]
    return s


@dataclass
class Server:
    proc: ManagedProcess
    port: int
    challenger_port: int

    def url(self, path: str, challenger: bool = False) -> str:
        return f"http://{HOST}:{self.challenger_port if challenger else self.port}{path}"


def start_server(settings: Settings, log_dir: Path, *extra: str, nats_url: str | None = None) -> Server:
    port, challenger = free_port(), free_port()
    argv = [sys.executable, "-m", "model_servers", "--kind", "xgboost", "--port", str(port),
            "--challenger-port", str(challenger), "--registry-poll", "0", *extra]
    argv += ["--nats-url", nats_url] if nats_url else ["--no-nats"]
    proc = ManagedProcess("model-server-xgboost", argv, log_dir / f"xgboost-{port}.log",
                          env={"MESH_HOME": str(settings.home), "PYTHONPATH": str(REPO_ROOT)},
                          cwd=REPO_ROOT).start()
    server = Server(proc, port, challenger)
    proc.wait_port(HOST, port, timeout=30)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the models load in the background after the listener opens
        if _get_status(server.url("/ready")) == 200 and _get_status(server.url("/ready", True)) == 200:
            return server
        time.sleep(0.2)
    proc.stop()
    raise AssertionError(f"model server not ready within 60 s:\n{proc.log_tail()}")


def _get_status(url: str) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


@pytest.fixture
def server(registry_settings: Settings, tmp_path: Path) -> Iterator[Server]:
    srv = start_server(registry_settings, tmp_path)
    yield srv
    srv.proc.stop()


async def _post(session: aiohttp.ClientSession, url: str, body: Any = None, raw: bytes | None = None,
                **headers: str) -> tuple[int, dict[str, Any]]:
    async with session.post(url, json=body if raw is None else None, data=raw, headers=headers) as r:
        return r.status, await r.json()


async def test_champion_and_challenger_slots_score_their_registry_versions(
        server: Server, registry_settings: Settings) -> None:
    from data_plane.registry import Registry
    from data_plane.scoring import OnnxScorer

    row = [SEED_BODY[n] for n in FEATURE_NAMES]
    expected = {v: round(OnnxScorer(Registry(registry_settings).fetch("xgboost", v).onnx_path)
                         .predict_one(row), 6) for v in ("1", "2")}
    async with aiohttp.ClientSession() as s:
        status, champ = await _post(s, server.url("/api/v1/predict"), SEED_BODY,
                                    **{"x-mesh-intended": "xgboost"})
        assert status == 200 and tuple(champ) == PREDICTION_FIELDS
        assert (champ["model_version"], champ["model_type"], champ["routed_to"]) == \
            ("xgboost_v1", "xgboost", "xgboost")
        assert champ["fraud_probability"] == expected["1"] and champ["fallback_reason"] is None

        status, chall = await _post(s, server.url("/api/v1/predict", challenger=True), SEED_BODY,
                                    **{"x-mesh-intended": "xgboost-challenger"})
        assert status == 200 and chall["model_version"] == "xgboost_v2"
        assert chall["fraud_probability"] == expected["2"] and chall["fallback_reason"] is None

        # The chain for the challenger fell through to the champion slot.
        _, fell = await _post(s, server.url("/api/v1/predict"), SEED_BODY,
                              **{"x-mesh-intended": "xgboost-challenger"})
        assert (fell["model_version"], fell["fallback_reason"]) == ("xgboost_v1",
                                                                   "xgboost-challenger_unavailable")
        # A request meant for pytorch that the xgboost chain answered.
        _, other = await _post(s, server.url("/api/v1/predict"), SEED_BODY,
                               **{"x-mesh-intended": "pytorch"})
        assert other["fallback_reason"] == "pytorch_unavailable"

        # Envoy's mirror: `-shadow` on the Host; scored by the challenger whatever the port.
        _, shadow = await _post(s, server.url("/api/v1/predict"), SEED_BODY,
                                Host=f"{HOST}-shadow:{server.port}", **{"x-mesh-intended": "xgboost"})
        assert shadow["model_version"] == "xgboost_v2" and shadow["fallback_reason"] is None

        status, batch = await _post(s, server.url("/api/v1/predict/batch"),
                                    {"transactions": [SEED_BODY, {**SEED_BODY, "amount": -1}]})
        assert status == 200 and batch["succeeded"] == 1
        assert batch["results"][0]["prediction"]["fraud_probability"] == expected["1"]

        infer = {"inputs": [{"name": "features", "shape": [1, 11], "datatype": "FP32", "data": row}]}
        for challenger, version in ((False, "1"), (True, "2")):
            status, out = await _post(s, server.url("/v2/models/xgboost/infer", challenger), infer)
            assert status == 200 and out["model_version"] == version
            assert out["outputs"][0]["data"] == [expected[version]]
        status, out = await _post(s, server.url("/v2/models/xgboost-challenger/infer"), infer)
        assert status == 200 and out["model_version"] == "2"
        async with s.get(server.url("/v2/models/fraud-xgboost")) as r:
            meta = await r.json()
        assert meta["versions"] == ["1"] and meta["platform"] == "onnxruntime"


async def _load(url: str, stop: asyncio.Event, seen: dict[str, int], failures: list[str],
                scores: dict[str, set[float]], workers: int = 12) -> int:
    """Closed-loop load until `stop`; counts versions answered, collects the scores each version
    gave, and records every failure."""
    sent = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal sent
        while not stop.is_set():
            sent += 1
            try:
                async with session.post(url, data=SEED_RAW) as r:
                    body = await r.read()
                    if r.status != 200:
                        failures.append(f"{r.status} {body[:200]!r}")
                        continue
                    answer = json.loads(body)
                    mv = answer["model_version"]
                    seen[mv] = seen.get(mv, 0) + 1
                    scores.setdefault(mv, set()).add(answer["fraud_probability"])
            except aiohttp.ClientError as exc:
                failures.append(repr(exc))

    conn = aiohttp.TCPConnector(limit=workers)
    async with aiohttp.ClientSession(connector=conn) as session:
        await asyncio.gather(*(worker(session) for _ in range(workers)))
    return sent


async def test_hot_swap_under_concurrent_load_fails_no_request(server: Server) -> None:
    stop = asyncio.Event()
    seen: dict[str, int] = {}
    failures: list[str] = []
    scores: dict[str, set[float]] = {}
    load = asyncio.create_task(_load(server.url("/api/v1/predict"), stop, seen, failures, scores))
    async with aiohttp.ClientSession() as s:
        await asyncio.sleep(0.7)
        status, swap = await _post(s, server.url("/admin/reload"), {"slot": "champion", "version": "2"})
        assert status == 200, swap
        assert (swap["previous"], swap["current"], swap["changed"], swap["pinned"]) == ("1", "2", True, True)
        after_pin = dict(seen)
        await asyncio.sleep(0.7)
        status, back = await _post(s, server.url("/admin/reload"), {"slot": "champion"})
        assert status == 200 and (back["current"], back["pinned"]) == ("1", False)
        await asyncio.sleep(0.7)
        status, missing = await _post(s, server.url("/admin/reload"), {"slot": "champion", "version": "99"})
        assert status == 404 and "99" in missing["error"]
        await asyncio.sleep(0.3)
        stop.set()
        sent = await load
        async with s.get(server.url("/admin/slots")) as r:
            slots = {x["slot"]: x for x in (await r.json())["slots"]}
    assert failures == []
    assert seen.get("xgboost_v2", 0) > after_pin.get("xgboost_v2", 0)  # v2 answered after the pin
    assert seen["xgboost_v1"] > 0 and seen["xgboost_v2"] > 0
    assert sum(seen.values()) == sent > 100
    # Micro-batched or alone, the same transaction gets the same score from the same version.
    assert {mv: len(s) for mv, s in scores.items()} == {"xgboost_v1": 1, "xgboost_v2": 1}
    assert slots["champion"]["version"] == "1" and slots["champion"]["last_error"] is not None


def test_sigterm_drains_a_request_in_flight(server: Server) -> None:
    """A request whose body is still arriving when SIGTERM lands gets its answer; new
    connections are refused; the process exits 0."""
    head = (f"POST /api/v1/predict HTTP/1.1\r\nHost: {HOST}:{server.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(SEED_RAW)}\r\n\r\n").encode()
    with socket.create_connection((HOST, server.port), timeout=10) as sock:
        sock.sendall(head + SEED_RAW[:20])
        time.sleep(0.3)  # the handler is now waiting for the rest of the body
        server.proc.signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        while port_open(HOST, server.port) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not port_open(HOST, server.port), "the listener stayed open after SIGTERM"
        assert server.proc.alive(), "the server exited with a request in flight"
        sock.sendall(SEED_RAW[20:])
        response = b""
        while b"\r\n\r\n" not in response or not response.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            response += chunk
    status_line, _, rest = response.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 200 OK", response
    body = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert body["model_version"] == "xgboost_v1"
    assert server.proc.proc is not None and server.proc.proc.wait(timeout=15) == 0
    assert "stopped after" in server.proc.log_tail()


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[tuple[str, ManagedProcess]]:
    port, monitor = free_port(), free_port()
    proc = nats_server(port, monitor, tmp_path / "js", tmp_path / "nats.log").start()
    proc.wait_port(HOST, port)
    yield f"nats://{HOST}:{port}", proc
    proc.stop()


async def _collect(nc: Any, subject: str) -> asyncio.Queue[PredictionBatch]:
    got: asyncio.Queue[PredictionBatch] = asyncio.Queue()

    async def on_msg(msg: Any) -> None:
        await got.put(msgspec.json.decode(msg.data, type=PredictionBatch))

    await nc.subscribe(subject, cb=on_msg)
    await nc.flush()
    return got


async def _records_until(queue: asyncio.Queue[PredictionBatch], want: set[str], wait_s: float = 10) -> dict:
    found: dict[str, Any] = {}
    deadline = time.monotonic() + wait_s
    while not want <= set(found) and time.monotonic() < deadline:
        try:
            batch = await asyncio.wait_for(queue.get(), max(0.05, deadline - time.monotonic()))
        except TimeoutError:
            break
        found.update({r.request_id: r for r in batch.records})
    return found


async def test_predictions_reach_nats_with_request_ids_and_model_events_reload(
        registry_settings: Settings, tmp_path: Path, nats_url: tuple[str, ManagedProcess]) -> None:
    import nats

    url, _ = nats_url
    nc = await nats.connect(url)
    primary = await _collect(nc, subjects.predictions("xgboost"))
    shadow = await _collect(nc, subjects.shadow("xgboost"))
    srv = start_server(registry_settings, tmp_path, nats_url=url)
    from data_plane.registry import Registry

    registry = Registry(registry_settings)
    try:
        async with aiohttp.ClientSession() as s:
            ids = [f"it-{i}" for i in range(5)]
            for rid in ids:
                status, _ = await _post(s, srv.url("/api/v1/predict"), SEED_BODY,
                                        **{"x-request-id": rid, "x-mesh-intended": "xgboost",
                                           "card-id": "card-7"})
                assert status == 200
            await _post(s, srv.url("/api/v1/predict"), SEED_BODY, Host="xgboost-shadow",
                        **{"x-request-id": "it-0"})
            await _post(s, srv.url("/api/v1/predict/batch"), {"transactions": [SEED_BODY, SEED_BODY]},
                        **{"x-request-id": "it-batch"})
            records = await _records_until(primary, {*ids, "it-batch:0", "it-batch:1"})
            assert {*ids, "it-batch:0", "it-batch:1"} <= set(records)
            rec = records["it-0"]
            assert (rec.model, rec.model_version, rec.slot, rec.shadow) == \
                ("xgboost", "xgboost_v1", "champion", False)
            assert rec.features == [float(SEED_BODY[n]) for n in FEATURE_NAMES]
            assert (rec.intended, rec.card_id) == ("xgboost", "card-7") and 0 <= rec.score <= 1
            mirrored = (await _records_until(shadow, {"it-0"}))["it-0"]
            assert (mirrored.shadow, mirrored.slot, mirrored.model_version) == \
                (True, "challenger", "xgboost_v2")

            # The stream exists (the server created it) and holds the records.
            js = nc.jetstream()
            deadline = time.monotonic() + 5
            while True:  # JetStream stores asynchronously to core delivery: wait for both batches
                info = await js.stream_info("PREDICTIONS")
                if info.state.messages >= 2 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            assert set(info.config.subjects or []) == set(subjects.STREAMS["PREDICTIONS"])
            assert info.state.messages >= 2

            # Promotion elsewhere: move the alias, announce it; the server follows (no polling).
            registry.set_alias("xgboost", "champion", "2")
            await nc.publish(subjects.MODEL_PROMOTED, msgspec.json.encode(
                ModelAliasMoved(model="fraud-xgboost", version="2", alias="champion",
                                previous_version="1")))
            deadline = time.monotonic() + 15
            version = None
            while time.monotonic() < deadline:
                _, body = await _post(s, srv.url("/api/v1/predict"), SEED_BODY)
                version = body["model_version"]
                if version == "xgboost_v2":
                    break
                await asyncio.sleep(0.1)
            assert version == "xgboost_v2"

            # Rollback elsewhere removes the challenger alias: the challenger slot stops serving.
            registry.delete_alias("xgboost", "challenger")
            await nc.publish(subjects.MODEL_ROLLED_BACK, msgspec.json.encode(
                ModelAliasMoved(model="xgboost", version="2", alias="challenger")))
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                status, body = await _post(s, srv.url("/api/v1/predict", challenger=True), SEED_BODY)
                if status == 503:
                    break
                await asyncio.sleep(0.1)
            assert (status, body) == (503, {"error": "no challenger"})
    finally:
        registry.set_alias("xgboost", "champion", "1")
        registry.set_alias("xgboost", "challenger", "2")
        srv.proc.stop()
        await nc.drain()


async def test_nats_down_predictions_still_served_and_drops_counted(
        registry_settings: Settings, tmp_path: Path, nats_url: tuple[str, ManagedProcess]) -> None:
    url, nats_proc = nats_url
    srv = start_server(registry_settings, tmp_path, "--log-buffer", "2", nats_url=url)
    try:
        async with aiohttp.ClientSession() as s:
            await asyncio.sleep(0.5)  # connected
            assert (await _post(s, srv.url("/api/v1/predict"), SEED_BODY))[0] == 200
            nats_proc.signal(signal.SIGKILL)
            nats_proc.proc.wait(timeout=5)  # type: ignore[union-attr]
            started = time.monotonic()
            statuses = []
            for i in range(40):
                statuses.append((await _post(s, srv.url("/api/v1/predict"), SEED_BODY))[0])
                if i % 10 == 9:
                    await asyncio.sleep(0.1)  # let batches ship into the (bounded) bus buffer
            elapsed = time.monotonic() - started
            assert statuses == [200] * 40
            assert elapsed < 10, f"40 predictions took {elapsed:.1f}s with NATS down"
            await asyncio.sleep(0.3)
            async with s.get(srv.url("/metrics")) as r:
                text = await r.text()
    finally:
        srv.proc.stop()
    dropped = _metric(text, "model_server_prediction_log_records_total", 'outcome="dropped"')
    queued = _metric(text, "model_server_prediction_log_records_total", 'outcome="queued"')
    assert dropped > 0 and queued + dropped == 41


def _metric(text: str, name: str, label: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and label in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{{{label}}} not in /metrics")


def test_port_in_use_is_a_clear_error(registry_settings: Settings, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind((HOST, 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = ManagedProcess("ms", [sys.executable, "-m", "model_servers", "--kind", "heuristic",
                                     "--port", str(port), "--no-nats"], tmp_path / "ms.log",
                              env={"MESH_HOME": str(registry_settings.home)}, cwd=REPO_ROOT).start()
        assert proc.proc is not None and proc.proc.wait(timeout=30) == 1
    log = proc.log_path.read_text()
    assert f"cannot listen on {HOST}:{port}" in log and "Traceback" not in log
    assert os.path.exists(proc.log_path)


def _mirror_bootstrap(edge: int, admin: int, port: int) -> dict[str, Any]:
    """An edge Envoy that routes to `port` and mirrors every request to the same `port`."""
    def cluster(name: str) -> dict[str, Any]:
        addr = {"socket_address": {"address": HOST, "port_value": port}}
        return {"name": name, "type": "STATIC", "load_assignment": {
            "cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": addr}}]}]}}

    route = {"match": {"prefix": "/api/v1/predict"},
             "route": {"cluster": "xgboost", "request_mirror_policies": [{"cluster": "mirror"}]},
             "request_headers_to_add": [{"header": {"key": "x-mesh-intended", "value": "xgboost"}}]}
    hcm = {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                    "HttpConnectionManager",
           "stat_prefix": "edge",
           "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [route]}]},
           "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
               "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}
    listener = {"name": "edge", "address": {"socket_address": {"address": HOST, "port_value": edge}},
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                "typed_config": hcm}]}]}
    clusters = [cluster("xgboost"), cluster("mirror")]
    return {"static_resources": {"listeners": [listener], "clusters": clusters},
            "admin": {"address": {"socket_address": {"address": HOST, "port_value": admin}}}}


async def test_envoy_mirror_is_scored_by_the_challenger_as_shadow(server: Server, tmp_path: Path) -> None:
    """Real Envoy mirrors to the *champion* port: only its `-shadow` Host can tell the server."""
    from data_plane.procs import envoy

    edge, admin = free_port(), free_port()
    config = tmp_path / "edge.json"
    config.write_text(json.dumps(_mirror_bootstrap(edge, admin, server.port)))
    proxy = envoy(config, tmp_path / "envoy.log", base_id=edge, concurrency=1).start()
    try:
        proxy.wait_port(HOST, edge, timeout=30)
        async with aiohttp.ClientSession() as s:
            status, body = await _post(s, f"http://{HOST}:{edge}/api/v1/predict", SEED_BODY)
            assert status == 200
            assert (body["model_version"], body["fallback_reason"]) == ("xgboost_v1", None)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                async with s.get(server.url("/metrics")) as r:
                    text = await r.text()
                if 'slot="challenger",status="200"' in text:
                    break
                await asyncio.sleep(0.1)
        assert _metric(text, "model_server_requests_total", 'slot="challenger",status="200"') == 1
        assert _metric(text, "model_server_requests_total", 'slot="champion",status="200"') == 1
        assert 'fallback_served_total{kind="xgboost"' not in text  # the mirror is not a fallback
    finally:
        proxy.stop()
