"""Model server alone (no Envoy): the full prediction path vs the same stack serving fixed JSON.

Targets, all real processes on free ports, measured in interleaved rounds (the machine is shared,
so each round measures every target back to back and the medians are compared):
- `fixed_json`: aiohttp + uvloop (the model server's stack), reads the body and answers a
  constant seed-shaped JSON: the ceiling of the stack itself;
- `heuristic`: `python -m model_servers --kind heuristic` (validation + rules + logging);
- `xgboost`: `python -m model_servers --kind xgboost` scoring a freshly trained registry model
  with ONNX Runtime (validation + scoring + logging);
both model servers log every prediction to a real nats-server (JetStream stream PREDICTIONS).

Per target: closed-loop rps (wrk when installed, else the project's engine) and the server's
CPU per request (utime+stime from /proc, robust to noisy neighbours); ratios are against
`fixed_json` of the same run. `--envoy` also measures each target behind its own Envoy (static
bootstrap, one worker, plain proxying): a first look at the lead's Envoy-path benchmark, with
the CPU of server + Envoy per request.

Run: `.venv/bin/python -m bench.bench_model_server [--rounds 3 --seconds 3 --concurrency 16
--envoy]`.
Writes bench/results/model_server.json.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._report import write_report
from bench.serving_harness import measure_ceiling, wrk_available
from data_plane.netutil import free_port
from data_plane.procs import ManagedProcess, nats_server
from data_plane.settings import REPO_ROOT, Settings

SEED = (b'{"amount": 1500.00, "merchant_category": 7, "hour_of_day": 2, "day_of_week": 6, '
        b'"distance_from_home": 150.0, "distance_from_last_txn": 80.0, "is_foreign": 1, '
        b'"velocity_last_1h": 5, "velocity_last_24h": 12, "avg_amount_last_7d": 200.0, '
        b'"card_age_days": 15}')
FIXED_SERVER = """
import sys, uvloop
from aiohttp import web
BODY = (b'{"fraud_probability":0.953557,"is_fraud":true,"model_version":"xgboost_v1",'
        b'"model_type":"xgboost","latency_ms":0.312,"routed_to":"xgboost","fallback_reason":null}')
async def predict(request):
    await request.read()
    return web.Response(body=BODY, content_type="application/json")
app = web.Application(client_max_size=1024 * 1024)
app.router.add_post("/api/v1/predict", predict)
uvloop.install()
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def _wait_ready(url: str, timeout: float = 90.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready within {timeout:.0f}s")


def _start(name: str, argv: list[str], home: Path, ready_url: str | None, port: int) -> ManagedProcess:
    proc = ManagedProcess(name, argv, home / "logs" / f"{name}.log",
                          env={"MESH_HOME": str(home), "PYTHONPATH": str(REPO_ROOT)}, cwd=REPO_ROOT).start()
    proc.wait_port("127.0.0.1", port, timeout=60)
    if ready_url:
        _wait_ready(ready_url)
    return proc


def _envoy_bootstrap(listen: int, admin: int, upstream: int) -> dict[str, Any]:
    addr = {"socket_address": {"address": "127.0.0.1", "port_value": upstream}}
    cluster = {"name": "target", "type": "STATIC", "load_assignment": {
        "cluster_name": "target", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": addr}}]}]}}
    hcm = {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                    "HttpConnectionManager",
           "stat_prefix": "edge",
           "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
               {"match": {"prefix": "/"}, "route": {"cluster": "target"}}]}]},
           "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
               "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}
    listener = {"name": "edge", "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen}},
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                "typed_config": hcm}]}]}
    return {"static_resources": {"listeners": [listener], "clusters": [cluster]},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}}}


def _start_envoy(home: Path, name: str, upstream: int) -> tuple[ManagedProcess, int]:
    import json

    from data_plane.procs import envoy

    listen = free_port()
    config = home / f"envoy-{name}.json"
    config.write_text(json.dumps(_envoy_bootstrap(listen, free_port(), upstream)))
    proc = envoy(config, home / "logs" / f"envoy-{name}.log", base_id=listen, concurrency=1).start()
    proc.wait_port("127.0.0.1", listen, timeout=30)
    return proc, listen


def _measure(url: str, pids: list[int], concurrency: int, seconds: float) -> dict[str, Any]:
    cpu0 = sum(_cpu_s(p) for p in pids)
    r = measure_ceiling(url, SEED, concurrency, seconds)
    r["server_cpu_us_per_request"] = 1e6 * (sum(_cpu_s(p) for p in pids) - cpu0) / max(1, r["requests"])
    return r


def run(rounds: int, seconds: float, concurrency: int, rows: int, with_envoy: bool = False) -> None:
    from training.pipeline import train_all

    with tempfile.TemporaryDirectory(prefix="bench-ms-") as tmp:
        home = Path(tmp)
        settings = Settings(home=home)
        t = time.perf_counter()
        report = train_all(settings, rows=rows, kinds=("xgboost",))
        train_s = time.perf_counter() - t
        nats_port = free_port()
        nats = nats_server(nats_port, free_port(), home / "js", home / "logs" / "nats.log").start()
        nats.wait_port("127.0.0.1", nats_port)
        nats_url = f"nats://127.0.0.1:{nats_port}"
        procs: dict[str, tuple[ManagedProcess, int]] = {}
        try:
            port = free_port()
            procs["fixed_json"] = (_start("fixed", [sys.executable, "-c", FIXED_SERVER, str(port)],
                                          home, None, port), port)
            for kind in ("heuristic", "xgboost"):
                port = free_port()
                argv = [sys.executable, "-m", "model_servers", "--kind", kind, "--port", str(port),
                        "--nats-url", nats_url]
                if kind == "xgboost":
                    argv += ["--challenger-port", str(free_port())]
                procs[kind] = (_start(kind, argv, home, f"http://127.0.0.1:{port}/ready", port), port)
            # target name -> (url, pids whose CPU counts)
            targets: dict[str, tuple[str, list[int]]] = {
                name: (f"http://127.0.0.1:{port}/api/v1/predict", [proc.pid])
                for name, (proc, port) in procs.items()}
            if with_envoy:
                for name, (proc, port) in list(procs.items()):
                    proxy, listen = _start_envoy(home, name, port)
                    procs[f"envoy:{name}"] = (proxy, listen)
                    targets[f"envoy+{name}"] = (f"http://127.0.0.1:{listen}/api/v1/predict",
                                                [proxy.pid, proc.pid])
            samples: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
            for url, _pids in targets.values():  # warm-up: connections, caches, first batches
                measure_ceiling(url, SEED, concurrency, 1.0)
            for _ in range(rounds):
                for name, (url, pids) in targets.items():
                    samples[name].append(_measure(url, pids, concurrency, seconds))
        finally:
            for proc, _ in procs.values():
                proc.signal(signal.SIGTERM)
                proc.stop()
            nats.stop()
    _report(samples, rounds, seconds, concurrency, rows, train_s, report.models[0].metrics)


def _report(samples: dict[str, list[dict[str, Any]]], rounds: int, seconds: float, concurrency: int,
            rows: int, train_s: float, metrics: dict[str, float]) -> None:
    def med(name: str, key: str) -> float:
        return statistics.median(s[key] for s in samples[name])

    table = []
    for name in samples:
        ref = "envoy+fixed_json" if name.startswith("envoy+") else "fixed_json"
        ref_rps, ref_cpu = med(ref, "rps"), med(ref, "server_cpu_us_per_request")
        rps, cpu = med(name, "rps"), med(name, "server_cpu_us_per_request")
        table.append({
            "target": name, "rps": round(rps), "rps_vs_fixed": round(rps / ref_rps, 3),
            "server_cpu_us_per_req": round(cpu, 1), "cpu_ratio_fixed_over_target": round(ref_cpu / cpu, 3),
            "p50_ms": round(med(name, "p50_ms"), 2), "p99_ms": round(med(name, "p99_ms"), 2),
            "errors": sum(s["errors"] + s["non_2xx"] for s in samples[name]),
        })
    write_report("model_server", table, {
        "what": "model server alone, closed loop, POST /api/v1/predict with the seed transaction",
        "tool": "wrk" if wrk_available() else "engine", "rounds": rounds, "seconds_per_round": seconds,
        "concurrency": concurrency, "training_rows": rows, "training_s": round(train_s, 1),
        "model_auc": round(metrics.get("auc", float("nan")), 4),
        "reading": "cpu_ratio_fixed_over_target is the throughput share the full path would keep on "
                   "a CPU-bound box (CPU per request of the server, plus its Envoy for envoy+ rows; "
                   "fixed/target); rps ratios swing with whatever else runs on the machine",
        "samples": {k: [{x: s[x] for x in ("rps", "server_cpu_us_per_request", "p99_ms")} for s in v]
                    for k, v in samples.items()},
    })


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_model_server", description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--rows", type=int, default=20_000, help="training rows for the xgboost model")
    p.add_argument("--envoy", action="store_true", help="also measure each target behind an Envoy")
    a = p.parse_args(argv)
    run(a.rounds, a.seconds, a.concurrency, a.rows, with_envoy=a.envoy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
