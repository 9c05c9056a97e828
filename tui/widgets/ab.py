"""A/B: per model version, its weight, requests, predicted fraud rate, latency percentiles, and once
delayed labels arrive precision/recall/F1 with 95 % intervals; the chi-square test of the
fraud-rate difference between the two largest arms, with a plain verdict.

From `GET /api/v1/ab-stats` (control_plane/ab_component.py). Arms are model versions
(`xgboost_v3`); the weight column is what the routing intent gives that version (champion slots
share the effective weights, a canary takes its share from them), from `/status` and `/models`.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import DataTable, Static

from tui.format import num, pct
from tui.state import MeshState, as_float, per_model, pick
from tui.widgets.common import Notice, Pane, sync_table

SIGNIFICANCE = 0.05  # the verdict's level; the API also reports significant_at_0_01 (the canary's)


def arms(data: Any) -> dict[str, dict[str, Any]]:
    """version -> arm from an ab-stats answer (empty for an unexpected shape)."""
    found = data.get("arms") if isinstance(data, dict) else None
    return {str(v): a for v, a in found.items() if isinstance(a, dict)} if isinstance(found, dict) else {}


def arm_weights(status: Any, models: Any) -> dict[str, float]:
    """version label -> its share of live traffic in the routing intent (what Envoy was told).

    Champion slots serve the pinned version, else the champion alias; a canary's weight comes out
    of the champions in proportion (control_plane/xds/routes.py `weighted_targets`).
    """
    intent = pick(status, "intent", default={})
    effective = pick(status, "effective_weights", default={})
    if not isinstance(intent, dict) or not isinstance(effective, dict):
        return {}
    canary = intent.get("canary") if isinstance(intent.get("canary"), dict) else None
    canary_w = min(1.0, max(0.0, as_float(pick(canary, "weight")) or 0.0)) if canary else 0.0
    registry = per_model(models, "models")
    pins = intent.get("pins")
    pins = pins if isinstance(pins, dict) else {}
    out: dict[str, float] = {}
    for kind, weight in effective.items():
        w = as_float(weight)
        served = pins.get(kind) or pick(registry.get(str(kind)), "pinned", "champion")
        if w is not None and served is not None:
            out[f"{kind}_v{served}"] = w * (1.0 - canary_w)
    if canary and canary_w > 0:
        model = str(canary.get("model"))
        version = canary.get("version") or pick(registry.get(model), "challenger")
        if version is not None:
            label = f"{model}_v{version}"
            out[label] = out.get(label, 0.0) + canary_w
    return out


def verdict(comparison: Any) -> Text:
    """'xgboost_v3 vs xgboost_v4: chi-square p = 0.035 — difference significant at 5 %'."""
    if not isinstance(comparison, dict):
        return Text("no A/B comparison: fewer than two versions answered in the window", style="dim")
    pair = comparison.get("arms") if isinstance(comparison.get("arms"), list) else []
    text = Text()
    if pair:
        text.append(" vs ".join(map(str, pair)), style="bold")
        text.append(": ")
    p = as_float(comparison.get("p_value"))
    if p is None:
        text.append("no chi-square test (no arm flags anything, or every arm flags everything)", style="dim")
        return text
    text.append(f"chi-square p = {num(p, 3)} — ")
    if comparison.get("enough_samples") is False:
        floor = comparison.get("min_samples_per_arm", "?")
        text.append(f"too few predictions to judge (an arm has < {floor})", style="yellow")
    elif p < SIGNIFICANCE:
        text.append("difference significant at 5 %", style="bold yellow")
    else:
        text.append("not significant at 5 %", style="green")
    return text


def headline(data: Any) -> Text:
    """The verdict, or why there is none, and one dim line about the window."""
    found = arms(data)
    if not isinstance(data, dict):
        return Text("unexpected answer from /api/v1/ab-stats", style="dim")
    window = num(data.get("window_s"), 0)
    if not found:
        text = Text(f"no predictions in the {window} s window yet: no experiment to compare "
                    "(traffic starts it: l for load)", style="dim")
    elif len([a for a in found.values() if a.get("count")]) < 2:
        only = ", ".join(sorted(found))
        text = Text(f"only {only} answered in the {window} s window: no A/B experiment running "
                    "(w sets weights; a canary adds a challenger)", style="dim")
    else:
        text = verdict(data.get("comparison"))
    text.append(f"\nwindow {window} s · {data.get('records_in_window', 0)} predictions · labels joined "
                f"{data.get('labels_joined', 0)} ({data.get('awaiting_labels', 0)} awaiting)", style="dim")
    if data.get("nats_connected") is False:
        text.append("\nA/B stats are not connected to NATS: these numbers are not moving", style="yellow")
    return text


def ci_cell(metric: Any) -> str:
    """{value, ci95} -> '0.786 (0.60-0.90)'; '-' without a value."""
    value = as_float(pick(metric, "value"))
    if value is None:
        return "-"
    ci = pick(metric, "ci95")
    if isinstance(ci, list) and len(ci) == 2 and all(as_float(c) is not None for c in ci):
        return f"{value:.3f} ({as_float(ci[0]):.2f}-{as_float(ci[1]):.2f})"
    return f"{value:.3f}"


def traffic_rows(data: Any, weights: dict[str, float]) -> list[tuple[str, list[Any]]]:
    rows = []
    for version, arm in sorted(arms(data).items()):
        latency = arm.get("latency_ms")
        latency = latency if isinstance(latency, dict) else {}
        count = arm.get("count")
        rows.append((version, [
            Text(version, style="bold" if version == pick(data, "champion") else ""),
            pct(weights.get(version), 0), str(count) if isinstance(count, int) else "-",
            pct(arm.get("fraud_rate"), 2) if count else "-",
            *(num(latency.get(p), 1) for p in ("p50", "p95", "p99"))]))
    return rows


def label_rows(data: Any) -> list[tuple[str, list[Any]]]:
    rows = []
    for version, arm in sorted(arms(data).items()):
        lab = arm.get("labelled")
        if not isinstance(lab, dict):
            rows.append((version, [version, "0", "waiting for labels", "-", "-"]))
            continue
        rows.append((version, [version, str(lab.get("n", "-")), ci_cell(lab.get("precision")),
                               ci_cell(lab.get("recall")), ci_cell(lab.get("f1"))]))
    return rows


class ABPane(Pane):
    def compose(self) -> ComposeResult:
        yield Notice(classes="notice")
        yield Static(id="ab-head")
        yield Static("Traffic per version", classes="section")
        traffic: DataTable[Any] = DataTable(id="ab-traffic", cursor_type="row", zebra_stripes=True)
        traffic.add_columns("version", "weight", "requests", "fraud rate", "p50 ms", "p95 ms", "p99 ms")
        yield traffic
        yield Static("Delayed labels (95 % CI: Wilson; F1 bootstrap)", classes="section")
        labels: DataTable[Any] = DataTable(id="ab-labels", cursor_type="row", zebra_stripes=True)
        labels.add_columns("version", "n", "precision", "recall", "F1")
        yield labels
        yield Static(id="ab-labels-empty", classes="dim-line")

    def show(self, state: MeshState) -> None:
        if not self.query_one(Notice).show_fetch(state.ab, state):
            return
        data = state.ab.data
        self.query_one("#ab-head", Static).update(headline(data))
        weights = arm_weights(state.status.data, state.models.data)
        sync_table(self.query_one("#ab-traffic", DataTable), traffic_rows(data, weights))
        labelled = label_rows(data)
        sync_table(self.query_one("#ab-labels", DataTable), labelled)
        empty = self.query_one("#ab-labels-empty", Static)
        empty.display = not any(isinstance(a.get("labelled"), dict) for a in arms(data).values())
        empty.update("no delayed labels joined to these predictions yet (they arrive on mesh.labels)")
