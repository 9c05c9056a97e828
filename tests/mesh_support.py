"""Helpers for tests that start a whole mesh: a full set of free ports as MESH_PORT_* env vars."""

from __future__ import annotations

from dataclasses import fields

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
