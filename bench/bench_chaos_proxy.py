"""Fault proxy overhead: one proxy (no toxics) in front of an aiohttp fixed response, vs direct.

Arms, each measured in the same run against the same upstream process:
- ``direct``: the client talks to the upstream;
- ``proxy``: through ``python -m chaos.proxy`` (uvloop, the default), no toxics (plain-copy path);
- ``proxy-asyncio``: the same proxy on the stock asyncio loop;
- ``proxy-noop-toxics``: uvloop proxy with a ``noop`` toxic each way (forces the toxic-chain path).

Two measurements per arm, both over keep-alive connections:
- throughput: ``wrk`` closed loop (``--conns`` connections; a Python closed-loop client when wrk is
  missing) -> rps and the ratio to direct;
- latency: an open-loop client at a fixed rate (``--rate``) to direct *and* the proxy arm at once,
  requests interleaved, latency counted from when each request was due (no coordinated omission)
  -> p50/p99 and what the proxy adds to direct's under the same moment-to-moment noise;
- CPU time per request of the proxy and upstream processes (robust on a shared machine).

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


class _Target:
    """One side of a paired open-loop run: its connections, queue and latencies."""

    def __init__(self) -> None:
        self.idle: deque[_Client] = deque()
        self.waiting: deque[float] = deque()  # due times of requests with no free connection yet
        self.in_flight: dict[_Client, float] = {}
        self.latencies: list[float] = []

    def submit(self, due: float) -> None:
        if self.idle:
            self.dispatch(self.idle.popleft(), due)
        else:
            self.waiting.append(due)

    def dispatch(self, client: _Client, due: float) -> None:
        self.in_flight[client] = due
        client.send()

    def percentiles(self) -> dict[str, float]:
        lat = sorted(self.latencies)

        def pct(q: float) -> float:
            return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000

        return {"p50_ms": pct(0.50), "p99_ms": pct(0.99), "p999_ms": pct(0.999)}


async def open_loop(ports: list[int], rate: float, seconds: float, conns: int) -> list[dict[str, float]]:
    """Latency at `rate` req/s to each port, requests interleaved so every port sees the same moment.

    Pairing direct with a proxy in one run makes their difference meaningful on a noisy machine.
    Latency runs from when a request was due, so a request that waits for a free connection
    counts its wait (no coordinated omission).
    """
    loop = asyncio.get_running_loop()
    targets = [_Target() for _ in ports]
    total = int(rate * seconds) * len(ports)
    answered = 0
    drained = asyncio.Event()

    def responder(target: _Target) -> Any:
        def on_response(client: _Client) -> None:
            nonlocal answered
            target.latencies.append(loop.time() - target.in_flight.pop(client))
            answered += 1
            if answered == total:
                drained.set()
            if target.waiting:
                target.dispatch(client, target.waiting.popleft())
            else:
                target.idle.append(client)
        return on_response

    for target, port in zip(targets, ports, strict=True):
        target.idle.extend(await _connect(port, conns, responder(target)))
    start, issued = loop.time(), 0
    while issued < total:
        now = loop.time()
        due = min(total, int((now - start) * rate * len(ports)) + 1)
        for i in range(issued, due):
            targets[i % len(targets)].submit(now)
        issued = due
        await asyncio.sleep(0.0005)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(drained.wait(), 5)
    for target in targets:
        for client in list(target.idle) + list(target.in_flight):
            assert client.transport is not None
            client.transport.close()
    if answered < total:
        raise RuntimeError(f"open loop: {total - answered} of {total} requests got no answer")
    return [t.percentiles() for t in targets]


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

def throughput(port: int, pids: dict[str, int], args: argparse.Namespace) -> dict[str, float]:
    """Closed-loop rps, with the CPU time per request of each process in `pids`."""
    cpu_before = {role: cpu_seconds(pid) for role, pid in pids.items()}
    if shutil.which("wrk"):
        result = wrk(port, args.seconds, args.conns)
    else:
        result = asyncio.run(closed_loop_python(port, args.seconds, args.conns))
    for role, pid in pids.items():
        result[f"{role}_cpu_us_per_req"] = (cpu_seconds(pid) - cpu_before[role]) / result["requests"] * 1e6
    return result


def latency(direct: int, proxied: int, args: argparse.Namespace) -> dict[str, float]:
    """Open-loop latency of a proxy arm and of direct, measured together; `added_*` is the difference."""
    base, arm = asyncio.run(open_loop([direct, proxied], args.rate, args.seconds, args.ol_conns))
    return {**arm, "direct_p50_ms": base["p50_ms"], "direct_p99_ms": base["p99_ms"],
            "direct_p999_ms": base["p999_ms"],
            "added_p50_ms": arm["p50_ms"] - base["p50_ms"], "added_p99_ms": arm["p99_ms"] - base["p99_ms"]}


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
        "driver": "wrk -t1 closed loop" if shutil.which("wrk") else "python closed loop (wrk not found)",
        "open_loop": f"{args.rate:.0f} req/s each to direct and one proxy arm at once (interleaved), "
                     f"{args.seconds:.0f} s, {args.ol_conns} keep-alive conns each; added = arm - direct",
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
