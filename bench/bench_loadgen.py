"""How much load one Python load process drives, against wrk, on trivial local servers.

Targets (each in its own process): ``aiohttp`` = data_plane.load.calibration_target without
validation (as cheap as an aiohttp handler gets), ``envoy`` = an Envoy ``direct_response``
(one worker thread; far cheaper than any Python server, so the generator's own limit shows).
Rows per target: wrk's closed-loop ceiling (the reference), the engine's closed-loop ceiling with
each transport, then the engine's open loop at fixed rates (does it hold the rate, what p99 does
it add, how much CPU per request does it burn). Ratios are against wrk on the same target in the
same run.

Run: ``.venv/bin/python -m bench.bench_loadgen [--quick] [--targets aiohttp,envoy]``
-> bench/results/loadgen.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench._report import write_report
from bench.serving_harness import measure_ceiling, measure_open_loop, wrk_available
from data_plane.load import synthetic_payloads
from data_plane.load.envoy_target import bootstrap
from data_plane.load.transports import TRANSPORTS
from data_plane.netutil import free_port
from data_plane.procs import envoy


@contextlib.contextmanager
def aiohttp_target() -> Iterator[str]:
    proc = subprocess.Popen([sys.executable, "-m", "data_plane.load.calibration_target", "--port", "0",
                             "--no-validate"], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("ready "):
            raise RuntimeError(f"calibration target did not start: {line!r}")
        yield f"http://127.0.0.1:{int(line.split()[1])}/api/v1/predict"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


@contextlib.contextmanager
def envoy_target() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="loadgen-envoy-") as tmp:
        listen = free_port()
        cfg = Path(tmp) / "bootstrap.json"
        cfg.write_text(json.dumps(bootstrap(listen, free_port(), free_port(), free_port())))
        proc = envoy(cfg, Path(tmp) / "envoy.log", concurrency=1).start()
        try:
            proc.wait_port("127.0.0.1", listen)
            yield f"http://127.0.0.1:{listen}/direct"
        finally:
            proc.stop()


TARGETS = {"aiohttp": aiohttp_target, "envoy": envoy_target}


def measure_target(name: str, url: str, body: bytes, concurrency: int, seconds: float,
                   rates: list[float]) -> list[dict[str, Any]]:
    """wrk and engine ceilings, then the engine's open loop at each rate, against one target."""
    rows: list[dict[str, Any]] = []
    measure_open_loop(url, body, rate=500, duration=1.0)  # warm connections and the server
    wrk = measure_ceiling(url, body, concurrency, seconds, tool="wrk") if wrk_available() else None
    ref = wrk["rps"] if wrk else None
    if wrk:
        rows.append(_row(name, f"closed x{concurrency}", wrk, ref))
    for transport in TRANSPORTS:
        r = measure_ceiling(url, body, concurrency, seconds, tool="engine", transport=transport)
        rows.append(_row(name, f"closed x{concurrency}", r, ref))
    for rate in rates:
        for transport in TRANSPORTS:
            o = measure_open_loop(url, body, rate=rate, duration=seconds, transport=transport)
            rows.append(_row(name, f"open {rate:g} rps", o, ref)
                        | {"late": o["late"], "max_send_lag_ms": o["max_send_lag_ms"]})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 s per row instead of 5 s")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--rates", default="1000,2000,3000,4000")
    ap.add_argument("--targets", default="aiohttp,envoy", help="comma list of: aiohttp, envoy")
    a = ap.parse_args(argv)
    seconds = 2.0 if a.quick else 5.0
    rates = [float(x) for x in a.rates.split(",")]
    body = synthetic_payloads(seed=0, count=1)[0].body
    load_before = os.getloadavg()[0]
    rows: list[dict[str, Any]] = []
    for name in a.targets.split(","):
        with TARGETS[name]() as url:
            rows += measure_target(name, url, body, a.concurrency, seconds, rates)
    write_report("loadgen", rows, {
        "targets": "aiohttp = calibration_target --no-validate (aiohttp + uvloop, one process); "
                   "envoy = Envoy direct_response, --concurrency 1",
        "reference": "wrk closed loop, same target, same run" if wrk_available() else "wrk not installed",
        "cpus": os.cpu_count(),
        "loadavg_1m": f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after (others share the box)",
        "note": "server and load generator share the machine's cores; cpu_us_per_req is the "
                "generator's own CPU per request, so 1e6 / it = rps one core of that generator drives",
    })
    return 0


def _row(target: str, name: str, r: dict[str, Any], ref_rps: float | None) -> dict[str, Any]:
    tool = r["tool"] if r["tool"] == "wrk" else f"engine/{r['transport']}"
    return {"target": target, "run": name, "tool": tool, "rps": r["rps"],
            "rps_vs_wrk": round(r["rps"] / ref_rps, 3) if ref_rps else None,
            "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"], "p99.9_ms": r["p99.9_ms"],
            "errors": r["errors"], "cpu_us_per_req": r["client_cpu_us_per_request"]}


if __name__ == "__main__":
    sys.exit(main())
