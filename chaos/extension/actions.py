"""Chaos Toolkit actions for the mesh (provider type "python", module "chaos.extension.actions").

Every fault is recorded in the run's context so `restore_mesh` (the last rollback of every built-in
experiment, and the runner's safety net) can put the mesh back: SIGCONT what was stopped, restart
what was killed, drop proxy overrides and toxics, stop the client load.
"""

from __future__ import annotations

import contextlib
import signal
import time
from typing import Any

from chaos.extension import context
from chaos.extension.load import BackgroundLoad
from chaos.extension.mesh import (
    ChaosActionError,
    alive,
    cluster_endpoint,
    edge_admin,
    ejected_hosts,
    http_json,
    load_records,
    operator,
    proxy_api_url,
    signal_service,
    start_services,
    wait_dead,
)
from data_plane.load.labels import MAX_LABEL_DELAY_S
from data_plane.synthetic import SCENARIOS

__all__ = [
    "add_toxic",
    "flap_service",
    "inject_drift",
    "kill_services",
    "mark",
    "pause_service",
    "restart_services",
    "restore_mesh",
    "restore_route",
    "resume_service",
    "route_through_proxy",
    "start_load",
    "stop_load",
    "stop_service",
]

MAX_RATE = 500.0  # bounded client load: enough for rates and percentiles, light on a 2-core box


# ---- load -----------------------------------------------------------------------------------------
def start_load(rate: float = 50.0, duration_s: float = 60.0, scenario: str | None = None,
               label_delay_s: float | None = None) -> dict[str, Any]:
    """Start the experiment's own open-loop client load through the edge Envoy (bounded).

    With `label_delay_s`, each answered request's true label is published on `mesh.labels` that
    many seconds later (`meshctl load --labels`): the retrain worker and the canary need them."""
    ctx = context.current()
    if not 0 < rate <= MAX_RATE:
        raise ChaosActionError(f"rate must be between 0 and {MAX_RATE:g} requests/s (got {rate})")
    if scenario is not None and scenario not in SCENARIOS:
        raise ChaosActionError(f"scenario {scenario!r} is unknown; choose one of: {', '.join(SCENARIOS)}")
    if label_delay_s is not None and not 0 <= label_delay_s <= MAX_LABEL_DELAY_S:
        raise ChaosActionError(f"label_delay_s must be between 0 and {MAX_LABEL_DELAY_S:g} s "
                               f"(got {label_delay_s})")
    load = BackgroundLoad(f"{ctx.settings.edge_url}/api/v1/predict", rate, float(duration_s),
                          scenario=scenario, seed=ctx.seed + len(ctx.loads),
                          label_delay_s=None if label_delay_s is None else float(label_delay_s),
                          nats_url=ctx.settings.nats_url)
    load.start()
    ctx.loads.append(load)
    labels = {"labels": load.labels.run_id} if load.labels is not None else {}
    return {"rate": rate, "duration_s": duration_s, "scenario": scenario, "label_delay_s": label_delay_s,
            **labels}


def inject_drift(scenario: str, rate: float = 50.0, duration_s: float = 30.0,
                 label_delay_s: float | None = None) -> dict[str, Any]:
    """Switch the client load to a drifted traffic scenario (data_plane.synthetic SCENARIOS)."""
    stop_load()
    return start_load(rate=rate, duration_s=duration_s, scenario=scenario, label_delay_s=label_delay_s)


def stop_load() -> dict[str, Any]:
    """Stop every client load of this run; returns what the whole run's client saw."""
    ctx = context.current()
    for load in ctx.loads:
        load.stop()
    return ctx.window(None, None).to_dict() if ctx.loads else {}


def mark(name: str) -> dict[str, Any]:
    """Remember this instant (and the weights and ejection counters) for later expectations."""
    ctx = context.current()
    ctx.marks[name] = time.time()
    status, body = http_json("GET", f"{ctx.settings.operator_url}/api/v1/status")
    if status == 200 and isinstance(body, dict):
        ctx.mark_weights[name] = dict(body.get("effective_weights") or {})
    ctx.mark_ejections[name] = ejection_counters(ctx.settings)
    return {"mark": name, "at": ctx.marks[name], "weights": ctx.mark_weights.get(name)}


def ejection_counters(settings: Any) -> dict[str, int]:
    """Per edge cluster: outlier-detection ejections enforced so far (a counter)."""
    out = {}
    for line in edge_admin(settings, "/stats?filter=outlier_detection.ejections_enforced_total").splitlines():
        name, _, value = line.partition(": ")
        if name.startswith("cluster.") and value.strip().isdigit():
            out[name.split(".")[1]] = int(value)
    return out


# ---- processes ------------------------------------------------------------------------------------
def kill_services(names: list[str]) -> dict[str, int]:
    """kill -9 each named service's process group (names from `meshctl status`)."""
    ctx = context.current()
    killed = {}
    for name in names:
        killed[name] = signal_service(ctx.settings, name, signal.SIGKILL)
        if name not in ctx.down:
            ctx.down.append(name)
    for name in names:
        wait_dead(ctx.settings, name, timeout=5.0)
    return killed


def stop_service(name: str) -> dict[str, Any]:
    """Stop a service cleanly (SIGTERM, e.g. nats or the control plane) and wait until it is gone."""
    ctx = context.current()
    pid = signal_service(ctx.settings, name, signal.SIGTERM)
    if name not in ctx.down:
        ctx.down.append(name)
    if not wait_dead(ctx.settings, name, timeout=10.0):
        signal_service(ctx.settings, name, signal.SIGKILL)
        wait_dead(ctx.settings, name, timeout=5.0)
    return {"stopped": name, "pid": pid}


def pause_service(name: str) -> dict[str, Any]:
    """SIGSTOP a service: it holds its sockets but answers nothing (a hung process)."""
    ctx = context.current()
    pid = signal_service(ctx.settings, name, signal.SIGSTOP)
    if name not in ctx.paused:
        ctx.paused.append(name)
    return {"paused": name, "pid": pid}


def resume_service(name: str) -> dict[str, Any]:
    """SIGCONT a paused service."""
    ctx = context.current()
    pid = signal_service(ctx.settings, name, signal.SIGCONT)
    if name in ctx.paused:
        ctx.paused.remove(name)
    return {"resumed": name, "pid": pid}


def flap_service(name: str, period_s: float = 2.0, duration_s: float = 20.0) -> dict[str, Any]:
    """Toggle a service between stopped and running every `period_s` for `duration_s` (blocking)."""
    ctx = context.current()
    if period_s < 0.2:
        raise ChaosActionError("period_s must be at least 0.2 s")
    toggles = 0
    deadline = time.monotonic() + duration_s
    stopped = False
    try:
        while time.monotonic() < deadline:
            signal_service(ctx.settings, name, signal.SIGCONT if stopped else signal.SIGSTOP)
            stopped = not stopped
            if stopped and name not in ctx.paused:
                ctx.paused.append(name)
            toggles += 1
            time.sleep(min(period_s, max(0.0, deadline - time.monotonic())))
    finally:
        if stopped:
            signal_service(ctx.settings, name, signal.SIGCONT)
        if name in ctx.paused:
            ctx.paused.remove(name)
    return {"service": name, "toggles": toggles, "period_s": period_s}


def restart_services(names: list[str] | None = None) -> dict[str, Any]:
    """Start the named services again (default: every one this run killed) with `meshctl up --only`."""
    ctx = context.current()
    todo = list(names if names is not None else ctx.down)
    if not todo:
        return {"restarted": []}
    start_services(ctx.settings, todo)
    for name in todo:
        if name in ctx.down:
            ctx.down.remove(name)
    return {"restarted": todo}


# ---- fault proxy ----------------------------------------------------------------------------------
def route_through_proxy(cluster: str = "xgboost", settle_ms: int = 5000) -> dict[str, Any]:
    """Put a fault-proxy hop in front of `cluster` (override via the operator API, EDS push).

    Creates proxy `mesh-<cluster>` (listen 127.0.0.1:0 -> the cluster's own endpoint) and waits
    until the edge Envoy's cluster shows the proxy's address.
    """
    ctx = context.current()
    s = ctx.settings
    host, port = cluster_endpoint(s, cluster)
    name = f"mesh-{cluster}"
    api = proxy_api_url(s)
    http_json("DELETE", f"{api}/proxies/{name}")  # a leftover from an aborted run
    status, body = http_json("POST", f"{api}/proxies",
                             {"name": name, "listen": f"{s.host}:0", "upstream": f"{host}:{port}",
                              "enabled": True})
    if status != 201 or not isinstance(body, dict):
        raise ChaosActionError(f"the fault proxy at {api} did not create {name}: {status} {body}")
    proxy_port = int(str(body["listen"]).rsplit(":", 1)[1])
    ctx.proxies[cluster] = name
    operator(s, "POST", "/api/v1/overrides", {"cluster": cluster, "host": s.host, "port": proxy_port})
    deadline = time.monotonic() + settle_ms / 1000
    needle = f"{cluster}::{s.host}:{proxy_port}::"
    while needle not in edge_admin(s, "/clusters"):
        if time.monotonic() > deadline:
            raise ChaosActionError(f"the edge Envoy did not route {cluster} via {s.host}:{proxy_port} "
                                   f"within {settle_ms} ms")
        time.sleep(0.05)
    return {"cluster": cluster, "proxy": name, "listen": body["listen"], "upstream": f"{host}:{port}"}


def add_toxic(cluster: str, toxic_type: str, attributes: dict[str, int], stream: str = "downstream",
              name: str | None = None, toxicity: float = 1.0) -> dict[str, Any]:
    """Add a toxic to the proxy in front of `cluster` (route_through_proxy first)."""
    ctx = context.current()
    proxy = ctx.proxies.get(cluster) or f"mesh-{cluster}"
    body = {"name": name or f"{toxic_type}_{stream}", "type": toxic_type, "stream": stream,
            "toxicity": toxicity, "attributes": attributes}
    status, answer = http_json("POST", f"{proxy_api_url(ctx.settings)}/proxies/{proxy}/toxics", body)
    if status != 200:
        raise ChaosActionError(f"adding {toxic_type} to {proxy} failed: {status} {answer}")
    return answer if isinstance(answer, dict) else {}


def restore_route(cluster: str = "xgboost") -> dict[str, Any]:
    """Send `cluster` back to its own endpoint and delete its proxy (and with it its toxics)."""
    ctx = context.current()
    operator(ctx.settings, "DELETE", f"/api/v1/overrides/{cluster}")
    name = ctx.proxies.pop(cluster, f"mesh-{cluster}")
    http_json("DELETE", f"{proxy_api_url(ctx.settings)}/proxies/{name}")
    return {"cluster": cluster, "restored": True}


# ---- the safety net -------------------------------------------------------------------------------
def restore_mesh(restart_timeout_s: float = 120.0, settle_s: float = 60.0) -> dict[str, Any]:
    """Undo every fault of this run: SIGCONT, overrides and proxies, restarts, then stop the load.

    Runs every step even when one fails, then waits (up to `settle_s`) until the healing loop has
    taken nobody out of rotation and the edge ejects no host; raises naming what is not restored.
    """
    ctx = context.current()
    s = ctx.settings
    done: list[str] = []
    problems: list[str] = []
    for flapper in list(ctx.flappers):
        flapper.stop.set()
        flapper.thread.join(5.0)
    records = load_records(s)
    for name in list(ctx.paused):
        rec = records.get(name)
        if rec is not None and alive(rec):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                signal_service(s, name, signal.SIGCONT)
            done.append(f"SIGCONT {name}")
        ctx.paused.remove(name)
    if ctx.down:  # restart before touching routes: the overrides need the control plane
        names = list(ctx.down)
        try:
            start_services(s, names, timeout=restart_timeout_s)
            ctx.down.clear()
            done.append(f"restarted {', '.join(names)}")
        except ChaosActionError as exc:
            problems.append(str(exc))
    for cluster in list(ctx.proxies):
        try:
            restore_route(cluster)
            done.append(f"route {cluster} restored")
        except ChaosActionError as exc:
            problems.append(str(exc))
    for load in ctx.loads:
        load.stop()
    if not problems and settle_s > 0:
        left = wait_settled(s, settle_s)
        if left:
            problems.append(f"not settled within {settle_s:g} s: {left}")
        else:
            done.append("routing settled (nothing ejected)")
    still_down = [n for n, r in load_records(s).items() if not alive(r)]
    if still_down:
        problems.append(f"not running after restore: {', '.join(still_down)}")
    if problems:
        raise ChaosActionError("restore incomplete: " + "; ".join(problems))
    return {"restored": done, "ejected_now": ejected_hosts(s)}



def wait_settled(settings: Any, timeout_s: float) -> str:
    """Wait until intent.ejected is empty, the edge ejects no host and the healing loop judges no
    service sick (a sick one not ejected yet would be ejected by the next experiment's first
    seconds); '' when settled, else what is left."""
    deadline = time.monotonic() + timeout_s
    left = ""
    while time.monotonic() < deadline:
        status, body = http_json("GET", f"{settings.operator_url}/api/v1/status")
        ejected = (body.get("intent") or {}).get("ejected", []) if status == 200 and isinstance(body, dict) \
            else ["(control plane unreachable)"]
        hosts = ejected_hosts(settings)
        code, health = http_json("GET", f"{settings.operator_url}/api/v1/health/services")
        services = health.get("services", {}) if code == 200 and isinstance(health, dict) else {}
        sick = sorted(n for n, v in services.items() if isinstance(v, dict) and v.get("state") == "sick")
        if not ejected and not hosts and not sick:
            return ""
        left = f"healing ejected {ejected}, edge ejected {hosts}, judged sick {sick}"
        time.sleep(0.25)
    return left
