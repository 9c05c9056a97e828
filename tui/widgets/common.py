"""Pieces every pane uses: the availability notice and in-place table updates."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Static

from tui.state import Fetched, MeshState

Row = tuple[str, Sequence[Any]]


def sync_table(table: DataTable[Any], rows: Iterable[Row]) -> None:
    """Make `table` hold exactly `rows` (key, cells) in that order, keeping the cursor's row.

    Rebuilding a table on every poll would throw the operator's cursor back to the top; updating
    cells in place keeps it where it was.
    """
    rows = list(rows)
    wanted = [key for key, _ in rows]
    current = [str(k.value) for k in table.rows]
    columns = list(table.columns)
    if current == wanted:
        for key, cells in rows:
            for col, value in zip(columns, cells, strict=False):
                if table.get_cell(key, col) != value:
                    table.update_cell(key, col, value)
        return
    cursor_key = current[table.cursor_row] if current and 0 <= table.cursor_row < len(current) else None
    table.clear()
    for key, cells in rows:
        table.add_row(*cells, key=key)
    if cursor_key in wanted:
        table.move_cursor(row=wanted.index(cursor_key), animate=False)


class Notice(Static):
    """One line above a pane's content: empty when fine, else why the data is missing or stale."""

    def show_fetch(self, fetched: Fetched, state: MeshState) -> bool:
        """Show `fetched`'s trouble; True when there is data to draw."""
        if state.reachable is False and fetched.data is not None:
            self._set("stale: showing the last data seen before the control plane went away", "-stale")
        elif fetched.state == "unavailable":
            self._set(f"{fetched.message} — this pane fills in once the control plane serves it",
                      "-unavailable")
        elif fetched.state == "error":
            self._set(fetched.message + (" (showing the last good data)" if fetched.data is not None
                                         else ""), "-error")
        elif fetched.state == "pending":
            self._set("waiting for the control plane…", "-pending")
        else:
            self._set("", "")
        return fetched.data is not None and fetched.state != "unavailable"

    def _set(self, text: str, cls: str) -> None:
        self.set_classes(f"notice {cls}".strip())
        self.display = bool(text)
        self.update(Text(text))


class Pane(VerticalScroll):
    """Base for a tab's content. Subclasses implement `show(state)`."""

    can_focus = False

    def show(self, state: MeshState) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


def styled(text: str, style: str) -> Text:
    return Text(text, style=style)
