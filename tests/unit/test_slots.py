"""Slot semantics: alias vs pin, no-op reloads, failures keep the old model, challenger unload,
warm-up gate. The model source is the one seam: an in-memory registry of rule-based models."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from data_plane.contracts.errors import ModelNotFoundError, RegistryError
from model_servers.heuristic import score
from model_servers.slots import ModelSlots, SlotError, warm_up


class RulesVersion:
    """A registry version that scores with the rules, scaled (so versions answer differently)."""

    platform = "python-rules"

    def __init__(self, version: str, scale: float = 1.0) -> None:
        self.kind = "xgboost"
        self.version = version
        self.model_version = f"xgboost_v{version}"
        self.scale = scale

    def predict_one(self, features: Sequence[float]) -> float:
        return score(features) * self.scale

    def predict_many(self, rows: Sequence[Sequence[float]]) -> list[float]:
        return [self.predict_one(r) for r in rows]


@dataclass
class Located:
    version: str


@dataclass
class MemoryRegistry:
    versions: dict[str, float] = field(default_factory=lambda: {"1": 1.0, "2": 0.5})
    aliases: dict[str, str] = field(default_factory=lambda: {"champion": "1", "challenger": "2"})
    broken: set[str] = field(default_factory=set)
    opened: list[str] = field(default_factory=list)

    def locate(self, ref: str) -> Located:
        version = self.aliases.get(ref, ref)
        if version not in self.versions:
            raise ModelNotFoundError(f"fraud-xgboost has no version or alias {ref!r}")
        return Located(version)

    def open(self, located: Located) -> RulesVersion:
        self.opened.append(located.version)
        if located.version in self.broken:
            raise RegistryError(f"cannot load the ONNX model for v{located.version}")
        return RulesVersion(located.version, self.versions[located.version])


@pytest.fixture
def registry() -> MemoryRegistry:
    return MemoryRegistry()


@pytest.fixture
def slots(registry: MemoryRegistry) -> ModelSlots:
    return ModelSlots("xgboost", registry)


def _versions(slots: ModelSlots) -> tuple[str | None, str | None]:
    assert slots.challenger is not None
    return tuple(s.model.version if s.model else None  # type: ignore[return-value]
                 for s in (slots.champion, slots.challenger))


async def test_refresh_loads_both_aliases_and_is_a_no_op_when_nothing_moved(
        slots: ModelSlots, registry: MemoryRegistry) -> None:
    results = await slots.refresh()
    assert _versions(slots) == ("1", "2") and all(r.changed for r in results)
    again = await slots.refresh()
    assert not any(r.changed for r in again) and registry.opened == ["1", "2"]


async def test_pin_then_unpin(slots: ModelSlots, registry: MemoryRegistry) -> None:
    await slots.refresh()
    pinned = await slots.load("champion", "2")
    assert (pinned.previous, pinned.current, pinned.pinned) == ("1", "2", True)
    registry.aliases["champion"] = "1"
    await slots.refresh()  # a pinned slot ignores alias refreshes
    assert _versions(slots)[0] == "2"
    back = await slots.load("champion")  # no version: follow the slot's alias again
    assert (back.current, back.pinned, slots.champion.follows) == ("1", False, "champion")


async def test_unknown_version_is_404_and_keeps_the_model(slots: ModelSlots) -> None:
    await slots.refresh()
    with pytest.raises(SlotError) as err:
        await slots.load("champion", "9")
    assert err.value.status == 404 and _versions(slots)[0] == "1"
    assert slots.champion.last_error is not None


async def test_a_model_that_fails_to_load_is_503_and_keeps_the_model(
        slots: ModelSlots, registry: MemoryRegistry) -> None:
    await slots.refresh()
    registry.versions["3"] = 1.0
    registry.broken.add("3")
    swaps: list[tuple[str, str]] = []
    slots.on_change = lambda slot, outcome, cur, prev: swaps.append((slot, outcome))
    with pytest.raises(SlotError) as err:
        await slots.load("champion", "3")
    assert err.value.status == 503 and "v3" in str(err.value)
    assert _versions(slots)[0] == "1" and swaps == [("champion", "failed")]


async def test_warm_up_refuses_a_model_that_answers_no_probability(
        slots: ModelSlots, registry: MemoryRegistry) -> None:
    await slots.refresh()
    registry.versions["4"] = math.nan
    with pytest.raises(SlotError) as err:
        await slots.load("champion", "4")
    assert err.value.status == 503 and "warm-up" in str(err.value)
    assert _versions(slots)[0] == "1"
    with pytest.raises(Exception, match="warm-up"):
        warm_up(RulesVersion("5", scale=3.0))  # > 1 for the suspicious warm-up row


async def test_challenger_alias_removed_unloads_the_challenger(
        slots: ModelSlots, registry: MemoryRegistry) -> None:
    await slots.refresh()
    del registry.aliases["challenger"]
    swaps: list[tuple[str, str, str | None, str | None]] = []
    slots.on_change = lambda *a: swaps.append(a)
    await slots.refresh()
    assert _versions(slots) == ("1", None)
    assert swaps == [("challenger", "unloaded", None, "xgboost_v2")]
    assert slots.challenger is not None and "challenger" in (slots.challenger.last_error or "")


async def test_missing_champion_alias_keeps_serving_what_is_loaded(
        slots: ModelSlots, registry: MemoryRegistry) -> None:
    await slots.refresh()
    del registry.aliases["champion"]
    await slots.refresh()  # never raises
    assert _versions(slots)[0] == "1"


async def test_scoring_during_a_swap_uses_old_or_new_never_nothing(
        slots: ModelSlots, registry: MemoryRegistry) -> None:
    await slots.refresh()
    row = (1500.0, 7, 2, 6, 150.0, 80.0, 1, 5, 12, 200.0, 15)
    seen: set[str] = set()
    stop = asyncio.Event()

    async def score_forever() -> None:
        while not stop.is_set():
            model = slots.champion.model
            assert model is not None
            model.predict_one(row)
            seen.add(model.version)
            await asyncio.sleep(0)

    task = asyncio.create_task(score_forever())
    await slots.load("champion", "2")
    await asyncio.sleep(0.01)
    stop.set()
    await task
    assert seen == {"1", "2"}


async def test_bad_slot_names_and_fixed_slots() -> None:
    from model_servers.heuristic import HeuristicModel

    rules = ModelSlots.fixed(HeuristicModel())
    assert rules.challenger is None and not rules.has_registry
    with pytest.raises(SlotError) as err:
        await rules.load("champion", "2")
    assert err.value.status == 400
    with pytest.raises(SlotError):
        rules.slot("challenger")
