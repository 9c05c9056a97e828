"""The part of `chaos.runner` that drives chaoslib: step events, the verdict, the safety net."""

from __future__ import annotations

import copy
import logging
import time
from typing import TYPE_CHECKING, Any

from chaoslib.run import RunEventHandler

from data_plane.settings import Settings

if TYPE_CHECKING:
    from chaos.runner import RunReport, StepCallback

log = logging.getLogger(__name__)


class _StepEvents(RunEventHandler):  # type: ignore[misc]
    """chaoslib's run events -> report steps, the run document, the callback and NATS."""

    def __init__(self, report: RunReport, settings: Settings, events: Any,
                 on_step: StepCallback | None) -> None:
        self.report, self.settings, self.events, self.on_step = report, settings, events, on_step
        self.phase = "hypothesis-before"

    def _emit(self, step: dict[str, Any]) -> None:
        from chaos.runner import write_report

        write_report(self.settings, self.report)
        if self.on_step is not None:
            try:
                self.on_step(step)
            except Exception:  # a broken display must not break the experiment
                log.debug("step callback failed", exc_info=True)
        if self.events is not None:
            self.events.publish("step", f"{step['phase']}: {step['name']} {step['status']}", step["status"])

    def start_hypothesis_before(self, experiment: Any) -> None:
        self.phase = "hypothesis-before"

    def start_method(self, experiment: Any) -> None:
        self.phase = "method"

    def start_hypothesis_after(self, experiment: Any) -> None:
        self.phase = "hypothesis-after"

    def start_rollbacks(self, experiment: Any) -> None:
        self.phase = "rollbacks"

    def hypothesis_before_completed(self, experiment: Any, state: Any, journal: Any) -> None:
        self._hypothesis(state)

    def hypothesis_after_completed(self, experiment: Any, state: Any, journal: Any) -> None:
        self._hypothesis(state)

    def _hypothesis(self, state: Any) -> None:
        if isinstance(state, dict) and not state.get("steady_state_met", True):
            failed = [p["activity"]["name"] for p in state.get("probes", []) if not p.get("tolerance_met")]
            if self.events is not None:
                self.events.publish("deviated", f"{self.phase}: {', '.join(failed)}", "failed")

    def start_activity(self, activity: Any) -> None:
        step = {"phase": self.phase, "name": activity.get("name", "?"), "status": "running", "detail": "",
                "started_at": time.time()}
        self.report.steps.append(step)
        self._emit(step)

    def activity_completed(self, activity: Any, run: Any) -> None:
        name = activity.get("name", "?")
        running = (s for s in reversed(self.report.steps) if s["name"] == name and s["status"] == "running")
        step = next(running, None)
        if step is None:
            step = {"phase": self.phase, "name": name, "started_at": time.time()}
            self.report.steps.append(step)
        run = run or {}
        step["status"] = run.get("status", "succeeded")
        step["duration_s"] = round(float(run.get("duration") or 0.0), 3)
        if run.get("exception"):
            step["detail"] = "".join(run["exception"][-1:]).strip()[:500]
        elif run.get("output") is not None:
            step["detail"] = _short(run["output"])
        self._emit(step)


def _short(value: Any, limit: int = 300) -> str:
    import json

    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + "..."


def verdict_of(journal: dict[str, Any]) -> tuple[str, str]:
    """(status, why): passed only when nothing deviated, failed or was interrupted."""
    if journal.get("status") in ("interrupted", "aborted"):
        return "aborted", "the run was interrupted (abort or signal); rollbacks ran"
    reasons = []
    if journal.get("deviated"):
        reasons.append("steady-state hypothesis deviated")
    ssh_before = journal.get("steady_states", {}).get("before") or {}
    if ssh_before and not ssh_before.get("steady_state_met", True):
        reasons.append("steady state not met before the method")
    for run in journal.get("run", []):
        if run.get("status") != "succeeded":
            reasons.append(f"method step {run['activity'].get('name')} {run.get('status')}: "
                           + "".join(run.get("exception") or [])[-300:].strip())
    for run in journal.get("rollbacks", []):
        if run.get("status") != "succeeded":
            reasons.append(f"rollback {run['activity'].get('name')} {run.get('status')}")
    if journal.get("status") == "failed" and not reasons:
        reasons.append("chaoslib reported the run as failed")
    if reasons:
        return "failed", "; ".join(reasons)
    return "passed", "steady state held; every expectation met"


def execute(report: RunReport, doc: dict[str, Any], config: dict[str, Any], settings: Settings,
            on_step: StepCallback | None) -> None:
    """Run chaoslib on `doc` (rollbacks always), then the safety net; fills `report` in place."""
    from chaoslib.experiment import run_experiment as ctk_run

    from chaos.extension import actions, context
    from chaos.runner import _Events, write_report

    context.begin(settings, seed=report.seed)
    events = None
    try:
        events = _Events(settings, report.experiment)
    except Exception:
        log.warning("NATS events unavailable for this run", exc_info=True)
    handler = _StepEvents(report, settings, events, on_step)
    if events is not None:
        events.publish("started", f"{report.title} (run {report.run_id})", "running")
    write_report(settings, report)
    journal: dict[str, Any] = {}
    try:
        experiment = copy.deepcopy(doc)
        experiment["configuration"] = config  # scaled durations and the fault proxy's URL
        journal = ctk_run(experiment, settings={"runtime": {"rollbacks": {"strategy": "always"}}},
                          event_handlers=[handler])
    finally:
        report.journal = journal
        from chaos.runner import abort_flag

        report.status, report.verdict = verdict_of(journal) if journal else ("aborted", "no journal")
        if abort_flag(settings, report.run_id).exists():
            report.status, report.verdict = "aborted", "aborted on request; rollbacks ran"
        try:  # the safety net: whatever the rollbacks left behind
            net = actions.restore_mesh()
            report.steps.append({"phase": "safety-net", "name": "restore_mesh", "status": "succeeded",
                                 "detail": _short(net)})
        except Exception as exc:
            report.steps.append({"phase": "safety-net", "name": "restore_mesh", "status": "failed",
                                 "detail": str(exc)[:500]})
            if report.status == "passed":
                report.status, report.verdict = "failed", f"the mesh was not restored: {exc}"
        context.end()
        report.ended_at = time.time()
        write_report(settings, report)
        if events is not None:
            if report.status == "aborted":
                events.publish("aborted", report.verdict, report.status)
            else:
                events.publish("rolled_back", f"{len(journal.get('rollbacks', []))} rollbacks", None)
            events.publish("finished", report.verdict, report.status)
            events.close()
        if on_step is not None:
            on_step({"phase": "finished", "name": report.experiment, "status": report.status,
                     "detail": report.verdict})
