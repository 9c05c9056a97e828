"""Per-run state shared by the extension's probes and actions (one experiment per process).

Chaos Toolkit calls activities as plain functions by module path, so what one step set up (the
load, marks, what was killed or re-pointed) lives here; `restore_mesh` reads it to undo everything.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from chaos.extension.load import BackgroundLoad, Window
from chaos.extension.mesh import http_json
from data_plane.settings import Settings


@dataclass
class Flapper:
    service: str
    stop: threading.Event
    thread: threading.Thread


@dataclass
class ExperimentContext:
    settings: Settings
    seed: int = 0
    started_at: float = field(default_factory=time.time)
    ledger_seq: int | None = None  # last decision seq when the run began
    marks: dict[str, float] = field(default_factory=dict)
    mark_weights: dict[str, dict[str, float]] = field(default_factory=dict)
    mark_ejections: dict[str, dict[str, int]] = field(default_factory=dict)
    loads: list[BackgroundLoad] = field(default_factory=list)
    down: list[str] = field(default_factory=list)  # services killed/stopped: restart on restore
    paused: list[str] = field(default_factory=list)  # SIGSTOPped: SIGCONT on restore
    proxies: dict[str, str] = field(default_factory=dict)  # cluster -> fault-proxy name
    flappers: list[Flapper] = field(default_factory=list)
    challengers: dict[str, str] = field(default_factory=dict)  # model -> version this run registered
    seen: dict[str, dict[str, Any]] = field(default_factory=dict)  # what probes found (drift report...)

    def mark_time(self, name: str | None) -> float | None:
        if name is None:
            return None
        if name == "start":
            return self.started_at
        if name not in self.marks:
            raise KeyError(f"no mark {name!r} was set (marks: {', '.join(self.marks) or 'none'})")
        return self.marks[name]

    def window(self, start: float | None, end: float | None) -> Window:
        """The client's view across every load this run started."""
        parts = [load.window(start, end) for load in self.loads]
        if len(parts) == 1:
            return parts[0]
        merged: dict[str, Any] = {"requests": 0, "errors": 0, "model_types": {}, "routed_to": {},
                                  "fallback_reasons": {}, "model_versions": {}}
        for w in parts:
            merged["requests"] += w.requests
            merged["errors"] += w.errors
            for key in ("model_types", "routed_to", "fallback_reasons", "model_versions"):
                for k, v in getattr(w, key).items():
                    merged[key][k] = merged[key].get(k, 0) + v
        p99 = max((w.p99_ms for w in parts), default=0.0)
        p50 = max((w.p50_ms for w in parts), default=0.0)
        return Window(p50_ms=p50, p99_ms=p99, **merged)


_lock = threading.Lock()
_current: ExperimentContext | None = None


def begin(settings: Settings | None = None, seed: int = 0) -> ExperimentContext:
    """Start a fresh context (the runner calls this before each experiment)."""
    global _current
    with _lock:
        ctx = ExperimentContext(settings=settings or Settings.from_env(), seed=seed)
        status, body = http_json("GET", f"{ctx.settings.operator_url}/api/v1/decisions?limit=1")
        if status == 200 and isinstance(body, dict):
            ctx.ledger_seq = int(body.get("last_seq") or 0)
        _current = ctx
        return ctx


def current() -> ExperimentContext:
    """The running experiment's context (created from the environment when no runner began one)."""
    with _lock:
        ctx = _current
    return ctx if ctx is not None else begin()


def end() -> None:
    global _current
    with _lock:
        _current = None
