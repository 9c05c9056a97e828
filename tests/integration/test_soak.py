"""Soak: a whole mesh at half its measured peak for MESH_SOAK_SECONDS (default 600), under faults.

`make soak` (pytest -m slow -k soak). One mesh (`meshctl train --rows 5000`, `meshctl up --detach`):
- the peak is measured first (a short closed-loop run through the edge); the soak runs open loop
  at 50 % of it;
- the `pytorch` cluster is re-pointed through the fault proxy (`POST /api/v1/overrides`) and its
  toxic rotates every MESH_SOAK_TOXIC_S seconds (latency, bandwidth, slow_close, reset_peer, none);
- once a minute one model server (xgboost, pytorch, heuristic in turn) gets kill -9 and
  `meshctl up --detach` starts it again.
Passes when client errors (no 2xx answer) are <= 0.01 %, no mesh process that lived through the run
grew its RSS by more than 10 % after the warm-up, and the ledger has no gap.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from data_plane.netutil import free_port
from data_plane.settings import Settings
from meshctl.lifecycle import group_members, process_start_ticks
from tests.integration.recovery_support import (
    MESH_KNOBS,
    BackgroundLoad,
    assert_ledger_contiguous,
    client_errors,
    closed_loop_peak,
    http,
    kill9,
    meshctl,
    records,
    rss_kib,
)
from tests.mesh_support import free_port_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SOAK_S = float(os.environ.get("MESH_SOAK_SECONDS", "600"))
TOXIC_S = float(os.environ.get("MESH_SOAK_TOXIC_S", "15"))
KILL_EVERY_S = 60.0
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
    home = tmp_path_factory.mktemp("soak") / "mesh"
    env = {**os.environ, "MESH_HOME": str(home), **MESH_KNOBS}
    train = meshctl(env, "train", "--rows", "5000", "--no-progress", timeout=240)
    assert train.returncode == 0, train.stdout[-2000:] + train.stderr[-2000:]
    try:
        for _ in range(3):  # ports picked right before `up`; another test may take one meanwhile
            env.update(free_port_env())
            up = meshctl(env, "up", "--detach")
            if up.returncode == 0 or "already in use" not in up.stderr:
                break
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        yield env, Settings.from_env(env)
    finally:
        meshctl(env, "down", "--timeout", "5")


def mesh_processes(s: Settings) -> dict[tuple[int, int], str]:
    """(pid, start ticks) -> service name, for every live process of every recorded service."""
    out = {}
    for name, rec in records(s).items():
        for pid in group_members(int(rec["pid"]), int(rec["start_ticks"])):
            ticks = process_start_ticks(pid)
            if ticks is not None:
                out[(pid, ticks)] = name
    return out


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


def test_soak(mesh: tuple[dict[str, str], Settings]) -> None:
    env, s = mesh
    token = s.operator_token_file.read_text().strip()
    peak = closed_loop_peak(s, seconds=5.0)
    rate = max(10.0, round(peak / 2))
    warmup = min(60.0, SOAK_S / 2)
    faults = FaultRotation(s, token)
    faults.start()
    kills: list[str] = []
    restart_failures: list[str] = []

    def kill_and_restart(kind: str) -> None:
        kill9(s, kind)
        kills.append(kind)
        up = meshctl(env, "up", "--detach")
        if up.returncode != 0:
            restart_failures.append(up.stdout[-1500:] + up.stderr[-1500:])

    load = BackgroundLoad(s, rate=rate, duration=SOAK_S + 60).start()
    t0 = time.monotonic()
    rss_start: dict[tuple[int, int], int] = {}
    procs: dict[tuple[int, int], str] = {}
    killers: list[threading.Thread] = []
    step = 0
    next_toxic, next_kill = 0.0, KILL_EVERY_S / 2
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
            if not rss_start and now >= warmup:
                procs = mesh_processes(s)
                rss_start = rss_of(procs)
            time.sleep(0.2)
        rss_end = rss_of(procs)
    finally:
        result = load.stop()
        for t in killers:
            t.join(timeout=120)
        faults.stop()

    errors = client_errors(result)
    answered = result.sent or 1
    growth = {f"{procs[k]}:{k[0]}": (rss_end[k] - kib) / kib for k, kib in rss_start.items() if k in rss_end}
    print(f"\nsoak {SOAK_S:g}s: peak {peak:.0f} rps closed-loop, load {rate:g} rps open-loop; sent "
          f"{result.sent}, ok {result.ok}, client errors {errors} ({100 * errors / answered:.4f} %); "
          f"p50 {result.latency_ms.get('p50')} ms p99 {result.latency_ms.get('p99')} ms; by model "
          f"{result.by_model_type}; toxics {faults.applied}; kills {kills}")
    for name, g in sorted(growth.items()):
        print(f"  rss {name:<28} {rss_start_kib(rss_start, procs, name):>8} KiB -> {g:+.1%}")
    assert not restart_failures, restart_failures
    assert len(kills) == int((SOAK_S - KILL_EVERY_S / 2) // KILL_EVERY_S) + 1
    assert errors <= 0.0001 * answered, (result.by_status, result.by_error)
    assert growth, "no mesh process lived through the whole run"
    assert max(growth.values()) <= 0.10, {k: f"{v:+.1%}" for k, v in growth.items() if v > 0.10}
    assert_ledger_contiguous(s)


def rss_start_kib(rss: dict[tuple[int, int], int], procs: dict[tuple[int, int], str], label: str) -> int:
    name, _, pid = label.rpartition(":")
    return next(kib for key, kib in rss.items() if key[0] == int(pid) and procs[key] == name)
