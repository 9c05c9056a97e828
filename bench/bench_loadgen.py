"""How much load one Python load process drives, against wrk, on a trivial local aiohttp server.

The target is data_plane.load.calibration_target (no validation: as cheap as an aiohttp handler
gets) in its own process. Rows: wrk's closed-loop ceiling (the reference), the engine's
closed-loop ceiling with each transport (aiohttp, http1), then the engine's open loop at fixed
rates (does it hold the rate, what p99 does it add, how much CPU per request does it burn).
Ratios are against wrk measured in the same run.

Run: ``.venv/bin/python -m bench.bench_loadgen [--quick]`` -> bench/results/loadgen.json
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from typing import Any

from bench._report import write_report
from bench.serving_harness import measure_ceiling, measure_open_loop, wrk_available
from data_plane.load import synthetic_payloads
from data_plane.load.transports import TRANSPORTS


def _start_target() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "data_plane.load.calibration_target", "--port", "0",
                             "--no-validate"], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith("ready "):
        proc.kill()
        raise RuntimeError(f"calibration target did not start: {line!r}")
    return proc, f"http://127.0.0.1:{int(line.split()[1])}/api/v1/predict"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 s per row instead of 5 s")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--rates", default="1000,2000,3000,4000")
    a = ap.parse_args(argv)
    seconds = 2.0 if a.quick else 5.0
    body = synthetic_payloads(seed=0, count=1)[0].body
    proc, url = _start_target()
    load_before = os.getloadavg()[0]
    rows: list[dict[str, Any]] = []
    try:
        measure_open_loop(url, body, rate=500, duration=1.0)  # warm connections and the server
        wrk = measure_ceiling(url, body, a.concurrency, seconds, tool="wrk") if wrk_available() else None
        ref = wrk["rps"] if wrk else None
        if wrk:
            rows.append(_row(f"closed x{a.concurrency}", wrk, ref))
        for transport in TRANSPORTS:
            r = measure_ceiling(url, body, a.concurrency, seconds, tool="engine", transport=transport)
            rows.append(_row(f"closed x{a.concurrency}", r, ref))
        for rate in (float(x) for x in a.rates.split(",")):
            for transport in TRANSPORTS:
                o = measure_open_loop(url, body, rate=rate, duration=seconds, transport=transport)
                rows.append(_row(f"open {rate:g} rps", o, ref)
                            | {"late": o["late"], "max_send_lag_ms": o["max_send_lag_ms"]})
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    write_report("loadgen", rows, {
        "target": "calibration_target --no-validate (aiohttp + uvloop, one process)",
        "reference": "wrk closed loop, same target, same run" if wrk_available() else "wrk not installed",
        "cpus": os.cpu_count(),
        "loadavg_1m": f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after (others share the box)",
        "note": "server and load generator share the machine's cores; client_cpu_us_per_request "
                "is the generator's own CPU cost, so 1e6 / it = rps one core of that generator drives",
    })
    return 0


def _row(name: str, r: dict[str, Any], ref_rps: float | None) -> dict[str, Any]:
    tool = r["tool"] if r["tool"] == "wrk" else f"engine/{r['transport']}"
    return {"run": name, "tool": tool, "rps": r["rps"],
            "rps_vs_wrk": round(r["rps"] / ref_rps, 3) if ref_rps else None,
            "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"], "p99.9_ms": r["p99.9_ms"],
            "errors": r["errors"], "cpu_us_per_req": r["client_cpu_us_per_request"]}


if __name__ == "__main__":
    sys.exit(main())
