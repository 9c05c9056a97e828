"""bench/serving_harness.py: ceilings (wrk or engine) and open-loop latency against a real server."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from bench.serving_harness import (
    _lua_long_string,
    measure_ceiling,
    measure_open_loop,
    wrk_available,
    wrk_script,
)
from data_plane.load import LoadTargetError, synthetic_payloads
from data_plane.settings import REPO_ROOT

pytestmark = pytest.mark.integration
BODY = synthetic_payloads(seed=2, count=1)[0].body
KEYS = {"tool", "rps", "p50_ms", "p99_ms", "p99.9_ms", "max_ms", "errors", "non_2xx", "requests"}


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    proc = subprocess.Popen([sys.executable, "-m", "data_plane.load.calibration_target", "--port", "0"],
                            stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    line = proc.stdout.readline() if proc.stdout else ""
    assert line.startswith("ready "), line
    yield f"http://127.0.0.1:{int(line.split()[1])}/api/v1/predict"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)


def test_lua_literals_survive_any_body() -> None:
    assert _lua_long_string('{"a":1}') == '[[{"a":1}]]'
    assert _lua_long_string("x]]y]=]z") == "[==[x]]y]=]z]==]"
    script = wrk_script(b'{"amount":1.5}', {"card-id": "card-1"})
    assert 'wrk.method = "POST"' in script and "[[card-1]]" in script and "done = function" in script


def test_engine_ceiling_and_open_loop(url: str) -> None:
    ceiling = measure_ceiling(url, BODY, concurrency=4, duration=1.0, tool="engine")
    assert set(ceiling) >= KEYS and ceiling["tool"] == "engine"
    assert ceiling["requests"] > 200 and ceiling["errors"] == ceiling["non_2xx"] == 0
    assert ceiling["client_cpu_us_per_request"] > 0

    fixed = measure_open_loop(url, BODY, rate=300, duration=1.0)
    assert fixed["requests"] == 300 and fixed["rps"] == pytest.approx(300, rel=0.1)
    assert 0 < fixed["p50_ms"] <= fixed["p99_ms"] <= fixed["max_ms"]


@pytest.mark.skipif(not wrk_available(), reason="wrk is not installed (apt-get install -y wrk)")
def test_wrk_ceiling_posts_the_body(url: str) -> None:
    r = measure_ceiling(url, BODY, concurrency=4, duration=1.0, tool="wrk")
    assert set(r) >= KEYS and r["tool"] == "wrk"
    # The target validates bodies: all 200s proves wrk sent our JSON as a POST.
    assert r["requests"] > 200 and r["non_2xx"] == 0 and r["errors"] == 0


def test_remote_targets_are_refused() -> None:
    with pytest.raises(LoadTargetError, match="--allow-remote"):
        measure_ceiling("http://192.0.2.10/api/v1/predict", BODY, 1, 1.0)
