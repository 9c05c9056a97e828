"""`meshctl config [--json] [--changed]`: every setting of the mesh, its variable, value and default.

The one place to see the whole configuration: the wiring (`MESH_HOME`, hosts, ports, NATS) and
every component's knobs (healing loop, drift windows, retrain worker and its gates, canary, A/B
statistics), each read exactly as the processes read them, so a bad value fails here with the
same message it would give at start. Secrets are shown as `***`.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from control_plane import ab_component, workers
from control_plane.healing import canary_component, config, retrain, retrain_gates
from control_plane.healing.canary_analysis import CanaryConfig
from data_plane import envconfig
from data_plane.settings import Hosts, Ports, Settings
from meshctl.output import emit_json, table

SECRETS = ("MESH_NATS_PASSWORD",)
_URL_PASSWORD = re.compile(r"(//[^:/@]*:)[^@/]*@")  # scheme://user:password@host -> user:***@host


def _row(section: str, variable: str, value: Any, default: Any, env: Mapping[str, str]) -> dict[str, Any]:
    set_here = bool((env.get(variable) or "").strip())
    if variable in SECRETS and value is not None:
        value = "***"
    elif isinstance(value, str):
        value = _URL_PASSWORD.sub(r"\1***@", value)
    return {"section": section, "variable": variable, "value": value, "default": default,
            "source": "env" if set_here else "default"}


def mesh_rows(env: Mapping[str, str]) -> list[dict[str, Any]]:
    """The wiring: state folder, hosts, ports, NATS, logging (data_plane.settings)."""
    s, d = Settings.from_env(dict(env)), Settings()
    rows = [_row("mesh", "MESH_HOME", str(s.home), "~/.fraud-mesh (or .mesh in a checkout)", env),
            _row("mesh", "MESH_HOST", s.host, d.host, env),
            _row("mesh", "MESH_BIND_HOST", s.bind_host, "MESH_HOST", env),
            _row("mesh", "MESH_SIDECARS", s.sidecars, d.sidecars, env),
            _row("mesh", "MESH_FRAUD_THRESHOLD", s.fraud_threshold, d.fraud_threshold, env),
            _row("mesh", "MESH_LOG_LEVEL", s.log_level, d.log_level, env),
            _row("mesh", "MESH_NATS_URL", s.nats_url, "nats://<MESH_HOST>:<MESH_PORT_NATS>", env),
            _row("mesh", "MESH_NATS_USER", s.nats_user, None, env),
            _row("mesh", "MESH_NATS_PASSWORD", s.nats_password, None, env)]
    rows += [_row("hosts", f"MESH_HOST_{f.name.upper()}", s.advertised_host(f.name), "MESH_HOST", env)
             for f in fields(Hosts)]
    rows += [_row("ports", f"MESH_PORT_{f.name.upper()}", getattr(s.ports, f.name), getattr(d.ports, f.name),
                  env) for f in fields(Ports)]
    return rows


def component_rows(env: Mapping[str, str]) -> list[dict[str, Any]]:
    """Every component's knobs, read through the components' own `from_env`."""
    rows = [_row(name, var, envconfig.switch(env, var), True, env) for name, var in
            (("healing", "MESH_HEALING"), ("canary", "MESH_CANARY"), ("ab", "MESH_AB_STATS"),
             ("drift", "MESH_DRIFT_REPORTS"))]
    healing, healing_default = config.HealingConfig.from_env(env), config.HealingConfig()
    for part in (None, "policy", "governor"):
        now = healing if part is None else getattr(healing, part)
        default = healing_default if part is None else getattr(healing_default, part)
        rows += [_row("healing", r["variable"], r["value"], r["default"], env)
                 for r in envconfig.describe(now, default, config.PREFIX, env, names=config.NAMES,
                                             skip=("enabled",))]
    defaults = workers.drift_knobs({})
    rows += [_row("drift", var, value, defaults[var], env) for var, value in workers.drift_knobs(env).items()]
    rows.append(_row("drift", "MESH_WORKERS_STATUS_S", envconfig.number(env, "MESH_WORKERS_STATUS_S", 2.0),
                     2.0, env))
    rt = retrain.RetrainConfig.from_env(env)
    rows += [_row("retrain", r["variable"], r["value"], r["default"], env)
             for r in envconfig.describe(rt, retrain.RetrainConfig(), retrain.PREFIX, env)]
    rows += [_row("gates", r["variable"], r["value"], r["default"], env)
             for r in envconfig.describe(rt.gates, retrain_gates.GateConfig(), retrain_gates.PREFIX, env)]
    canary_defaults = canary_component.canary_knobs(CanaryConfig())
    rows += [_row("canary", var, value, canary_defaults[var], env)
             for var, value in canary_component.canary_knobs(canary_component.config_from_env(env)).items()]
    ab = ab_component.ABConfig.from_env(env)
    rows += [_row("ab", r["variable"], r["value"], r["default"], env)
             for r in envconfig.describe(ab, ab_component.ABConfig(), ab_component.PREFIX, env)]
    return rows


def all_rows(env: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    env = dict(os.environ if env is None else env)
    return mesh_rows(env) + component_rows(env)


def run(args: argparse.Namespace) -> int:
    rows = all_rows()
    if args.changed:
        rows = [r for r in rows if r["source"] == "env"]
    if args.json:
        emit_json({"settings": rows})
        return 0
    print(table(["section", "variable", "value", "default", "source"],
                [(r["section"], r["variable"], r["value"], r["default"], r["source"]) for r in rows]))
    print("\nSet a variable in the environment of `meshctl up` (or `make run`) to change it; "
          "docs/operations.md explains each one.")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("config", help="show every setting: variable, value, default, source")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--changed", action="store_true", help="only the settings set in the environment")
    p.set_defaults(func=run)
