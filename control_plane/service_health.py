"""Probe the mesh's processes over their health endpoints (for /health and /api/v1/status)."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from control_plane.intent import SERVICES
from data_plane.settings import Settings


@dataclass(frozen=True)
class HealthTarget:
    name: str
    kind: str  # nats | envoy | model_server
    url: str
    ports: tuple[int, ...]


def health_targets(settings: Settings) -> list[HealthTarget]:
    """Every process the control plane reports on, with the URL that says whether it is ready."""
    h, p = settings.host, settings.ports
    targets = [HealthTarget("nats", "nats", f"http://{h}:{p.nats_monitor}/healthz",
                            (p.nats, p.nats_monitor)),
               HealthTarget("edge", "envoy", f"http://{settings.advertised_host('edge')}:{p.edge_admin}/ready",
                            (p.edge, p.edge_admin))]
    for svc in SERVICES:
        challenger = getattr(p, f"{svc}_challenger", None)
        ports = (getattr(p, svc), challenger) if challenger else (getattr(p, svc),)
        at = settings.advertised_host(svc)
        targets.append(HealthTarget(svc, "model_server", f"http://{at}:{ports[0]}/ready", ports))
        if settings.sidecars:
            admin = getattr(p, f"sidecar_admin_{svc}")
            targets.append(HealthTarget(f"sidecar-{svc}", "envoy", f"http://{at}:{admin}/ready",
                                        (getattr(p, f"sidecar_{svc}"), admin)))
    return targets


class ServiceProbe:
    """Concurrent, short-timeout probes, cached briefly so a busy /health does not fan out per call."""

    def __init__(self, settings: Settings, timeout: float = 0.5, ttl: float = 1.0) -> None:
        self.targets = health_targets(settings)
        self.timeout = timeout
        self.ttl = ttl
        self._cached: tuple[float, dict[str, dict[str, Any]]] | None = None
        self._lock = asyncio.Lock()

    async def probe(self) -> dict[str, dict[str, Any]]:
        """name -> {kind, url, healthy, status, error}; at most `timeout` seconds."""
        async with self._lock:
            if self._cached and time.monotonic() - self._cached[0] < self.ttl:
                return self._cached[1]
            timeout = aiohttp.ClientTimeout(total=self.timeout)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                results = await asyncio.gather(*(self._one(session, t) for t in self.targets))
            out = {t.name: r for t, r in zip(self.targets, results, strict=True)}
            self._cached = (time.monotonic(), out)
            return out

    async def _one(self, session: aiohttp.ClientSession, target: HealthTarget) -> dict[str, Any]:
        info: dict[str, Any] = {"kind": target.kind, "url": target.url, "ports": list(target.ports),
                                "healthy": False, "status": None, "error": None}
        try:
            async with session.get(target.url) as resp:
                body = await resp.read()
                info["status"] = resp.status
                info["healthy"] = resp.status == 200
                if target.kind == "model_server":
                    info["model_version"] = _model_version(body)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            info["error"] = type(exc).__name__ if not str(exc) else str(exc)[:200]
        return info


def _model_version(body: bytes) -> str | None:
    """A model server's health body names the version it serves (None when it does not say)."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    value = data.get("model_version") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None
