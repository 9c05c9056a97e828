"""The A/B pane (key 8): per-version numbers, the chi-square verdict, empty / error / missing states,
and the pane's readers against the real control plane's `ABWindow.snapshot()` answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from control_plane.ab_component import ABConfig, ABWindow
from data_plane.contracts.events import Label, PredictionRecord
from tests.tui import payloads
from tests.tui.conftest import console, loaded, main_text, wait_until
from tests.tui.fake_api import FakeOperatorAPI
from tui.widgets.ab import arm_weights, headline, label_rows, traffic_rows, verdict
from tui.widgets.common import Notice


def cells(table: object, key: str) -> list[str]:
    return [str(c) for c in table.get_row(key)]  # type: ignore[attr-defined]


async def test_pane_shows_every_arm_its_weight_latency_labels_and_the_verdict(
        fake_api: FakeOperatorAPI, token_file: Path) -> None:
    app = console(fake_api.url, token_file)
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        await pilot.press("8")
        traffic = app.main.query_one("#ab-traffic")
        await wait_until(pilot, lambda: traffic.row_count == 3, what="three arms")
        assert app.main.query_one("#tabs").active == "ab"
        # 80/20 with a 25 % xgboost canary: the champions keep 75 % of their shares.
        assert cells(traffic, "xgboost_v3") == ["xgboost_v3", "60%", "1843", "2.22%", "2.1", "6.3", "11.7"]
        assert cells(traffic, "xgboost_v4") == ["xgboost_v4", "25%", "767", "3.78%", "2.3", "7.1", "12.9"]
        assert cells(traffic, "pytorch_v2") == ["pytorch_v2", "15%", "461", "1.95%", "3.4", "9.8", "16.2"]
        labels = app.main.query_one("#ab-labels")
        assert cells(labels, "xgboost_v3") == ["xgboost_v3", "1000", "0.786 (0.60-0.90)",
                                               "0.815 (0.63-0.92)", "0.800 (0.67-0.90)"]
        assert cells(labels, "xgboost_v4")[1:] == ["400", "0.733 (0.48-0.89)", "0.846 (0.58-0.96)",
                                                   "0.786 (0.56-0.93)"]
        assert cells(labels, "pytorch_v2")[1:3] == ["0", "waiting for labels"]
        head = main_text(app, "#ab-head")
        assert "xgboost_v3 vs xgboost_v4: chi-square p = 0.035 — difference significant at 5 %" in head
        assert "window 900 s · 3071 predictions · labels joined 1400 (1671 awaiting)" in head
        assert not app.main.query_one("#ab-labels-empty").display

        fake_api.ab["comparison"]["p_value"] = 0.225  # the next poll: no longer significant
        await wait_until(pilot, lambda: "not significant at 5 %" in main_text(app, "#ab-head"),
                         what="the new verdict")
        assert app.internal_errors == []


async def test_no_experiment_yet_says_so(fake_api: FakeOperatorAPI, token_file: Path) -> None:
    fake_api.ab = {"window_s": 900.0, "label_window_s": 3600.0, "champion": None, "arms": {},
                   "comparison": None, "records_in_window": 0, "records_seen": 0, "labels_seen": 0,
                   "labels_joined": 0, "awaiting_labels": 0, "nats_connected": True}
    app = console(fake_api.url, token_file)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        await pilot.press("8")
        await wait_until(pilot, lambda: app.state.ab.ok, what="the ab-stats read")
        await pilot.pause(0.1)
        assert "no predictions in the 900 s window yet" in main_text(app, "#ab-head")
        assert app.main.query_one("#ab-traffic").row_count == 0
        assert app.main.query_one("#ab-labels-empty").display
        assert not app.main.query_one("#ab-pane").query_one(Notice).display
        assert app.internal_errors == []


async def test_api_error_keeps_the_last_numbers_marked_and_recovers(
        fake_api: FakeOperatorAPI, token_file: Path) -> None:
    app = console(fake_api.url, token_file)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        await pilot.press("8")
        traffic = app.main.query_one("#ab-traffic")
        await wait_until(pilot, lambda: traffic.row_count == 3, what="three arms")
        notice = app.main.query_one("#ab-pane").query_one(Notice)
        fake_api.read_errors["/api/v1/ab-stats"] = (500, {"error": "internal_error", "field": None,
                                                          "rule": None, "message": "ab-stats failed"})
        await wait_until(pilot, lambda: notice.display, what="the error notice")
        assert "HTTP 500: ab-stats failed (showing the last good data)" in main_text(app, "#ab-pane .notice")
        assert traffic.row_count == 3  # the last numbers stay on screen
        del fake_api.read_errors["/api/v1/ab-stats"]
        await wait_until(pilot, lambda: not notice.display, what="recovery")
        assert app.internal_errors == []


async def test_a_control_plane_without_ab_stats_says_not_available(token_file: Path) -> None:
    fake = await FakeOperatorAPI(routes="today").start()
    try:
        app = console(fake.url, token_file)
        async with app.run_test(size=(80, 24)) as pilot:
            await loaded(pilot)
            await pilot.press("8")
            await wait_until(pilot, lambda: app.state.ab.state == "unavailable", what="the 404")
            await pilot.pause(0.1)
            assert "GET /api/v1/ab-stats is not available on this control plane yet" in \
                main_text(app, "#ab-pane .notice")
            assert app.internal_errors == []
    finally:
        await fake.stop()


def test_weights_follow_pins_and_the_canary() -> None:
    status, models = payloads.status(), payloads.models()
    # 80/20, pytorch pinned to v2, a 25 % canary of xgboost v4 taken from both champions.
    assert arm_weights(status, models) == pytest.approx({"xgboost_v3": 0.6, "pytorch_v2": 0.15,
                                                         "xgboost_v4": 0.25})
    status["intent"]["canary"] = None
    status["intent"]["pins"] = {}
    models["models"]["pytorch"].update(pinned=None, champion="1")
    assert arm_weights(status, models) == {"xgboost_v3": 0.8, "pytorch_v1": 0.2}
    assert arm_weights(["odd"], None) == {}


def test_verdict_words() -> None:
    base = {"arms": ["a_v1", "b_v1"], "p_value": 0.2, "enough_samples": True, "min_samples_per_arm": 100}
    assert verdict(base).plain == "a_v1 vs b_v1: chi-square p = 0.200 — not significant at 5 %"
    assert verdict({**base, "p_value": 0.001}).plain.endswith("difference significant at 5 %")
    assert verdict({**base, "p_value": 0.001, "enough_samples": False}).plain.endswith(
        "too few predictions to judge (an arm has < 100)")
    assert "no chi-square test" in verdict({**base, "p_value": None}).plain
    assert verdict(None).plain.startswith("no A/B comparison")


def _record(i: int, version: str, flagged: bool) -> PredictionRecord:
    return PredictionRecord(request_id=f"{version}-{i}", model=version.split("_")[0], model_version=version,
                            slot="champion", features=[0.0] * 11, score=0.9 if flagged else 0.05,
                            is_fraud=flagged, latency_ms=2.0 + i % 5)


def test_the_real_control_plane_answer_renders() -> None:
    """The pane's readers on `ABWindow.snapshot()` (the route's body): shapes agree."""
    window = ABWindow(ABConfig(window_s=600, max_records=10_000))
    for i in range(400):
        window.add_record(_record(i, "xgboost_v1", i < 8))
    for i in range(100):
        window.add_record(_record(i, "pytorch_v1", i < 7))
    for i in range(200):
        window.add_label(Label(request_id=f"xgboost_v1-{i}", is_fraud=i < 10))
    snap = window.snapshot()
    rows = dict(traffic_rows(snap, {"xgboost_v1": 0.8, "pytorch_v1": 0.2}))
    assert [str(c) for c in rows["xgboost_v1"]] == ["xgboost_v1", "80%", "400", "2.00%", "4.0", "6.0", "6.0"]
    assert [str(c) for c in rows["pytorch_v1"]][:4] == ["pytorch_v1", "20%", "100", "7.00%"]
    labelled = dict(label_rows(snap))
    # 200 labelled: 8 flagged frauds (tp), 2 missed (fn), no false alarms.
    assert labelled["xgboost_v1"][1:3] == ["200", "1.000 (0.68-1.00)"]
    assert labelled["xgboost_v1"][3].startswith("0.800 (")
    assert labelled["pytorch_v1"][2] == "waiting for labels"
    assert "xgboost_v1 vs pytorch_v1: chi-square p = " in headline(snap).plain
