"""Shared pieces of the real-Envoy xDS tests: stand-in upstreams, a callback recorder, the mesh.

The upstreams are aiohttp servers answering JSON that names them and the x-mesh-intended header
they received; `Mesh` publishes intents through a real SnapshotCache + AdsServer.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from control_plane.intent import RoutingIntent
from control_plane.topology import ServiceAddr, Topology
from control_plane.xds import (
    AdsServer,
    BuildOptions,
    SnapshotCache,
    XdsCallbacks,
    build_snapshots,
    render_bootstrap,
    sidecar_snapshot,
)
from data_plane.netutil import free_port
from data_plane.procs import ManagedProcess, envoy

MODEL_CLUSTERS = ("xgboost", "pytorch", "heuristic", "xgboost-challenger", "pytorch-challenger")
SEED_FIELDS = {"fraud_probability", "is_fraud", "model_version", "model_type", "latency_ms", "routed_to",
               "fallback_reason"}
BASE_ID = 1000 + (os.getpid() % 500) * 4  # distinct shared-memory ids per Envoy and per run


@dataclass
class Upstream:
    """An aiohttp server standing in for one model slot (or the operator API)."""

    name: str
    port: int
    delay: float = 0.0
    status: int = 200
    hits: Counter[str] = field(default_factory=Counter)  # by Host header suffix: "" or "-shadow"
    runner: web.AppRunner | None = None
    last_host: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        # Envoy marks a mirror by inserting "-shadow" into Host, before the port: 127.0.0.1-shadow:8000
        self.hits["-shadow" if request.host.split(":")[0].endswith("-shadow") else ""] += 1
        self.last_host = request.host
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.json_response({"routed_to": self.name, "intended": request.headers.get("x-mesh-intended"),
                                  "path": request.path}, status=self.status)

    async def start(self) -> None:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


class Recorder(XdsCallbacks):
    def __init__(self) -> None:
        self.pushes: list[tuple[str, str, str]] = []
        self.acks: list[tuple[str, str, str, float]] = []
        self.nacks: list[tuple[str, str, str, str]] = []

    def on_push(self, node: str, type_url: str, version: str, nonce: str) -> None:
        self.pushes.append((node, type_url, version))

    def on_ack(self, node: str, type_url: str, version: str, nonce: str, latency_ms: float) -> None:
        self.acks.append((node, type_url, version, latency_ms))

    def on_nack(self, node: str, type_url: str, version: str, nonce: str, error_detail: str) -> None:
        self.nacks.append((node, type_url, version, error_detail))


@dataclass
class Mesh:
    topo: Topology
    side_topo: Topology
    upstreams: dict[str, Upstream]
    cache: SnapshotCache
    server: AdsServer
    ads_port: int
    recorder: Recorder
    edge: ManagedProcess
    sidecar: ManagedProcess
    session: aiohttp.ClientSession
    version: int = 0
    sidecar_opts: BuildOptions = field(default_factory=lambda: BuildOptions(
        sidecar_max_connections=2, sidecar_max_pending=1, sidecar_max_requests=3))

    @property
    def edge_url(self) -> str:
        return f"http://127.0.0.1:{self.topo.edge_port}"

    def publish(self, intent: RoutingIntent) -> str:
        """Build and publish the next version for the edge and the sidecar; returns it."""
        self.version += 1
        snaps = build_snapshots(intent, self.topo, self.version)
        self.cache.set_snapshot("edge", snaps["edge"])
        self.cache.set_snapshot("sidecar-xgboost",
                                sidecar_snapshot("xgboost", self.side_topo, self.version, self.sidecar_opts))
        return str(self.version)

    async def publish_acked(self, intent: RoutingIntent) -> str:
        version = self.publish(intent)
        states = await self.cache.wait_acked(version, ["edge", "sidecar-xgboost"], timeout=10)
        assert states == {"edge": "ack", "sidecar-xgboost": "ack"}, states
        return version

    async def config_dump(self, admin_port: int | None = None) -> dict[str, Any]:
        port = admin_port or self.topo.edge_admin_port
        async with self.session.get(f"http://127.0.0.1:{port}/config_dump?include_eds") as r:
            assert r.status == 200
            dump = await r.json(content_type=None)
        return {c["@type"].rsplit(".", 1)[-1]: c for c in dump["configs"]}

    async def predict(self, path: str = "/api/v1/predict", body: bytes = b'{"amount": 1}',
                      headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any], Any]:
        async with self.session.post(self.edge_url + path, data=body,
                                     headers={"content-type": "application/json", **(headers or {})}) as r:
            text = await r.text()
            try:
                payload = json.loads(text)
            except ValueError:
                payload = text
            return r.status, CIMultiDict(r.headers), payload

    async def burst(self, n: int, concurrency: int = 24, after: tuple[int, asyncio.Event] | None = None,
                    **kw: Any) -> list[tuple[int, dict, Any]]:
        """`n` predictions, `concurrency` at a time; sets after[1] once after[0] have completed."""
        sem = asyncio.Semaphore(concurrency)
        done = 0

        async def one() -> tuple[int, dict, Any]:
            nonlocal done
            async with sem:
                result = await self.predict(**kw)
                done += 1
                if after is not None and done >= after[0]:
                    after[1].set()
                return result

        return await asyncio.gather(*(one() for _ in range(n)))


def topologies() -> tuple[Topology, Topology]:
    ports = {name: free_port() for name in (*MODEL_CLUSTERS, "operator")}
    services = tuple(ServiceAddr(c.split("-")[0], "challenger" if "-" in c else "champion", ports[c],
                                 None, None) for c in MODEL_CLUSTERS)
    topo = Topology("127.0.0.1", free_port(), free_port(), ports["operator"], services, sidecars=False)
    side_services = (ServiceAddr("xgboost", "champion", free_port(), free_port(), free_port()),
                     ServiceAddr("xgboost", "challenger", free_port(), free_port(), None))
    side_topo = Topology("127.0.0.1", free_port(), free_port(), ports["operator"], side_services, True)
    return topo, side_topo


async def start_envoy(role: str, node: str, admin: int, ads_port: int, tmp: Path, base_id: int,
                       listen_port: int) -> ManagedProcess:
    boot = render_bootstrap(role, node, admin, "127.0.0.1", ads_port, tmp / f"{node}.yaml")
    proc = envoy(boot, tmp / f"{node}.log", base_id=base_id, concurrency=1).start()
    await asyncio.to_thread(proc.wait_port, "127.0.0.1", listen_port, 20.0)
    return proc


