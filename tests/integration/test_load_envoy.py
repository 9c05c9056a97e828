"""The load engine's transports against a real Envoy (proxying, direct responses, its own 503s)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from data_plane.load import LoadEngine, LoadPlan, synthetic_payloads
from data_plane.load.envoy_target import bootstrap
from data_plane.netutil import free_port
from data_plane.procs import envoy
from data_plane.settings import REPO_ROOT

pytestmark = pytest.mark.integration
PAYLOADS = synthetic_payloads(seed=5, count=64)


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """(Envoy base URL, upstream port) with the calibration target behind Envoy."""
    tmp = tmp_path_factory.mktemp("envoy")
    upstream = subprocess.Popen([sys.executable, "-m", "data_plane.load.calibration_target", "--port", "0"],
                                stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    line = upstream.stdout.readline() if upstream.stdout else ""
    assert line.startswith("ready "), line
    up_port = int(line.split()[1])
    listen = free_port()
    cfg = tmp / "bootstrap.json"
    cfg.write_text(json.dumps(bootstrap(listen, free_port(), up_port, free_port())))
    proxy = envoy(cfg, Path(tmp / "envoy.log"), concurrency=1).start()
    try:
        proxy.wait_port("127.0.0.1", listen)
        yield f"http://127.0.0.1:{listen}", up_port
    finally:
        proxy.stop()
        upstream.send_signal(signal.SIGTERM)
        upstream.wait(timeout=10)


async def _upstream_stats(port: int) -> dict:
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/stats") as r:
        return await r.json()


@pytest.mark.parametrize("transport", ["aiohttp", "http1"])
async def test_counts_through_envoy_match_the_upstream(edge: tuple[str, int], transport: str) -> None:
    base, up_port = edge
    before = await _upstream_stats(up_port)
    plan = LoadPlan(url=f"{base}/api/v1/predict", concurrency=4, requests=600, transport=transport)
    result = await LoadEngine(plan, PAYLOADS).run()
    after = await _upstream_stats(up_port)
    assert result.responses == result.sent == 600 and result.errors == 0, result.to_dict()
    assert after["requests"] - before["requests"] == 600
    routed = {k: v - before["by_routed_to"].get(k, 0) for k, v in after["by_routed_to"].items()}
    assert result.by_routed_to == {k: v for k, v in routed.items() if v}


@pytest.mark.parametrize("transport", ["aiohttp", "http1"])
async def test_envoy_direct_and_local_503_answers_are_counted(edge: tuple[str, int], transport: str) -> None:
    base, _ = edge
    direct = await LoadEngine(LoadPlan(url=f"{base}/direct", concurrency=4, requests=400,
                                       transport=transport), PAYLOADS).run()
    assert direct.by_status == {"200": 400} and direct.by_routed_to == {"envoy-direct": 400}
    dead = await LoadEngine(LoadPlan(url=f"{base}/dead", rate=100, duration=1, transport=transport),
                            PAYLOADS).run()
    assert dead.by_status == {"503": 100} and dead.errors == 0, dead.to_dict()
