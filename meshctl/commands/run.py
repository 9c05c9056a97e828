"""`meshctl run` (behind `make run`): the whole demo in one command.

Trains when the registry is empty, starts the mesh, starts gentle background load so there is
something to watch, then opens the console (or, with no terminal, prints a status line every few
seconds). Ctrl-C, quitting the console, or `meshctl down` stops everything.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from data_plane.contracts.errors import MeshError, ModelNotFoundError
from data_plane.settings import Settings
from meshctl import lifecycle

SEED_EXAMPLE = {
    "amount": 1500.00, "merchant_category": 7, "hour_of_day": 2, "day_of_week": 6,
    "distance_from_home": 150.0, "distance_from_last_txn": 80.0, "is_foreign": 1,
    "velocity_last_1h": 5, "velocity_last_24h": 12, "avg_amount_last_7d": 200.0,
    "card_age_days": 15,
}


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "run", help="train if needed, start the mesh with demo load, open the console",
        description="The one-command demo (make run). Without a terminal it runs headless and "
                    "prints a status line every few seconds. Ctrl-C stops everything.")
    p.add_argument("--rate", type=float, default=20.0, help="background load in requests/s (default 20)")
    p.add_argument("--rows", type=int, default=50_000, help="training rows when the registry is empty")
    p.add_argument("--headless", action="store_true", help="never open the console")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between headless status lines")
    p.add_argument("--for", dest="run_for", type=float, default=None,
                   help="stop by itself after this many seconds (headless; for scripts and tests)")
    p.set_defaults(func=run)


def registry_empty(settings: Settings) -> bool:
    from data_plane.registry import Registry

    try:
        return Registry(settings).is_empty()
    except ModelNotFoundError:
        return True


def train_if_empty(settings: Settings, rows: int) -> bool:
    """Train and register both models when nothing is registered yet; True when it trained."""
    if not registry_empty(settings):
        return False
    from meshctl.commands.train import StageProgress, render
    from training.pipeline import train_all

    print(f"no model registered yet: training on {rows:,} synthetic rows", flush=True)
    progress = StageProgress(sys.stderr)
    report = train_all(settings, rows=rows, seed=0, progress=progress)
    progress.finish()
    print(render(report), flush=True)
    return True


def _http(method: str, url: str, body: dict[str, Any] | None = None, token: str | None = None,
          timeout: float = 2.0) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - loopback URLs only
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (urllib.error.URLError, OSError, ValueError):
        return 0, None


def first_prediction(settings: Settings, timeout: float = 30.0) -> tuple[float, Any]:
    """Seconds until the edge answers the seed example with a model's score (not a default)."""
    t0 = time.monotonic()
    url = f"{settings.edge_url}/api/v1/predict"
    last: Any = None
    while time.monotonic() - t0 < timeout:
        status, body = _http("POST", url, SEED_EXAMPLE)
        last = body
        if status == 200 and isinstance(body, dict) and body.get("model_type") != "conservative_default":
            return time.monotonic() - t0, body
        time.sleep(0.2)
    raise MeshError(f"the edge did not answer with a model within {timeout:.0f}s (last answer: {last}); "
                    f"see the logs in {settings.log_dir}")


def status_line(settings: Settings) -> str:
    _, summary = _http("GET", f"{settings.operator_url}/api/v1/traffic/summary?window=10")
    _, load = _http("GET", f"{settings.operator_url}/api/v1/load")
    _, status = _http("GET", f"{settings.operator_url}/api/v1/status")
    parts = [time.strftime("%H:%M:%S")]
    if isinstance(status, dict):
        weights = status.get("effective_weights") or {}
        parts.append("weights " + " ".join(f"{k}={v:.2f}" for k, v in weights.items()))
        parts.append(f"xds v{status.get('version')}")
    else:
        parts.append("control plane unreachable")
    if isinstance(summary, dict):
        parts.append(f"rps {_num(summary, 'rps'):.1f} p99 {_num(summary, 'p99_ms'):.1f}ms "
                     f"errors {100 * _num(summary, 'error_rate'):.2f}%")
    elif isinstance(load, dict):
        parts.append(f"load sent {load.get('sent', 0)} errors {load.get('errors', 0)}")
    return " | ".join(parts)


def _num(d: dict[str, Any], key: str) -> float:
    value = d.get(key)
    return float(value) if isinstance(value, int | float) else 0.0


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    settings.ensure_home()
    train_if_empty(settings, args.rows)
    started = time.monotonic()
    lifecycle.up(settings, out=lambda line: print(line, flush=True))
    try:
        first_prediction(settings)
        took, answer = time.monotonic() - started, first_prediction(settings)[1]
        print(f"first prediction {took:.1f}s after `up` began: {json.dumps(answer)}", flush=True)
        token = settings.operator_token_file.read_text().strip()
        code, load = _http("POST", f"{settings.operator_url}/api/v1/load/start",
                           {"rate": args.rate, "duration": 24 * 3600}, token=token)
        if code == 202:
            print(f"background load: {args.rate:g} requests/s through the edge", flush=True)
        else:
            print(f"background load did not start (HTTP {code}: {load}); the mesh runs without it",
                  flush=True)
        interactive = sys.stdin.isatty() and sys.stdout.isatty() and not args.headless
        if interactive:
            _console(settings)
        else:
            _headless(settings, args.interval, args.run_for)
    finally:
        print("stopping the mesh", flush=True)
        lifecycle.down(settings, out=lambda line: print(line, flush=True))
    return 0


def _console(settings: Settings) -> None:
    from meshctl.commands.console import _log_to_file
    from tui.app import MeshConsole
    from tui.client import OperatorClient
    from tui.events import NatsEventSource

    _log_to_file(settings)
    MeshConsole(OperatorClient(settings.operator_url, settings.operator_token_file),
                NatsEventSource(settings.nats_url)).run()


def _headless(settings: Settings, interval: float, run_for: float | None) -> None:
    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    deadline = None if run_for is None else time.monotonic() + run_for
    print("no terminal: running headless (Ctrl-C or `meshctl down` stops)", flush=True)
    try:
        while deadline is None or time.monotonic() < deadline:
            print(status_line(settings), flush=True)
            if not any(lifecycle.is_running(r) for r in lifecycle.load_records(settings).values()):
                print("every service has stopped", flush=True)
                return
            time.sleep(interval if deadline is None else max(0.0, min(interval, deadline - time.monotonic())))
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
