"""Helpers for tests that start a whole mesh: a full set of free ports as MESH_PORT_* env vars."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from data_plane.netutil import free_port
from data_plane.settings import Ports

SEED_TXN = {"amount": 1500.0, "merchant_category": 7, "hour_of_day": 2, "day_of_week": 6,
            "distance_from_home": 150.0, "distance_from_last_txn": 80.0, "is_foreign": 1,
            "velocity_last_1h": 5, "velocity_last_24h": 12, "avg_amount_last_7d": 200.0,
            "card_age_days": 15}


def free_port_env() -> dict[str, str]:
    """One distinct free port per `Ports` field, as the env vars every mesh process reads."""
    used: set[int] = set()
    env = {}
    for f in fields(Ports):
        port = free_port()
        while port in used:
            port = free_port()
        used.add(port)
        env[f"MESH_PORT_{f.name.upper()}"] = str(port)
    return env


def http_json(method: str, url: str, body: Any = None, token: str | None = None, timeout: float = 5.0,
              headers: Mapping[str, str] | None = None, *, down_is_zero: bool = False) -> tuple[int, Any]:
    """(status, decoded JSON, or the text when it is not JSON) of one request; 4xx/5xx are answers.

    `down_is_zero`: a refused or timed-out connection comes back as (0, the error) instead of
    raising, for probes that poll a service that is down on purpose.
    """
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    for key, value in (headers or {}).items():
        req.add_header(key, value)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw, status = resp.read(), resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    except (urllib.error.URLError, OSError) as exc:
        if down_is_zero:
            return 0, str(exc)
        raise
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")
