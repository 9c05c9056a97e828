"""Micro-batching: rows of one loop tick share a model call, per model, with the right answers."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from model_servers.batching import MicroBatcher
from model_servers.heuristic import HeuristicModel, score

SEED = (1500.0, 7, 2, 6, 150.0, 80.0, 1, 5, 12, 200.0, 15)
ORDINARY = (42.5, 3, 14, 2, 4.0, 1.5, 0, 1, 4, 55.0, 900)


class CountingRules(HeuristicModel):
    """The rules, counting how they were called (one-row vs many-row calls)."""

    def __init__(self, version: str = "1") -> None:
        self.version = version
        self.model_version = f"heuristic_v{version}"
        self.one_calls = 0
        self.many_calls: list[int] = []

    def predict_one(self, features: Sequence[float]) -> float:
        self.one_calls += 1
        return super().predict_one(features)

    def predict_many(self, rows: Sequence[Sequence[float]]) -> list[float]:
        self.many_calls.append(len(rows))
        return super().predict_many(rows)


async def test_rows_of_one_tick_share_one_call_and_get_their_own_scores() -> None:
    batcher, model = MicroBatcher(), CountingRules()
    rows = [SEED, ORDINARY] * 5
    scores = await asyncio.gather(*(batcher.score(model, r) for r in rows))
    assert scores == [score(r) for r in rows]
    assert model.many_calls == [10] and model.one_calls == 0
    assert (batcher.calls, batcher.rows, batcher.mean_rows) == (1, 10, 10.0)


async def test_a_lone_row_takes_the_one_row_path() -> None:
    batcher, model = MicroBatcher(), CountingRules()
    assert await batcher.score(model, SEED) == score(SEED)
    assert (model.one_calls, model.many_calls) == (1, [])


async def test_rows_are_grouped_by_the_model_each_request_picked() -> None:
    batcher, old, new = MicroBatcher(), CountingRules("1"), CountingRules("2")
    futures = [batcher.score(old, SEED), batcher.score(new, SEED), batcher.score(old, ORDINARY)]
    await asyncio.gather(*futures)
    assert (old.many_calls, new.one_calls) == ([2], 1)


async def test_a_full_batch_is_scored_at_once_and_the_rest_next() -> None:
    batcher, model = MicroBatcher(max_rows=4), CountingRules()
    await asyncio.gather(*(batcher.score(model, SEED) for _ in range(6)))
    assert model.many_calls == [4, 2]


async def test_a_failing_model_fails_every_waiting_request() -> None:
    class Broken(CountingRules):
        def predict_many(self, rows: Sequence[Sequence[float]]) -> list[float]:
            raise RuntimeError("onnxruntime: bad input")

    class Short(CountingRules):
        def predict_many(self, rows: Sequence[Sequence[float]]) -> list[float]:
            return [0.5]  # one score for several rows: must not leave anyone waiting

    batcher = MicroBatcher()
    for model, needle in ((Broken(), "bad input"), (Short(), "answered 1 scores for 3 rows")):
        results = await asyncio.gather(*(batcher.score(model, SEED) for _ in range(3)),
                                       return_exceptions=True)
        assert all(isinstance(r, RuntimeError) and needle in str(r) for r in results), results


async def test_a_cancelled_request_does_not_break_the_others() -> None:
    batcher, model = MicroBatcher(), CountingRules()
    first, second = batcher.score(model, SEED), batcher.score(model, ORDINARY)
    first.cancel()
    assert await second == score(ORDINARY)
    with pytest.raises(asyncio.CancelledError):
        await first
