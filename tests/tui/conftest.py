"""Fixtures for console tests: the recorded fake operator API, a token file, a console driver."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.tui.fake_api import TOKEN, FakeOperatorAPI
from tui.app import MeshConsole
from tui.client import OperatorClient
from tui.screens.dialogs import ConfirmScreen, FormScreen

FAST_POLL = 0.5


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "operator-token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
async def fake_api() -> AsyncIterator[FakeOperatorAPI]:
    fake = await FakeOperatorAPI().start()
    yield fake
    await fake.stop()


@pytest.fixture
def fake_api_thread() -> Iterator[FakeOperatorAPI]:
    """The fake served from its own thread: for sync tests (snapshots, tmux)."""
    fake = FakeOperatorAPI().start_in_thread()
    yield fake
    fake.stop_thread()


def console(url: str, token_file: Path, poll: float = FAST_POLL, events: Any = None) -> MeshConsole:
    return MeshConsole(OperatorClient(url, token_file), events, poll_interval=poll)


async def wait_until(pilot: Any, predicate: Callable[[], Any], within: float = 10.0,
                     what: str = "condition") -> None:
    """Let the app run until `predicate()` is true; fail naming `what` after `within` seconds."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g} s waiting for {what}")
        await pilot.pause(0.05)


async def loaded(pilot: Any) -> MeshConsole:
    """Wait for the first successful poll and draw."""
    app: MeshConsole = pilot.app
    await wait_until(pilot, lambda: app.state.reachable and app.state.status.ok and app.state.polls >= 1,
                     what="the first poll")
    await pilot.pause(0.1)
    return app


async def open_form(pilot: Any, *keys: str) -> FormScreen:
    await pilot.press(*keys)
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, FormScreen), what=f"the form of {keys}")
    await pilot.pause(0.05)
    return pilot.app.screen


async def fill_and_submit(pilot: Any, form: FormScreen, values: dict[str, str]) -> None:
    for name, value in values.items():
        form.query_one(f"#field-{name}").value = value
    await pilot.pause(0.05)
    await pilot.click("#ok")


async def confirm_screen(pilot: Any) -> ConfirmScreen:
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, ConfirmScreen), what="the confirmation")
    await pilot.pause(0.05)
    return pilot.app.screen


def text_of(widget: Any) -> str:
    """The plain text a Static currently shows (Rich Text, Content or str)."""
    content = widget.content
    return getattr(content, "plain", None) or str(content)


def main_text(app: MeshConsole, selector: str) -> str:
    return text_of(app.main.query_one(selector))
