"""`python -m control_plane`'s serve(): operator API + components + clean shutdown (no Envoy)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time

import aiohttp
from aiohttp import web

from control_plane.__main__ import serve
from control_plane.app import ControlPlane
from control_plane.store import StateStore
from data_plane.settings import Settings
from meshctl.lifecycle import child_env
from tests.unit.cp_fixtures import isolated_settings


class Probe:
    """A component that records its lifecycle and serves one route."""

    name = "probe"

    def __init__(self, cp: ControlPlane, log: list[str]) -> None:
        self.cp, self.log = cp, log

    async def start(self) -> None:
        self.log.append(f"start v{self.cp.store.version}")  # the xDS core is already up

    async def stop(self) -> None:
        self.log.append("stop")

    def routes(self) -> list[web.RouteDef]:
        async def hello(request: web.Request) -> web.Response:
            return web.json_response({"component": self.name})
        return [web.get("/api/v1/probe", hello)]


def broken_factory(cp: ControlPlane) -> Probe:
    raise RuntimeError("this component cannot be built")


async def test_serve_runs_components_and_shuts_down_cleanly(settings: Settings) -> None:
    s = isolated_settings(settings)
    events: list[str] = []
    stop = asyncio.Event()
    task = asyncio.create_task(serve(s, stop, factories=[broken_factory, lambda cp: Probe(cp, events)]))
    base = f"http://{s.host}:{s.ports.operator}"
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            try:
                async with session.get(f"{base}/api/v1/probe") as resp:
                    assert resp.status == 200 and await resp.json() == {"component": "probe"}
                    break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
        else:
            raise AssertionError("the operator API did not come up")
        async with session.get(f"{base}/health") as resp:
            assert (await resp.json())["control_plane"]["up"] is True
    stop.set()
    await asyncio.wait_for(task, 10)
    assert events == ["start v1", "stop"]
    store = StateStore(s)
    store.lock()  # released by the shutdown
    store.unlock()
    assert s.operator_token_file.stat().st_mode & 0o777 == 0o600


def test_a_taken_operator_port_fails_fast_naming_the_variable(settings: Settings) -> None:
    s = isolated_settings(settings)
    with socket.socket() as holder:
        holder.bind((s.host, s.ports.operator))
        holder.listen()
        env = {**os.environ, **child_env(s), "MESH_PORT_NATS": "1"}
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "control_plane"], env=env, capture_output=True,
                              text=True, timeout=60, check=False)
    assert proc.returncode == 1
    assert time.monotonic() - t0 < 20
    assert f"operator {s.ports.operator} = MESH_PORT_OPERATOR" in proc.stderr
    assert "Traceback" not in proc.stderr
    store = StateStore(s)
    store.lock()  # nothing was left holding the state
    store.unlock()
