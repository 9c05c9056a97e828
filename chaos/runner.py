"""Run a chaos experiment (built-in name or JSON file) with chaoslib, and report on it.

- durations scale: configuration keys ending in `_s` are multiplied by `duration_scale` (deadlines
  are `*_ms` and never scaled), so tests run shortened versions of the same experiments;
- rollbacks always run (runtime strategy "always"), then `restore_mesh` runs again as a safety net;
- one run at a time per MESH_HOME: `<home>/chaos/active.json` (pid + run id) is the chaos lock; it
  pauses the canary, unless the experiment's `fraud-mesh` extension says `"pause_canary": false`;
- progress per step goes to a callback, to `<home>/chaos/<run-id>.json` (rewritten after every step;
  the final document carries the whole chaoslib journal) and to NATS `mesh.chaos.<event>`;
- SIGUSR1 (chaoslib's graceful exit) aborts: the method stops, rollbacks and the safety net run.
A deviated hypothesis, a failed expectation or a failed fault/rollback gives status "failed".
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_plane.contracts import subjects
from data_plane.contracts.errors import MeshError
from data_plane.contracts.events import ChaosEvent
from data_plane.settings import Settings

log = logging.getLogger(__name__)
logging.getLogger("chaostoolkit").setLevel(logging.ERROR)  # its own warnings would interleave with our steps

BUILTIN_DIR = Path(__file__).resolve().parent / "experiments"
EXTENSION = "fraud-mesh"  # the experiment's own settings: {"name": "fraud-mesh", "pause_canary": false}
StepCallback = Callable[[dict[str, Any]], None]


class ExperimentError(MeshError):
    """The experiment cannot be found, read or validated (the message says which and why)."""


class ChaosLockHeld(MeshError):
    """Another chaos run is active on this mesh."""


# ---- experiments --------------------------------------------------------------------------------
def list_experiments() -> list[dict[str, str]]:
    """The built-in experiments: name (file stem), title, description."""
    out = []
    for path in sorted(BUILTIN_DIR.glob("*.json")):
        doc = json.loads(path.read_text())
        out.append({"name": path.stem, "title": doc.get("title", ""),
                    "description": doc.get("description", "")})
    return out


def load_experiment(name_or_path: str) -> tuple[str, dict[str, Any]]:
    """A built-in name or a path to an experiment JSON file -> (name, experiment), validated."""
    from chaoslib.exceptions import ChaosException
    from chaoslib.experiment import ensure_experiment_is_valid

    path = Path(name_or_path)
    if not path.suffix and (BUILTIN_DIR / f"{name_or_path}.json").exists():
        path = BUILTIN_DIR / f"{name_or_path}.json"
    if not path.is_file():
        names = ", ".join(e["name"] for e in list_experiments())
        raise ExperimentError(f"no experiment {name_or_path!r}: give a built-in name ({names}) "
                              "or a JSON file")
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ExperimentError(f"{path} is not a readable JSON experiment: {exc}") from None
    if not isinstance(doc, dict):
        raise ExperimentError(f"{path}: an experiment is a JSON object")
    try:
        ensure_experiment_is_valid(doc)
    except ChaosException as exc:
        raise ExperimentError(f"{path}: invalid experiment: {exc}") from None
    return path.stem, doc


def scaled_configuration(doc: dict[str, Any], scale: float) -> dict[str, Any]:
    """The experiment's configuration with every `*_s` number multiplied by `scale`."""
    if not scale > 0:
        raise ExperimentError(f"--duration-scale must be above 0 (got {scale})")
    out = {}
    for key, value in (doc.get("configuration") or {}).items():
        if key.endswith("_s") and isinstance(value, int | float) and not isinstance(value, bool):
            value = round(value * scale, 3)
        out[key] = value
    return out


# ---- the lock -----------------------------------------------------------------------------------
def chaos_dir(settings: Settings) -> Path:
    return settings.home / "chaos"


def active_run(settings: Settings) -> dict[str, Any] | None:
    """The run holding the chaos lock ({run_id, pid, experiment}), None when none is active."""
    path = chaos_dir(settings) / "active.json"
    try:
        info = json.loads(path.read_text())
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(info, dict):
        return None
    try:  # a run whose verdict is written is over, even while its process still closes NATS
        doc = json.loads(run_path(settings, str(info.get("run_id"))).read_text())
    except (OSError, ValueError):
        return info
    return info if doc.get("status") == "running" else None


def chaos_lock_held(settings: Settings) -> bool:
    """True while a chaos experiment runs on this mesh and automation (the canary) should wait.

    An experiment whose subject is the canary itself (drift -> retrain -> promote, a bad canary's
    rollback) declares `pause_canary: false` in its `fraud-mesh` extension: its run still holds the
    lock against a second run (`active_run`), but the canary keeps moving."""
    run = active_run(settings)
    return run is not None and run.get("pause_canary") is not False


def pauses_canary(doc: dict[str, Any]) -> bool:
    """Whether the experiment pauses the canary while it runs (default yes; see `chaos_lock_held`)."""
    for ext in doc.get("extensions") or []:
        if isinstance(ext, dict) and ext.get("name") == EXTENSION and "pause_canary" in ext:
            return ext["pause_canary"] is not False
    return True


def _take_lock(settings: Settings, run_id: str, experiment: str, pause_canary: bool = True) -> Path:
    held = active_run(settings)
    if held is not None and held.get("run_id") != run_id:
        raise ChaosLockHeld(f"chaos run {held.get('run_id')} ({held.get('experiment')}) is active "
                            f"(pid {held.get('pid')}); wait for it or abort it")
    chaos_dir(settings).mkdir(parents=True, exist_ok=True)
    path = chaos_dir(settings) / "active.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"run_id": run_id, "pid": os.getpid(), "experiment": experiment,
                               "pause_canary": pause_canary}))
    os.replace(tmp, path)
    return path


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def run_path(settings: Settings, run_id: str) -> Path:
    return chaos_dir(settings) / f"{run_id}.json"


def abort_flag(settings: Settings, run_id: str) -> Path:
    """Present once someone asked this run to abort (the verdict then says "aborted")."""
    return chaos_dir(settings) / f"{run_id}.abort"


def read_run(settings: Settings, run_id: str) -> dict[str, Any] | None:
    """A run's document (status, steps, verdict, journal path), None when there is none."""
    if not run_id.replace("-", "").isalnum():
        return None
    try:
        doc = json.loads(run_path(settings, run_id).read_text())
    except (OSError, ValueError):
        return None
    if doc.get("status") == "running" and not _pid_alive(doc.get("pid")):
        doc["status"] = "aborted"  # the runner died without writing its end
        doc["verdict"] = "runner exited before finishing"
    return doc


def _pid_alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
        return True
    except (OSError, ValueError, TypeError):
        return False


# ---- events -------------------------------------------------------------------------------------
class _Events:
    """NATS `mesh.chaos.<event>` through data_plane.eventbus on a small loop thread (never blocks)."""

    def __init__(self, settings: Settings, experiment: str) -> None:
        from data_plane.eventbus import EventBus

        self.experiment = experiment
        self.loop = asyncio.new_event_loop()
        self.bus = EventBus(settings.nats_url, name="chaos-runner")
        self.thread = threading.Thread(target=self.loop.run_forever, name="chaos-events", daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.bus.start(), self.loop).result(5)

    def publish(self, phase: str, detail: str = "", status: str | None = None) -> None:
        event = ChaosEvent(experiment=self.experiment, phase=phase, detail=detail[:500], status=status)
        self.loop.call_soon_threadsafe(self.bus.publish, subjects.chaos(phase), event)

    def close(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.bus.close(), self.loop).result(3)
        except Exception:  # NATS down: events were dropped and counted, never awaited
            log.debug("chaos event bus close failed", exc_info=True)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(3)


# ---- running ------------------------------------------------------------------------------------
@dataclass
class RunReport:
    run_id: str
    experiment: str
    title: str
    status: str  # running | passed | failed | aborted
    verdict: str = ""
    steps: list[dict[str, Any]] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    ended_at: float | None = None
    seed: int = 0
    duration_scale: float = 1.0
    journal_path: str = ""
    pid: int = field(default_factory=os.getpid)
    journal: dict[str, Any] | None = None

    def to_dict(self, with_journal: bool = True) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "journal"}
        if with_journal:
            d["journal"] = self.journal
        return d


def run_experiment(name_or_path: str, settings: Settings | None = None, *, seed: int = 0,
                   duration_scale: float = 1.0, run_id: str | None = None,
                   on_step: StepCallback | None = None) -> RunReport:
    """Run one experiment to the end (rollbacks included) and return its report."""
    from chaos.runner_steps import execute

    settings = settings or Settings.from_env()
    name, doc = load_experiment(name_or_path)
    config = scaled_configuration(doc, duration_scale)
    config.setdefault("toxiproxy_url", f"http://{settings.host}:{settings.ports.chaos_api}")
    run_id = run_id or new_run_id()
    lock = _take_lock(settings, run_id, name, pause_canary=pauses_canary(doc))
    report = RunReport(run_id=run_id, experiment=name, title=doc.get("title", name), status="running",
                       seed=seed, duration_scale=duration_scale,
                       journal_path=str(run_path(settings, run_id)))
    try:
        execute(report, doc, config, settings, on_step)
    finally:
        lock.unlink(missing_ok=True)
    return report


def write_report(settings: Settings, report: RunReport) -> None:
    path = run_path(settings, report.run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report.to_dict(), indent=2, default=str))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    """`python -m chaos.runner NAME|FILE [--run-id ID] [--seed N] [--duration-scale X]`.

    The operator API starts runs this way, in their own session, so a run survives (and can restart)
    a control plane it stops. Exit 0 passed, 1 failed or aborted, 2 the experiment cannot run.
    """
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m chaos.runner", description=main.__doc__)
    p.add_argument("experiment")
    p.add_argument("--run-id", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--duration-scale", type=float, default=1.0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        report = run_experiment(args.experiment, seed=args.seed, duration_scale=args.duration_scale,
                                run_id=args.run_id,
                                on_step=lambda s: log.info("[%s] %s: %s %s", s.get("phase"), s.get("name"),
                                                           s.get("status"), str(s.get("detail") or "")[:200]))
    except MeshError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0 if report.status == "passed" else 1


if __name__ == "__main__":
    raise SystemExit(main())
