"""An asyncio HTTP load engine (keep-alive pool): open loop at a fixed rate, or closed loop.

Open loop: request i is *intended* at ``start + i / rate``; its latency counts from that instant,
not from when it actually left, so a server stall shows up in the percentiles instead of silently
slowing the sender down (coordinated omission). In-flight requests are capped; a send that is
more than ``late_after_ms`` behind schedule (cap reached, or the generator itself too busy) is
counted as ``late``, and what was due but never sent when the run ended as ``not_sent``.

Closed loop: ``concurrency`` workers each send, wait, send again, for ``duration`` seconds or
until ``requests`` were sent; latency counts from the actual send.

The engine runs inside any asyncio program (``await LoadEngine(...).run()``, stop early with
``stop()``), or standalone with ``run_load()`` which prefers uvloop. The wire is a pluggable
transport (data_plane.load.transports): aiohttp by default, or the leaner ``http1`` client.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from time import perf_counter_ns
from typing import TYPE_CHECKING

from data_plane.load.payloads import Payload
from data_plane.load.results import CANCELLED, LoadResult, Progress, Tally
from data_plane.load.targets import LoadTargetError, check_bounds, check_target
from data_plane.load.transports import TRANSPORTS, RequestFailed, make_transport

if TYPE_CHECKING:
    from data_plane.load.labels import LabelSender

ProgressCallback = Callable[[Progress], None]

# A stopped run gives in-flight requests this long to finish before cancelling them.
STOP_GRACE_S = 1.0
# Open loop sends a request up to this early rather than oversleeping past it: asyncio timers
# are ~1 ms coarse, so waiting for the exact instant would add timer lag to every latency.
_EARLY_NS = 500_000
# After the schedule ends, a generator that fell behind may still catch up for this long.
CATCH_UP_GRACE_S = 1.0
_MAX_NAP_S = 0.05  # the scheduler re-checks stop() at least this often


@dataclass(frozen=True)
class LoadPlan:
    """The shape of one run. Checked on creation (loopback target, bounded run)."""

    url: str
    rate: float | None = None
    duration: float | None = None
    concurrency: int | None = None
    requests: int | None = None
    timeout: float = 5.0
    max_outstanding: int | None = None
    late_after_ms: float = 10.0
    allow_remote: bool = False
    transport: str = "auto"  # "auto" = http1 for http:// targets, aiohttp for https://

    def __post_init__(self) -> None:
        if self.transport not in ("auto", *TRANSPORTS):
            raise LoadTargetError(f"--transport must be auto or one of {', '.join(TRANSPORTS)} "
                                  f"(got {self.transport!r})")
        check_target(self.url, allow_remote=self.allow_remote)
        if self.transport == "auto":
            # http1 costs ~3x less CPU per request than aiohttp (bench/bench_loadgen.py), which
            # is what keeps the generator off the critical path at 1-3k rps on a 2-core box.
            wire = "aiohttp" if self.url.strip().lower().startswith("https:") else "http1"
            object.__setattr__(self, "transport", wire)
        check_bounds(rate=self.rate, duration=self.duration, concurrency=self.concurrency,
                     requests=self.requests, timeout=self.timeout,
                     max_outstanding=self.max_outstanding)

    @property
    def mode(self) -> str:
        return "open" if self.rate is not None else "closed"

    @property
    def outstanding_cap(self) -> int:
        """Most requests in flight at once (= size of the connection pool)."""
        if self.concurrency is not None:
            return self.concurrency
        if self.max_outstanding is not None:
            return self.max_outstanding
        # A quarter second of traffic (64-1024): Little's law leaves room for 250 ms answers at
        # the full rate, yet an overloaded target is not buried under a storm of new connections,
        # which on a 2-core box turned a slowdown into a collapse (see bench/bench_loadgen.py).
        return min(1024, max(64, math.ceil((self.rate or 0) / 4)))


class LoadEngine:
    """Drives one planned run against `plan.url` with `payloads` (cycled in order)."""

    def __init__(self, plan: LoadPlan, payloads: Sequence[Payload],
                 progress: ProgressCallback | None = None, labels: LabelSender | None = None) -> None:
        if not payloads:
            raise ValueError("at least one payload is needed")
        self.plan = plan
        self.tally = Tally()
        self._payloads = list(payloads)
        self._labels = labels  # own x-request-ids + delayed Label events (data_plane.load.labels)
        self._send: Callable[[int], Awaitable[tuple[int, bytes]]] = _not_open
        self._progress = progress
        self._stopping = False
        self._started = False
        self._start_ns = 0
        self._last_ns = 0
        self._outstanding = 0
        # Set while the open loop waits for a free slot (outstanding cap reached).
        self._slot_waiter: asyncio.Future[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._budget = -1  # closed loop: requests left to send (-1 = unbounded)
        self._last_tick = (0, 0)  # (time ns, responses) at the previous progress tick

    # ---- control -------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the run to end now: nothing new is sent; in-flight requests get STOP_GRACE_S."""
        self._stopping = True
        _wake(self._slot_waiter)

    @property
    def stopping(self) -> bool:
        return self._stopping

    def snapshot(self) -> Progress:
        """Progress so far (what the per-second callback gets; pollable any time)."""
        now = perf_counter_ns()
        t0, r0 = self._last_tick
        dt = (now - t0) / 1e9 if t0 else 0.0
        t = self.tally
        return Progress(
            elapsed_s=(now - self._start_ns) / 1e9 if self._start_ns else 0.0,
            total_s=self.plan.duration, sent=t.sent, ok=t.ok, errors=t.errors,
            rps=(t.responses - r0) / dt if dt > 0 else 0.0,
            p99_ms=t.hist.percentile(99.0) / 1e6)

    # ---- run -----------------------------------------------------------------------------------
    async def run(self) -> LoadResult:
        """Execute the plan and return what was measured. One run per engine."""
        if self._started:
            raise RuntimeError("a LoadEngine runs once; create a new one")
        self._started = True
        plan = self.plan
        transport = make_transport(plan.transport, plan.url, self._payloads, plan.outstanding_cap,
                                   plan.timeout)
        self._send = transport.send if self._labels is None else self._labels.wrap(transport.send)
        not_sent = sent_all_ns = 0
        await transport.open()
        try:
            self._start_ns = self._last_ns = perf_counter_ns()
            self._last_tick = (self._start_ns, 0)
            ticker = asyncio.create_task(self._tick()) if self._progress else None
            try:
                if plan.mode == "open":
                    not_sent = await self._open_loop()
                    sent_all_ns = perf_counter_ns()
                    await self._drain(self._inflight)
                else:
                    await self._closed_loop()
                    sent_all_ns = perf_counter_ns()
            finally:
                if ticker:
                    ticker.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await ticker
                for task in list(self._inflight):
                    task.cancel()
        finally:
            await transport.close()
        # The run ends with its last response, or with its last send when later answers never came.
        end = perf_counter_ns() if self._stopping else max(self._last_ns, sent_all_ns)
        result = LoadResult.from_tally(
            self.tally, elapsed_s=(end - self._start_ns) / 1e9, mode=plan.mode, url=plan.url,
            rate=plan.rate, concurrency=plan.concurrency, planned_duration_s=plan.duration,
            planned_requests=plan.requests, max_outstanding=plan.outstanding_cap,
            stopped_early=self._stopping, event_loop=_loop_name(), transport=plan.transport)
        result.not_sent = not_sent
        return result

    async def _open_loop(self) -> int:
        """Dispatch rate x duration requests on schedule; returns how many were due but never sent."""
        plan = self.plan
        assert plan.rate is not None and plan.duration is not None
        total = max(1, round(plan.rate * plan.duration))
        interval = 1e9 / plan.rate
        cap = plan.outstanding_cap
        late_ns = int(plan.late_after_ms * 1e6)
        start = self._start_ns
        # Catch-up sends count as late; what is still unsent after the grace is `not_sent`.
        deadline = start + int((plan.duration + min(plan.timeout, CATCH_UP_GRACE_S)) * 1e9)
        n = len(self._payloads)
        tally, spawn = self.tally, self._spawn
        loop = asyncio.get_running_loop()
        i = 0
        while i < total and not self._stopping:
            now = perf_counter_ns()
            if now > deadline:
                break
            horizon = now + _EARLY_NS
            intended = start + int(i * interval)
            while intended <= horizon and self._outstanding < cap:
                lag = now - intended
                if lag > late_ns:
                    tally.late += 1
                if lag > tally.max_dispatch_lag_ns:
                    tally.max_dispatch_lag_ns = lag
                # An early send counts from when it left, a late one from when it was due.
                spawn(intended if lag >= 0 else now, i % n)
                i += 1
                if i >= total:
                    break
                intended = start + int(i * interval)
            if i >= total:
                break
            if intended <= horizon:  # due, but the outstanding cap is reached: wait for a slot
                # A bare future woken by the next completion (or the nap timer): cheaper than
                # Event + wait_for, which matters when every completion frees exactly one slot.
                waiter = self._slot_waiter = loop.create_future()
                nap = loop.call_later(_MAX_NAP_S, _wake, waiter)
                await waiter
                nap.cancel()
                self._slot_waiter = None
                continue
            await asyncio.sleep(min(max((intended - now) / 1e9, 0.001), _MAX_NAP_S))
        due = min(total, int((perf_counter_ns() - start) / interval) + 1)
        return max(0, min(due, total) - i)

    def _spawn(self, base_ns: int, index: int) -> None:
        # Counted as outstanding now, not when the task first runs: a burst of catch-up sends
        # must see the cap before any of its tasks has started.
        self._outstanding += 1
        self.tally.sent += 1
        task = asyncio.create_task(self._request(base_ns, index))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _closed_loop(self) -> None:
        plan = self.plan
        self._budget = plan.requests if plan.requests is not None else -1
        deadline = self._start_ns + int(plan.duration * 1e9) if plan.duration is not None else None
        c = plan.concurrency or 1
        workers = {asyncio.create_task(self._worker(k, c, deadline)) for k in range(c)}
        await self._drain(workers, wait_all=True)

    async def _worker(self, k: int, stride: int, deadline: int | None) -> None:
        n, tally = len(self._payloads), self.tally
        i = k
        while not self._stopping:
            if self._budget == 0:
                return
            now = perf_counter_ns()
            if deadline is not None and now >= deadline:
                return
            if self._budget > 0:
                self._budget -= 1
            tally.sent += 1
            self._outstanding += 1
            await self._request(now, i % n)
            i += stride

    async def _drain(self, tasks: set[asyncio.Task[None]], wait_all: bool = False) -> None:
        """Wait for `tasks` (a whole closed-loop run, or the open loop's in-flight requests).

        In-flight requests end by themselves within the request timeout; once stop() is called
        they get STOP_GRACE_S more, then whatever is left is cancelled.
        """
        loop = asyncio.get_running_loop()
        limit_at = None if wait_all else loop.time() + self.plan.timeout + 1.0
        stop_at: float | None = None
        pending = set(tasks)
        while pending:
            if self._stopping and stop_at is None:
                stop_at = loop.time() + STOP_GRACE_S
            ends = [t for t in (limit_at, stop_at) if t is not None]
            if ends and loop.time() >= min(ends):
                break
            _, pending = await asyncio.wait(pending, timeout=2 * _MAX_NAP_S)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    async def _request(self, base_ns: int, index: int) -> None:
        """Send one request (the caller counted it in `_outstanding`) and tally the outcome."""
        tally = self.tally
        try:
            status, body = await self._send(index)
        except asyncio.CancelledError:
            tally.error(CANCELLED)
            raise
        except RequestFailed as exc:
            tally.error(exc.kind)
        else:
            now = perf_counter_ns()
            self._last_ns = now
            tally.response(status, body, now - base_ns)
        finally:
            self._outstanding -= 1
            if self._slot_waiter is not None:
                _wake(self._slot_waiter)

    async def _tick(self) -> None:
        assert self._progress is not None
        k = 1
        while True:
            await asyncio.sleep(max(0.0, (self._start_ns + k * 1_000_000_000 - perf_counter_ns()) / 1e9))
            k += 1
            snap = self.snapshot()
            self._last_tick = (perf_counter_ns(), self.tally.responses)
            try:
                self._progress(snap)
            except Exception:  # a broken display must not kill the run
                self._progress = None
                return


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


async def _not_open(index: int) -> tuple[int, bytes]:
    raise RuntimeError("the engine's transport is not open yet")


def _loop_name() -> str:
    return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run_load(plan: LoadPlan, payloads: Sequence[Payload], progress: ProgressCallback | None = None,
             *, stop_on_sigint: bool = False, labels: LabelSender | None = None) -> LoadResult:
    """Run a plan to completion in a fresh event loop (uvloop when installed).

    With `stop_on_sigint`, Ctrl-C stops the run gracefully and the partial result is returned.
    With `labels`, requests carry the sender's ids and, after the run, the call waits until the
    last labels are published (a Ctrl-C then drops the rest).
    """
    engine = LoadEngine(plan, payloads, progress, labels=labels)

    async def main() -> LoadResult:
        loop = asyncio.get_running_loop()
        if stop_on_sigint:
            loop.add_signal_handler(signal.SIGINT, engine.stop)
        try:
            if labels is not None:
                await labels.start()
            try:
                return await engine.run()
            finally:
                if labels is not None:
                    skip = asyncio.Event()
                    if engine.stopping:
                        skip.set()
                    if stop_on_sigint:
                        loop.add_signal_handler(signal.SIGINT, skip.set)
                    await labels.finish(keep_waiting=lambda: not skip.is_set())
        finally:
            if stop_on_sigint:
                loop.remove_signal_handler(signal.SIGINT)

    # Everything allocated so far (imports, payloads) is long-lived: freezing it keeps the
    # collector's full passes short, so they don't show up as latency spikes mid-run.
    gc.collect()
    gc.freeze()
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            return runner.run(main())
    finally:
        gc.unfreeze()
