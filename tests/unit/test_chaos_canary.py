"""The model-lifecycle experiments' pieces that need no mesh: the ledger chain checks, the chaos
lock's canary pause, the experiment files, argument validation of the new actions and CLI."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from chaos import runner
from chaos.extension import actions, context
from chaos.extension.canary import promotion_problems, rollback_problems
from chaos.extension.load import BackgroundLoad
from chaos.extension.mesh import ChaosActionError
from data_plane.netutil import free_port
from data_plane.settings import Settings


def d(action: str, rule: str = "r", actor: str = "canary", **numbers: float) -> dict[str, Any]:
    return {"actor": actor, "action": action, "rule": rule, "reason": f"xgboost_v2 {action}",
            "numbers": numbers or {"x": 1.0}, "ts": 0.0}


GOOD_PROMOTION = [
    d("retrain_skipped", actor="retrain"),
    {**d("register_challenger", actor="retrain", version=2.0), "reason": "xgboost: all gates passed"},
    d("load_challenger"), d("canary_shadow"),
    d("canary_step", weight=0.10), d("canary_step", weight=0.25), d("canary_step", weight=0.50),
    d("canary_step", weight=1.00), d("promote", version=2.0),
    d("retrain_skipped", actor="retrain"),  # a cooldown refusal after the promotion is not a move
]


def test_a_by_the_book_promotion_has_no_problems() -> None:
    assert promotion_problems(GOOD_PROMOTION, "2") == []


@pytest.mark.parametrize(("change", "expected"), [
    (lambda c: [x for x in c if x["numbers"].get("weight") != 0.25], "canary steps at [0.1, 0.5, 1.0]"),
    (lambda c: c[:2] + c[1:], "2 register_challenger decisions"),
    (lambda c: [x for x in c if x["action"] != "canary_shadow"], "no canary_shadow"),
    (lambda c: [x for x in c if x["action"] != "promote"], "not promote"),
    (lambda c: [c[0], *c[2:4], c[1], *c[4:]], "out of order"),
    (lambda c: [{**x, "numbers": {}} if x["action"] == "promote" else x for x in c], "carries no numbers"),
    (lambda c: [{**x, "reason": "xgboost: forced"} if x["action"] == "register_challenger" else x
                for x in c], "all gates passed"),
])
def test_promotion_problems_name_what_is_wrong(change: Any, expected: str) -> None:
    problems = promotion_problems(change(list(GOOD_PROMOTION)), "2")
    assert any(expected in p for p in problems), problems


def test_promotion_of_another_version_is_a_problem() -> None:
    problems = promotion_problems(GOOD_PROMOTION, "3")
    assert any("registered version 2.0, the canary ran 3" in p for p in problems), problems


GOOD_ROLLBACK = [d("load_challenger"), d("canary_shadow"), d("canary_step", weight=0.10),
                 d("rollback", rule="label_f1", weight=0.10, version=2.0)]


def test_a_verdict_rollback_below_half_has_no_problems() -> None:
    assert rollback_problems(GOOD_ROLLBACK, 0.5) == []


@pytest.mark.parametrize(("chain", "expected"), [
    ([*GOOD_ROLLBACK[:3], d("canary_step", weight=0.5), GOOD_ROLLBACK[3]], "reached 50%"),
    ([*GOOD_ROLLBACK[:3], d("rollback", rule="superseded")], "not a canary verdict"),
    ([*GOOD_ROLLBACK[:3], d("rollback", rule="label_f1", actor="operator")], "not by the canary"),
    (GOOD_ROLLBACK[:3], "0 rollback decisions"),
    ([*GOOD_ROLLBACK[:3], d("promote")], "was promoted"),
])
def test_rollback_problems_name_what_is_wrong(chain: list[dict[str, Any]], expected: str) -> None:
    assert any(expected in p for p in rollback_problems(chain, 0.5)), rollback_problems(chain, 0.5)


def _hold(settings: Settings, pause_canary: bool | None) -> None:
    info: dict[str, Any] = {"run_id": "r1", "pid": os.getpid(), "experiment": "x"}
    if pause_canary is not None:
        info["pause_canary"] = pause_canary
    (settings.home / "chaos").mkdir(parents=True, exist_ok=True)
    (settings.home / "chaos" / "active.json").write_text(json.dumps(info))


@pytest.mark.parametrize(("pause", "held"), [(None, True), (True, True), (False, False)])
def test_a_canary_experiment_holds_the_lock_but_lets_the_canary_move(settings: Settings, pause: bool | None,
                                                                     held: bool) -> None:
    assert not runner.chaos_lock_held(settings)
    _hold(settings, pause)
    assert runner.active_run(settings) is not None  # still one run at a time
    assert runner.chaos_lock_held(settings) is held


def test_the_lifecycle_experiments_are_built_in_and_let_the_canary_run() -> None:
    names = {e["name"] for e in runner.list_experiments()}
    assert {"drift-retrain-promote", "bad-canary-rollback", "flapping"} <= names
    for name in ("drift-retrain-promote", "bad-canary-rollback"):
        _, doc = runner.load_experiment(name)
        assert not runner.pauses_canary(doc)
        assert doc["rollbacks"][-1]["provider"]["func"] == "restore_mesh"
        assert doc["steady-state-hypothesis"]["probes"][0]["provider"]["func"] == "client_slo"
    assert runner.pauses_canary(runner.load_experiment("flapping")[1])


def test_load_actions_refuse_bad_arguments(mesh_home: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESH_PORT_OPERATOR", str(free_port()))  # nothing listens: the context starts empty
    context.begin(Settings.from_env())
    try:
        with pytest.raises(ChaosActionError, match="scenario 'nope' is unknown"):
            actions.start_load(rate=10, duration_s=1, scenario="nope")
        with pytest.raises(ChaosActionError, match="label_delay_s must be between"):
            actions.start_load(rate=10, duration_s=1, label_delay_s=-1)
        with pytest.raises(ValueError, match="NATS URL"):
            BackgroundLoad("http://127.0.0.1:1/api/v1/predict", 10, 1, label_delay_s=1.0)
    finally:
        context.end()


def test_challenger_register_names_the_bad_argument(mesh_home: Any,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from meshctl.main import main

    assert main(["challenger", "register", "--degraded", "shuffled-labels", "--rows", "10"]) == 1
    assert "--rows must be between 5,000 and 200,000" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["challenger", "register", "--degraded", "slow-ish"])
    assert "invalid choice: 'slow-ish'" in capsys.readouterr().err


def test_waiting_for_a_canary_fails_at_once_without_a_challenger(mesh_home: Any,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from chaoslib.exceptions import ActivityFailed

    from chaos.extension.canary import wait_for_canary

    monkeypatch.setenv("MESH_PORT_OPERATOR", str(free_port()))
    ctx = context.begin(Settings.from_env())
    try:
        ctx.seen["no_challenger:xgboost"] = {"error": "its registration failed: exit 1"}
        with pytest.raises(ActivityFailed, match="registration failed: exit 1"):
            wait_for_canary("xgboost", timeout_s=600)
    finally:
        context.end()
