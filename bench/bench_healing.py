"""Fault -> every Envoy ACKed: SIGKILL the primary under load, time until the reconciler's decision
is ACKed by the edge and the three sidecars (ledger `ts`, recorded after the ACKs).

    .venv/bin/python -m bench.bench_healing [--cycles 8] [--rate 100] [--quick]

Real processes (tests/integration/healing_mesh.py): nats-server, `python -m control_plane` with its
healing loop (default scrape interval 250 ms; dwell 2 s and a generous token bucket so every cycle
is measured, not rate-limited), the edge Envoy, three sidecar Envoys and three small upstreams.
Each cycle: predictions at `rate`/s through the edge, SIGKILL the xgboost upstream, wait for the
eject decision, restart it, wait for the restore. Reference measured in the same run: an operator
weight change (`POST /api/v1/traffic` -> every Envoy ACKed), i.e. the push path without detection.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._report import write_report
from tests.integration.healing_mesh import HealingMesh, http_json
from tests.integration.test_healing import load, wait_decision

ENV = {"MESH_HEALING_DWELL_S": "2", "MESH_HEALING_COOLDOWN_S": "1", "MESH_HEALING_BURST": "1000",
       "MESH_HEALING_REFILL_PER_MINUTE": "1000"}


def _stats(name: str, values: list[float]) -> dict[str, Any]:
    ordered = sorted(values)
    return {"metric": name, "n": len(values), "p50_ms": round(statistics.median(ordered) * 1000, 1),
            "p90_ms": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))] * 1000, 1),
            "max_ms": round(ordered[-1] * 1000, 1)}


async def operator_change(mesh: HealingMesh, weights: dict[str, float]) -> float:
    started = time.perf_counter()
    code, body = await asyncio.to_thread(http_json, "POST", mesh.s.operator_url + "/api/v1/traffic",
                                         weights, mesh.token)
    elapsed = time.perf_counter() - started
    assert code == 200 and body["acked"] is True, body
    return elapsed


async def run(cycles: int, rate: float) -> None:
    kill_to_ack, kill_to_detect, detect_to_ack, operator = [], [], [], []
    rules: dict[str, int] = {}
    bad_answers = total = 0
    with tempfile.TemporaryDirectory() as tmp:
        mesh = HealingMesh(Path(tmp) / "mesh", healing_env=ENV).start()
        try:
            async with load(mesh, rate) as answers:
                await asyncio.sleep(2.0)
                for _ in range(cycles):
                    _, last = await asyncio.to_thread(mesh.api, "/api/v1/decisions?limit=1")
                    since = int(last["last_seq"])
                    operator.append(await operator_change(mesh, {"xgboost": 0.7, "pytorch": 0.3}))
                    operator.append(await operator_change(mesh, {"xgboost": 0.8, "pytorch": 0.2}))
                    await asyncio.sleep(0.5)
                    killed_at = mesh.kill_upstream("xgboost")
                    eject = await wait_decision(mesh, since, "xgboost", "eject", 10.0)
                    assert eject["acked"] is True, eject
                    kill_to_ack.append(eject["ts"] - killed_at)
                    kill_to_detect.append(eject["numbers"]["detected_at"] - killed_at)
                    detect_to_ack.append(eject["ts"] - eject["numbers"]["detected_at"])
                    rules[eject["rule"]] = rules.get(eject["rule"], 0) + 1
                    await asyncio.sleep(0.5)
                    await asyncio.to_thread(mesh.start_upstream, "xgboost")
                    await wait_decision(mesh, eject["seq"], "xgboost", "restore", 30.0)
                    await asyncio.sleep(0.5)
            total = len(answers)
            bad_answers = sum(1 for _, status, kind in answers
                              if status != 200 or kind not in ("xgboost", "pytorch"))
            nodes = sorted(eject["nodes"])
        finally:
            mesh.stop()
    rows = [_stats("kill -> all Envoys ACKed", kill_to_ack), _stats("kill -> detected", kill_to_detect),
            _stats("detected -> all Envoys ACKed", detect_to_ack),
            _stats("reference: operator change -> all ACKed", operator)]
    ref = statistics.median(operator)
    for row in rows:
        row["p50_vs_reference"] = round(row["p50_ms"] / 1000 / ref, 1)
    write_report("healing", rows, {
        "goal": "kill -> all Envoys ACKed <= 1 s",
        "within_goal": sum(1 for v in kill_to_ack if v <= 1.0), "cycles": cycles,
        "rules_fired": rules, "nodes": nodes, "load_rps": rate,
        "client_answers": total, "client_errors_or_defaults": bad_answers,
        "scrape_interval_s": 0.25, "dwell_s": 2.0,
        "note": "detection is one scrape round (refused /ready probe or Envoy ejection); the rest is "
                "apply(): state commit (fsync), push, 4 ACKs, ledger append. 2-core shared machine.",
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=8)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--quick", action="store_true", help="3 cycles (bench.run_all)")
    args = parser.parse_args()
    asyncio.run(run(3 if args.quick else args.cycles, args.rate))


if __name__ == "__main__":
    main()
