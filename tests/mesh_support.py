"""Helpers for tests that start a whole mesh: a full set of free ports as MESH_PORT_* env vars."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from data_plane.netutil import free_port
from data_plane.settings import Ports, Settings

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


def meshctl(env: Mapping[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run `python -m meshctl ARGS` with `env`; never raises on a non-zero exit."""
    return subprocess.run([sys.executable, "-m", "meshctl", *args], env=dict(env), capture_output=True,
                          text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)


@contextlib.contextmanager
def running_mesh(home: Path, knobs: Mapping[str, str] | None = None,
                 train_rows: int = 5000) -> Iterator[tuple[dict[str, str], Settings]]:
    """A whole mesh (`meshctl train`, `meshctl up --detach`) under `home` on free ports; `down` after.

    Yields (env for `meshctl` and the mesh's processes, its Settings). `knobs` are extra MESH_*
    variables (healing, canary, retrain settings) the mesh runs with.
    """
    env = {**os.environ, "MESH_HOME": str(home), **(knobs or {})}
    train = meshctl(env, "train", "--rows", str(train_rows), "--no-progress", timeout=240)
    assert train.returncode == 0, train.stdout[-2000:] + train.stderr[-2000:]
    try:
        for _ in range(3):  # ports picked right before `up`; another test may take one meanwhile
            env.update(free_port_env())
            up = meshctl(env, "up", "--detach")
            if up.returncode == 0 or "already in use" not in up.stderr:
                break
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        yield env, Settings.from_env(env)
    finally:
        meshctl(env, "down", "--timeout", "5")
