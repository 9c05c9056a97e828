"""Chaos: the built-in experiments, and the run this console started (steps and verdict, live)."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import DataTable, Static

from tui.format import verdict_text
from tui.state import MeshState, pick, unwrap
from tui.widgets.common import Notice, Pane, sync_table

STEP_STYLES = {"passed": "green", "ok": "green", "succeeded": "green", "completed": "green",
               "running": "yellow", "pending": "dim", "failed": "bold red", "deviated": "bold red",
               "aborted": "bold red", "skipped": "dim"}


def experiment_list(data: Any) -> list[dict[str, Any]]:
    items = unwrap(data, "experiments")
    return [e for e in items if isinstance(e, dict) and e.get("name")] if isinstance(items, list) else []


class ChaosPane(Pane):
    def compose(self) -> ComposeResult:
        yield Static("Experiments (c: start one, x: abort the running one)", classes="section")
        yield Notice(id="experiments-notice", classes="notice")
        table: DataTable[Any] = DataTable(id="experiments", cursor_type="row", zebra_stripes=True)
        table.add_columns("name", "title")
        yield table
        yield Static("Run", classes="section")
        yield Static("no chaos run started from this console", id="run-head")
        steps: DataTable[Any] = DataTable(id="steps", cursor_type="row", zebra_stripes=True)
        steps.add_columns("step", "status", "detail")
        yield steps
        yield Static(id="verdict")

    def selected_experiment(self) -> str | None:
        table = self.query_one("#experiments", DataTable)
        if not table.row_count:
            return None
        key = list(table.rows)[table.cursor_row].value
        return str(key) if key is not None else None

    def show(self, state: MeshState) -> None:
        if self.query_one("#experiments-notice", Notice).show_fetch(state.experiments, state):
            sync_table(self.query_one("#experiments", DataTable),
                       [(e["name"], [e["name"], str(e.get("title", ""))])
                        for e in experiment_list(state.experiments.data)])
        watch = state.chaos
        if watch is None:
            return
        head = Text()
        head.append(f"{watch.run_id} ", style="bold")
        head.append(f"{watch.experiment}: ")
        run = watch.run.data if isinstance(watch.run.data, dict) else {}
        status = str(run.get("status", "starting"))
        head.append(status, style=STEP_STYLES.get(status, "yellow"))
        if watch.run.state == "error":
            head.append(f"  ({watch.run.message})", style="red")
        if run.get("journal"):
            head.append(f"  journal {run['journal']}", style="dim")
        self.query_one("#run-head", Static).update(head)
        rows = []
        for i, step in enumerate(run.get("steps") or []):
            if isinstance(step, dict):
                word = str(step.get("status", "?"))
                rows.append((f"{i}", [str(step.get("name", f"step {i + 1}")),
                                      Text(word, style=STEP_STYLES.get(word, "")),
                                      str(step.get("detail") or "")]))
        sync_table(self.query_one("#steps", DataTable), rows)
        verdict = pick(run, "verdict")
        text = Text("verdict: ", style="bold")
        text.append_text(verdict_text(verdict) if verdict is not None else Text("pending", style="yellow"))
        self.query_one("#verdict", Static).update(text)
