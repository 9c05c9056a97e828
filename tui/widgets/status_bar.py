"""The top line: is the control plane reachable, is NATS connected, snapshot version, frozen flag."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from tui.events import EventFeed
from tui.state import MeshState, pick


def connection_text(state: MeshState, feed: EventFeed) -> Text:
    text = Text()
    text.append("fraud-mesh ", style="bold")
    if state.reachable is None:
        text.append("◌ API connecting…", style="yellow")
    elif state.reachable:
        text.append("● API ok", style="green")
    else:
        text.append("✖ API unreachable — retrying", style="bold red")
    text.append("  ")
    if feed.connected is None:
        text.append("NATS off", style="dim")
    elif feed.connected:
        text.append("● NATS", style="green")
    else:
        text.append("✖ NATS disconnected", style="bold red")
    status = state.status.data if isinstance(state.status.data, dict) else None
    if status is not None:
        text.append(f"  v{pick(status, 'version', 'snapshot_version', default='?')}")
        intent = status.get("intent") or {}
        if pick(status, "frozen", default=intent.get("frozen")):
            text.append("  FROZEN", style="bold white on red")
    return text


def banner_text(state: MeshState, interval: float) -> str:
    """The line under the tabs while the control plane is away (empty when it is not)."""
    if state.reachable is False:
        return f"control plane unreachable — retrying every {interval:g} s. {state.unreachable_reason}"
    return ""


class ConnectionBar(Static):
    def show(self, state: MeshState, feed: EventFeed) -> None:
        self.update(connection_text(state, feed))
