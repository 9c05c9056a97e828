"""The operator actions: the form each one asks for, the question it confirms, the API call it makes.

Every action goes form (if any) -> confirmation -> one operator-API request; the console owns no
mesh logic, so validation here only mirrors the API's documented rules to save a round trip.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from tui.client import OperatorClient
from tui.screens.dialogs import Field, FormCheck
from tui.state import ChaosWatch, MeshState, per_model, pick
from tui.widgets.chaos import experiment_list

DEFAULT_MODELS = ("xgboost", "pytorch")
Hints = dict[str, str]


@dataclass(frozen=True)
class ActionSpec:
    name: str
    title: str
    question: Callable[[dict[str, Any], MeshState], str]
    call: Callable[[OperatorClient, dict[str, Any], MeshState], Awaitable[Any]]
    # The form: fields from the mesh state and the screen's hints (e.g. the highlighted experiment).
    fields: Callable[[MeshState, Hints], list[Field]] | None = None
    check: FormCheck | None = None
    refuse: Callable[[MeshState], str | None] | None = None  # why it cannot run now, before any form
    after: Callable[[MeshState, dict[str, Any], Any], None] | None = None
    show_tab: str | None = None  # the pane to bring forward once it succeeded


# ---- parsing (form fields) ---------------------------------------------------------------------
def parse_fraction(text: str) -> float:
    """'0.5' or '50%' -> 0.5; anything else outside [0, 1] is refused."""
    if not text:
        raise ValueError("enter a fraction between 0 and 1 (or a percentage like 50%)")
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number; enter e.g. 0.5 or 50%") from None
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError("must be between 0 and 1 (or 0% to 100%)")
    return value


def check_weights(values: dict[str, Any]) -> str | None:
    total = sum(values.values())
    if abs(total - 1.0) > 1e-3:  # the API's rule (control_plane.intent.validate_weights)
        return f"weights must sum to 1 (they sum to {total:g})"
    return None


def parse_version(text: str) -> str:
    text = text.removeprefix("v").strip()
    if not text:
        raise ValueError("enter a registry version, e.g. 3")
    return text


def parse_positive(limit: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a number") from None
        if not 0 < value <= limit:
            raise ValueError(f"must be above 0 and at most {limit:g}")
        return value
    return parse


def optional(text: str) -> str | None:
    return text or None


def required(text: str) -> str:
    if not text:
        raise ValueError("required")
    return text


# ---- what the state offers ---------------------------------------------------------------------
def intent(state: MeshState) -> dict[str, Any]:
    return pick(state.status.data, "intent", default={}) or {}


def model_names(state: MeshState) -> list[str]:
    names = list(intent(state).get("weights") or {})
    if state.models.data is not None:
        names += [m for m in per_model(state.models.data, "models") if m not in names]
    return names or list(DEFAULT_MODELS)


def model_field(state: MeshState, default: str | None = None) -> Field:
    return Field("model", "Model:", default or "", tuple((m, m) for m in model_names(state)))


def canary_model(state: MeshState) -> str | None:
    """The model whose challenger is in shadow or canary now, if any."""
    for model, c in per_model(state.canary.data, "canaries", "canary", "models").items():
        if str(c.get("phase")) in ("shadow", "canary"):
            return model
    live = intent(state).get("canary") or intent(state).get("shadow")
    return str(live["model"]) if isinstance(live, dict) and live.get("model") else None


def frozen(state: MeshState) -> bool:
    return bool(pick(state.status.data, "frozen", default=intent(state).get("frozen")))


def load_running(state: MeshState) -> bool:
    return bool(pick(state.load.data, "running", default=False))


def running_chaos(state: MeshState) -> ChaosWatch | None:
    watch = state.chaos
    return watch if watch is not None and not watch.finished else None


# ---- the actions -------------------------------------------------------------------------------
def _weights_fields(state: MeshState, hints: Hints) -> list[Field]:
    weights = intent(state).get("weights") or {m: 0.5 for m in DEFAULT_MODELS}
    names = list(weights)
    return [Field(m, f"{m} weight (0-1 or %):", f"{float(weights[m]):g}", parse=parse_fraction,
                  complement_of=names[0] if i == 1 and len(names) == 2 else None)
            for i, m in enumerate(names)]


def _weights_question(v: dict[str, Any], s: MeshState) -> str:
    split = " / ".join(f"{m} {w * 100:g}%" for m, w in v.items())
    return f"Set the champion traffic split to {split}?"


def _start_chaos_fields(state: MeshState, hints: Hints) -> list[Field]:
    known = experiment_list(state.experiments.data)
    if known:
        options = tuple((f"{e['name']} — {e.get('title', '')}", e["name"]) for e in known)
        return [Field("name", "Experiment:", hints.get("experiment", ""), options)]
    return [Field("name", "Experiment name:", placeholder="e.g. primary-killed", parse=required)]


def _watch_chaos(state: MeshState, values: dict[str, Any], data: Any) -> None:
    run_id = pick(data, "run_id", "id")
    if run_id is not None:
        state.chaos = ChaosWatch(str(run_id), values["name"])


def _abort_question(v: dict[str, Any], s: MeshState) -> str:
    watch = running_chaos(s)
    assert watch is not None
    return f"Abort chaos run {watch.run_id} ({watch.experiment})? Its rollbacks still run."


def _no_chaos_running(state: MeshState) -> str | None:
    return None if running_chaos(state) else "no chaos run started from this console is running"


def _abort(c: OperatorClient, v: dict[str, Any], s: MeshState) -> Awaitable[Any]:
    watch = running_chaos(s)
    assert watch is not None
    return c.chaos_abort(watch.run_id)


ACTIONS: dict[str, ActionSpec] = {a.name: a for a in (
    ActionSpec("weights", "Set traffic weights", _weights_question,
               lambda c, v, s: c.set_weights({k: round(w, 6) for k, w in v.items()}),
               fields=_weights_fields, check=check_weights, show_tab="overview"),
    ActionSpec("freeze", "Freeze automation",
               lambda v, s: "Freeze automation? The reconciler and the canary stop changing routing; "
                            "operator actions still apply.",
               lambda c, v, s: c.freeze(v["reason"]),
               fields=lambda s, h: [Field("reason", "Reason (optional):", parse=optional)]),
    ActionSpec("unfreeze", "Unfreeze automation",
               lambda v, s: "Unfreeze automation? The reconciler and the canary may change routing again.",
               lambda c, v, s: c.unfreeze(v["reason"]),
               fields=lambda s, h: [Field("reason", "Reason (optional):", parse=optional)]),
    ActionSpec("pin", "Pin a model version",
               lambda v, s: f"Pin {v['model']} to registry version {v['version']}? Its champion slot "
                            "serves that version until unpinned.",
               lambda c, v, s: c.pin(v["model"], v["version"]),
               fields=lambda s, h: [model_field(s), Field("version", "Version:", placeholder="e.g. 3",
                                                       parse=parse_version)]),
    ActionSpec("unpin", "Unpin a model",
               lambda v, s: f"Unpin {v['model']}? Its champion slot follows the champion alias again.",
               lambda c, v, s: c.unpin(v["model"]),
               fields=lambda s, h: [model_field(s, next(iter(intent(s).get("pins") or {}), None))]),
    ActionSpec("retrain", "Trigger a retrain",
               lambda v, s: f"Retrain {v['model']} now ({v['reason']})? The candidate is evaluated, "
                            "registered and shadowed before it gets traffic.",
               lambda c, v, s: c.retrain(v["model"], v["reason"]),
               fields=lambda s, h: [model_field(s), Field("reason", "Reason:", "operator request")],
               check=lambda v: None if v["reason"] else "Reason: say why (it goes into the ledger)"),
    ActionSpec("promote", "Promote the challenger",
               lambda v, s: f"Promote the {v['model']} challenger to champion now? The MLflow alias "
                            "'champion' moves to it.",
               lambda c, v, s: c.promote(v["model"]),
               fields=lambda s, h: [model_field(s, canary_model(s))], show_tab="models"),
    ActionSpec("rollback", "Roll back the challenger",
               lambda v, s: f"Roll back the {v['model']} challenger ({v['reason']})? Its weight goes "
                            "to 0.",
               lambda c, v, s: c.rollback(v["model"], v["reason"]),
               fields=lambda s, h: [model_field(s, canary_model(s)),
                                 Field("reason", "Reason:", "operator rollback")],
               check=lambda v: None if v["reason"] else "Reason: say why (it goes into the ledger)",
               show_tab="models"),
    ActionSpec("load_start", "Start background load",
               lambda v, s: f"Send {v['rate']:g} requests/s for {v['duration']:g} s"
                            f"{' (scenario ' + v['scenario'] + ')' if v['scenario'] else ''} to the edge?",
               lambda c, v, s: c.load_start(v["rate"], v["duration"], v["scenario"]),
               fields=lambda s, h: [Field("rate", "Rate (requests/s):", "50", parse=parse_positive(2000)),
                                 Field("duration", "Duration (s):", "600",
                                       parse=parse_positive(7 * 24 * 3600)),
                                 Field("scenario", "Drift scenario (optional):", parse=optional,
                                       placeholder="e.g. covariate_shift")],
               show_tab="charts"),
    ActionSpec("load_stop", "Stop background load",
               lambda v, s: f"Stop the background load ({pick(s.load.data, 'sent', default='?')} "
                            "requests sent so far)?",
               lambda c, v, s: c.load_stop()),
    ActionSpec("chaos", "Start a chaos experiment",
               lambda v, s: f"Start chaos experiment {v['name']}? It injects real faults into the "
                            "local mesh; its rollbacks always run.",
               lambda c, v, s: c.chaos_start(v["name"]),
               fields=_start_chaos_fields, after=_watch_chaos, show_tab="chaos"),
    ActionSpec("abort", "Abort the chaos run", _abort_question, _abort, refuse=_no_chaos_running,
               show_tab="chaos"),
)}


def resolve(name: str, state: MeshState) -> ActionSpec:
    """The action a key means now: `freeze` and `load` toggle with the mesh's current state."""
    if name == "freeze":
        return ACTIONS["unfreeze" if frozen(state) else "freeze"]
    if name == "load":
        return ACTIONS["load_stop" if load_running(state) else "load_start"]
    return ACTIONS[name]
