"""Regenerate the edge Envoy admin captures in this folder (used by tests/unit/test_signals.py):

    .venv/bin/python tests/data/healing/capture.py

Starts the healing test mesh (tests/integration/healing_mesh.py: nats-server, `python -m
control_plane` with the healing loop OFF so the weights stay put, the edge Envoy, three sidecar
Envoys and three small upstream processes) on free ports in a temporary MESH_HOME, drives
predictions at 100/s through the edge and saves, per scenario, the edge's `/clusters?format=json`
and filtered `/stats?format=json&histogram_buckets=cumulative` at the scenario's start and end:

- `steady`: healthy 80/20 traffic for 4 s;
- `killed`: the xgboost upstream SIGKILLed under load (its sidecar answers 503, the edge ejects it);
- `slow`: the pytorch upstream answers after 600 ms (p95 of chain-pytorch above 500 ms);
- `all_down`: every upstream dead: the chains end in 503 (the conservative default).

Each scenario waits for a stats flush (Envoy merges histograms every 5 s) before its end capture.
`meta.json` holds the Envoy version, the capture times and what was sent. Run it after an Envoy
upgrade; it takes about a minute and leaves nothing running.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402

from control_plane.healing.envoy_admin import stats_query  # noqa: E402
from data_plane.procs import venv_bin  # noqa: E402
from tests.integration.healing_mesh import HealingMesh  # noqa: E402

OUT = Path(__file__).resolve().parent
FLUSH_S = 5.5
TXN = {"amount": 1500.0, "merchant_category": 7, "hour_of_day": 2, "day_of_week": 6,
       "distance_from_home": 150.0, "distance_from_last_txn": 80.0, "is_foreign": 1,
       "velocity_last_1h": 5, "velocity_last_24h": 12, "avg_amount_last_7d": 200.0, "card_age_days": 15}


async def drive(session: aiohttp.ClientSession, url: str, seconds: float,
                rate: float = 100.0) -> Counter[str]:
    """Open-loop predictions for `seconds`; counts answers by model_type (or status)."""
    seen: Counter[str] = Counter()

    async def one() -> None:
        try:
            async with session.post(url, json=TXN) as r:
                body = await r.json(content_type=None)
                seen[body.get("model_type", str(r.status)) if isinstance(body, dict) else str(r.status)] += 1
        except (aiohttp.ClientError, TimeoutError) as exc:
            seen[type(exc).__name__] += 1

    tasks = []
    start = time.monotonic()
    n = 0
    while (elapsed := time.monotonic() - start) < seconds:
        tasks.append(asyncio.create_task(one()))
        n += 1
        await asyncio.sleep(max(0.0, n / rate - elapsed))
    await asyncio.gather(*tasks)
    return seen


async def capture(session: aiohttp.ClientSession, mesh: HealingMesh, name: str) -> float:
    admin = f"http://{mesh.s.host}:{mesh.s.ports.edge_admin}"
    async with session.get(admin + "/clusters", params={"format": "json"}) as r:
        clusters = await r.json(content_type=None)
    async with session.get(admin + "/stats", params=stats_query()) as r:
        stats = await r.json(content_type=None)
    at = time.monotonic()
    (OUT / f"{name}_clusters.json").write_text(json.dumps(clusters, indent=1) + "\n")
    (OUT / f"{name}_stats.json").write_text(json.dumps(stats, indent=1) + "\n")
    return at


def envoy_version() -> str:
    out = subprocess.run([venv_bin("envoy"), "--version"], capture_output=True, text=True, check=False)
    return out.stdout.split("version:")[-1].strip()


async def main() -> None:
    version = envoy_version()
    meta: dict[str, Any] = {"envoy": version,
                            "stats_query": stats_query(), "scenarios": {}}
    with tempfile.TemporaryDirectory() as tmp:
        mesh = HealingMesh(Path(tmp) / "mesh", healing_env={"MESH_HEALING": "0"}, nats=False).start()
        try:
            url = mesh.s.edge_url + "/api/v1/predict"
            async with aiohttp.ClientSession() as session:
                for name, fault in (("steady", None), ("killed", "kill"), ("slow", "slow"),
                                    ("all_down", "all")):
                    start = await capture(session, mesh, f"{name}_start")
                    if fault == "kill":
                        mesh.kill_upstream("xgboost")
                    elif fault == "slow":
                        mesh.start_upstream("xgboost")
                        mesh.control("pytorch", delay_ms=600)
                    elif fault == "all":
                        for svc in ("xgboost", "pytorch", "heuristic"):
                            mesh.kill_upstream(svc)
                    answers = await drive(session, url, 4.0)
                    if fault == "kill":  # the end capture right away: the ejection is still on
                        end = await capture(session, mesh, f"{name}_end")
                        await asyncio.sleep(FLUSH_S)
                    else:
                        await asyncio.sleep(FLUSH_S)
                        end = await capture(session, mesh, f"{name}_end")
                    meta["scenarios"][name] = {"span_s": round(end - start, 3), "answers": dict(answers)}
                    print(name, dict(answers))
        finally:
            mesh.stop()
    (OUT / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
