"""A calibration target for the load generator: a tiny aiohttp scorer with scripted misbehaviour.

It validates each body with the real request schema and answers seed-shaped JSON whose
``routed_to`` / ``fallback_reason`` / status follow a fixed cycle, and it keeps its own counts
(``GET /stats``) so a test can compare what the generator saw with what the server sent. It can
stall its whole event loop once (``--stall-at N --stall-ms M``: a blocking sleep on the N-th
request, like a GC pause or a stuck worker), answer every K-th request slowly (``--slow-every``),
with a 503 (``--error-every``) or with ``Connection: close`` (``--close-every``), and answer in
chunked encoding (``--chunked``). The benchmarks use it as the trivial reference server.

Run: ``python -m data_plane.load.calibration_target --port 18080`` (binds 127.0.0.1 only; prints
``ready <port>`` once listening).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

from aiohttp import web

from data_plane.contracts.errors import ValidationError
from data_plane.contracts.schema import Prediction, encode, error_status, parse_transaction

# One in ten answers comes from another model, one in ten from the heuristic after a failover.
_ROUTES = (("xgboost", None, "xgboost_v3"),) * 7 + (
    ("pytorch", None, "pytorch_v2"),
    ("pytorch", None, "pytorch_v2"),
    ("heuristic", "xgboost_unavailable", "heuristic_v1"),
)


@dataclass
class TargetBehaviour:
    """How the target misbehaves (all off by default)."""

    stall_at: int = 0  # the n-th request (1-based) blocks the whole server for stall_ms
    stall_ms: float = 0.0
    slow_every: int = 0  # every k-th request waits slow_ms (without blocking others)
    slow_ms: float = 0.0
    error_every: int = 0  # every k-th request answers 503
    close_every: int = 0  # every k-th response carries `Connection: close`
    chunked: bool = False  # answer with chunked transfer encoding instead of Content-Length
    validate: bool = True


@dataclass
class TargetStats:
    requests: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    by_routed_to: Counter[str] = field(default_factory=Counter)
    by_fallback_reason: Counter[str] = field(default_factory=Counter)


_STATS = web.AppKey("stats", TargetStats)
_BEHAVIOUR = web.AppKey("behaviour", TargetBehaviour)


async def _predict(request: web.Request) -> web.StreamResponse:
    stats, how = request.app[_STATS], request.app[_BEHAVIOUR]
    body = await request.read()
    stats.requests += 1
    n = stats.requests
    started = time.perf_counter()
    if how.stall_at and n == how.stall_at:
        time.sleep(how.stall_ms / 1000.0)  # noqa: ASYNC251 - deliberately blocking: the server stalls
    if how.slow_every and n % how.slow_every == 0:
        await asyncio.sleep(how.slow_ms / 1000.0)
    if how.error_every and n % how.error_every == 0:
        stats.by_status["503"] += 1
        return web.json_response({"error": "unavailable"}, status=503)
    if how.validate:
        try:
            txn = parse_transaction(body)
        except ValidationError as exc:
            status = error_status(exc)
            stats.by_status[str(status)] += 1
            return web.json_response(exc.to_dict(), status=status)
        score = min(1.0, txn.amount / (txn.avg_amount_last_7d * 20.0 + 1.0))
    else:
        score = 0.1
    routed_to, reason, version = _ROUTES[n % len(_ROUTES)]
    reply = Prediction(fraud_probability=round(score, 6), is_fraud=score >= 0.5, model_version=version,
                       model_type=routed_to, latency_ms=round((time.perf_counter() - started) * 1e3, 3),
                       routed_to=routed_to, fallback_reason=reason)
    stats.by_status["200"] += 1
    stats.by_routed_to[routed_to] += 1
    stats.by_fallback_reason[reason or "none"] += 1
    if how.chunked:
        stream = web.StreamResponse(headers={"Content-Type": "application/json"})
        stream.enable_chunked_encoding()
        _maybe_close(stream, how, n)
        await stream.prepare(request)
        payload = encode(reply)
        half = len(payload) // 2
        await stream.write(payload[:half])
        await stream.write(payload[half:])
        await stream.write_eof()
        return stream
    resp = web.Response(body=encode(reply), content_type="application/json")
    _maybe_close(resp, how, n)
    return resp


def _maybe_close(resp: web.StreamResponse, how: TargetBehaviour, n: int) -> None:
    if how.close_every and n % how.close_every == 0:
        resp.force_close()


async def _stats(request: web.Request) -> web.Response:
    s = request.app[_STATS]
    return web.json_response({"requests": s.requests, "by_status": s.by_status,
                              "by_routed_to": s.by_routed_to,
                              "by_fallback_reason": s.by_fallback_reason})


def build_app(behaviour: TargetBehaviour | None = None) -> web.Application:
    """The target as an aiohttp app (`POST /api/v1/predict`, `GET /stats`)."""
    app = web.Application()
    app[_STATS] = TargetStats()
    app[_BEHAVIOUR] = behaviour or TargetBehaviour()
    app.router.add_post("/api/v1/predict", _predict)
    app.router.add_get("/stats", _stats)
    return app


async def serve(port: int, behaviour: TargetBehaviour) -> None:
    """Serve on 127.0.0.1:`port` until SIGTERM/SIGINT."""
    runner = web.AppRunner(build_app(behaviour), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
    await site.start()
    bound = runner.addresses[0][1]
    print(f"ready {bound}", flush=True)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    await done.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="calibration_target", description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 = any free port)")
    p.add_argument("--stall-at", type=int, default=0)
    p.add_argument("--stall-ms", type=float, default=0.0)
    p.add_argument("--slow-every", type=int, default=0)
    p.add_argument("--slow-ms", type=float, default=0.0)
    p.add_argument("--error-every", type=int, default=0)
    p.add_argument("--close-every", type=int, default=0)
    p.add_argument("--chunked", action="store_true", help="chunked responses (no Content-Length)")
    p.add_argument("--no-validate", action="store_true", help="skip schema validation (cheapest)")
    a = p.parse_args(argv)
    how = TargetBehaviour(a.stall_at, a.stall_ms, a.slow_every, a.slow_ms, a.error_every,
                          a.close_every, a.chunked, validate=not a.no_validate)
    try:
        import uvloop
        runner_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a project dependency
        runner_factory = None
    with asyncio.Runner(loop_factory=runner_factory) as r:
        r.run(serve(a.port, how))
    return 0


if __name__ == "__main__":
    sys.exit(main())
