"""Toxic types and what each does to one direction of a connection (Toxiproxy 2.12 semantics).

A toxic is configuration (`Toxic`: name, type, stream, toxicity, integer attributes) plus a
*pipe*: a coroutine that reads `Chunk`s from its stage's input queue and emits them (changed,
delayed, split, cut or swallowed) to the next stage. ``None`` on a queue is end-of-stream; a pipe
that emits ``None`` closes the direction, which closes the connection.

A pipe may be cancelled at any await (the toxic was updated or removed while the connection is
open); it then passes on any data it holds, so changing toxics never loses bytes, as in Toxiproxy.
"""

from __future__ import annotations

import asyncio
import enum
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from chaos.proxy import jsonbody

__all__ = [
    "TOXIC_TYPES", "Chunk", "Direction", "Stage", "Toxic", "latency_delay_s", "parse_attributes",
    "run_toxic", "slice_bounds",
]


class Direction(enum.Enum):
    """`upstream`: client -> server bytes; `downstream`: server -> client bytes."""

    UPSTREAM = "upstream"
    DOWNSTREAM = "downstream"

    @classmethod
    def parse(cls, value: str) -> Direction | None:
        """Case-insensitive, like Toxiproxy's stream.ParseDirection; None when invalid."""
        try:
            return cls(value.lower())
        except ValueError:
            return None


class Chunk:
    """Bytes read from a socket, stamped with when they were read (latency counts from there)."""

    __slots__ = ("data", "ts")

    def __init__(self, data: bytes, ts: float) -> None:
        self.data = data
        self.ts = ts


class Stage(Protocol):
    """What a pipe sees of its place in a link's chain."""

    input: asyncio.Queue[Chunk | None]
    state: dict[str, int]

    def emit(self, chunk: Chunk | None) -> None:
        """Pass `chunk` to the next stage; None ends the stream (closes the connection)."""

    def drop(self, nbytes: int) -> None:
        """Account for bytes this toxic swallowed."""

    def reset_connection(self) -> None:
        """Abort both sockets of the connection with TCP RST."""


Pipe = Callable[[dict[str, int], Stage, random.Random], Awaitable[None]]


@dataclass
class Toxic:
    """One configured toxic. `stream` keeps the client's spelling (Toxiproxy echoes it back)."""

    name: str
    type: str
    stream: str
    direction: Direction
    toxicity: float = 1.0
    attributes: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        toxicity: float | int = self.toxicity
        if toxicity == int(toxicity):  # Go prints float32 1.0 as 1
            toxicity = int(toxicity)
        return {"attributes": dict(self.attributes), "name": self.name, "type": self.type,
                "stream": self.stream, "toxicity": toxicity}


# ---- pure semantics (unit-tested without sockets) --------------------------------------------------

def latency_delay_s(latency_ms: int, jitter_ms: int, rng: random.Random) -> float:
    """The delay for one chunk: latency plus a uniform jitter in [-jitter, +jitter)."""
    delay = latency_ms
    if jitter_ms > 0:
        delay += rng.randrange(2 * jitter_ms) - jitter_ms
    return delay / 1000.0


def slice_bounds(size: int, average: int, variation: int, rng: random.Random) -> list[tuple[int, int]]:
    """Split [0, size) into consecutive slices of about `average` bytes (+/- `variation`).

    Bisects like Toxiproxy's slicer, but never yields an empty or inverted slice: Toxiproxy
    recurses forever for average_size 0 and can cut outside the chunk when variation > average.
    """
    average = max(average, 1)
    variation = max(variation, 0)
    out: list[tuple[int, int]] = []
    todo = [(0, size)]
    while todo:
        start, end = todo.pop()
        if end - start - average <= variation or end - start < 2:
            if end > start:
                out.append((start, end))
            continue
        mid = start + (end - start) // 2
        if variation > 0:
            mid += rng.randrange(2 * variation) - variation
        mid = min(max(mid, start + 1), end - 1)
        todo.append((mid, end))
        todo.append((start, mid))
    return out


# ---- pipes -------------------------------------------------------------------------------------

async def _noop(attrs: dict[str, int], stage: Stage, rng: random.Random) -> None:
    while True:
        chunk = await stage.input.get()
        stage.emit(chunk)
        if chunk is None:
            return


# Longer waits than this (attributes are int64 ms) are "forever": event loops cannot schedule them.
_FOREVER_S = 10_000_000.0


async def _sleep(seconds: float | None) -> None:
    """asyncio.sleep that treats None and absurdly long delays as forever."""
    if seconds is None or seconds > _FOREVER_S:
        await asyncio.Event().wait()
    elif seconds > 0:
        await asyncio.sleep(seconds)


async def _hold(stage: Stage, chunk: Chunk, seconds: float | None) -> None:
    """Sleep while holding `chunk` (forever when None); on cancellation pass it on, then stop."""
    try:
        await _sleep(seconds)
    except asyncio.CancelledError:
        if chunk.data:
            stage.emit(chunk)
        raise


async def _latency(attrs: dict[str, int], stage: Stage, rng: random.Random) -> None:
    while True:
        chunk = await stage.input.get()
        if chunk is None:
            stage.emit(None)
            return
        # Counted from when the bytes were read, so a burst is delayed once, not once per chunk.
        sleep = latency_delay_s(attrs["latency"], attrs["jitter"], rng) - (time.monotonic() - chunk.ts)
        if sleep > 0:
            await _hold(stage, chunk, sleep)
            chunk.ts += sleep
        stage.emit(chunk)


async def _bandwidth(attrs: dict[str, int], stage: Stage, rng: random.Random) -> None:
    rate = attrs["rate"]  # KB/s, i.e. bytes per millisecond
    debt = 0.0  # seconds of sending time owed, carried across chunks
    while True:
        chunk = await stage.input.get()
        if chunk is None:
            stage.emit(None)
            return
        if rate <= 0:  # no bandwidth: data waits until the toxic changes
            await _hold(stage, chunk, None)
        debt += len(chunk.data) / (rate * 1000.0)
        piece = rate * 100  # what may pass per 100 ms
        while len(chunk.data) > piece:
            await _hold(stage, chunk, 0.1)
            stage.emit(Chunk(chunk.data[:piece], chunk.ts))
            chunk.data = chunk.data[piece:]
            debt -= 0.1
        started = time.monotonic()
        await _hold(stage, chunk, debt)
        debt -= time.monotonic() - started
        stage.emit(chunk)


async def _slow_close(attrs: dict[str, int], stage: Stage, rng: random.Random) -> None:
    while True:
        chunk = await stage.input.get()
        if chunk is None:
            try:
                await _sleep(attrs["delay"] / 1000.0)
            finally:  # removed while waiting: close now rather than never
                stage.emit(None)
            return
        stage.emit(chunk)


async def _timeout(attrs: dict[str, int], stage: Stage, rng: random.Random) -> None:
    # Data is swallowed; the stream closes once `timeout` ms pass with no data (0: never).
    timeout = attrs["timeout"] / 1000.0 if 0 < attrs["timeout"] / 1000.0 <= _FOREVER_S else None
    while True:
        try:
            chunk = await asyncio.wait_for(stage.input.get(), timeout)
        except TimeoutError:
            stage.emit(None)
            return
        if chunk is None:
            stage.emit(None)
            return
        stage.drop(len(chunk.data))


async def _reset_peer(attrs: dict[str, int], stage: Stage, rng: random.Random) -> None:
    # Fires `timeout` ms after the first data (or end of stream) in this direction.
    chunk = await stage.input.get()
    if chunk is not None:
        stage.drop(len(chunk.data))
    await _sleep(attrs["timeout"] / 1000.0)
    stage.reset_connection()


async def _slicer(attrs: dict[str, int], stage: Stage, rng: random.Random) -> None:
    pause = attrs["delay"] / 1_000_000.0  # microseconds
    while True:
        chunk = await stage.input.get()
        if chunk is None:
            stage.emit(None)
            return
        data = chunk.data
        for start, end in slice_bounds(len(data), attrs["average_size"], attrs["size_variation"], rng):
            stage.emit(Chunk(data[start:end], chunk.ts))
            await _hold(stage, Chunk(data[end:], chunk.ts), pause)


async def _limit_data(attrs: dict[str, int], stage: Stage, rng: random.Random) -> None:
    limit = attrs["bytes"]
    # The count survives updates of the toxic (state lives on the stage, like Toxiproxy's).
    sent = stage.state.setdefault("sent", 0)
    while True:
        remaining = max(limit - sent, 0)
        chunk = await stage.input.get()
        if chunk is None:
            stage.emit(None)
            return
        if remaining < len(chunk.data):
            stage.drop(len(chunk.data) - remaining)
            chunk.data = chunk.data[:remaining]
        if chunk.data:
            stage.emit(chunk)
            sent += len(chunk.data)
            stage.state["sent"] = sent
        if limit - sent <= 0:
            stage.emit(None)
            return


@dataclass(frozen=True)
class ToxicType:
    """A toxic type: its attribute names (in Toxiproxy's JSON order) and its pipe."""

    name: str
    attributes: tuple[str, ...]
    pipe: Pipe


TOXIC_TYPES: dict[str, ToxicType] = {t.name: t for t in (
    ToxicType("noop", (), _noop),
    ToxicType("latency", ("latency", "jitter"), _latency),
    ToxicType("bandwidth", ("rate",), _bandwidth),
    ToxicType("slow_close", ("delay",), _slow_close),
    ToxicType("timeout", ("timeout",), _timeout),
    ToxicType("reset_peer", ("timeout",), _reset_peer),
    ToxicType("slicer", ("average_size", "size_variation", "delay"), _slicer),
    ToxicType("limit_data", ("bytes",), _limit_data),
)}


def parse_attributes(type_name: str, raw: Any, current: dict[str, int] | None = None) -> dict[str, int]:
    """Integer attributes for `type_name` from JSON `raw`, starting from `current` (or zeros).

    Unknown keys are ignored and ``null`` keeps a value, as Go's decoder does; a non-integer
    value is a 400 ``bad request body`` naming the attribute.
    """
    names = TOXIC_TYPES[type_name].attributes
    attrs = dict(current) if current is not None else dict.fromkeys(names, 0)
    if raw is None:
        return attrs
    if not isinstance(raw, dict):
        raise jsonbody.type_error(raw, "Go struct field .attributes", f"toxics.{type_name}")
    for name in names:
        attrs[name] = jsonbody.field_int64(raw, name, ".attributes", attrs[name])
    return attrs


async def run_toxic(toxic: Toxic, stage: Stage, rng: random.Random, active: bool) -> None:
    """Run `toxic` on `stage` until end of stream or cancellation; inactive toxics pass data as is."""
    kind = TOXIC_TYPES[toxic.type] if active else TOXIC_TYPES["noop"]
    await kind.pipe(dict(toxic.attributes), stage, rng)
