"""`?`: every key binding of the console, in one list."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

EXTRA_KEYS = (
    ("tab / shift+tab", "move between tables and fields"),
    ("← →", "previous / next pane (when the tabs have focus)"),
    ("↑ ↓ pgup pgdn", "move in a table"),
    ("enter (ledger)", "why did it do that? (decision details)"),
    ("enter (experiments)", "start the chaos experiment under the cursor"),
    ("y / enter", "confirm (in a confirmation)"),
    ("n / esc", "cancel (in a dialog)"),
    ("ctrl+q", "quit from anywhere"),
)


def bindings_table(bindings: list[tuple[str, str]]) -> Table:
    table = Table.grid(padding=(0, 3))
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column()
    for key, description in bindings:
        table.add_row(key, description)
    return table


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "close", "Close")]

    def __init__(self, bindings: list[tuple[str, str]]) -> None:
        super().__init__(classes="dialog-screen")
        self.bindings = [*bindings, *EXTRA_KEYS]

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog wide", id="help"):
            yield Label("Keys", classes="dialog-title")
            yield Static(bindings_table(self.bindings))
            yield Static("Every action asks for confirmation before it calls the operator API; the "
                         "answer (decision, xDS version, ACKs) or the API's error shows at the bottom.",
                         classes="dialog-hint")
            yield Static("esc / ? : close", classes="dialog-hint")

    def action_close(self) -> None:
        self.dismiss(None)
