"""What the console knows about the mesh: the latest answer of each operator-API read.

Each read is a `Fetched`: data, "not available on this control plane yet", or an error message.
Panes render a `MeshState`; they never call the API themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

FetchState = Literal["pending", "ok", "unavailable", "error"]


@dataclass(frozen=True)
class Fetched:
    """One read's outcome. `data` keeps the last good answer even after a later failure."""

    state: FetchState = "pending"
    data: Any = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.state == "ok"


PENDING = Fetched()


@dataclass
class ChaosWatch:
    """A chaos run this console started, followed until it ends."""

    run_id: str
    experiment: str
    run: Fetched = PENDING

    @property
    def finished(self) -> bool:
        if not self.run.ok or not isinstance(self.run.data, dict):
            return False
        status = str(self.run.data.get("status", "")).lower()
        return status in TERMINAL_RUN_STATES


TERMINAL_RUN_STATES = frozenset({"finished", "completed", "succeeded", "failed", "aborted",
                                 "rolled_back", "interrupted", "error", "deviated"})


@dataclass
class MeshState:
    """Everything the panes draw. `reachable` is about the control plane as a whole."""

    reachable: bool | None = None  # None until the first poll finished
    unreachable_reason: str = ""
    polls: int = 0  # polls completed
    revision: int = 0  # moves when a poll saw something new
    status: Fetched = PENDING
    health: Fetched = PENDING
    models: Fetched = PENDING
    canary: Fetched = PENDING
    drift: Fetched = PENDING
    traffic: Fetched = PENDING
    load: Fetched = PENDING
    experiments: Fetched = PENDING
    ab: Fetched = PENDING  # GET /api/v1/ab-stats
    decisions: dict[int, dict[str, Any]] = field(default_factory=dict)  # seq -> Decision
    decisions_state: Fetched = PENDING
    last_seq: int = 0
    chaos: ChaosWatch | None = None

    def ordered_decisions(self) -> list[dict[str, Any]]:
        """Newest first."""
        return [self.decisions[s] for s in sorted(self.decisions, reverse=True)]


# ---- tolerant readers: shapes from docs/operator-api.md, some fields optional ------------------
def pick(data: Any, *names: str, default: Any = None) -> Any:
    """The first of `names` present (and not None) in the mapping `data`."""
    if not isinstance(data, dict):
        return default
    for name in names:
        if data.get(name) is not None:
            return data[name]
    return default


def unwrap(data: Any, *keys: str) -> Any:
    """`{"models": {...}}` -> `{...}` when the answer wraps its payload in one of `keys`."""
    if isinstance(data, dict):
        for key in keys:
            inner = data.get(key)
            if isinstance(inner, dict | list):
                return inner
    return data


def per_model(data: Any, *wrappers: str) -> dict[str, Any]:
    """A per-model answer as {model: entry}, whether the API sends a mapping or a list of entries."""
    data = unwrap(data, *wrappers)
    if isinstance(data, list):
        out: dict[str, Any] = {}
        for item in data:
            if isinstance(item, dict):
                name = pick(item, "model", "kind", "name", default=f"#{len(out) + 1}")
                out[str(name)] = item
        return out
    if isinstance(data, dict):
        return {str(k): v for k, v in data.items() if isinstance(v, dict)}
    return {}


def as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
