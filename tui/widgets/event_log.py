"""Events: the live NATS stream (one line per event; prediction traffic is only counted)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import RichLog, Static

from tui.events import EventFeed, EventLine
from tui.widgets.common import Pane


def feed_header(feed: EventFeed, url: str | None) -> Text:
    text = Text()
    if feed.connected is None:
        text.append("NATS off", style="dim")
        text.append(" — this console was started without an event source", style="dim")
        return text
    text.append("● " if feed.connected else "✖ ", style="green" if feed.connected else "bold red")
    text.append(feed.detail, style="" if feed.connected else "bold red")
    if url:
        text.append(f"  {url}", style="dim")
    counts = ", ".join(f"{k} {v}" for k, v in sorted(feed.counts.items()))
    if counts:
        text.append(f"  counted: {counts}", style="dim")
    return text


def event_text(line: EventLine) -> Text:
    text = Text()
    text.append(f"{line.ts} ", style="dim")
    text.append(f"{line.subject.removeprefix('mesh.'):<17} ", style="bold")
    text.append(line.text, style=line.style)
    return text


class EventLogPane(Pane):
    def compose(self) -> ComposeResult:
        yield Static(id="feed-head")
        yield RichLog(id="event-log", max_lines=1000, wrap=True, markup=False, auto_scroll=True)

    def refresh_feed(self, feed: EventFeed, url: str | None) -> None:
        """Append what arrived since the last call; redraw the header."""
        if not feed.dirty:
            return
        log = self.query_one("#event-log", RichLog)
        for line in feed.drain():
            log.write(event_text(line))
        self.query_one("#feed-head", Static).update(feed_header(feed, url))

    def show(self, state: object) -> None:
        """The event log is fed by NATS, not by polling."""
