"""Hostile-input generators and a bounded-concurrency sender for the fuzz suite (test_fuzz_edge.py).

Every generator is seeded (`random.Random`), so a failing case is reproduced by the same seed; the
suite prints the body of each failure. Bodies are bytes: many hostile cases are not valid JSON,
not UTF-8, or are JSON Python's encoder would never write (NaN literals, duplicate keys).
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass
from typing import Any

import aiohttp

from data_plane.contracts.schema import CARD_ID_MAX, FEATURES
from tests.mesh_support import SEED_TXN

PREDICT_LIMIT = 64 * 1024  # BuildOptions.predict_max_body: Envoy answers 413 above it
BATCH_LIMIT = 1024 * 1024  # BuildOptions.batch_max_body
JSON_CT = "application/json"
CONTENT_TYPES = (JSON_CT, JSON_CT, JSON_CT, None, "text/plain", "application/x-www-form-urlencoded",
                 "multipart/form-data; boundary=x", "application/json; charset=latin-1", "image/png",
                 "application/xml", "*/*", "application/json;;;")
NUMBER_LITERALS = ("NaN", "-NaN", "Infinity", "-Infinity", "nan", "inf", "1e308", "-1e308", "1e999",
                   "-1e999", "1e-400", "0e0", "1E2", "-0", "-0.0", "00", "01", ".5", "5.", "+1", "0x10",
                   "1_000", "9" * 20, "9" * 400, "-" + "9" * 400, "1" * 5000,
                   "123456789012345678901234567890")
WRONG_VALUES: tuple[Any, ...] = ("x", "", "1500", "2", True, False, None, [], {}, [1], {"v": 1}, 2.0, 0.5,
                                 -1, -1e-9, 1e308, -1e308, 2**63, -(2**63), 2**64, 10**30)
UNKNOWN_KEYS = ("amt", "Amount", "AMOUNT", "amount ", " amount", "hour", "__proto__", "constructor",
                "card", "card_ID", "cardId", "", "\u00e4mount", "amount\u0000", "x" * 300, "$body")
BAD_BYTES = (b"\xff", b"\xfe", b"\xc0\xaf", b"\xed\xa0\x80", b"\x80", b"\xf8\x88\x80\x80\x80", b"\x00",
             b"\xe2\x82", b"\xf0\x9f\x98")


@dataclass(frozen=True)
class Case:
    body: bytes
    content_type: str | None = JSON_CT
    kind: str = ""  # which mutation made it (for the failure report)


def dumps(obj: Any) -> bytes:
    """JSON as a client might send it (NaN/Infinity literals allowed: Python writes them)."""
    return json.dumps(obj, allow_nan=True).encode()


def _with_literal(name: str, literal: str) -> bytes:
    parts = [f'"{k}": {json.dumps(v)}' for k, v in SEED_TXN.items() if k != name]
    parts.insert(0, f'"{name}": {literal}')
    return ("{" + ", ".join(parts) + "}").encode()


def random_valid(rng: random.Random) -> dict[str, Any]:
    txn: dict[str, Any] = {}
    for f in FEATURES:
        if f.kind is int:
            txn[f.name] = rng.randint(int(f.minimum), int(f.maximum))
        else:
            txn[f.name] = rng.choice([f.minimum, f.maximum, round(rng.uniform(f.minimum, f.maximum), 3)])
    if rng.random() < 0.3:
        txn["card_id"] = "card-" + str(rng.randrange(10**9))
    return txn


def _mutate_predict(rng: random.Random) -> Case:  # one branch per mutation family
    kind = rng.choice(("valid", "boundary", "wrong_type", "literal", "missing", "unknown", "duplicate",
                       "container", "deep", "huge", "utf8", "empty", "truncate", "flip", "bom", "card_id",
                       "extra_json", "form"))
    base = random_valid(rng) if rng.random() < 0.5 else dict(SEED_TXN)
    f = rng.choice(FEATURES)
    body: bytes
    if kind == "valid":
        body = dumps(base)
    elif kind == "boundary":
        step = rng.choice((1, 0.5, 1e-9, 1e-300)) if f.kind is float else rng.choice((1, 100, 2**31))
        base[f.name] = rng.choice((f.minimum - step, f.maximum + step, f.minimum, f.maximum, -0.0))
        value = base[f.name]
        if f.kind is int and isinstance(value, float) and value.is_integer() and rng.random() < .5:
            base[f.name] = int(value)
        body = dumps(base)
    elif kind == "wrong_type":
        base[f.name] = rng.choice(WRONG_VALUES)
        body = dumps(base)
    elif kind == "literal":
        body = _with_literal(f.name, rng.choice(NUMBER_LITERALS))
    elif kind == "missing":
        for name in rng.sample(list(base), rng.randint(1, len(base))):
            del base[name]
        body = dumps(base)
    elif kind == "unknown":
        base[rng.choice(UNKNOWN_KEYS) + rng.choice(("", str(rng.randrange(1000))))] = rng.choice(WRONG_VALUES)
        body = dumps(base)
    elif kind == "duplicate":
        text = dumps(base).decode()[:-1]
        body = (text + f', "{f.name}": {json.dumps(rng.choice((*WRONG_VALUES, 1, 0)))}' + "}").encode()
    elif kind == "container":
        body = dumps(rng.choice(([base], [], 1, -1.5, "x", True, None, {"transaction": base},
                                 {"transactions": [base]}, [[base]])))
    elif kind == "deep":
        depth = rng.choice((64, 512, 1000, 5000, 10_000, 20_000, 40_000))
        open_, close = rng.choice((("[", "]"), ('{"a":', "}"), ('{"amount":', "}")))
        inner = (open_ * depth + "1" + close * depth) if open_ != "[" else "[" * depth + "]" * depth
        body = (inner if rng.random() < 0.5 else dumps(base).decode()[:-1] + f', "x": {inner}' + "}").encode()
    elif kind == "huge":
        size = rng.choice((PREDICT_LIMIT - 1, PREDICT_LIMIT, PREDICT_LIMIT + 1, 100_000, 300_000))
        text = dumps(base)
        body = text[:-1] + b" " * max(0, size - len(text)) + b"}"
    elif kind == "utf8":
        text = dumps({**base, "card_id": "c\u00e9-" + str(rng.randrange(1000))})
        at = rng.randrange(len(text) + 1)
        body = text[:at] + rng.choice(BAD_BYTES) + text[at:]
    elif kind == "empty":
        body = rng.choice((b"", b" ", b"\n\t\r ", b"\x00", b"null", b"{}", b"[]", b"\"\"", b"{"))
    elif kind == "truncate":
        text = dumps(base)
        body = text[:rng.randrange(len(text))]
    elif kind == "flip":
        buf = bytearray(dumps(base))
        for _ in range(rng.randint(1, 4)):
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        body = bytes(buf)
    elif kind == "bom":
        body = rng.choice((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")) + dumps(base)
    elif kind == "card_id":
        base["card_id"] = rng.choice(("", "x" * CARD_ID_MAX, "x" * (CARD_ID_MAX + 1),
                                      "\U0001f4b3" * CARD_ID_MAX,
                                      "\U0001f4b3" * (CARD_ID_MAX + 1), "\ud800", "a\u0000b", 12, None, ["x"],
                                      "x" * 10_000))
        body = json.dumps(base, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")
    elif kind == "extra_json":
        body = dumps(base) + rng.choice((b" " + dumps(base), b"x", b",", b"\n{}", b"// c", b"\x00"))
    else:  # form
        body = "&".join(f"{k}={v}" for k, v in base.items()).encode()
    salt = rng.randrange(10**6)
    if kind in ("valid", "boundary", "wrong_type", "missing", "unknown") and rng.random() < 0.5:
        # Make near-identical cases distinct without changing their meaning: key order / spacing.
        body = body.replace(b", ", b"," + b" " * (salt % 5), 1)
    return Case(body, rng.choice(CONTENT_TYPES), kind)


def predict_cases(seed: int, n: int) -> list[Case]:
    """`n` distinct hostile (and some valid) bodies for `POST /api/v1/predict`."""
    rng = random.Random(seed)
    seen: set[tuple[bytes, str | None]] = set()
    out: list[Case] = []
    huge = 0
    while len(out) < n:
        case = _mutate_predict(rng)
        if case.kind in ("huge", "deep") and len(case.body) > 4096:
            huge += 1
            if huge > n // 50:  # a few hundred big bodies prove the limit; more only costs time
                continue
        key = (case.body, case.content_type)
        if key not in seen:
            seen.add(key)
            out.append(case)
    return out


def batch_cases(seed: int, n: int) -> list[Case]:
    """Envelopes for `POST /api/v1/predict/batch`: items from the predict generator, bad shapes."""
    rng = random.Random(seed)
    items = [c.body for c in predict_cases(seed + 1, 400) if len(c.body) < 2048]
    out: list[Case] = []
    for _ in range(n):
        pick = rng.random()
        chosen = rng.sample(items, rng.randint(1, 8))
        if pick < 0.6:
            body = b'{"transactions": [' + b", ".join(chosen) + b"]}"
        elif pick < 0.7:
            count = rng.choice((0, 1000, 1001))
            body = dumps({"transactions": [SEED_TXN] * count})
        elif pick < 0.8:
            body = rng.choice((b"[]", b"{}", b'{"transactions": {}}', b'{"transactions": null}',
                               b'{"transactions": "x"}', b'{"transactions": [], "extra": 1}', b"",
                               b'{"Transactions": []}', b'{"transactions": [1, "x", null]}'))
        elif pick < 0.9:
            body = b'{"transactions": [' + b"[" * 20_000 + b"]" * 20_000 + b"]}"
        else:
            body = dumps({"transactions": [SEED_TXN] * 200, "pad": " " * rng.choice((10, BATCH_LIMIT))})
        out.append(Case(body + b" " * rng.randrange(3), rng.choice(CONTENT_TYPES), "batch"))
    return out


@dataclass
class Answer:
    status: int  # -1: the connection failed (error holds why)
    body: bytes
    content_type: str
    error: str = ""

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


async def send_all(method: str, url: str, cases: list[Case], concurrency: int = 16,
                   headers: dict[str, str] | None = None, limit_s: float = 30.0) -> list[Answer]:
    """Send every case over keep-alive connections, at most `concurrency` at a time, in order."""
    answers: list[Answer | None] = [None] * len(cases)
    order = iter(range(len(cases)))
    client_timeout = aiohttp.ClientTimeout(total=limit_s)
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:

        async def worker() -> None:
            for i in order:
                case = cases[i]
                hdrs = dict(headers or {})
                skip = ["Content-Type"] if case.content_type is None else []
                if case.content_type is not None:
                    hdrs["Content-Type"] = case.content_type
                try:
                    async with session.request(method, url, data=case.body, headers=hdrs,
                                               skip_auto_headers=skip) as resp:
                        answers[i] = Answer(resp.status, await resp.read(), resp.content_type)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    answers[i] = Answer(-1, b"", "", f"{type(exc).__name__}: {exc}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return [a for a in answers if a is not None]


def show(case: Case, answer: Answer) -> str:
    """One failure, short enough to read: what was sent, what came back."""
    body = case.body if len(case.body) <= 200 else case.body[:200] + b"...(%d bytes)" % len(case.body)
    return (f"[{case.kind}] ct={case.content_type!r} body={body!r} -> {answer.status} "
            f"{answer.body[:300]!r} {answer.error}")
