"""The console's one full screen: connection line, eight panes in tabs, last action result, footer."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static, TabbedContent, TabPane

from tui.events import EventFeed
from tui.screens.decision import DecisionScreen
from tui.screens.help import HelpScreen
from tui.state import MeshState
from tui.widgets.ab import ABPane
from tui.widgets.chaos import ChaosPane
from tui.widgets.charts import ChartsPane
from tui.widgets.common import Pane
from tui.widgets.drift import DriftPane
from tui.widgets.event_log import EventLogPane
from tui.widgets.ledger import LedgerPane
from tui.widgets.models import ModelsPane
from tui.widgets.overview import OverviewPane
from tui.widgets.status_bar import ConnectionBar, banner_text

PANES: tuple[tuple[str, str, type[Pane]], ...] = (
    ("overview", "Overview", OverviewPane),
    ("charts", "Charts", ChartsPane),
    ("drift", "Drift", DriftPane),
    ("models", "Models", ModelsPane),
    ("chaos", "Chaos", ChaosPane),
    ("events", "Events", EventLogPane),
    ("ledger", "Ledger", LedgerPane),
    ("ab", "A/B", ABPane),
)


class MainScreen(Screen[None]):
    class Ready(Message):
        """The panes exist: the app may start drawing into them."""

    BINDINGS = [
        Binding("question_mark", "help", "Help", key_display="?"),
        *(Binding(str(i), f"show_pane('{pane_id}')", title, show=False)
          for i, (pane_id, title, _) in enumerate(PANES, start=1)),
        Binding("w", "act('weights')", "Weights"),
        Binding("f", "act('freeze')", "Freeze"),
        Binding("p", "act('pin')", "Pin"),
        Binding("u", "act('unpin')", "Unpin"),
        Binding("r", "act('retrain')", "Retrain"),
        Binding("m", "act('promote')", "Promote"),
        Binding("b", "act('rollback')", "Rollback"),
        Binding("l", "act('load')", "Load"),
        Binding("c", "act('chaos')", "Chaos"),
        Binding("x", "act('abort')", "Abort"),
        Binding("q", "app.quit", "Quit"),
    ]
    ACTION_HELP = {"help": "this list of keys", "app.quit": "quit the console",
            "freeze": "freeze / unfreeze automation", "load": "start / stop background load",
            "abort": "abort the running chaos experiment", "chaos": "start a chaos experiment",
            "promote": "promote the challenger", "rollback": "roll back the challenger",
            "weights": "set traffic weights", "pin": "pin a model version", "unpin": "unpin a model",
            "retrain": "trigger a retrain"}

    def compose(self) -> ComposeResult:
        yield ConnectionBar(id="connection")
        yield Static(id="banner")
        with TabbedContent(id="tabs"):
            for i, (pane_id, title, pane_cls) in enumerate(PANES, start=1):
                with TabPane(f"{i} {title}", id=pane_id):
                    yield pane_cls(id=f"{pane_id}-pane")
        yield Static(id="result")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.app.post_message(self.Ready())

    # ---- drawing --------------------------------------------------------------------------
    def show(self, state: MeshState, feed: EventFeed, interval: float) -> None:
        """Draw a freshly polled state on every pane."""
        self.query_one(ConnectionBar).show(state, feed)
        banner = self.query_one("#banner", Static)
        text = banner_text(state, interval)
        banner.display = bool(text)
        banner.update(text)
        for pane in self.query(Pane):
            pane.show(state)

    def show_feed(self, state: MeshState, feed: EventFeed) -> None:
        # An event can arrive before the panes are mounted (or while they unmount): skip it; the
        # next feed tick redraws.
        if feed.dirty and self.is_mounted and self.query(ConnectionBar):
            self.query_one(ConnectionBar).show(state, feed)
            self.query_one(EventLogPane).refresh_feed(feed, getattr(self.app, "events_url", None))

    def show_result(self, text: str, severity: str) -> None:
        result = self.query_one("#result", Static)
        result.display = True
        result.set_classes(f"-{severity}")
        result.update(text)

    # ---- actions --------------------------------------------------------------------------
    def action_show_pane(self, pane_id: str) -> None:
        # Drop focus first: hiding a focused table makes Textual refocus a widget in the old pane,
        # which would switch the tabs straight back.
        self.set_focus(None)
        self.query_one(TabbedContent).active = pane_id
        targets = self.query_one(f"#{pane_id}-pane", Pane).query("DataTable, RichLog")
        if targets:
            self.call_after_refresh(targets.first().focus)

    def action_act(self, name: str) -> None:
        hints = {}
        experiment = self.query_one(ChaosPane).selected_experiment()
        if experiment:
            hints["experiment"] = experiment
        self.app.start_action(name, hints)  # type: ignore[attr-defined]

    @on(DataTable.RowSelected, "#experiments")
    def _start_selected(self, event: DataTable.RowSelected) -> None:
        self.action_act("chaos")

    def action_help(self) -> None:
        keys = []
        for b in self.BINDINGS:
            assert isinstance(b, Binding)
            name = b.action.partition("'")[2].rstrip("')") or b.action
            description = self.ACTION_HELP.get(name, b.description)
            if b.action.startswith("show_pane"):
                description = f"show the {b.description} pane"
            keys.append((b.key_display or b.key, description))
        self.app.push_screen(HelpScreen(keys))

    @on(DataTable.RowSelected, "#ledger-table")
    def _why(self, event: DataTable.RowSelected) -> None:
        state: MeshState = self.app.state  # type: ignore[attr-defined]
        decision = state.decisions.get(int(str(event.row_key.value)))
        if decision is not None:
            known = {str(d.get("id")): d for d in state.decisions.values()}
            self.app.push_screen(DecisionScreen(decision, known))
