"""`meshctl status [--json]`: each service's pid, ports and health, the intent and snapshot version."""

from __future__ import annotations

import argparse

from data_plane.settings import Settings
from meshctl import lifecycle
from meshctl.output import emit_json, table


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    services = lifecycle.service_status(settings)
    state = lifecycle.mesh_state(settings)
    if args.json:
        emit_json({"home": str(settings.home), "services": services, **state})
        return 0
    if services:
        rows = [(s["name"], s["pid"], ",".join(str(p) for p in s["ports"].values()),
                 "healthy" if s["healthy"] else ("running" if s["running"] else "stopped"), s["uptime_s"])
                for s in services]
        print(table(["service", "pid", "ports", "health", "uptime_s"], rows))
    else:
        print(f"no services recorded in {settings.run_dir} (`meshctl up` starts the mesh)")
    intent = state["intent"] or {}
    weights = ", ".join(f"{k} {v:.2f}" for k, v in (state["effective_weights"] or {}).items())
    print(f"\nintent ({state['source']}): weights {weights}; frozen {intent.get('frozen')}; "
          f"snapshot version {state['snapshot_version']} (last good {state['last_good_version']})")
    for node, info in sorted((state.get("nodes") or {}).items()):
        print(f"  envoy {node:<18} {'connected' if info.get('connected') else 'disconnected':<13} "
              f"{info.get('state')}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("status", help="show the mesh's services, intent and snapshot version")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)
