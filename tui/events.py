"""Live mesh events from NATS (`mesh.>`) for the console's event log.

`NatsEventSource.run()` connects, subscribes and reconnects forever (a console started before the
mesh waits for NATS to appear); it reports every connect/disconnect to its sink so the console can
show "NATS disconnected". `describe_event()` turns one message into a one-line summary; the
high-rate streams (predictions, shadow predictions, labels) are only counted, never listed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Protocol

from tui.format import acked_word, clock, num, pct

log = logging.getLogger(__name__)

SUBJECT = "mesh.>"
COUNTED_ONLY = ("mesh.predictions.", "mesh.shadow.", "mesh.labels")


class EventSink(Protocol):
    def event(self, subject: str, data: bytes) -> None: ...

    def state(self, connected: bool, detail: str) -> None: ...


class EventSource(Protocol):
    """Anything that feeds the console's event log (NATS in production)."""

    url: str

    async def run(self, sink: EventSink) -> None: ...


class NatsEventSource:
    """Subscribes to `mesh.>` on `url`; runs until cancelled, reconnecting forever."""

    def __init__(self, url: str, subject: str = SUBJECT, *, retry_s: float = 1.0) -> None:
        self.url = url
        self.subject = subject
        self.retry_s = retry_s

    async def run(self, sink: EventSink) -> None:
        import nats

        async def on_message(msg: Any) -> None:
            sink.event(msg.subject, msg.data)

        async def on_disconnected() -> None:
            sink.state(False, "NATS disconnected — retrying")

        async def on_reconnected() -> None:
            sink.state(True, "NATS connected")

        async def on_error(exc: Exception) -> None:
            log.debug("nats: %s", exc)  # reconnects are reported through the callbacks above

        while True:
            nc = None
            closed = asyncio.Event()

            async def on_closed(closed: asyncio.Event = closed) -> None:
                closed.set()

            try:
                nc = await nats.connect(
                    self.url, name="meshctl-console", allow_reconnect=True,
                    max_reconnect_attempts=-1, reconnect_time_wait=self.retry_s, connect_timeout=1,
                    disconnected_cb=on_disconnected, reconnected_cb=on_reconnected,
                    error_cb=on_error, closed_cb=on_closed)
                await nc.subscribe(self.subject, cb=on_message)
                sink.state(True, "NATS connected")
                await closed.wait()  # reconnects happen inside nats-py; closed means it gave up
                sink.state(False, "NATS disconnected — retrying")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                sink.state(False, f"NATS disconnected — retrying ({type(exc).__name__})")
            finally:
                if nc is not None and not nc.is_closed:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(nc.close())
            await asyncio.sleep(self.retry_s)


@dataclass(frozen=True)
class EventLine:
    ts: str
    subject: str
    text: str
    style: str = ""


def counted_only(subject: str) -> bool:
    return subject.startswith(COUNTED_ONLY)


def describe_event(subject: str, data: bytes) -> EventLine:
    """One NATS message -> a line for the log. Unknown or undecodable payloads are shown raw."""
    try:
        ev = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return EventLine("-", subject, f"{len(data)} bytes (not JSON)", "dim")
    if not isinstance(ev, dict):
        return EventLine("-", subject, str(ev)[:120])
    ts = clock(ev.get("ts"))
    kind = subject.split(".")[1] if subject.count(".") >= 1 else subject
    describe = _DESCRIBERS.get(kind)
    if describe is None:
        return EventLine(ts, subject, _fields(ev))
    text, style = describe(subject, ev)
    return EventLine(ts, subject, text, style)


def _fields(ev: dict[str, Any], skip: tuple[str, ...] = ("v", "id", "ts")) -> str:
    return " ".join(f"{k}={v}" for k, v in ev.items() if k not in skip)[:160]


def _health(subject: str, ev: dict[str, Any]) -> tuple[str, str]:
    state = "healthy" if ev.get("healthy") else "UNHEALTHY"
    extra = []
    if ev.get("error_rate") is not None:
        extra.append(f"errors {pct(ev['error_rate'], 1)}")
    if ev.get("p95_ms") is not None:
        extra.append(f"p95 {num(ev['p95_ms'], 0)} ms")
    if ev.get("ejected"):
        extra.append("ejected")
    tail = f" ({', '.join(extra)})" if extra else ""
    return f"{ev.get('service', '?')} {state}: {ev.get('reason', '')}{tail}", (
        "green" if ev.get("healthy") else "bold red")


def _drift(subject: str, ev: dict[str, Any]) -> tuple[str, str]:
    level = str(ev.get("level", "?"))
    style = {"none": "", "monitor": "yellow", "retrain": "bold red"}.get(level, "")
    return (f"drift {ev.get('model_version') or ev.get('model')}: {level}, max PSI "
            f"{num(ev.get('max_psi'), 3)} over {ev.get('window_size', '?')} rows", style)


def _decision(subject: str, ev: dict[str, Any]) -> tuple[str, str]:
    version = ev.get("xds_version")
    xds = f" -> v{version} {acked_word(ev.get('acked'))}" if version else ""
    style = "bold red" if ev.get("acked") is False else "cyan"
    return (f"decision #{ev.get('seq', '?')} {ev.get('actor')} {ev.get('action')}{xds}: "
            f"{ev.get('reason', '')}", style)


def _xds(subject: str, ev: dict[str, Any]) -> tuple[str, str]:
    what = subject.rsplit(".", 1)[-1]
    rtype = str(ev.get("type_url", "")).rsplit(".", 1)[-1]
    latency = f" in {num(ev['latency_ms'], 1)} ms" if ev.get("latency_ms") is not None else ""
    error = f": {ev['error']}" if ev.get("error") else ""
    return (f"{ev.get('node', '?')} {what} {rtype} v{ev.get('version', '?')}{latency}{error}",
            "bold red" if what == "nacked" else "dim")


def _canary(subject: str, ev: dict[str, Any]) -> tuple[str, str]:
    verdict = str(ev.get("verdict", ""))
    style = {"pass": "green", "fail": "bold red"}.get(verdict, "yellow")
    return (f"canary {ev.get('model')} v{ev.get('version')} {ev.get('phase')} "
            f"{pct(ev.get('weight'))}: {verdict} {ev.get('reason', '')}".rstrip(), style)


def _chaos(subject: str, ev: dict[str, Any]) -> tuple[str, str]:
    phase = str(ev.get("phase", subject.rsplit(".", 1)[-1]))
    style = "bold red" if phase in ("deviated", "aborted") else "magenta"
    return f"chaos {ev.get('experiment', '?')} {phase}: {ev.get('detail', '')}".rstrip(": "), style


def _retrain(subject: str, ev: dict[str, Any]) -> tuple[str, str]:
    if subject.endswith("progress"):
        return (f"retrain {ev.get('model')} {ev.get('stage')} {pct(ev.get('fraction'))} "
                f"{ev.get('message', '')}".rstrip(), "blue")
    return f"retrain requested for {ev.get('model')} ({ev.get('reason')})", "blue"


def _model(subject: str, ev: dict[str, Any]) -> tuple[str, str]:
    what = subject.rsplit(".", 1)[-1].replace("_", " ")
    prev = f" (was v{ev['previous_version']})" if ev.get("previous_version") else ""
    return (f"model {ev.get('model')} v{ev.get('version')} {what} as {ev.get('alias')}{prev}",
            "bold green" if what == "promoted" else "blue")


_DESCRIBERS = {"health": _health, "drift": _drift, "decisions": _decision, "xds": _xds,
               "canary": _canary, "chaos": _chaos, "retrain": _retrain, "model": _model}


class EventFeed:
    """The sink the console gives its source: buffers lines between screen refreshes.

    Callbacks arrive at NATS speed; the screen takes what piled up a few times a second, so a burst
    of events costs one redraw, and a flood cannot grow memory (the buffer is bounded).
    """

    def __init__(self, maxlen: int = 1000) -> None:
        self.pending: deque[EventLine] = deque(maxlen=maxlen)
        self.counts: Counter[str] = Counter()
        self.connected: bool | None = None  # None: no event source configured
        self.detail = "no NATS event source"
        self.dirty = True

    def event(self, subject: str, data: bytes) -> None:
        if counted_only(subject):
            self.counts[subject.split(".")[1]] += 1
        else:
            self.pending.append(describe_event(subject, data))
        self.dirty = True

    def state(self, connected: bool, detail: str) -> None:
        self.connected = connected
        self.detail = detail
        self.dirty = True

    def drain(self) -> list[EventLine]:
        lines = list(self.pending)
        self.pending.clear()
        self.dirty = False
        return lines
