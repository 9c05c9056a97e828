"""One direction of a proxied connection: bytes from a source socket to a destination socket.

With no toxics a link is a plain copy (`fast`): each read is written straight to the destination
transport from the protocol callback, with no queue, task or per-chunk object. With toxics it
runs a chain of stages (one task per toxic, unbounded queues between them) and a writer task.
Toxics added, updated or removed while the connection is open are spliced into the running chain
without losing or reordering bytes; once the last toxic is gone and the chain has drained, the
link returns to the plain copy.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from chaos.proxy.toxics import Chunk, Direction, Toxic, run_toxic

if TYPE_CHECKING:
    from chaos.proxy.connection import Connection, Endpoint

log = logging.getLogger(__name__)

# Bytes a toxic chain may hold before the source socket stops being read (TCP backpressure).
HIGH_WATER = 4 * 1024 * 1024
LOW_WATER = 1024 * 1024

# Why a socket is not being read (bits; reading resumes when none is left).
HOLD_DEST_FULL = 1  # the other socket's write buffer is full
HOLD_PIPELINE_FULL = 2  # the toxic chain holds HIGH_WATER bytes
HOLD_CONNECTING = 4  # the upstream connection is not open yet


def _discard(data: bytes) -> None:
    """Where writes go once the destination socket is closed."""


class StageRunner:
    """One toxic's place in one link: its input queue, where it emits, its state and its task."""

    __slots__ = ("active", "input", "link", "output", "state", "task", "toxic")

    def __init__(self, link: Link, toxic: Toxic, output: asyncio.Queue[Chunk | None]) -> None:
        self.link = link
        self.toxic = toxic
        self.input: asyncio.Queue[Chunk | None] = asyncio.Queue()
        self.output = output
        self.state: dict[str, int] = {}
        self.task: asyncio.Task[None] | None = None
        self.active = False

    def emit(self, chunk: Chunk | None) -> None:
        self.output.put_nowait(chunk)

    def drop(self, nbytes: int) -> None:
        self.link.release(nbytes)

    def reset_connection(self) -> None:
        self.link.conn.reset()

    def start(self) -> None:
        """(Re)start the toxic; toxicity is rolled here, so once per connection and per update."""
        self.active = self.link.rng.random() < self.toxic.toxicity
        self.task = asyncio.get_running_loop().create_task(
            run_toxic(self.toxic, self, self.link.rng, self.active))
        self.task.add_done_callback(self._finished)

    async def stop(self) -> None:
        """Cancel the toxic and wait until it has passed on any data it held."""
        task = self.task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])

    def _finished(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("toxic %s failed; closing its connection", self.toxic.name, exc_info=task.exception())
            self.link.conn.abort()


class Link:
    """Copies one direction (`direction`) from `source` to `dest` through the toxic chain."""

    def __init__(self, conn: Connection, direction: Direction, source: Endpoint, dest: Endpoint,
                 chain: list[Toxic], rng: random.Random) -> None:
        self.conn = conn
        self.direction = direction
        self.source = source
        self.dest = dest
        self.rng = rng
        self.fast = True
        assert dest.transport is not None
        self.write: Callable[[bytes], None] = dest.transport.write
        self.stages: list[StageRunner] = []
        self.tail: asyncio.Queue[Chunk | None] = asyncio.Queue()
        self.head = self.tail
        self.writer: asyncio.Task[None] | None = None
        self.inflight = 0
        self.held = False
        self.eof = False
        self.finished = False  # end of stream reached the destination
        for toxic in chain:
            self.add_toxic(toxic)

    # ---- data path -------------------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        """Bytes read from the source (slow path; the fast path calls `write` directly)."""
        if self.fast:
            self.write(data)
            return
        self.inflight += len(data)
        self.head.put_nowait(Chunk(data, time.monotonic()))
        if self.inflight > HIGH_WATER and not self.held:
            self.held = True
            self.source.hold_reading(HOLD_PIPELINE_FULL)

    def feed_eof(self) -> None:
        """The source closed: flush what the chain holds, then close the destination."""
        if self.eof:
            return
        self.eof = True
        if self.fast:
            self._finish()
        else:
            self.head.put_nowait(None)

    def release(self, nbytes: int) -> None:
        """`nbytes` left the chain (written or swallowed by a toxic)."""
        self.inflight -= nbytes
        if self.held and self.inflight < LOW_WATER:
            self.held = False
            self.source.release_reading(HOLD_PIPELINE_FULL)

    def dest_closed(self) -> None:
        self.write = _discard

    def _finish(self) -> None:
        self.finished = True
        self.dest.close()

    async def _write_loop(self) -> None:
        queue = self.tail
        while True:
            if not self.stages and queue.empty():
                self.fast = True  # chain drained and empty: back to the plain copy
                self.writer = None
                return
            chunk = await queue.get()
            if chunk is None:
                self.writer = None
                self._finish()
                return
            self.write(chunk.data)
            self.release(len(chunk.data))

    # ---- chain changes on a live connection -------------------------------------------------------
    def add_toxic(self, toxic: Toxic) -> None:
        """Append `toxic` to the end of the chain (Toxiproxy appends new toxics last)."""
        if self.finished:
            return
        self.fast = False
        if self.writer is None:
            self.writer = asyncio.get_running_loop().create_task(self._write_loop())
        stage = StageRunner(self, toxic, self.tail)
        if self.stages:
            self.stages[-1].output = stage.input
        else:
            self.head = stage.input
        self.stages.append(stage)
        stage.start()

    async def update_toxic(self, toxic: Toxic) -> None:
        """Restart the stage running `toxic` with its new attributes; its state is kept.

        A stage that already ended its stream (e.g. limit_data reached) stays ended, as in Toxiproxy.
        """
        for stage in self.stages:
            if stage.toxic.name == toxic.name:
                ended = stage.task is not None and stage.task.done()
                await stage.stop()
                stage.toxic = toxic
                if not ended:
                    stage.start()
                return

    async def remove_toxic(self, name: str) -> None:
        """Take a toxic out of the chain; bytes queued for it move on to the next stage."""
        index = next((i for i, s in enumerate(self.stages) if s.toxic.name == name), None)
        if index is None:
            return
        stage = self.stages[index]
        await stage.stop()
        del self.stages[index]
        if stage.toxic.type == "timeout":
            # Toxiproxy's timeout cleanup closes the stream it was holding.
            stage.output.put_nowait(None)
            return
        if index > 0:
            self.stages[index - 1].output = stage.output
        else:
            self.head = stage.output
        while not stage.input.empty():
            stage.output.put_nowait(stage.input.get_nowait())

    def cancel(self) -> None:
        """Stop every task of this link (the connection is gone)."""
        for stage in self.stages:
            if stage.task is not None:
                stage.task.cancel()
        if self.writer is not None:
            self.writer.cancel()
            self.writer = None


