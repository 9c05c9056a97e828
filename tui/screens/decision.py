""""Why did it do that?": one ledger decision with its triggers, numbers, rule and ACKs per Envoy."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from tui.format import ACK_STYLES, acked_word, date_time, decision_line


def trigger_lines(decision: dict[str, Any], known: dict[str, dict[str, Any]]) -> Text:
    """Each trigger id, resolved to the decision it names when the ledger has it."""
    text = Text()
    ids = [str(t) for t in decision.get("trigger_ids") or []]
    if not ids:
        return Text("none recorded (an operator request or a timer)", style="dim")
    for i, tid in enumerate(ids):
        if i:
            text.append("\n")
        text.append(tid, style="bold")
        cause = known.get(tid)
        if cause is not None:
            text.append(f"  = decision {decision_line(cause)}: {cause.get('reason', '')}", style="cyan")
        else:
            text.append("  (event id; see the event log)", style="dim")
    return text


def detail_table(decision: dict[str, Any], known: dict[str, dict[str, Any]]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    grid.add_row("when", f"{date_time(decision.get('ts'))} UTC")
    grid.add_row("actor", str(decision.get("actor", "?")))
    grid.add_row("action", str(decision.get("action", "?")))
    grid.add_row("rule", str(decision.get("rule", "?")))
    grid.add_row("reason", str(decision.get("reason", "")))
    grid.add_row("triggers", trigger_lines(decision, known))
    numbers = decision.get("numbers") or {}
    grid.add_row("numbers seen", Text("\n").join(Text(f"{k} = {_g(v)}") for k, v in numbers.items())
                 if numbers else Text("none", style="dim"))
    version = decision.get("xds_version")
    overall = acked_word(decision.get("acked"))
    grid.add_row("xDS version", Text(f"v{version}  ", style="bold").append(overall, style=ACK_STYLES[overall])
                 if version else Text("no routing change", style="dim"))
    nodes = decision.get("nodes") or {}
    acks = Text()
    for i, (node, state) in enumerate(sorted(nodes.items())):
        if i:
            acks.append("\n")
        acks.append(f"{node:<20}")
        acks.append(str(state), style=ACK_STYLES.get(str(state), ""))
    grid.add_row("ACKs", acks if nodes else Text("no Envoy was connected", style="dim"))
    grid.add_row("event id", Text(str(decision.get("id", "-")), style="dim"))
    return grid


def _g(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, int | float) and not isinstance(value, bool) else str(value)


class DecisionScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,enter", "dismiss_screen", "Close")]

    def __init__(self, decision: dict[str, Any], known: dict[str, dict[str, Any]]) -> None:
        super().__init__(classes="dialog-screen")
        self.decision = decision
        self.known = known

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog wide", id="decision-detail"):
            yield Label(f"Why? decision #{self.decision.get('seq', '?')}", classes="dialog-title")
            yield Static(detail_table(self.decision, self.known), id="decision-body")
            yield Static("esc/enter: close", classes="dialog-hint")

    def action_dismiss_screen(self) -> None:
        self.dismiss(None)
