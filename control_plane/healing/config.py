"""Settings of the self-healing loop: defaults chosen to move traffic within 1 s of a kill.

Every knob has a `MESH_HEALING_<NAME>` environment variable (the control-plane process reads them
once at start); `MESH_HEALING=0` turns the loop off (signals, reconciler and its API routes).

| variable | default | meaning |
|---|---|---|
| MESH_HEALING_SCRAPE_S | 0.25 | one round (edge admin scrape + probes + decisions) per this many s |
| MESH_HEALING_WINDOW_S | 10 | sliding window of the error rate and p95 |
| MESH_HEALING_PROBE_TIMEOUT_S | 0.3 | per /ready probe |
| MESH_HEALING_ADMIN_TIMEOUT_S | 0.5 | per edge admin request |
| MESH_HEALING_MIN_REQUESTS | 20 | attempts (or timed answers) a window needs before rates count |
| MESH_HEALING_SICK_ERROR_RATE / _SICK_P95_MS | 0.10 / 500 | seed 000's rollback rule |
| MESH_HEALING_HEALTHY_ERROR_RATE / _HEALTHY_P95_MS | 0.02 / 250 | hysteresis: healthy only below |
| MESH_HEALING_DWELL_S | 5 | good evidence must hold this long before a restore |
| MESH_HEALING_TIMEOUT_FAILURES | 2 | timed-out probe rounds in a row that mean unreachable |
| MESH_HEALING_COOLDOWN_S | 3 | no second change of a service within this time |
| MESH_HEALING_BURST / _REFILL_PER_MINUTE | 2 / 2 | token bucket per service: <= 4 changes in any 60 s |
| MESH_HEALING_HEARTBEAT_S | 10 | a mesh.health.<service> event per service at least this often |
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from control_plane.healing.health_rules import GovernorPolicy, HealthPolicy
from data_plane import envconfig
from data_plane.contracts.errors import ConfigError

PREFIX = "MESH_HEALING_"
NAMES = {"scrape_interval_s": "SCRAPE_S"}  # fields whose variable is not their name in capitals


@dataclass(frozen=True)
class HealingConfig:
    enabled: bool = True
    scrape_interval_s: float = 0.25
    window_s: float = 10.0
    probe_timeout_s: float = 0.3
    admin_timeout_s: float = 0.5
    heartbeat_s: float = 10.0
    history_interval_s: float = 2.0
    history_points: int = 300  # 10 min of 2 s points
    policy: HealthPolicy = field(default_factory=HealthPolicy)
    governor: GovernorPolicy = field(default_factory=GovernorPolicy)

    def __post_init__(self) -> None:
        for name in ("scrape_interval_s", "window_s", "probe_timeout_s", "admin_timeout_s", "heartbeat_s",
                     "history_interval_s"):
            value = getattr(self, name)
            if not value > 0 or math.isinf(value):
                raise ConfigError(f"{env_key(name)}={value} must be a positive number of seconds")
        if self.history_points < 2:
            raise ConfigError(f"{env_key('history_points')}={self.history_points} must be >= 2")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> HealingConfig:
        """Defaults overridden by MESH_HEALING_* variables; a bad value names its variable."""
        env = os.environ if env is None else env
        enabled = envconfig.switch(env, "MESH_HEALING")
        top: dict[str, Any] = {f.name: _read(env, f.name, f.type) for f in fields(cls)
                               if f.name not in ("enabled", "policy", "governor")}
        policy: dict[str, Any] = {f.name: _read(env, f.name, f.type) for f in fields(HealthPolicy)}
        governor: dict[str, Any] = {f.name: _read(env, f.name, f.type) for f in fields(GovernorPolicy)}
        return cls(enabled=enabled, **{k: v for k, v in top.items() if v is not None},
                   policy=replace(HealthPolicy(), **{k: v for k, v in policy.items() if v is not None}),
                   governor=replace(GovernorPolicy(), **{k: v for k, v in governor.items() if v is not None}))

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {f.name: getattr(self, f.name) for f in fields(self)
                                  if f.name not in ("policy", "governor")}
        out["policy"] = {f.name: getattr(self.policy, f.name) for f in fields(self.policy)}
        out["governor"] = {f.name: getattr(self.governor, f.name) for f in fields(self.governor)}
        return out


def env_key(field_name: str) -> str:
    """The variable of a field: MESH_HEALING_ + its name in capitals (the scrape interval: SCRAPE_S)."""
    return envconfig.variable(PREFIX, field_name, NAMES)


def _read(env: Mapping[str, str], field_name: str, kind: object) -> float | int | None:
    key = env_key(field_name)
    raw = env.get(key)
    if raw is None or raw.strip() == "":
        return None
    value: float | int = envconfig.parse(key, raw, "int" if kind in (int, "int") else "float")
    return value
