"""Start, stop and inspect the mesh's processes (`meshctl up / down / status`).

Each service runs in its own process group with its log under settings.log_dir. What was started is
recorded under settings.run_dir (`<name>.pid` and `services.json` with pid, process start time,
ports, probes, log), so `down` and `status` work from any shell and never signal a process that
merely reuses a recorded pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from data_plane.contracts.errors import MeshError
from data_plane.netutil import port_in_use, port_open
from data_plane.procs import ManagedProcess
from data_plane.settings import REPO_ROOT, Ports, Settings
from meshctl.services import SERVICES, ServiceSpec

RECORDS_FILE = "services.json"
Print = Callable[[str], None]


@dataclass
class ServiceRecord:
    name: str
    pid: int
    start_ticks: int  # /proc/<pid>/stat starttime: tells a reused pid from ours
    argv: list[str]
    ports: dict[str, int]
    probes: list[str]
    log: str
    started_at: float


# ---- /proc helpers -------------------------------------------------------------------------------
def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may contain spaces and parentheses: split after its closing ')'.
    return raw[raw.rfind(")") + 2:].split()


def process_start_ticks(pid: int) -> int | None:
    st = _stat(pid)
    return int(st[19]) if st else None


def process_alive(pid: int, start_ticks: int | None = None) -> bool:
    """Running (not a zombie) and, when given, started at `start_ticks` (not a reused pid)."""
    st = _stat(pid)
    if st is None or st[0] in ("Z", "X"):
        return False
    return start_ticks is None or int(st[19]) == start_ticks


def group_members(pgid: int, min_ticks: int = 0) -> list[int]:
    """Live processes of process group `pgid` started no earlier than `min_ticks`."""
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        st = _stat(int(entry.name))
        if st and st[0] not in ("Z", "X") and int(st[2]) == pgid and int(st[19]) >= min_ticks:
            out.append(int(entry.name))
    return out


# ---- records -------------------------------------------------------------------------------------
def load_records(settings: Settings) -> dict[str, ServiceRecord]:
    path = settings.run_dir / RECORDS_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise MeshError(f"{path} is unreadable ({exc}); stop the processes by hand, then delete it") \
            from None
    return {name: ServiceRecord(**rec) for name, rec in raw.get("services", {}).items()}


def save_records(settings: Settings, records: dict[str, ServiceRecord]) -> None:
    from control_plane.store import atomic_write

    settings.run_dir.mkdir(parents=True, exist_ok=True)
    body = {"home": str(settings.home), "services": {n: asdict(r) for n, r in records.items()}}
    atomic_write(settings.run_dir / RECORDS_FILE, json.dumps(body, indent=2).encode())
    for name, rec in records.items():
        (settings.run_dir / f"{name}.pid").write_text(f"{rec.pid}\n")


def is_running(rec: ServiceRecord) -> bool:
    return process_alive(rec.pid, rec.start_ticks) or bool(group_members(rec.pid, rec.start_ticks))


# ---- probes --------------------------------------------------------------------------------------
def probe(url: str, timeout: float = 0.5) -> bool:
    """One readiness probe: `http://...` answers 200, or `tcp://host:port` accepts a connection."""
    if url.startswith("tcp://"):
        host, _, port = url[len("tcp://"):].rpartition(":")
        return port_open(host, int(port), timeout=timeout)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - 127.0.0.1 only
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def child_env(settings: Settings) -> dict[str, str]:
    """Everything a child needs to agree with us on ports and paths."""
    env = {"MESH_HOME": str(settings.home), "MESH_HOST": settings.host,
           "MESH_SIDECARS": "1" if settings.sidecars else "0", "MESH_LOG_LEVEL": settings.log_level,
           "PYTHONUNBUFFERED": "1"}
    for f in fields(Ports):
        env[f"MESH_PORT_{f.name.upper()}"] = str(getattr(settings.ports, f.name))
    return env


def port_conflicts(settings: Settings, specs: Iterable[ServiceSpec]) -> list[str]:
    problems = []
    for spec in specs:
        for name in spec.ports:
            port = getattr(settings.ports, name)
            if port_in_use(settings.host, port):
                var = f"MESH_PORT_{name.upper()}"
                problems.append(f"port {port} ({spec.name}: {name}) is already in use on {settings.host}; "
                                f"stop what holds it or set {var} to a free port")
    return problems


# ---- up ------------------------------------------------------------------------------------------
def select(only: list[str] | None, skip: list[str] | None) -> list[ServiceSpec]:
    names = {s.name for s in SERVICES}
    for given in (only or []) + (skip or []):
        if given not in names:
            raise MeshError(f"unknown service {given!r}; services are: {', '.join(sorted(names))}")
    return [s for s in SERVICES if (not only or s.name in only) and s.name not in (skip or [])]


def up(settings: Settings, only: list[str] | None = None, skip: list[str] | None = None,
       out: Print = print) -> dict[str, ServiceRecord]:
    """Start every enabled, selected service that is not already running; wait until each is ready."""
    settings.ensure_home()
    settings.jetstream_dir.mkdir(parents=True, exist_ok=True)
    records = {n: r for n, r in load_records(settings).items() if is_running(r)}
    plan: list[ServiceSpec] = []
    for spec in select(only, skip):
        if spec.name in records:
            out(f"  {spec.name:<18} already running (pid {records[spec.name].pid})")
        elif not spec.enabled(settings):
            out(f"  {spec.name:<18} skipped: {spec.disabled_hint}")
        else:
            plan.append(spec)
    conflicts = port_conflicts(settings, plan)
    if conflicts:
        raise MeshError("cannot start the mesh:\n  " + "\n  ".join(conflicts))
    save_records(settings, records)
    started: list[str] = []
    try:
        for stage in _stages(plan):
            for spec in stage:  # a stage starts together and must be ready before the next one
                records[spec.name] = _start(settings, spec, out)
                started.append(spec.name)
                save_records(settings, records)
            _wait_ready(stage, records, out)
    except BaseException:
        out("  startup failed: stopping what this run started")
        _stop(settings, [records[n] for n in reversed(started)], out=out)
        for n in started:
            records.pop(n, None)
            (settings.run_dir / f"{n}.pid").unlink(missing_ok=True)
        save_records(settings, records)
        raise
    return records


def _start(settings: Settings, spec: ServiceSpec, out: Print) -> ServiceRecord:
    if spec.prepare is not None:
        spec.prepare(settings)
    log_path = settings.log_dir / f"{spec.name}.log"
    proc = ManagedProcess(spec.name, spec.argv(settings), log_path, env=child_env(settings),
                          cwd=REPO_ROOT if spec.python else None).start()
    ticks = process_start_ticks(proc.pid) or 0
    return ServiceRecord(name=spec.name, pid=proc.pid, start_ticks=ticks, argv=proc.argv,
                         ports={p: getattr(settings.ports, p) for p in spec.ports},
                         probes=spec.probes(settings), log=str(log_path), started_at=time.time())


def _stages(plan: list[ServiceSpec]) -> list[list[ServiceSpec]]:
    stages: dict[int, list[ServiceSpec]] = {}
    for spec in plan:
        stages.setdefault(spec.stage, []).append(spec)
    return [stages[k] for k in sorted(stages)]


def _wait_ready(stage: list[ServiceSpec], records: dict[str, ServiceRecord], out: Print) -> None:
    """Poll every service of a stage until all its probes pass; one progress line per service."""
    t0 = time.monotonic()
    waiting = {spec.name: (spec, list(records[spec.name].probes)) for spec in stage}
    while waiting:
        for name, (spec, pending) in list(waiting.items()):
            rec = records[name]
            if not process_alive(rec.pid, rec.start_ticks):
                raise MeshError(f"{name} exited during startup; log {rec.log}:\n{_tail(rec.log)}")
            pending[:] = [p for p in pending if not probe(p)]
            if not pending:
                del waiting[name]
                ports = " ".join(f"{k}={v}" for k, v in rec.ports.items())
                out(f"  {name:<18} ready in {time.monotonic() - t0:4.1f}s  pid {rec.pid:<7} {ports}")
            elif time.monotonic() - t0 > spec.ready_timeout:
                raise MeshError(f"{name} was not ready within {spec.ready_timeout:.0f}s (waiting for "
                                f"{', '.join(pending)}); log {rec.log}:\n{_tail(rec.log)}")
        if waiting:
            time.sleep(0.1)


def _tail(path: str, lines: int = 20) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# ---- down ----------------------------------------------------------------------------------------
def down(settings: Settings, timeout: float = 10.0, out: Print = print) -> list[str]:
    """Stop everything recorded in run_dir (newest first); safe to run twice. Returns names stopped."""
    records = load_records(settings)
    order = [s.name for s in SERVICES]
    ranked = sorted(records.values(), key=lambda r: order.index(r.name) if r.name in order else -1,
                    reverse=True)
    # The control plane goes first, so its healing loop never reacts to the shutdown itself
    # (ejecting a model server that is merely stopping would be saved in the intent).
    first = [r for r in ranked if r.name == "control-plane"]
    stopped = _stop(settings, first, timeout=timeout, out=out)
    stopped += _stop(settings, [r for r in ranked if r.name != "control-plane"], timeout=timeout, out=out)
    for name in records:
        (settings.run_dir / f"{name}.pid").unlink(missing_ok=True)
    (settings.run_dir / RECORDS_FILE).unlink(missing_ok=True)
    return stopped


def _stop(settings: Settings, recs: list[ServiceRecord], timeout: float = 10.0,
          out: Print = print) -> list[str]:
    """SIGTERM each group in order, wait, SIGKILL what is left after `timeout`."""
    live = [r for r in recs if is_running(r)]
    for rec in live:
        _signal_group(rec, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(is_running(r) for r in live):
        time.sleep(0.05)
    for rec in live:
        if is_running(rec):
            out(f"  {rec.name:<18} did not stop within {timeout:.0f}s: SIGKILL")
            _signal_group(rec, signal.SIGKILL)
    kill_deadline = time.monotonic() + 5
    while time.monotonic() < kill_deadline and any(is_running(r) for r in live):
        time.sleep(0.05)
    for rec in live:
        out(f"  {rec.name:<18} stopped (pid {rec.pid})")
    return [r.name for r in live]


def _signal_group(rec: ServiceRecord, sig: int) -> None:
    # The group id is the leader's pid (start_new_session); members outlive a dead leader.
    targets = group_members(rec.pid, rec.start_ticks)
    if process_alive(rec.pid, rec.start_ticks):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(rec.pid, sig)
        return
    for pid in targets:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


# ---- status --------------------------------------------------------------------------------------
def service_status(settings: Settings) -> list[dict[str, Any]]:
    """Each recorded service with pid, ports, running and healthy (all probes pass)."""
    rows = []
    order = [s.name for s in SERVICES]
    records = sorted(load_records(settings).values(),
                     key=lambda r: order.index(r.name) if r.name in order else len(order))
    for rec in records:
        running = is_running(rec)
        rows.append({"name": rec.name, "pid": rec.pid, "ports": rec.ports, "running": running,
                     "healthy": running and all(probe(p) for p in rec.probes), "log": rec.log,
                     "uptime_s": round(time.time() - rec.started_at, 1) if running else None})
    return rows


def mesh_state(settings: Settings) -> dict[str, Any]:
    """Intent and snapshot version: from the operator API when it answers, else from the store."""
    try:
        with urllib.request.urlopen(f"{settings.operator_url}/api/v1/status",  # noqa: S310
                                    timeout=2) as resp:
            body = json.loads(resp.read())
        return {"source": "operator_api", "intent": body.get("intent"),
                "snapshot_version": body.get("version"),
                "last_good_version": body.get("last_good_version"),
                "effective_weights": body.get("effective_weights"), "nodes": body.get("nodes", {})}
    except (urllib.error.URLError, OSError, ValueError):
        pass
    import msgspec

    from control_plane.store import read_state

    state = read_state(settings)
    return {"source": "store", "intent": msgspec.to_builtins(state.intent),
            "snapshot_version": state.version,
            "last_good_version": state.last_good.version if state.last_good else None,
            "effective_weights": state.intent.effective_weights(), "nodes": {}}


def foreground(settings: Settings, out: Print = print) -> int:
    """Stay attached until Ctrl-C or SIGTERM, report services that die, then stop everything."""
    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # Explicit handlers: a shell may start us with SIGINT ignored, and Ctrl-C must still stop the mesh.
    previous = {sig: signal.signal(sig, on_term) for sig in (signal.SIGINT, signal.SIGTERM)}
    reported: set[str] = set()
    try:
        out("mesh is up; Ctrl-C stops it")
        while True:
            for rec in load_records(settings).values():
                if rec.name not in reported and not is_running(rec):
                    reported.add(rec.name)
                    out(f"  {rec.name} exited; log {rec.log}")
            _reap_children()
            time.sleep(1.0)
    except KeyboardInterrupt:
        out("stopping the mesh")
        down(settings, out=out)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _reap_children() -> None:
    """Collect exited children so a foreground `up` leaves no zombies behind."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
