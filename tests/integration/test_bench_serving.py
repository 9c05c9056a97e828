"""The serving benchmark's own parts: the fixed-JSON reference server and the direct_response Envoy."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from bench.fixed_json_server import BODY
from bench.serving_mesh import SEED_BODY, SEED_FIELDS_BODY, direct_response_bootstrap
from control_plane.xds import validate_bootstrap
from data_plane.netutil import free_port, wait_for_port
from data_plane.procs import envoy
from data_plane.settings import REPO_ROOT

pytestmark = pytest.mark.integration


def post(url: str) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=SEED_BODY, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.status, resp.read()


@pytest.mark.parametrize("workers", [1, 2])
def test_fixed_json_server_answers_the_seed_shape_and_stops_on_sigterm(workers: int) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.fixed_json_server", "--port", str(port),
                             "--workers", str(workers)], cwd=REPO_ROOT)
    try:
        assert wait_for_port("127.0.0.1", port, timeout=20)
        for _ in range(4 * workers):
            status, body = post(f"http://127.0.0.1:{port}/api/v1/predict")
            assert status == 200 and body == BODY
        assert set(json.loads(BODY)) == {"fraud_probability", "is_fraud", "model_version", "model_type",
                                         "latency_ms", "routed_to", "fallback_reason"}
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as resp:
            assert resp.status == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_direct_response_envoy_answers_by_itself(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "direct.json"
    config.write_text(json.dumps(direct_response_bootstrap(port, free_port(), SEED_FIELDS_BODY)))
    validate_bootstrap(config)
    proc = envoy(config, tmp_path / "envoy.log", base_id=port, concurrency=1).start()
    try:
        proc.wait_port("127.0.0.1", port, timeout=30)
        deadline = time.monotonic() + 10
        while True:
            try:
                status, body = post(f"http://127.0.0.1:{port}/api/v1/predict")
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert status == 200 and body == SEED_FIELDS_BODY
    finally:
        proc.stop()
