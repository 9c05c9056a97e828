"""Fault proxy overhead: one proxy (no toxics) in front of an aiohttp fixed response, vs direct.

Arms, each measured in the same run against the same upstream process:
- ``direct``: the client talks to the upstream;
- ``proxy``: through ``python -m chaos.proxy`` (uvloop, the default), no toxics (plain-copy path);
- ``proxy-asyncio``: the same proxy on the stock asyncio loop;
- ``proxy-noop-toxics``: uvloop proxy with a ``noop`` toxic each way (forces the toxic-chain path).

Two measurements per arm, both over keep-alive connections:
- throughput: ``wrk`` closed loop (``--conns`` connections; a Python closed-loop client when wrk is
  missing) -> rps and the ratio to direct;
- latency: the project's load engine (data_plane.load), open loop at a fixed rate (``--rate``) to
  direct *and* the proxy arm at once, latency counted from each request's intended send time (no
  coordinated omission) -> p50/p99 and what the proxy adds to direct's under the same noise;
- CPU time per request of the proxy and upstream processes (robust on a shared machine).

Rounds are interleaved across arms and the median per arm is reported (the machine is shared).
Goal (GOALS.md): >= 5k rps through one proxy and <= 1 ms added p99.

    .venv/bin/python -m bench.bench_chaos_proxy [--seconds 3] [--rounds 3] [--rate 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from bench._report import write_report
from data_plane.load import LoadEngine, LoadPlan, LoadResult, fixed_payloads

REPO = Path(__file__).resolve().parent.parent
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
GOAL_RPS, GOAL_ADDED_P99_MS = 5000.0, 1.0


# ---- processes -------------------------------------------------------------------------------------

def _upstream_main() -> None:
    """Child process: aiohttp fixed JSON response on a free port (printed), on uvloop."""
    import uvloop
    from aiohttp import web

    body = json.dumps({"fraud_probability": 0.01, "is_fraud": False}).encode()

    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    async def serve() -> None:
        app = web.Application()
        app.router.add_get("/", handle)  # wrk
        app.router.add_post("/", handle)  # the project's load engine posts
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        print(runner.addresses[0][1], flush=True)
        await asyncio.Event().wait()

    uvloop.run(serve())


def _spawn(args: list[str], pattern: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, *args], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(pattern, line)
    if not match:
        proc.kill()
        raise RuntimeError(f"{args} did not start: {line!r}")
    return proc, match.group(1)


def _api(url: str, method: str, path: str, body: Any) -> Any:
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:  # loopback only
        return json.loads(resp.read() or b"null")


def _make_proxy(api_url: str, upstream_port: int, noop_toxics: bool) -> int:
    proxy = _api(api_url, "POST", "/proxies", {"name": "bench", "listen": "127.0.0.1:0",
                                               "upstream": f"127.0.0.1:{upstream_port}"})
    if noop_toxics:
        for stream in ("upstream", "downstream"):
            _api(api_url, "POST", "/proxies/bench/toxics", {"type": "noop", "stream": stream})
    return int(proxy["listen"].rsplit(":", 1)[1])


# ---- load ----------------------------------------------------------------------------------------

def _run(coro: Any) -> Any:
    """Run a coroutine on uvloop (the load engine's own preference) or asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def _checked(result: LoadResult) -> LoadResult:
    if result.errors or result.not_sent or result.ok < result.sent:
        raise RuntimeError(f"load run against {result.url} failed: {result.to_dict()}")
    return result


async def _paired_open_loop(ports: list[int], args: argparse.Namespace) -> list[LoadResult]:
    """The project's load engine, open loop at `args.rate` to every port at once.

    Running direct and a proxy in the same moments makes their difference meaningful on a noisy
    machine; latency counts from each request's intended send time (no coordinated omission).
    """
    payloads = fixed_payloads([b"{}"])
    engines = [LoadEngine(LoadPlan(url=f"http://127.0.0.1:{port}/", rate=args.rate, duration=args.seconds,
                                   max_outstanding=args.ol_conns, transport="http1"), payloads)
               for port in ports]
    return list(await asyncio.gather(*(engine.run() for engine in engines)))


def closed_loop(port: int, args: argparse.Namespace) -> dict[str, float]:
    """Throughput with the project's load engine, when wrk is not installed (saturates sooner)."""
    plan = LoadPlan(url=f"http://127.0.0.1:{port}/", concurrency=args.conns, duration=args.seconds,
                    transport="http1")
    result = _checked(_run(LoadEngine(plan, fixed_payloads([b"{}"])).run()))
    return {"rps": result.achieved_rps, "requests": result.responses}


def cpu_seconds(pid: int) -> float:
    """User+system CPU a process has used (Linux /proc); robust to a noisy shared machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wrk_ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(port: int, seconds: float, conns: int) -> dict[str, float]:
    out = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{max(1, round(seconds))}s", "--latency",
                          f"http://127.0.0.1:{port}/"], capture_output=True, text=True, timeout=seconds + 30,
                         check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*", out)
    if errors:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    p50 = _wrk_ms(re.search(r"50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _wrk_ms(re.search(r"99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    return {"rps": rps, "requests": requests, "wrk_p50_ms": p50, "wrk_p99_ms": p99}


# ---- the run -------------------------------------------------------------------------------------

def throughput(port: int, pids: dict[str, int], args: argparse.Namespace) -> dict[str, float]:
    """Closed-loop rps, with the CPU time per request of each process in `pids`."""
    cpu_before = {role: cpu_seconds(pid) for role, pid in pids.items()}
    result = wrk(port, args.seconds, args.conns) if shutil.which("wrk") else closed_loop(port, args)
    for role, pid in pids.items():
        result[f"{role}_cpu_us_per_req"] = (cpu_seconds(pid) - cpu_before[role]) / result["requests"] * 1e6
    return result


def latency(direct: int, proxied: int, args: argparse.Namespace) -> dict[str, float]:
    """Open-loop latency of a proxy arm and of direct, measured together; `added_*` is the difference."""
    base, arm = (_checked(r).latency_ms for r in _run(_paired_open_loop([direct, proxied], args)))
    return {"p50_ms": arm["p50"], "p99_ms": arm["p99"], "p999_ms": arm["p99.9"],
            "direct_p50_ms": base["p50"], "direct_p99_ms": base["p99"], "direct_p999_ms": base["p99.9"],
            "added_p50_ms": arm["p50"] - base["p50"], "added_p99_ms": arm["p99"] - base["p99"]}


def _row(arm: str, m: dict[str, float], base: dict[str, float]) -> dict[str, Any]:
    def r(key: str, digits: int = 3) -> float | None:
        return round(m[key], digits) if key in m else None

    return {"arm": arm, "rps": round(m["rps"]), "rps_vs_direct": round(m["rps"] / base["rps"], 3),
            "wrk_p99_ms": r("wrk_p99_ms"), "upstream_cpu_us_req": r("upstream_cpu_us_per_req", 1),
            "proxy_cpu_us_req": r("proxy_cpu_us_per_req", 1),
            "ol_p50_ms": r("p50_ms"), "ol_p99_ms": r("p99_ms"), "ol_p999_ms": r("p999_ms"),
            "added_p50_ms": r("added_p50_ms"), "added_p99_ms": r("added_p99_ms")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement (default 3)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds; median per arm (default 3)")
    parser.add_argument("--conns", type=int, default=32, help="closed-loop connections (default 32)")
    parser.add_argument("--rate", type=float, default=1000.0, help="open-loop requests/s (default 1000)")
    parser.add_argument("--ol-conns", type=int, default=16, help="open-loop connections (default 16)")
    parser.add_argument("--role", choices=["bench", "upstream"], default="bench", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "upstream":
        _upstream_main()
        return 0
    if not 0 < args.seconds <= 60 or not 1 <= args.rounds <= 10 or not 0 < args.rate <= 20_000:
        parser.error("bounds: 0 < --seconds <= 60, 1 <= --rounds <= 10, 0 < --rate <= 20000")

    load_before = os.getloadavg()[0]
    procs: list[subprocess.Popen[str]] = []
    try:
        upstream, port_text = _spawn(["-m", "bench.bench_chaos_proxy", "--role", "upstream"], r"(\d+)")
        procs.append(upstream)
        ports = {"direct": int(port_text)}
        pids = {"direct": {"upstream": upstream.pid}}
        for arm, loop, noop in (("proxy", "uvloop", False), ("proxy-asyncio", "asyncio", False),
                                ("proxy-noop-toxics", "uvloop", True)):
            proc, url = _spawn(["-m", "chaos.proxy", "--listen", "127.0.0.1:0", "--loop", loop],
                               r"listening on (http://\S+)")
            procs.append(proc)
            ports[arm] = _make_proxy(url, ports["direct"], noop)
            pids[arm] = {"upstream": upstream.pid, "proxy": proc.pid}
        samples: dict[str, list[dict[str, float]]] = {arm: [] for arm in ports}
        for _ in range(args.rounds):
            for arm, port in ports.items():
                result = throughput(port, pids[arm], args)
                if arm != "direct":
                    result.update(latency(ports["direct"], port, args))
                samples[arm].append(result)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)

    med = {arm: {k: statistics.median(s[k] for s in runs) for k in runs[0]} for arm, runs in samples.items()}
    proxy, base = med["proxy"], med["direct"]
    # Direct's latency is the one measured alongside the main proxy arm.
    base.update({k: proxy[f"direct_{k}"] for k in ("p50_ms", "p99_ms", "p999_ms")})
    rows = [_row(arm, m, base) for arm, m in med.items()]
    notes = {
        "driver": "wrk -t1 closed loop" if shutil.which("wrk") else "data_plane.load closed loop (no wrk)",
        "open_loop": f"data_plane.load engine, {args.rate:.0f} req/s each to direct and one proxy arm at "
                     f"once, {args.seconds:.0f} s, <= {args.ol_conns} keep-alive conns each; "
                     "added = arm - direct",
        "rounds": args.rounds,
        "load_avg_1m": f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after ({os.cpu_count()} CPUs): "
                       "tails above ~1 ms are scheduling noise when this exceeds the CPU count",
        "cpu_us_req": "CPU time per request of the upstream / proxy process during the closed-loop run",
        "goal": f">= {GOAL_RPS:.0f} rps through one proxy, <= {GOAL_ADDED_P99_MS} ms added p99",
        "proxy_capacity_rps_per_core": round(1e6 / proxy["proxy_cpu_us_per_req"]),
        "goal_met": proxy["rps"] >= GOAL_RPS and proxy["added_p99_ms"] <= GOAL_ADDED_P99_MS,
    }
    write_report("chaos_proxy", rows, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
