"""Ledger: every decision the mesh made, newest first; enter opens "why did it do that?"."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import DataTable, Static

from tui.format import ack_text, clock
from tui.state import Fetched, MeshState
from tui.widgets.common import Notice, Pane, sync_table

ACTOR_STYLES = {"operator": "cyan", "reconciler": "yellow", "canary": "magenta", "retrain": "blue",
                "chaos": "red", "envoy": "bold red", "control_plane": "dim"}


def ledger_rows(decisions: list[dict[str, Any]]) -> list[tuple[str, list[Any]]]:
    rows = []
    for d in decisions:
        actor = str(d.get("actor", "?"))
        version = d.get("xds_version")
        rows.append((str(d.get("seq")), [
            str(d.get("seq")), clock(d.get("ts")), Text(actor, style=ACTOR_STYLES.get(actor, "")),
            str(d.get("action", "")), f"v{version}" if version else "-",
            ack_text(d.get("acked")) if version else Text("-", style="dim"), str(d.get("rule", "")),
            str(d.get("reason", ""))]))
    return rows


class LedgerPane(Pane):
    def compose(self) -> ComposeResult:
        yield Notice(classes="notice")
        table: DataTable[Any] = DataTable(id="ledger-table", cursor_type="row", zebra_stripes=True)
        table.add_columns("#", "UTC", "actor", "action", "xDS", "ACK", "rule", "reason")
        yield table
        yield Static("enter: why did it do that? (triggers, numbers, rule, ACKs per Envoy)",
                     classes="dim-line")

    def show(self, state: MeshState) -> None:
        got = state.decisions_state
        have: Any = state.decisions or ([] if got.ok else None)
        if self.query_one(Notice).show_fetch(Fetched(got.state, have, got.message), state):
            sync_table(self.query_one("#ledger-table", DataTable), ledger_rows(state.ordered_decisions()))

    def selected_seq(self) -> int | None:
        table = self.query_one("#ledger-table", DataTable)
        if not table.row_count:
            return None
        key = list(table.rows)[table.cursor_row].value
        return int(key) if key is not None else None
