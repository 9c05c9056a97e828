"""Footprint: memory of the whole local mesh and the time to its first prediction.

    .venv/bin/python -m bench.bench_footprint [--rows 20000] [--rate 100] [--load-s 20] [--quick]

One real `meshctl up --detach` (every service: nats-server, control plane, edge + 3 sidecar Envoys,
three model servers with their challenger slots, workers, fault proxy) under a temp MESH_HOME on
free loopback ports, after `meshctl train`. Measured:
- seconds from `up` starting to the first 200 answer from the xgboost model through the edge;
- resident memory per service (RSS, and PSS, which splits shared pages between the processes that
  map them, so the PSS total is what the mesh really costs) when idle and after `--load-s` seconds
  of open-loop load at `--rate` requests/s.
References measured in the same run: one bare Python interpreter and one bare Envoy (a
`direct_response` listener with the edge's worker count): the floor each of the mesh's Python and
Envoy processes starts from. Goals (GOALS.md): total <= 1.5 GB, first prediction <= 20 s.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench._report import write_report
from bench.serving_mesh import (
    EDGE_WORKERS,
    SEED_BODY,
    SEED_FIELDS_BODY,
    ServingMesh,
    _call,
    direct_response_bootstrap,
)
from data_plane.netutil import free_port
from data_plane.procs import envoy

GOAL_TOTAL_MB = 1536.0
GOAL_FIRST_PREDICTION_S = 20.0


def _kb(pid: int, path: str, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/{path}").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def memory_mb(pids: Iterable[int]) -> tuple[float, float]:
    """(RSS, PSS) in MB summed over `pids` (processes that are gone count 0)."""
    pids = list(pids)
    rss = sum(_kb(p, "status", "VmRSS") for p in pids)
    pss = sum(_kb(p, "smaps_rollup", "Pss") for p in pids)
    return rss / 1024, pss / 1024


def first_prediction_s(mesh: ServingMesh, timeout: float = 120) -> float:
    """Start the whole mesh; seconds until the edge answers the seed request from xgboost."""
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "meshctl", "up", "--detach"], env=mesh.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    body = json.loads(SEED_BODY)
    try:
        while time.monotonic() - started < timeout:
            try:
                code, answer = _call("POST", mesh.predict_url, body, timeout=2)
            except OSError:  # the edge is not listening yet (URLError is an OSError)
                code, answer = 0, None
            if code == 200 and isinstance(answer, dict) and answer.get("model_type") == "xgboost":
                return time.monotonic() - started
            if proc.poll() not in (None, 0):
                raise RuntimeError(f"meshctl up failed: {proc.stderr.read() if proc.stderr else ''}")
            time.sleep(0.1)
        raise RuntimeError(f"no xgboost answer through the edge within {timeout:.0f} s")
    finally:
        proc.wait(timeout=300)  # `up --detach` returns once every service is ready


def snapshot(mesh: ServingMesh, phase: str) -> list[dict[str, Any]]:
    rows = []
    for role, pids in sorted(mesh.roles().items()):
        rss, pss = memory_mb(pids)
        rows.append({"phase": phase, "what": role, "processes": len(pids), "rss_mb": round(rss, 1),
                     "pss_mb": round(pss, 1)})
    rows.append({"phase": phase, "what": "TOTAL", "processes": sum(r["processes"] for r in rows),
                 "rss_mb": round(sum(r["rss_mb"] for r in rows), 1),
                 "pss_mb": round(sum(r["pss_mb"] for r in rows), 1)})
    return rows


def references(home: Path) -> list[dict[str, Any]]:
    """A bare interpreter and a bare Envoy, measured now, on this machine."""
    rows = []
    py = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    port, admin = free_port(), free_port()
    config = home / "direct.json"
    config.write_text(json.dumps(direct_response_bootstrap(port, admin, SEED_FIELDS_BODY)))
    bare = envoy(config, home / "direct.log", base_id=port, concurrency=EDGE_WORKERS).start()
    try:
        bare.wait_port("127.0.0.1", port, timeout=30)
        time.sleep(1.0)
        for what, pid in (("reference: bare python", py.pid), ("reference: bare envoy", bare.pid)):
            rss, pss = memory_mb([pid])
            rows.append({"phase": "reference", "what": what, "processes": 1, "rss_mb": round(rss, 1),
                         "pss_mb": round(pss, 1)})
    finally:
        py.kill()
        py.wait()
        bare.stop(timeout=5)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="training rows per model")
    parser.add_argument("--rate", type=float, default=100.0, help="load rate (requests/s)")
    parser.add_argument("--load-s", type=float, default=20.0, help="seconds of load before the second sample")
    parser.add_argument("--quick", action="store_true", help="CI size: 5,000 rows, 8 s of load")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.load_s = 5_000, 8.0
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        mesh = ServingMesh(home / "mesh")
        print(f"training both kinds on {args.rows:,} rows ...", flush=True)
        mesh.meshctl("train", "--rows", str(args.rows), "--json")
        rows = references(home)
        try:
            print("starting the whole mesh (meshctl up) ...", flush=True)
            first = first_prediction_s(mesh)
            print(f"first prediction after {first:.1f} s; idle sample in 10 s ...", flush=True)
            time.sleep(10)
            rows += snapshot(mesh, "idle")
            print(f"load: {args.rate:g} req/s for {args.load_s:g} s ...", flush=True)
            mesh.meshctl("load", "--rate", str(args.rate), "--duration", str(args.load_s), "--no-progress",
                         "--json", timeout=args.load_s + 120)
            rows += snapshot(mesh, "after load")
        finally:
            mesh.stop()
    loaded = next(r for r in rows if r["phase"] == "after load" and r["what"] == "TOTAL")
    notes = {
        "first_prediction_s": round(first, 1),
        "first_prediction_vs_goal": round(first / GOAL_FIRST_PREDICTION_S, 2),
        "total_pss_mb_after_load": loaded["pss_mb"],
        "total_pss_vs_goal_1.5GB": round(loaded["pss_mb"] / GOAL_TOTAL_MB, 2),
        "note": "PSS splits shared pages (Python libraries, Envoy text) between processes; RSS counts "
                "them once per process, so the RSS total overstates the mesh's memory",
    }
    write_report("footprint", rows, notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
