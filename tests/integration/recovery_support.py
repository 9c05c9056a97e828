"""Helpers for the crash/outage recovery tests and the soak: a whole mesh via `meshctl`, background
load through the edge, /proc readings (RSS), the ledger file, Prometheus text from the servers."""

from __future__ import annotations

import functools
import itertools
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from data_plane.load import LoadEngine, LoadPlan, LoadResult, synthetic_payloads
from data_plane.settings import Settings
from meshctl.lifecycle import process_alive
from tests.mesh_support import http_json
from tests.mesh_support import meshctl as meshctl  # re-exported for the tests that import it from here

# What a recovery mesh sets for its children (they inherit the environment of `meshctl up`).
MESH_KNOBS = {
    "MESH_WORKERS_STATUS_S": "0.5",
    # Retrain quickly on a few labelled rows; loose gates, so a finished run registers a version.
    "MESH_RETRAIN_MIN_LABELLED": "1000", "MESH_RETRAIN_MIN_POSITIVES": "10",
    "MESH_RETRAIN_LABEL_WAIT_S": "30", "MESH_RETRAIN_LABEL_POLL_S": "0.5",
    "MESH_RETRAIN_REFERENCE_ROWS": "5000", "MESH_RETRAIN_BUDGET_PER_HOUR": "20",
    "MESH_GATE_MIN_F1_IMPROVEMENT_PCT": "-1000", "MESH_GATE_MAX_BRIER_DEGRADATION": "1",
    "MESH_GATE_MIN_AUC": "0", "MESH_GATE_MIN_F1": "0", "MESH_GATE_RECALL_TOLERANCE": "1",
    "MESH_GATE_MAX_P99_MS": "1000",
}


http = functools.partial(http_json, down_is_zero=True)  # a killed service answers (0, reason)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def records(s: Settings) -> dict[str, dict[str, Any]]:
    """The services `meshctl up` recorded (name -> pid, start_ticks, ports, ...)."""
    return dict(json.loads((s.run_dir / "services.json").read_text())["services"])


def kill9(s: Settings, name: str) -> int:
    """SIGKILL a service's process group (an Envoy or Python server has no helpers, but be sure)."""
    pid = int(records(s)[name]["pid"])
    os.killpg(pid, signal.SIGKILL)
    wait_for(lambda: not process_alive(pid), 10, f"{name} (pid {pid}) to die")
    return pid


def xds_versions(s: Settings, admin_port: int) -> dict[str, int]:
    """The CDS/LDS/RDS versions an Envoy accepted (its *.version_text stats)."""
    code, text = http("GET", f"http://{s.host}:{admin_port}/stats?filter=version_text")
    out: dict[str, int] = {}
    if code != 200:
        return out
    for line in str(text).splitlines():
        name, _, value = line.partition(": ")
        value = value.strip().strip('"')
        if name.endswith(".version_text") and value.isdigit():
            out[name] = int(value)
    return out


def envoy_admin_ports(s: Settings) -> dict[str, int]:
    p = s.ports
    return {"edge": p.edge_admin, "sidecar-xgboost": p.sidecar_admin_xgboost,
            "sidecar-pytorch": p.sidecar_admin_pytorch, "sidecar-heuristic": p.sidecar_admin_heuristic}


def ledger_lines(s: Settings) -> list[dict[str, Any]]:
    """Every complete decision line of state/ledger.jsonl, in file order."""
    raw = (s.state_dir / "ledger.jsonl").read_bytes()
    return [json.loads(line) for line in raw.split(b"\n") if line.strip()]


def assert_ledger_contiguous(s: Settings) -> list[dict[str, Any]]:
    """seq 1..N without a gap or a repeat, decision ids unique; returns the lines."""
    lines = ledger_lines(s)
    seqs = [d["seq"] for d in lines]
    assert seqs == list(range(1, len(seqs) + 1)), f"ledger seqs not contiguous: {_gaps(seqs)}"
    ids = [d["id"] for d in lines]
    assert len(ids) == len(set(ids)), "a decision id appears twice in the ledger"
    return lines


def _gaps(seqs: list[int]) -> str:
    bad = [(a, b) for a, b in itertools.pairwise(seqs) if b != a + 1]
    return f"{len(seqs)} entries, breaks at {bad[:10]}"


def prom_values(text: str, name: str) -> dict[str, float]:
    """`name{labels} value` lines of a Prometheus text page: labels text -> value."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            labels, _, value = line.rpartition(" ")
            out[labels[len(name):]] = float(value)
    return out


def server_metrics(s: Settings, kind: str) -> str:
    code, text = http("GET", f"http://{s.host}:{getattr(s.ports, kind)}/metrics")
    assert code == 200, f"{kind} /metrics answered {code}"
    return str(text)


def rss_kib(pid: int) -> int | None:
    """VmRSS of a live process, KiB (None when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class BackgroundLoad:
    """Open-loop load through the edge in a thread (its own event loop) until `stop()`.

    Counts as a client error every request without a 2xx answer (no response at all, or a status).
    """

    def __init__(self, s: Settings, rate: float, duration: float = 1800, seed: int = 0) -> None:
        plan = LoadPlan(url=f"{s.edge_url}/api/v1/predict", rate=rate, duration=duration, timeout=5.0)
        self.engine = LoadEngine(plan, synthetic_payloads(seed=seed, count=512))
        self.result: LoadResult | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="background-load", daemon=True)

    def _run(self) -> None:
        import asyncio

        try:
            self.result = asyncio.run(self.engine.run())
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def start(self) -> BackgroundLoad:
        self._thread.start()
        wait_for(lambda: self.engine.tally.ok > 0 or self.error, 15, "the first answered request")
        return self

    def stop(self) -> LoadResult:
        self.engine.stop()
        self._thread.join(timeout=30)
        if self.error is not None:
            raise self.error
        assert self.result is not None, "the load thread did not finish"
        return self.result


def client_errors(result: LoadResult) -> int:
    """Requests without a 2xx answer."""
    non_2xx = sum(n for code, n in result.by_status.items() if not code.startswith("2"))
    return result.errors + non_2xx


CONSERVATIVE_DEFAULT = "conservative_default"  # model_type of the edge's answer when every tier failed


def closed_loop_peak(s: Settings, seconds: float = 5.0, concurrency: int = 16) -> float:
    """Requests/s a model tier answered in a short closed-loop run through the edge.

    Conservative defaults are 200s too, but cheap ones Envoy makes up when the tiers fail: counting
    them would inflate the peak exactly when the mesh is overloaded.
    """
    import asyncio

    plan = LoadPlan(url=f"{s.edge_url}/api/v1/predict", concurrency=concurrency, duration=seconds)
    result = asyncio.run(LoadEngine(plan, synthetic_payloads(seed=1, count=256)).run())
    served = result.ok - result.by_model_type.get(CONSERVATIVE_DEFAULT, 0)
    return served / max(result.elapsed_s, 1e-9)
