"""CanaryController: a registered challenger -> shadow -> 10 -> 25 -> 50 -> 100 % -> promoted, or rolled back.

One `CanaryRun` per model kind. `tick()` advances every run by at most one phase, from evidence
the component feeds in (`observe_record`, `observe_label`, the edge's challenger error counters)
and the clock; every move is a small method, every phase change a ledger Decision (actor
`canary`), routing changes only through `cp.apply()` (refused while frozen: the run waits), and a
chaos hold (`hold()`) stops all moves. The verdict rules are in `canary_analysis`.

Seams (real implementations in `canary_component`, fakes in unit tests): `cp` (apply, ledger,
store.intent), `Actions` (reload a slot, move/delete an alias, publish an event, read the
challenger's edge error counters).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from control_plane.app import IntentFrozenError
from control_plane.healing.canary_analysis import (
    CanaryConfig,
    Evidence,
    Observation,
    Verdict,
    judge,
    warm_up,
)
from data_plane.contracts.events import Decision, PredictionRecord

log = logging.getLogger(__name__)
Clock = Callable[[], float]
PHASES = ("pending", "shadow", "canary", "promoted", "rolled_back")


class Actions(Protocol):
    async def reload_slot(self, kind: str, slot: str, version: str) -> None: ...
    async def set_alias(self, kind: str, alias: str, version: str) -> str | None: ...  # previous
    async def delete_alias(self, kind: str, alias: str) -> None: ...
    async def challenger_counters(self, kind: str) -> tuple[int, int]: ...  # (attempts, errors)
    def publish(self, subject: str, event: Any) -> None: ...


@dataclass
class CanaryRun:
    kind: str
    version: str
    trigger_id: str | None
    phase: str = "pending"  # pending -> shadow -> canary -> promoted | rolled_back
    step: int = -1  # index into config.steps while phase == canary
    weight: float = 0.0
    phase_started: float = 0.0
    baseline: tuple[int, int] = (0, 0)  # challenger (attempts, errors) when the phase started
    evidence: Evidence = field(default_factory=Evidence)
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    blocked: str | None = None  # why the last move did not happen (frozen, hold)
    started: float = 0.0
    moving: bool = False  # a task is inside _advance for this run (the tick or on_registered)

    @property
    def active(self) -> bool:
        return self.phase in ("pending", "shadow", "canary")

    def view(self) -> dict[str, Any]:
        return {"model": self.kind, "version": self.version, "phase": self.phase, "step": self.step,
                "weight": self.weight, "blocked": self.blocked, "trigger_id": self.trigger_id,
                "verdicts": self.verdicts[-20:]}


class CanaryController:
    """The state machine (module docstring)."""

    def __init__(self, cp: Any, actions: Actions, config: CanaryConfig | None = None,
                 clock: Clock = time.monotonic) -> None:
        self.cp, self.actions, self.config, self.clock = cp, actions, config or CanaryConfig(), clock
        self.runs: dict[str, CanaryRun] = {}
        self.hold_reason: str | None = None

    # ---- inputs -----------------------------------------------------------------------------------
    async def on_registered(self, kind: str, version: str, trigger_id: str | None) -> CanaryRun:
        """A new challenger: load it into the challenger slot and start shadowing it."""
        await asyncio.to_thread(warm_up)  # off the event loop (see warm_up)
        old = self.runs.get(kind)
        if old is not None and old.active:
            await self.rollback(kind, f"superseded by {kind}_v{version}", rule="superseded")
        run = CanaryRun(kind, version, trigger_id, started=self.clock())
        self.runs[kind] = run
        await self._advance(run)  # frozen or held: the run stays pending and a later tick starts it
        return run

    def observe_record(self, rec: PredictionRecord) -> None:
        run = self.runs.get(rec.model)
        if run is None or not run.active:
            return
        obs = Observation(rec.score, rec.is_fraud, rec.latency_ms)
        ev = run.evidence
        if rec.shadow:
            if run.phase == "shadow" and rec.model_version == f"{run.kind}_v{run.version}":
                ev.challenger[rec.request_id] = obs
        elif rec.slot == "challenger":
            if run.phase == "canary":
                ev.challenger[rec.request_id] = obs
        else:
            ev.champion[rec.request_id] = obs

    def observe_label(self, request_id: str, is_fraud: bool) -> None:
        for run in self.runs.values():
            if run.active and (request_id in run.evidence.challenger or request_id in run.evidence.champion):
                run.evidence.labels[request_id] = is_fraud

    # ---- chaos lock -----------------------------------------------------------------------------------
    def hold(self, reason: str) -> None:
        self.hold_reason = reason or "held"

    def release(self) -> None:
        self.hold_reason = None

    # ---- the loop body ------------------------------------------------------------------------------
    async def tick(self) -> None:
        """Judge every active run once and move it at most one phase."""
        for run in list(self.runs.values()):
            if run.active:
                await self._advance(run)

    async def _advance(self, run: CanaryRun) -> None:
        # One mover per run: `on_registered` and the tick loop both advance a run, and a move
        # awaits (slot reload, apply); a second entry would repeat it (two load_challenger and
        # two canary_shadow decisions were seen on a real mesh). The tick retries next round.
        if run.moving:
            return
        run.moving = True
        try:
            await self._advance_once(run)
        finally:
            run.moving = False

    async def _advance_once(self, run: CanaryRun) -> None:
        if self.hold_reason is not None:
            run.blocked = f"held: {self.hold_reason}"
            return
        if self.cp.store.intent.frozen:
            run.blocked = "frozen by the operator"
            return
        if run.phase == "pending":
            try:
                await self._start(run)
            except IntentFrozenError:
                run.blocked = "frozen by the operator"
            return
        verdict = await self._judge(run)
        if verdict.result == "wait":
            return
        self._remember(run, verdict)
        try:
            if verdict.result == "fail":
                await self.rollback(run.kind, verdict.reason, rule=verdict.rule, numbers=verdict.numbers)
            elif run.phase == "shadow" or run.step + 1 < len(self.config.steps):
                await self._next_step(run, verdict)
            else:
                await self.promote(run.kind, verdict.reason, rule=verdict.rule, numbers=verdict.numbers)
        except IntentFrozenError:
            run.blocked = "frozen by the operator"

    async def _judge(self, run: CanaryRun) -> Verdict:
        attempts, errors = await self.actions.challenger_counters(run.kind)
        run.evidence.attempts = max(0, attempts - run.baseline[0])
        run.evidence.errors = max(0, errors - run.baseline[1])
        shadow = run.phase == "shadow"
        rules = self.config.shadow if shadow else self.config.step
        return judge(run.evidence, rules, self.config, self.clock() - run.phase_started, shadow=shadow)

    # ---- moves --------------------------------------------------------------------------------------
    async def _start(self, run: CanaryRun) -> None:
        await self.actions.reload_slot(run.kind, "challenger", run.version)
        self._record(run, "load_challenger", "challenger_registered",
                     f"{run.kind}_v{run.version} loaded into the challenger slot",
                     {"version": float(run.version)})
        await self._enter_shadow(run)

    async def _enter_shadow(self, run: CanaryRun) -> None:
        fraction = self.config.shadow_fraction
        await self.cp.apply({"shadow": {"model": run.kind, "fraction": fraction, "version": run.version}},
                            actor="canary", action="canary_shadow", rule="challenger_registered",
                            reason=f"mirror {fraction:g} of live traffic to {run.kind}_v{run.version}",
                            trigger_ids=[t for t in (run.trigger_id,) if t], numbers={"fraction": fraction})
        await self._new_phase(run, "shadow", -1, 0.0)

    async def _next_step(self, run: CanaryRun, verdict: Verdict) -> None:
        step = run.step + 1
        weight = self.config.steps[step]
        await self.cp.apply({"shadow": None, "canary": {"model": run.kind, "weight": weight,
                                                        "version": run.version}},
                            actor="canary", action="canary_step", rule=verdict.rule,
                            reason=f"{run.kind}_v{run.version} to {weight:.0%}: {verdict.reason}",
                            trigger_ids=[t for t in (run.trigger_id,) if t],
                            numbers={"weight": weight, **verdict.numbers})
        await self._new_phase(run, "canary", step, weight)

    async def _new_phase(self, run: CanaryRun, phase: str, step: int, weight: float) -> None:
        run.phase, run.step, run.weight, run.blocked = phase, step, weight, None
        run.phase_started = self.clock()
        run.baseline = await self.actions.challenger_counters(run.kind)
        run.evidence = Evidence()
        self._event(run, "pass", f"entered {phase} at {weight:.0%}")

    async def promote(self, kind: str, reason: str, *, rule: str = "canary_passed", actor: str = "canary",
                      numbers: dict[str, float] | None = None) -> Decision:
        """Champion alias -> the challenger's version, champion slot reloads it, routing back to champions."""
        run = self._run(kind)
        previous = await self.actions.set_alias(kind, "champion", run.version)
        # The champion slot serves the new version before traffic leaves the challenger slot:
        # no request ever meets an unloaded model.
        await self.actions.reload_slot(kind, "champion", "champion")
        decision = await self.cp.apply({"canary": None, "shadow": None}, actor=actor, action="promote",
                                       rule=rule, reason=f"{kind}_v{run.version} promoted: {reason}",
                                       trigger_ids=[t for t in (run.trigger_id,) if t],
                                       numbers={"version": float(run.version), **(numbers or {})})
        await self.actions.delete_alias(kind, "challenger")
        run.phase, run.weight = "promoted", 1.0
        from data_plane.contracts import subjects
        from data_plane.contracts.events import ModelAliasMoved

        self.actions.publish(subjects.MODEL_PROMOTED, ModelAliasMoved(
            model=kind, version=run.version, alias="champion", previous_version=previous, reason=reason))
        self._event(run, "pass", reason)
        self._log_time(run)
        return decision

    async def rollback(self, kind: str, reason: str, *, rule: str = "canary_failed", actor: str = "canary",
                       numbers: dict[str, float] | None = None) -> Decision:
        """Challenger weight 0 and shadow off in one apply, challenger alias removed, reason recorded."""
        run = self._run(kind)
        decision = await self.cp.apply({"canary": None, "shadow": None}, actor=actor, action="rollback",
                                       rule=rule, reason=f"{kind}_v{run.version} rolled back at "
                                       f"{run.weight:.0%} ({run.phase}): {reason}",
                                       trigger_ids=[t for t in (run.trigger_id,) if t],
                                       numbers={"version": float(run.version), "weight": run.weight,
                                                **(numbers or {})})
        await self.actions.delete_alias(kind, "challenger")
        run.phase, run.weight = "rolled_back", 0.0
        from data_plane.contracts import subjects
        from data_plane.contracts.events import ModelAliasMoved

        self.actions.publish(subjects.MODEL_ROLLED_BACK, ModelAliasMoved(
            model=kind, version=run.version, alias="challenger", reason=reason))
        self._event(run, "fail", reason)
        return decision

    # ---- helpers ------------------------------------------------------------------------------------
    def _run(self, kind: str) -> CanaryRun:
        run = self.runs.get(kind)
        if run is None or not run.active:
            from data_plane.contracts.errors import ValidationError

            raise ValidationError("model", "no_active_canary", f"{kind} has no challenger in shadow or "
                                  "canary; see GET /api/v1/canary")
        return run

    def _remember(self, run: CanaryRun, verdict: Verdict) -> None:
        run.verdicts.append({"phase": run.phase, "weight": run.weight, "result": verdict.result,
                             "rule": verdict.rule, "reason": verdict.reason, "numbers": verdict.numbers})

    def _record(self, run: CanaryRun, action: str, rule: str, reason: str, numbers: dict[str, float]) -> None:
        self.cp.ledger.append(Decision(actor="canary", action=action, rule=rule, reason=reason,
                                       trigger_ids=[t for t in (run.trigger_id,) if t], numbers=numbers))

    def _event(self, run: CanaryRun, verdict: str, reason: str) -> None:
        from data_plane.contracts import subjects
        from data_plane.contracts.events import CanaryEvent

        self.actions.publish(subjects.canary(run.phase), CanaryEvent(
            model=run.kind, version=run.version, phase=run.phase, weight=run.weight, verdict=verdict,
            reason=reason[:500]))

    def _log_time(self, run: CanaryRun) -> None:
        log.info("canary %s_v%s %s after %.1fs", run.kind, run.version, run.phase, self.clock() - run.started)
