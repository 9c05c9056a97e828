"""Chaos experiments from the operator API (the console starts them here).

    GET  /api/v1/chaos/experiments       built-in experiments [{name, title, description}]
    POST /api/v1/chaos/runs              {"name": "primary-killed", "duration_scale": 1.0, "seed": 0}
                                         -> 202 {"run_id"}; 409 while another run is active
    GET  /api/v1/chaos/runs/{id}         status, steps [{phase, name, status, detail}], verdict, journal path
    POST /api/v1/chaos/runs/{id}/abort   the method stops (SIGUSR1, chaoslib's graceful exit), rollbacks run

A run is `python -m chaos.runner` in its own session, so an experiment that stops the control plane
survives it and starts it again; its state lives in MESH_HOME/chaos/ (the runner writes it), so a
restarted control plane still answers for it. While a run is active it holds the chaos lock:
automation that must not act during an experiment (canary promotions) asks `chaos_lock_held()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

from aiohttp import web

from chaos.runner import abort_flag, active_run, list_experiments, new_run_id, read_run
from chaos.runner import chaos_lock_held as _lock_held
from control_plane.operator_api import BadRequest
from data_plane.contracts.errors import ValidationError
from data_plane.settings import REPO_ROOT, Settings

if TYPE_CHECKING:
    from control_plane.app import ControlPlane

log = logging.getLogger(__name__)
RUN_FIELDS = ("name", "duration_scale", "seed")


def chaos_lock_held(settings: Settings) -> bool:
    """True while a chaos experiment runs on this mesh (from the CLI or the API)."""
    return _lock_held(settings)


class ChaosRuns:
    """The component: starts at most one runner process and reports on runs."""

    name = "chaos"

    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp
        self.settings: Settings = cp.settings
        self._proc: asyncio.subprocess.Process | None = None
        self._proc_run: str | None = None
        self._waiter: asyncio.Task[Any] | None = None

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        # A run outlives the control plane on purpose (it may be the thing restarting it).
        if self._waiter is not None:
            self._waiter.cancel()

    def lock_held(self) -> bool:
        return chaos_lock_held(self.settings) or self._starting()

    def _starting(self) -> bool:
        """Our runner process is up and has not finished its run yet (it may still be exiting)."""
        if self._proc is None or self._proc.returncode is not None or self._proc_run is None:
            return False
        doc = read_run(self.settings, self._proc_run)
        return doc is None or doc.get("status") == "running"

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/api/v1/chaos/experiments", self.experiments),
                web.post("/api/v1/chaos/runs", self.start_run),
                web.get("/api/v1/chaos/runs/{run_id}", self.get_run),
                web.post("/api/v1/chaos/runs/{run_id}/abort", self.abort_run)]

    async def experiments(self, request: web.Request) -> web.Response:
        return web.json_response({"experiments": list_experiments()})

    async def start_run(self, request: web.Request) -> web.Response:
        body = await _body(request)
        names = [e["name"] for e in list_experiments()]
        name = body.get("name")
        if name not in names:
            raise ValidationError("name", "one_of", f"name must be one of {', '.join(names)}")
        scale = body.get("duration_scale", 1.0)
        if isinstance(scale, bool) or not isinstance(scale, int | float) or not math.isfinite(scale) \
                or not 0.05 <= scale <= 10:
            raise ValidationError("duration_scale", "range",
                                  "duration_scale must be a number from 0.05 to 10")
        seed = body.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
            raise ValidationError("seed", "range", "seed must be an integer from 0 to 2^31-1")
        held = active_run(self.settings)
        if held is not None or self._starting():
            run_id = held.get("run_id") if held else self._proc_run
            return web.json_response(
                {"error": "chaos_run_active", "field": None, "rule": "one_run_at_a_time", "run_id": run_id,
                 "message": f"chaos run {run_id} is active; wait for it or abort it"}, status=409)
        run_id = new_run_id()
        log_path = self.settings.log_dir / f"chaos-{run_id}.log"
        self.settings.log_dir.mkdir(parents=True, exist_ok=True)
        out = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "chaos.runner", name, "--run-id", run_id, "--seed", str(seed),
                "--duration-scale", str(float(scale)), cwd=str(REPO_ROOT), env=dict(os.environ),
                stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
        finally:
            os.close(out)
        self._proc_run = run_id
        self._waiter = asyncio.create_task(self._reap(self._proc))
        log.info("chaos run %s (%s) started, pid %s", run_id, name, self._proc.pid)
        return web.json_response({"run_id": run_id, "name": name, "status": "starting",
                                  "log": str(log_path)}, status=202)

    async def _reap(self, proc: asyncio.subprocess.Process) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await proc.wait()

    async def get_run(self, request: web.Request) -> web.Response:
        run_id = request.match_info["run_id"]
        doc = read_run(self.settings, run_id)
        if doc is None:
            if run_id == self._proc_run and self._starting():
                return web.json_response({"run_id": run_id, "status": "starting", "steps": []})
            raise web.HTTPNotFound(text=f"no chaos run {run_id}")
        doc.pop("journal", None)
        return web.json_response(doc)

    async def abort_run(self, request: web.Request) -> web.Response:
        run_id = request.match_info["run_id"]
        held = active_run(self.settings)
        if held is None or held.get("run_id") != run_id:
            doc = read_run(self.settings, run_id)
            if doc is None:
                raise web.HTTPNotFound(text=f"no chaos run {run_id}")
            return web.json_response({"error": "not_running", "field": None, "rule": "run_active",
                                      "message": f"run {run_id} is not running ({doc.get('status')})",
                                      "status": doc.get("status")}, status=409)
        abort_flag(self.settings, run_id).touch()
        with contextlib.suppress(ProcessLookupError):
            # SIGUSR1 is chaoslib's graceful exit: the method stops (even inside a step) and the
            # rollbacks run; SIGTERM would only fail the step that happens to be running.
            os.kill(int(held["pid"]), signal.SIGUSR1)
        return web.json_response({"run_id": run_id, "status": "aborting"}, status=202)


async def _body(request: web.Request) -> dict[str, Any]:
    import json

    raw = await request.read()
    if not raw.strip():
        raise ValidationError("$body", "required", 'send a JSON object, e.g. {"name": "primary-killed"}')
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("$body", "json", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("$body", "type", 'send a JSON object, e.g. {"name": "primary-killed"}')
    for key in body:
        if key not in RUN_FIELDS:
            raise ValidationError(key, "unknown_field", f"{key} is not a field; use {', '.join(RUN_FIELDS)}")
    return body


def chaos_component(cp: ControlPlane) -> ChaosRuns:
    """Component factory (see control_plane.components)."""
    return ChaosRuns(cp)
