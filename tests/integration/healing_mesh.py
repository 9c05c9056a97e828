"""A real mesh for the healing tests: nats-server, `python -m control_plane` (with its healing loop),
the edge Envoy and, with sidecars, one sidecar Envoy per service, all on free ports in a temporary
MESH_HOME, in front of small upstream processes (`tests.integration.healing_upstream`) that can be
SIGKILLed and restarted in a fraction of a second. Also used by tests/data/healing/capture.py.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from control_plane.intent import SERVICES
from control_plane.xds import render_bootstrap
from data_plane.netutil import port_open
from data_plane.procs import ManagedProcess, envoy, nats_server
from data_plane.settings import REPO_ROOT, Settings
from tests.mesh_support import free_port_env, http_json

BASE_ID = 3000 + (os.getpid() % 400) * 8  # Envoy shared-memory ids apart from other test runs



def wait_for(predicate: Any, timeout: float, what: str, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class HealingMesh:
    home: Path
    sidecars: bool = True
    healing_env: dict[str, str] = field(default_factory=dict)
    nats: bool = True
    env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, ManagedProcess] = field(default_factory=dict)
    settings: Settings | None = None

    @property
    def s(self) -> Settings:
        assert self.settings is not None
        return self.settings

    @property
    def token(self) -> str:
        return self.s.operator_token_file.read_text().strip()

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> HealingMesh:
        self.env = {**os.environ, "MESH_HOME": str(self.home), **free_port_env(),
                    "MESH_SIDECARS": "1" if self.sidecars else "0", "PYTHONUNBUFFERED": "1",
                    "MESH_LOG_LEVEL": "INFO", **self.healing_env}
        self.settings = Settings.from_env(self.env)
        s = self.s
        s.ensure_home()
        try:
            if self.nats:
                self.procs["nats"] = nats_server(s.ports.nats, s.ports.nats_monitor, s.jetstream_dir,
                                                 s.log_dir / "nats.log").start()
            self.procs["control-plane"] = ManagedProcess(
                "control-plane", [sys.executable, "-m", "control_plane"], s.log_dir / "control-plane.log",
                env=self.env, cwd=REPO_ROOT).start()
            for svc in SERVICES:
                self.start_upstream(svc, wait=False)
            for proc_name, port in (("control-plane", s.ports.operator), ("control-plane", s.ports.ads)):
                self.procs[proc_name].wait_port(s.host, port, 30)
            self._start_envoy("edge", "edge", s.ports.edge_admin, s.ports.edge, 0)
            if self.sidecars:
                for i, svc in enumerate(SERVICES, start=1):
                    self._start_envoy("sidecar", f"sidecar-{svc}", getattr(s.ports, f"sidecar_admin_{svc}"),
                                      getattr(s.ports, f"sidecar_{svc}"), i)
            for svc in SERVICES:
                self.procs[svc].wait_port(s.host, getattr(s.ports, svc), 20)
            wait_for(self.all_acked, 30, "every Envoy to ACK the current version", every=0.1)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_envoy(self, role: str, node: str, admin: int, listen: int, index: int) -> None:
        s = self.s
        boot = render_bootstrap(role, node, admin, s.host, s.ports.ads, s.envoy_dir / f"{node}.yaml")
        proc = envoy(boot, s.log_dir / f"{node}.log", base_id=BASE_ID + index, concurrency=1).start()
        self.procs[node] = proc
        proc.wait_port(s.host, listen, 30)

    def stop(self) -> None:
        # The control plane first: upstreams stopping under a live reconciler would be judged sick.
        names = list(self.procs)
        for name in sorted(names, key=lambda n: (n != "control-plane", -names.index(n))):
            self.procs[name].stop(timeout=5)

    # ---- upstreams -----------------------------------------------------------------------------
    def start_upstream(self, svc: str, wait: bool = True) -> None:
        s = self.s
        port = getattr(s.ports, svc)
        proc = ManagedProcess(svc, [sys.executable, "-m", "tests.integration.healing_upstream", "--name", svc,
                                    "--port", str(port)], s.log_dir / f"upstream-{svc}.log",
                              env=self.env, cwd=REPO_ROOT).start()
        self.procs[svc] = proc
        if wait:
            proc.wait_port(s.host, port, 20)

    def kill_upstream(self, svc: str) -> float:
        """SIGKILL the upstream's process group; returns the wall-clock time of the kill."""
        proc = self.procs[svc]
        killed_at = time.time()
        os.killpg(proc.pid, signal.SIGKILL)
        assert proc.proc is not None
        proc.proc.wait(timeout=5)
        return killed_at

    def upstream_up(self, svc: str) -> bool:
        return port_open(self.s.host, getattr(self.s.ports, svc))

    def control(self, svc: str, **settings: int) -> None:
        code, body = http_json("POST", f"http://{self.s.host}:{getattr(self.s.ports, svc)}/control", settings)
        assert code == 200, body

    # ---- operator API --------------------------------------------------------------------------
    def api(self, path: str, method: str = "GET", body: Any = None) -> tuple[int, Any]:
        return http_json(method, self.s.operator_url + path, body,
                         token=self.token if method != "GET" else None)

    def status(self) -> dict[str, Any]:
        code, body = self.api("/api/v1/status")
        assert code == 200, body
        return body  # type: ignore[no-any-return]

    def all_acked(self) -> bool:
        try:
            status = self.status()
        except OSError:
            return False
        nodes = status.get("nodes", {})
        want = {"edge", *(f"sidecar-{s}" for s in SERVICES)} if self.sidecars else {"edge"}
        return set(nodes) >= want and all(nodes[n]["state"] == "ack" and nodes[n]["connected"] for n in want)

    def decisions(self, since: int = 0) -> list[dict[str, Any]]:
        code, body = self.api(f"/api/v1/decisions?since={since}&limit=1000")
        assert code == 200, body
        return body["decisions"]  # type: ignore[no-any-return]

    def health(self) -> dict[str, Any]:
        code, body = self.api("/api/v1/health/services")
        assert code == 200, body
        return body  # type: ignore[no-any-return]

    def edge_split(self) -> dict[str, int]:
        url = f"http://{self.s.host}:{self.s.ports.edge_admin}/config_dump?resource=dynamic_route_configs"
        _, dump = http_json("GET", url)
        for config in dump["configs"]:
            for vhost in config["route_config"]["virtual_hosts"]:
                for route in vhost["routes"]:
                    if route["match"].get("path") == "/api/v1/predict":
                        clusters = route["route"]["weighted_clusters"]["clusters"]
                        return {c["name"]: int(c["weight"]) for c in clusters}
        raise AssertionError("no /api/v1/predict route in the edge config")

    def log_tail(self, name: str, lines: int = 40) -> str:
        return self.procs[name].log_tail(lines)
