"""Each console action sends exactly the documented request after confirming, and nothing otherwise.

The console runs against the recorded fake operator API over real HTTP; the fake records every
write (method, path, JSON body, Authorization header).
"""

from __future__ import annotations

from pathlib import Path

from tests.tui.conftest import (
    confirm_screen,
    console,
    fill_and_submit,
    loaded,
    main_text,
    open_form,
    wait_until,
)
from tests.tui.fake_api import TOKEN, FakeOperatorAPI, Write
from tui.screens.dialogs import FormScreen

BEARER = f"Bearer {TOKEN}"


async def test_set_weights_by_keyboard_sends_the_split_and_shows_the_decision(
        fake_api: FakeOperatorAPI, token_file: Path) -> None:
    app = console(fake_api.url, token_file)
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        await open_form(pilot, "w")
        await pilot.press("0", ".", "5")  # the field is selected on focus: typing replaces it
        await pilot.pause(0.05)
        assert app.screen.query_one("#field-pytorch").value == "0.5"  # follows 1 - xgboost
        await pilot.press("enter")
        question = await confirm_screen(pilot)
        assert "xgboost 50% / pytorch 50%" in question.question
        assert fake_api.writes == []  # nothing before the yes
        await pilot.press("y")
        await wait_until(pilot, lambda: fake_api.writes, what="the POST")
        assert fake_api.writes == [Write("POST", "/api/v1/traffic", {"xgboost": 0.5, "pytorch": 0.5}, BEARER)]
        await wait_until(pilot, lambda: "50.0% chain-xgboost" in main_text(app, "#topology"),
                         what="the new weight on the overview")
        result = main_text(app, "#result")
        assert "decision #7 operator set_weights -> xDS v43 ack" in result
        assert "edge=ack" in result
        assert not app.internal_errors


async def test_weights_that_do_not_sum_to_one_are_refused_in_the_form(
        fake_api: FakeOperatorAPI, token_file: Path) -> None:
    app = console(fake_api.url, token_file)
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        form = await open_form(pilot, "w")
        await pilot.press("0", ".", "7", "tab", "0", ".", "7", "enter")  # both typed: no auto 1 - x
        await pilot.pause(0.2)
        assert isinstance(app.screen, FormScreen)  # still open, saying why
        assert "weights must sum to 1 (they sum to 1.4)" in str(form.query_one("#form-error").content)
        await fill_and_submit(pilot, form, {"xgboost": "abc"})
        await pilot.pause(0.1)
        assert "'abc' is not a number" in str(form.query_one("#form-error").content)
        await pilot.press("escape")
        await wait_until(pilot, lambda: "cancelled" in main_text(app, "#result"), what="the cancel")
    assert fake_api.writes == []


# key, form values, then the request the fake must receive and a phrase of the result line
MODEL_ACTIONS = [
    ("p", {"model": "xgboost", "version": "v4"}, "POST", "/api/v1/models/xgboost/pin", {"version": "4"},
     "operator pin -> xDS v43 ack"),
    ("u", {}, "DELETE", "/api/v1/models/pytorch/pin", None, "operator unpin -> xDS v44 ack"),
    ("r", {"model": "pytorch", "reason": "labels drifted"}, "POST", "/api/v1/retrain",
     {"model": "pytorch", "reason": "labels drifted"}, "accepted: request rt-0001"),
    ("m", {}, "POST", "/api/v1/canary/promote", {"model": "xgboost"}, "operator promote -> xDS v45 ack"),
    ("b", {"reason": "p99 too high"}, "POST", "/api/v1/canary/rollback",
     {"model": "xgboost", "reason": "p99 too high"}, "operator rollback -> xDS v46 ack"),
]


async def test_model_actions_send_their_documented_request_after_confirming(
        fake_api: FakeOperatorAPI, token_file: Path) -> None:
    """Pin, unpin (defaults to the pinned model), retrain, promote and roll back (default to the
    model in canary), one after another in one session."""
    app = console(fake_api.url, token_file)
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        for key, values, method, path, body, shown in MODEL_ACTIONS:
            sent = len(fake_api.writes)
            form = await open_form(pilot, key)
            await fill_and_submit(pilot, form, values)
            await confirm_screen(pilot)
            assert len(fake_api.writes) == sent, f"{key}: sent before confirming"
            await pilot.press("y")
            await wait_until(pilot, lambda s=shown: s in main_text(app, "#result"), what=f"result {shown!r}")
            assert fake_api.writes[sent:] == [Write(method, path, body, BEARER)], key
        assert not app.internal_errors


async def test_cancelling_any_confirmation_or_form_sends_nothing(
        fake_api: FakeOperatorAPI, token_file: Path) -> None:
    app = console(fake_api.url, token_file)
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        for key in ("w", "f", "p", "u", "r", "m", "b", "l", "c"):
            form = await open_form(pilot, key)
            if key == "p":
                form.query_one("#field-version").value = "3"
            await pilot.click("#ok")
            await confirm_screen(pilot)
            await pilot.press("n")
            await wait_until(pilot, lambda: "cancelled, nothing sent" in main_text(app, "#result"),
                             what=f"the cancel message of {key!r}")
            app.main.show_result("", "information")
        await open_form(pilot, "w")  # esc on the form itself
        await pilot.press("escape")
        await wait_until(pilot, lambda: "cancelled, nothing sent" in main_text(app, "#result"),
                         what="the cancel message of the form")
        await pilot.pause(0.3)
    assert fake_api.writes == [], "a request went out after cancelling"


async def test_freeze_then_unfreeze_toggles_with_the_mesh_state(
        fake_api: FakeOperatorAPI, token_file: Path) -> None:
    app = console(fake_api.url, token_file)
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        await fill_and_submit(pilot, await open_form(pilot, "f"), {})
        await confirm_screen(pilot)
        await pilot.press("y")
        await wait_until(pilot, lambda: "FROZEN" in main_text(app, "#connection"), what="FROZEN")
        await fill_and_submit(pilot, await open_form(pilot, "f"), {"reason": "incident over"})
        assert "Unfreeze" in (await confirm_screen(pilot)).question
        await pilot.press("y")
        await wait_until(pilot, lambda: "FROZEN" not in main_text(app, "#connection"), what="unfrozen")
        assert fake_api.writes == [Write("POST", "/api/v1/freeze", None, BEARER),
                                   Write("POST", "/api/v1/unfreeze", {"reason": "incident over"}, BEARER)]


async def test_load_start_then_stop_toggles_with_the_mesh_state(
        fake_api: FakeOperatorAPI, token_file: Path) -> None:
    app = console(fake_api.url, token_file)
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        start = {"rate": 25.0, "duration": 30.0, "scenario": "covariate_shift"}
        await fill_and_submit(pilot, await open_form(pilot, "l"), {k: f"{v}" for k, v in start.items()})
        question = (await confirm_screen(pilot)).question
        assert "Send 25 requests/s for 30 s (scenario covariate_shift)" in question
        await pilot.press("y")
        await wait_until(pilot, lambda: "load running at 25 rps" in main_text(app, "#result"), what="started")
        fake_api.load["sent"] = 1234
        await wait_until(pilot, lambda: app.state.load.data["sent"] == 1234, what="the load status")
        await pilot.press("l")  # running: no form, straight to the confirmation
        assert "1234 requests sent so far" in (await confirm_screen(pilot)).question
        await pilot.press("y")
        await wait_until(pilot, lambda: "load stopped" in main_text(app, "#result"), what="stopped")
        assert fake_api.writes == [
            Write("POST", "/api/v1/load/start", start, BEARER),
            Write("POST", "/api/v1/load/stop", None, BEARER)]


async def test_chaos_experiment_is_started_and_watched_to_its_verdict(
        fake_api: FakeOperatorAPI, token_file: Path) -> None:
    app = console(fake_api.url, token_file)
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        await wait_until(pilot, lambda: app.state.experiments.ok, what="the experiment list")
        await pilot.press("5")
        await wait_until(pilot, lambda: app.main.query_one("#experiments").has_focus, what="the table")
        form = await open_form(pilot, "down", "enter")  # enter on an experiment starts it
        assert form.query_one("#field-name").value == "latency-injection"
        await pilot.click("#ok")
        assert "latency-injection" in (await confirm_screen(pilot)).question
        await pilot.press("y")
        await wait_until(pilot, lambda: "chaos run run-1" in main_text(app, "#result"), what="the run id")
        assert fake_api.writes == [Write("POST", "/api/v1/chaos/runs", {"name": "latency-injection"}, BEARER)]
        assert app.main.query_one("#tabs").active == "chaos"
        await wait_until(pilot, lambda: "passed" in main_text(app, "#verdict"), what="the verdict")
        steps = app.main.query_one("#steps")
        assert steps.row_count == 5
        assert all(str(steps.get_row_at(i)[1]) == "passed" for i in range(5))
        assert "run-1 latency-injection: finished" in main_text(app, "#run-head")


async def test_aborting_the_running_chaos_experiment(token_file: Path) -> None:
    fake = await FakeOperatorAPI(chaos_reads_per_step=1000).start()  # the run stays in progress
    try:
        app = console(fake.url, token_file)
        async with app.run_test(size=(100, 30)) as pilot:
            await loaded(pilot)
            await pilot.press("x")  # nothing running yet: refused without a dialog
            await wait_until(pilot, lambda: "no chaos run" in main_text(app, "#result"), what="refusal")
            await wait_until(pilot, lambda: app.state.experiments.ok, what="the experiment list")
            await fill_and_submit(pilot, await open_form(pilot, "c"), {})
            await confirm_screen(pilot)
            await pilot.press("y")
            await wait_until(pilot, lambda: app.state.chaos is not None, what="the run")
            await pilot.press("x")
            assert "Abort chaos run run-1 (primary-killed)" in (await confirm_screen(pilot)).question
            await pilot.press("y")
            await wait_until(pilot, lambda: "aborted" in main_text(app, "#verdict"), what="aborted")
            assert [(w.method, w.path) for w in fake.writes] == [
                ("POST", "/api/v1/chaos/runs"), ("POST", "/api/v1/chaos/runs/run-1/abort")]
    finally:
        await fake.stop()
