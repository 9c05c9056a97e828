"""What a load run measured: live counters (`Tally`), per-second `Progress` and the final `LoadResult`."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import msgspec

from data_plane.load.histogram import LatencyHistogram

# Error kinds (requests that got no HTTP response at all).
CONNECT = "connect"
TIMEOUT = "timeout"
DISCONNECTED = "disconnected"
PROTOCOL = "protocol"
CANCELLED = "cancelled"


class _Reply(msgspec.Struct):
    """The response fields the generator tallies; everything else in the body is skipped."""

    routed_to: str | None = None
    fallback_reason: str | None = None
    model_type: str | None = None
    model_version: str | None = None


_reply_decoder = msgspec.json.Decoder(_Reply)
_NONE = "none"  # tally key for a JSON null (e.g. no fallback happened)


class Tally:
    """Mutable counters the engine updates per response. Not thread-safe (one event loop)."""

    def __init__(self) -> None:
        self.hist = LatencyHistogram()
        self.sent = 0
        self.responses = 0
        self.ok = 0
        self.errors = 0
        self.undecodable = 0
        self.late = 0
        self.max_dispatch_lag_ns = 0
        self.by_status: Counter[str] = Counter()
        self.by_routed_to: Counter[str] = Counter()
        self.by_fallback_reason: Counter[str] = Counter()
        self.by_model_type: Counter[str] = Counter()
        self.by_model_version: Counter[str] = Counter()
        self.by_error: Counter[str] = Counter()

    def response(self, status: int, body: bytes, latency_ns: int) -> None:
        """Count one HTTP response; 2xx bodies are decoded for routing fields."""
        self.responses += 1
        self.hist.record(latency_ns)
        self.by_status[str(status)] += 1
        if not 200 <= status < 300:
            return
        self.ok += 1
        try:
            reply = _reply_decoder.decode(body)
        except msgspec.DecodeError:  # also covers ValidationError (wrong types)
            self.undecodable += 1
            return
        self.by_routed_to[reply.routed_to or _NONE] += 1
        self.by_fallback_reason[reply.fallback_reason or _NONE] += 1
        self.by_model_type[reply.model_type or _NONE] += 1
        self.by_model_version[reply.model_version or _NONE] += 1

    def error(self, kind: str) -> None:
        """Count one request that got no response (connection refused, timeout, ...)."""
        self.errors += 1
        self.by_error[kind] += 1


@dataclass(frozen=True)
class Progress:
    """One per-second progress report."""

    elapsed_s: float
    total_s: float | None  # planned duration; None for a request-count bound run
    sent: int
    ok: int
    errors: int
    rps: float  # responses in the last tick, per second
    p99_ms: float  # over the run so far


@dataclass
class LoadResult:
    """Everything a run measured. Latencies in ms; open-loop latency counts from intended send."""

    mode: str  # "open" or "closed"
    url: str
    rate: float | None
    concurrency: int | None
    planned_duration_s: float | None
    planned_requests: int | None
    elapsed_s: float
    sent: int
    responses: int
    ok: int
    errors: int
    achieved_rps: float
    latency_ms: dict[str, float]
    by_status: dict[str, int] = field(default_factory=dict)
    by_routed_to: dict[str, int] = field(default_factory=dict)
    by_fallback_reason: dict[str, int] = field(default_factory=dict)
    by_model_type: dict[str, int] = field(default_factory=dict)
    by_model_version: dict[str, int] = field(default_factory=dict)
    by_error: dict[str, int] = field(default_factory=dict)
    undecodable: int = 0
    # Open loop only: sends > late_after_ms behind schedule (outstanding cap or a busy generator),
    # and scheduled requests never sent (the run ended or was stopped while they waited).
    late: int = 0
    not_sent: int = 0
    max_dispatch_lag_ms: float = 0.0
    max_outstanding: int | None = None
    stopped_early: bool = False
    event_loop: str = "asyncio"
    transport: str = "http1"

    @property
    def unreachable(self) -> bool:
        """True when not one request got an HTTP response and the failures were connection errors."""
        return self.responses == 0 and self.by_error.get(CONNECT, 0) > 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the `--json` output of `meshctl load`)."""
        d = asdict(self)
        d["unreachable"] = self.unreachable
        return d

    @classmethod
    def from_tally(cls, tally: Tally, *, elapsed_s: float, **plan: Any) -> LoadResult:
        """Freeze a run's counters into a result."""
        return cls(
            elapsed_s=round(elapsed_s, 4), sent=tally.sent, responses=tally.responses, ok=tally.ok,
            errors=tally.errors,
            achieved_rps=round(tally.responses / elapsed_s, 2) if elapsed_s > 0 else 0.0,
            latency_ms={k: round(v, 4) for k, v in tally.hist.percentiles_ms().items()},
            by_status=dict(tally.by_status), by_routed_to=dict(tally.by_routed_to),
            by_fallback_reason=dict(tally.by_fallback_reason),
            by_model_type=dict(tally.by_model_type), by_model_version=dict(tally.by_model_version),
            by_error=dict(tally.by_error), undecodable=tally.undecodable, late=tally.late,
            max_dispatch_lag_ms=round(tally.max_dispatch_lag_ns / 1e6, 3), **plan)
