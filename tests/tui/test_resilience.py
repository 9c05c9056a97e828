"""The console survives a missing or vanishing control plane, routes not served yet, and API refusals."""

from __future__ import annotations

from pathlib import Path

from data_plane.netutil import free_port
from tests.tui.conftest import (
    confirm_screen,
    console,
    fill_and_submit,
    loaded,
    main_text,
    open_form,
    text_of,
    wait_until,
)
from tests.tui.fake_api import FakeOperatorAPI
from tui.widgets.common import Notice


async def test_unreachable_then_recovers_then_goes_away_and_comes_back(token_file: Path) -> None:
    port = free_port()
    app = console(f"http://127.0.0.1:{port}", token_file)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: "API unreachable — retrying" in main_text(app, "#connection"),
                         what="the unreachable state")
        banner = app.main.query_one("#banner")
        assert banner.display and "control plane unreachable — retrying every 0.5 s" in text_of(banner)

        fake = await FakeOperatorAPI(port=port).start()  # the control plane comes up
        try:
            await wait_until(pilot, lambda: "API ok" in main_text(app, "#connection"), what="recovery")
            await wait_until(pilot, lambda: "80.0% chain-xgboost" in main_text(app, "#topology"),
                             what="the topology")
            assert not banner.display
        finally:
            await fake.stop()  # ... and goes away again

        await wait_until(pilot, lambda: "API unreachable" in main_text(app, "#connection"), what="loss")
        notice = app.main.query_one("#overview-pane").query_one(Notice)
        assert notice.display and "stale" in text_of(notice)
        assert "80.0% chain-xgboost" in main_text(app, "#topology")  # the last data stays visible

        fake = await FakeOperatorAPI(port=port).start()
        try:
            await wait_until(pilot, lambda: "API ok" in main_text(app, "#connection"), what="2nd recovery")
            await wait_until(pilot, lambda: not notice.display, what="the stale notice to clear")
        finally:
            await fake.stop()
        assert not app.internal_errors


async def test_routes_the_control_plane_does_not_serve_yet_show_not_available(token_file: Path) -> None:
    fake = await FakeOperatorAPI(routes="today").start()
    try:
        app = console(fake.url, token_file)
        async with app.run_test(size=(80, 24)) as pilot:
            await loaded(pilot)
            await wait_until(pilot, lambda: app.state.models.state == "unavailable", what="the 404s")
            for pane, route in (("charts", "GET /api/v1/traffic/summary"), ("drift", "GET /api/v1/drift"),
                                ("models", "GET /api/v1/models"), ("chaos", "GET /api/v1/chaos/experiments")):
                notice = app.main.query_one(f"#{pane}-pane").query_one(Notice)
                assert notice.display, pane
                assert f"{route} is not available on this control plane yet" in text_of(notice)
            assert "80.0% chain-xgboost" in main_text(app, "#topology")  # what exists still works
            assert app.main.query_one("#ledger-table").row_count == 6

            form = await open_form(pilot, "p")
            await fill_and_submit(pilot, form, {"version": "4"})
            await confirm_screen(pilot)
            await pilot.press("y")
            await wait_until(pilot, lambda: "✖" in main_text(app, "#result"), what="the error")
            assert ("POST /api/v1/models/xgboost/pin is not available on this control plane yet"
                    in main_text(app, "#result"))
            assert not app.internal_errors
    finally:
        await fake.stop()


async def test_the_api_error_message_is_shown(fake_api: FakeOperatorAPI, token_file: Path) -> None:
    fake_api.fail_next_write(409, {
        "error": "rejected_by_envoy", "field": None, "rule": "envoy_ack",
        "message": "an Envoy rejected the new config; the last good one stays (see the decision ledger)",
        "status": "rejected_by_envoy", "nodes": {"edge": "nack"},
        "decision": {"seq": 9, "actor": "operator", "action": "set_weights", "xds_version": "43",
                     "acked": False, "nodes": {"edge": "nack"}}})
    app = console(fake_api.url, token_file)
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        await fill_and_submit(pilot, await open_form(pilot, "w"), {"xgboost": "0.6", "pytorch": "0.4"})
        await confirm_screen(pilot)
        await pilot.press("y")
        await wait_until(pilot, lambda: "✖" in main_text(app, "#result"), what="the error")
        result = main_text(app, "#result")
        assert "HTTP 409: an Envoy rejected the new config" in result
        assert "rule envoy_ack" in result
        assert "decision #9 operator set_weights -> xDS v43 nack (edge=nack)" in result


async def test_answers_of_unexpected_shape_never_break_the_console(
        fake_api: FakeOperatorAPI, token_file: Path) -> None:
    """A colleague's endpoint in the making may answer anything; the panes degrade, the console lives."""
    fake_api.overrides.update({
        "/api/v1/models": ["fraud-xgboost", 3],
        "/api/v1/canary": {"xgboost": "canary", "pytorch": {"verdicts": "pass"}},
        "/api/v1/drift": "no reports",
        "/api/v1/traffic/summary": {"history": "soon", "clusters": [1, 2], "rps": "fast"},
        "/api/v1/chaos/experiments": {"experiments": [1, {"title": "no name"}]},
        "/api/v1/load": [],
        "/api/v1/decisions": {"decisions": [{"seq": "x"}, 7], "last_seq": "many"},
        "/api/v1/ab-stats": {"arms": {"x_v1": {"count": "many", "latency_ms": [1], "labelled": {"f1": 3}},
                                      "y": 2}, "comparison": {"arms": "a", "p_value": "low"}},
    })
    app = console(fake_api.url, token_file)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        for key in "12345678":
            await pilot.press(key)
            await pilot.pause(0.1)
        await pilot.pause(0.6)  # another poll and draw
        assert app.internal_errors == []
        fake_api.overrides["/api/v1/status"] = ["not", "an", "object"]
        await wait_until(pilot, lambda: app.state.status.state == "error", what="the bad status")
        await pilot.pause(0.3)
        notice = app.main.query_one("#overview-pane").query_one(Notice)
        assert "not an object" in text_of(notice)
        assert app.internal_errors == []
