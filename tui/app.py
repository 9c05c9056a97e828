"""`MeshConsole`: the Textual operator console. Dependencies come in; nothing here knows the mesh.

It polls the operator API in a worker (never on the UI path), feeds NATS events into the event
log, and runs each operator action as form -> confirmation -> one API request -> result line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from textual import work
from textual.app import App

from tui.actions import ActionSpec, resolve
from tui.client import ApiError, OperatorClient, OperatorError
from tui.events import EventFeed, EventSource
from tui.format import describe_result
from tui.poller import Poller
from tui.screens.dialogs import ConfirmScreen, FormScreen
from tui.screens.main import MainScreen
from tui.state import MeshState

log = logging.getLogger(__name__)


class MeshConsole(App[None]):
    """The operator console for one control plane (and optionally its NATS)."""

    CSS_PATH = "console.tcss"
    TITLE = "fraud-mesh console"
    ENABLE_COMMAND_PALETTE = False

    def __init__(self, client: OperatorClient, events: EventSource | None = None, *,
                 poll_interval: float = 1.5, feed_interval: float = 0.3) -> None:
        super().__init__()
        self.client = client
        self.events = events
        self.events_url = getattr(events, "url", None)
        self.poll_interval = poll_interval
        self.feed_interval = feed_interval
        self.poller = Poller(client)
        self.feed = EventFeed()
        self.internal_errors: list[str] = []  # a bug in drawing must not stop polling; tests read this
        self.last_result: tuple[str, str] | None = None
        self._wake = asyncio.Event()
        self._acting: str | None = None

    @property
    def state(self) -> MeshState:
        return self.poller.state

    @property
    def main(self) -> MainScreen:
        return self.get_screen("main")  # type: ignore[return-value]

    def on_mount(self) -> None:
        self.install_screen(MainScreen(), "main")
        self.push_screen("main")

    def on_main_screen_ready(self, message: MainScreen.Ready) -> None:
        """Start polling and the event feed once the panes exist to draw into."""
        self._poll_loop()
        if self.events is not None:
            self.feed.state(False, "NATS connecting…")
            self.run_worker(self.events.run(self.feed), name="nats", group="nats", exit_on_error=False)
        self.set_interval(self.feed_interval, self._show_feed)

    async def on_unmount(self) -> None:
        await self.client.close()

    # ---- polling --------------------------------------------------------------------------
    @work(exclusive=True, group="poll", exit_on_error=False)
    async def _poll_loop(self) -> None:
        drawn = -1
        while True:
            self._wake.clear()  # a poll_now() from here on means "poll again right after this one"
            try:
                await self.poller.poll_once()
            except Exception as exc:  # an answer of an unexpected shape must not end the polling
                self.internal_error("polling", exc)
            if self.state.revision != drawn:
                drawn = self.state.revision
                self._draw()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)

    def poll_now(self) -> None:
        """Poll at once instead of waiting for the next tick (after an action)."""
        self._wake.set()

    def _draw(self) -> None:
        try:
            self.main.show(self.state, self.feed, self.poll_interval)
        except Exception as exc:  # keep polling; show and record the bug rather than die
            self.internal_error("drawing", exc)

    def internal_error(self, doing: str, exc: Exception) -> None:
        """A console bug: logged, recorded (tests assert there are none) and shown, never fatal."""
        log.error("console: %s failed", doing, exc_info=exc)
        self.internal_errors.append(f"{doing}: {type(exc).__name__}: {exc}")
        with contextlib.suppress(Exception):  # e.g. the screen is already gone at shutdown
            self.report(f"console error while {doing}: {type(exc).__name__}: {exc}", "error")

    def _show_feed(self) -> None:
        self.main.show_feed(self.state, self.feed)

    # ---- actions --------------------------------------------------------------------------
    def start_action(self, name: str, hints: dict[str, str] | None = None) -> None:
        """Start an operator action (form -> confirm -> API call) unless one is still running.

        `hints` are the screen's defaults for the form, e.g. the experiment the cursor is on.
        """
        if self._acting:
            self.report(f"wait: {self._acting} is still in progress", "warning")
            return
        self._act(name, hints or {})

    def report(self, text: str, severity: str = "information") -> None:
        self.last_result = (text, severity)
        self.main.show_result(text, severity)

    @work(group="action", exit_on_error=False)
    async def _act(self, name: str, hints: dict[str, str]) -> None:
        spec = resolve(name, self.state)
        self._acting = spec.title
        try:
            await self._run_spec(spec, hints)
        except Exception as exc:
            self.internal_error(spec.title.lower(), exc)
        finally:
            self._acting = None

    async def _run_spec(self, spec: ActionSpec, hints: dict[str, str]) -> None:
        refusal = spec.refuse(self.state) if spec.refuse else None
        if refusal:
            self.report(f"{spec.title}: {refusal}", "warning")
            return
        values: dict[str, Any] = {}
        if spec.fields is not None:
            form = FormScreen(spec.title, spec.fields(self.state, hints), spec.check)
            got = await self.push_screen_wait(form)
            if got is None:
                self.report(f"{spec.title}: cancelled, nothing sent", "warning")
                return
            values = got
        question = spec.question(values, self.state)
        if not await self.push_screen_wait(ConfirmScreen(spec.title, question)):
            self.report(f"{spec.title}: cancelled, nothing sent", "warning")
            return
        self.report(f"{spec.title}: sending…")
        try:
            data = await spec.call(self.client, values, self.state)
        except OperatorError as exc:
            # A 409 from Envoy's NACK still carries the decision it recorded: show it too.
            body = exc.body if isinstance(exc, ApiError) else {}
            tail = f" — {describe_result(body)}" if isinstance(body.get("decision"), dict) else ""
            self.report(f"✖ {spec.title}: {exc}{tail}", "error")
            self.poll_now()
            return
        if spec.after is not None:
            spec.after(self.state, values, data)
        self.report(f"✔ {spec.title}: {describe_result(data)}", "success")
        if spec.show_tab:
            self.main.action_show_pane(spec.show_tab)
        self.poll_now()
