"""A recorded fake of the operator API at the HTTP seam, for console tests.

It serves the documented routes with the recorded payloads (tests/tui/payloads.py), keeps just
enough state that a write shows up in later reads (weights, freeze, pins, load, chaos runs), checks
the bearer token like the real API, and records every write it received so a test can assert the
exact request. `routes="today"` serves only what control_plane/operator_api.py serves today, so the
other panes meet a real aiohttp 404.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.tui import payloads

TOKEN = "test-operator-token"
TODAY = frozenset({"/health", "/api/v1/status", "/api/v1/traffic", "/api/v1/decisions",
                   "/api/v1/freeze", "/api/v1/unfreeze"})
BODY = web.RequestKey("body", object)
NODES = ("edge", "sidecar-heuristic", "sidecar-pytorch", "sidecar-xgboost")


@dataclass(frozen=True)
class Write:
    method: str
    path: str
    body: Any
    authorization: str | None


def _error(status: int, error: str, message: str, field: str | None = None,
           rule: str | None = None) -> web.Response:
    return web.json_response({"error": error, "field": field, "rule": rule, "message": message},
                             status=status)


class FakeOperatorAPI:
    """Start with `await start()` (or `start_in_thread()` for sync tests); `url` once started."""

    def __init__(self, routes: str = "all", token: str = TOKEN, port: int = 0,
                 chaos_reads_per_step: int = 1) -> None:
        self.routes = routes
        self.chaos_reads_per_step = chaos_reads_per_step
        self.token = token
        self.port = port
        self.writes: list[Write] = []
        self.reads: list[str] = []
        self.status = payloads.status()
        self.decisions = payloads.decisions()
        self.models = payloads.models()
        self.canary = payloads.canary()
        self.load = payloads.load()
        self.runs: dict[str, dict[str, Any]] = {}
        self._run_ids = itertools.count(1)
        self._fail_next: tuple[int, dict[str, Any]] | None = None
        self.overrides: dict[str, Any] = {}  # GET path -> the body to answer instead (odd shapes)
        self.read_errors: dict[str, tuple[int, dict[str, Any]]] = {}  # GET path -> (status, error body)
        self.ab = payloads.ab_stats()
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail_next_write(self, status: int, body: dict[str, Any]) -> None:
        """The next write (after the token check) answers `status` with `body`."""
        self._fail_next = (status, body)

    # ---- lifecycle ------------------------------------------------------------------------
    async def start(self) -> FakeOperatorAPI:
        self._runner = web.AppRunner(self._app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def start_in_thread(self) -> FakeOperatorAPI:
        """Serve from a background thread's own loop (sync tests: snapshots, tmux)."""
        ready = threading.Event()

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self.start())
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self.stop())
            self._loop.close()

        self._thread = threading.Thread(target=serve, name="fake-operator-api", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fake operator API did not start")
        return self

    def stop_thread(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._thread = None

    # ---- routing --------------------------------------------------------------------------
    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        routes = [
            ("GET", "/health", self._health), ("GET", "/api/v1/status", self._status),
            ("POST", "/api/v1/traffic", self._set_traffic),
            ("GET", "/api/v1/decisions", self._decisions),
            ("POST", "/api/v1/freeze", self._freeze), ("POST", "/api/v1/unfreeze", self._unfreeze),
            ("GET", "/api/v1/models", self._models),
            ("POST", "/api/v1/models/{kind}/pin", self._pin),
            ("DELETE", "/api/v1/models/{kind}/pin", self._unpin),
            ("POST", "/api/v1/retrain", self._retrain), ("GET", "/api/v1/canary", self._canary),
            ("POST", "/api/v1/canary/promote", self._promote),
            ("POST", "/api/v1/canary/rollback", self._rollback),
            ("GET", "/api/v1/drift", self._drift),
            ("GET", "/api/v1/traffic/summary", self._traffic),
            ("POST", "/api/v1/load/start", self._load_start),
            ("POST", "/api/v1/load/stop", self._load_stop), ("GET", "/api/v1/load", self._load),
            ("GET", "/api/v1/chaos/experiments", self._experiments),
            ("POST", "/api/v1/chaos/runs", self._chaos_start),
            ("GET", "/api/v1/chaos/runs/{run_id}", self._chaos_run),
            ("POST", "/api/v1/chaos/runs/{run_id}/abort", self._chaos_abort),
            ("GET", "/api/v1/ab-stats", self._ab_stats),
        ]
        for method, path, handler in routes:
            if self.routes == "all" or path in TODAY:
                app.router.add_route(method, path, handler)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.method == "GET":
            self.reads.append(request.path)
            if request.path in self.overrides:
                return web.json_response(self.overrides[request.path])
            if request.path in self.read_errors:
                status, error = self.read_errors[request.path]
                return web.json_response(error, status=status)
            try:
                return await handler(request)
            except web.HTTPNotFound:  # the real API's error middleware shape
                return _error(404, "not_found", "Not Found")
        raw = await request.read()
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError:
            return _error(400, "validation_error", "the body is not valid JSON", "$body", "json")
        auth = request.headers.get("Authorization")
        self.writes.append(Write(request.method, request.path, body, auth))
        if auth != f"Bearer {self.token}":
            return _error(401, "unauthorized", "send the operator token as `Authorization: Bearer "
                          "<token>`; it is in MESH_HOME/operator-token", "Authorization", "bearer_token")
        if self._fail_next is not None:
            (status, fail_body), self._fail_next = self._fail_next, None
            return web.json_response(fail_body, status=status)
        request[BODY] = body
        try:
            return await handler(request)
        except web.HTTPNotFound:
            return _error(404, "not_found", "Not Found")

    # ---- change responses -----------------------------------------------------------------
    def _apply(self, actor: str, action: str, reason: str, numbers: dict[str, float] | None = None,
               status: int = 200) -> web.Response:
        """Bump the snapshot version, append a decision, answer like `_change_response`."""
        version = int(self.status["version"]) + 1
        self.status["version"] = version
        self.status["last_good_version"] = version
        nodes = {n: "ack" for n in NODES}
        for node in self.status["nodes"].values():
            node.update(state="ack", acked_version=str(version), snapshot_version=str(version),
                        connected=True)
        seq = self.decisions[-1]["seq"] + 1
        decision = {"v": 1, "id": f"d{seq:04d}", "ts": payloads.T0 + 60 * seq, "seq": seq,
                    "actor": actor, "action": action, "rule": "operator_request", "reason": reason,
                    "trigger_ids": [], "numbers": numbers or {}, "xds_version": str(version),
                    "acked": True, "nodes": nodes}
        self.decisions.append(decision)
        self.status["ledger"]["last_seq"] = seq
        intent = self.status["intent"]
        body = {"status": "applied", "weights": intent["weights"],
                "effective_weights": self.status["effective_weights"], "frozen": intent["frozen"],
                "version": str(version), "acked": True, "nodes": nodes, "decision": decision}
        return web.json_response(body, status=status)

    # ---- reads ----------------------------------------------------------------------------
    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response(payloads.health())

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(self.status)

    async def _decisions(self, request: web.Request) -> web.Response:
        since = int(request.query.get("since", 0))
        limit = int(request.query.get("limit", 100))
        items = [d for d in self.decisions if d["seq"] > since][:limit]
        return web.json_response({"decisions": items, "next_since": items[-1]["seq"] if items else since,
                                  "last_seq": self.decisions[-1]["seq"]})

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response(self.models)

    async def _canary(self, request: web.Request) -> web.Response:
        return web.json_response(self.canary)

    async def _drift(self, request: web.Request) -> web.Response:
        return web.json_response(payloads.drift())

    async def _traffic(self, request: web.Request) -> web.Response:
        return web.json_response(payloads.traffic())

    async def _load(self, request: web.Request) -> web.Response:
        return web.json_response(self.load)

    async def _experiments(self, request: web.Request) -> web.Response:
        return web.json_response(payloads.experiments())

    async def _ab_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.ab)

    async def _chaos_run(self, request: web.Request) -> web.Response:
        run = self.runs.get(request.match_info["run_id"])
        if run is None:
            return _error(404, "unknown_run", f"no chaos run {request.match_info['run_id']}")
        run["_reads"] = run.get("_reads", 0) + 1
        if run["status"] == "running" and run["_reads"] % self.chaos_reads_per_step == 0:
            steps = run["steps"]  # the experiment advances one step per N reads
            current = next((s for s in steps if s["status"] != "passed"), None)
            if current is not None:
                current.update(status="passed", detail="within tolerance")
            if all(s["status"] == "passed" for s in steps):
                run.update(status="finished", verdict="passed")
        return web.json_response({k: v for k, v in run.items() if not k.startswith("_")})

    # ---- writes ---------------------------------------------------------------------------
    async def _set_traffic(self, request: web.Request) -> web.Response:
        body = request[BODY]
        if not isinstance(body, dict) or not body:
            return _error(422, "validation_error", "send a JSON object of weights", "$body", "type")
        for name, value in body.items():
            if name not in ("xgboost", "pytorch"):
                return _error(422, "validation_error", f"{name} is not a routable model", name,
                              "unknown_service")
            if not isinstance(value, int | float) or not 0 <= value <= 1:
                return _error(422, "validation_error", f"{name} weight must be between 0 and 1",
                              name, "range")
        if abs(sum(body.values()) - 1) > 1e-3:
            return _error(422, "validation_error", f"weights must sum to 1 (got {sum(body.values()):g})",
                          "$body", "sum")
        self.status["intent"]["weights"] = dict(body)
        self.status["effective_weights"] = dict(body)
        return self._apply("operator", "set_weights", "operator set the traffic split", dict(body))

    async def _set_frozen(self, request: web.Request, frozen: bool) -> web.Response:
        self.status["intent"]["frozen"] = frozen
        self.status["frozen"] = frozen
        default = "operator froze automation" if frozen else "operator unfroze automation"
        reason = (request[BODY] or {}).get("reason") or default
        return self._apply("operator", "freeze" if frozen else "unfreeze", reason)

    async def _freeze(self, request: web.Request) -> web.Response:
        return await self._set_frozen(request, True)

    async def _unfreeze(self, request: web.Request) -> web.Response:
        return await self._set_frozen(request, False)

    async def _pin(self, request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        version = str((request[BODY] or {}).get("version"))
        self.status["intent"]["pins"][kind] = version
        self.models["models"][kind]["pinned"] = version
        return self._apply("operator", "pin", f"operator pinned {kind} to version {version}")

    async def _unpin(self, request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        self.status["intent"]["pins"].pop(kind, None)
        self.models["models"][kind]["pinned"] = None
        return self._apply("operator", "unpin", f"operator unpinned {kind}")

    async def _retrain(self, request: web.Request) -> web.Response:
        return web.json_response({"request_id": "rt-0001", "model": request[BODY]["model"]}, status=202)

    async def _promote(self, request: web.Request) -> web.Response:
        model = request[BODY]["model"]
        self.canary["canary"][model].update(phase="promoted", weight=1.0)
        return self._apply("operator", "promote", f"operator promoted the {model} challenger")

    async def _rollback(self, request: web.Request) -> web.Response:
        body = request[BODY]
        self.canary["canary"][body["model"]].update(phase="rolled_back", weight=0.0)
        return self._apply("operator", "rollback", body.get("reason") or "operator rollback")

    async def _load_start(self, request: web.Request) -> web.Response:
        body = request[BODY]
        self.load.update(running=True, rate=body["rate"], duration=body["duration"],
                         scenario=body.get("scenario"), started_at=payloads.T0, sent=0, ok=0, errors=0)
        return web.json_response(self.load, status=202)

    async def _load_stop(self, request: web.Request) -> web.Response:
        self.load.update(running=False)
        return web.json_response(self.load)

    async def _chaos_start(self, request: web.Request) -> web.Response:
        if any(r["status"] == "running" for r in self.runs.values()):
            return _error(409, "chaos_locked", "a chaos experiment is already running; abort it first",
                          "name", "one_at_a_time")
        run_id = f"run-{next(self._run_ids)}"
        self.runs[run_id] = {"run_id": run_id, "name": request[BODY]["name"], "status": "running",
                             "steps": [{"name": n, "status": "pending", "detail": ""}
                                       for n in payloads.CHAOS_STEPS],
                             "verdict": None, "journal": f"/tmp/mesh/chaos/{run_id}.json"}
        return web.json_response({"run_id": run_id}, status=202)

    async def _chaos_abort(self, request: web.Request) -> web.Response:
        run = self.runs.get(request.match_info["run_id"])
        if run is None:
            return _error(404, "unknown_run", f"no chaos run {request.match_info['run_id']}")
        run.update(status="aborted", verdict="aborted")
        return web.json_response({k: v for k, v in run.items() if not k.startswith("_")})


def main() -> None:
    """`python -m tests.tui.fake_api [PORT] [all|today]`: serve the fake until interrupted (demos)."""
    import sys

    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    routes = sys.argv[2] if len(sys.argv) > 2 else "all"
    fake = FakeOperatorAPI(routes=routes, port=port)

    async def serve() -> None:
        await fake.start()
        print(f"fake operator API on {fake.url} (token {fake.token})", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await fake.stop()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
