"""Background load over the operator API: start, status, conflict, stop, validation."""

from __future__ import annotations

import asyncio
import types

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from control_plane.loadgen import BackgroundLoad
from data_plane.netutil import free_port
from data_plane.settings import Settings

ANSWER = {"fraud_probability": 0.1, "is_fraud": False, "model_version": "heuristic_v1",
          "model_type": "heuristic", "latency_ms": 0.1, "routed_to": "heuristic",
          "fallback_reason": None}


async def _edge(port: int) -> web.AppRunner:
    seen = {"n": 0}

    async def predict(request: web.Request) -> web.Response:
        await request.read()
        seen["n"] += 1
        return web.json_response(ANSWER)

    app = web.Application()
    app.router.add_post("/api/v1/predict", predict)
    app["seen"] = seen
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def test_start_status_conflict_stop(mesh_home, monkeypatch) -> None:
    port = free_port()
    monkeypatch.setenv("MESH_PORT_EDGE", str(port))
    edge = await _edge(port)
    load = BackgroundLoad(types.SimpleNamespace(settings=Settings.from_env()))  # type: ignore[arg-type]
    app = web.Application()
    app.add_routes(load.routes())
    async with TestClient(TestServer(app)) as client:
        resp = await client.post("/api/v1/load/start", json={"rate": 50, "duration": 86400})
        assert resp.status == 202 and (await resp.json())["running"] is True
        again = await client.post("/api/v1/load/start", json={"rate": 50})
        assert again.status == 409
        await asyncio.sleep(0.6)
        status = await (await client.get("/api/v1/load")).json()
        assert status["sent"] > 5 and status["errors"] == 0
        stopped = await (await client.post("/api/v1/load/stop")).json()
        assert stopped["running"] is False
    assert edge.app["seen"]["n"] > 5
    await edge.cleanup()


async def test_bad_load_requests_name_the_field(mesh_home) -> None:
    from control_plane.operator_api import errors_middleware

    load = BackgroundLoad(types.SimpleNamespace(settings=Settings.from_env()))  # type: ignore[arg-type]
    app = web.Application(middlewares=[errors_middleware])
    app.add_routes(load.routes())
    async with TestClient(TestServer(app)) as client:
        r = await client.post("/api/v1/load/start", json={"rate": -1})
        assert r.status == 422 and (await r.json())["field"] == "rate"
        r = await client.post("/api/v1/load/start", json={"scenario": "nope"})
        assert r.status == 422 and (await r.json())["field"] == "scenario"
        r = await client.post("/api/v1/load/start", data=b"{not json",
                              headers={"Content-Type": "application/json"})
        assert r.status == 400
        r = await client.post("/api/v1/load/start", json=[1, 2])
        assert r.status == 400
