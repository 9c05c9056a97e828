"""Soak: a whole mesh at half its measured peak for MESH_SOAK_SECONDS (default 600), under faults.

`make soak` (pytest -m slow -k soak). One mesh (`meshctl train --rows 5000`, `meshctl up --detach`):
- the peak is measured first (a short closed-loop run through the edge); the soak runs open loop
  at 50 % of it;
- the `pytorch` cluster is re-pointed through the fault proxy (`POST /api/v1/overrides`) and its
  toxic rotates every MESH_SOAK_TOXIC_S seconds (latency, bandwidth, slow_close, reset_peer, none);
- once a minute one model server (xgboost, pytorch, heuristic in turn) gets kill -9 and
  `meshctl up --detach` starts it again.
Passes when client errors (no 2xx answer) are <= 0.01 %, no mesh process that lived through the run
grew its RSS by more than 10 % after the warm-up, the ledger has no gap, and conservative defaults
(HTTP 200s Envoy makes up when every tier of a chain failed) stay <= MESH_SOAK_MAX_DEFAULT_SHARE
(1 %): they count as answers for the client-error rule, but only one fault is on at a time (one
toxic on pytorch, at most one server restarting) and the heuristic tier has no toxic, so at half the
peak a default means the mesh was overloaded, not that the faults left no tier to answer.

Warm-up (RSS): the control plane's A/B window holds up to MESH_AB_MAX_RECORDS (100,000) predictions
and fills at the load's rate; it is bounded (unit test `test_ab_records`) but its fill is growth
that ends, so RSS is taken as the baseline only once it is full (1.2 x 100,000 / rate, at least
60 s, at most half the run). The glibc arenas of a process also keep their high-water mark after
a burst, which is not a leak either; what a leak looks like is growth that goes on, so RSS is
sampled every 10 s after the warm-up, and growth is the trend of that series (`rss_growth`: the
least-squares line's end over its start), which a sawtooth or a one-sample spike does not move.
MESH_SOAK_REPORT=<path> writes the numbers as JSON.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from data_plane.netutil import free_port
from data_plane.settings import Settings
from meshctl.lifecycle import group_members, process_start_ticks
from tests.integration.recovery_support import (
    CONSERVATIVE_DEFAULT,
    MESH_KNOBS,
    BackgroundLoad,
    assert_ledger_contiguous,
    client_errors,
    closed_loop_peak,
    http,
    kill9,
    records,
    rss_kib,
)
from tests.mesh_support import meshctl, running_mesh

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SOAK_S = float(os.environ.get("MESH_SOAK_SECONDS", "600"))
TOXIC_S = float(os.environ.get("MESH_SOAK_TOXIC_S", "15"))
MAX_DEFAULT_SHARE = float(os.environ.get("MESH_SOAK_MAX_DEFAULT_SHARE", "0.01"))
KILL_EVERY_S = 60.0
RSS_EVERY_S = 10.0
AB_WINDOW_ROWS = 100_000  # control_plane.ab_component.ABConfig.max_records (default)
PROXY = "soak-pytorch"
TOXICS: list[dict[str, Any] | None] = [
    {"type": "latency", "attributes": {"latency": 40, "jitter": 20}},
    {"type": "bandwidth", "attributes": {"rate": 64}},
    {"type": "slow_close", "attributes": {"delay": 100}},
    {"type": "reset_peer", "attributes": {"timeout": 500}},
    None,
]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], Settings]]:
    with running_mesh(tmp_path_factory.mktemp("soak") / "mesh", MESH_KNOBS) as (env, settings):
        yield env, settings


def mesh_processes(s: Settings) -> dict[tuple[int, int], str]:
    """(pid, start ticks) -> service name, for every live process of every recorded service."""
    out = {}
    for name, rec in records(s).items():
        for pid in group_members(int(rec["pid"]), int(rec["start_ticks"])):
            ticks = process_start_ticks(pid)
            if ticks is not None:
                out[(pid, ticks)] = name
    return out


def rss_growth(times: list[float], series: list[int | None]) -> float:
    """Growth of an RSS series over its span: the least-squares line's end value over its start.

    A leak is a trend; one 10 s sample is a moment. nats-server's Go heap is a sawtooth (measured:
    48-65 MB up and down every minute or two with no trend), so comparing two samples, or even the
    medians of the first and last three, reads a phase of the sawtooth as growth (+14 % on a flat
    series). The fitted line ignores the phase and keeps the trend: a steady leak of g over the run
    reads as g.
    """
    points = [(t, v) for t, v in zip(times, series, strict=True) if v is not None]
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var_t = sum((t - mean_t) ** 2 for t, _ in points)
    slope = sum((t - mean_t) * (v - mean_v) for t, v in points) / var_t if var_t else 0.0
    first, last = points[0][0], points[-1][0]
    start = mean_v + slope * (first - mean_t)
    return slope * (last - first) / start


def rss_of(procs: dict[tuple[int, int], str]) -> dict[tuple[int, int], int]:
    return {key: kib for key in procs if (kib := rss_kib(key[0])) is not None
            and process_start_ticks(key[0]) == key[1]}


class FaultRotation:
    """The pytorch cluster through the fault proxy, one toxic at a time."""

    def __init__(self, s: Settings, token: str) -> None:
        self.s, self.token = s, token
        self.api = f"http://{s.host}:{s.ports.chaos_api}"
        self.listen = free_port()
        self.applied: list[str] = []

    def start(self) -> None:
        code, body = http("POST", f"{self.api}/proxies", {
            "name": PROXY, "listen": f"{self.s.host}:{self.listen}",
            "upstream": f"{self.s.host}:{self.s.ports.sidecar_pytorch}", "enabled": True})
        assert code in (200, 201), body
        code, body = http("POST", f"{self.s.operator_url}/api/v1/overrides",
                          {"cluster": "pytorch", "host": self.s.host, "port": self.listen}, self.token)
        assert code == 200 and body["acked"] is True, body

    def rotate(self, step: int) -> None:
        toxic = TOXICS[step % len(TOXICS)]
        prev = TOXICS[(step - 1) % len(TOXICS)]
        if step and prev is not None:
            http("DELETE", f"{self.api}/proxies/{PROXY}/toxics/soak")
        if toxic is not None:
            code, body = http("POST", f"{self.api}/proxies/{PROXY}/toxics",
                              {"name": "soak", "stream": "downstream", "toxicity": 1.0, **toxic})
            assert code == 200, body
        self.applied.append(toxic["type"] if toxic else "none")

    def stop(self) -> None:
        http("DELETE", f"{self.s.operator_url}/api/v1/overrides/pytorch", token=self.token)
        http("DELETE", f"{self.api}/proxies/{PROXY}")


def traffic_window(s: Settings) -> dict[str, Any]:
    """The operator's traffic summary over the last 10 s (defaults, retries, per-cluster errors)."""
    code, body = http("GET", f"{s.operator_url}/api/v1/traffic/summary?window=10", timeout=2)
    if code != 200 or not isinstance(body, dict) or not body.get("available"):
        return {}
    clusters = body.get("clusters") or {}
    return {"fallback": body.get("fallback"), "retries": body.get("retries"), "rps": body.get("rps"),
            "p99_ms": body.get("p99_ms"),
            "rq_5xx": {k: v["rq_5xx"] for k, v in clusters.items() if v.get("rq_5xx")},
            "timeouts": {k: v["timeouts"] for k, v in clusters.items() if v.get("timeouts")}}


@pytest.mark.timeout(int(SOAK_S) + 900)  # + train, up, peak, drain and down
def test_soak(mesh: tuple[dict[str, str], Settings]) -> None:
    env, s = mesh
    token = s.operator_token_file.read_text().strip()
    peak = closed_loop_peak(s, seconds=5.0)
    rate = max(10.0, round(peak / 2))
    # RSS baseline once the A/B window is full (module docstring), within [60 s, half the run].
    warmup = min(max(60.0, 1.2 * AB_WINDOW_ROWS / rate), SOAK_S / 2)
    faults = FaultRotation(s, token)
    faults.start()
    kills: list[tuple[float, str]] = []
    restart_failures: list[str] = []
    t0 = time.monotonic()

    def kill_and_restart(kind: str) -> None:
        kill9(s, kind)
        kills.append((round(time.monotonic() - t0, 1), kind))
        up = meshctl(env, "up", "--detach")
        if up.returncode != 0:
            restart_failures.append(up.stdout[-1500:] + up.stderr[-1500:])

    load = BackgroundLoad(s, rate=rate, duration=SOAK_S + 60).start()
    t0 = time.monotonic()
    procs: dict[tuple[int, int], str] = {}
    rss: list[tuple[float, dict[tuple[int, int], int]]] = []  # (t, readings) from the warm-up on
    windows: list[dict[str, Any]] = []  # traffic every 10 s: when defaults happened, next to faults
    killers: list[threading.Thread] = []
    step = 0
    next_toxic, next_kill, next_sample = 0.0, KILL_EVERY_S / 2, 10.0
    try:
        while (now := time.monotonic() - t0) < SOAK_S:
            if now >= next_toxic:
                faults.rotate(step)
                step += 1
                next_toxic += TOXIC_S
            if now >= next_kill:
                kind = ("xgboost", "pytorch", "heuristic")[len(killers) % 3]
                killers.append(threading.Thread(target=kill_and_restart, args=(kind,)))
                killers[-1].start()
                next_kill += KILL_EVERY_S
            if now >= next_sample:
                next_sample += RSS_EVERY_S
                windows.append({"t": round(now), "toxic": faults.applied[-1], **traffic_window(s)})
                if now >= warmup:
                    procs = procs or mesh_processes(s)
                    rss.append((round(now, 1), rss_of(procs)))
            time.sleep(0.2)
        rss.append((round(time.monotonic() - t0, 1), rss_of(procs)))
    finally:
        result = load.stop()
        for t in killers:
            t.join(timeout=120)
        faults.stop()

    errors = client_errors(result)
    answered = result.ok or 1
    defaults = result.by_model_type.get(CONSERVATIVE_DEFAULT, 0)
    first, mid, last = rss[0][1], rss[len(rss) // 2][1], rss[-1][1]
    lived = [k for k in first if k in last]  # killed and restarted servers are left out
    times = [t for t, _ in rss]
    growth = {f"{procs[k]}:{k[0]}": rss_growth(times, [r.get(k) for _, r in rss]) for k in lived}
    rss_rows = {f"{procs[k]}:{k[0]}": {"t": [rss[0][0], rss[len(rss) // 2][0], rss[-1][0]],
                                       "kib": [first[k], mid.get(k), last[k]]} for k in lived}
    with_defaults = [w for w in windows if (w.get("fallback") or {}).get(CONSERVATIVE_DEFAULT)]
    sent = result.sent or 1
    report = {
        "soak_s": SOAK_S, "peak_rps_closed_loop": round(peak), "rate_rps": rate, "warmup_s": round(warmup),
        "sent": result.sent, "ok": result.ok, "client_errors": errors,
        "client_error_share": errors / sent, "default_share": defaults / answered,
        "by_model_type": result.by_model_type, "latency_ms": result.latency_ms,
        "toxics": faults.applied, "kills": kills,
        "rss_kib": rss_rows, "rss_growth": {k: round(v, 4) for k, v in growth.items()},
        "rss_series_kib": {"t": [t for t, _ in rss],
                           **{f"{procs[k]}:{k[0]}": [r.get(k) for _, r in rss] for k in lived}},
        "windows_with_defaults": with_defaults,
    }
    ledger = assert_ledger_contiguous(s)
    report["ledger_entries"] = len(ledger)
    if os.environ.get("MESH_SOAK_REPORT"):
        Path(os.environ["MESH_SOAK_REPORT"]).write_text(json.dumps(report, indent=1, default=str))
    print(f"\nsoak {SOAK_S:g}s: peak {peak:.0f} rps closed-loop (model answers), load {rate:g} rps "
          f"open-loop, warm-up {warmup:.0f} s; sent {result.sent}, ok {result.ok}, client errors {errors} "
          f"({100 * errors / sent:.4f} %); conservative defaults {defaults} "
          f"({100 * defaults / answered:.2f} %); p50 {result.latency_ms.get('p50')} ms p99 "
          f"{result.latency_ms.get('p99')} ms; by model "
          f"{result.by_model_type}; toxics {faults.applied}; kills {kills}; ledger {len(ledger)} entries")
    for label, row in sorted(rss_rows.items()):
        print(f"  rss {label:<28} KiB at {row['t']} s: {row['kib']} -> {growth[label]:+.1%}")
    for w in with_defaults:
        print(f"  defaults in the 10 s before t={w['t']}: {w}")
    assert not restart_failures, restart_failures
    assert len(kills) == int((SOAK_S - KILL_EVERY_S / 2) // KILL_EVERY_S) + 1
    assert errors <= 0.0001 * sent, (result.by_status, result.by_error)
    assert growth, "no mesh process lived through the whole run"
    assert max(growth.values()) <= 0.10, {k: f"{v:+.1%}" for k, v in growth.items() if v > 0.10}
    assert defaults <= MAX_DEFAULT_SHARE * answered, (defaults, answered, with_defaults[:10])
