"""Fault proxy overhead: one proxy (no toxics) in front of an aiohttp fixed response, vs direct.

Arms, each measured in the same run against the same upstream process:
- ``direct``: the client talks to the upstream;
- ``proxy``: through ``python -m chaos.proxy`` (uvloop, the default), no toxics (plain-copy path);
- ``proxy-asyncio``: the same proxy on the stock asyncio loop;
- ``proxy-noop-toxics``: uvloop proxy with a ``noop`` toxic each way (forces the toxic-chain path).

Two measurements per arm, both over keep-alive connections:
- throughput: ``wrk`` closed loop (``--conns`` connections; a Python closed-loop client when wrk is
  missing) -> rps and the ratio to direct;
- latency: an open-loop client at a fixed rate (``--rate``), latency counted from when each request
  was due (no coordinated omission) -> p50/p99 and what the proxy adds to direct's.

Rounds are interleaved across arms and the median per arm is reported (the machine is shared).
Goal (GOALS.md): >= 5k rps through one proxy and <= 1 ms added p99.

    .venv/bin/python -m bench.bench_chaos_proxy [--seconds 3] [--rounds 3] [--rate 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import deque
from pathlib import Path
from typing import Any

from bench._report import write_report

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
        app.router.add_get("/", handle)
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

class _Client(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection that knows when a fixed-length response is complete."""

    def __init__(self, on_response: Any) -> None:
        self.on_response = on_response
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        head_end = self.buf.find(b"\r\n\r\n")
        if head_end < 0:
            return
        match = re.search(rb"(?i)content-length:\s*(\d+)", self.buf[:head_end])
        total = head_end + 4 + (int(match.group(1)) if match else 0)
        if len(self.buf) >= total:
            self.buf = self.buf[total:]
            self.on_response(self)

    def send(self) -> None:
        assert self.transport is not None
        self.transport.write(REQUEST)


async def _connect(port: int, count: int, on_response: Any) -> list[_Client]:
    loop = asyncio.get_running_loop()
    conns = []
    for _ in range(count):
        _, proto = await loop.create_connection(lambda: _Client(on_response), "127.0.0.1", port)
        conns.append(proto)
    return conns


async def open_loop(port: int, rate: float, seconds: float, conns: int) -> dict[str, float]:
    """Latency at a fixed request rate; a request waiting for a free connection counts its wait."""
    loop = asyncio.get_running_loop()
    idle: deque[_Client] = deque()
    waiting: deque[float] = deque()  # due times of requests with no free connection yet
    in_flight: dict[_Client, float] = {}
    latencies: list[float] = []

    def dispatch(client: _Client, due: float) -> None:
        in_flight[client] = due
        client.send()

    def on_response(client: _Client) -> None:
        latencies.append(loop.time() - in_flight.pop(client))
        if len(latencies) == total:
            drained.set()
        if waiting:
            dispatch(client, waiting.popleft())
        else:
            idle.append(client)

    idle.extend(await _connect(port, conns, on_response))
    total = int(rate * seconds)
    drained = asyncio.Event()
    start, issued = loop.time(), 0
    while issued < total:
        now = loop.time()
        due_count = min(total, int((now - start) * rate) + 1)
        for _ in range(due_count - issued):
            if idle:
                dispatch(idle.popleft(), now)
            else:
                waiting.append(now)
        issued = due_count
        await asyncio.sleep(0.0005)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(drained.wait(), 5)
    for client in list(idle) + list(in_flight):
        assert client.transport is not None
        client.transport.close()
    latencies.sort()
    if len(latencies) < total:
        raise RuntimeError(f"open loop: {total - len(latencies)} of {total} requests got no answer")

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    return {"p50_ms": pct(0.50), "p99_ms": pct(0.99), "p999_ms": pct(0.999)}


async def closed_loop_python(port: int, seconds: float, conns: int) -> dict[str, float]:
    """Fallback throughput driver when wrk is not installed (it saturates sooner than wrk)."""
    done = 0
    stop_at = asyncio.get_running_loop().time() + seconds

    def on_response(client: _Client) -> None:
        nonlocal done
        done += 1
        if asyncio.get_running_loop().time() < stop_at:
            client.send()

    clients = await _connect(port, conns, on_response)
    started = time.monotonic()
    for client in clients:
        client.send()
    await asyncio.sleep(seconds + 0.2)
    for client in clients:
        assert client.transport is not None
        client.transport.close()
    return {"rps": done / (time.monotonic() - started), "requests": done}


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

def measure(port: int, pids: dict[str, int], args: argparse.Namespace) -> dict[str, float]:
    """Throughput (with CPU per request of each process in `pids`), then open-loop latency."""
    cpu_before = {role: cpu_seconds(pid) for role, pid in pids.items()}
    if shutil.which("wrk"):
        result = wrk(port, args.seconds, args.conns)
    else:
        result = asyncio.run(closed_loop_python(port, args.seconds, args.conns))
    for role, pid in pids.items():
        result[f"{role}_cpu_us_per_req"] = (cpu_seconds(pid) - cpu_before[role]) / result["requests"] * 1e6
    result.update(asyncio.run(open_loop(port, args.rate, args.seconds, args.ol_conns)))
    return result


def _row(arm: str, m: dict[str, float], base: dict[str, float]) -> dict[str, Any]:
    proxy_cpu = m.get("proxy_cpu_us_per_req")
    return {"arm": arm, "rps": round(m["rps"]), "rps_vs_direct": round(m["rps"] / base["rps"], 3),
            "wrk_p99_ms": round(m["wrk_p99_ms"], 3) if "wrk_p99_ms" in m else None,
            "upstream_cpu_us_req": round(m["upstream_cpu_us_per_req"], 1),
            "proxy_cpu_us_req": round(proxy_cpu, 1) if proxy_cpu is not None else None,
            "ol_p50_ms": round(m["p50_ms"], 3), "ol_p99_ms": round(m["p99_ms"], 3),
            "ol_p999_ms": round(m["p999_ms"], 3),
            "added_p50_ms": round(m["p50_ms"] - base["p50_ms"], 3),
            "added_p99_ms": round(m["p99_ms"] - base["p99_ms"], 3)}


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
                samples[arm].append(measure(port, pids[arm], args))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)

    med = {arm: {k: statistics.median(s[k] for s in runs) for k in runs[0]} for arm, runs in samples.items()}
    rows = [_row(arm, m, med["direct"]) for arm, m in med.items()]
    proxy, base = med["proxy"], med["direct"]
    notes = {
        "driver": "wrk -t1 closed loop" if shutil.which("wrk") else "python closed loop (wrk not found)",
        "open_loop": f"{args.rate:.0f} req/s for {args.seconds:.0f} s on {args.ol_conns} keep-alive conns",
        "rounds": args.rounds,
        "cpu_us_req": "CPU time per request of the upstream / proxy process during the closed-loop run",
        "goal": f">= {GOAL_RPS:.0f} rps through one proxy, <= {GOAL_ADDED_P99_MS} ms added p99",
        "proxy_capacity_rps_per_core": round(1e6 / proxy["proxy_cpu_us_per_req"]),
        "goal_met": proxy["rps"] >= GOAL_RPS and proxy["p99_ms"] - base["p99_ms"] <= GOAL_ADDED_P99_MS,
    }
    write_report("chaos_proxy", rows, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
