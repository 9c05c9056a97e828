"""Layout snapshots of the main panes at 80x24 and 120x40 (pytest-textual-snapshot).

Deterministic: recorded payloads with fixed timestamps, times shown in UTC, no clock on screen,
and one poll only (the next is a minute away), so what is drawn cannot move under the camera.
Update after an intended change with `pytest tests/tui/test_snapshots.py --snapshot-update`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.tui.conftest import console
from tests.tui.fake_api import FakeOperatorAPI

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")]
ONE_POLL = 60.0


def after_first_poll(*keys: str) -> Callable[[Any], Any]:
    async def run_before(pilot: Any) -> None:
        app = pilot.app
        deadline = time.monotonic() + 10
        while not (app.state.polls >= 1 and app.state.experiments.ok and app.state.ab.ok):
            assert time.monotonic() < deadline, "the console never finished its first poll"
            await pilot.pause(0.05)
        await pilot.pause(0.1)
        for key in keys:
            await pilot.press(key)
            await pilot.pause(0.1)
        await pilot.pause(0.2)
    return run_before


@pytest.mark.parametrize(("pane", "size"), [
    pytest.param(key, size.values[0], id=f"{name}-{size.id}")
    for key, name in (("1", "overview"), ("2", "charts"), ("3", "drift"), ("4", "models"), ("7", "ledger"),
                      ("8", "ab"))
    for size in SIZES])
def test_pane_layout(snap_compare: Any, fake_api_thread: FakeOperatorAPI, token_file: Path,
                     pane: str, size: tuple[int, int]) -> None:
    app = console(fake_api_thread.url, token_file, poll=ONE_POLL)
    assert snap_compare(app, terminal_size=size, run_before=after_first_poll(pane))


def test_decision_detail(snap_compare: Any, fake_api_thread: FakeOperatorAPI, token_file: Path) -> None:
    """Ledger -> second newest decision (#5, a canary step caused by decision #3) -> enter."""
    app = console(fake_api_thread.url, token_file, poll=ONE_POLL)
    assert snap_compare(app, terminal_size=(80, 24), run_before=after_first_poll("7", "down", "enter"))


def test_help_lists_every_binding(snap_compare: Any, fake_api_thread: FakeOperatorAPI,
                                  token_file: Path) -> None:
    app = console(fake_api_thread.url, token_file, poll=ONE_POLL)
    assert snap_compare(app, terminal_size=(80, 24), run_before=after_first_poll("question_mark"))
