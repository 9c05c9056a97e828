"""Live charts: RPS, p50/p99, error rate, fallback and fraud share from /api/v1/traffic/summary."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Label, Sparkline, Static

from tui.format import num, pct
from tui.state import MeshState, as_float, pick
from tui.widgets.common import Notice, Pane


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    names: tuple[str, ...]  # field names in a summary or history point, first present wins
    fmt: Callable[[Any], str]


METRICS = (
    Metric("rps", "RPS", ("rps",), lambda v: num(v, 1)),
    Metric("p50", "p50 ms", ("p50_ms", "p50"), lambda v: num(v, 1)),
    Metric("p99", "p99 ms", ("p99_ms", "p99"), lambda v: num(v, 1)),
    Metric("errors", "errors", ("error_rate", "errors"), lambda v: pct(v, 2)),
    Metric("fallback", "fallback", ("fallback_share", "fallback_rate", "fallback"), lambda v: pct(v, 1)),
    Metric("fraud", "fraud", ("fraud_share", "fraud_rate", "fraud"), lambda v: pct(v, 1)),
)


def series(history: Any, metric: Metric) -> list[float]:
    """One metric's values over the history points (points without it are skipped)."""
    out = []
    for point in history if isinstance(history, list) else []:
        value = as_float(pick(point, *metric.names))
        if value is not None:
            out.append(value)
    return out


def clusters_text(summary: dict[str, Any]) -> Text:
    clusters = summary.get("clusters")
    text = Text()
    if not isinstance(clusters, dict):
        return text
    for name, c in sorted(clusters.items()):
        if not isinstance(c, dict):
            continue
        text.append(f"{name} ", style="bold")
        text.append(f"{num(pick(c, 'rps'), 1)} rps, {pick(c, 'rq_total', 'rq', default='-')} rq, "
                    f"{pick(c, 'rq_5xx', default=0)} 5xx")
        ejected = as_float(pick(c, "ejected", "ejections", default=0)) or 0
        if ejected:
            text.append(f", {ejected:.0f} ejected", style="bold red")
        text.append("   ")
    return text


def window_text(summary: dict[str, Any], history: list[Any]) -> Text:
    """What the charts cover, or why there is nothing to chart yet."""
    if summary.get("available") is False or not history:
        edge: dict[str, Any] = summary["edge"] if isinstance(summary.get("edge"), dict) else {}
        why = f": {edge['error']}" if edge.get("error") else ""
        return Text(f"no traffic numbers yet — the edge Envoy has not reported{why}", style="yellow")
    span = len(history) * 2
    window = num(pick(summary, "window_s", "window", default=60), 0)
    return Text(f"last {span // 60} min {span % 60} s, one point per 2 s; numbers over the last {window} s",
                style="dim")


def load_text(state: MeshState) -> Text:
    """The background load line (l starts or stops it)."""
    load = state.load.data if state.load.ok and isinstance(state.load.data, dict) else None
    text = Text("background load: ", style="bold")
    if load is None:
        text.append("not available on this control plane yet" if state.load.state == "unavailable"
                    else "-", style="dim")
    elif load.get("running"):
        text.append(f"running at {num(load.get('rate'), 0)} rps", style="green")
        text.append(f", sent {load.get('sent', 0)}, errors {load.get('errors', 0)}")
        if load.get("scenario"):
            text.append(f", scenario {load['scenario']}")
    else:
        text.append("off", style="dim")
        if load.get("sent"):
            text.append(f" (last run sent {load['sent']}, errors {load.get('errors', 0)})", style="dim")
    text.append("  (l: start/stop)", style="dim")
    return text


class MetricRow(Horizontal):
    """Label, sparkline, latest value."""

    def __init__(self, metric: Metric) -> None:
        super().__init__(id=f"metric-{metric.key}", classes="metric-row")
        self.metric = metric

    def compose(self) -> ComposeResult:
        yield Label(self.metric.label, classes="metric-label")
        yield Sparkline([], classes="metric-spark")
        yield Label("-", classes="metric-value")

    def show(self, values: list[float], latest: Any) -> None:
        self.query_one(Sparkline).data = values
        self.query_one(".metric-value", Label).update(self.metric.fmt(latest))


class ChartsPane(Pane):
    def compose(self) -> ComposeResult:
        yield Notice(classes="notice")
        yield Static(id="window", classes="dim-line")
        for metric in METRICS:
            yield MetricRow(metric)
        yield Static(id="clusters")
        yield Static(id="load")

    def show(self, state: MeshState) -> None:
        self.query_one("#load", Static).update(load_text(state))
        if not self.query_one(Notice).show_fetch(state.traffic, state):
            return
        summary = state.traffic.data if isinstance(state.traffic.data, dict) else {}
        history: list[Any] = summary["history"] if isinstance(summary.get("history"), list) else []
        self.query_one("#window", Static).update(window_text(summary, history))
        for metric in METRICS:
            values = series(history, metric)
            latest = pick(summary, *metric.names, default=values[-1] if values else None)
            self.query_one(f"#metric-{metric.key}", MetricRow).show(values, latest)
        self.query_one("#clusters", Static).update(clusters_text(summary))
