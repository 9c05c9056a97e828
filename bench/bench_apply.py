"""ControlPlane.apply() end to end on 4 real Envoys (edge + 3 sidecars) vs the bare xDS core.

Each round changes the champion weights (the operator's `POST /api/v1/traffic` path, minus HTTP):
- reference, same run: the xDS core alone (build + consistency check + set_snapshot + wait for
  every node's ACK), no persistence, no ledger;
- apply(): the same plus the fsynced state commit before the push and the fsynced ledger append
  after the ACKs (what every operator or automation change pays).
The ratio column is apply / reference. NATS is not started (events are buffered, not sent).

    .venv/bin/python -m bench.bench_apply            # 200 rounds
    .venv/bin/python -m bench.bench_apply --quick    # 40 rounds
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from bench._report import write_report
from control_plane.app import ControlPlane
from control_plane.intent import RoutingIntent
from control_plane.xds import render_bootstrap
from data_plane.contracts.events import Decision
from data_plane.netutil import free_port
from data_plane.procs import ManagedProcess, envoy
from data_plane.settings import Ports, Settings

NODES = ("edge", "sidecar-xgboost", "sidecar-pytorch", "sidecar-heuristic")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def weights(i: int) -> dict[str, float]:
    x = round(0.1 + (i % 8) * 0.1, 1)
    return {"xgboost": x, "pytorch": round(1 - x, 1)}


def start_envoys(s: Settings, folder: Path) -> list[ManagedProcess]:
    admin = {"edge": s.ports.edge_admin, "sidecar-xgboost": s.ports.sidecar_admin_xgboost,
             "sidecar-pytorch": s.ports.sidecar_admin_pytorch,
             "sidecar-heuristic": s.ports.sidecar_admin_heuristic}
    procs = []
    for node in NODES:
        role = "edge" if node == "edge" else "sidecar"
        boot = render_bootstrap(role, node, admin[node], s.host, s.ports.ads, folder / f"{node}.yaml")
        procs.append(envoy(boot, folder / f"{node}.log", concurrency=1).start())
    return procs


async def all_acked(cp: ControlPlane, within: float) -> None:
    deadline = time.monotonic() + within
    version = str(cp.store.version)
    while time.monotonic() < deadline:
        status = cp.cache.node_status()
        if all(n in status and status[n].connected and status[n].state(version) == "ack" for n in NODES):
            return
        await asyncio.sleep(0.05)
    raise RuntimeError("the Envoys did not all connect and ACK; see the logs in the temp folder")


async def core_round(cp: ControlPlane, i: int) -> float:
    """Build, check, push and wait for the ACKs without touching the disk."""
    intent = RoutingIntent(weights=weights(i))
    version = cp.store.version + 1
    t0 = time.perf_counter()
    snaps = cp._build(intent, version)
    for node, snap in snaps.items():
        cp.cache.set_snapshot(node, snap)
    states = await cp.cache.wait_acked(str(version), list(NODES), 2.0)
    elapsed = (time.perf_counter() - t0) * 1000
    if set(states.values()) != {"ack"}:
        raise RuntimeError(f"reference round {i}: {states}")
    cp.store.commit(intent)  # keep the counter ahead of what Envoy saw (outside the timing)
    return elapsed


async def apply_round(cp: ControlPlane, i: int) -> float:
    t0 = time.perf_counter()
    decision = await cp.apply({"weights": weights(i)}, actor="operator", rule="bench", reason="bench")
    elapsed = (time.perf_counter() - t0) * 1000
    if decision.acked is not True:
        raise RuntimeError(f"apply round {i}: {decision.nodes}")
    return elapsed


async def run(rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-apply-") as tmp:
        home = Path(tmp)
        ports = replace(Ports(), **{f.name: free_port() for f in fields(Ports)})
        s = Settings(home=home / "mesh", ports=ports)
        s.ensure_home()
        cp = ControlPlane(s, ack_timeout=2.0)
        await cp.start()
        procs = start_envoys(s, home)
        try:
            await all_acked(cp, 30)
            for i in range(5):  # warm-up: connections, caches
                await apply_round(cp, i)
            core, full = [], []
            for i in range(rounds):  # interleaved so both see the same machine noise
                core.append(await core_round(cp, 2 * i))
                full.append(await apply_round(cp, 2 * i + 1))
            commit_ms, append_ms = [], []
            for _ in range(rounds):
                t0 = time.perf_counter()
                cp.store.commit(cp.store.intent)
                commit_ms.append((time.perf_counter() - t0) * 1000)
                t0 = time.perf_counter()
                cp.ledger.append(Decision(actor="bench", action="noop", rule="bench", reason="fsync cost"))
                append_ms.append((time.perf_counter() - t0) * 1000)
        finally:
            await cp.stop(grace=0.5)
            for proc in procs:
                proc.stop(timeout=5)
    rows: list[dict[str, Any]] = []
    ref_p50 = statistics.median(core)
    for name, values in (("xds core: build+push+4 ACKs (reference)", core),
                         ("ControlPlane.apply: persist+push+4 ACKs+ledger", full),
                         ("state commit alone (fsync+rename)", commit_ms),
                         ("ledger append alone (fsync)", append_ms)):
        rows.append({"path": name, "n": len(values), "p50_ms": statistics.median(values),
                     "p99_ms": pct(values, 99), "max_ms": max(values),
                     "p50_vs_reference": statistics.median(values) / ref_p50})
    write_report("apply", rows, {
        "envoys": "4 real Envoy 1.40 (edge + 3 sidecars), concurrency 1, one ADS server in-process",
        "change": "champion weights (edge RDS changes; sidecars' content unchanged)",
        "goal": "intent change -> ACK on 4 Envoys p99 <= 10 ms",
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="40 rounds instead of 200")
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args()
    asyncio.run(run(args.rounds or (40 if args.quick else 200)))


if __name__ == "__main__":
    main()
