"""The whole data plane end to end: client -> edge Envoy -> sidecar Envoy -> model server -> NATS.

One real mesh for the module (`meshctl train` + `meshctl up --detach` under a temp MESH_HOME on
free ports): nats-server, the control plane (xDS + operator API), the edge and three sidecar
Envoys, and the xgboost / pytorch / heuristic model servers scoring ONNX models from MLflow.
Every test restores what it changed; the destructive ones (kills) run last.

Automation is frozen (`POST /api/v1/freeze`) for the module: the failover tests prove what the
Envoys do on their own (aggregate chains, retries, outlier detection, the conservative default),
without the healing reconciler rewriting the weights underneath them.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from data_plane.load import LoadEngine, LoadPlan, fixed_payloads
from data_plane.settings import REPO_ROOT
from tests.integration.dp_support import (
    SEED_FIELDS,
    SEED_TXN,
    Mesh,
    RecordTap,
    clean_environ,
    closed_load,
    free_port_env,
    http,
    mesh_settings,
    share,
    wait_for,
    with_request_ids,
)

pytestmark = pytest.mark.integration
SPLIT_TOLERANCE = 0.04
MODEL_VERSION = re.compile(r"^(xgboost|pytorch)_v\d+$")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    home = tmp_path_factory.mktemp("data-plane") / "mesh"
    env = {**clean_environ(), "MESH_HOME": str(home), **free_port_env()}
    m = Mesh(env, mesh_settings(home, env))
    try:
        # Small models (fast): both kinds become champions; a second xgboost becomes its challenger.
        trained = subprocess.run([sys.executable, "-m", "tests.integration.dp_train", "--rows", "6000"],
                                 env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
        assert trained.returncode == 0, trained.stderr[-2000:]
        m.up()
        code, body = m.operator("POST", "/api/v1/freeze", {"reason": "data-plane tests: Envoy alone"})
        assert code == 200, body
        yield m
    finally:
        m.meshctl("down", "--timeout", "5")


def test_seed_example_through_the_edge(mesh: Mesh) -> None:
    seen: dict[str, dict[str, object]] = {}
    for i in range(40):  # 80/20: both models answer within a few requests
        code, body = http("POST", mesh.predict_url, SEED_TXN, headers={"x-request-id": f"seed-{i}"})
        assert code == 200, body
        assert set(body) == SEED_FIELDS, body
        p = body["fraud_probability"]
        assert isinstance(p, float) and 0.0 <= p <= 1.0
        assert body["is_fraud"] is (p >= mesh.settings.fraud_threshold)
        assert MODEL_VERSION.match(body["model_version"]), body
        kind = body["model_version"].split("_v")[0]
        assert body["model_type"] == body["routed_to"] == kind
        assert isinstance(body["latency_ms"], int | float) and body["latency_ms"] >= 0
        assert body["fallback_reason"] is None
        seen[kind] = body
    assert set(seen) == {"xgboost", "pytorch"}
    # The seed's example is a textbook fraud (night, foreign, far, fast, young card, 7x the average).
    assert all(b["is_fraud"] is True for b in seen.values()), seen


async def test_client_request_id_is_the_prediction_id(mesh: Mesh) -> None:
    """The edge keeps a client's x-request-id; the model server logs the prediction under it."""
    import aiohttp

    async with RecordTap(mesh.settings.nats_url, ["mesh.predictions.>"]) as tap, \
            aiohttp.ClientSession() as session:
        answers = {}
        for i in range(10):
            rid = f"client-id-{i}"
            async with session.post(mesh.predict_url, json=SEED_TXN, headers={"x-request-id": rid}) as r:
                assert r.status == 200
                answers[rid] = await r.json()
        await tap.settle()
    records = {r.request_id: r for r in tap.records["mesh.predictions.>"]}
    assert set(answers) <= set(records)
    for rid, answer in answers.items():
        rec = records[rid]
        assert rec.model_version == answer["model_version"] and rec.shadow is False
        assert rec.score == pytest.approx(answer["fraud_probability"], abs=1e-6)


def test_default_split_is_80_20(mesh: Mesh) -> None:
    result = closed_load(mesh, requests=2000, concurrency=8)
    assert result.ok == 2000 and result.errors == 0, result.by_status
    assert set(result.by_routed_to) == {"xgboost", "pytorch"}
    assert abs(share(result, "routed_to", "xgboost") - 0.8) <= SPLIT_TOLERANCE, result.by_routed_to
    assert result.by_fallback_reason == {"none": 2000}


def test_reweight_through_the_edge_needs_the_token(mesh: Mesh) -> None:
    _, before = mesh.operator("GET", "/api/v1/status")
    for token in (None, "not-the-token"):
        code, body = mesh.operator("POST", "/api/v1/traffic", {"xgboost": 0.3, "pytorch": 0.7}, token=token)
        assert code == 401 and body["field"] == "Authorization", body
    _, after = mesh.operator("GET", "/api/v1/status")
    assert after["intent"] == before["intent"] and after["version"] == before["version"]

    code, body = mesh.operator("POST", "/api/v1/traffic", {"xgboost": 0.3, "pytorch": 0.7})
    assert code == 200 and body["acked"] is True, body
    try:
        result = closed_load(mesh, requests=2000, concurrency=8)
        assert result.ok == 2000
        assert abs(share(result, "routed_to", "xgboost") - 0.3) <= SPLIT_TOLERANCE, result.by_routed_to
    finally:
        code, body = mesh.operator("POST", "/api/v1/traffic", {"xgboost": 0.8, "pytorch": 0.2})
        assert code == 200, body


STICKY_KEYS = 250  # distinct card-id keys; each is asked STICKY_ROUNDS times, interleaved
STICKY_ROUNDS = 4  # 1,000 requests at 80/20
STICKY_Z = 4.0  # tolerance in binomial standard deviations (the keys are fixed: no flakiness)


async def sticky_rounds(url: str, keys: list[str], rounds: int, concurrency: int = 16,
                        seed: int = 0) -> dict[str, list[dict[str, object]]]:
    """Ask for every key `rounds` times (keys interleaved, a fresh order per round) over keep-alive
    connections, `concurrency` in flight; the answers per key."""
    import aiohttp

    order = [k for r in range(rounds) for k in random.Random(seed + r).sample(keys, len(keys))]
    queue: asyncio.Queue[str] = asyncio.Queue()
    for key in order:
        queue.put_nowait(key)
    answers: dict[str, list[dict[str, object]]] = {k: [] for k in keys}
    connector = aiohttp.TCPConnector(limit=concurrency)  # keep-alive pool: at most this many sockets
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as session:
        async def worker() -> None:
            while not queue.empty():
                key = queue.get_nowait()
                body = {**SEED_TXN, "card_id": key}
                async with session.post(url, json=body, headers={"card-id": key}) as r:
                    assert r.status == 200, (key, r.status, await r.text())
                    answers[key].append(await r.json())
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return answers


def one_version_per_key(answers: dict[str, list[dict[str, object]]]) -> dict[str, str]:
    """key -> the one model_version it met (fails naming a key that met two, or a fallback)."""
    out = {}
    for key, bodies in answers.items():
        assert all(b["fallback_reason"] is None for b in bodies), (key, bodies)  # no failover blurs it
        versions = {str(b["model_version"]) for b in bodies}
        assert len(versions) == 1, (key, [b["model_version"] for b in bodies])
        out[key] = versions.pop()
    return out


def within_binomial(observed: float, p: float, n: int) -> bool:
    return abs(observed - p) <= STICKY_Z * math.sqrt(p * (1 - p) / n)


async def test_sticky_keys_keep_their_version_and_a_reweight_moves_few(mesh: Mesh) -> None:
    """1,000 requests over 250 card keys at 80/20: each key always meets the same model version
    and the keys split 80/20; 80/20 -> 70/30 moves only keys from xgboost to pytorch, about 10 %
    of them (Envoy: hash % total weight walks the cumulative weights, pytorch's range first)."""
    keys = [f"card-{i:04d}" for i in range(STICKY_KEYS)]
    code, body = mesh.operator("POST", "/api/v1/traffic", {"xgboost": 0.8, "pytorch": 0.2})
    assert code == 200 and body["acked"] is True, body
    try:
        before = one_version_per_key(await sticky_rounds(mesh.predict_url, keys, STICKY_ROUNDS))
        assert set(before.values()) == {"xgboost_v1", "pytorch_v1"}, set(before.values())
        xgb_share = sum(v.startswith("xgboost") for v in before.values()) / len(keys)
        assert within_binomial(xgb_share, 0.8, len(keys)), xgb_share

        code, body = mesh.operator("POST", "/api/v1/traffic", {"xgboost": 0.7, "pytorch": 0.3})
        assert code == 200 and body["acked"] is True, body
        after = one_version_per_key(await sticky_rounds(mesh.predict_url, keys, 2, seed=100))
    finally:
        code, body = mesh.operator("POST", "/api/v1/traffic", {"xgboost": 0.8, "pytorch": 0.2})
        assert code == 200, body
    moved = {k: (before[k], after[k]) for k in keys if before[k] != after[k]}
    # Only xgboost keys move, to pytorch: pytorch's keys keep their model when its share grows.
    assert all(b == "xgboost_v1" and a == "pytorch_v1" for b, a in moved.values()), moved
    moved_share = len(moved) / len(keys)
    # A fresh random draw would move 0.8*0.3 + 0.2*0.7 = 38 % of the keys; the weight step is 10 %.
    assert moved_share > 0 and within_binomial(moved_share, 0.1, len(keys)), moved_share
    xgb_after = sum(v.startswith("xgboost") for v in after.values()) / len(keys)
    assert within_binomial(xgb_after, 0.7, len(keys)), xgb_after
    print(f"sticky: {len(keys)} keys x {STICKY_ROUNDS} at 80/20 -> xgboost {xgb_share:.3f}; "
          f"70/30 -> xgboost {xgb_after:.3f}, moved {moved_share:.3f}")


@pytest.fixture
def slow_challenger(mesh: Mesh) -> Iterator[float]:
    """xgboost's challenger cluster re-pointed through the fault proxy with a 150 ms latency toxic."""
    delay_ms = 150
    proc = subprocess.Popen([sys.executable, "-m", "chaos.proxy", "--listen", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO_ROOT)
    try:
        assert proc.stdout is not None
        api = re.search(r"listening on (http://\S+)", proc.stdout.readline())
        assert api, "the fault proxy did not start"
        upstream = f"127.0.0.1:{mesh.port('sidecar_xgboost_challenger')}"
        code, proxy = http("POST", f"{api.group(1)}/proxies",
                           {"name": "challenger", "listen": "127.0.0.1:0", "upstream": upstream})
        assert code == 201, proxy
        code, _ = http("POST", f"{api.group(1)}/proxies/challenger/toxics",
                       {"type": "latency", "attributes": {"latency": delay_ms}})
        assert code == 200
        port = int(proxy["listen"].rsplit(":", 1)[1])
        code, body = mesh.operator("POST", "/api/v1/overrides",
                                   {"cluster": "xgboost-challenger", "host": "127.0.0.1", "port": port})
        assert code == 200 and body["acked"] is True, body
        # The challenger really is slow now (straight through the proxy, no mirror involved).
        t0 = time.perf_counter()
        code, body = http("POST", f"http://127.0.0.1:{port}/api/v1/predict", SEED_TXN)
        assert code == 200 and body["model_version"] == "xgboost_v2", body
        assert time.perf_counter() - t0 >= delay_ms / 1000
        yield delay_ms / 1000
    finally:
        mesh.operator("DELETE", "/api/v1/overrides/xgboost-challenger")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


async def test_shadow_mirrors_the_fraction_and_never_delays_the_client(mesh: Mesh,
                                                                       slow_challenger: float) -> None:
    code, body = mesh.operator("POST", "/api/v1/shadow", {"model": "xgboost", "fraction": 0.5})
    assert code == 200 and body["acked"] is True, body
    n = 400
    payloads = with_request_ids("shadow", n)
    try:
        async with RecordTap(mesh.settings.nats_url, ["mesh.predictions.>", "mesh.shadow.xgboost"]) as tap:
            plan = LoadPlan(url=mesh.predict_url, rate=100, duration=n / 100, transport="http1")
            result = await LoadEngine(plan, payloads).run()
            await tap.settle(quiet_s=slow_challenger + 0.5)
    finally:
        code, _ = mesh.operator("DELETE", "/api/v1/shadow")
        assert code == 200
    assert result.ok == n, result.by_status
    assert result.by_model_type.get("conservative_default", 0) == 0
    # The client never waits for the mirror: p50 far below the challenger's 150 ms.
    assert result.latency_ms["p50"] < slow_challenger * 1000 / 3, result.latency_ms

    sent = {f"shadow-{i}" for i in range(n)}
    primary = [r for r in tap.records["mesh.predictions.>"] if r.request_id in sent]
    shadow = [r for r in tap.records["mesh.shadow.xgboost"] if r.request_id in sent]
    assert {r.request_id for r in primary} == sent and not any(r.shadow for r in primary)
    shadow_ids = {r.request_id for r in shadow}
    assert len(shadow_ids) == len(shadow)  # one mirror per request at most
    fraction = len(shadow_ids) / n
    assert abs(fraction - 0.5) <= 0.1, fraction  # binomial sd 0.025 at n = 400
    assert all(r.shadow and r.slot == "challenger" and r.model_version == "xgboost_v2" for r in shadow)
    assert all(r.intended is None or r.intended in ("xgboost", "pytorch") for r in shadow)


def test_hot_swap_under_load_fails_nothing(mesh: Mesh) -> None:
    server = f"http://127.0.0.1:{mesh.port('xgboost')}"
    admin = f"{server}/admin/reload"
    swaps: list[tuple[int, object]] = []

    def scored() -> float:
        _, text = http("GET", f"{server}/metrics")
        return sum(float(line.rsplit(" ", 1)[1]) for line in str(text).splitlines()
                   if line.startswith("model_server_predictions_total{"))

    def swap() -> None:
        # Swap once the load is flowing through v1 (a fixed delay raced a slow-starting load on a
        # busy box: every answer came from v2), with a deadline so a stalled load still swaps.
        before, deadline = scored(), time.monotonic() + 5.0
        while scored() < before + 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        swaps.append(http("POST", admin, {"slot": "champion", "version": "2"}))

    timer = threading.Thread(target=swap)
    timer.start()
    try:
        result = closed_load(mesh, duration=3.0, concurrency=16)
    finally:
        timer.join()
        back = http("POST", admin, {"slot": "champion"})  # follow the champion alias again
    assert swaps and swaps[0][0] == 200, swaps
    assert swaps[0][1]["previous"] == "1" and swaps[0][1]["current"] == "2"  # type: ignore[index]
    assert back[0] == 200 and back[1]["current"] == "1", back
    assert result.errors == 0 and result.ok == result.responses > 500, result.by_status
    assert result.by_fallback_reason == {"none": result.ok}
    versions = result.by_model_version
    assert versions.get("xgboost_v1", 0) > 0 and versions.get("xgboost_v2", 0) > 0, versions


def test_sidecars_switch_off_and_answers_stay_the_same(mesh: Mesh) -> None:
    bodies = [json.loads(p.body) for p in with_request_ids("sidecar", 20)]
    mesh.operator("POST", "/api/v1/traffic", {"xgboost": 1.0, "pytorch": 0.0})

    def answers() -> list[dict[str, object]]:
        out = []
        for b in bodies:
            code, body = http("POST", mesh.predict_url, b)
            assert code == 200, body
            out.append({k: v for k, v in body.items() if k != "latency_ms"})
        return out

    def restart_control_plane(sidecars: str, endpoint: int) -> None:
        mesh.kill("control-plane", sig=signal.SIGTERM)
        mesh.up("--only", "control-plane", env={"MESH_SIDECARS": sidecars})
        wait_for(lambda: mesh.edge_endpoint("xgboost") == endpoint, 20, f"the edge to use port {endpoint}")

    sidecar_rq = "http.ingress.downstream_rq_total"
    try:
        assert mesh.edge_endpoint("xgboost") == mesh.port("sidecar_xgboost")
        through_sidecars = answers()
        restart_control_plane("0", mesh.port("xgboost"))
        before = mesh.envoy_stat("sidecar_admin_xgboost", sidecar_rq)
        direct = answers()
        assert mesh.envoy_stat("sidecar_admin_xgboost", sidecar_rq) == before  # the sidecar saw none
        assert direct == through_sidecars
        assert {a["routed_to"] for a in direct} == {"xgboost"}
    finally:
        restart_control_plane("1", mesh.port("sidecar_xgboost"))
        mesh.operator("POST", "/api/v1/traffic", {"xgboost": 0.8, "pytorch": 0.2})


def wait_for_xgboost_back(mesh: Mesh) -> None:
    """Traffic returns to xgboost once its outlier ejection ends (automation stays frozen)."""
    def back() -> bool:
        r = closed_load(mesh, requests=200, concurrency=4)
        return r.ok == 200 and share(r, "routed_to", "xgboost") >= 0.7 and \
            r.by_fallback_reason.get("none", 0) >= 190
    wait_for(back, 60, "traffic to return to xgboost", every=1.0)


def test_sigkill_primary_under_50_concurrent_requests(mesh: Mesh) -> None:
    killer = threading.Timer(1.0, lambda: mesh.kill("xgboost"))
    killer.start()
    try:
        result = closed_load(mesh, duration=3.5, concurrency=50)
    finally:
        killer.join()
    assert result.errors == 0 and result.ok == result.responses, (result.by_status, result.by_error)
    defaults = result.by_model_type.get("conservative_default", 0)
    assert defaults <= math.floor(0.005 * result.ok), result.by_model_type
    # Requests meant for xgboost were answered by pytorch, saying why.
    assert result.by_fallback_reason.get("xgboost_unavailable", 0) > 0, result.by_fallback_reason
    assert set(result.by_fallback_reason) <= {"none", "xgboost_unavailable"}
    assert set(result.by_model_type) <= {"xgboost", "pytorch", "conservative_default"}

    out = mesh.up()  # restarts what is dead: the xgboost server only
    assert re.search(r"xgboost\s+ready in", out) and re.search(r"pytorch\s+already running", out), out
    wait_for_xgboost_back(mesh)


def test_every_tier_down_heuristic_then_conservative_default(mesh: Mesh) -> None:
    try:
        mesh.kill("xgboost", "pytorch")
        result = closed_load(mesh, requests=300, concurrency=8)
        assert result.ok == 300, result.by_status
        assert result.by_model_type == {"heuristic": 300} and result.by_routed_to == {"heuristic": 300}
        assert result.by_fallback_reason == {"ml_models_unavailable": 300}

        mesh.kill("heuristic")
        result = closed_load(mesh, requests=300, concurrency=8)
        assert result.ok == 300 and result.errors == 0, result.by_status
        assert result.by_model_type == {"conservative_default": 300}
        code, body = http("POST", mesh.predict_url, SEED_TXN)
        assert code == 200 and set(body) == SEED_FIELDS, body
        assert body["is_fraud"] is True and body["fraud_probability"] == 1.0
        assert body["model_type"] == "conservative_default" and body["fallback_reason"]
        assert isinstance(body["latency_ms"], int | float)
    finally:
        mesh.up()
    wait_for_xgboost_back(mesh)


def test_nats_down_predictions_still_served_and_drops_counted(mesh: Mesh) -> None:
    def dropped() -> float:
        return mesh.server_metric("xgboost", "model_server_prediction_log_records_total",
                                  {"outcome": "dropped"})

    before = dropped()
    mesh.kill("nats")
    try:
        served = 0
        # The bus keeps 256 batches (one per 50 ms flush) before it drops: about 13 s of traffic.
        deadline = time.monotonic() + 40
        while True:
            result = closed_load(mesh, duration=1.0, concurrency=2)
            assert result.ok == result.responses and result.errors == 0, result.by_status
            assert result.by_model_type.get("conservative_default", 0) == 0
            served += result.ok
            if dropped() > before:
                break
            assert time.monotonic() < deadline, "no dropped prediction records counted"
        assert served > 0
    finally:
        mesh.up()
    # NATS is back: prediction records flow again.
    payloads = fixed_payloads([SEED_TXN], {"x-request-id": "after-nats"})

    async def flowing() -> bool:
        async with RecordTap(mesh.settings.nats_url, ["mesh.predictions.>"]) as tap:
            await LoadEngine(LoadPlan(url=mesh.predict_url, requests=20, concurrency=1,
                                      transport="http1"), payloads).run()
            await tap.settle()
        return any(r.request_id == "after-nats" for r in tap.records["mesh.predictions.>"])

    wait_for(lambda: asyncio.run(flowing()), 30, "prediction records on NATS after the restart", every=0.5)
