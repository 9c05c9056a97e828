"""What the panes say: "why did it do that?", the key list, drift levels, canary progress."""

from __future__ import annotations

from pathlib import Path

from tests.tui.conftest import console, loaded, text_of, wait_until
from tests.tui.fake_api import FakeOperatorAPI
from tui.screens.decision import DecisionScreen
from tui.screens.help import HelpScreen
from tui.screens.main import MainScreen


async def test_ledger_enter_explains_a_decision_with_its_cause(
        fake_api: FakeOperatorAPI, token_file: Path) -> None:
    app = console(fake_api.url, token_file)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        await pilot.press("7")
        table = app.main.query_one("#ledger-table")
        await wait_until(pilot, lambda: table.has_focus and table.row_count == 6, what="the ledger")
        assert [str(k.value) for k in table.rows] == ["6", "5", "4", "3", "2", "1"]  # newest first
        await pilot.press("down", "enter")
        await wait_until(pilot, lambda: isinstance(app.screen, DecisionScreen), what="the detail view")
        body = app.screen.query_one("#decision-body").content
        text = "\n".join(line.rstrip() for line in _render(body).splitlines())
        assert "canary_pass" in text and "step 1 passed" in text
        assert "d0003  = decision #3 retrain register_challenger -> xDS v39 ack" in text  # the cause
        assert "p95_ms = 41" in text and "weight = 0.25" in text
        assert "v41  ack" in text
        for node in ("edge", "sidecar-heuristic", "sidecar-pytorch", "sidecar-xgboost"):
            assert node in text
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, MainScreen), what="closing the detail")


async def test_help_lists_every_binding(fake_api: FakeOperatorAPI, token_file: Path) -> None:
    app = console(fake_api.url, token_file)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        await pilot.press("question_mark")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen), what="the help screen")
        keys = dict(app.screen.bindings)
        for key in ("?", "1", "7", "8", "w", "f", "p", "u", "r", "m", "b", "l", "c", "x", "q"):
            assert key in keys, key
        assert keys["x"] == "abort the running chaos experiment"
        assert keys["8"] == "show the A/B pane"
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, MainScreen), what="closing the help")


async def test_drift_and_canary_panes_show_levels_and_progress(
        fake_api: FakeOperatorAPI, token_file: Path) -> None:
    app = console(fake_api.url, token_file)
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        drift = app.main.query_one("#drift-table")
        await wait_until(pilot, lambda: drift.row_count == 22, what="22 drift rows (11 per model)")
        xgb_first = drift.get_row("xgboost/amount")
        assert [str(c) for c in xgb_first[2:7]] == ["0.312", "1.2e-09", "ks", "retrain", "rejected"]
        assert xgb_first[5].style == "bold red"  # retrain is red, monitor yellow, none green
        assert drift.get_row("xgboost/distance_from_home")[5].style == "yellow"
        assert "xgboost_v3 retrain" in text_of(app.main.query_one("#drift-head"))
        canary = app.main.query_one("#canary")
        row = [str(c) for c in canary.get_row("xgboost")]
        assert row == ["xgboost", "canary", "v4", "1", "25%", "pass pass wait"]
        assert "xgboost: wait 120/200 labelled samples" in text_of(app.main.query_one("#canary-reasons"))


def _render(renderable: object) -> str:
    from rich.console import Console

    console = Console(width=100, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()
