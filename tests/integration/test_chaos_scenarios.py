"""Every built-in chaos experiment, shortened, against one real mesh (trained models, Envoy, NATS,
fault proxy); a violated hypothesis fails `meshctl chaos run`; runs started over the operator API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.mesh_support import free_port_env

pytestmark = pytest.mark.integration

SCALE = "0.4"
# Every built-in experiment; the fault ones run here, each shortened, on this module's mesh.
# The model-lifecycle ones need labelled traffic, the retrain worker and minutes of canary: they
# run at full length on test_self_healing.py's mesh (with its shortened loop knobs), not again here.
SELF_HEALING = ["drift-retrain-promote", "bad-canary-rollback"]
BUILTINS = ["primary-killed", "ml-servers-down", "everything-down", "latency-spike", "bandwidth-throttle",
            "flapping", "control-plane-down", "nats-down", *SELF_HEALING]
FAULTS = [name for name in BUILTINS if name not in SELF_HEALING]


def _meshctl(env: dict[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meshctl", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    home = tmp_path_factory.mktemp("chaos") / "mesh"
    env = {**os.environ, **free_port_env(), "MESH_HOME": str(home)}
    trained = _meshctl(env, "train", "--rows", "5000")
    assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-2000:]
    try:
        up = _meshctl(env, "up", "--detach")
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        assert "chaos-proxy" in up.stdout
        yield env
    finally:
        _meshctl(env, "down", timeout=60)


def _api(env: dict[str, str], method: str, path: str, body: Any = None) -> tuple[int, Any]:
    url = f"http://127.0.0.1:{env['MESH_PORT_OPERATOR']}{path}"
    token = (Path(env["MESH_HOME"]) / "operator-token").read_text().strip()
    data = None if body is None else json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def test_list(mesh: dict[str, str]) -> None:
    out = _meshctl(mesh, "chaos", "list", "--json")
    assert out.returncode == 0, out.stderr
    assert sorted(e["name"] for e in json.loads(out.stdout)["experiments"]) == sorted(BUILTINS)


@pytest.mark.parametrize("name", FAULTS)
def test_builtin_scenario_passes(mesh: dict[str, str], name: str) -> None:
    out = _meshctl(mesh, "chaos", "run", name, "--duration-scale", SCALE, "--json")
    report = json.loads(out.stdout) if out.stdout.strip().startswith("{") else {}
    assert out.returncode == 0 and report.get("status") == "passed", \
        json.dumps(report.get("steps"), indent=1)[-4000:] + out.stderr[-2000:]
    journal = json.loads(Path(report["journal_path"]).read_text())
    assert journal["journal"]["status"] == "completed" and not journal["journal"]["deviated"]
    assert next(s for s in report["steps"] if s["phase"] == "safety-net")["status"] == "succeeded"
    assert _not_running(mesh) == []  # everything the experiment killed or stopped runs again


def test_violated_hypothesis_fails(mesh: dict[str, str], tmp_path: Path) -> None:
    doc = json.loads((Path(__file__).parents[2] / "chaos/experiments/nats-down.json").read_text())
    doc["title"] = "impossible SLO"
    doc["configuration"]["max_p99_ms"] = 0.001  # no answer is that fast
    path = tmp_path / "impossible.json"
    path.write_text(json.dumps(doc))
    out = _meshctl(mesh, "chaos", "run", str(path), "--duration-scale", SCALE)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "FAILED" in out.stdout and "steady" in out.stdout


def test_operator_api_runs_one_at_a_time_and_aborts(mesh: dict[str, str]) -> None:
    code, body = _api(mesh, "GET", "/api/v1/chaos/experiments")
    assert code == 200 and len(body["experiments"]) == len(BUILTINS)
    code, body = _api(mesh, "POST", "/api/v1/chaos/runs", {"name": "no-such"})
    assert code == 422 and body["field"] == "name"
    code, body = _api(mesh, "POST", "/api/v1/chaos/runs", {"name": "nats-down", "duration_scale": 0.4})
    assert code == 202, body
    run_id = body["run_id"]
    code, second = _api(mesh, "POST", "/api/v1/chaos/runs", {"name": "primary-killed"})
    assert code == 409 and second["run_id"] == run_id
    doc = _wait_done(mesh, run_id)
    assert doc["status"] == "passed", doc
    assert any(s["name"] == "stop-nats" for s in doc["steps"])

    code, body = _api(mesh, "POST", "/api/v1/chaos/runs", {"name": "primary-killed"})
    assert code == 202, body
    run_id = body["run_id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # abort once the fault is in
        doc = _api(mesh, "GET", f"/api/v1/chaos/runs/{run_id}")[1]
        if any(s["name"] == "kill-9-xgboost" and s["status"] == "succeeded" for s in doc.get("steps", [])):
            break
        time.sleep(0.2)
    code, body = _api(mesh, "POST", f"/api/v1/chaos/runs/{run_id}/abort")
    assert code == 202, body
    doc = _wait_done(mesh, run_id)
    assert doc["status"] == "aborted", doc
    assert _not_running(mesh) == []  # xgboost restarted by the rollbacks


def _not_running(env: dict[str, str]) -> list[str]:
    out = _meshctl(env, "status", "--json")
    assert out.returncode == 0, out.stderr
    return [s["name"] for s in json.loads(out.stdout)["services"] if not s["running"]]


def _wait_done(env: dict[str, str], run_id: str, timeout: float = 150) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    doc: dict[str, Any] = {}
    while time.monotonic() < deadline:
        code, doc = _api(env, "GET", f"/api/v1/chaos/runs/{run_id}")
        if code == 200 and doc.get("status") not in ("running", "starting"):
            return doc
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} did not finish: {doc}")
