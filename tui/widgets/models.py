"""Models: registry versions with aliases and pins; canary progress (phase, step, weight, verdicts)."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import DataTable, Static

from tui.format import date_time, num, pct, verdict_text
from tui.state import MeshState, per_model, pick
from tui.widgets.common import Notice, Pane, sync_table

PHASE_STYLES = {"idle": "dim", "shadow": "magenta", "canary": "yellow", "promoted": "bold green",
                "rolled_back": "bold red"}


def version_rows(data: Any) -> list[tuple[str, list[Any]]]:
    rows = []
    for kind, entry in sorted(per_model(data, "models").items()):
        pinned = entry.get("pinned")
        for v in entry.get("versions") or []:
            if not isinstance(v, dict):
                continue
            version = str(v.get("version", "?"))
            aliases = list(v.get("aliases") or [])
            for alias in ("champion", "challenger"):
                if str(entry.get(alias)) == version and alias not in aliases:
                    aliases.append(alias)
            metrics = v.get("metrics") or {}
            alias_text = Text(", ".join(aliases), style="bold green" if "champion" in aliases else "yellow")
            rows.append((f"{kind}/{version}", [
                kind, f"v{version}", alias_text,
                Text("pinned", style="cyan") if pinned is not None and str(pinned) == version else "",
                num(pick(metrics, "auc", "roc_auc"), 3), num(pick(metrics, "f1"), 3),
                num(pick(metrics, "brier"), 4), date_time(pick(v, "created_at", "creation_timestamp"))]))
    return rows


def verdict_word(item: Any) -> str:
    return str(pick(item, "verdict", "result", default="?")) if isinstance(item, dict) else str(item)


def canary_rows(data: Any) -> list[tuple[str, list[Any]]]:
    rows = []
    for model, c in sorted(per_model(data, "canaries", "canary", "models").items()):
        phase = str(c.get("phase", "?"))
        step = c.get("step")
        step_text = str(step) if isinstance(step, int) and step >= 0 else "-"  # -1: not stepping
        verdicts = c.get("verdicts") if isinstance(c.get("verdicts"), list) else []
        trail = Text()
        for i, v in enumerate(verdicts[-4:]):
            if i:
                trail.append(" ")
            trail.append_text(verdict_text(verdict_word(v)))
        rows.append((model, [model, Text(phase, style=PHASE_STYLES.get(phase, "")),
                             f"v{c['version']}" if c.get("version") else "-", step_text,
                             pct(c.get("weight"), 0), trail]))
    return rows


def last_reasons(data: Any) -> Text:
    """Why each canary stands where it does: its last verdict, what blocks it, a hold on all."""
    text = Text()
    held = data.get("held") if isinstance(data, dict) else None
    if held:
        text.append(f"canary held: {held}", style="yellow")
    for model, c in sorted(per_model(data, "canaries", "canary", "models").items()):
        verdicts = c.get("verdicts") if isinstance(c.get("verdicts"), list) else []
        if not verdicts and not c.get("blocked"):
            continue
        if text:
            text.append("\n")
        text.append(f"{model}: ", style="bold")
        if verdicts:
            text.append_text(verdict_text(verdicts[-1]))
        if c.get("blocked"):
            text.append(f" blocked: {c['blocked']}", style="yellow")
    return text


class ModelsPane(Pane):
    def compose(self) -> ComposeResult:
        yield Static("Registry", classes="section")
        yield Notice(id="models-notice", classes="notice")
        registry: DataTable[Any] = DataTable(id="registry", cursor_type="row", zebra_stripes=True)
        registry.add_columns("model", "ver", "aliases", "pin", "AUC", "F1", "Brier", "created UTC")
        yield registry
        yield Static("Canary", classes="section")
        yield Notice(id="canary-notice", classes="notice")
        canary: DataTable[Any] = DataTable(id="canary", cursor_type="row", zebra_stripes=True)
        canary.add_columns("model", "phase", "ver", "step", "weight", "verdicts")
        yield canary
        yield Static(id="canary-reasons")

    def show(self, state: MeshState) -> None:
        if self.query_one("#models-notice", Notice).show_fetch(state.models, state):
            sync_table(self.query_one("#registry", DataTable), version_rows(state.models.data))
        if self.query_one("#canary-notice", Notice).show_fetch(state.canary, state):
            sync_table(self.query_one("#canary", DataTable), canary_rows(state.canary.data))
            self.query_one("#canary-reasons", Static).update(last_reasons(state.canary.data))
