"""The serving benchmark's mesh: a real `meshctl up` under a temp MESH_HOME, driven over its APIs.

One mesh serves every configuration the benchmark compares, switched through the operator API
(each switch is one xDS push the Envoys ACK), so the rounds can interleave them:
- the xgboost model server scores real ONNX models from MLflow (champion + a challenger);
- the pytorch slot's port is held by `bench.fixed_json_server` (the same aiohttp + uvloop stack
  answering constant JSON): with weights {pytorch: 1} the request takes exactly the full path's
  route (edge -> chain -> sidecar -> aiohttp) but does no work at the end;
- `override(cluster, port)` re-points a cluster at the server itself, skipping its sidecar;
- a static Envoy with the edge's worker count answers `direct_response` (Envoy's own floor).
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from data_plane.netutil import free_port
from data_plane.procs import ManagedProcess, envoy
from data_plane.settings import REPO_ROOT, Ports, Settings
from meshctl.services import service_names
from tests.mesh_support import http_json

CLK_TCK = os.sysconf("SC_CLK_TCK")
SEED_BODY = (b'{"amount": 1500.00, "merchant_category": 7, "hour_of_day": 2, "day_of_week": 6, '
             b'"distance_from_home": 150.0, "distance_from_last_txn": 80.0, "is_foreign": 1, '
             b'"velocity_last_1h": 5, "velocity_last_24h": 12, "avg_amount_last_7d": 200.0, '
             b'"card_age_days": 15}')
EDGE_WORKERS = 2  # meshctl/services.py runs the edge with --concurrency 2
MODEL_CLUSTERS = ("xgboost", "pytorch", "heuristic", "xgboost-challenger")


_call = functools.partial(http_json, timeout=30)  # the operator API can take a while under load


def _cpu_s(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(stat[11]) + int(stat[12])) / CLK_TCK  # utime + stime


def _group_pids(pgids: Iterable[int]) -> list[int]:
    wanted = set(pgids)
    out = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[2]) in wanted:
                out.append(int(entry.name))
    return out


def direct_response_bootstrap(listen: int, admin: int, body: bytes) -> dict[str, Any]:
    """A static Envoy answering every request itself with `body` (no upstream at all)."""
    route = {"match": {"prefix": "/"},
             "direct_response": {"status": 200, "body": {"inline_string": body.decode()}}}
    hcm = {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                    "HttpConnectionManager",
           "stat_prefix": "direct", "codec_type": "AUTO",
           "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [route],
                                               "response_headers_to_add": [{"header": {
                                                   "key": "content-type", "value": "application/json"}}]}]},
           "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
               "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}
    address = {"socket_address": {"address": "127.0.0.1", "port_value": listen}}
    listener = {"name": "direct", "address": address,
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                "typed_config": hcm}]}]}
    return {"static_resources": {"listeners": [listener]},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}}}


class ServingMesh:
    """Start, configure, observe and stop the benchmark's mesh (everything on free loopback ports)."""

    def __init__(self, home: Path, fixed_workers: int = 1) -> None:
        self.home = home
        ports = {f"MESH_PORT_{f.name.upper()}": str(free_port()) for f in fields(Ports)}
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("MESH_")},
                    "MESH_HOME": str(home), "MESH_LOG_LEVEL": "WARNING", **ports}
        self.settings = Settings.from_env(self.env)
        self.fixed_workers = fixed_workers
        self.fixed: ManagedProcess | None = None
        # Experiments: extra xgboost servers with one serving choice changed (name -> process, port).
        self.variants: dict[str, tuple[ManagedProcess, int]] = {}
        self.direct: ManagedProcess | None = None
        self.direct_port = 0
        self._shadow: Mapping[str, Any] | None = None
        self._overrides: dict[str, int] = {}
        self._weights: dict[str, float] | None = None

    # ---- lifecycle -------------------------------------------------------------------------------
    def meshctl(self, *args: str, timeout: float = 600) -> str:
        proc = subprocess.run([sys.executable, "-m", "meshctl", *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout, check=False, cwd=REPO_ROOT)
        if proc.returncode != 0:
            raise RuntimeError(f"meshctl {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc.stdout

    def train(self, rows: int) -> dict[str, Any]:
        """Champions of both kinds on `rows` rows, then a second xgboost as its challenger."""
        report = json.loads(self.meshctl("train", "--rows", str(rows), "--json"))
        self.meshctl("train", "--kind", "xgboost", "--rows", "5000", "--seed", "1", "--json")
        return report  # type: ignore[no-any-return]

    def start(self) -> None:
        """The fixed-JSON server in the pytorch slot, then the rest of the mesh; automation frozen."""
        port = self.settings.ports.pytorch
        self.fixed = ManagedProcess("fixed-json", [sys.executable, "-m", "bench.fixed_json_server",
                                                   "--port", str(port), "--workers", str(self.fixed_workers)],
                                    self.home / "logs" / "fixed-json.log", cwd=REPO_ROOT).start()
        self.fixed.wait_port("127.0.0.1", port, timeout=30)
        # Only the request path (and NATS, where predictions are logged): the prediction consumers
        # (workers) and the fault proxy are not part of serving and would only add noise.
        skip = ["pytorch"] + [name for name in ("workers", "chaos-proxy") if name in service_names()]
        self.meshctl("up", "--detach", "--skip", ",".join(skip))
        # Benchmarks measure the data plane: no reconciler may move weights in the middle of a run.
        self.operator("POST", "/api/v1/freeze", {"reason": "serving benchmark"})
        self.direct_port = free_port()
        config = self.home / "envoy" / "direct-response.json"
        bootstrap = direct_response_bootstrap(self.direct_port, free_port(), SEED_FIELDS_BODY)
        config.write_text(json.dumps(bootstrap))
        self.direct = envoy(config, self.home / "logs" / "direct-response.log", base_id=self.direct_port,
                            concurrency=EDGE_WORKERS).start()
        self.direct.wait_port("127.0.0.1", self.direct_port, timeout=30)

    def start_variant(self, name: str, flags: list[str]) -> int:
        """An extra xgboost server (`bench.model_server_variant` with `flags`) on a free port."""
        from meshctl.lifecycle import child_env

        port = free_port()
        proc = ManagedProcess(
            f"variant-{name}", [sys.executable, "-m", "bench.model_server_variant", *flags, "--",
                                "--kind", "xgboost", "--port", str(port), "--challenger-port", "0"],
            self.home / "logs" / f"variant-{name}.log", env=child_env(self.settings), cwd=REPO_ROOT).start()
        self.variants[name] = (proc, port)
        proc.wait_port("127.0.0.1", port, timeout=60)
        deadline = time.monotonic() + 120
        while _call("GET", f"http://127.0.0.1:{port}/ready", timeout=2)[0] != 200:
            if time.monotonic() > deadline:
                raise RuntimeError(f"variant {name} never got ready; log {proc.log_path}")
            time.sleep(0.3)
        return port

    def stop(self) -> None:
        try:
            self.meshctl("down", "--timeout", "5", timeout=60)
        finally:
            for proc in (self.direct, self.fixed, *(p for p, _ in self.variants.values())):
                if proc is not None:
                    proc.stop(timeout=5)

    # ---- configuration through the operator API ----------------------------------------------------
    @property
    def token(self) -> str:
        return self.settings.operator_token_file.read_text().strip()

    def operator(self, method: str, path: str, body: Any = None) -> Any:
        code, answer = _call(method, f"{self.settings.operator_url}{path}", body, self.token)
        if code not in (200, 202):
            raise RuntimeError(f"{method} {path} -> {code}: {answer}")
        return answer

    def configure(self, weights: Mapping[str, float], shadow: Mapping[str, Any] | None = None,
                  overrides: Mapping[str, int] | None = None) -> None:
        """Bring the intent to this state with as few operator calls (xDS pushes) as needed."""
        overrides = dict(overrides or {})
        for cluster in [c for c in self._overrides if c not in overrides]:
            self.operator("DELETE", f"/api/v1/overrides/{cluster}")
            del self._overrides[cluster]
        for cluster, port in overrides.items():
            if self._overrides.get(cluster) != port:
                self.operator("POST", "/api/v1/overrides",
                              {"cluster": cluster, "host": "127.0.0.1", "port": port})
                self._overrides[cluster] = port
        if dict(weights) != self._weights:
            self.operator("POST", "/api/v1/traffic", dict(weights))
            self._weights = dict(weights)
        if shadow != self._shadow:
            if shadow is None:
                self.operator("DELETE", "/api/v1/shadow")
            else:
                self.operator("POST", "/api/v1/shadow", dict(shadow))
            self._shadow = shadow

    # ---- observation -----------------------------------------------------------------------------
    @property
    def predict_url(self) -> str:
        return f"{self.settings.edge_url}/api/v1/predict"

    def roles(self) -> dict[str, list[int]]:
        """The processes of the request path by role (with their children). The control plane is
        its own role: its healing loop polls in the background whatever the traffic."""
        records = json.loads((self.settings.run_dir / "services.json").read_text())["services"]
        role_of = {"control-plane": "control_plane", "xgboost": "model_server"}
        leaders: dict[str, list[int]] = {}
        for name, rec in records.items():
            role = "sidecars" if name.startswith("sidecar-") else role_of.get(name, name)
            leaders.setdefault(role, []).append(int(rec["pid"]))
        if self.fixed is not None:
            leaders["fixed_json"] = [self.fixed.pid]
        for name, (proc, _) in self.variants.items():
            leaders[f"variant_{name}"] = [proc.pid]
        if self.direct is not None:
            leaders["direct_envoy"] = [self.direct.pid]
        return {role: _group_pids(pids) for role, pids in leaders.items()}

    def cpu_by_role(self, roles: Mapping[str, list[int]]) -> dict[str, float]:
        return {role: sum(_cpu_s(p) for p in pids) for role, pids in roles.items()}

    def edge_counters(self) -> dict[str, int]:
        """upstream_rq_total per model cluster at the edge, and requests the sidecars took in."""
        p = self.settings.ports
        out = {c: 0 for c in MODEL_CLUSTERS}
        out["retries"] = 0
        _, text = _call("GET", f"http://127.0.0.1:{p.edge_admin}/stats?filter=upstream_rq_(total|retry)$")
        for line in str(text).splitlines():
            m = re.match(r"cluster\.([\w-]+)\.upstream_rq_(total|retry): (\d+)", line)
            if m and m.group(2) == "total" and m.group(1) in out:
                out[m.group(1)] = int(m.group(3))
            elif m and m.group(2) == "retry":
                out["retries"] += int(m.group(3))
        out["via_sidecars"] = 0
        for admin in (p.sidecar_admin_xgboost, p.sidecar_admin_pytorch, p.sidecar_admin_heuristic):
            _, text = _call("GET", f"http://127.0.0.1:{admin}/stats?filter=downstream_rq_total$")
            for line in str(text).splitlines():
                m = re.match(r"http\.ingress(?:_challenger)?\.downstream_rq_total: (\d+)", line)
                if m:
                    out["via_sidecars"] += int(m.group(1))
        return out

    def batching(self, port: int) -> tuple[float, float]:
        """(model calls, rows scored by them) of the model server on `port` (micro-batching)."""
        _, text = _call("GET", f"http://127.0.0.1:{port}/metrics")
        calls = rows = 0.0
        for line in str(text).splitlines():
            if line.startswith("model_server_model_calls_total{"):
                calls = float(line.rsplit(" ", 1)[1])
            elif line.startswith("model_server_model_call_rows_total{"):
                rows = float(line.rsplit(" ", 1)[1])
        return calls, rows

    def wait_answering(self, timeout: float = 60) -> None:
        """Until the edge answers the seed request from the xgboost model (registry model loaded)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code, body = _call("POST", self.predict_url, json.loads(SEED_BODY))
            if code == 200 and isinstance(body, dict) and body.get("model_type") == "xgboost":
                return
            time.sleep(0.2)
        raise RuntimeError("the edge never answered from the xgboost model")


# The direct_response body: the seed's response, byte for byte what a model server would send.
SEED_FIELDS_BODY = (b'{"fraud_probability":0.953557,"is_fraud":true,"model_version":"xgboost_v1",'
                    b'"model_type":"xgboost","latency_ms":0.312,"routed_to":"xgboost","fallback_reason":null}')
