"""Helpers of the end-to-end data-plane tests: a real mesh started with `meshctl`, driven over HTTP.

Everything here talks to real processes: `meshctl` subprocesses, the edge Envoy, the model servers
and NATS, on free loopback ports under a temporary MESH_HOME.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from data_plane.contracts.events import PredictionBatch, PredictionRecord
from data_plane.load import LoadPlan, LoadResult, Payload, run_load, synthetic_payloads
from data_plane.netutil import free_port
from data_plane.settings import REPO_ROOT, Ports, Settings
from meshctl.lifecycle import process_alive
from tests.mesh_support import http_json

T = TypeVar("T")
SEED_FIELDS = {"fraud_probability", "is_fraud", "model_version", "model_type", "latency_ms",
               "routed_to", "fallback_reason"}
# The seed's curl example (seed 000).
SEED_TXN = {"amount": 1500.0, "merchant_category": 7, "hour_of_day": 2, "day_of_week": 6,
            "distance_from_home": 150.0, "distance_from_last_txn": 80.0, "is_foreign": 1,
            "velocity_last_1h": 5, "velocity_last_24h": 12, "avg_amount_last_7d": 200.0,
            "card_age_days": 15}


def _gone(pid: int) -> bool:
    return not process_alive(pid)


def free_port_env() -> dict[str, str]:
    """A distinct free loopback port for every `Ports` field, as MESH_PORT_* variables."""
    used: set[int] = set()
    env = {}
    for f in fields(Ports):
        port = free_port()
        while port in used:
            port = free_port()
        used.add(port)
        env[f"MESH_PORT_{f.name.upper()}"] = str(port)
    return env


def clean_environ() -> dict[str, str]:
    """os.environ without the caller's MESH_* settings (a developer's shell must not leak in)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}


def wait_for(predicate: Callable[[], T], timeout: float, what: str, every: float = 0.1) -> T:
    """Poll until `predicate()` is truthy; returns its value or fails naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)


http = functools.partial(http_json, timeout=10)


@dataclass
class Mesh:
    """A running mesh: its environment (for `meshctl`), settings and operator token."""

    env: dict[str, str]
    settings: Settings

    @property
    def token(self) -> str:
        return self.settings.operator_token_file.read_text().strip()

    @property
    def predict_url(self) -> str:
        return f"{self.settings.edge_url}/api/v1/predict"

    def meshctl(self, *args: str, env: Mapping[str, str] | None = None,
                timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "meshctl", *args], env={**self.env, **(env or {})},
                              capture_output=True, text=True, timeout=timeout, check=False, cwd=REPO_ROOT)

    def up(self, *args: str, env: Mapping[str, str] | None = None) -> str:
        """`meshctl up --detach` (starts only what is not running); returns its output."""
        proc = self.meshctl("up", "--detach", *args, env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    def operator(self, method: str, path: str, body: Any = None,
                 token: str | None = "default") -> tuple[int, Any]:
        """An operator API call through the edge Envoy (with the operator token unless told)."""
        return http(method, f"{self.settings.edge_url}{path}", body,
                    token=self.token if token == "default" else token)

    def pid(self, service: str) -> int:
        records = json.loads((self.settings.run_dir / "services.json").read_text())["services"]
        return int(records[service]["pid"])

    def kill(self, *services: str, sig: int = signal.SIGKILL) -> None:
        """Signal services (SIGKILL by default) and wait until each is gone."""
        pids = [self.pid(s) for s in services]
        for pid in pids:
            os.kill(pid, sig)
        for service, pid in zip(services, pids, strict=True):
            wait_for(functools.partial(_gone, pid), 15, f"{service} (pid {pid}) to exit")

    def port(self, name: str) -> int:
        return int(getattr(self.settings.ports, name))

    def server_metric(self, service: str, name: str, labels: Mapping[str, str]) -> float:
        """One sample of a model server's /metrics (0 when absent)."""
        _, text = http("GET", f"http://127.0.0.1:{self.port(service)}/metrics")
        want = {f'{k}="{v}"' for k, v in labels.items()}
        total = 0.0
        for line in str(text).splitlines():
            if line.startswith(name + "{"):
                sample_labels = set(line[line.index("{") + 1:line.index("}")].split(","))
                if want <= sample_labels:
                    total += float(line.rsplit(" ", 1)[1])
        return total

    def envoy_stat(self, admin_port_name: str, stat: str) -> int:
        _, text = http("GET", f"http://127.0.0.1:{self.port(admin_port_name)}/stats?filter=^{re.escape(stat)}$")
        for line in str(text).splitlines():
            name, _, value = line.partition(": ")
            if name == stat:
                return int(value)
        return 0

    def edge_endpoint(self, cluster: str) -> int | None:
        """The port the edge Envoy sends `cluster` traffic to (from its admin /clusters)."""
        _, text = http("GET", f"http://127.0.0.1:{self.port('edge_admin')}/clusters")
        match = re.search(rf"^{re.escape(cluster)}::127\.0\.0\.1:(\d+)::cx_active", str(text), re.M)
        return int(match.group(1)) if match else None


# ---- load ----------------------------------------------------------------------------------------
def closed_load(mesh: Mesh, requests: int | None = None, duration: float | None = None,
                concurrency: int = 8, payloads: list[Payload] | None = None, seed: int = 5) -> LoadResult:
    """A bounded closed-loop run through the edge (lean http1 client)."""
    plan = LoadPlan(url=mesh.predict_url, concurrency=concurrency, requests=requests, duration=duration,
                    transport="http1", timeout=10)
    return run_load(plan, payloads or synthetic_payloads(seed=seed, count=500))


def share(result: LoadResult, key: str, value: str) -> float:
    counts: dict[str, int] = getattr(result, f"by_{key}")
    total = sum(counts.values())
    return counts.get(value, 0) / total if total else 0.0


def with_request_ids(prefix: str, count: int, seed: int = 11) -> list[Payload]:
    """`count` synthetic payloads, each carrying its own `x-request-id` (<prefix>-<n>)."""
    base = synthetic_payloads(seed=seed, count=count)
    return [Payload(p.body, {**p.headers, "x-request-id": f"{prefix}-{i}"}) for i, p in enumerate(base)]


# ---- NATS ----------------------------------------------------------------------------------------
class RecordTap:
    """Collects PredictionRecords published on NATS subjects (core subscriptions, this event loop)."""

    def __init__(self, url: str, subjects: Iterable[str]) -> None:
        self.url = url
        self.subjects = list(subjects)
        self.records: dict[str, list[PredictionRecord]] = {s: [] for s in self.subjects}
        self._nc: Any = None
        self._decode = msgspec.json.Decoder(PredictionBatch).decode

    async def __aenter__(self) -> RecordTap:
        import nats

        self._nc = await nats.connect(self.url, connect_timeout=2, max_reconnect_attempts=0)
        for subject in self.subjects:
            async def on_msg(msg: Any, into: list[PredictionRecord] = self.records[subject]) -> None:
                into.extend(self._decode(msg.data).records)
            await self._nc.subscribe(subject, cb=on_msg)
        await self._nc.flush()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._nc is not None:
            await self._nc.close()

    async def settle(self, quiet_s: float = 0.5, limit_s: float = 5.0) -> None:
        """Wait until no new record arrived for `quiet_s` (the servers flush every 50 ms)."""
        deadline = time.monotonic() + limit_s
        last = -1
        while time.monotonic() < deadline:
            n = sum(len(v) for v in self.records.values())
            if n == last:
                return
            last = n
            await asyncio.sleep(quiet_s)


def mesh_settings(home: Path, env: Mapping[str, str]) -> Settings:
    return Settings.from_env({**env, "MESH_HOME": str(home)})
