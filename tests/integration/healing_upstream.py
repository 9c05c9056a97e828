"""A small real upstream for the healing tests: `python -m tests.integration.healing_upstream`.

It answers like a model server (seed response schema, `/ready`, `/health`, `/metrics` with
`model_server_predictions_total`) without a model, so tests can start, SIGKILL and restart
"the xgboost server" in a fraction of a second. `POST /control {"delay_ms": 600}` makes every
prediction that slow (latency fault); `{"status": 503}` makes predictions fail.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from aiohttp import web

STATE = web.AppKey("state", dict)


async def predict(request: web.Request) -> web.Response:
    await request.read()
    state = request.app[STATE]
    if state["delay_ms"]:
        await asyncio.sleep(state["delay_ms"] / 1000)
    if state["status"] != 200:
        return web.json_response({"error": "injected"}, status=state["status"])
    name = state["name"]
    intended = request.headers.get("x-mesh-intended")
    fraud = state["served"] % 10 == 0  # every tenth answer says fraud: a known fraud share
    state["served"] += 1
    state["fraud" if fraud else "legit"] += 1
    return web.json_response({
        "fraud_probability": 0.9 if fraud else 0.1, "is_fraud": fraud, "model_version": f"{name}_v1",
        "model_type": name, "latency_ms": state["delay_ms"], "routed_to": name,
        "fallback_reason": None if intended in (None, name) else f"{intended}_unavailable"})


async def ready(request: web.Request) -> web.Response:
    return web.json_response({"ready": True, "kind": request.app[STATE]["name"]})


async def metrics(request: web.Request) -> web.Response:
    s = request.app[STATE]
    lines = ["# TYPE model_server_predictions_total counter"]
    for label in ("fraud", "legit"):
        lines.append(f'model_server_predictions_total{{kind="{s["name"]}",slot="champion",'
                     f'model_version="{s["name"]}_v1",prediction="{label}"}} {float(s[label])}')
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


async def control(request: web.Request) -> web.Response:
    body = json.loads(await request.read() or b"{}")
    state = request.app[STATE]
    for key in ("delay_ms", "status"):
        if key in body:
            state[key] = int(body[key])
    return web.json_response({k: state[k] for k in ("delay_ms", "status")})


def create_app(name: str) -> web.Application:
    app = web.Application()
    app[STATE] = {"name": name, "delay_ms": 0, "status": 200, "served": 0, "fraud": 0, "legit": 0}
    app.router.add_post("/api/v1/predict", predict)
    app.router.add_post("/api/v1/predict/batch", predict)
    app.router.add_get("/ready", ready)
    app.router.add_get("/health", ready)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/control", control)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(create_app(args.name), host="127.0.0.1", port=args.port, access_log=None,
                print=None, reuse_address=True)


if __name__ == "__main__":
    main()
