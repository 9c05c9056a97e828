"""Probes and actions for the model lifecycle: drift -> retrain -> canary -> promoted | rolled back.

The experiments drive the mesh as an operator would: client load through the edge (with delayed
labels), the operator API (`/api/v1/drift`, `/canary`, `/decisions`, `/models`, `/status`), the
model servers' `/admin/slots`, and `meshctl challenger register` for a deliberately bad challenger
(chaos may not import `training`, so the CLI trains it, registers it in MLflow and announces it on
NATS). Each probe returns the numbers it judged, so they land in the experiment's journal.

The chain checks (`promotion_problems`, `rollback_problems`) are pure functions over ledger
decisions; the probes add the live state (aliases, what the champion slot serves, the intent).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from chaoslib.exceptions import ActivityFailed

from chaos.extension import context
from chaos.extension.mesh import ChaosActionError, child_env, http_json, operator
from chaos.extension.probes import ledger_entries
from data_plane.settings import REPO_ROOT, Settings

__all__ = ["abandon_canary", "expect_promoted", "expect_rolled_back_before", "promotion_problems",
           "register_degraded_challenger", "rollback_problems", "wait_for_canary", "wait_for_drift_report"]

POLL_S = 0.5
ACTIVE = ("pending", "shadow", "canary")
STEPS = (0.10, 0.25, 0.50, 1.00)
LIFECYCLE = ("register_challenger", "load_challenger", "canary_shadow", "canary_step", "promote", "rollback")
# Rules a canary verdict may roll a challenger back by (control_plane/healing/canary_analysis.py);
# `superseded` or an operator's rollback would not prove the canary caught the bad model.
VERDICT_RULES = ("label_f1", "agreement", "label_free_proxy", "error_rate", "p95_latency",
                 "latency_mann_whitney", "insufficient_evidence")


# ---- reading the mesh -----------------------------------------------------------------------------
def _get(settings: Settings, path: str) -> dict[str, Any]:
    status, body = http_json("GET", settings.operator_url + path, timeout=10.0)
    if status != 200 or not isinstance(body, dict):
        raise ActivityFailed(f"GET {path} -> {status or 'unreachable'}: {str(body)[:200]}")
    return body


def _canary(settings: Settings, model: str) -> dict[str, Any]:
    return dict((_get(settings, "/api/v1/canary").get("canary") or {}).get(model) or {})


def _aliases(settings: Settings, model: str) -> dict[str, str]:
    info = (_get(settings, "/api/v1/models").get("models") or {}).get(model) or {}
    return {a: str(v["version"]) for v in info.get("versions", []) for a in v.get("aliases", [])}


def _champion_slot(settings: Settings, model: str) -> str | None:
    """The version label the model server's champion slot serves (its /admin/slots, direct call)."""
    port = getattr(settings.ports, model, None)
    status, body = http_json("GET", f"http://{settings.host}:{port}/admin/slots")
    if status != 200 or not isinstance(body, dict):
        return None
    slot = next((s for s in body.get("slots", []) if s.get("slot") == "champion"), {})
    return slot.get("model_version")


def _live_problems(settings: Settings, model: str, champion: str | None) -> tuple[dict[str, str], str | None,
                                                                                 list[str]]:
    """(aliases, what the champion slot serves, problems): alias `champion` -> `champion` (any when
    None) and no `challenger`; the champion slot serves it; the intent holds no canary or shadow."""
    problems = []
    aliases = _aliases(settings, model)
    champion = champion or aliases.get("champion")
    if aliases != {"champion": champion}:
        problems.append(f"aliases are {aliases}, want champion -> {champion} and no challenger")
    serving = _champion_slot(settings, model)
    if serving != f"{model}_v{champion}":
        problems.append(f"the champion slot serves {serving}, not {model}_v{champion}")
    intent = _get(settings, "/api/v1/status").get("intent") or {}
    if intent.get("canary") or intent.get("shadow"):
        problems.append(f"the intent still holds canary {intent.get('canary')} / "
                        f"shadow {intent.get('shadow')}")
    return aliases, serving, problems


def _chain(model: str, version: str | None = None) -> list[dict[str, Any]]:
    """Ledger decisions since the run began that concern `model` (or one version of it)."""
    needle = f"{model}_v{version}" if version else model
    return [d for d in ledger_entries(limit=1000) if needle in str(d.get("reason", ""))]


def _line(d: dict[str, Any]) -> str:
    return f"{d.get('actor')}:{d.get('action')}:{d.get('rule')}"


def _progress(model: str) -> str:
    return " | ".join(_line(d) for d in _chain(model)) or "no decisions yet"


# ---- probes ---------------------------------------------------------------------------------------
def wait_for_drift_report(model: str = "xgboost", level: str = "retrain", timeout_s: float = 60.0,
                          since_mark: str | None = None) -> dict[str, Any]:
    """Wait for a DriftReport of `model` at `level` published after the mark (default: the run's start).

    The report is remembered for `expect_promoted` (its deadline counts from the report's time)."""
    ctx = context.current()
    since = ctx.mark_time(since_mark) or ctx.started_at
    deadline = time.monotonic() + timeout_s
    newest: dict[str, Any] = {}
    while True:
        newest = dict((_get(ctx.settings, "/api/v1/drift").get("drift") or {}).get(model) or {})
        if newest.get("level") == level and float(newest.get("ts") or 0) >= since:
            break
        if time.monotonic() > deadline:
            why = (f"no {level}-level drift report for {model} within {timeout_s:g} s "
                   f"(newest: level {newest.get('level')}, max PSI {newest.get('max_psi')})")
            ctx.seen[f"no_challenger:{model}"] = {"error": why}  # nothing will trigger a retrain
            raise ActivityFailed(why)
        time.sleep(POLL_S)
    ctx.seen[f"drift:{model}"] = newest
    drifted = [f for f in newest.get("features", []) if f.get("rejected")]
    return {"model": model, "level": newest["level"], "ts": newest["ts"], "id": newest.get("id"),
            "model_version": newest.get("model_version"), "window_size": newest.get("window_size"),
            "max_psi": newest.get("max_psi"), "score_psi": newest.get("score_psi"),
            "after_s": round(float(newest["ts"]) - since, 2),
            "drifted_features": {f["feature"]: round(float(f["psi"]), 4) for f in drifted}}


def wait_for_canary(model: str = "xgboost", phases: Sequence[str] = ("promoted", "rolled_back"),
                    timeout_s: float = 180.0, version: str | None = None) -> dict[str, Any]:
    """Wait until the canary run of `model` this experiment caused reaches one of `phases`.

    Which run: `version`, else the challenger this run registered, else the first challenger the
    canary loaded after the run began (its `load_challenger` decision)."""
    ctx = context.current()
    deadline = time.monotonic() + timeout_s
    started = time.monotonic()
    run: dict[str, Any] = {}
    failed = ctx.seen.get(f"no_challenger:{model}")
    if version is None and failed is not None:  # nothing to wait for: fail now, not at the timeout
        raise ActivityFailed(f"no {model} challenger to follow: {failed['error']}")
    while True:
        want = version or ctx.challengers.get(model) or _first_loaded(model)
        run = _canary(ctx.settings, model)
        if want is not None and str(run.get("version")) == want and run.get("phase") in phases:
            break
        if time.monotonic() > deadline:
            raise ActivityFailed(f"the {model} canary ({want or 'no challenger loaded yet'}) did not reach "
                                 f"{'/'.join(phases)} within {timeout_s:g} s: phase {run.get('phase')} "
                                 f"at {run.get('weight')}; ledger: {_progress(model)}")
        time.sleep(POLL_S)
    ctx.challengers.setdefault(model, str(run["version"]))
    return {"model": model, "version": run["version"], "phase": run["phase"], "weight": run.get("weight"),
            "waited_s": round(time.monotonic() - started, 2),
            "verdicts": [{k: v.get(k) for k in ("phase", "weight", "result", "rule", "reason")}
                         for v in run.get("verdicts", [])]}


def _first_loaded(model: str) -> str | None:
    prefix = f"{model}_v"
    for d in _chain(model):
        reason = str(d.get("reason", ""))
        if d.get("action") == "load_challenger" and reason.startswith(prefix):
            return reason[len(prefix):].split(" ", 1)[0]
    return None


def expect_promoted(model: str = "xgboost", max_to_10pct_ms: int = 60_000,
                    steps: Sequence[float] = STEPS) -> dict[str, Any]:
    """The drift -> retrain -> canary chain ended in a promotion, by the book and in time.

    Ledger since the run began: one `register_challenger` (all gates passed) of the promoted version,
    then `canary_shadow`, `canary_step` at exactly `steps`, `promote` last, each with its numbers; the
    first step came <= `max_to_10pct_ms` after the drift report `wait_for_drift_report` saw. Live: alias
    `champion` is the new version and `challenger` is gone, the champion slot serves it, the intent
    holds no canary or shadow."""
    ctx = context.current()
    s = ctx.settings
    run = _canary(s, model)
    version = str(run.get("version"))
    chain = _chain(model)
    problems = [] if run.get("phase") == "promoted" else [f"canary phase is {run.get('phase')}, not promoted"]
    problems += promotion_problems(chain, version, steps)
    report = ctx.seen.get(f"drift:{model}")
    canary_steps = [d for d in chain if d.get("action") == "canary_step"]
    to_10 = None
    if report is None:
        problems.append("no drift report was seen (run wait_for_drift_report first)")
    elif canary_steps:
        to_10 = float(canary_steps[0]["ts"]) - float(report["ts"])
        if to_10 * 1000 > max_to_10pct_ms:
            problems.append(f"challenger reached {steps[0]:.0%} {to_10:.1f} s after the drift report "
                            f"(allowed {max_to_10pct_ms / 1000:g} s)")
    aliases, serving, live = _live_problems(s, model, version)
    problems += live
    if problems:
        raise ActivityFailed(f"{model} promotion: " + "; ".join(problems) + f" (ledger: {_progress(model)})")
    retrain = next(d for d in chain if d.get("action") == "register_challenger")
    promote = next(d for d in chain if d.get("action") == "promote")
    assert report is not None and to_10 is not None  # both checked above
    return {"model": model, "version": version, "drift_report_ts": report["ts"],
            "s_drift_report_to_registered": round(float(retrain["ts"]) - float(report["ts"]), 2),
            "s_drift_report_to_10pct": round(to_10, 2),
            "s_drift_report_to_promoted": round(float(promote["ts"]) - float(report["ts"]), 2),
            "max_s_to_10pct": max_to_10pct_ms / 1000,
            "weights": [d["numbers"]["weight"] for d in canary_steps],
            "retrain": {"reason": retrain.get("reason"), "numbers": retrain.get("numbers")},
            "verdicts": [f"{d.get('action')} {d.get('rule')}: {str(d.get('reason'))[:160]}"
                         for d in chain if d.get("actor") == "canary"],
            "aliases": aliases, "champion_slot": serving, "chain": [_line(d) for d in chain]}


def promotion_problems(chain: Sequence[dict[str, Any]], version: str,
                       steps: Sequence[float] = STEPS) -> list[str]:
    """What is wrong with a drift -> promote ledger chain (decisions about one model), [] when nothing."""
    problems = []
    # Only the lifecycle's own moves: retrain refusals (cooldown) and health decisions interleave.
    chain = [d for d in chain if d.get("action") in LIFECYCLE]
    actions = [d.get("action") for d in chain]
    registered = [d for d in chain if d.get("action") == "register_challenger"]
    if len(registered) != 1:
        problems.append(f"{len(registered)} register_challenger decisions (want exactly 1)")
    else:
        numbers = registered[0].get("numbers") or {}
        if str(numbers.get("version", "")).removesuffix(".0") != version:
            problems.append(f"the retrain registered version {numbers.get('version')}, "
                            f"the canary ran {version}")
        if "all gates passed" not in str(registered[0].get("reason", "")):
            problems.append(f"register_challenger without 'all gates passed': {registered[0].get('reason')}")
    weights = [(d.get("numbers") or {}).get("weight") for d in chain if d.get("action") == "canary_step"]
    if [round(float(w), 4) for w in weights if w is not None] != [round(w, 4) for w in steps] \
            or None in weights:
        problems.append(f"canary steps at {weights}, want {list(steps)}")
    if "canary_shadow" not in actions:
        problems.append("no canary_shadow decision")
    if not actions or actions[-1] != "promote":
        problems.append(f"the last decision is {actions[-1] if actions else None}, not promote")
    order = ("register_challenger", "canary_shadow", "canary_step", "promote")
    if all(a in actions for a in order):
        at = [actions.index(a) for a in order]
        if at != sorted(at):
            problems.append(f"decisions out of order: {' -> '.join(str(a) for a in actions)}")
    for d in chain:
        if d.get("action") in ("register_challenger", "canary_step", "promote") and not d.get("numbers"):
            problems.append(f"{_line(d)} carries no numbers")
    return problems


def expect_rolled_back_before(model: str = "xgboost", weight: float = 0.5,
                              version: str | None = None) -> dict[str, Any]:
    """The challenger this run registered was rolled back by a canary verdict before reaching `weight`.

    Ledger: one `rollback` by actor `canary` naming a verdict rule, no `canary_step` at or above
    `weight`, no promotion. Live: alias `challenger` gone, `champion` unchanged and served."""
    ctx = context.current()
    s = ctx.settings
    version = version or ctx.challengers.get(model)
    if version is None:
        raise ActivityFailed(f"no challenger of {model} was registered by this run (register one first)")
    run = _canary(s, model)
    chain = _chain(model, version)
    problems = []
    if str(run.get("version")) == version and run.get("phase") != "rolled_back":
        problems.append(f"canary phase is {run.get('phase')}, not rolled_back")
    problems += rollback_problems(chain, weight)
    champion = ctx.seen.get(f"champion:{model}", {}).get("version")
    aliases, serving, live = _live_problems(s, model, champion)
    problems += live
    if problems:
        raise ActivityFailed(f"{model}_v{version} rollback: " + "; ".join(problems)
                             + f" (ledger: {' | '.join(_line(d) for d in chain) or 'none'})")
    rollback = next(d for d in chain if d.get("action") == "rollback")
    registered_at = ctx.seen.get(f"champion:{model}", {}).get("announced_at")
    return {"model": model, "version": version, "rule": rollback.get("rule"),
            "weight": (rollback.get("numbers") or {}).get("weight"), "reason": rollback.get("reason"),
            "numbers": rollback.get("numbers"), "before_weight": weight,
            "s_announced_to_rollback": round(float(rollback["ts"]) - registered_at, 2)
            if registered_at else None,
            "aliases": aliases, "champion_slot": serving, "chain": [_line(d) for d in chain]}


def rollback_problems(chain: Sequence[dict[str, Any]], before_weight: float = 0.5) -> list[str]:
    """What is wrong with a bad challenger's ledger chain (decisions about that version), [] when nothing."""
    problems = []
    high = [d for d in chain if d.get("action") == "canary_step"
            and float((d.get("numbers") or {}).get("weight", 0)) >= before_weight]
    if high:
        problems.append(f"the challenger reached {high[0]['numbers']['weight']:.0%} (must stay below "
                        f"{before_weight:.0%})")
    if any(d.get("action") == "promote" for d in chain):
        problems.append("the challenger was promoted")
    rollbacks = [d for d in chain if d.get("action") == "rollback"]
    if len(rollbacks) != 1:
        problems.append(f"{len(rollbacks)} rollback decisions (want exactly 1)")
    else:
        rb = rollbacks[0]
        if rb.get("actor") != "canary":
            problems.append(f"rolled back by {rb.get('actor')}, not by the canary")
        if rb.get("rule") not in VERDICT_RULES:
            problems.append(f"rolled back by rule {rb.get('rule')!r}, not a canary verdict "
                            f"({', '.join(VERDICT_RULES)})")
        if not rb.get("numbers"):
            problems.append("the rollback carries no numbers")
    return problems


# ---- actions --------------------------------------------------------------------------------------
def register_degraded_challenger(model: str = "xgboost", degradation: str = "shuffled-labels",
                                 rows: int = 5_000, seed: int = 5, timeout: float = 300.0) -> dict[str, Any]:
    """`meshctl challenger register --degraded ...`: train a bad model, register it as `challenger` in
    MLflow and announce it (ModelRegistered on NATS); the canary should now shadow it."""
    ctx = context.current()
    s = ctx.settings
    champion = _aliases(s, model).get("champion")
    cmd = [sys.executable, "-m", "meshctl", "challenger", "register", "--degraded", degradation,
           "--kind", model, "--rows", str(int(rows)), "--seed", str(int(seed)), "--json"]
    try:
        proc = subprocess.run(cmd, env=child_env(s), cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise ChaosActionError(f"meshctl challenger register failed (exit {proc.returncode}): "
                                   f"{(proc.stderr or proc.stdout)[-800:]}")
        result = json.loads(proc.stdout)
    except subprocess.TimeoutExpired:
        ctx.seen[f"no_challenger:{model}"] = {"error": f"its registration took over {timeout:g} s"}
        raise ChaosActionError(f"meshctl challenger register took over {timeout:g} s") from None
    except (ChaosActionError, ValueError) as exc:
        ctx.seen[f"no_challenger:{model}"] = {"error": f"its registration failed: {str(exc)[-300:]}"}
        raise
    ctx.challengers[model] = str(result["version"])
    ctx.seen[f"champion:{model}"] = {"version": champion, "announced_at": result.get("announced_at")}
    return {k: result.get(k) for k in ("label", "version", "degraded", "champion", "metrics", "train_s",
                                       "total_s", "trigger_id")}


def abandon_canary(model: str = "xgboost", reason: str = "chaos experiment ended") -> dict[str, Any]:
    """Rollback step: an operator rollback of `model`'s canary if one is still in flight; else nothing."""
    ctx = context.current()
    run = _canary(ctx.settings, model)
    if run.get("phase") not in ACTIVE:
        return {"model": model, "phase": run.get("phase"), "rolled_back": False}
    operator(ctx.settings, "POST", "/api/v1/canary/rollback", {"model": model, "reason": reason})
    return {"model": model, "phase": run.get("phase"), "version": run.get("version"), "rolled_back": True}
