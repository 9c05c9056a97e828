"""Hostile-input fuzzing of the public API through the real edge Envoy, of the operator API (through
the edge and direct) and of the fault-proxy API, against ONE real mesh (small trained models,
`meshctl up --detach`, `meshctl down`).

Rule everywhere: a 4xx with a JSON message naming the problem (or a 2xx when the case happens to be
valid), never a 5xx, never a dead process. The oracle for `POST /api/v1/predict` is
`data_plane.contracts.schema.parse_transaction` (decision 002); bodies above the documented limits
get Envoy's 413. Cases come from seeded mutation generators (fuzz_support.py, >= 10k distinct for
predict, sent 16 at a time over keep-alive) and from hypothesis strategies built from
`schema.FEATURES`.
"""

from __future__ import annotations

import asyncio
import collections
import http.client
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from control_plane.intent import validate_weights
from data_plane.contracts.errors import ValidationError
from data_plane.contracts.schema import FEATURES, PREDICTION_FIELDS, error_status, parse_transaction
from data_plane.settings import Settings
from model_servers.predict import _parse_batch
from tests.integration.fuzz_support import (
    BATCH_LIMIT,
    PREDICT_LIMIT,
    Answer,
    Case,
    batch_cases,
    dumps,
    predict_cases,
    send_all,
    show,
)
from tests.mesh_support import SEED_TXN, free_port_env

pytestmark = pytest.mark.integration
PREDICT_CASES = 10_500
SEED = 20261123
SERVING = {"xgboost", "pytorch", "heuristic"}
DEFAULT_WEIGHTS = {"xgboost": 0.8, "pytorch": 0.2}


def _meshctl(env: dict[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meshctl", *args], env=env, capture_output=True,
                          text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def mesh_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    env = {**os.environ, **free_port_env(), "MESH_HOME": str(tmp_path_factory.mktemp("fuzz") / "mesh")}
    trained = _meshctl(env, "train", "--rows", "5000", "--no-progress")
    assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-2000:]
    try:
        up = _meshctl(env, "up", "--detach")
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        yield env
    finally:
        _meshctl(env, "down", timeout=90)


@pytest.fixture(scope="module")
def mesh(mesh_env: dict[str, str]) -> Settings:
    return Settings.from_env(mesh_env)


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


# ---- oracles -------------------------------------------------------------------------------------
def expected_predict(body: bytes) -> ValidationError | None:
    """The validation error decision 002 demands for `body`, None when it is a valid transaction."""
    try:
        parse_transaction(body)
    except ValidationError as err:
        return err
    except UnicodeDecodeError:  # policy: invalid UTF-8 anywhere is a malformed body
        return ValidationError("$body", "json", "the request body is not valid UTF-8")
    return None


def check_prediction(data: Any) -> str:
    if not isinstance(data, dict) or set(data) != set(PREDICTION_FIELDS):
        return f"not the seed's 7 fields: {data!r}"
    if not 0.0 <= data["fraud_probability"] <= 1.0 or not isinstance(data["is_fraud"], bool):
        return f"bad prediction values: {data!r}"
    return ""


def _names_body_limit(answer: Answer) -> bool:
    """Envoy's own 413 comes in the API's error shape (local_reply_config), not as plain text."""
    data = answer.json()
    return isinstance(data, dict) and data.get("field") == "$body" and data.get("rule") == "max_bytes"


def check_predict(case: Case, answer: Answer) -> str:
    """'' when the answer is what the API promises for `case`, else why not."""
    if answer.status >= 500 or answer.status < 0:
        return "server error / connection failure"
    if len(case.body) > PREDICT_LIMIT:
        return "" if answer.status == 413 and _names_body_limit(answer) else "expected JSON 413 (limit)"
    want = expected_predict(case.body)
    data = answer.json()
    if want is None:
        if answer.status != 200:
            return "valid transaction refused"
        return check_prediction(data)
    if answer.status != error_status(want):
        return f"expected {error_status(want)} ({want.field}/{want.rule})"
    if not isinstance(data, dict) or data.get("field") != want.field or not data.get("message"):
        return f"error body must be JSON naming {want.field!r}"
    return ""


def check_batch(case: Case, answer: Answer) -> str:
    if answer.status >= 500 or answer.status < 0:
        return "server error / connection failure"
    if len(case.body) > BATCH_LIMIT:
        return "" if answer.status == 413 and _names_body_limit(answer) else "expected JSON 413 (limit)"
    data = answer.json()
    try:
        items = _parse_batch(case.body)
    except ValidationError as err:
        ok = answer.status == error_status(err) and isinstance(data, dict) and data.get("field") == err.field
        return "" if ok else f"expected {error_status(err)} naming {err.field!r}"
    except (UnicodeDecodeError, RecursionError):  # policy: not UTF-8 / nested too deeply is malformed
        ok = answer.status == 400 and isinstance(data, dict) and data.get("field") == "$body"
        return "" if ok else "expected 400 naming '$body'"
    if answer.status != 200 or not isinstance(data, dict) or data.get("count") != len(items):
        return "expected 200 with one result per item"
    for item, result in zip(items, data["results"], strict=True):
        want = 200 if not isinstance(item, ValidationError) else error_status(item)
        if result.get("status") != want:
            return f"item {result.get('index')}: expected {want}"
    return ""


def _failures(cases: list[Case], answers: list[Answer], check: Any) -> list[str]:
    return [f"{why}: {show(c, a)}" for c, a in zip(cases, answers, strict=True) if (why := check(c, a))]


def _summary(answers: list[Answer]) -> dict[int, int]:
    return dict(sorted(collections.Counter(a.status for a in answers).items()))


# ---- slow clients ----------------------------------------------------------------------------------
async def trickle(host: str, port: int, headers_only: bool, for_s: float = 25.0) -> tuple[float, bytes]:
    """Send headers (or half of them) then one byte a second; (seconds until cut off, what came back)."""
    reader, writer = await asyncio.open_connection(host, port)
    started = time.monotonic()
    head = b"POST /api/v1/predict HTTP/1.1\r\nHost: fuzz\r\nContent-Type: application/json\r\n"
    writer.write(head if headers_only else head + b"Content-Length: 4000\r\n\r\n{")
    got = b""
    try:
        while time.monotonic() - started < for_s:
            try:
                got = await asyncio.wait_for(reader.read(4096), timeout=1.0)
                break  # an answer (408) or EOF (b"")
            except TimeoutError:
                writer.write(b"X-Slow: 1\r\n" if headers_only else b" ")
                await writer.drain()
    except (ConnectionError, OSError):
        pass
    elapsed = time.monotonic() - started
    writer.close()
    return elapsed, got


# ---- the edge ------------------------------------------------------------------------------------
def test_predict_edge_fuzz_10k_hostile_bodies_and_slow_clients(mesh: Settings) -> None:
    cases = predict_cases(SEED, PREDICT_CASES)
    assert len({(c.body, c.content_type) for c in cases}) >= 10_000

    async def scenario() -> tuple[list[Answer], list[tuple[float, bytes]], float]:
        slow = [asyncio.create_task(trickle(mesh.host, mesh.ports.edge, h)) for h in (False, True)]
        started = time.monotonic()
        answers = await send_all("POST", f"{mesh.edge_url}/api/v1/predict", cases)
        took = time.monotonic() - started
        return answers, await asyncio.gather(*slow), took

    answers, slow, took = _run(scenario())
    failures = _failures(cases, answers, check_predict)
    print(f"\npredict fuzz: {len(cases)} cases in {took:.1f}s ({len(cases) / took:.0f}/s), "
          f"statuses {_summary(answers)}, failures {len(failures)}")
    assert not failures, f"{len(failures)} of {len(cases)} cases broke the rule:\n" + "\n".join(failures[:25])
    assert sum(a.status == 200 for a in answers) > 100  # the oracle's valid cases really scored
    conservative = sum(b'"conservative_default"' in a.body for a in answers)
    assert conservative <= len(cases) // 100, f"{conservative} answers were the conservative default"
    for elapsed, got in slow:  # Envoy's request_timeout (10 s) cuts trickling clients off
        assert elapsed < 20 and (got.startswith(b"HTTP/1.1 408") or got == b""), (elapsed, got[:200])
        if got:  # with a JSON body naming the rule
            assert b"application/json" in got and b'"rule":"timeout"' in got.replace(b" ", b""), got[:400]


def test_batch_edge_fuzz(mesh: Settings) -> None:
    cases = batch_cases(SEED, 600)
    answers = _run(send_all("POST", f"{mesh.edge_url}/api/v1/predict/batch", cases, concurrency=8))
    failures = _failures(cases, answers, check_batch)
    print(f"\nbatch fuzz: {len(cases)} cases, statuses {_summary(answers)}")
    assert not failures, f"{len(failures)} of {len(cases)}:\n" + "\n".join(failures[:25])


def _json_value() -> st.SearchStrategy[Any]:
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                        st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.text(max_size=6), inner, max_size=3), max_leaves=6)


def _feature_value(spec: Any) -> st.SearchStrategy[Any]:  # uses JSON_VALUE, defined below
    lo, hi = spec.minimum, spec.maximum
    in_range = (st.integers(int(lo), int(hi)) if spec.kind is int
                else st.floats(lo, hi, allow_nan=False) | st.integers(int(lo), int(hi)))
    near = st.sampled_from([lo - 1, hi + 1, lo - 1e-9, hi * 1.0000001, -0.0, hi + 0.5, 2**53, -(2**63)])
    return st.one_of(in_range, in_range, near, JSON_VALUE)


# Built once: a recursive strategy re-created per draw is re-validated (source inspection) every time.
JSON_VALUE = _json_value()
FEATURE_VALUES = {f.name: _feature_value(f) for f in FEATURES}


@st.composite
def transaction_like(draw: st.DrawFn) -> bytes:
    """A JSON object shaped like a transaction: every field valid, out of range, of a wrong type or
    missing, plus unknown keys; written with NaN/Infinity literals when floats are not finite."""
    obj = {f.name: draw(FEATURE_VALUES[f.name]) for f in FEATURES}
    for name in draw(st.lists(st.sampled_from([f.name for f in FEATURES]), max_size=2, unique=True)):
        del obj[name]
    obj.update(draw(st.dictionaries(st.text(max_size=10), JSON_VALUE, max_size=2)))
    if draw(st.booleans()):
        obj["card_id"] = draw(st.one_of(st.text(max_size=70), JSON_VALUE))
    return dumps(obj)


_CONNECTIONS: dict[int, http.client.HTTPConnection] = {}


def _post_keepalive(port: int, path: str, body: bytes) -> Answer:
    """One request on a kept-alive connection (hypothesis runs examples one by one)."""
    conn = _CONNECTIONS.get(port)
    if conn is None:
        conn = _CONNECTIONS[port] = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return Answer(resp.status, resp.read(), resp.getheader("Content-Type", ""))
    except (OSError, http.client.HTTPException) as exc:
        conn.close()
        del _CONNECTIONS[port]
        return Answer(-1, b"", "", repr(exc))


@settings(max_examples=1000, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture, HealthCheck.large_base_example])
@given(body=transaction_like())
def test_predict_edge_hypothesis_transactions(mesh: Settings, body: bytes) -> None:
    case = Case(body, "application/json", "hypothesis")
    answer = _post_keepalive(mesh.ports.edge, "/api/v1/predict", body)
    why = check_predict(case, answer)
    assert not why, f"{why}: {show(case, answer)}"


# ---- the operator API ----------------------------------------------------------------------------
def traffic_cases(seed: int, n: int) -> list[Case]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        w: Any = dict(DEFAULT_WEIGHTS)
        pick = rng.random()
        if pick < 0.3:
            w[rng.choice(list(w))] = rng.choice([-0.1, 1.5, 1e308, -1e308, 2**64, "0.5", None, True, [],
                                                 {}, 0.3])
        elif pick < 0.45:
            unknown = ["heuristic", "XGBOOST", "xgboost ", "", "\u00e9", "x" * 500, "pytorch\u0000"]
            w[rng.choice(unknown)] = 0.0
        elif pick < 0.55:
            w = rng.choice([[], [DEFAULT_WEIGHTS], 1, "x", None, {}, {"weights": DEFAULT_WEIGHTS}])
        elif pick < 0.65:
            body = rng.choice([b'{"xgboost": NaN, "pytorch": 1}', b'{"xgboost": Infinity}',
                               b'{"xgboost": 1e999}', b"", b" ", b"{", b"\xff\xfe", b'{"xg\xffboost": 1}',
                               b"[" * 20_000 + b"]" * 20_000,
                               b'{"xgboost": 0.5, "xgboost": 0.5, "pytorch": 0.5}', b"null", b"9" * 5000])
            out.append(Case(body + b" " * rng.randrange(4), rng.choice([None, "application/json"]), "raw"))
            continue
        elif pick < 0.7:
            out.append(Case(b'{"xgboost": 1, "pad": "' + b"x" * 70_000 + b'"}', "application/json", "huge"))
            continue
        elif pick < 0.72:
            w = {"xgboost": round(rng.random(), 3)}
            w["pytorch"] = round(1 - w["xgboost"], 3)  # valid: a real change, ACKed by every Envoy
        else:
            w[rng.choice(list(w))] = round(rng.uniform(-2, 2), rng.randint(0, 6))
        out.append(Case(dumps(w), "application/json", "weights"))
    return out


def check_traffic(case: Case, answer: Answer, authorised: bool, direct: bool) -> str:
    data = answer.json()
    if answer.status >= 500 or answer.status < 0:
        return "server error / connection failure"
    if len(case.body) > 64 * 1024 and (authorised or not direct):
        # Envoy's listener-wide cap refuses before the operator API sees the token; direct, aiohttp's
        # cap applies once the token passed.
        ok = answer.status == 413 and isinstance(data, dict) and data.get("field") == "$body"
        return "" if ok else "expected 413"
    if not authorised:
        ok = answer.status == 401 and isinstance(data, dict) and data.get("field") == "Authorization"
        return "" if ok else "expected 401"
    if not case.body.strip():
        want: tuple[int, str] = (422, "$body")
    else:
        try:
            validate_weights(json.loads(case.body))
            want = (200, "")
        except ValidationError as exc:
            want = (422, exc.field)
        except (ValueError, UnicodeDecodeError, RecursionError):
            want = (400, "$body")
    if want[0] == 200:
        return "" if answer.status in (200, 202) else "valid weights refused"
    ok = (answer.status == want[0] and isinstance(data, dict) and data.get("field") == want[1]
          and bool(data.get("message")))
    return "" if ok else f"expected {want[0]} naming {want[1]!r}"


@pytest.mark.parametrize("direct", [False, True], ids=["via-edge", "direct"])
def test_operator_api_fuzz(mesh: Settings, direct: bool) -> None:
    base = f"http://{mesh.host}:{mesh.ports.operator}" if direct else mesh.edge_url
    token = mesh.operator_token_file.read_text().strip()
    cases = traffic_cases(SEED + direct, 700)
    bad_tokens = [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {token}"},
                  {"Authorization": f"Bearer {token}x"}, {"Authorization": "Bearer"}]

    async def scenario() -> tuple[list[Answer], list[Answer], list[Answer]]:
        url = f"{base}/api/v1/traffic"
        unauth = await send_all("POST", url, cases[:300], headers=random.Random(1).choice(bad_tokens))
        auth = await send_all("POST", url, cases, concurrency=4, headers={"Authorization": f"Bearer {token}"})
        rng = random.Random(SEED)
        values = ["", "-1", "0", "1", "1000", "1001", "abc", "1.5", "1e3", "9" * 30, "9" * 5000,
                  "\u0661\u0662", " 5 ", "+3", "0x10", "%00", "\u00e9", "null", "[]", "-0",
                  "4611686018427387904"]
        queries = [{k: rng.choice(values) for k in rng.sample(["since", "limit", "junk"], rng.randint(0, 3))}
                   for _ in range(300)]
        reads: list[Answer] = []
        async with aiohttp.ClientSession() as session:
            for q in queries:
                async with session.get(f"{base}/api/v1/decisions", params=q) as resp:
                    reads.append(Answer(resp.status, await resp.read(), resp.content_type))
        return unauth, auth, reads

    unauth, auth, reads = _run(scenario())
    failures = _failures(cases[:300], unauth, lambda c, a: check_traffic(c, a, False, direct))
    failures += _failures(cases, auth, lambda c, a: check_traffic(c, a, True, direct))
    for a in reads:
        data = a.json()
        good = (a.status == 200 and isinstance(data.get("decisions"), list)) or (
            a.status == 400 and data.get("field") in ("since", "limit") and data.get("message"))
        if not good:
            failures.append(f"decisions query -> {a.status} {a.body[:200]!r}")
    print(f"\noperator fuzz ({'direct' if direct else 'edge'}): traffic {_summary(auth)}, "
          f"unauthorised {_summary(unauth)}, decisions {_summary(reads)}")
    assert not failures, f"{len(failures)} broke the rule:\n" + "\n".join(failures[:25])


# ---- the fault-proxy API ---------------------------------------------------------------------------
NAMES = ["fz-a", "fz-b", "fz c", "fz-\u00e9", "fz-\U0001f4a5", "fz\u0000x", "fz-" + "n" * 300, "", "FZ-A",
         "fz-%41"]
LISTEN = ["127.0.0.1:0", "localhost:0", "[::1]:0", "0.0.0.0:0", ":0", "", "127.0.0.1:-1", "127.0.0.1:65536",
          "127.0.0.1:99999", "127.0.0.1:abc", "10.1.2.3:0", "127.0.0.1", "[::1", "127.0.0.1:0:0", 5, None]
TOXIC_TYPES = ["latency", "bandwidth", "slow_close", "timeout", "reset_peer", "slicer", "limit_data", "noop",
               "Latency", "", "nope", 3, None]
ATTRS = ["latency", "jitter", "rate", "delay", "timeout", "average_size", "size_variation", "bytes", "junk"]
ODD = [-1, 0, 2**63 - 1, -(2**63), 2**63, 1.5, 1e308, "10", True, None, [], {}, -0.0]


def proxy_api_cases(seed: int, n: int) -> list[tuple[str, str, Case]]:
    """(method, path, case) for POST /proxies, /populate, toxics and proxy updates."""
    rng = random.Random(seed)

    def proxy() -> Any:
        obj: dict[str, Any] = {"name": rng.choice(NAMES), "listen": rng.choice(LISTEN),
                               "upstream": rng.choice(["127.0.0.1:9", "::::", "", "x" * 1000, 7])}
        if rng.random() < 0.4:
            obj[rng.choice(["enabled", "Enabled", "ENABLED"])] = rng.choice([True, False, "yes", 1, None])
        if rng.random() < 0.2:
            obj[rng.choice(["toxics", "Logger", "junk"])] = rng.choice(ODD)
        if rng.random() < 0.15:
            del obj[rng.choice(list(obj))]
        return obj

    def toxic() -> Any:
        obj: dict[str, Any] = {"type": rng.choice(TOXIC_TYPES)}
        for key in rng.sample(["name", "stream", "toxicity", "attributes"], rng.randint(0, 4)):
            obj[key] = {"name": rng.choice([*NAMES[:6], 7]),
                        "toxicity": rng.choice([0, 1, 0.5, -1, 2, 1e39, "1"]),
                        "stream": rng.choice(["upstream", "downstream", "UpStream", "", "sideways", 1]),
                        "attributes": rng.choice([{rng.choice(ATTRS): rng.choice(ODD)
                                                   for _ in range(rng.randint(0, 3))}, [], "x", None])}[key]
        return obj

    out = []
    for _ in range(n):
        pick = rng.random()
        if pick < 0.3:
            method, path, obj = "POST", "/proxies", proxy()
        elif pick < 0.45:
            method, path, obj = "POST", "/populate", rng.choice([[proxy() for _ in range(rng.randint(0, 4))],
                                                                proxy(), None, [1, "x"], {}])
        elif pick < 0.75:
            method, path, obj = "POST", "/proxies/fz-base/toxics", toxic()
        elif pick < 0.85:
            toxic_name = rng.choice(["latency_downstream", "t"])
            method, path, obj = "PATCH", f"/proxies/fz-base/toxics/{toxic_name}", toxic()
        else:
            method, path, obj = rng.choice(["PATCH", "POST"]), "/proxies/fz-base", rng.choice(
                [{"enabled": rng.choice([True, False, "x"])},
                 {"upstream": rng.choice(["127.0.0.1:9", "", 1])},
                 {"listen": rng.choice(LISTEN)}, [], "x"])
        if rng.random() < 0.1:
            body = rng.choice([b"", b"{", b"\xff{}", b"[" * 20_000 + b"]" * 20_000, b'{"name": NaN}',
                               b'{"name": "x", "name": 1}', b"null", b"  \n"])
        else:
            body = dumps(obj)
        out.append((method, path, Case(body, rng.choice([None, "application/json", "text/plain"]), path)))
    return out


def test_fault_proxy_api_fuzz(mesh: Settings) -> None:
    api = f"http://{mesh.host}:{mesh.ports.chaos_api}"
    cases = proxy_api_cases(SEED, 1500)

    async def scenario() -> list[Answer]:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{api}/proxies", json={"name": "fz-base", "listen": "127.0.0.1:0",
                                                            "upstream": "127.0.0.1:9"}) as resp:
                assert resp.status == 201, await resp.text()
            answers = []
            for i in range(0, len(cases), 16):  # 16 in flight; each group may touch the same proxy
                chunk = cases[i:i + 16]
                groups = [send_all(m, f"{api}{p}", [c], concurrency=1) for m, p, c in chunk]
                answers += [a[0] for a in await asyncio.gather(*groups)]
            async with session.get(f"{api}/proxies") as resp:  # clean up what the fuzz created
                created = await resp.json()
            for name in created:
                async with session.delete(f"{api}/proxies/{name}") as resp:
                    await resp.read()
            async with session.get(f"{api}/version") as resp:
                assert resp.status == 200
        return answers

    answers = _run(scenario())
    failures = []
    for (method, path, case), a in zip(cases, answers, strict=True):
        data = a.json()
        if a.status >= 500 or a.status < 0:
            failures.append(f"{method} {path}: server error: {show(case, a)}")
        elif a.status >= 400 and not (isinstance(data, dict) and data.get("status") == a.status
                                      and data.get("error")):
            failures.append(f"{method} {path}: error without a JSON message: {show(case, a)}")
    print(f"\nfault proxy fuzz: {len(cases)} cases, statuses {_summary(answers)}")
    assert not failures, f"{len(failures)} broke the rule:\n" + "\n".join(failures[:25])


# ---- afterwards: nothing died ----------------------------------------------------------------------
def test_every_process_alive_and_a_normal_prediction_works(mesh: Settings, mesh_env: dict[str, str]) -> None:
    token = mesh.operator_token_file.read_text().strip()

    async def scenario() -> tuple[Answer, Answer]:
        restore = await send_all("POST", f"{mesh.edge_url}/api/v1/traffic", [Case(dumps(DEFAULT_WEIGHTS))],
                                 headers={"Authorization": f"Bearer {token}"})
        normal = await send_all("POST", f"{mesh.edge_url}/api/v1/predict", [Case(dumps(SEED_TXN))])
        return restore[0], normal[0]

    restore, normal = _run(scenario())
    assert restore.status == 200, restore.body[:500]
    assert normal.status == 200 and not check_prediction(normal.json()), normal.body
    assert normal.json()["model_type"] in SERVING
    status = json.loads(_meshctl(mesh_env, "status", "--json", timeout=60).stdout)
    sick = [svc["name"] for svc in status["services"] if not (svc["running"] and svc["healthy"])]
    assert not sick, f"not running/healthy after the fuzz: {sick}"
    assert len(status["services"]) >= 11  # nats, control plane, edge, 3 servers + sidecars, workers, proxy
