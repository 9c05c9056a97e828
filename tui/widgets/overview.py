"""Overview: edge -> chains -> clusters -> servers, live weights, health, ejections, versions, ACKs."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import DataTable, Static

from tui.format import ACK_STYLES, pct
from tui.state import MeshState, per_model, pick
from tui.widgets.common import Notice, Pane, sync_table

FALLBACK = "heuristic"


def documented_chain(model: str, models: list[str]) -> list[str]:
    """docs/design.md: chain-<m> = [m, the other models, heuristic] (used when status has no chains)."""
    return [model, *[m for m in models if m != model], FALLBACK]


def health_mark(services: dict[str, Any], name: str) -> Text:
    svc = services.get(name)
    if not isinstance(svc, dict):
        return Text("?", style="dim")
    return Text("●", style="green") if svc.get("healthy") else Text("✖", style="bold red")


def versions(state: MeshState) -> dict[str, dict[str, Any]]:
    """model -> {champion, challenger, pinned} from /api/v1/models (empty when not served)."""
    return per_model(state.models.data, "models") if state.models.data is not None else {}


def topology_text(status: dict[str, Any], state: MeshState) -> Text:
    """The routing tree as text; weights are the effective ones (after ejections)."""
    intent = status.get("intent") or {}
    effective = status.get("effective_weights") or intent.get("weights") or {}
    services = status.get("services") or {}
    ejected = set(intent.get("ejected") or [])
    models = list(effective)
    chains: dict[str, Any] = status["chains"] if isinstance(status.get("chains"), dict) else {}
    text = Text()
    text.append("edge", style="bold")
    text.append(f"  snapshot v{pick(status, 'version', 'snapshot_version', default='?')}\n", style="dim")
    branches: list[Text] = []
    for model in models:
        line = Text(f"{pct(effective.get(model), 1):>6} chain-{model} ")
        for svc in (chains.get(f"chain-{model}") or documented_chain(model, models)):
            line.append("→ ", style="dim")
            line.append(svc, style="strike dim" if svc in ejected else "")
            line.append_text(health_mark(services, svc))
            line.append(" ")
        branches.append(line)
    canary, shadow = intent.get("canary"), intent.get("shadow")
    if isinstance(canary, dict):
        branches.append(Text(f"{pct(canary.get('weight'), 1):>6} canary → {canary.get('model')}-challenger"
                             f" v{canary.get('version') or '?'}", style="yellow"))
    if isinstance(shadow, dict):
        branches.append(Text(f"{pct(shadow.get('fraction'), 1):>6} mirror → {shadow.get('model')}-challenger"
                             f" v{shadow.get('version') or '?'} (shadow)", style="magenta"))
    branches.append(Text("  last resort: conservative default (is_fraud=true)", style="dim"))
    for i, branch in enumerate(branches):
        text.append("└─ " if i == len(branches) - 1 else "├─ ", style="dim")
        text.append_text(branch)
        if i < len(branches) - 1:
            text.append("\n")
    return text


def summary_text(status: dict[str, Any]) -> Text:
    intent = status.get("intent") or {}
    frozen = bool(pick(status, "frozen", default=intent.get("frozen")))
    text = Text()
    text.append(" FROZEN " if frozen else " automation on ", style="bold white on red" if frozen
                else "bold black on green")
    text.append(f"  snapshot v{pick(status, 'version', 'snapshot_version', default='?')}"
                f" (last good {_v(status.get('last_good_version'))})")
    shadow = intent.get("shadow")
    if isinstance(shadow, dict):
        text.append(f"  shadow {pct(shadow.get('fraction'), 1)} → {shadow.get('model')}-challenger",
                    style="magenta")
    else:
        text.append("  shadow off", style="dim")
    pins = intent.get("pins") or {}
    if pins:
        text.append("  pins " + ", ".join(f"{k}=v{v}" for k, v in sorted(pins.items())), style="cyan")
    return text


class OverviewPane(Pane):
    def compose(self) -> ComposeResult:
        yield Notice(classes="notice")
        yield Static(id="summary")
        yield Static(id="topology")
        services: DataTable[Any] = DataTable(id="services", cursor_type="row", zebra_stripes=True)
        services.add_columns("service", "health", "state", "weight", "champion", "challenger", "sidecar")
        yield services
        nodes: DataTable[Any] = DataTable(id="nodes", cursor_type="row", zebra_stripes=True)
        nodes.add_columns("Envoy node", "stream", "xDS", "acked", "error")
        yield nodes

    def show(self, state: MeshState) -> None:
        if not self.query_one(Notice).show_fetch(state.status, state):
            return
        status = state.status.data
        self.query_one("#summary", Static).update(summary_text(status))
        self.query_one("#topology", Static).update(topology_text(status, state))
        sync_table(self.query_one("#services", DataTable), self._service_rows(status, state))
        sync_table(self.query_one("#nodes", DataTable), self._node_rows(status))

    @staticmethod
    def _service_rows(status: dict[str, Any], state: MeshState) -> list[tuple[str, list[Any]]]:
        intent = status.get("intent") or {}
        effective = status.get("effective_weights") or {}
        services = status.get("services") or {}
        ejected = set(intent.get("ejected") or [])
        pins = intent.get("pins") or {}
        clusters = pick(state.traffic.data, "clusters", default={}) if state.traffic.ok else {}
        known = versions(state)
        names = [n for n, s in services.items() if isinstance(s, dict) and s.get("kind") == "model_server"]
        rows = []
        for name in names or [*effective, FALLBACK]:
            svc = services.get(name) or {}
            cluster = clusters.get(name) if isinstance(clusters, dict) else None
            out = name in ejected or bool(pick(cluster, "ejected", default=0))
            model = known.get(name, {})
            champion = pick(svc, "model_version", default=None) or _v(model.get("champion"))
            if name in pins:
                champion = f"{champion} (pin v{pins[name]})" if champion != "-" else f"pin v{pins[name]}"
            port = _port(svc)
            rows.append((name, [
                Text.assemble(name, (f" :{port}", "dim")) if port else name,
                Text("up", style="green") if svc.get("healthy") else Text("down", style="bold red"),
                Text("EJECTED", style="bold red") if out else Text("in", style="green"),
                pct(effective.get(name), 1) if name in effective else "fallback",
                champion, _v(model.get("challenger")),
                health_mark(services, f"sidecar-{name}")]))
        return rows

    @staticmethod
    def _node_rows(status: dict[str, Any]) -> list[tuple[str, list[Any]]]:
        rows = []
        for node, st in sorted((status.get("nodes") or {}).items()):
            st = st if isinstance(st, dict) else {}
            word = str(st.get("state", "?"))
            rows.append((node, [
                node,
                Text("connected", style="green") if st.get("connected") else Text("gone", style="red"),
                Text(word, style=ACK_STYLES.get(word, "")),
                f"v{st['acked_version']}" if st.get("acked_version") else "-",
                str(st.get("error") or "")]))
        return rows


def _port(svc: dict[str, Any]) -> int | None:
    """The server's own port: first of `ports`, else the port of its health URL."""
    ports = svc.get("ports")
    if isinstance(ports, list) and ports and isinstance(ports[0], int):
        return ports[0]
    try:
        return urlsplit(str(svc["url"])).port if svc.get("url") else None
    except ValueError:
        return None


def _v(version: Any) -> str:
    return f"v{version}" if version not in (None, "") else "-"
