"""The push benchmark runs end to end at toy size (real Envoys, simulated clients, gRPC floor)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench._report import RESULTS
from data_plane.settings import REPO_ROOT

pytestmark = pytest.mark.integration


def test_bench_xds_toy_run_reports_every_scenario() -> None:
    out = RESULTS / "xds-smoke.json"
    proc = subprocess.run([sys.executable, "-m", "bench.bench_xds", "--streams", "12", "--procs", "2",
                           "--pushes", "3", "--topic", "xds-smoke"], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    out.unlink()
    scenarios = {(r["scenario"].split(":")[0], r["push"]) for r in rows}
    assert scenarios == {("reference", "weights"), ("reference", "full"), ("a", "weights"), ("a", "full"),
                         ("b", "weights"), ("b", "full"), ("floor", "1 message")}
    for r in rows:
        assert r["p99_push_ack_ms"] > 0 and r["cpu_ms_per_push"] > 0
    real = next(r for r in rows if r["scenario"].startswith("a") and r["push"] == "weights")
    assert real["streams"] == 4 and real["responses_per_push"] == 1  # RDS to the edge only
