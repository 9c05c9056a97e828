"""Drift: per-feature PSI and KS/chi-square p-values of the latest window, levels coloured."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import DataTable, Static

from tui.format import clock, level_text, num
from tui.state import MeshState, as_float, per_model, pick
from tui.widgets.common import Notice, Pane, sync_table

LEVEL_ORDER = {"retrain": 0, "monitor": 1, "none": 2}


def reports(data: Any) -> dict[str, dict[str, Any]]:
    """model -> DriftReport from /api/v1/drift (a mapping, a list, or wrapped in `reports`)."""
    return per_model(data, "reports", "drift", "models")


def headline(model: str, report: dict[str, Any]) -> Text:
    text = Text()
    text.append(f"{pick(report, 'model_version', default=model)} ", style="bold")
    text.append_text(level_text(report.get("level")))
    text.append(f"  max PSI {num(report.get('max_psi'), 3)}  score PSI {num(report.get('score_psi'), 3)}"
                f"  {report.get('window_size', '?')} rows {clock(report.get('ts'))} UTC", style="dim")
    return text


class DriftPane(Pane):
    def compose(self) -> ComposeResult:
        yield Notice(classes="notice")
        yield Static(id="drift-head")
        table: DataTable[Any] = DataTable(id="drift-table", cursor_type="row", zebra_stripes=True)
        table.add_columns("model", "feature", "PSI", "p-value", "test", "level", "BH")
        yield table
        yield Static("PSI < 0.1 none · 0.1-0.2 monitor · >= 0.2 and significant after "
                     "Benjamini-Hochberg (BH) retrain", classes="dim-line")

    def show(self, state: MeshState) -> None:
        if not self.query_one(Notice).show_fetch(state.drift, state):
            return
        by_model = reports(state.drift.data)
        head = Text("\n").join(headline(m, r) for m, r in sorted(by_model.items())) if by_model else \
            Text("no drift report yet: the detector reports once a window of live traffic is full")
        self.query_one("#drift-head", Static).update(head)
        rows = []
        for model, report in sorted(by_model.items()):
            feats = [f for f in report.get("features") or [] if isinstance(f, dict)]
            feats.sort(key=lambda f: (LEVEL_ORDER.get(str(f.get("level")), 3),
                                      -(as_float(f.get("psi")) or 0.0)))
            for f in feats:
                name = str(f.get("feature", "?"))
                rows.append((f"{model}/{name}", [
                    model, name, num(f.get("psi"), 3), num(f.get("p_value"), 3),
                    str(f.get("test", "-")), level_text(f.get("level")),
                    "rejected" if f.get("rejected") else ""]))
        sync_table(self.query_one("#drift-table", DataTable), rows)
