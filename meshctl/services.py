"""The service table of `meshctl up`: what runs, in which order, on which ports, when it is ready.

Adding a process to the mesh is one `ServiceSpec` entry here: a name, an argv factory, the `Ports`
fields it listens on (so a clash names `MESH_PORT_<FIELD>`), readiness probes, an `enabled()`
predicate (e.g. "its code exists and a model is registered") and a `stage`: services of one stage
start together (model servers load in parallel); the next stage waits until all are ready.
"""

from __future__ import annotations

import importlib
import importlib.util
import sqlite3
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from data_plane import procs
from data_plane.settings import Settings

Argv = Callable[[Settings], list[str]]


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    argv: Argv
    ports: tuple[str, ...]  # field names of data_plane.settings.Ports
    # Readiness probes, all must pass: "http://..." (200) or "tcp://host:port" (accepts).
    probes: Callable[[Settings], list[str]]
    enabled: Callable[[Settings], bool] = lambda s: True
    disabled_hint: str = ""  # printed when enabled() is False: what to do to get it
    prepare: Callable[[Settings], None] | None = None  # e.g. render a bootstrap before start
    ready_timeout: float = 30.0
    # Services of one stage start together; a stage starts once the one before it is ready.
    stage: int = 0
    python: bool = field(default=False)  # a `python -m` service: runs from the repo root


def _http(s: Settings, port: int, path: str) -> str:
    return f"http://{s.host}:{port}{path}"


def module_exists(name: str) -> bool:
    """True when `python -m <name>` would find the module (colleagues' services arrive later)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def xds_core_available(settings: Settings) -> bool:
    """True once control_plane.xds exports what the control plane process needs."""
    try:
        xds = importlib.import_module("control_plane.xds")
    except ImportError:
        return False
    return all(hasattr(xds, name) for name in ("AdsServer", "SnapshotCache", "build_snapshots",
                                               "render_bootstrap"))


def champion_registered(settings: Settings, kind: str) -> bool:
    """True when the MLflow registry has a `champion` alias for fraud-<kind> (read-only sqlite)."""
    db = settings.mlflow_db
    if not db.exists():
        return False
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2) as conn:
            row = conn.execute("SELECT 1 FROM registered_model_aliases WHERE name = ? AND alias = ?",
                               (f"fraud-{kind}", "champion")).fetchone()
    except sqlite3.Error:
        return False
    return row is not None


# ---- argv factories ------------------------------------------------------------------------------
def _nats_argv(s: Settings) -> list[str]:
    return procs.nats_server(s.ports.nats, s.ports.nats_monitor, s.jetstream_dir,
                             s.log_dir / "nats.log", host=s.host).argv


def _control_plane_argv(s: Settings) -> list[str]:
    return [sys.executable, "-m", "control_plane"]


def bootstrap_path(s: Settings, node_id: str) -> Path:
    return s.envoy_dir / f"{node_id}.yaml"


def _render_bootstrap(role: str, node_id: str, admin_field: str) -> Callable[[Settings], None]:
    def prepare(s: Settings) -> None:
        from control_plane.xds import render_bootstrap

        render_bootstrap(role, node_id, getattr(s.ports, admin_field), s.host, s.ports.ads,
                         bootstrap_path(s, node_id))
    return prepare


def _envoy_argv(node_id: str, concurrency: int) -> Argv:
    def argv(s: Settings) -> list[str]:
        return procs.envoy(bootstrap_path(s, node_id), s.log_dir / f"{node_id}.log",
                           concurrency=concurrency).argv
    return argv


def _model_server_argv(kind: str) -> Argv:
    def argv(s: Settings) -> list[str]:
        return [sys.executable, "-m", "model_servers", "--kind", kind]
    return argv


def _model_server_enabled(kind: str) -> Callable[[Settings], bool]:
    def enabled(s: Settings) -> bool:
        if not module_exists("model_servers.__main__"):
            return False
        return kind == "heuristic" or champion_registered(s, kind)
    return enabled


def _sidecar_enabled(kind: str) -> Callable[[Settings], bool]:
    def enabled(s: Settings) -> bool:
        return s.sidecars and _model_server_enabled(kind)(s)
    return enabled


def _model_server(kind: str) -> ServiceSpec:
    ports = (kind, f"{kind}_challenger") if kind != "heuristic" else (kind,)
    return ServiceSpec(
        name=kind, argv=_model_server_argv(kind), ports=ports, python=True,
        probes=lambda s: [_http(s, getattr(s.ports, kind), "/ready")],
        enabled=_model_server_enabled(kind), ready_timeout=90.0, stage=3,
        disabled_hint=("model_servers is not installed yet" if kind == "heuristic"
                       else f"no champion of fraud-{kind} registered: run `meshctl train`"))


def _sidecar(kind: str) -> ServiceSpec:
    node = f"sidecar-{kind}"
    listeners = (f"sidecar_{kind}", f"sidecar_{kind}_challenger") if kind != "heuristic" \
        else (f"sidecar_{kind}",)
    admin = f"sidecar_admin_{kind}"
    return ServiceSpec(
        name=node, argv=_envoy_argv(node, concurrency=1), ports=(*listeners, admin),
        probes=lambda s: [_http(s, getattr(s.ports, admin), "/ready"),
                          f"tcp://{s.host}:{getattr(s.ports, listeners[0])}"],
        enabled=_sidecar_enabled(kind), prepare=_render_bootstrap("sidecar", node, admin), stage=3,
        disabled_hint=f"runs with the {kind} model server (MESH_SIDECARS=0 turns sidecars off)")


SERVICES: list[ServiceSpec] = [
    ServiceSpec(
        name="nats", argv=_nats_argv, ports=("nats", "nats_monitor"), ready_timeout=20.0,
        probes=lambda s: [_http(s, s.ports.nats_monitor, "/healthz?js-enabled-only=true"),
                          f"tcp://{s.host}:{s.ports.nats}"]),
    ServiceSpec(
        name="control-plane", argv=_control_plane_argv, ports=("ads", "operator"), python=True, stage=1,
        probes=lambda s: [_http(s, s.ports.operator, "/health"), f"tcp://{s.host}:{s.ports.ads}"],
        enabled=xds_core_available,
        disabled_hint="control_plane.xds is not installed yet"),
    ServiceSpec(
        name="edge", argv=_envoy_argv("edge", concurrency=2), ports=("edge", "edge_admin"), stage=2,
        probes=lambda s: [_http(s, s.ports.edge_admin, "/ready"), f"tcp://{s.host}:{s.ports.edge}"],
        enabled=xds_core_available,
        prepare=_render_bootstrap("edge", "edge", "edge_admin"),
        disabled_hint="control_plane.xds is not installed yet"),
    *(_model_server(k) for k in ("xgboost", "pytorch", "heuristic")),
    *(_sidecar(k) for k in ("xgboost", "pytorch", "heuristic")),
    ServiceSpec(
        name="workers", argv=lambda s: [sys.executable, "-m", "control_plane.workers"], ports=(),
        python=True, stage=3, probes=lambda s: [],  # no listener: alive is ready
        enabled=lambda s: module_exists("control_plane.workers") and any(
            champion_registered(s, k) for k in ("xgboost", "pytorch")),
        disabled_hint="drift detector + retrain worker: needs a registered model (`meshctl train`)"),
    ServiceSpec(  # the Toxiproxy-compatible fault proxy: chaos experiments re-point clusters through it
        name="chaos-proxy", argv=lambda s: [sys.executable, "-m", "chaos.proxy", "--listen",
                                            f"{s.host}:{s.ports.chaos_api}"],
        ports=("chaos_api",), python=True, stage=1,
        probes=lambda s: [_http(s, s.ports.chaos_api, "/version")],
        enabled=lambda s: module_exists("chaos.proxy.__main__"),
        disabled_hint="chaos.proxy is not installed"),
]


def service_names() -> list[str]:
    return [s.name for s in SERVICES]


def get_service(name: str) -> ServiceSpec:
    for spec in SERVICES:
        if spec.name == name:
            return spec
    raise KeyError(name)
