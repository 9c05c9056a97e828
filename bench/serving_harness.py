"""Serving-benchmark helpers: a closed-loop ceiling (wrk when installed) and open-loop latency.

- ``measure_ceiling``: how many requests/s the target answers with ``concurrency`` connections
  kept busy. Uses ``wrk`` (C, cheap per request) when it is on PATH, with a generated Lua script
  for the POST body, else the project's Python engine (which then may be the limit itself:
  see bench/bench_loadgen.py for how much one Python process can drive).
- ``measure_open_loop``: p50/p99 at a fixed rate, latency from the intended send time (free of
  coordinated omission), with the Python engine.

Both are synchronous (each starts its own event loop) and refuse non-loopback targets.
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from data_plane.load import LoadPlan, check_target, fixed_payloads, run_load
from data_plane.load.results import LoadResult

_MARK = "WRK_RESULT "

# wrk's done() hook prints one JSON line we can parse exactly (no scraping of its text report).
_LUA = """\
wrk.method = "POST"
wrk.body = {body}
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{mark}{{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,' ..
    '"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.3f}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50.0), latency:percentile(90.0), latency:percentile(99.0),
    latency:percentile(99.9), latency.max, latency.mean))
end
"""


def wrk_available() -> bool:
    """True when the `wrk` binary is on PATH (Debian: `apt-get install -y wrk`)."""
    return shutil.which("wrk") is not None


def _body_bytes(body: bytes | str | Mapping[str, Any]) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return json.dumps(dict(body), separators=(",", ":")).encode()


def _lua_long_string(text: str) -> str:
    """`text` as a Lua long-bracket literal whose level never clashes with its content."""
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    eq = "=" * level
    return f"[{eq}[{text}]{eq}]"


def wrk_script(body: bytes, headers: Mapping[str, str] | None = None) -> str:
    """The Lua script that makes wrk POST `body` as JSON and print a parseable summary."""
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    lines = "\n".join(f"wrk.headers[ {_lua_long_string(k)} ] = {_lua_long_string(v)}"
                      for k, v in hdrs.items())
    return _LUA.format(body=_lua_long_string(body.decode()), headers=lines, mark=_MARK)


def _children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _self_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _wrk_ceiling(url: str, body: bytes, concurrency: int, duration: float, timeout: float,
                 headers: Mapping[str, str] | None, threads: int | None) -> dict[str, Any]:
    threads = max(1, min(concurrency, threads or os.cpu_count() or 1))
    seconds = max(1, math.ceil(duration))  # wrk takes whole seconds
    with tempfile.TemporaryDirectory(prefix="wrk-") as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(wrk_script(body, headers))
        cpu0 = _children_cpu_s()
        proc = subprocess.run(
            ["wrk", "-t", str(threads), "-c", str(concurrency), "-d", f"{seconds}s",
             "--timeout", f"{max(1, math.ceil(timeout))}s", "-s", str(script), url],
            capture_output=True, text=True, timeout=seconds + timeout + 30)
        cpu = _children_cpu_s() - cpu0
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(_MARK)), None)
    if proc.returncode != 0 or line is None:
        detail = proc.stderr.strip() or proc.stdout[-500:]
        raise RuntimeError(f"wrk failed (exit {proc.returncode}): {detail}")
    w = json.loads(line[len(_MARK):])
    elapsed = w["duration_us"] / 1e6
    socket_errors = w["connect"] + w["read"] + w["write"] + w["timeout"]
    return {
        "tool": "wrk", "url": url, "concurrency": concurrency, "threads": threads,
        "duration_s": round(elapsed, 3), "requests": w["requests"],
        "rps": round(w["requests"] / elapsed, 1) if elapsed else 0.0,
        "p50_ms": w["p50_us"] / 1e3, "p90_ms": w["p90_us"] / 1e3, "p99_ms": w["p99_us"] / 1e3,
        "p99.9_ms": w["p999_us"] / 1e3, "max_ms": w["max_us"] / 1e3,
        "errors": socket_errors, "non_2xx": w["status"],
        "client_cpu_us_per_request": round(1e6 * cpu / w["requests"], 2) if w["requests"] else None,
    }


def _engine_row(r: LoadResult, cpu_s: float) -> dict[str, Any]:
    lat = r.latency_ms
    return {
        "tool": "engine", "transport": r.transport, "url": r.url, "event_loop": r.event_loop,
        "duration_s": r.elapsed_s, "requests": r.responses, "rps": r.achieved_rps,
        "p50_ms": lat["p50"], "p95_ms": lat["p95"], "p99_ms": lat["p99"], "p99.9_ms": lat["p99.9"],
        "max_ms": lat["max"], "errors": r.errors, "non_2xx": r.responses - r.ok,
        "client_cpu_us_per_request": round(1e6 * cpu_s / r.sent, 2) if r.sent else None,
    }


def measure_ceiling(url: str, body: bytes | str | Mapping[str, Any], concurrency: int, duration: float,
                    *, tool: str = "auto", timeout: float = 5.0, headers: Mapping[str, str] | None = None,
                    threads: int | None = None, transport: str = "http1") -> dict[str, Any]:
    """Closed-loop throughput ceiling: rps and latency with `concurrency` busy connections.

    `tool`: "auto" (wrk if installed, else the engine), "wrk" or "engine"; `transport` is the
    engine's (http1 by default: the cheapest client leaves the most CPU to the target).
    """
    check_target(url)
    if tool not in ("auto", "wrk", "engine"):
        raise ValueError(f"tool must be auto, wrk or engine (got {tool!r})")
    raw = _body_bytes(body)
    if tool == "wrk" or (tool == "auto" and wrk_available()):
        if not wrk_available():
            raise RuntimeError("wrk is not on PATH (apt-get install -y wrk), use tool='engine'")
        return _wrk_ceiling(url, raw, concurrency, duration, timeout, headers, threads)
    plan = LoadPlan(url=url, concurrency=concurrency, duration=duration, timeout=timeout,
                    transport=transport)
    cpu0 = _self_cpu_s()
    result = run_load(plan, fixed_payloads([raw], headers))
    row = _engine_row(result, _self_cpu_s() - cpu0)
    row["concurrency"] = concurrency
    return row


def measure_open_loop(url: str, body: bytes | str | Mapping[str, Any], rate: float, duration: float,
                      *, timeout: float = 5.0, headers: Mapping[str, str] | None = None,
                      max_outstanding: int | None = None, transport: str = "http1") -> dict[str, Any]:
    """Latency at a fixed offered `rate` (rps) for `duration` s, from each intended send time.

    `transport`: the engine's client, http1 by default (least CPU taken from the target).
    """
    check_target(url)
    plan = LoadPlan(url=url, rate=rate, duration=duration, timeout=timeout,
                    max_outstanding=max_outstanding, transport=transport)
    cpu0 = _self_cpu_s()
    started = time.perf_counter()
    result = run_load(plan, fixed_payloads([_body_bytes(body)], headers))
    row = _engine_row(result, _self_cpu_s() - cpu0)
    row.update(rate=rate, wall_s=round(time.perf_counter() - started, 3), late=result.late,
               not_sent=result.not_sent, max_send_lag_ms=result.max_dispatch_lag_ms)
    return row
