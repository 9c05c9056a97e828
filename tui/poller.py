"""One poll of the operator API: every read the panes need, concurrently, into a `MeshState`.

`/api/v1/status` decides whether the control plane is reachable; when it is not, the other reads
are skipped (they would only time out too) and the last data stays on screen, marked stale.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import replace
from typing import Any

from tui.client import NotAvailableError, OperatorClient, OperatorError, UnreachableError
from tui.state import Fetched, MeshState

KEEP_DECISIONS = 500  # newest decisions kept in memory for the ledger pane
FIRST_READ = 300  # how far back the first read reaches
REREAD = 50  # recent decisions re-read each poll: their ACK state may have settled since
EXPERIMENTS_EVERY = 10  # polls between re-reads of the (static) chaos experiment list
# A/B stats are computed over a 15-minute window (numpy/scipy on up to 100k rows at the control
# plane): every other poll is fresh enough and halves what a console costs there.
AB_EVERY = 2


async def fetch(call: Awaitable[Any], previous: Fetched) -> Fetched:
    """Run one read; a failure keeps the previous data so a pane can still show it (stale)."""
    try:
        return Fetched("ok", await call)
    except NotAvailableError as exc:
        return Fetched("unavailable", None, str(exc))
    except OperatorError as exc:
        return Fetched("error", previous.data, str(exc))


class Poller:
    """Owns the `MeshState` and refreshes it from the API, one `poll_once()` at a time."""

    def __init__(self, client: OperatorClient, state: MeshState | None = None) -> None:
        self.client = client
        self.state = state or MeshState()

    async def poll_once(self) -> MeshState:
        """Refresh everything; never raises for API trouble (it becomes state).

        `state.revision` moves only when something differs from the previous poll, so the screen
        redraws on change rather than every tick.
        """
        before = self._fingerprint()
        await self._poll()
        if self._fingerprint() != before:
            self.state.revision += 1
        return self.state

    def _fingerprint(self) -> tuple[Any, ...]:
        s = self.state
        return (s.reachable, s.unreachable_reason, s.status, s.health, s.models, s.canary, s.drift,
                s.traffic, s.load, s.experiments, s.ab, dict(s.decisions), s.decisions_state, s.last_seq,
                s.chaos)

    async def _poll(self) -> MeshState:
        s = self.state
        try:
            status = await self.client.status()
        except UnreachableError as exc:
            s.reachable = False
            s.unreachable_reason = str(exc)
            s.polls += 1
            return s
        except NotAvailableError as exc:
            s.status = Fetched("unavailable", None, str(exc))
        except OperatorError as exc:
            s.status = Fetched("error", s.status.data, str(exc))
        else:
            s.status = Fetched("ok", status) if isinstance(status, dict) else Fetched(
                "error", s.status.data, "GET /api/v1/status answered with something that is not an object")
        s.reachable = True
        s.unreachable_reason = ""
        c = self.client
        reads: dict[str, Awaitable[Fetched]] = {
            "models": fetch(c.models(), s.models),
            "canary": fetch(c.canary(), s.canary),
            "drift": fetch(c.drift(), s.drift),
            "traffic": fetch(c.traffic_summary(), s.traffic),
            "load": fetch(c.load(), s.load),
        }
        if not s.ab.ok or s.polls % AB_EVERY == 0:
            reads["ab"] = fetch(c.ab_stats(), s.ab)
        if not s.experiments.ok or s.polls % EXPERIMENTS_EVERY == 0:
            reads["experiments"] = fetch(c.chaos_experiments(), s.experiments)
        watch = s.chaos
        if watch is not None and not watch.finished:
            reads["chaos"] = fetch(c.chaos_run(watch.run_id), watch.run)
        results = await asyncio.gather(self._poll_decisions(), *reads.values())
        for name, result in zip(reads, results[1:], strict=True):
            assert isinstance(result, Fetched)
            if name == "chaos" and watch is not None:
                s.chaos = replace(watch, run=result)
            else:
                setattr(s, name, result)
        s.polls += 1
        return s

    async def _poll_decisions(self) -> None:
        s = self.state
        try:
            known = max(s.decisions, default=0)
            if not known:
                head = await self.client.decisions(since=0, limit=1)
                last = head.get("last_seq") if isinstance(head, dict) else None
                since = max(0, (last if isinstance(last, int) else 0) - FIRST_READ)
            else:
                since = max(0, known - REREAD)
            page = await self.client.decisions(since=since, limit=1000)
        except NotAvailableError as exc:
            s.decisions_state = Fetched("unavailable", None, str(exc))
            return
        except OperatorError as exc:
            s.decisions_state = Fetched("error", None, str(exc))
            return
        if not isinstance(page, dict) or not isinstance(page.get("decisions", []), list):
            s.decisions_state = Fetched("error", None, "GET /api/v1/decisions: unexpected answer shape")
            return
        try:
            last_seq = int(page.get("last_seq") or 0)
        except (TypeError, ValueError):
            last_seq = max(s.decisions, default=0)
        if last_seq < max(s.decisions, default=0):
            s.decisions.clear()  # a different ledger (fresh MESH_HOME): start over
        for item in page.get("decisions") or []:
            if isinstance(item, dict) and isinstance(item.get("seq"), int):
                s.decisions[item["seq"]] = item
        for seq in sorted(s.decisions)[:-KEEP_DECISIONS]:
            del s.decisions[seq]
        s.last_seq = last_seq
        s.decisions_state = Fetched("ok", None)
